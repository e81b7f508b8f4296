/**
 * One adaptive back-off for every cloud API call of a process. When the API
 * throttles a call (EC2's `RequestLimitExceeded`, HTTP 503), every later
 * call waits, not only the one that failed: the request rate is an account
 * budget, and the calls of one host (listing several tables, writing a
 * route, discovery) spend it together. The pause doubles with each throttled
 * call (from `baseMs`, at most `maxMs`, with jitter) and halves with each
 * call that gets through, so a throttling storm slows the process down to
 * what the API accepts and a single throttled call costs little.
 *
 * The SDK's own retries of a throttled call happen inside one call; this
 * gate spaces out the calls themselves, so a caller that retries at once
 * (the agent's resync, a repair) never turns into a tight loop.
 *
 * @module
 */

import type { Clock } from "../../core/clock.ts";

/** Options for {@link ThrottleGate}. */
export interface ThrottleGateOptions {
  readonly clock: Clock;
  /** First pause after a throttled call, ms (default 1000). */
  readonly baseMs?: number;
  /** Longest pause, ms (default 60 000). */
  readonly maxMs?: number;
  /** Randomness for the jitter (default `Math.random`). */
  readonly random?: () => number;
}

/**
 * Call {@link ThrottleGate.wait} before each API call and report its outcome
 * with {@link ThrottleGate.throttled} or {@link ThrottleGate.passed}.
 *
 * @example
 * ```ts
 * const gate = new ThrottleGate({ clock: systemClock });
 * await gate.wait(signal);
 * try { await call(); gate.passed(); } catch (e) { if (isThrottle(e)) gate.throttled(); throw e; }
 * ```
 */
export class ThrottleGate {
  readonly #clock: Clock;
  readonly #base: number;
  readonly #max: number;
  readonly #random: () => number;
  #pauseMs = 0;
  #openAt = 0;

  /**
   * @param options Clock, pause bounds, randomness.
   * @throws {RangeError} When `baseMs` is not positive or `maxMs` is below it.
   */
  constructor(options: ThrottleGateOptions) {
    this.#clock = options.clock;
    this.#base = options.baseMs ?? 1000;
    this.#max = options.maxMs ?? 60_000;
    this.#random = options.random ?? Math.random;
    if (!(this.#base > 0) || !(this.#max >= this.#base)) {
      throw new RangeError(
        `Cannot make a throttle gate as 'baseMs' must be positive and at most 'maxMs': current values are ${this.#base} and ${this.#max}`,
      );
    }
  }

  /** The current pause after a throttled call, ms (0 when the API is not throttling). */
  get pauseMs(): number {
    return this.#pauseMs;
  }

  /** Milliseconds until calls may go again (0 when open). */
  get closedForMs(): number {
    return Math.max(0, this.#openAt - this.#clock.now());
  }

  /**
   * Wait until calls may go.
   *
   * @param signal Ends the wait early (rejects with its reason).
   */
  async wait(signal?: AbortSignal): Promise<void> {
    // a later throttle may push the opening further while we sleep
    for (let left = this.closedForMs; left > 0; left = this.closedForMs) {
      await this.#clock.sleep(left, signal);
    }
  }

  /**
   * A call was throttled: close the gate for the next pause.
   *
   * @param retryAfterMs How long the API asked to wait, when it said.
   */
  throttled(retryAfterMs?: number): void {
    this.#pauseMs = Math.min(this.#max, Math.max(this.#base, this.#pauseMs * 2));
    const jittered = Math.round(this.#pauseMs * (0.8 + 0.4 * this.#random()));
    const wait = Math.max(jittered, retryAfterMs ?? 0);
    this.#openAt = Math.max(this.#openAt, this.#clock.now() + wait);
  }

  /** A call got through: halve the pause (below `baseMs` it is gone). */
  passed(): void {
    const half = this.#pauseMs / 2;
    this.#pauseMs = half < this.#base ? 0 : half;
  }
}

let shared: ThrottleGate | undefined;

/**
 * The gate every cloud backend of this process uses unless given another
 * (the back-off is process-wide by design; tests and simulations of many
 * hosts in one process give each host its own).
 *
 * @param clock The clock of the first caller (later callers share the gate).
 * @returns The process-wide gate.
 */
export function processThrottleGate(clock: Clock): ThrottleGate {
  return shared ??= new ThrottleGate({ clock });
}
