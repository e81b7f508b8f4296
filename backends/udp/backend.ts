/**
 * The udp backend: flannel's userspace encapsulation, wire-compatible.
 *
 * Kernel state it creates, and why:
 * - TUN device `flannel0` (IFF_TUN | IFF_NO_PI, non-persistent): the kernel
 *   hands every packet for another host's subnet to the agent as a bare IPv4
 *   packet. It lives as long as the agent holds the fd, as in flannel.
 * - Address `<subnet.ip>/32` on it: the source for host → remote-pod traffic
 *   (a /32, so no broadcast or subnet routes appear).
 * - MTU = external MTU − 28 (20 IPv4 + 8 UDP), or `Backend.MTU`.
 * - Route `Network dev flannel0` (scope universe, as flannel): the whole
 *   overlay goes to the TUN; this host's own subnet is reached through the
 *   more specific bridge route the CNI plugin makes.
 * - A UDP socket on `<iface addr>:Port` (default 8285). The payload is the raw
 *   inner packet, no header; TTL is decremented on send and on receive.
 *
 * A Worker runs the packet engine (`udp_loop.ts`) over the two fds; peers'
 * leases become its routing table (subnet → PublicIP:Port). Unlike flannel it
 * drops datagrams from addresses that are no peer's PublicIP, inner sources
 * outside the sending peer's subnet, destinations outside this host's subnet
 * and malformed packets, counting each drop by reason in /metrics.
 *
 * The lease publishes only the public IP, exactly as flannel's udp backend:
 * `{"PublicIP":"…","PublicIPv6":null}` (no BackendType, no BackendData).
 *
 * @module
 */

import * as v from "valibot";
import type { Counter, Registry } from "../../core/metrics.ts";
import { formatIPv4, formatSubnetPair, type IPv4Net, isIPv4, parseIPv4 } from "../../core/ip.ts";
import { type NetworkConfig, parseBackendOptions } from "../../lease/config.ts";
import { ipv4SubnetOf, type Lease } from "../../lease/types.ts";
import { ConfigError } from "../../core/errors.ts";
import { backoff } from "../../core/clock.ts";
import { sleepQuietly } from "../../core/abort.ts";
import {
  type Datapath,
  type EntryScope,
  type EntryTable,
  type PeerEntries,
  RT_SCOPE_UNIVERSE,
} from "../../datapath/types.ts";
import { openTun } from "../../datapath/tun.ts";
import type { Backend, BackendContext, Network, PeerKernelState } from "../types.ts";
import { Repairs } from "../repair.ts";
import { ensureDevices } from "../routed/target.ts";
import { openUdpSocket, type SocketIoMode } from "./io.ts";
import { type UdpCounters } from "./loop.ts";
import { DROP_REASONS, type PeerRoute } from "./packet.ts";
import { startUdpWorker, type UdpWorker, type UdpWorkerOptions } from "./thread.ts";

/** flannel's default udp port. */
export const DEFAULT_UDP_PORT = 8285;
/** IPv4 + UDP header bytes added to every packet. */
export const UDP_ENCAP_OVERHEAD = 28;

const UdpOptions = v.object({
  Port: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(65535))),
  MTU: v.optional(v.pipe(v.number(), v.integer(), v.minValue(68), v.maxValue(65507))),
});

/** The udp backend's keys of `Backend`, validated. */
export interface UdpBackendConfig {
  /** UDP port (`Backend.Port`, default 8285). */
  readonly port: number;
  /** MTU override (`Backend.MTU`), or undefined for external MTU − 28. */
  readonly mtu?: number;
}

/**
 * Read `Backend.Port` and `Backend.MTU` (case-insensitive keys).
 *
 * @param config The network configuration.
 * @returns Port (default 8285) and the MTU override.
 * @throws {ConfigError} When a key has the wrong type or is out of range, or
 *   the network is not IPv4-only (flannel's udp backend has no IPv6 path).
 */
export function parseUdpConfig(config: NetworkConfig): UdpBackendConfig {
  const opts = parseBackendOptions(config, UdpOptions);
  if (!config.enableIPv4 || !config.network) {
    throw new ConfigError(
      'the udp backend needs an IPv4 "Network" in the network config: set "Network" (e.g. "10.5.0.0/16")',
      "Network",
    );
  }
  if (config.enableIPv6) {
    throw new ConfigError(
      'the udp backend does not carry IPv6: set "EnableIPv6": false or use the vxlan backend',
      "EnableIPv6",
    );
  }
  return { port: opts.Port ?? DEFAULT_UDP_PORT, mtu: opts.MTU };
}

