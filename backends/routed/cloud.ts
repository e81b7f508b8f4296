/**
 * What the pure cloud-route backends (aws-vpc, gce) and the hybrid vxlan
 * mode share: the cloud keys of `Backend` / `Backend.CloudRoutes`
 * (`RouteTableID`, `RouteResyncSeconds`), opening a cloud's route provider
 * through its split module and the process-wide throttle gate, the
 * networks a cloud routes, and `registerCloudRouted`, which runs a cloud's
 * routes through the shared cloud target on the routed engine. The
 * backends themselves are `aws_vpc.ts` and `gce.ts`.
 *
 * @module
 */

import * as v from "valibot";
import { type Logger, nullLogger } from "../../core/log.ts";
import { ConfigError } from "../../core/errors.ts";
import type { IPv4Net, IPv6Net } from "../../core/ip.ts";
import { foldKeys, type NetworkConfig } from "../../lease/config.ts";
import type { Lease } from "../../lease/types.ts";
import type { AwsVpcProviderOptions } from "../cloud/aws/provider.ts";
import type { GceProviderOptions } from "../cloud/gce/provider.ts";
import { guardProvider } from "../cloud/calls.ts";
import { CLOUD_ROUTE_TYPES, type CloudRouteType, loadAws, loadGce } from "../cloud/load.ts";
import { isRouteProviderError, type ProviderSelf, type RouteProvider } from "../cloud/provider.ts";
import { type CloudEntry, cloudRouteTarget, leaseDestinations } from "../cloud/target.ts";
import { processThrottleGate, type ThrottleGate } from "../cloud/throttle.ts";
import type { BackendContext } from "../types.ts";
import { type RoutedNetwork, routedNetwork, type RoutedOptions } from "./engine.ts";

/** Default `RouteResyncSeconds`: how often each host re-reads each table. */
export const DEFAULT_ROUTE_RESYNC_SECONDS = 120;

const CloudOptionsSchema = v.object({
  RouteTableID: v.optional(v.unknown()),
  RouteResyncSeconds: v.optional(
    v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(86_400)),
  ),
});

/** The cloud keys of `Backend` (aws-vpc) or of `Backend.CloudRoutes` (hybrid vxlan). */
export interface CloudRouteOptions {
  /** `RouteTableID` as written (validated by the provider module). */
  readonly routeTableIds: unknown;
  /** Listing period, ms. */
  readonly listIntervalMs: number;
}

/**
 * Read `RouteTableID` and `RouteResyncSeconds` (case-insensitive keys).
 *
 * @param raw The object holding them.
 * @param where Its path for messages (`Backend`, `Backend.CloudRoutes`).
 * @returns The options (RouteTableID still unchecked: see {@link openCloudRoutes}).
 * @throws {ConfigError} When `RouteResyncSeconds` is not an integer from 1 to 86400.
 */
export function parseCloudRouteOptions(
  raw: Readonly<Record<string, unknown>>,
  where: string,
): CloudRouteOptions {
  const { values } = foldKeys(raw, ["RouteTableID", "RouteResyncSeconds"]);
  const parsed = v.safeParse(CloudOptionsSchema, values);
  if (!parsed.success) {
    const key = String(parsed.issues[0].path?.[0]?.key ?? "");
    throw new ConfigError(
      `the network config: "${where}.${key}" is invalid (${
        parsed.issues[0].message
      }): current value is ${
        JSON.stringify((values as Record<string, unknown>)[key])
      }; give the seconds between two readings of the route tables, e.g. ${DEFAULT_ROUTE_RESYNC_SECONDS}`,
      `${where}.${key}`,
    );
  }
  return {
    routeTableIds: parsed.output.RouteTableID,
    listIntervalMs: (parsed.output.RouteResyncSeconds ?? DEFAULT_ROUTE_RESYNC_SECONDS) * 1000,
  };
}

