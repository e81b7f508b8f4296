/**
 * The vxlan backend: in-kernel VXLAN, wire-compatible with flannel's, for
 * IPv4, dual-stack and IPv6-only networks (flannel v0.28's
 * pkg/backend/vxlan).
 *
 * Kernel state it creates, and why:
 * - Device `flannel.<VNI>` (VNI default 1) when IPv4 is enabled: type
 *   vxlan, `dstport` 8472 (or `Backend.Port`), `local` = the external
 *   public IP (flannel v0.28's ExtAddr) when the external interface holds
 *   it, else the interface's IPv4 address (see {@link vxlanLocalAddress}),
 *   `dev` = the external interface, `nolearning`
 *   (remote MACs come from leases, never from flooding), MTU =
 *   (`Backend.MTU` or the external MTU) − 50. Its MAC (the VtepMAC peers
 *   address us by) is kept across restarts: the existing device's, else the
 *   one in this host's previous lease, else a random locally-administered
 *   one. A device with a different VNI, port, local address, underlay, GBP
 *   or learning setting is deleted and recreated (with the same MAC).
 * - Device `flannel-v6.<VNI>` when IPv6 is enabled: the same over the IPv6
 *   underlay (`local` = the public IPv6, ExtV6Addr, when the interface
 *   holds it, else the interface's IPv6 address), with its
 *   own VtepMAC kept the same way (from `BackendV6Data`), MTU = underlay
 *   MTU − 70 (the outer header is IPv6's 40 bytes, not IPv4's 20; flannel
 *   asks for − 50 and the kernel silently clamps an IPv6 VXLAN device to
 *   − 70). The pod MTU (subnet.env) is the smaller device MTU.
 * - Address `<subnet.ip>/32` on `flannel.<VNI>` and `<ipv6Subnet.ip>/128` on
 *   `flannel-v6.<VNI>`: a source address on the overlay for host-to-pod
 *   traffic, without a subnet or broadcast route. Addresses left from an old
 *   subnet are removed.
 * - Per peer and family (three entries, as flannel): a permanent neighbour
 *   `<peer subnet.ip> lladdr <peer VtepMAC>` on the family's device (so the
 *   kernel never ARPs or solicits over the overlay), a permanent fdb entry
 *   `<peer VtepMAC> dst <peer PublicIP> self` (IPv6: `dst <PublicIPv6>`),
 *   and the route `<peer subnet> via <peer subnet.ip> dev <device> onlink`.
 *   With `DirectRouting`, a peer whose public address lies on a connected
 *   prefix of the external interface gets only `<peer subnet> via <public
 *   address> dev <ext>` (no encapsulation), per family.
 *
 * The lease publishes `BackendType` "vxlan"; with IPv4 `PublicIP` and
 * `BackendData` `{"VNI":1,"VtepMAC":"…"}` (that key order), with IPv6
 * `PublicIPv6` and `BackendV6Data` of the same form — exactly as flannel.
 * An IPv6-only lease has no `BackendData` and `PublicIP` "0.0.0.0".
 *
 * weft's `Backend.CloudRoutes` (hybrid clusters) adds cloud routes for
 * peers in this host's VPC and a `CloudRoute` key to BackendData: see
 * `hybrid.ts`, loaded only when the key is set.
 *
 * One instance of the routed-peer engine (`engine.ts`): the entries of a
 * peer are a pure function of (own lease, peer lease, options); the kernel
 * target writes only the difference, so a restart changes nothing that is
 * already right and a lease event writes only that peer's entries. `run`
 * restores a deleted or changed device, address, route, neighbour or fdb
 * entry, of either family.
 *
 * @module
 */

