/**
 * The vxlan backend: in-kernel VXLAN, wire-compatible with flannel's.
 *
 * Kernel state it creates, and why:
 * - Device `flannel.<VNI>` (VNI default 1): type vxlan, `dstport` 8472 (or
 *   `Backend.Port`), `local` = the external interface's address, `dev` = the
 *   external interface, `nolearning` (remote MACs come from leases, never
 *   from flooding), MTU = (`Backend.MTU` or the external MTU) − 50. Its MAC
 *   (the VtepMAC peers address us by) is kept across restarts: the existing
 *   device's, else the one in this host's previous lease, else a random
 *   locally-administered one. A device with a different VNI, port, local
 *   address, underlay, GBP or learning setting is deleted and recreated
 *   (with the same MAC).
 * - Address `<subnet.ip>/32` on it: a source address on the overlay for
 *   host-to-pod traffic, without a subnet or broadcast route. Addresses left
 *   from an old subnet are removed.
 * - Per peer (three entries, as flannel): a permanent neighbour
 *   `<peer subnet.ip> lladdr <peer VtepMAC> dev flannel.1` (so the kernel
 *   never ARPs over the overlay), a permanent fdb entry
 *   `<peer VtepMAC> dst <peer PublicIP> self` (where to send the UDP
 *   packets), and the route `<peer subnet> via <peer subnet.ip> dev
 *   flannel.1 onlink`. With `DirectRouting`, a peer whose PublicIP lies on a
 *   connected prefix of the external interface gets only
 *   `<peer subnet> via <PublicIP> dev <ext>` (no encapsulation).
 *
 * The lease publishes `BackendType` "vxlan" and `BackendData`
 * `{"VNI":1,"VtepMAC":"…"}` (that key order), exactly as flannel.
 *
 * Desired state is a pure function of (own lease, peer leases, options);
 * `syncPeers` writes only the difference from what the kernel holds, so a
 * restart changes nothing that is already right. `run` watches kernel events
 * and restores a deleted device, address, route, neighbour or fdb entry.
 *
 * @module
 */

import * as v from "valibot";
import { type Logger, nullLogger } from "../core/log.ts";
import { foldKeys, type NetworkConfig, parseBackendOptions } from "../lease/config.ts";
import {
  containsIPv4,
  formatIPv4,
  formatIPv4Net,
  formatMac,
  type IPv4Net,
  isIPv4,
  maskIPv4,
  parseIPv4,
} from "../core/ip.ts";
import { ipv4SubnetOf, type Lease } from "../lease/types.ts";
import { NetlinkError } from "../datapath/netlink/error.ts";
import {
  type Datapath,
  type DatapathEvent,
  type FdbEntry,
  type Link,
  type Neighbour,
  NUD_PERMANENT,
  type Route,
  RT_TABLE_MAIN,
  RTPROT_KERNEL,
  type VxlanSpec,
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

/** flannel's default VXLAN UDP port (the Linux default too). */
export const DEFAULT_VXLAN_PORT = 8472;
/** Bytes VXLAN adds to every packet (outer IPv4 20 + UDP 8 + VXLAN 8 + Ethernet 14). */
export const VXLAN_ENCAP_OVERHEAD = 50;

const uint = (max: number) => v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(max));

const VxlanOptionsSchema = v.object({
  VNI: v.optional(uint(0xffffff)),
  Port: v.optional(uint(65535)),
  MTU: v.optional(uint(65535)),
  GBP: v.optional(v.boolean()),
  Learning: v.optional(v.boolean()),
  DirectRouting: v.optional(v.boolean()),
});

/** The vxlan keys of `Backend`, with flannel's defaults applied. */
export interface VxlanConfig {
  readonly vni: number;
  readonly port: number;
  /** Underlay MTU to subtract the overhead from; 0 = the external interface's. */
  readonly mtu: number;
  readonly gbp: boolean;
  readonly learning: boolean;
  readonly directRouting: boolean;
}

/**
 * Read `Backend.VNI`, `Port`, `MTU`, `GBP`, `Learning`, `DirectRouting`
 * (case-insensitive keys) with flannel's defaults (VNI 1, port 8472).
 *
 * @param config The network configuration.
 * @returns The options.
 * @throws {ConfigError} When a key has the wrong type or range.
 */
