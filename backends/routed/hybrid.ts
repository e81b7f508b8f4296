/**
 * Hybrid clusters: vxlan everywhere, cloud routes where they work. A vxlan
 * host whose config has `Backend.CloudRoutes` and that finds itself in the
 * cloud also writes its subnet's route into its VPC's route tables, and
 * reaches peers of its own VPC through the VPC router, with no
 * encapsulation; every other peer (on-prem, another VPC, a flannel node)
 * through vxlan, as before.
 *
 * Config (weft's key inside flannel's vxlan backend, which flannel and
 * older weft ignore):
 * ```json
 * {"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","VNI":1,
 *  "CloudRoutes":{"Type":"aws-vpc","RouteTableID":["rtb-0a1b2c3d4e5f60718"]}}}
 * ```
 * `CloudRoutes` takes the aws-vpc keys (`RouteTableID`, `RouteResyncSeconds`);
 * with `"Type":"gce"` only `RouteResyncSeconds` (the route goes into the
 * network of the VM's first interface; `Location` is that network's selfLink,
 * `Target` the VM's selfLink).
 *
 * Lease (BackendType stays "vxlan"; flannel's vxlan backend decodes
 * BackendData into {VNI, VtepMAC} and ignores other keys, so flannel nodes
 * and on-prem hosts reach a hybrid host through vxlan unchanged):
 * ```json
 * {"PublicIP":"10.0.1.11","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,
 *  "VtepMAC":"c6:d2:32:6f:8f:44","CloudRoute":{"Type":"aws-vpc","Location":"vpc-0a1b2c3d4e5f60718",
 *  "Target":"eni-0123456789abcdef0"}}}
 * ```
 * A host not in the cloud publishes no `CloudRoute` and is a plain vxlan
 * host: `AWS_EC2_METADATA_DISABLED=true` (aws-vpc) or
 * `METADATA_SERVER_DETECTION=none` (gce, google-auth's variable) says so at once; otherwise a
 * discovery that fails twice as `unavailable` (no instance metadata, or the
 * EC2 API unreachable) makes it one until weft restarts — traffic still
 * flows, through vxlan. Discovery that fails for another reason (denied,
 * another VPC's table, a malformed option) fails the registration, which
 * the agent retries.
 *
 * Per peer: same `CloudRoute.Type` and `Location` as this host → no kernel
 * entries (the default route leads to the VPC router, which has the peer's
 * route) and its route is kept; anything else → vxlan's neighbour, fdb
 * entry and route, and a route for its subnet in this VPC's tables is stale.
 *
 * @module
 */

import * as v from "valibot";
import process from "node:process";
import { ConfigError } from "../../core/errors.ts";
import type { Logger } from "../../core/log.ts";
import type { IPv4Net, IPv6Net } from "../../core/ip.ts";
import { foldKeys, type NetworkConfig } from "../../lease/config.ts";
import type { Lease } from "../../lease/types.ts";
import type { ApplyResult, PeerEntries } from "../../datapath/types.ts";
import { isRouteProviderError } from "../cloud/provider.ts";
import {
  type CloudEntry,
  type CloudRouteTarget,
  cloudRouteTarget,
  leaseDestinations,
} from "../cloud/target.ts";
import type { BackendContext } from "../types.ts";
import {
  type CloudBackendOptions,
  cloudNetworks,
  openCloudRoutes,
  parseCloudRouteOptions,
} from "./cloud.ts";
import type { PeerResult, RoutedSetup, RouteTarget } from "./engine.ts";

/** A hybrid peer's entries: kernel (vxlan) ones when it is elsewhere, and its cloud marker. */
export interface HybridEntry {
  readonly kernel?: PeerEntries;
  readonly cloud: CloudEntry;
}

/** Where a hybrid host's route is, as its lease publishes it. */
export interface CloudRouteData {
  /** The cloud, e.g. `aws-vpc`. */
  readonly Type: string;
  /** Its location there (AWS: the VPC id). */
  readonly Location: string;
  /** Its next hop there (AWS: the ENI id). */
  readonly Target: string;
}

const CloudRouteSchema = v.object({
  Type: v.pipe(v.string(), v.minLength(1)),
  Location: v.pipe(v.string(), v.minLength(1)),
  Target: v.pipe(v.string(), v.minLength(1)),
});