import * as v from "valibot";
import { type Logger, nullLogger } from "../../core/log.ts";
import { foldKeys, type NetworkConfig, parseBackendOptions } from "../../lease/config.ts";
import {
  containsIP,
  formatMac,
  type IPAddr,
  type IPNet,
  isIPv4,
  isIPv6,
  isLinkLocalIPv6,
  networkOf,
  parseIPv4,
  parseIPv6,
} from "../../core/ip.ts";
import { ipv4SubnetOf, type Lease, type LeaseAttrs } from "../../lease/types.ts";
import type {
  Datapath,
  EntryScope,
  NeighbourSpec,
  PeerEntries,
  VxlanDeviceSpec,
} from "../../datapath/types.ts";
import type { Backend, BackendContext, ExternalInterface } from "../types.ts";
import {
  clusterNetworksOf,
  type PeerResult,
  type RoutedNetwork,
  routedNetwork,
  type RoutedOptions,
  type RoutedSetup,
} from "./engine.ts";
import { ensureDevices, kernelTarget } from "./target.ts";
import type { CloudBackendOptions } from "./cloud.ts";

/** flannel's default VXLAN UDP port (the Linux default too). */
export const DEFAULT_VXLAN_PORT = 8472;
/** Bytes VXLAN adds to every packet (outer IPv4 20 + UDP 8 + VXLAN 8 + Ethernet 14). */
export const VXLAN_ENCAP_OVERHEAD = 50;
/** Bytes VXLAN over IPv6 adds (outer IPv6 40 + UDP 8 + VXLAN 8 + Ethernet 14): the kernel's `VXLAN6_HEADROOM`. */
export const VXLAN6_ENCAP_OVERHEAD = 70;

const uint = (max: number) => v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(max));