/**
 * Turn peer leases into the engine's routing table. Leases of another backend
 * type (a `BackendType` other than udp) and leases without a usable IPv4
 * PublicIP are returned in `skipped`.
 *
 * @param peers Peer leases (never this host's).
 * @param port The UDP port peers listen on (one per network, as in flannel).
 * @returns Routes and the skipped leases with the reason.
 */
export function udpRoutes(
  peers: readonly Lease[],
  port: number,
): { routes: PeerRoute[]; skipped: { lease: Lease; reason: string }[] } {
  const routes: PeerRoute[] = [];
  const skipped: { lease: Lease; reason: string }[] = [];
  for (const lease of peers) {
    const type = lease.attrs.backendType;
    if (type !== undefined && type !== "" && type !== "udp") {
      skipped.push({ lease, reason: `backend type is ${type}, not udp` });
    } else if (!lease.subnet) {
      skipped.push({ lease, reason: "it has no IPv4 subnet (an IPv6-only lease)" });
    } else if (!isIPv4(lease.attrs.publicIP)) {
      skipped.push({
        lease,
        reason: `PublicIP ${JSON.stringify(lease.attrs.publicIP)} is not IPv4`,
      });
    } else {
      routes.push({ subnet: lease.subnet, publicIP: parseIPv4(lease.attrs.publicIP), port });
    }
  }
  return { routes, skipped };
}

/** An open TUN device, as the backend needs it. */
export interface UdpTun {
  readonly name: string;
  readonly fd: number;
  /** Packets carry a virtio header (TUN offloads on). */
  readonly vnetHdr?: boolean;
  close(): void;
}

/** An open UDP socket, as the backend needs it. */
export interface UdpSock {
  readonly fd: number;
  close(): void;
}

/**
 * Where the backend gets its devices and engine: the kernel and a Worker by
 * default ({@link kernelUdpIo}); unit tests pass in-memory ones.
 */
export interface UdpBackendIo {
  /** Create the TUN device. */
  openTun(name: string): Promise<UdpTun>;
  /** Create the UDP socket bound to `address:port`. */
  openSocket(address: number, port: number): Promise<UdpSock>;
  /** Start the packet engine over the two fds. */
  startEngine(options: UdpWorkerOptions, signal: AbortSignal): Promise<UdpWorker>;
}

/** Options for {@link kernelUdpIo}. */
export interface KernelUdpIoOptions {
  /** Network namespace for the TUN and the socket (tests); default this process's. */
  readonly netns?: string;
  /** Socket path: `mmsg` (default) or `single`. */
  readonly mode?: SocketIoMode;
  /**
   * Use the kernel's offloads (default true): TSO/checksum offload on the TUN
   * (virtio headers) and UDP GSO/GRO on the socket, each when available.
   */
  readonly offload?: boolean;
}

/**
 * The real devices: `/dev/net/tun`, a libc UDP socket, the engine Worker.
 *
 * @param options Namespace, socket path, offloads.
 * @returns The io.
 */
export function kernelUdpIo(options: KernelUdpIoOptions = {}): UdpBackendIo {
  const offload = options.offload ?? true;
  return {
    openTun: (name) => openTun({ name, netns: options.netns, offload }),
    openSocket: (address, port) => openUdpSocket({ address, port, netns: options.netns }),
    startEngine: (o, signal) =>
      startUdpWorker({ ...o, mode: options.mode ?? "mmsg", gso: offload }, signal),
  };
}

/** Options for {@link udpBackend}. */
export interface UdpBackendOptions {
  /** Kernel state access, in the namespace the agent runs in. */
  readonly datapath: Datapath;
  /** Devices and engine; default {@link kernelUdpIo}(). */
  readonly io?: UdpBackendIo;
  /** TUN device name (default `flannel0`). */
  readonly tunName?: string;
  /** How often counters are copied into the metrics registry (default 1000 ms). */
  readonly metricsIntervalMs?: number;
}

/**
 * The udp backend.
 *
 * @param options Datapath, io, device name.
 * @returns The backend, type `udp`.
 * @example
 * ```ts
 * const backend = udpBackend({ datapath: await openNetlinkDatapath() });
 * const network = await backend.register(ctx);
 * await network.syncPeers(peerLeases);
 * await network.run(signal);
 * ```
 */
export function udpBackend(options: UdpBackendOptions): Backend {
  return {
    type: "udp",
    register: (ctx) => registerUdp(options, ctx),
  };
}

interface UdpMetrics {
  packets: Counter;
  bytes: Counter;
  dropped: Counter;
  icmp: Counter;
}

