/**
 * The host-gw backend: plain routing, wire-compatible with flannel's.
 *
 * Kernel state it creates, and why:
 * - Per peer one route `<peer subnet> via <peer PublicIP> dev <ext iface>`
 *   in the main table: every host must share one L2 segment, so a peer's
 *   public address is a directly reachable next hop. No device, no
 *   encapsulation; pod MTU = the external interface's MTU.
 *
 * It refuses to start when the public IP is not an address of the external
 * interface (`--public-ip` behind NAT, or a typo): peers would route to an
 * address that does not lead here. A peer whose PublicIP is not on a
 * connected network fails its route (ENETUNREACH) and is reported; the rest
 * are installed.
 *
 * The lease publishes `BackendType` "host-gw" and no `BackendData`.
 * Desired state is a pure function of (own lease, peer leases); `syncPeers`
 * writes the difference; `run` restores deleted routes.
 *
 * @module
 */

import { type Logger, nullLogger } from "../core/log.ts";
import {
  formatIPv4,
  formatIPv4Net,
  type IPv4Net,
  isIPv4,
  maskIPv4,
  parseIPv4,
} from "../core/ip.ts";
import { ipv4SubnetOf, type Lease } from "../lease/types.ts";
import {
  type Datapath,
  type DatapathEvent,
  type Route,
  RT_TABLE_MAIN,
  RTPROT_KERNEL,
} from "../datapath/types.ts";
import type { Backend, BackendContext, Network } from "./types.ts";
import {
  applyPlan,
  type DesiredState,
  finishSync,
  ipv4NetworkOf,
  type ManagedScope,
  planChanges,
  planSize,
  readInstalled,
  repairLoop,
  Serial,
  type SkippedPeer,
  SkipWarner,
  type SyncResult,
} from "./peer_sync.ts";

/**
 * The routes for a set of peers (pure).
 *
 * @param own This host's lease (skipped if it appears among the peers).
 * @param peers Peer leases.
 * @param extIndex Index of the external interface.
 * @returns One route per usable peer, and the peers skipped with why.
 */
export function hostGwDesiredState(
  own: Lease,
  peers: readonly Lease[],
  extIndex: number,
): DesiredState & { readonly skipped: readonly SkippedPeer[] } {
  const routes: Route[] = [];
  const skipped: SkippedPeer[] = [];
  for (const lease of peers) {
    const subnet = lease.subnet;
    if (!subnet) {
      skipped.push({ lease, reason: "it has no IPv4 subnet (an IPv6-only lease)" });
      continue;
    }
    if (own.subnet && subnet.ip === own.subnet.ip && subnet.prefixLen === own.subnet.prefixLen) {
      continue;
    }
    if (lease.attrs.backendType !== "host-gw") {
      skipped.push({
        lease,
        reason: `backend type is ${
          JSON.stringify(lease.attrs.backendType ?? "udp")
        }, not "host-gw"`,
      });
      continue;
    }
    if (!isIPv4(lease.attrs.publicIP)) {
      skipped.push({
        lease,
        reason: `PublicIP ${JSON.stringify(lease.attrs.publicIP)} is not IPv4`,
      });
      continue;
    }
    routes.push({ dst: subnet, gateway: parseIPv4(lease.attrs.publicIP), index: extIndex });
  }
  return { routes, neighbours: [], fdb: [], skipped };
}

/** Options for {@link hostGwBackend}. */
export interface HostGwBackendOptions {
  readonly datapath: Datapath;
  /** Defaults to the context's logger. */
  readonly logger?: Logger;
  /** Periodic full resync in `run` (default 60 s; 0 = only on events). */
  readonly resyncIntervalMs?: number;
  /** Debounce of repairs after a kernel event (default 20 ms). */
  readonly repairDebounceMs?: number;
  /** Called after each repair (for tests and metrics). */
  readonly onRepaired?: (reason: string) => void;
}

/** The host-gw Network, with a resync hook for tests. */
export interface HostGwNetwork extends Network {
  /** Resync now against the last peer set; returns what was written. */
  resync(): Promise<SyncResult>;
}

/**
 * The host-gw backend.
 *
 * @param options The datapath.
 * @returns The backend, type `host-gw`.
 * @example
 * ```ts
 * const backend = hostGwBackend({ datapath: await openNetlinkDatapath() });
 * ```
 */
export function hostGwBackend(options: HostGwBackendOptions): Backend {
  return { type: "host-gw", register: (ctx) => registerHostGw(options, ctx) };
}

