/**
 * Isolation of a third party's module: every call into it has a time
 * limit, what it returns is validated, and whatever it throws becomes an
 * error weft's retry loops understand — so a module that throws, hangs or
 * returns garbage costs a clear error and a retry with back-off, never the
 * agent nor what is already installed (weft tears nothing down on a failed
 * call: the reconcile loops only write what is missing and remove what is
 * stale after a successful listing).
 *
 * @module
 */

import { isAbortError } from "../../core/abort.ts";
import type { Clock } from "../../core/clock.ts";
import {
  isRouteProviderError,
  type ProviderRoute,
  type ProviderSelf,
  type RouteProvider,
  RouteProviderError,
} from "../cloud/provider.ts";
import type { Network, PeerChange } from "../types.ts";

/** Default time limit of one call into a module, ms (`Backend.CallTimeoutSeconds`). */
export const DEFAULT_MODULE_CALL_TIMEOUT_MS = 30_000;

/** How calls into a module are limited. */
export interface GuardLimits {
  readonly clock: Clock;
  /** Time limit of one call, ms. */
  readonly timeoutMs: number;
  /**
   * The agent's signal: once it aborts, no call reaches the module any
   * more (each is refused with the abort reason).
   */
  readonly stopped?: AbortSignal;
}

/** Refuse a call after shutdown. */
function refuseAfterStop(stopped: AbortSignal | undefined): void {
  if (stopped?.aborted) {
    throw stopped.reason ?? new DOMException("the agent stopped", "AbortError");
  }
}

/** A module's call broke the contract or its time limit. */
export class ModuleCallError extends Error {
  override name = "ModuleCallError";
}

/**
 * Run `call` with a signal that aborts after `timeoutMs`; reject at the
 * limit even when the call ignores its signal.
 *
 * @param what Named in the error, e.g. `acme-router create(10.5.1.0/24)`.
 * @param call The call, given the signal to honour.
 * @param options Clock, limit, the caller's signal.
 * @returns What the call returned.
 * @throws {RouteProviderError} `unavailable` on timeout; the caller's abort
 *   reason when `signal` aborts.
 */
export async function withTimeLimit<T>(
  what: string,
  call: (signal: AbortSignal) => Promise<T>,
  options: { clock: Clock; timeoutMs: number; signal?: AbortSignal },
): Promise<T> {
  const ctl = new AbortController();
  const stop = new AbortController();
  const onParent = () => ctl.abort(options.signal?.reason);
  options.signal?.addEventListener("abort", onParent, { once: true });
  if (options.signal?.aborted) ctl.abort(options.signal.reason);
  const limit = options.clock.sleep(options.timeoutMs, stop.signal).then(() => {
    const e = new RouteProviderError(
      "unavailable",
      `the backend module's ${what} did not answer within ${options.timeoutMs} ms; weft retries ` +
        `with back-off: check the module's API is reachable, or raise "Backend.CallTimeoutSeconds"`,
    );
    ctl.abort(e);
    throw e;
  });
  const parent = new Promise<never>((_, reject) => {
    ctl.signal.addEventListener("abort", () => reject(ctl.signal.reason), { once: true });
  });
  try {
    return await Promise.race([Promise.resolve().then(() => call(ctl.signal)), limit, parent]);
  } finally {
    stop.abort();
    limit.catch(() => {});
    parent.catch(() => {});
    options.signal?.removeEventListener("abort", onParent);
  }
}

const garbage = (name: string, op: string, detail: string, value: unknown) =>
  new RouteProviderError(
    "unavailable",
    `the backend module ${name} returned garbage from ${op}: ${detail}: current value is ${
      (JSON.stringify(value) ?? String(value)).slice(0, 200)
    }; fix the module (it must pass weft's route provider contract suite)`,
  );

const isCidr = (s: unknown): s is string =>
  typeof s === "string" && /^[0-9a-fA-F.:]+\/\d{1,3}$/.test(s);

/**
 * Check what `discover()` returned.
 *
 * @param name The module's name.
 * @param x The value.
 * @returns It, typed.
 * @throws {RouteProviderError} `unavailable`, naming the bad field.
 */
export function checkSelf(name: string, x: unknown): ProviderSelf {
  const s = x as Record<string, unknown> | null;
  if (typeof s !== "object" || s === null) throw garbage(name, "discover()", "not an object", x);
  if (typeof s.target !== "string" || s.target === "") {
    throw garbage(name, "discover()", "`target` must be a non-empty string", s.target);
  }
  if (
    !Array.isArray(s.tables) || s.tables.length === 0 ||
    !s.tables.every((t) => typeof t === "string" && t !== "")
  ) {
    throw garbage(name, "discover()", "`tables` must be a non-empty list of strings", s.tables);
  }
  if (typeof s.location !== "string") {
    throw garbage(name, "discover()", "`location` must be a string", s.location);
  }
  return s as unknown as ProviderSelf;
}

/**
 * Check what `list()` returned.
 *
 * @param name The module's name.
 * @param table The table asked for.
 * @param x The value.
 * @returns The routes, typed.
 * @throws {RouteProviderError} `unavailable`, naming the first bad route.
 */