export function parseVxlanConfig(config: NetworkConfig): VxlanConfig {
  const o = parseBackendOptions(config, VxlanOptionsSchema);
  return {
    vni: o.VNI ?? 1,
    port: o.Port || DEFAULT_VXLAN_PORT,
    mtu: o.MTU ?? 0,
    gbp: o.GBP ?? false,
    learning: o.Learning ?? false,
    directRouting: o.DirectRouting ?? false,
  };
}

const MAC_RE = /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/;

const VxlanLeaseData = v.object({
  VNI: v.pipe(v.number(), v.integer(), v.minValue(0)),
  VtepMAC: v.pipe(v.string(), v.regex(MAC_RE, "VtepMAC must look like aa:bb:cc:dd:ee:ff")),
});

/**
 * Read a peer's `BackendData` (`{"VNI":…,"VtepMAC":"…"}`, keys matched
 * case-insensitively like Go's encoding/json).
 *
 * @param data The lease's backendData.
 * @returns VNI and lowercase VtepMAC, or a reason it is unusable.
 */
export function parseVxlanLeaseData(
  data: unknown,
): { vni: number; vtepMac: string } | { error: string } {
  if (typeof data !== "object" || data === null || Array.isArray(data)) {
    return { error: `BackendData is not an object: ${JSON.stringify(data) ?? "undefined"}` };
  }
  const { values } = foldKeys(data as Record<string, unknown>, ["VNI", "VtepMAC"] as const);
  const r = v.safeParse(VxlanLeaseData, values);
  if (!r.success) {
    return { error: `BackendData ${JSON.stringify(data)} is invalid: ${r.issues[0].message}` };
  }
  return { vni: r.output.VNI, vtepMac: r.output.VtepMAC.toLowerCase() };
}

/** Inputs of {@link vxlanDesiredState} besides the leases. */
export interface VxlanDesiredOptions {
  /** Index of the VXLAN device. */
  readonly linkIndex: number;
  /** Index of the external interface (for direct routes). */
  readonly extIndex: number;
  /** Connected prefixes of the external interface, when DirectRouting is on (else empty). */
  readonly directNets: readonly IPv4Net[];
}

/**
 * The kernel state for a set of peers (pure).
 *
 * @param own This host's lease (skipped if it appears among the peers).
 * @param peers Peer leases.
 * @param options Device indexes and the direct-routing prefixes.
 * @returns Routes, neighbours and fdb entries, and the peers skipped with why.
 */
