/**
 * A manual clock for tests: time moves only when the test says so.
 *
 * @module
 */

import type { Clock } from "../core/clock.ts";

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
