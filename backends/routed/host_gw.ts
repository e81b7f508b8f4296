/**
 * The host-gw backend: plain routing, wire-compatible with flannel's, for
 * IPv4, dual-stack and IPv6-only networks.
 *
 * Kernel state it creates, and why:
 * - Per peer and enabled family one route in the main table:
 *   `<peer subnet> via <peer PublicIP> dev <ext iface>` and
 *   `<peer ipv6Subnet> via <peer PublicIPv6> dev <ext iface>`: every host
 *   must share one L2 segment, so a peer's public address is a directly
 *   reachable next hop. No device, no encapsulation; pod MTU = the external
 *   interface's MTU.
 *
 * It refuses to start when a public address is not an address of the
 * external interface (`--public-ip`/`--public-ipv6` behind NAT, or a
 * typo): peers would route to an address that does not lead here. A peer
 * whose public address is not on a connected network fails its route
 * (IPv4 ENETUNREACH, IPv6 EHOSTUNREACH) and is reported; the rest are
 * installed.
 *
 * The lease publishes `BackendType` "host-gw" and no `BackendData`; with
 * IPv6 its `PublicIPv6` (flannel's hostgw.go).
 * One instance of the routed-peer engine (`engine.ts`): a peer's routes are
 * a pure function of its lease; the kernel target writes only the
 * difference; `run` restores deleted routes, also after the interface comes
 * back up.
 *
 * @module
 */

import { type Logger, nullLogger } from "../../core/log.ts";
import { formatIPNet, type IPNet, isIPv4, isIPv6, parseIPv4, parseIPv6 } from "../../core/ip.ts";
import type { Lease } from "../../lease/types.ts";
import type {
  Datapath,
  DeviceInfo,
  EntryScope,
  PeerEntries,
  RouteSpec,
} from "../../datapath/types.ts";
import type { Backend, BackendContext } from "../types.ts";
import {
  clusterNetworksOf,
  type PeerResult,
  type RoutedNetwork,
  routedNetwork,
  type RoutedOptions,
} from "./engine.ts";
import { kernelTarget } from "./target.ts";

/** Which families the routes are for. */
export interface HostGwFamilies {
  readonly ipv4: boolean;
  readonly ipv6: boolean;
}

/**
 * A peer's routes (pure): `<peer subnet> via <peer PublicIP> dev <ext>`
 * and, with IPv6, `<peer ipv6Subnet> via <peer PublicIPv6> dev <ext>`. A
 * peer whose one family is unusable gets the other's route, with a
 * `partial` reason.
 *
 * @param peer The peer lease.
 * @param extDevice The external interface.
 * @param families The enabled families (default IPv4 only).
 * @returns The entries, or why the peer is skipped.
 */
export function hostGwPeerEntries(
  peer: Lease,
  extDevice: string,
  families: HostGwFamilies = { ipv4: true, ipv6: false },
): PeerResult<PeerEntries> {
  if (peer.attrs.backendType !== "host-gw") {
    return {
      skip: `backend type is ${JSON.stringify(peer.attrs.backendType ?? "udp")}, not "host-gw"`,
    };
  }
  const routes: RouteSpec[] = [];
  const skips: string[] = [];
  if (families.ipv4) {
    if (!peer.subnet) skips.push("it has no IPv4 subnet");
    else if (!isIPv4(peer.attrs.publicIP)) {
      skips.push(`PublicIP ${JSON.stringify(peer.attrs.publicIP)} is not IPv4`);
    } else {
      routes.push({ dst: peer.subnet, gateway: parseIPv4(peer.attrs.publicIP), device: extDevice });
    }
  }
  if (families.ipv6) {
    const v6 = peer.attrs.publicIPv6;
    if (!peer.ipv6Subnet) skips.push("it has no IPv6 subnet");
    else if (!v6 || !isIPv6(v6)) skips.push(`PublicIPv6 ${JSON.stringify(v6 ?? null)} is not IPv6`);
    else routes.push({ dst: peer.ipv6Subnet, gateway: parseIPv6(v6), device: extDevice });
  }
  if (routes.length === 0) return { skip: skips.join("; ") || "no address family is enabled" };
  return skips.length
    ? { entries: { routes }, partial: skips.join("; ") }
    : { entries: { routes } };
}

