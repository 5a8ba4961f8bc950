/**
 * How many captures may run at once in this process, and a counter that enforces it.
 *
 * The snapshot engine feeds DuckDB through a FIFO: DuckDB's open-for-read and Node's
 * open-for-write each block a libuv threadpool thread until the other side arrives. When every
 * pool thread (UV_THREADPOOL_SIZE, default 4) holds such an open, the other side can never run:
 * the process deadlocks. So all captures together stay below the pool size; raising
 * UV_THREADPOOL_SIZE in the agent's environment allows more.
 */
export function captureBudget(env: NodeJS.ProcessEnv = process.env): { threadpool: number; captures: number } {
  const threadpool = Math.max(1, Number(env.UV_THREADPOOL_SIZE) || 4);
  return { threadpool, captures: Math.max(1, threadpool - 1) };
}

/** At most `size` holders at once; the rest wait in order. */
export class CaptureSlots {
  private free: number;
  private readonly waiting: Array<() => void> = [];

  constructor(readonly size: number) {
    this.free = Math.max(1, size);
  }

  async run<T>(work: () => Promise<T>): Promise<T> {
    if (this.free > 0) this.free -= 1;
    else await new Promise<void>((resolve) => this.waiting.push(resolve));
    try {
      return await work();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.free += 1;
    }
  }
}