export function checkRoutes(name: string, table: string, x: unknown): ProviderRoute[] {
  const op = `list(${table})`;
  if (!Array.isArray(x)) throw garbage(name, op, "not an array", x);
  for (const r of x as Record<string, unknown>[]) {
    const ok = typeof r === "object" && r !== null && r.table === table &&
      isCidr(r.destination) && (r.target === null || typeof r.target === "string") &&
      typeof r.owned === "boolean" && (r.name === undefined || typeof r.name === "string");
    if (!ok) {
      throw garbage(
        name,
        op,
        "each route must be {table (the one asked), destination (CIDR), target (string or null), owned (boolean)}",
        r,
      );
    }
  }
  return x as ProviderRoute[];
}

/** Normalise a thrown value into something the cloud loop acts on. */
function asProviderError(name: string, what: string, e: unknown): unknown {
  if (isAbortError(e) || isRouteProviderError(e)) return e;
  const message = e instanceof Error ? e.message : String(e);
  return new RouteProviderError(
    "unavailable",
    `the backend module ${name} failed in ${what}: ${message}; weft retries with back-off`,
    { cause: e },
  );
}

/**
 * Wrap a module's provider: time limits, validated results, errors as
 * {@link RouteProviderError} (an unknown throw is `unavailable`).
 *
 * @param name The module's name.
 * @param provider What its `createProvider` returned.
 * @param options Clock and the time limit of one call.
 * @returns A provider weft can drive.
 * @throws {RouteProviderError} When `provider` is not a provider at all.
 */
export function isolateProvider(
  name: string,
  provider: RouteProvider,
  options: GuardLimits,
): RouteProvider {
  for (const op of ["discover", "list", "create", "replace", "remove"] as const) {
    if (typeof (provider as unknown as Record<string, unknown>)?.[op] !== "function") {
      throw garbage(name, "createProvider()", `the provider lacks ${op}()`, provider);
    }
  }
  const call = async <T>(
    what: string,
    signal: AbortSignal | undefined,
    fn: (s: AbortSignal) => Promise<T>,
  ): Promise<T> => {
    refuseAfterStop(options.stopped);
    try {
      return await withTimeLimit(what, fn, { ...options, signal });
    } catch (e) {
      throw asProviderError(name, what, e);
    }
  };
  const done = async (p: Promise<unknown>) => {
    await p;
  };
  return {
    name,
    discover: async (signal) =>
      checkSelf(name, await call("discover()", signal, (s) => provider.discover(s))),
    list: async (table, signal) =>
      checkRoutes(
        name,
        table,
        await call(`list(${table})`, signal, (s) => provider.list(table, s)),
      ),
    create: (table, destination, target, signal) =>
      call(
        `create(${table}, ${destination})`,
        signal,
        (s) => done(provider.create(table, destination, target, s)),
      ),
    replace: (table, destination, target, signal) =>
      call(
        `replace(${table}, ${destination})`,
        signal,
        (s) => done(provider.replace(table, destination, target, s)),
      ),
    remove: (table, destination, signal) =>
      call(
        `remove(${table}, ${destination})`,
        signal,
        (s) => done(provider.remove(table, destination, s)),
      ),
  };
}

/**
 * Wrap a module backend's network: time limits on its peer calls and a
 * check of what `register` returned. A failed call rejects (the agent
 * retries it with back-off); nothing is undone.
 *
 * @param name The module's name.
 * @param network What its `register` returned.
 * @param options Clock and the time limit of one call.
 * @returns The network with guarded calls.
 * @throws {ModuleCallError} When `network` is not a Network.
 */
export function isolateNetwork(
  name: string,
  network: Network,
  options: GuardLimits,
): Network {
  const n = network as unknown as Record<string, unknown>;
  const lease = n?.lease as Record<string, unknown> | undefined;
  if (
    typeof n !== "object" || n === null || typeof lease !== "object" || lease === null ||
    typeof n.mtu !== "number" || !(n.mtu >= 68 && n.mtu <= 65_535) ||
    typeof n.syncPeers !== "function" || typeof n.run !== "function"
  ) {
    throw new ModuleCallError(
      `the backend module ${name}'s register() returned no Network (lease, mtu 68–65535, syncPeers(), run()): current value has keys ${
        JSON.stringify(Object.keys(n ?? {}))
      }; fix the module (it must return what ctx.acquire() gave it as lease)`,
    );
  }
  const limit = async <T>(
    what: string,
    signal: AbortSignal | undefined,
    fn: (s: AbortSignal) => Promise<T>,
  ) => {
    refuseAfterStop(options.stopped);
    return await withTimeLimit(`${name} ${what}`, fn, { ...options, signal }).catch((e) => {
      if (isAbortError(e) || e instanceof ModuleCallError) throw e;
      throw new ModuleCallError(
        `the backend module ${name} failed in ${what}: ${(e as Error)?.message ?? String(e)}; ` +
          `weft retries with back-off`,
        { cause: e },
      );
    });
  };
  return {
    lease: network.lease,
    mtu: network.mtu,
    syncPeers: (peers, signal) => limit("syncPeers()", signal, (s) => network.syncPeers(peers, s)),
    updatePeers: network.updatePeers
      ? (changes: readonly PeerChange[], signal?: AbortSignal) =>
        limit("updatePeers()", signal, (s) => network.updatePeers!(changes, s))
      : undefined,
    run: (signal) => network.run(signal),
    notReadyReason: network.notReadyReason
      ? () => {
        try {
          const r = network.notReadyReason!();
          return typeof r === "string" || r === null
            ? r
            : `${name}: notReadyReason() returned ${typeof r}`;
        } catch (e) {
          return `${name}: notReadyReason() threw ${(e as Error)?.message ?? e}`;
        }
      }
      : undefined,
  };
}
