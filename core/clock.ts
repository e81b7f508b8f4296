/**
 * Time, injected: the agent and stores read the clock and sleep only
 * through this, so tests can run hours of lease renewals without waiting.
 *
 * @module
 */

import { StoreUnavailableError } from "./errors.ts";

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

/** Options of {@link backoff} and {@link retryDelay}. */
export interface BackoffOptions {
  /** First delay, ms (default 200). */
  readonly base?: number;
  /** Longest delay, ms (default 10 000). */
  readonly max?: number;
  /** Share of the delay taken off at random, 0–1 (default 0.2). */
  readonly jitter?: number;
  /** Source of the jitter (default Math.random). */
  readonly random?: () => number;
}

/**
 * Exponential backoff delays: `base`, doubling, capped at `max`, with up to
 * `jitter` (20%) of it taken off at random.
 *
 * @param attempt 0 for the first retry.
 * @param options Base, cap, jitter and its randomness.
 * @returns The delay, ms.
 * @example
 * ```ts
 * backoff(3, { random: () => 1 }); // 1600
 * ```
 */
export function backoff(attempt: number, options: BackoffOptions = {}): number {
  const base = options.base ?? 200;
  const max = options.max ?? 10_000;
  const jitter = options.jitter ?? 0.2;
  const raw = Math.min(max, base * 2 ** Math.min(attempt, 30));
  return Math.round(raw * (1 - jitter + jitter * (options.random ?? Math.random)()));
}

/**
 * Longest pause before retrying a store that did not answer at all (see
 * {@link retryDelay}), ms.
 */
export const UNREACHABLE_RETRY_MAX_MS = 1000;

/**
 * The pause before retrying after `error`. A store that did not answer at
 * all (a {@link StoreUnavailableError} with `unreachable`: connection
 * refused or reset, or no answer in time) is retried at least every
 * {@link UNREACHABLE_RETRY_MAX_MS}, with half of the delay random so that
 * many hosts that lost the store at the same moment spread out: an attempt
 * on a store that is down costs it nothing (one refused connection), and
 * the host is back within a second of the store's return. Every other
 * failure backs off as {@link backoff} says (a store that answers with
 * errors is alive and may be overloaded).
 *
 * @param attempt 0 for the first retry.
 * @param error What failed.
 * @param options Base, cap and randomness of the ordinary backoff.
 * @returns The delay, ms.
 * @example
 * ```ts
 * const down = new StoreUnavailableError("refused", { unreachable: true });
 * retryDelay(10, down); // 500–1000
 * ```
 */
export function retryDelay(attempt: number, error: unknown, options: BackoffOptions = {}): number {
  if (error instanceof StoreUnavailableError && error.unreachable) {
    return backoff(attempt, {
      ...options,
      max: Math.min(options.max ?? 10_000, UNREACHABLE_RETRY_MAX_MS),
      jitter: 0.5,
    });
  }
  return backoff(attempt, options);
}