/** Why a public address cannot be used by host-gw, or null. */
function publicAddressProblem(
  link: DeviceInfo,
  family: "IPv4" | "IPv6",
  ifaceAddr: string,
  extAddr: string,
): string | null {
  const flag = family === "IPv6" ? "--public-ipv6" : "--public-ip";
  const what = family === "IPv6" ? "public IPv6 address" : "public IP";
  if (extAddr !== ifaceAddr) {
    return `the ${what} ${extAddr} differs from ${link.name}'s address ${ifaceAddr}, ` +
      "so this host is probably behind NAT, which host-gw does not support (peers route straight to the public address); " +
      `drop ${flag}, or use the vxlan backend`;
  }
  const ip = family === "IPv6" ? parseIPv6(extAddr) : parseIPv4(extAddr);
  if (!link.addresses.some((a) => a.ip === ip)) {
    return `the ${what} ${extAddr} is not an address of ${link.name} (it has ${
      link.addresses.map(formatIPNet).join(", ") || "none"
    }); peers would route to an address that does not lead here. Add the address, pick the right interface with --iface, or fix ${flag}`;
  }
  return null;
}

/** Options for {@link hostGwBackend}. */
export interface HostGwBackendOptions extends RoutedOptions {
  readonly datapath: Datapath;
  /** Defaults to the context's logger. */
  readonly logger?: Logger;
}

/** The host-gw Network. */
export type HostGwNetwork = RoutedNetwork;

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
  const networks = clusterNetworksOf(ctx.config, "host-gw");
  const link = await dp.link(ext.name);
  if (!link) {
    throw new Error(
      `host-gw cannot start: the external interface ${ext.name} (index ${ext.index}) does not exist; pick one with --iface`,
    );
  }
  const problems = [
    networks.ipv4 ? publicAddressProblem(link, "IPv4", ext.ifaceAddr, ext.extAddr) : null,
    networks.ipv6 && ext.extV6Addr && isIPv6(ext.extV6Addr)
      ? publicAddressProblem(link, "IPv6", ext.ifaceV6Addr ?? "", ext.extV6Addr)
      : null,
    networks.ipv6 && !(ext.extV6Addr && isIPv6(ext.extV6Addr))
      ? `IPv6 is enabled but ${link.name} has no global IPv6 address to publish; add one or pick another interface with --iface`
      : null,
  ].filter((p) => p !== null);
  if (problems.length) throw new Error(`host-gw cannot start: ${problems.join("; ")}`);

  const lease = await ctx.acquire({
    publicIP: networks.ipv4 ? ext.extAddr : "",
    ...(networks.ipv6 ? { publicIPv6: ext.extV6Addr } : {}),
    backendType: "host-gw",
  }, ctx.signal);
  const own: IPNet[] = [
    ...(networks.ipv4 && lease.subnet ? [lease.subnet] : []),
    ...(networks.ipv6 && lease.ipv6Subnet ? [lease.ipv6Subnet] : []),
  ];
  const scope: EntryScope = {
    name: "host-gw",
    network: (networks.ipv4 ?? networks.ipv6)!,
    ...(networks.ipv4 && networks.ipv6 ? { ipv6Network: networks.ipv6 } : {}),
    except: own,
    gatewayDevices: [link.name],
  };
  const families = { ipv4: networks.ipv4 !== undefined, ipv6: networks.ipv6 !== undefined };
  return routedNetwork(
    "host-gw",
    {
      lease,
      mtu: ext.mtu,
      target: kernelTarget({ datapath: dp, devices: [], scope, logger: log }),
      peerEntries: (peer) => hostGwPeerEntries(peer, link.name, families),
    },
    ctx,
    log,
    options,
  );
}
