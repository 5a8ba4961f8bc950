/**
 * Reconnect delays: exponential with full jitter, so several agents that lost the same server
 * do not reconnect in lockstep.
 */
export interface ReconnectBackoff {
  baseMs: number;
  maxMs: number;
}

export const RECONNECT_BACKOFF: ReconnectBackoff = { baseMs: 250, maxMs: 5_000 };

export function reconnectDelay(attempt: number, backoff: ReconnectBackoff = RECONNECT_BACKOFF): number {
  const ceiling = Math.min(backoff.maxMs, backoff.baseMs * 2 ** Math.min(attempt, 16));
  return Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
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