function udpMetrics(registry: Registry): UdpMetrics {
  const m = {
    packets: registry.counter(
      "weft_udp_packets_total",
      "Packets carried by the udp backend (out: encapsulated to peers, in: decapsulated into the TUN).",
    ),
    bytes: registry.counter(
      "weft_udp_bytes_total",
      "Inner IPv4 bytes carried by the udp backend, by direction.",
    ),
    dropped: registry.counter(
      "weft_udp_dropped_packets_total",
      "Packets the udp backend dropped, by reason.",
    ),
    icmp: registry.counter(
      "weft_udp_icmp_unreachable_total",
      "ICMP net-unreachable messages written back into the TUN for destinations no peer owns.",
    ),
  };
  for (const direction of ["in", "out"]) {
    m.packets.inc({ direction }, 0);
    m.bytes.inc({ direction }, 0);
  }
  for (const reason of DROP_REASONS) m.dropped.inc({ reason }, 0);
  m.icmp.inc(undefined, 0);
  return m;
}

/** Adds the growth of a counter snapshot since the last call to the registry. */
function metricsSink(m: UdpMetrics): (now: UdpCounters) => void {
  let last: UdpCounters | undefined;
  return (now) => {
    const d = (a: number, b: number | undefined) => a - (b ?? 0);
    m.packets.inc({ direction: "out" }, d(now.packetsOut, last?.packetsOut));
    m.packets.inc({ direction: "in" }, d(now.packetsIn, last?.packetsIn));
    m.bytes.inc({ direction: "out" }, d(now.bytesOut, last?.bytesOut));
    m.bytes.inc({ direction: "in" }, d(now.bytesIn, last?.bytesIn));
    m.icmp.inc(undefined, d(now.icmpUnreachable, last?.icmpUnreachable));
    for (const reason of DROP_REASONS) {
      m.dropped.inc({ reason }, d(now.dropped[reason], last?.dropped[reason]));
    }
    last = now;
  };
}

