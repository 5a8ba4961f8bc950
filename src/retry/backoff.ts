/**
 * Delays between attempts: base·2^(attempt−1), capped, with "equal jitter" (half fixed, half
 * random) so that many agents reconnecting to the same server, or many tables failing together
 * in a storage outage, do not all retry at the same moment.
 */
export interface BackoffOptions {
  /** Delay after the first failure. */
  baseMs: number;
  /** Upper bound of the delay. */
  maxMs: number;
  /** Source of randomness in [0, 1); injectable for tests. */
  random?: () => number;
}

/** Delay before the next attempt after `failures` consecutive failures (1 = the first). */
export function backoffDelay(failures: number, options: BackoffOptions): number {
  const random = options.random ?? Math.random;
  const exponent = Math.min(Math.max(failures - 1, 0), 30);
  const ceiling = Math.min(options.maxMs, options.baseMs * 2 ** exponent);
  return Math.round(ceiling / 2 + (ceiling / 2) * random());
}

/** Reconnecting a lost database connection: 250 ms, doubling, at most 5 s. */
export const RECONNECT_BACKOFF: BackoffOptions = { baseMs: 250, maxMs: 5_000 };

export function reconnectDelay(attempt: number): number {
  return backoffDelay(attempt + 1, RECONNECT_BACKOFF);
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}