/**
 * Read a peer's `BackendData.CloudRoute` (keys case-insensitive).
 *
 * @param backendData The lease's BackendData.
 * @returns The data, or null when absent or malformed.
 */
export function parseCloudRouteData(backendData: unknown): CloudRouteData | null {
  if (typeof backendData !== "object" || backendData === null) return null;
  const { values } = foldKeys(backendData as Record<string, unknown>, ["CloudRoute"]);
  const raw = values.CloudRoute;
  if (typeof raw !== "object" || raw === null) return null;
  const { values: fields } = foldKeys(raw as Record<string, unknown>, [
    "Type",
    "Location",
    "Target",
  ]);
  const parsed = v.safeParse(CloudRouteSchema, fields);
  return parsed.success ? parsed.output : null;
}

/** What the vxlan backend needs from its hybrid extension. */
export interface VxlanExtension {
  /** Extra BackendData keys, after VNI and VtepMAC (empty off the cloud). */
  readonly backendData: Readonly<Record<string, unknown>>;
  /**
   * The setup to run instead of plain vxlan's, given its setup (kernel
   * target, vxlan peer entries, the lease); writes this host's cloud route
   * first, so it exists when the agent reports ready.
   */
  extend(setup: RoutedSetup<PeerEntries>): Promise<RoutedSetup<unknown>>;
}

/**
 * A target that sends the kernel part of each entry to the vxlan kernel
 * target and the cloud part to the cloud target.
 *
 * @param kernel The vxlan kernel target.
 * @param cloud The cloud target.
 * @returns The combined target (named after the kernel one, whose drift it reports).
 */
export function hybridTarget(
  kernel: RouteTarget<PeerEntries>,
  cloud: CloudRouteTarget,
): RouteTarget<HybridEntry> {
  const merge = (a: ApplyResult, b: ApplyResult): ApplyResult => ({
    written: a.written + b.written,
    deleted: a.deleted + b.deleted,
    failures: [...a.failures, ...b.failures],
  });
  return {
    name: kernel.name,
    async sync(entries, signal) {
      const k = new Map<string, PeerEntries>();
      const c = new Map<string, CloudEntry>();
      for (const [key, e] of entries) {
        if (e.kernel) k.set(key, e.kernel);
        c.set(key, e.cloud);
      }
      return merge(await kernel.sync(k, signal), await cloud.sync(c, signal));
    },
    async update(changes, signal) {
      const k = new Map<string, PeerEntries | null>();
      const c = new Map<string, CloudEntry | null>();
      for (const [key, e] of changes) {
        k.set(key, e?.kernel ?? null);
        c.set(key, e?.cloud ?? null);
      }
      return merge(await kernel.update(k, signal), await cloud.update(c, signal));
    },
    drift: kernel.drift ? (signal) => kernel.drift!(signal) : undefined,
    notReadyReason: () => cloud.notReadyReason(),
    nextSyncInMs: () => cloud.nextSyncInMs(),
  };
}

/** Attempts at discovery before a host counts as off the cloud. */
const DISCOVERY_ATTEMPTS = 2;

/**
 * Discover this host in the cloud named by `Backend.CloudRoutes` and make
 * the extension the vxlan backend runs with.
 *
 * @param config The network config (its `Backend.CloudRoutes`).
 * @param ctx Register context.
 * @param log Where to log.
 * @param options Provider settings (tests), gate, randomness.
 * @returns The extension: plain vxlan off the cloud.
 * @throws {ConfigError} When `CloudRoutes` is malformed.
 * @throws {RouteProviderError} When discovery fails other than "not in this cloud".
 */
