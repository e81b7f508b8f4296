/**
 * The `module` backend: a third party's backend module, loaded at run time.
 *
 * ```json
 * {"Network": "10.5.0.0/16",
 *  "Backend": {"Type": "module", "Module": "/etc/weft/acme-router.js",
 *              "CallTimeoutSeconds": 30, "RouteResyncSeconds": 120,
 *              "RouterURL": "http://10.0.0.1:8080"}}
 * ```
 *
 * weft's keys: `Type`, `Module` (absolute path or `file:` URL),
 * `CallTimeoutSeconds` (time limit of one call into the module, default 30),
 * `RouteResyncSeconds` (route-provider modules: how often each host re-reads
 * each table, default 120, jittered ±25 %). Every other key is the module's,
 * validated by the schema it exports (./types.ts).
 *
 * A route-provider module runs exactly like aws-vpc: weft discovers this
 * host through it, acquires the lease (`{"PublicIP": …}`, flannel's aws-vpc
 * form), writes this host's route into every table and keeps stale routes
 * out, through the shared cloud target (`backends/cloud/target.ts`) on the
 * routed engine: retries with back-off, per-call metrics
 * (`weft_cloud_api_calls_total{provider="<module name>"}`), `/readyz` until
 * this host's route is in place. A backend module registers itself; weft
 * guards its peer calls. Either way each call has a time limit, results are
 * validated, failures are retried and nothing already installed is removed
 * because a call failed (./guard.ts).
 *
 * @module
 */

import * as v from "valibot";
import { ConfigError } from "../../core/errors.ts";
import { type Logger, nullLogger } from "../../core/log.ts";
import { foldKeys } from "../../lease/config.ts";
import type { Lease } from "../../lease/types.ts";
import { guardProvider } from "../cloud/calls.ts";
import { type CloudEntry, cloudRouteTarget, leaseDestinations } from "../cloud/target.ts";
import { processThrottleGate, type ThrottleGate } from "../cloud/throttle.ts";
import { cloudNetworks, DEFAULT_ROUTE_RESYNC_SECONDS } from "../routed/cloud.ts";
import { routedNetwork, type RoutedOptions } from "../routed/engine.ts";
import type { Backend, BackendContext, Network } from "../types.ts";
import {
  DEFAULT_MODULE_CALL_TIMEOUT_MS,
  type GuardLimits,
  isolateNetwork,
  isolateProvider,
} from "./guard.ts";
import { loadBackendModule, moduleOptionsOf, validateModuleOptions } from "./load.ts";
import type { ModuleContext, WeftModule } from "./types.ts";

const WeftKeys = v.object({
  CallTimeoutSeconds: v.optional(v.pipe(v.number(), v.minValue(0.001), v.maxValue(3600))),
  RouteResyncSeconds: v.optional(
    v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(86_400)),
  ),
});

/** weft's own settings of a module backend. */
export interface ModuleSettings {
  /** `Backend.Module` as written. */
  readonly module: unknown;
  /** Time limit of one call into the module, ms. */
  readonly callTimeoutMs: number;
  /** Listing period of a route-provider module, ms. */
  readonly listIntervalMs: number;
}

/**
 * Read weft's keys of a module backend (case-insensitive).
 *
 * @param backend `Backend` of the network config.
 * @returns The settings.
 * @throws {ConfigError} For a time limit or period out of range.
 */
export function parseModuleSettings(backend: Readonly<Record<string, unknown>>): ModuleSettings {
  const { values } = foldKeys(backend as Record<string, unknown>, [
    "Module",
    "CallTimeoutSeconds",
    "RouteResyncSeconds",
  ]);
  const parsed = v.safeParse(WeftKeys, values);
  if (!parsed.success) {
    const key = String(parsed.issues[0].path?.[0]?.key ?? "");
    const fix = key === "CallTimeoutSeconds"
      ? "give the seconds one call into the module may take, e.g. 30"
      : `give the seconds between two readings of the route tables, e.g. ${DEFAULT_ROUTE_RESYNC_SECONDS}`;
    throw new ConfigError(
      `the network config: "Backend.${key}" is invalid (${
        parsed.issues[0].message
      }): current value is ${JSON.stringify((values as Record<string, unknown>)[key])}; ${fix}`,
      `Backend.${key}`,
    );
  }
  return {
    module: values.Module,
    callTimeoutMs: parsed.output.CallTimeoutSeconds !== undefined
      ? Math.round(parsed.output.CallTimeoutSeconds * 1000)
      : DEFAULT_MODULE_CALL_TIMEOUT_MS,
    listIntervalMs: (parsed.output.RouteResyncSeconds ?? DEFAULT_ROUTE_RESYNC_SECONDS) * 1000,
  };
}

