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
 * A manual clock for tests: time moves only through {@link FakeClock.advance}.
 *
 * @example
 * ```ts
 * const clock = new FakeClock(0);
 * const done = clock.sleep(1000);
 * await clock.advance(1000); // `done` resolves
 * ```
 */
export class FakeClock implements Clock {
  #now: number;
  #sleepers: { at: number; resolve: () => void }[] = [];

  constructor(start = 1_700_000_000_000) {
    this.#now = start;
  }

  now(): number {
    return this.#now;
  }

  /** Number of pending sleeps. */
  get pending(): number {
    return this.#sleepers.length;
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const onAbort = () => {
        this.#sleepers = this.#sleepers.filter((s) => s !== entry);
        reject(signal?.reason);
      };
      const entry = {
        at: this.#now + Math.max(0, ms),
        resolve: () => {
          // a long-lived signal must not collect one listener per sleep
          signal?.removeEventListener("abort", onAbort);
          resolve();
        },
      };
      this.#sleepers.push(entry);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  /** Move time forward, waking sleepers in order and letting their work run. */
  async advance(ms: number): Promise<void> {
    const target = this.#now + ms;
    for (;;) {
      await flush();
      this.#sleepers.sort((a, b) => a.at - b.at);
      const next = this.#sleepers[0];
      if (!next || next.at > target) break;
      this.#sleepers.shift();
      this.#now = Math.max(this.#now, next.at);
      next.resolve();
    }
    this.#now = target;
    await flush();
  }
}

async function flush(): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise<void>((r) => setTimeout(r, 0));
}

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