const VxlanOptionsSchema = v.object({
  VNI: v.optional(uint(0xffffff)),
  Port: v.optional(uint(65535)),
  MTU: v.optional(uint(65535)),
  GBP: v.optional(v.boolean()),
  Learning: v.optional(v.boolean()),
  DirectRouting: v.optional(v.boolean()),
  CloudRoutes: v.optional(v.unknown()),
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
  /** weft's `CloudRoutes` (hybrid clusters, see `hybrid.ts`), as written; undefined when unset. */
  readonly cloudRoutes?: unknown;
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
    ...(o.CloudRoutes !== undefined && o.CloudRoutes !== null
      ? { cloudRoutes: o.CloudRoutes }
      : {}),
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
  // The common case without valibot (a full sync reads every peer's): the
  // exact keys flannel writes, with valid values. Anything else validates.
  const { VNI: vni, VtepMAC: mac } = data as { VNI?: unknown; VtepMAC?: unknown };
  if (
    typeof vni === "number" && Number.isInteger(vni) && vni >= 0 && typeof mac === "string" &&
    MAC_RE.test(mac)
  ) {
    return { vni, vtepMac: mac.toLowerCase() };
  }
  const { values } = foldKeys(data as Record<string, unknown>, ["VNI", "VtepMAC"] as const);
  const r = v.safeParse(VxlanLeaseData, values);
  if (!r.success) {
    return { error: `BackendData ${JSON.stringify(data)} is invalid: ${r.issues[0].message}` };
  }
  return { vni: r.output.VNI, vtepMac: r.output.VtepMAC.toLowerCase() };
}

/** Inputs of {@link vxlanPeerEntries} besides the leases. */
export interface VxlanEntryOptions {
  /** The IPv4 VXLAN device, e.g. `flannel.1`; null when the network has no IPv4. */
  readonly device: string | null;
  /** The IPv6 VXLAN device, e.g. `flannel-v6.1`; absent or null when the network has no IPv6. */
  readonly v6Device?: string | null;
  /** The external interface (for direct routes). */
  readonly extDevice: string;
  /** Connected prefixes of the external interface (either family) when DirectRouting is on, else empty. */
  readonly directNets: readonly IPNet[];
}

/** One family's view of a peer lease: its subnet, public address, backend data and device. */
interface FamilyPeer {
  readonly family: "IPv4" | "IPv6";
  readonly subnet: IPNet | undefined;
  readonly publicIP: string | null | undefined;
  readonly data: unknown;
  readonly dataName: string;
  readonly device: string;
}

/** A peer's entries of one family, or why it has none. */
function familyEntries(
  p: FamilyPeer,
  options: VxlanEntryOptions,
): { entries: PeerEntries } | { skip: string } {
  const v6 = p.family === "IPv6";
  if (!p.subnet) return { skip: `it has no ${p.family} subnet` };
  let publicIP: IPAddr;
  try {
    // parsed once: a full sync reads every peer's
    publicIP = v6 ? parseIPv6(p.publicIP ?? "") : parseIPv4(p.publicIP ?? "");
  } catch {
    return {
      skip: `${v6 ? "PublicIPv6" : "PublicIP"} ${JSON.stringify(p.publicIP)} is not ${p.family}`,
    };
  }
  if (options.directNets.some((n) => containsIP(n, publicIP))) {
    return {
      entries: { routes: [{ dst: p.subnet, gateway: publicIP, device: options.extDevice }] },
    };
  }
  const data = parseVxlanLeaseData(p.data);
  if ("error" in data) return { skip: data.error.replace(/^BackendData/, p.dataName) };
  const device = p.device;
  const neighbour: NeighbourSpec = { device, ip: p.subnet.ip, mac: data.vtepMac };
  return {
    entries: {
      neighbours: [neighbour],
      fdb: [{ device, mac: data.vtepMac, dst: publicIP }],
      routes: [{ dst: p.subnet, gateway: p.subnet.ip, device, onlink: true }],
    },
  };
}

/**
 * A peer's kernel entries (pure): per enabled family, flannel's neighbour,
 * fdb entry and onlink route, or with DirectRouting a route via its public
 * address when that lies on a connected prefix. A dual-stack peer whose one
 * family is unusable gets the other family's entries, with a `partial`
 * reason; one with neither is skipped.
 *
 * @param peer The peer lease.
 * @param options Device names and the direct-routing prefixes.
 * @returns The entries, or why the peer is skipped.
 */
export function vxlanPeerEntries(
  peer: Lease,
  options: VxlanEntryOptions,
): PeerResult<PeerEntries> {
  if (peer.attrs.backendType !== "vxlan") {
    return {
      skip: `backend type is ${JSON.stringify(peer.attrs.backendType ?? "udp")}, not "vxlan"`,
    };
  }
  const ipv4 = options.device === null ? null : {
    family: "IPv4" as const,
    subnet: peer.subnet,
    publicIP: peer.attrs.publicIP,
    data: peer.attrs.backendData,
    dataName: "BackendData",
    device: options.device,
  };
  // IPv4 only (the common case, 5000 times per full sync): its family's entries as they are
  if (ipv4 && !options.v6Device) return familyEntries(ipv4, options);
  const parts: ({ entries: PeerEntries } | { skip: string })[] = [];
  if (ipv4) parts.push(familyEntries(ipv4, options));
  if (options.v6Device) {
    parts.push(familyEntries({
      family: "IPv6",
      subnet: peer.ipv6Subnet,
      publicIP: peer.attrs.publicIPv6,
      data: peer.attrs.backendV6Data,
      dataName: "BackendV6Data",
      device: options.v6Device,
    }, options));
  }
  const ok = parts.flatMap((x) => "entries" in x ? [x.entries] : []);
  const skips = parts.flatMap((x) => "skip" in x ? [x.skip] : []);
  if (ok.length === 0) return { skip: skips.join("; ") || "no address family is enabled" };
  const entries: PeerEntries = ok.length === 1 ? ok[0] : {
    neighbours: ok.flatMap((e) => e.neighbours ?? []),
    fdb: ok.flatMap((e) => e.fdb ?? []),
    routes: ok.flatMap((e) => e.routes ?? []),
  };
  return skips.length ? { entries, partial: skips.join("; ") } : { entries };
}

/**
 * The VXLAN source (`local`) address (pure). flannel v0.28 sets it to the
 * public IP (ExtAddr; flannel up to v0.27.3 used the interface address), so
 * weft does the same whenever the external interface holds the public IP —
 * the common cases: no `--public-ip`, `--public-ip` or `node-public-ip`
 * naming one of the interface's addresses — and a device flannel made is
 * kept. A public IP the interface does not hold (NAT) cannot be a source:
 * the kernel drops what a VXLAN device sends from an address the host does
 * not have, so weft then uses the interface address, which still reaches
 * peers (they send to the published public IP, and a `nolearning` device
 * ignores the source of what it receives).
 *
 * @param ext The external interface: its address and the public IP.
 * @param extAddresses The IPv4 addresses the external interface holds now.
 * @returns The address for `local`, and whether it is the public IP.
 * @example
 * ```ts
 * vxlanLocalAddress({ ifaceAddr: "192.0.2.11", extAddr: "192.0.2.111" }, [
 *   parseIPv4("192.0.2.11"), parseIPv4("192.0.2.111"),
 * ]); // { local: parseIPv4("192.0.2.111"), publicIP: true }
 * ```
 */
export function vxlanLocalAddress(
  ext: Pick<ExternalInterface, "ifaceAddr" | "extAddr">,
  extAddresses: readonly IPAddr[],
): { local: number; publicIP: boolean } {
  if (isIPv4(ext.extAddr)) {
    const pub = parseIPv4(ext.extAddr);
    if (ext.extAddr === ext.ifaceAddr || extAddresses.includes(pub)) {
      return { local: pub, publicIP: true };
    }
  }
  return { local: parseIPv4(ext.ifaceAddr), publicIP: false };
}

/**
 * The IPv6 VXLAN source (`local`) address (pure), chosen as
 * {@link vxlanLocalAddress} chooses the IPv4 one: the public IPv6
 * (ExtV6Addr) when the external interface holds it, else the interface's
 * IPv6 address.
 *
 * @param ext The external interface: its IPv6 address and the public IPv6.
 * @param extAddresses The addresses the external interface holds now (either family).
 * @returns The address for `local`, and whether it is the public IPv6.
 * @example
 * ```ts
 * vxlanLocal6Address({ ifaceV6Addr: "fd00::11", extV6Addr: "fd00::11" }, []);
 * // { local: parseIPv6("fd00::11"), publicIP: true }
 * ```
 */
export function vxlanLocal6Address(
  ext: Pick<ExternalInterface, "ifaceV6Addr" | "extV6Addr">,
  extAddresses: readonly IPAddr[],
): { local: bigint; publicIP: boolean } {
  if (ext.extV6Addr && isIPv6(ext.extV6Addr)) {
    const pub = parseIPv6(ext.extV6Addr);
    if (ext.extV6Addr === ext.ifaceV6Addr || extAddresses.includes(pub)) {
      return { local: pub, publicIP: true };
    }
  }
  return { local: parseIPv6(ext.ifaceV6Addr!), publicIP: false };
}

/** A random locally-administered unicast MAC. */
export function randomMac(random: () => number = Math.random): string {
  const b = new Uint8Array(6);
  for (let i = 0; i < 6; i++) b[i] = Math.floor(random() * 256) & 0xff;
  b[0] = (b[0] & 0xfe) | 0x02;
  return formatMac(b);
}

/** Options for {@link vxlanBackend}. */
export interface VxlanBackendOptions extends RoutedOptions, CloudBackendOptions {
  readonly datapath: Datapath;
  /** Defaults to the context's logger. */
  readonly logger?: Logger;
  /** Randomness for a new VtepMAC. */
  readonly random?: () => number;
}

/** The vxlan Network, with what tests and the status API may inspect. */
export interface VxlanNetwork extends RoutedNetwork {
  /** The IPv4 device name, e.g. `flannel.1` (the IPv6 one in an IPv6-only network). */
  readonly deviceName: string;
  /** The VtepMAC published in the lease's BackendData (BackendV6Data in an IPv6-only network). */
  readonly vtepMac: string;
  /** The IPv6 device, e.g. `flannel-v6.1`, when IPv6 is enabled. */
  readonly v6DeviceName?: string;
  /** The VtepMAC published in BackendV6Data, when IPv6 is enabled. */
  readonly v6VtepMac?: string;
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

/**
 * A device's VtepMAC: the existing device's, else the one the previous
 * lease published, else a new one.
 */
async function vtepMacOf(
  dp: Datapath,
  name: string,
  previousData: unknown,
  random: (() => number) | undefined,
): Promise<string> {
  const existing = await dp.link(name);
  if (existing?.kind === "vxlan" && existing.mac && MAC_RE.test(existing.mac)) return existing.mac;
  const previous = previousData === undefined ? undefined : parseVxlanLeaseData(previousData);
  return previous && "vtepMac" in previous ? previous.vtepMac : randomMac(random);
}

/** The device MTU over an underlay MTU, or a clear error when too small for the family. */
function deviceMtu(underlayMtu: number, family: "IPv4" | "IPv6"): number {
  const overhead = family === "IPv6" ? VXLAN6_ENCAP_OVERHEAD : VXLAN_ENCAP_OVERHEAD;
  const min = family === "IPv6" ? 1280 : 68;
  const mtu = underlayMtu - overhead;
  if (mtu < min) {
    throw new Error(
      `vxlan ${family} MTU would be ${mtu} (${underlayMtu} − ${overhead}), below ${family}'s minimum ${min}: raise Backend.MTU or the interface MTU`,
    );
  }
  return mtu;
}

async function registerVxlan(
  options: VxlanBackendOptions,
  ctx: BackendContext,
): Promise<VxlanNetwork> {
  const dp = options.datapath;
  const log = (options.logger ?? ctx.logger ?? nullLogger).with({ backend: "vxlan" });
  const cfg = parseVxlanConfig(ctx.config);
  const networks = clusterNetworksOf(ctx.config, "vxlan");
  const name = `flannel.${cfg.vni}`;
  const v6Name = `flannel-v6.${cfg.vni}`;
  const ext = ctx.extIface;
  if (networks.ipv4 && !isIPv4(ext.ifaceAddr)) {
    throw new Error(
      `vxlan needs an IPv4 address on the external interface ${ext.name}: current value is ${
        JSON.stringify(ext.ifaceAddr)
      }; pick another interface with --iface or --public-ip`,
    );
  }
  if (networks.ipv6 && !(isIPv6(ext.ifaceV6Addr ?? "") && isIPv6(ext.extV6Addr ?? ""))) {
    throw new Error(
      `vxlan over IPv6 needs a global IPv6 address on the external interface ${ext.name}: current value is ${
        JSON.stringify(ext.ifaceV6Addr ?? null)
      }; add one, pick another interface with --iface, or set --public-ipv6`,
    );
  }
  const underlayMtu = cfg.mtu || ext.mtu;
  const mtu = networks.ipv4 ? deviceMtu(underlayMtu, "IPv4") : undefined;
  const v6Mtu = networks.ipv6 ? deviceMtu(underlayMtu, "IPv6") : undefined;
  const podMtu = Math.min(mtu ?? Infinity, v6Mtu ?? Infinity);
  log.info("VXLAN config", {
    vni: cfg.vni,
    port: cfg.port,
    gbp: cfg.gbp,
    learning: cfg.learning,
    directRouting: cfg.directRouting,
    mtu: podMtu,
    families: [networks.ipv4 ? "ipv4" : "", networks.ipv6 ? "ipv6" : ""].filter(Boolean).join(","),
  });

  // Each device's VtepMAC: the existing device's, else the previous lease's, else a new one.
  const previous = ctx.previousLease?.attrs.backendType === "vxlan"
    ? ctx.previousLease.attrs
    : undefined;
  const vtepMac = networks.ipv4
    ? await vtepMacOf(dp, name, previous?.backendData, options.random)
    : undefined;
  const v6VtepMac = networks.ipv6
    ? await vtepMacOf(dp, v6Name, previous?.backendV6Data, options.random)
    : undefined;

  // hybrid clusters: find this host in the cloud first (its lease says where it is)
  const extension = cfg.cloudRoutes === undefined
    ? undefined
    : await (await import("./hybrid.ts")).cloudRoutesExtension(ctx.config, ctx, log, options);
  const extAddresses = (await dp.link(ext.name))?.addresses.map((a) => a.ip) ?? [];
  const local4 = networks.ipv4 ? vxlanLocalAddress(ext, extAddresses) : undefined;
  if (local4 && !local4.publicIP) {
    log.warn(
      "the public IP is not an address of the external interface (NAT?): VXLAN packets leave from the interface address",
      { publicIP: ext.extAddr, iface: ext.name, local: ext.ifaceAddr },
    );
  }
  const local6 = networks.ipv6 ? vxlanLocal6Address(ext, extAddresses) : undefined;
  if (local6 && !local6.publicIP) {
    log.warn(
      "the public IPv6 is not an address of the external interface (NAT?): VXLAN packets leave from the interface address",
      { publicIPv6: ext.extV6Addr, iface: ext.name, local: ext.ifaceV6Addr },
    );
  }

  // flannel's newSubnetAttrs: each family's address and data only when it is enabled
  const attrs: LeaseAttrs = {
    publicIP: networks.ipv4 ? ext.extAddr : "",
    ...(networks.ipv6 ? { publicIPv6: ext.extV6Addr } : {}),
    backendType: "vxlan",
    ...(vtepMac
      ? { backendData: { VNI: cfg.vni, VtepMAC: vtepMac, ...extension?.backendData } }
      : {}),
    ...(v6VtepMac ? { backendV6Data: { VNI: cfg.vni, VtepMAC: v6VtepMac } } : {}),
  };
  const lease = await ctx.acquire(attrs, ctx.signal);
  if (networks.ipv4) ipv4SubnetOf(lease, "the vxlan backend");
  if (networks.ipv6 && !lease.ipv6Subnet) {
    throw new Error(`the lease of ${v6Name} has no IPv6 subnet, but IPv6 is enabled`);
  }

  const common = {
    kind: "vxlan",
    vni: cfg.vni,
    port: cfg.port,
    underlay: ext.name,
    learning: cfg.learning,
    gbp: cfg.gbp,
  } as const;
  const devices: VxlanDeviceSpec[] = [];
  if (networks.ipv4) {
    devices.push({
      ...common,
      name,
      local: local4!.local,
      mac: vtepMac!,
      mtu: mtu!,
      addresses: [{ ip: lease.subnet!.ip, prefixLen: 32 }],
    });
  }
  if (networks.ipv6) {
    devices.push({
      ...common,
      name: v6Name,
      local: local6!.local,
      mac: v6VtepMac!,
      mtu: v6Mtu!,
      addresses: [{ ip: lease.ipv6Subnet!.ip, prefixLen: 128 }],
    });
  }
  const own: IPNet[] = [lease.subnet, lease.ipv6Subnet].filter((x) => x !== undefined);
  const scope: EntryScope = {
    name: "vxlan",
    network: (networks.ipv4 ?? networks.ipv6)!,
    ...(networks.ipv4 && networks.ipv6 ? { ipv6Network: networks.ipv6 } : {}),
    except: own,
    routeDevices: devices.map((d) => d.name),
    gatewayDevices: [ext.name],
    neighbourDevices: devices.map((d) => d.name),
  };
  await ensureDevices(dp, devices, log);

  let directNets: IPNet[] = [];
  const refresh = async () => {
    if (!cfg.directRouting) return;
    const link = await dp.link(ext.name);
    directNets = (link?.addresses ?? [])
      .filter((a) =>
        a.prefixLen < (typeof a.ip === "bigint" ? 128 : 32) && !isLinkLocalIPv6(a.ip) &&
        (typeof a.ip === "bigint" ? networks.ipv6 : networks.ipv4) !== undefined
      )
      .map(networkOf);
  };
  const entryOptions: VxlanEntryOptions = {
    device: networks.ipv4 ? name : null,
    v6Device: networks.ipv6 ? v6Name : null,
    extDevice: ext.name,
    get directNets() {
      return directNets;
    },
  };

  const setup: RoutedSetup<PeerEntries> = {
    lease,
    mtu: podMtu,
    target: kernelTarget({ datapath: dp, devices, scope, logger: log }),
    peerEntries: (peer) => vxlanPeerEntries(peer, entryOptions),
    refresh,
  };
  const net = extension
    ? routedNetwork("vxlan", await extension.extend(setup), ctx, log, options)
    : routedNetwork("vxlan", setup, ctx, log, options);
  return {
    ...net,
    deviceName: networks.ipv4 ? name : v6Name,
    vtepMac: (vtepMac ?? v6VtepMac)!,
    ...(networks.ipv6 ? { v6DeviceName: v6Name, v6VtepMac } : {}),
  };
}