export function vxlanDesiredState(
  own: Lease,
  peers: readonly Lease[],
  options: VxlanDesiredOptions,
): DesiredState & { readonly skipped: readonly SkippedPeer[] } {
  const routes: Route[] = [];
  const neighbours: Neighbour[] = [];
  const fdb: FdbEntry[] = [];
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
    if (lease.attrs.backendType !== "vxlan") {
      skipped.push({
        lease,
        reason: `backend type is ${JSON.stringify(lease.attrs.backendType ?? "udp")}, not "vxlan"`,
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
    const publicIP = parseIPv4(lease.attrs.publicIP);
    if (options.directNets.some((n) => containsIPv4(n, publicIP))) {
      routes.push({ dst: subnet, gateway: publicIP, index: options.extIndex });
      continue;
    }
    const data = parseVxlanLeaseData(lease.attrs.backendData);
    if ("error" in data) {
      skipped.push({ lease, reason: data.error });
      continue;
    }
    neighbours.push({ index: options.linkIndex, ip: subnet.ip, mac: data.vtepMac });
    fdb.push({ index: options.linkIndex, mac: data.vtepMac, dst: publicIP });
    routes.push({
      dst: subnet,
      gateway: subnet.ip,
      index: options.linkIndex,
      onlink: true,
    });
  }
  return { routes, neighbours, fdb, skipped };
}

/**
 * Why an existing device cannot be reused for `want`, or null when it can
 * (flannel's rules: type, VNI, underlay device, local address, port, GBP;
 * ours adds learning, which flannel sets but never checks).
 */
export function vxlanIncompatibility(existing: Link, want: VxlanSpec): string | null {
  if (existing.kind !== "vxlan" || !existing.vxlan) {
    return `link type is ${existing.kind ?? "physical"}, not vxlan`;
  }
  const x = existing.vxlan;
  if (x.vni !== want.vni) return `VNI ${x.vni}, want ${want.vni}`;
  if (want.link && x.link && x.link !== want.link) {
    return `underlay device index ${x.link}, want ${want.link}`;
  }
  if (want.local !== undefined && x.local !== null && x.local !== want.local) {
    return `local address ${formatIPv4(x.local)}, want ${formatIPv4(want.local)}`;
  }
  if (x.port !== want.port) return `port ${x.port}, want ${want.port}`;
  if (x.gbp !== (want.gbp ?? false)) return `gbp ${x.gbp}, want ${want.gbp ?? false}`;
  if (x.learning !== (want.learning ?? false)) {
    return `learning ${x.learning}, want ${want.learning ?? false}`;
  }
  return null;
}

/** A random locally-administered unicast MAC. */
export function randomMac(random: () => number = Math.random): string {
  const b = new Uint8Array(6);
  for (let i = 0; i < 6; i++) b[i] = Math.floor(random() * 256) & 0xff;
  b[0] = (b[0] & 0xfe) | 0x02;
  return formatMac(b);
}

/** Options for {@link vxlanBackend}. */
export interface VxlanBackendOptions {
  readonly datapath: Datapath;
  /** Defaults to the context's logger. */
  readonly logger?: Logger;
  /** Randomness for a new VtepMAC. */
  readonly random?: () => number;
  /** Periodic full resync in `run` (default 60 s; 0 = only on events). */
  readonly resyncIntervalMs?: number;
  /** Debounce of repairs after a kernel event (default 20 ms). */
  readonly repairDebounceMs?: number;
  /** Called after each repair (for tests and metrics). */
  readonly onRepaired?: (reason: string) => void;
}

/** The vxlan Network, with what tests and the status API may inspect. */
export interface VxlanNetwork extends Network {
  /** The device name, e.g. `flannel.1`. */
  readonly deviceName: string;
  /** The VtepMAC published in the lease. */
  readonly vtepMac: string;
  /** Current device index (changes when the device is recreated). */
  deviceIndex(): number;
  /** Resync now against the last peer set; returns what was written. */
  resync(): Promise<SyncResult>;
}

/**
 * The vxlan backend.
 *
 * @param options The datapath (rtnetlink in production, the fake in tests).
 * @returns The backend, type `vxlan`.
 * @example
 * ```ts
 * const backend = vxlanBackend({ datapath: await openNetlinkDatapath() });
 * const network = await backend.register(ctx);
 * await network.syncPeers(peerLeases);
 * ```
 */
export function vxlanBackend(options: VxlanBackendOptions): Backend {
  return { type: "vxlan", register: (ctx) => registerVxlan(options, ctx) };
}

async function registerVxlan(
  options: VxlanBackendOptions,
  ctx: BackendContext,
): Promise<VxlanNetwork> {
  const dp = options.datapath;
  const log = (options.logger ?? ctx.logger ?? nullLogger).with({ backend: "vxlan" });
  const cfg = parseVxlanConfig(ctx.config);
  const network = ipv4NetworkOf(ctx.config, "vxlan", log);
  const name = `flannel.${cfg.vni}`;
  const ext = ctx.extIface;
  if (!isIPv4(ext.ifaceAddr)) {
    throw new Error(
      `vxlan needs an IPv4 address on the external interface ${ext.name}: current value is ${
        JSON.stringify(ext.ifaceAddr)
      }; pick another interface with --iface or --public-ip`,
    );
  }
  let extIndex = ext.index || (await dp.getLink(ext.name))?.index || 0;
  const underlayMtu = cfg.mtu || ext.mtu;
  const mtu = underlayMtu - VXLAN_ENCAP_OVERHEAD;
  if (mtu < 68) {
    throw new Error(
      `vxlan MTU would be ${mtu} (${underlayMtu} − ${VXLAN_ENCAP_OVERHEAD}), below IPv4's minimum 68: raise Backend.MTU or the interface MTU`,
    );
  }
  log.info("VXLAN config", {
    vni: cfg.vni,
    port: cfg.port,
    gbp: cfg.gbp,
    learning: cfg.learning,
    directRouting: cfg.directRouting,
    mtu,
  });

  const existing = await dp.getLink(name);
  const previous = ctx.previousLease?.attrs.backendType === "vxlan"
    ? parseVxlanLeaseData(ctx.previousLease.attrs.backendData)
    : undefined;
  const vtepMac =
    (existing?.kind === "vxlan" && existing.mac && MAC_RE.test(existing.mac)
      ? existing.mac
      : undefined) ??
      (previous && "vtepMac" in previous ? previous.vtepMac : undefined) ??
      randomMac(options.random);

  const spec = (): VxlanSpec => ({
    name,
    vni: cfg.vni,
    port: cfg.port,
    local: parseIPv4(ext.ifaceAddr),
    link: extIndex || undefined,
    learning: cfg.learning,
    gbp: cfg.gbp,
    mac: vtepMac,
    mtu,
  });

  let link = await ensureDevice(dp, spec(), log);
  const lease = await ctx.acquire({
    publicIP: ext.extAddr,
    backendType: "vxlan",
    backendData: { VNI: cfg.vni, VtepMAC: vtepMac },
  }, ctx.signal);
  const ownSubnet = ipv4SubnetOf(lease, "the vxlan backend");
  link = await configureDevice(dp, link, ownSubnet.ip, log);

  let peers: readonly Lease[] = [];
  let desired: DesiredState = { routes: [], neighbours: [], fdb: [] };
  const serial = new Serial();
  const warner = new SkipWarner(log);

  const scope = (linkIndex: number): ManagedScope => ({
    isOurRoute: (r) =>
      (r.table ?? RT_TABLE_MAIN) === RT_TABLE_MAIN && r.protocol !== RTPROT_KERNEL &&
      r.dst.prefixLen >= network.prefixLen &&
      ((r.dst.ip & maskIPv4(network.prefixLen)) >>> 0) === network.ip &&
      !(r.dst.ip === ownSubnet.ip && r.dst.prefixLen === ownSubnet.prefixLen) &&
      (r.index === linkIndex || (r.index === extIndex && r.gateway !== null)),
    isOurNeighbour: (n) => n.index === linkIndex && ((n.state ?? 0) & NUD_PERMANENT) !== 0,
    isOurFdb: (e) => e.index === linkIndex && e.dst !== null && e.mac !== "00:00:00:00:00:00",
  });

  const directNets = async (): Promise<IPv4Net[]> => {
    if (!cfg.directRouting || !extIndex) return [];
    return (await dp.listAddresses(extIndex))
      .filter((a) => a.prefixLen < 32)
      .map((a) => ({ ip: (a.ip & maskIPv4(a.prefixLen)) >>> 0, prefixLen: a.prefixLen }));
  };

  /** Make the device, its address and state right, then the peers. */
  const reconcile = async (): Promise<SyncResult> => {
    let current = await dp.getLink(name);
    if (!current || vxlanIncompatibility(current, spec()) !== null) {
      if (!extIndex || !(await dp.getLink(extIndex))) {
        extIndex = (await dp.getLink(ext.name))?.index ?? 0;
      }
      current = await ensureDevice(dp, spec(), log);
    }
    if (current.mac !== vtepMac) {
      log.warn("restoring the VtepMAC of the vxlan device", {
        device: name,
        was: current.mac,
        mac: vtepMac,
      });
      await dp.setLink(current.index, { mac: vtepMac });
    }
    if (current.mtu !== mtu) await dp.setLink(current.index, { mtu });
    link = await configureDevice(dp, current, ownSubnet.ip, log);
    const d = vxlanDesiredState(lease, peers, {
      linkIndex: link.index,
      extIndex,
      directNets: await directNets(),
    });
    warner.report(d.skipped);
    desired = d;
    const installed = await readInstalled(dp, { neighbours: true, fdb: true });
    const plan = planChanges(d, installed, scope(link.index));
    const errors = await applyPlan(dp, plan);
    if (planSize(plan) > 0) {
      log.info("vxlan peers synced", {
        peers: d.routes.length,
        routesAdded: plan.replaceRoutes.length,
        routesRemoved: plan.deleteRoutes.length,
        neighbours: plan.replaceNeighbours.length - plan.deleteNeighbours.length,
        fdb: plan.replaceFdb.length - plan.deleteFdb.length,
        failed: errors.length,
      });
    }
    for (const e of errors) log.warn("could not write peer state", { error: e.message });
    return finishSync(plan, errors);
  };

  const needsRepair = (e: DatapathEvent): string | null => {
    switch (e.kind) {
      case "link":
        if (e.link.name === name && e.action === "del") return `${name} was deleted`;
        if (e.link.index === link.index && e.action === "new") {
          if (!e.link.up) return `${name} was set down`;
          if (e.link.mac !== vtepMac) return `${name}'s MAC changed to ${e.link.mac}`;
          if (e.link.mtu !== mtu) return `${name}'s MTU changed to ${e.link.mtu}`;
        }
        if (e.link.name === ext.name && e.action === "new") {
          if (e.link.index !== extIndex) return `external interface ${ext.name} reappeared`;
          // Direct routes vanish (silently) when it goes down: restore them once it is up.
          if (cfg.directRouting && e.link.up) return `external interface ${ext.name} changed`;
        }
        return null;
      case "address":
        if (
          e.action === "del" && e.address.index === link.index && e.address.ip === ownSubnet.ip
        ) {
          return `address ${formatIPv4(e.address.ip)}/32 was removed from ${name}`;
        }
        return null;
      case "route": {
        const want = desired.routes.find((r) =>
          r.dst.ip === e.route.dst.ip && r.dst.prefixLen === e.route.dst.prefixLen
        );
        if (!want || (e.route.table ?? RT_TABLE_MAIN) !== RT_TABLE_MAIN) return null;
        if (e.action === "del") return `route ${formatIPv4Net(want.dst)} was deleted`;
        if (
          e.route.gateway !== want.gateway || e.route.index !== want.index ||
          (e.route.onlink ?? false) !== (want.onlink ?? false)
        ) return `route ${formatIPv4Net(want.dst)} was changed`;
        return null;
      }
      case "neighbour": {
        if (e.neighbour.index !== link.index) return null;
        const want = desired.neighbours.find((n) => n.ip === e.neighbour.ip);
        if (!want) return null;
        if (e.action === "del") return `neighbour ${formatIPv4(want.ip)} was deleted`;
        if (e.neighbour.mac !== want.mac || !((e.neighbour.state ?? 0) & NUD_PERMANENT)) {
          return `neighbour ${formatIPv4(want.ip)} was changed`;
        }
        return null;
      }
      case "fdb": {
        if (e.fdb.index !== link.index) return null;
        const want = desired.fdb.find((f) => f.mac === e.fdb.mac);
        if (!want) return null;
        if (e.action === "del" && e.fdb.dst === want.dst) {
          return `fdb entry ${want.mac} was deleted`;
        }
        if (e.action === "new" && e.fdb.dst !== want.dst) {
          return `fdb entry ${want.mac} was changed`;
        }
        return null;
      }
      default:
        return null;
    }
  };

  return {
    lease,
    mtu,
    deviceName: name,
    vtepMac,
    deviceIndex: () => link.index,
    syncPeers: (next, _signal) => {
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
          log.warn("repairing the vxlan datapath", { reason });
          const r = await serial.run(reconcile);
          log.info("vxlan datapath repaired", { reason, added: r.added, removed: r.removed });
        },
        debounceMs: options.repairDebounceMs,
        resyncIntervalMs: options.resyncIntervalMs,
        onRepaired: options.onRepaired,
      }, signal),
    notReadyReason: () => null,
  };
}