/** Options shared by aws-vpc, gce and the hybrid vxlan mode. */
export interface CloudBackendOptions {
  /** Provider settings for tests and simulations (IMDS client, endpoint, credentials, env). */
  readonly aws?: Omit<AwsVpcProviderOptions, "routeTableIds" | "clock">;
  /** GCE provider settings for tests and simulations (metadata client, env, timeouts). */
  readonly gce?: Omit<GceProviderOptions, "clock">;
  /** The throttle gate (default: the process-wide one). */
  readonly gate?: ThrottleGate;
  /** Randomness for the listing jitter. */
  readonly random?: () => number;
}

/** A provider ready to use, and what it found about this host. */
export interface OpenedCloud {
  readonly provider: RouteProvider;
  readonly self: ProviderSelf;
}

/**
 * Load the provider for `type`, validate its table option, wrap it with the
 * throttle gate and call counters, and discover this host.
 *
 * @param type The cloud (`aws-vpc` or `gce`).
 * @param routeTableIds `RouteTableID` as written (aws-vpc only: a gce route
 *   goes into the network of the VM's first interface).
 * @param where Path of the option for messages.
 * @param ctx Register context (clock, metrics, signal).
 * @param options Provider settings, gate.
 * @returns The guarded provider and this host.
 * @throws {ConfigError} For a malformed `RouteTableID` (or one given to gce), or an unknown type.
 * @throws {RouteProviderError} When discovery fails (the agent retries).
 */
export async function openCloudRoutes(
  type: string,
  routeTableIds: unknown,
  where: string,
  ctx: BackendContext,
  options: CloudBackendOptions,
): Promise<OpenedCloud> {
  if (!(CLOUD_ROUTE_TYPES as readonly string[]).includes(type)) {
    throw new ConfigError(
      `the network config: "${where}.Type" ${JSON.stringify(type)} is not a cloud weft can ` +
        `route in: use ${CLOUD_ROUTE_TYPES.map((t) => JSON.stringify(t)).join(" or ")}`,
      `${where}.Type`,
    );
  }
  const guard = (provider: RouteProvider) =>
    guardProvider(provider, {
      gate: options.gate ?? processThrottleGate(ctx.clock),
      clock: ctx.clock,
      metrics: ctx.metrics,
    });
  let provider: RouteProvider;
  if (type === "gce") {
    if (routeTableIds !== undefined) {
      throw new ConfigError(
        `the network config: "${where}.RouteTableID" is an aws-vpc key, but gce routes go into ` +
          `the network of this VM's first interface: current value is ${
            JSON.stringify(routeTableIds)
          }; remove it`,
        `${where}.RouteTableID`,
      );
    }
    const gce = await loadGce();
    provider = guard(gce.createGceRouteProvider({ ...options.gce, clock: ctx.clock }));
  } else {
    provider = guard(await openAws(routeTableIds, where, ctx, options));
  }
  const self = await provider.discover(ctx.signal);
  return { provider, self };
}

async function openAws(
  routeTableIds: unknown,
  where: string,
  ctx: BackendContext,
  options: CloudBackendOptions,
): Promise<RouteProvider> {
  const aws = await loadAws();
  let ids: string[];
  try {
    ids = aws.parseRouteTableIds(routeTableIds);
  } catch (e) {
    if (!(isRouteProviderError(e))) throw e;
    throw new ConfigError(
      `the network config: ${e.message.replace("Backend.RouteTableID", `${where}.RouteTableID`)}`,
      `${where}.RouteTableID`,
      { cause: e },
    );
  }
  return aws.createAwsVpcProvider({
    ...options.aws,
    routeTableIds: ids.length > 0 ? ids : undefined,
    clock: ctx.clock,
  });
}

/**
 * The cluster networks a cloud backend routes: `Network`, and `IPv6Network`
 * with `EnableIPv6`.
 *
 * @param config The network config.
 * @param backend Backend name for messages.
 * @param cloud The cloud the routes go to (`gce` routes are IPv4 only).
 * @returns The networks (IPv4 first) and whether IPv6 routes are written.
 * @throws {ConfigError} When there is no IPv4 network (leases are keyed by
 *   it), or IPv6 routes are asked of gce.
 */
