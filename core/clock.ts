/**
 * Time, injected: the agent and stores read the clock and sleep only
 * through this, so tests can run hours of lease renewals without waiting.
 *
 * @module
 */

/** A source of time. */
export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  /**
   * Resolve after `ms`, or reject with the signal's reason when it aborts.
   */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

/**
 * Longest delay a timer takes: larger ones fire at once in Deno, Bun and
 * Node, so longer sleeps (a lease TTL of weeks) are made of several timers.
 */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** The real clock. */
export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms, signal) =>
    new Promise<void>((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const end = Date.now() + Math.max(0, ms);
      let t: ReturnType<typeof setTimeout>;
      const onAbort = () => {
        clearTimeout(t);
        reject(signal?.reason);
      };
      const arm = (left: number) => {
        t = setTimeout(() => {
          const rest = end - Date.now();
          if (rest > 0 && left > MAX_TIMER_MS) return arm(rest);
          signal?.removeEventListener("abort", onAbort);
          resolve();
        }, Math.min(left, MAX_TIMER_MS));
      };
      arm(Math.max(0, ms));
      signal?.addEventListener("abort", onAbort, { once: true });
    }),
};

/**
 * Exponential backoff delays: `base`, doubling, capped at `max`, with up to
 * 20% jitter from `random`.
 */
export function backoff(
  attempt: number,
  options: { base?: number; max?: number; random?: () => number } = {},
): number {
  const base = options.base ?? 200;
  const max = options.max ?? 10_000;
  const raw = Math.min(max, base * 2 ** Math.min(attempt, 30));
  return Math.round(raw * (0.8 + 0.2 * (options.random ?? Math.random)()));
}