/** Options of {@link moduleBackend} (tests). */
export interface ModuleBackendOptions extends RoutedOptions {
  /** The throttle gate (default: the process-wide one). */
  readonly gate?: ThrottleGate;
  /** Randomness for the listing jitter. */
  readonly random?: () => number;
  /** Load this module instead of `Backend.Module` (tests). */
  readonly load?: (spec: unknown) => Promise<{ module: WeftModule; url: string }>;
}

/**
 * The `module` backend.
 *
 * @param options Gate, timings, a loader for tests.
 * @returns The backend, type `module`.
 * @example
 * ```ts
 * const backend = moduleBackend();
 * const network = await backend.register(ctx); // loads Backend.Module, then as its kind says
 * ```
 */
export function moduleBackend(options: ModuleBackendOptions = {}): Backend {
  return { type: "module", register: (ctx) => registerModule(options, ctx) };
}

async function registerModule(
  options: ModuleBackendOptions,
  ctx: BackendContext,
): Promise<Network> {
  const settings = parseModuleSettings(ctx.config.backend);
  const { module, url } = await (options.load ?? loadBackendModule)(settings.module);
  const log = (ctx.logger ?? nullLogger).with({ backend: "module", module: module.name });
  const moduleOptions = await validateModuleOptions(module, moduleOptionsOf(ctx.config.backend));
  log.info("backend module loaded", { url, kind: module.kind });
  const mctx: ModuleContext = {
    config: ctx.config,
    extIface: ctx.extIface,
    logger: log,
    clock: ctx.clock,
    signal: ctx.signal,
  };
  const limits = { clock: ctx.clock, timeoutMs: settings.callTimeoutMs, stopped: ctx.signal };
  if (module.kind === "backend") {
    const backend = await module.createBackend(moduleOptions, mctx);
    if (typeof backend?.register !== "function") {
      throw new ConfigError(
        `the backend module ${module.name}: createBackend() returned no Backend (an object with register(ctx)): current value is ${typeof backend}; fix the module`,
        "Backend.Module",
      );
    }
    return isolateNetwork(module.name, await backend.register(ctx), limits);
  }
  return await registerRouteProvider(module.name, module, moduleOptions, mctx, ctx, {
    ...options,
    settings,
    log,
    limits,
  });
}

async function registerRouteProvider(
  name: string,
  module: Extract<WeftModule, { kind: "route-provider" }>,
  moduleOptions: unknown,
  mctx: ModuleContext,
  ctx: BackendContext,
  o: ModuleBackendOptions & {
    settings: ModuleSettings;
    log: Logger;
    limits: GuardLimits;
  },
): Promise<Network> {
  const { networks, withIPv6 } = cloudNetworks(ctx.config, `module ${name}`);
  const provider = guardProvider(
    isolateProvider(name, await module.createProvider(moduleOptions, mctx), o.limits),
    { gate: o.gate ?? processThrottleGate(ctx.clock), clock: ctx.clock, metrics: ctx.metrics },
  );
  const self = await provider.discover(ctx.signal);
  o.log.info("this host as the module sees it", {
    target: self.target,
    location: self.location,
    tables: self.tables.join(","),
  });
  const lease = await ctx.acquire({ publicIP: ctx.extIface.extAddr }, ctx.signal);
  const destinationsOf = (l: Lease) => leaseDestinations(l.subnet, l.ipv6Subnet, withIPv6);
  const own: CloudEntry = { kind: "own", destinations: destinationsOf(lease) };
  const target = cloudRouteTarget({
    provider,
    self,
    networks,
    ownKey: own.destinations[0],
    clock: ctx.clock,
    logger: o.log,
    metrics: ctx.metrics,
    random: o.random,
    listIntervalMs: o.settings.listIntervalMs,
  });
  const first = await target.ensureOwn(own, ctx.signal);
  for (const f of first.failures) {
    o.log.error("cannot write this host's route yet; retrying", { error: f.error.message });
  }
  return routedNetwork<CloudEntry>(
    "module",
    {
      lease,
      mtu: ctx.extIface.mtu,
      target,
      peerEntries: (peer) => ({ entries: { kind: "peer", destinations: destinationsOf(peer) } }),
      ownEntries: own,
      release: (signal) => target.release(own, signal),
    },
    ctx,
    o.log,
    { resyncIntervalMs: 0, ...o },
  );
}