export async function cloudRoutesExtension(
  config: NetworkConfig,
  ctx: BackendContext,
  log: Logger,
  options: CloudBackendOptions,
): Promise<VxlanExtension> {
  const raw = foldKeys(config.backend, ["CloudRoutes"]).values.CloudRoutes;
  const where = "Backend.CloudRoutes";
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new ConfigError(
      `the network config: "${where}" must be an object such as {"Type":"aws-vpc"}: current value is ${
        JSON.stringify(raw)
      }`,
      where,
    );
  }
  const record = raw as Record<string, unknown>;
  const type = String(foldKeys(record, ["Type"]).values.Type ?? "");
  const cloud = parseCloudRouteOptions(record, where);
  const { networks, withIPv6 } = cloudNetworks(config, "hybrid vxlan", type);

  const plain: VxlanExtension = {
    backendData: {},
    extend: (setup) => Promise.resolve(setup),
  };
  const env = (type === "gce" ? options.gce?.env : options.aws?.env) ?? process.env;
  if (type === "aws-vpc" && env.AWS_EC2_METADATA_DISABLED?.toLowerCase() === "true") {
    log.info("AWS_EC2_METADATA_DISABLED=true: an on-prem host (vxlan to every peer)");
    return plain;
  }
  if (type === "gce" && env.METADATA_SERVER_DETECTION?.toLowerCase() === "none") {
    log.info("METADATA_SERVER_DETECTION=none: an on-prem host (vxlan to every peer)");
    return plain;
  }
  let opened: Awaited<ReturnType<typeof openCloudRoutes>> | undefined;
  for (let attempt = 1; !opened; attempt++) {
    try {
      opened = await openCloudRoutes(type, cloud.routeTableIds, where, ctx, options);
    } catch (e) {
      if (!(isRouteProviderError(e)) || e.kind !== "unavailable") throw e;
      if (attempt >= DISCOVERY_ATTEMPTS) {
        log.warn(
          `not in ${type}: this host joins as an on-prem host (vxlan to every peer); ` +
            `restart weft to try again. On-prem hosts may set ${
              type === "gce" ? "METADATA_SERVER_DETECTION=none" : "AWS_EC2_METADATA_DISABLED=true"
            } to skip this check`,
          { error: e.message },
        );
        return plain;
      }
      await ctx.clock.sleep(1000 * attempt, ctx.signal);
    }
  }
  const { provider, self } = opened;
  log.info("this host in the cloud: peers of its location are reached through its route tables", {
    cloud: provider.name,
    location: self.location,
    target: self.target,
    tables: self.tables.join(","),
  });
  const data: CloudRouteData = {
    Type: provider.name,
    Location: self.location,
    Target: self.target,
  };
  return {
    backendData: { CloudRoute: data },
    extend: (setup) =>
      hybridSetup(setup, { provider, self, networks, withIPv6, cloud, ctx, log, options }),
  };
}

async function hybridSetup(
  setup: RoutedSetup<PeerEntries>,
  env: {
    provider: Awaited<ReturnType<typeof openCloudRoutes>>["provider"];
    self: Awaited<ReturnType<typeof openCloudRoutes>>["self"];
    networks: (IPv4Net | IPv6Net)[];
    withIPv6: boolean;
    cloud: ReturnType<typeof parseCloudRouteOptions>;
    ctx: BackendContext;
    log: Logger;
    options: CloudBackendOptions;
  },
): Promise<RoutedSetup<HybridEntry>> {
  const { provider, self, ctx } = env;
  const destinationsOf = (l: Lease) => leaseDestinations(l.subnet, l.ipv6Subnet, env.withIPv6);
  const own: CloudEntry = { kind: "own", destinations: destinationsOf(setup.lease) };
  const cloudTarget = cloudRouteTarget({
    provider,
    self,
    networks: env.networks,
    ownKey: own.destinations[0],
    clock: ctx.clock,
    logger: env.log,
    metrics: ctx.metrics,
    random: env.options.random,
    listIntervalMs: env.cloud.listIntervalMs,
  });
  const peerEntries = (peer: Lease): PeerResult<HybridEntry> => {
    const destinations = destinationsOf(peer);
    const where = peer.attrs.backendType === "vxlan"
      ? parseCloudRouteData(peer.attrs.backendData)
      : null;
    if (where && where.Type === provider.name && where.Location === self.location) {
      return { entries: { cloud: { kind: "peer", destinations, target: where.Target } } };
    }
    const kernel = setup.peerEntries(peer);
    if ("skip" in kernel) return kernel;
    return {
      entries: { kernel: kernel.entries, cloud: { kind: "peer", destinations, target: null } },
    };
  };
  const first = await cloudTarget.ensureOwn(own, ctx.signal);
  for (const f of first.failures) {
    env.log.error("cannot write this host's route yet; retrying", { error: f.error.message });
  }
  return {
    lease: setup.lease,
    mtu: setup.mtu,
    target: hybridTarget(setup.target, cloudTarget),
    peerEntries,
    ownEntries: { cloud: own },
    refresh: setup.refresh,
    release: (signal) => cloudTarget.release(own, signal),
  };
}
