/**
 * The vxlan backend: in-kernel VXLAN, wire-compatible with flannel's.
 *
 * Kernel state it creates, and why:
 * - Device `flannel.<VNI>` (VNI default 1): type vxlan, `dstport` 8472 (or
 *   `Backend.Port`), `local` = the public IP (flannel v0.28's ExtAddr) when
 *   the external interface holds it, else the interface's address (see
 *   {@link vxlanLocalAddress}), `dev` = the
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
 * weft's `Backend.CloudRoutes` (hybrid clusters) adds cloud routes for
 * peers in this host's VPC and a `CloudRoute` key to BackendData: see
 * `hybrid.ts`, loaded only when the key is set.
 *
 * One instance of the routed-peer engine (`engine.ts`): the entries of a
 * peer are a pure function of (own lease, peer lease, options); the kernel
 * target writes only the difference, so a restart changes nothing that is
 * already right and a lease event writes only that peer's entries. `run`
 * restores a deleted or changed device, address, route, neighbour or fdb
 * entry.
 *
 * @module
 */

import * as v from "valibot";
import { type Logger, nullLogger } from "../../core/log.ts";
import { foldKeys, type NetworkConfig, parseBackendOptions } from "../../lease/config.ts";
import {
  containsIPv4,
  formatMac,
  type IPv4Net,
  isIPv4,
  maskIPv4,
  parseIPv4,
} from "../../core/ip.ts";
import { ipv4SubnetOf, type Lease } from "../../lease/types.ts";
import type { Datapath, EntryScope, PeerEntries, VxlanDeviceSpec } from "../../datapath/types.ts";
import type { Backend, BackendContext, ExternalInterface } from "../types.ts";
import {
  ipv4NetworkOf,
  type PeerResult,
  type RoutedNetwork,
  routedNetwork,
  type RoutedOptions,
  type RoutedSetup,
} from "./engine.ts";
import { ensureDevices, kernelTarget } from "./target.ts";
import type { CloudBackendOptions } from "./aws_vpc.ts";

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
  /** The VXLAN device, e.g. `flannel.1`. */
  readonly device: string;
  /** The external interface (for direct routes). */
  readonly extDevice: string;
  /** Connected prefixes of the external interface, when DirectRouting is on (else empty). */
  readonly directNets: readonly IPv4Net[];
}

/**
 * A peer's kernel entries (pure): flannel's neighbour, fdb entry and onlink
 * route, or with DirectRouting a route via its PublicIP when that lies on a
 * connected prefix.
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
  const subnet = peer.subnet;
  if (!subnet) return { skip: "it has no IPv4 subnet (an IPv6-only lease)" };
  if (!isIPv4(peer.attrs.publicIP)) {
    return { skip: `PublicIP ${JSON.stringify(peer.attrs.publicIP)} is not IPv4` };
  }
  const publicIP = parseIPv4(peer.attrs.publicIP);
  if (options.directNets.some((n) => containsIPv4(n, publicIP))) {
    return {
      entries: { routes: [{ dst: subnet, gateway: publicIP, device: options.extDevice }] },
    };
  }
  const data = parseVxlanLeaseData(peer.attrs.backendData);
  if ("error" in data) return { skip: data.error };
  const device = options.device;
  return {
    entries: {
      neighbours: [{ device, ip: subnet.ip, mac: data.vtepMac }],
      fdb: [{ device, mac: data.vtepMac, dst: publicIP }],
      routes: [{ dst: subnet, gateway: subnet.ip, device, onlink: true }],
    },
  };
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
  extAddresses: readonly number[],
): { local: number; publicIP: boolean } {
  if (isIPv4(ext.extAddr)) {
    const pub = parseIPv4(ext.extAddr);
    if (ext.extAddr === ext.ifaceAddr || extAddresses.includes(pub)) {
      return { local: pub, publicIP: true };
    }
  }
  return { local: parseIPv4(ext.ifaceAddr), publicIP: false };
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
  /** The device name, e.g. `flannel.1`. */
  readonly deviceName: string;
  /** The VtepMAC published in the lease. */
  readonly vtepMac: string;
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

  // The VtepMAC: the existing device's, else the previous lease's, else a new one.
  const existing = await dp.link(name);
  const previous = ctx.previousLease?.attrs.backendType === "vxlan"
    ? parseVxlanLeaseData(ctx.previousLease.attrs.backendData)
    : undefined;
  const vtepMac =
    (existing?.kind === "vxlan" && existing.mac && MAC_RE.test(existing.mac)
      ? existing.mac
      : undefined) ??
      (previous && "vtepMac" in previous ? previous.vtepMac : undefined) ??
      randomMac(options.random);

  // hybrid clusters: find this host in the cloud first (its lease says where it is)
  const extension = cfg.cloudRoutes === undefined
    ? undefined
    : await (await import("./hybrid.ts")).cloudRoutesExtension(ctx.config, ctx, log, options);
  const extLink = await dp.link(ext.name);
  const { local, publicIP: localIsPublic } = vxlanLocalAddress(
    ext,
    (extLink?.addresses ?? []).map((a) => a.ip),
  );
  if (!localIsPublic) {
    log.warn(
      "the public IP is not an address of the external interface (NAT?): VXLAN packets leave from the interface address",
      { publicIP: ext.extAddr, iface: ext.name, local: ext.ifaceAddr },
    );
  }

  const lease = await ctx.acquire({
    publicIP: ext.extAddr,
    backendType: "vxlan",
    backendData: { VNI: cfg.vni, VtepMAC: vtepMac, ...extension?.backendData },
  }, ctx.signal);
  const ownSubnet = ipv4SubnetOf(lease, "the vxlan backend");

  const device: VxlanDeviceSpec = {
    kind: "vxlan",
    name,
    vni: cfg.vni,
    port: cfg.port,
    local,
    underlay: ext.name,
    learning: cfg.learning,
    gbp: cfg.gbp,
    mac: vtepMac,
    mtu,
    addresses: [{ ip: ownSubnet.ip, prefixLen: 32 }],
  };
  const scope: EntryScope = {
    name: "vxlan",
    network,
    except: [ownSubnet],
    routeDevices: [name],
    gatewayDevices: [ext.name],
    neighbourDevices: [name],
  };
  await ensureDevices(dp, [device], log);

  let directNets: IPv4Net[] = [];
  const refresh = async () => {
    if (!cfg.directRouting) return;
    const link = await dp.link(ext.name);
    directNets = (link?.addresses ?? [])
      .filter((a) => a.prefixLen < 32)
      .map((a) => ({ ip: (a.ip & maskIPv4(a.prefixLen)) >>> 0, prefixLen: a.prefixLen }));
  };

  const setup: RoutedSetup<PeerEntries> = {
    lease,
    mtu,
    target: kernelTarget({ datapath: dp, devices: [device], scope, logger: log }),
    peerEntries: (peer) =>
      vxlanPeerEntries(peer, { device: name, extDevice: ext.name, directNets }),
    refresh,
  };
  const net = extension
    ? routedNetwork("vxlan", await extension.extend(setup), ctx, log, options)
    : routedNetwork("vxlan", setup, ctx, log, options);
  return { ...net, deviceName: name, vtepMac };
}