async function registerUdp(options: UdpBackendOptions, ctx: BackendContext): Promise<Network> {
  const cfg = parseUdpConfig(ctx.config);
  const network = ctx.config.network!;
  const io = options.io ?? kernelUdpIo();
  const dp = options.datapath;
  const tunName = options.tunName ?? "flannel0";
  const log = ctx.logger.with({ backend: "udp" });
  const mtu = cfg.mtu ?? ctx.extIface.mtu - UDP_ENCAP_OVERHEAD;
  if (mtu < 68) {
    throw new ConfigError(
      `the udp backend's MTU would be ${mtu} (external interface ${ctx.extIface.name} MTU ${ctx.extIface.mtu} − ${UDP_ENCAP_OVERHEAD}); set "Backend.MTU" or use an interface with a larger MTU`,
      "Backend.MTU",
    );
  }
  if (cfg.mtu !== undefined && cfg.mtu > ctx.extIface.mtu - UDP_ENCAP_OVERHEAD) {
    log.warn("Backend.MTU exceeds external MTU − 28: encapsulated packets will be fragmented", {
      mtu: cfg.mtu,
      extMtu: ctx.extIface.mtu,
    });
  }
  const bindAddress = parseIPv4(ctx.extIface.ifaceAddr);

  const lease = await ctx.acquire({ publicIP: ctx.extIface.extAddr }, ctx.signal);
  const own: IPv4Net = ipv4SubnetOf(lease, "the udp backend");

  // The TUN device's addresses, MTU and state, and the route of Network through
  // it, are asked of the datapath, which restores them when someone changes them.
  let table: EntryTable | undefined;
  const configure = async (name: string): Promise<void> => {
    await ensureDevices(dp, [{
      kind: "existing",
      name,
      mtu,
      addresses: [{ ip: own.ip, prefixLen: 32 }],
    }], log);
    const scope: EntryScope = { name: "udp", network, routeDevices: [name] };
    if (table?.scope.routeDevices?.[0] !== name) table = dp.entries(scope);
    const route: PeerEntries = {
      routes: [{ dst: network, device: name, scope: RT_SCOPE_UNIVERSE }],
    };
    const r = await table.sync(new Map([["network", route]]));
    if (r.failures.length > 0) throw r.failures[0].error;
  };
  const openConfigured = async (): Promise<UdpTun> => {
    const t = await io.openTun(tunName);
    try {
      await configure(t.name);
      return t;
    } catch (e) {
      t.close();
      throw e;
    }
  };
  // Open the socket first: a port in use fails before any kernel state is made.
  const sock = await io.openSocket(bindAddress, cfg.port);
  let tun: UdpTun | undefined;
  try {
    tun = await openConfigured();
  } catch (e) {
    sock.close();
    throw e;
  }
  log.info("udp backend ready", {
    device: tun.name,
    address: `${formatIPv4(own.ip)}/32`,
    mtu,
    port: cfg.port,
    bind: ctx.extIface.ifaceAddr,
  });

  const record = metricsSink(udpMetrics(ctx.metrics));
  let routes: PeerRoute[] = [];
  let skippedKeys = new Set<string>();
  /** The peers skipped by the last sync, with why (for `peerStates`). */
  let skipped = new Map<string, string>();
  /** The peers routed by the last sync, by `formatSubnetPair`. */
  let routedKeys: string[] = [];
  let worker: UdpWorker | undefined;

  const syncPeers = (peers: readonly Lease[]): Promise<void> => {
    const r = udpRoutes(peers, cfg.port);
    const keys = new Set<string>();
    for (const s of r.skipped) {
      const key = `${formatSubnetPair(s.lease)} ${s.reason}`;
      keys.add(key);
      if (!skippedKeys.has(key)) {
        log.warn("skipping peer", { subnet: formatSubnetPair(s.lease), reason: s.reason });
      }
    }
    skippedKeys = keys;
    skipped = new Map(r.skipped.map((x) => [formatSubnetPair(x.lease), x.reason]));
    routedKeys = peers.map(formatSubnetPair).filter((k) => !skipped.has(k));
    routes = r.routes;
    worker?.setRoutes(routes);
    return Promise.resolve();
  };

  /** Run one engine until it ends; resolves with its failure, or null on abort. */
  const runEngine = async (t: UdpTun, signal: AbortSignal): Promise<Error | null> => {
    const w = await io.startEngine(
      { tunFd: t.fd, sockFd: sock.fd, vnetHdr: t.vnetHdr, ownSubnet: own, mtu, routes },
      signal,
    );
    worker = w;
    w.setRoutes(routes); // routes may have changed while it started
    let ended = false;
    const outcome = w.done.then(() => null, (e: Error) => e).finally(() => (ended = true));
    try {
      while (!ended && !signal.aborted) {
        await Promise.race([
          outcome,
          sleepQuietly(ctx.clock, options.metricsIntervalMs ?? 1000, signal),
        ]);
        record(w.counters());
      }
      if (signal.aborted) {
        await w.stop();
        return null;
      }
      return await outcome;
    } finally {
      worker = undefined;
      record(w.counters());
    }
  };

  const repairs = new Repairs({
    drift: (signal) => dp.drift(signal),
    table: "udp",
    repair: async () => {
      // A deleted device makes the engine fail; the loop below recreates it.
      const name = tun?.name;
      if (name && await dp.link(name)) await configure(name);
    },
    clock: ctx.clock,
    logger: log,
    onRepaired: (reason) => {
      if (reason === "periodic resync") return;
      log.warn("restored the TUN device's address and route after an outside change", {
        device: tun?.name ?? tunName,
        reason,
      });
    },
  });

  const run = async (signal: AbortSignal): Promise<void> => {
    const repairing = repairs.run(signal);
    let failures = 0;
    try {
      while (!signal.aborted) {
        let error: unknown;
        const started = ctx.clock.now();
        try {
          tun ??= await openConfigured();
          error = await runEngine(tun, signal);
        } catch (e) {
          error = e;
        }
        if (ctx.clock.now() - started > 60_000) failures = 0; // it ran a good while
        if (signal.aborted || error === null) break;
        const delay = backoff(failures++, { base: 500, max: 30_000 });
        log.error("udp packet engine stopped; recreating the TUN device", {
          error,
          retryMs: delay,
        });
        tun?.close();
        tun = undefined;
        await sleepQuietly(ctx.clock, delay, signal);
      }
    } finally {
      await repairing;
      tun?.close();
      tun = undefined;
      sock.close();
    }
  };

  return {
    lease,
    mtu,
    syncPeers,
    run,
    notReadyReason: () => (worker ? null : "udp packet engine is not running"),
    peerStates: () => {
      // a route is in place once the running engine has it (setRoutes hands it over at once)
      const states = new Map<string, PeerKernelState>();
      for (const k of routedKeys) {
        states.set(
          k,
          worker
            ? { state: "applied" }
            : { state: "failed", detail: "udp packet engine is not running" },
        );
      }
      for (const [k, reason] of skipped) states.set(k, { state: "skipped", detail: reason });
      return states;
    },
  };
}
