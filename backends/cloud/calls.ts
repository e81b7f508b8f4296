/**
 * Every cloud API call of a route backend goes through here: it waits at the
 * process-wide {@link ThrottleGate}, feeds throttled calls back into it, and
 * counts each call by provider, operation and result for `/metrics`:
 *
 * - `weft_cloud_api_calls_total{provider,operation,result}` — `result` is
 *   `ok` or the failure kind (`throttled`, `limit`, `denied`, …);
 * - `weft_cloud_api_throttle_pause_seconds{provider}` — the gate's pause;
 * - `weft_cloud_last_error_timestamp_seconds{provider,operation,kind}` —
 *   when a call last failed that way.
 *
 * @module
 */

import { isAbortError } from "../../core/abort.ts";
import type { Clock } from "../../core/clock.ts";
import type { Registry } from "../../core/metrics.ts";
import { isRouteProviderError, type RouteProvider } from "./provider.ts";
import type { ThrottleGate } from "./throttle.ts";

/** The operations of a {@link RouteProvider}, as metric labels. */
export type ProviderOperation = "discover" | "list" | "create" | "replace" | "remove";

/** Options for {@link guardProvider}. */
export interface GuardOptions {
  readonly gate: ThrottleGate;
  readonly clock: Clock;
  /** Where the counters go; none when omitted. */
  readonly metrics?: Registry;
}

/**
 * Wrap a provider so each call waits at the gate, updates it, and is counted.
 *
 * @param provider The provider (e.g. aws-vpc's).
 * @param options The gate, clock and registry.
 * @returns A provider with the same name and behaviour.
 * @example
 * ```ts
 * const guarded = guardProvider(provider, { gate: processThrottleGate(clock), clock, metrics });
 * await guarded.list("rtb-0123456789abcdef0");
 * ```
 */
export function guardProvider(provider: RouteProvider, options: GuardOptions): RouteProvider {
  const { gate, clock, metrics } = options;
  const labels = { provider: provider.name };
  const calls = metrics?.counter(
    "weft_cloud_api_calls_total",
    "Cloud API calls of the route backend, by provider, operation and result (ok or the failure kind)",
  );
  const pause = metrics?.gauge(
    "weft_cloud_api_throttle_pause_seconds",
    "Pause between cloud API calls after throttling (0: not throttled)",
  );
  const lastError = metrics?.gauge(
    "weft_cloud_last_error_timestamp_seconds",
    "When a cloud API call last failed, by provider, operation and failure kind",
  );
  pause?.set(0, labels);

  const run = async <T>(
    operation: ProviderOperation,
    signal: AbortSignal | undefined,
    call: () => Promise<T>,
  ): Promise<T> => {
    await gate.wait(signal);
    try {
      const result = await call();
      gate.passed();
      calls?.inc({ ...labels, operation, result: "ok" });
      return result;
    } catch (e) {
      if (signal?.aborted || isAbortError(e)) throw e;
      const kind = isRouteProviderError(e) ? e.kind : "error";
      if (isRouteProviderError(e) && e.kind === "throttled") gate.throttled(e.retryAfterMs);
      calls?.inc({ ...labels, operation, result: kind });
      lastError?.set(clock.now() / 1000, { ...labels, operation, kind });
      throw e;
    } finally {
      pause?.set(gate.pauseMs / 1000, labels);
    }
  };

  return {
    name: provider.name,
    discover: (signal) => run("discover", signal, () => provider.discover(signal)),
    list: (table, signal) => run("list", signal, () => provider.list(table, signal)),
    create: (table, destination, target, signal) =>
      run("create", signal, () => provider.create(table, destination, target, signal)),
    replace: (table, destination, target, signal) =>
      run("replace", signal, () => provider.replace(table, destination, target, signal)),
    remove: (table, destination, signal) =>
      run("remove", signal, () => provider.remove(table, destination, signal)),
  };
}
