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
 * One instance of the routed-peer engine (`engine.ts`): a peer's route is a
 * pure function of its lease; the kernel target writes only the difference;
 * `run` restores deleted routes, also after the interface comes back up.
 *
 * @module
 */

import { type Logger, nullLogger } from "../../core/log.ts";
import { formatIPv4, isIPv4, parseIPv4 } from "../../core/ip.ts";
import { ipv4SubnetOf, type Lease } from "../../lease/types.ts";
import type { Datapath, EntryScope, PeerEntries } from "../../datapath/types.ts";
import type { Backend, BackendContext } from "../types.ts";
import {
  ipv4NetworkOf,
  type PeerResult,
  type RoutedNetwork,
  routedNetwork,
  type RoutedOptions,
} from "./engine.ts";
import { kernelTarget } from "./target.ts";

/**
 * A peer's route (pure): `<peer subnet> via <peer PublicIP> dev <ext>`.
 *
 * @param peer The peer lease.
 * @param extDevice The external interface.
 * @returns The entries, or why the peer is skipped.
 */
export function hostGwPeerEntries(peer: Lease, extDevice: string): PeerResult<PeerEntries> {
  if (peer.attrs.backendType !== "host-gw") {
    return {
      skip: `backend type is ${JSON.stringify(peer.attrs.backendType ?? "udp")}, not "host-gw"`,
    };
  }
  if (!peer.subnet) return { skip: "it has no IPv4 subnet (an IPv6-only lease)" };
  if (!isIPv4(peer.attrs.publicIP)) {
    return { skip: `PublicIP ${JSON.stringify(peer.attrs.publicIP)} is not IPv4` };
  }
  return {
    entries: {
      routes: [{ dst: peer.subnet, gateway: parseIPv4(peer.attrs.publicIP), device: extDevice }],
    },
  };
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
  const network = ipv4NetworkOf(ctx.config, "host-gw", log);
  if (ext.extAddr !== ext.ifaceAddr) {
    throw new Error(
      `host-gw cannot start: the public IP ${ext.extAddr} differs from ${ext.name}'s address ${ext.ifaceAddr}, ` +
        "so this host is probably behind NAT, which host-gw does not support (peers route straight to the public IP); " +
        "drop --public-ip, or use the vxlan backend",
    );
  }
  const link = await dp.link(ext.name);
  if (!link) {
    throw new Error(
      `host-gw cannot start: the external interface ${ext.name} (index ${ext.index}) does not exist; pick one with --iface`,
    );
  }
  const publicIP = parseIPv4(ext.extAddr);
  if (!link.addresses.some((a) => a.ip === publicIP)) {
    throw new Error(
      `host-gw cannot start: the public IP ${ext.extAddr} is not an address of ${link.name} (it has ${
        link.addresses.map((a) => `${formatIPv4(a.ip)}/${a.prefixLen}`).join(", ") || "none"
      }); peers would route to an address that does not lead here. Add the address, pick the right interface with --iface, or fix --public-ip`,
    );
  }

  const lease = await ctx.acquire({ publicIP: ext.extAddr, backendType: "host-gw" }, ctx.signal);
  const scope: EntryScope = {
    name: "host-gw",
    network,
    except: [ipv4SubnetOf(lease, "the host-gw backend")],
    gatewayDevices: [link.name],
  };
  return routedNetwork(
    "host-gw",
    {
      lease,
      mtu: ext.mtu,
      target: kernelTarget({ datapath: dp, devices: [], scope, logger: log }),
      peerEntries: (peer) => hostGwPeerEntries(peer, link.name),
    },
    ctx,
    log,
    options,
  );
}
