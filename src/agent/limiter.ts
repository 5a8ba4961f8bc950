/**
 * A counting semaphore: at most `limit` captures run at once, whether they come from a poll or
 * from on-demand requests, so --concurrency bounds the load the agent puts on the database.
 */
export class Limiter {
  private active = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(readonly limit: number) {
    if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`concurrency must be a positive integer, got ${limit}`);
  }

  async run<T>(work: () => Promise<T>): Promise<T> {
    if (this.active >= this.limit) await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.active += 1;
    try {
      return await work();
    } finally {
      this.active -= 1;
      this.waiting.shift()?.();
    }
  }
}

/** Run `worker` over `items` through `limiter`; every item runs even when others fail. */
export async function forEachLimited<T>(limiter: Limiter, items: readonly T[], worker: (item: T) => Promise<void>): Promise<void> {
  const results = await Promise.allSettled(items.map((item) => limiter.run(() => worker(item))));
  const failures = results.filter((result): result is PromiseRejectedResult => result.status === 'rejected');
  if (failures.length > 0) throw new AggregateError(failures.map((failure) => failure.reason as unknown), `${failures.length} of ${items.length} tasks failed`);
}