async function registerHostGw(
  options: HostGwBackendOptions,
  ctx: BackendContext,
): Promise<HostGwNetwork> {
  const dp = options.datapath;
  const log = (options.logger ?? ctx.logger ?? nullLogger).with({ backend: "host-gw" });
  const ext = ctx.extIface;
  const network = ipv4NetworkOf(ctx.config, "host-gw", log);
  if (ext.extAddr !== ext.ifaceAddr) {
    throw new Error(
      `host-gw cannot start: the public IP ${ext.extAddr} differs from ${ext.name}'s address ${ext.ifaceAddr}, ` +
        "so this host is probably behind NAT, which host-gw does not support (peers route straight to the public IP); " +
        "drop --public-ip, or use the vxlan backend",
    );
  }
  const link = ext.index ? await dp.getLink(ext.index) : await dp.getLink(ext.name);
  if (!link) {
    throw new Error(
      `host-gw cannot start: the external interface ${ext.name} (index ${ext.index}) does not exist; pick one with --iface`,
    );
  }
  let extIndex = link.index;
  const publicIP = parseIPv4(ext.extAddr);
  const addrs = await dp.listAddresses(extIndex);
  if (!addrs.some((a) => a.ip === publicIP)) {
    throw new Error(
      `host-gw cannot start: the public IP ${ext.extAddr} is not an address of ${link.name} (it has ${
        addrs.map((a) => `${formatIPv4(a.ip)}/${a.prefixLen}`).join(", ") || "none"
      }); peers would route to an address that does not lead here. Add the address, pick the right interface with --iface, or fix --public-ip`,
    );
  }

  const lease = await ctx.acquire({ publicIP: ext.extAddr, backendType: "host-gw" }, ctx.signal);
  const ownSubnet = ipv4SubnetOf(lease, "the host-gw backend");

  let peers: readonly Lease[] = [];
  let desired: DesiredState = { routes: [], neighbours: [], fdb: [] };
  const serial = new Serial();
  const warner = new SkipWarner(log);
  const inNetwork = (dst: IPv4Net) =>
    dst.prefixLen >= network.prefixLen &&
    ((dst.ip & maskIPv4(network.prefixLen)) >>> 0) === network.ip &&
    !(dst.ip === ownSubnet.ip && dst.prefixLen === ownSubnet.prefixLen);
  const scope = (): ManagedScope => ({
    isOurRoute: (r) =>
      (r.table ?? RT_TABLE_MAIN) === RT_TABLE_MAIN && r.protocol !== RTPROT_KERNEL &&
      inNetwork(r.dst) && r.index === extIndex && r.gateway !== null,
    isOurNeighbour: () => false,
    isOurFdb: () => false,
  });

  const reconcile = async (): Promise<SyncResult> => {
    const current = await dp.getLink(ext.name);
    if (current) extIndex = current.index;
    const d = hostGwDesiredState(lease, peers, extIndex);
    warner.report(d.skipped);
    desired = d;
    const installed = await readInstalled(dp, { neighbours: false, fdb: false });
    const plan = planChanges(d, installed, scope());
    const errors = await applyPlan(dp, plan);
    if (planSize(plan) > 0) {
      log.info("host-gw peers synced", {
        peers: d.routes.length,
        routesAdded: plan.replaceRoutes.length,
        routesRemoved: plan.deleteRoutes.length,
        failed: errors.length,
      });
    }
    for (const e of errors) log.warn("could not write a peer route", { error: e.message });
    return finishSync(plan, errors);
  };

  const needsRepair = (e: DatapathEvent): string | null => {
    if (e.kind === "link" && e.link.name === ext.name && e.action === "new") {
      if (e.link.index !== extIndex) return `external interface ${ext.name} reappeared`;
      // Routes through a device vanish (silently) when it goes down: restore them once it is up.
      return e.link.up ? `external interface ${ext.name} changed` : null;
    }
    if (e.kind !== "route" || (e.route.table ?? RT_TABLE_MAIN) !== RT_TABLE_MAIN) return null;
    const want = desired.routes.find((r) =>
      r.dst.ip === e.route.dst.ip && r.dst.prefixLen === e.route.dst.prefixLen
    );
    if (!want) return null;
    if (e.action === "del") return `route ${formatIPv4Net(want.dst)} was deleted`;
    if (e.route.gateway !== want.gateway || e.route.index !== want.index) {
      return `route ${formatIPv4Net(want.dst)} was changed`;
    }
    return null;
  };

  return {
    lease,
    mtu: ext.mtu,
    syncPeers: (next) => {
      peers = next;
      return serial.run(reconcile).then(() => {});
    },
    resync: () => serial.run(reconcile),
    run: (signal) =>
      repairLoop({
        datapath: dp,
        clock: ctx.clock,
        logger: log,
        needsRepair,
        repair: async (reason) => {
          log.warn("repairing host-gw routes", { reason });
          const r = await serial.run(reconcile);
          log.info("host-gw routes repaired", { reason, added: r.added, removed: r.removed });
        },
        debounceMs: options.repairDebounceMs,
        resyncIntervalMs: options.resyncIntervalMs,
        onRepaired: options.onRepaired,
      }, signal),
    notReadyReason: () => null,
  };
}