export function cloudNetworks(
  config: NetworkConfig,
  backend: string,
  cloud = backend,
): { networks: (IPv4Net | IPv6Net)[]; withIPv6: boolean } {
  if (!config.enableIPv4 || !config.network) {
    throw new ConfigError(
      `the ${backend} backend of weft needs an IPv4 cluster network (IPv6-only is not supported): ` +
        `set "Network" and leave "EnableIPv4" on`,
      "Network",
    );
  }
  const withIPv6 = config.enableIPv6 && config.ipv6Network !== undefined;
  if (withIPv6 && cloud === "gce") {
    throw new ConfigError(
      `the ${backend} backend of weft writes IPv4 routes only on GCE: "EnableIPv6" is on with ` +
        `"IPv6Network" ${JSON.stringify(String(config.ipv6Network))}; turn "EnableIPv6" off, or ` +
        `use vxlan for IPv6`,
      "EnableIPv6",
    );
  }
  return {
    networks: withIPv6 ? [config.network, config.ipv6Network!] : [config.network],
    withIPv6,
  };
}

/** Options of the pure cloud-route backends (`awsVpcBackend`, `gceBackend`). */
export interface CloudRoutedOptions extends RoutedOptions, CloudBackendOptions {
  /** Defaults to the context's logger. */
  readonly logger?: Logger;
}

/** An aws-vpc or gce Network, with what tests and the status API may inspect. */
export interface CloudRoutedNetwork extends RoutedNetwork {
  /** What discovery found: this host's ENI (VM), its tables (network), its VPC. */
  readonly self: ProviderSelf;
}

/**
 * Register a pure cloud-route backend (`aws-vpc`, `gce`): discover this
 * host, lease with the public IP only (as flannel's backends of that name),
 * write its route, and keep the other leases' routes through the shared
 * cloud target on the routed engine.
 *
 * @param type The backend type, which is also its cloud.
 * @param options Provider settings (tests), gate, timings.
 * @param ctx Register context.
 * @returns The network.
 */
export async function registerCloudRouted(
  type: CloudRouteType,
  options: CloudRoutedOptions,
  ctx: BackendContext,
): Promise<CloudRoutedNetwork> {
  const log = (options.logger ?? ctx.logger ?? nullLogger).with({ backend: type });
  const { networks, withIPv6 } = cloudNetworks(ctx.config, type);
  const cloud = parseCloudRouteOptions(ctx.config.backend, "Backend");
  const { provider, self } = await openCloudRoutes(
    type,
    cloud.routeTableIds,
    "Backend",
    ctx,
    options,
  );
  log.info(`this host in ${type}`, {
    target: self.target,
    location: self.location,
    tables: self.tables.join(","),
  });

  // flannel's aws-vpc and gce leases: the public IP only
  const lease = await ctx.acquire({ publicIP: ctx.extIface.extAddr }, ctx.signal);
  const destinationsOf = (l: Lease) => leaseDestinations(l.subnet, l.ipv6Subnet, withIPv6);
  const own: CloudEntry = { kind: "own", destinations: destinationsOf(lease) };
  const target = cloudRouteTarget({
    provider,
    self,
    networks,
    ownKey: own.destinations[0],
    clock: ctx.clock,
    logger: log,
    metrics: ctx.metrics,
    random: options.random,
    listIntervalMs: cloud.listIntervalMs,
  });
  const first = await target.ensureOwn(own, ctx.signal);
  for (const f of first.failures) {
    log.error("cannot write this host's route yet; retrying", { error: f.error.message });
  }

  const network = routedNetwork<CloudEntry>(
    type,
    {
      lease,
      mtu: ctx.extIface.mtu,
      target,
      // every lease keeps its route (flannel's leases say nothing more)
      peerEntries: (peer) => ({ entries: { kind: "peer", destinations: destinationsOf(peer) } }),
      ownEntries: own,
      release: (signal) => target.release(own, signal),
    },
    ctx,
    log,
    // no kernel state: the only periodic work is the target's own listing
    { resyncIntervalMs: 0, ...options },
  );
  return { ...network, self };
}