/**
 * Create the VXLAN device, or reuse a compatible existing one; an
 * incompatible one is deleted and recreated.
 */
async function ensureDevice(dp: Datapath, spec: VxlanSpec, log: Logger): Promise<Link> {
  for (let attempt = 0;; attempt++) {
    const existing = await dp.getLink(spec.name);
    if (existing) {
      const why = vxlanIncompatibility(existing, spec);
      if (why === null) return existing;
      log.warn("existing device has an incompatible configuration; recreating it", {
        device: spec.name,
        reason: why,
      });
      await dp.deleteLink(existing.index);
    }
    try {
      const link = await dp.createVxlan(spec);
      log.info("created vxlan device", { device: spec.name, index: link.index, mac: spec.mac });
      return link;
    } catch (e) {
      // Someone created it between our look and our create: look again.
      if (e instanceof NetlinkError && e.code === "EEXIST" && attempt < 3) continue;
      throw e;
    }
  }
}

/** Address `<ip>/32` (and no other), MTU, up. Returns the link as it now is. */
async function configureDevice(dp: Datapath, link: Link, ip: number, log: Logger): Promise<Link> {
  const addrs = await dp.listAddresses(link.index);
  const stale = addrs.filter((a) => a.ip !== ip || a.prefixLen !== 32);
  if (stale.length > 0) {
    log.info("removing stale addresses from the vxlan device", {
      device: link.name,
      addresses: stale.map((a) => `${formatIPv4(a.ip)}/${a.prefixLen}`),
    });
    await dp.deleteAddresses(stale);
  }
  if (!addrs.some((a) => a.ip === ip && a.prefixLen === 32)) {
    await dp.addAddresses([{ index: link.index, ip, prefixLen: 32 }]);
  }
  if (!link.up) {
    await dp.setLink(link.index, { up: true });
    return { ...link, up: true };
  }
  return link;
}
