/**
 * Cancellation helpers, one of each: recognising an abort, a sleep that ends
 * quietly on abort, a promise of an abort, and a controller that aborts when
 * a parent does or when a timeout on the injected clock passes. Every
 * long-running call in weft takes an `AbortSignal`; these keep the wiring
 * out of the callers.
 *
 * @module
 */

import type { Clock } from "./clock.ts";

/**
 * Whether `e` is what an aborted `fetch`, stream or sleep throws: a
 * `DOMException` named `AbortError` or `TimeoutError`.
 *
 * @param e Anything caught.
 * @returns True for an abort or timeout.
 * @example
 * ```ts
 * try { await fetch(url, { signal }); } catch (e) { if (!isAbortError(e)) throw e; }
 * ```
 */
export function isAbortError(e: unknown): boolean {
  return e instanceof DOMException && (e.name === "AbortError" || e.name === "TimeoutError");
}

/**
 * Sleep on `clock`; end early without throwing when `signal` aborts.
 *
 * @param clock The clock to sleep on.
 * @param ms How long.
 * @param signal Ends the sleep early.
 * @returns True when the full time passed, false when the signal aborted.
 * @example
 * ```ts
 * while (await sleepQuietly(clock, 1000, signal)) poll();
 * ```
 */
export async function sleepQuietly(
  clock: Clock,
  ms: number,
  signal?: AbortSignal,
): Promise<boolean> {
  try {
    await clock.sleep(ms, signal);
    return true;
  } catch (e) {
    if (signal?.aborted) return false;
    throw e;
  }
}

/**
 * A promise that resolves (never rejects) when `signal` aborts.
 *
 * @param signal The signal to wait for.
 * @returns Resolves on abort; at once when it is already aborted.
 */
export function whenAborted(signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) =>
    signal.addEventListener("abort", () => resolve(), { once: true })
  );
}

/** A linked abort controller from {@link linkedController}. */
export interface LinkedController {
  /** Aborts when a parent aborts, on timeout, or on {@link LinkedController.abort}. */
  readonly signal: AbortSignal;
  /** Abort now (e.g. the work is done and its connection should go). */
  abort(reason?: unknown): void;
  /** Stop the timer and detach from the parents; call when the work ends. */
  dispose(): void;
}

/**
 * A controller whose signal aborts when any parent signal aborts (with that
 * reason) or, with `timeoutMs`, after that long on `clock` (with a
 * `TimeoutError` naming `what`). Always `dispose()` it when the work ends, so
 * long-lived parents do not collect listeners.
 *
 * @param options The parents, an optional timeout and its clock.
 * @returns The controller.
 * @throws {RangeError} When `timeoutMs` is given without a clock.
 * @example
 * ```ts
 * const call = linkedController({ parents: [signal], timeoutMs: 5000, clock, what: "etcd put" });
 * try { await fetch(url, { signal: call.signal }); } finally { call.dispose(); }
 * ```
 */
export function linkedController(options: {
  readonly parents?: readonly (AbortSignal | undefined)[];
  readonly timeoutMs?: number;
  readonly clock?: Clock;
  /** Named in the timeout's message, e.g. `etcd request`. */
  readonly what?: string;
}): LinkedController {
  const ctl = new AbortController();
  const parents = (options.parents ?? []).filter((s): s is AbortSignal => s !== undefined);
  const timer = new AbortController();
  const onParent = (event: Event) => ctl.abort((event.target as AbortSignal).reason);
  const dispose = () => {
    timer.abort();
    for (const p of parents) p.removeEventListener("abort", onParent);
  };
  for (const p of parents) {
    if (p.aborted) {
      ctl.abort(p.reason);
      break;
    }
    p.addEventListener("abort", onParent, { once: true });
  }
  if (options.timeoutMs !== undefined && !ctl.signal.aborted) {
    if (!options.clock) {
      throw new RangeError("Cannot arm a timeout as 'clock' is missing: pass the injected clock");
    }
    const ms = options.timeoutMs;
    options.clock.sleep(ms, timer.signal).then(
      () =>
        ctl.abort(
          new DOMException(
            `${options.what ?? "operation"} timed out after ${ms} ms`,
            "TimeoutError",
          ),
        ),
      () => {},
    );
  }
  ctl.signal.addEventListener("abort", dispose, { once: true });
  return {
    signal: ctl.signal,
    abort: (reason) => ctl.abort(reason),
    dispose,
  };
}
