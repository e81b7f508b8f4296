/**
 * The wireguard backend: an encrypted overlay, wire- and lease-compatible
 * with flannel's `wireguard` backend.
 *
 * State it creates, and why:
 * - Device `flannel-wg` (flannel's name; IPv4): a WireGuard interface,
 *   either the kernel's or a TUN served by `wireguard-go` (see
 *   `driver.ts`), listening on UDP `ListenPort` (51820) with this host's
 *   private key. MTU = (`MTU` or the external MTU) − 80; pods get the
 *   same.
 * - The private key in `/run/flannel/wgkey` (`WIREGUARD_KEY_FILE`), made
 *   once, mode 0400, kept across restarts (`keys.ts`); only the public key
 *   is published or logged.
 * - Address `<subnet.ip>/32` on the device and one route `Network dev
 *   flannel-wg` (scope link), as flannel: the whole overlay goes into the
 *   device, and WireGuard's allowed IPs pick the peer; this host's own
 *   subnet is reached through the more specific bridge route.
 * - Per peer, a WireGuard peer: its public key (lease `BackendData`),
 *   endpoint `PublicIP:Port`, allowed IPs = its subnet, keepalive
 *   `PersistentKeepaliveInterval`, preshared key `PSK`.
 *
 * The lease publishes `BackendType` "wireguard" and `BackendData`
 * `{"PublicKey":"<base64>","Port":51820}` (flannel v0.28's form; with
 * `EnableIPv6` also `BackendV6Data` with `ListenPortV6`).
 *
 * One instance of the routed-peer engine (`../routed/engine.ts`): a peer is
 * a pure function of its lease (`peers.ts`); a full sync reads the device
 * (`get`) and writes only the difference, so a restart changes nothing that
 * is right; an event writes only that peer. The device's address, MTU and
 * route go through the Datapath seam and are repaired on kernel drift; the
 * peers are checked by the periodic full sync (default every 5 s), so a
 * peer removed by hand (`wg set flannel-wg peer … remove`) comes back.
 * IPv4 only: with `EnableIPv6` the IPv6 side is published but not
 * programmed (a warning says so).
 *
 * @module
 */

import process from "node:process";
import { type Logger, nullLogger } from "../../core/log.ts";
import { ConfigError } from "../../core/errors.ts";
import { type IPv4Net, isIPv4 } from "../../core/ip.ts";
import { ipv4SubnetOf } from "../../lease/types.ts";
import type { ApplyResult, Datapath, Drift, EntryFailure } from "../../datapath/types.ts";
import type { Backend, BackendContext } from "../types.ts";
import {
  ipv4NetworkOf,
  type RoutedNetwork,
  routedNetwork,
  type RoutedOptions,
  type RouteTarget,
} from "../routed/engine.ts";
import { ensureDevices } from "../routed/target.ts";
import {
  DEVICE_V4,
  parseWireguardConfig,
  WIREGUARD_OVERHEAD,
  type WireguardConfig,
  wireguardLeaseData,
} from "./config.ts";
import { DEFAULT_KEY_FILE, loadOrCreateKeys, type WireguardKeys } from "./keys.ts";
import { diffPeers, wireguardPeer } from "./peers.ts";
import type { PeerConfig } from "./uapi.ts";
import { userspaceDriver, type WireguardDriver } from "./driver.ts";

/** Options for {@link wireguardBackend}. */
export interface WireguardBackendOptions extends RoutedOptions {
  readonly datapath: Datapath;
  /**
   * Picks the driver for the configured choice (`auto`, `kernel`,
   * `userspace`); default: {@link chooseWireguardDriver}.
   */
  readonly driver?: (choice: WireguardConfig["driver"], log: Logger) => Promise<WireguardDriver>;
  /** Key file (default `WIREGUARD_KEY_FILE`, else `/run/flannel/wgkey`). */
  readonly keyFile?: string;
  /** Environment (default the process's): `WIREGUARD_KEY_FILE`, `WEFT_WIREGUARD_DRIVER`. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Defaults to the context's logger. */
  readonly logger?: Logger;
}

/** The wireguard Network, with what tests and the status API may inspect. */
export interface WireguardNetwork extends RoutedNetwork {
  readonly deviceName: string;
  /** This host's public key (base64), as published. */
  readonly publicKey: string;
  /** `kernel` or `userspace`. */
  readonly driverKind: "kernel" | "userspace";
}

/**
 * The driver for a choice: `userspace` → wireguard-go; `kernel` → the
 * kernel's (fails where the module is missing); `auto` → the kernel's when
 * its generic netlink family resolves, else wireguard-go. The choice is
 * logged.
 *
 * @param choice From the config / `WEFT_WIREGUARD_DRIVER`.
 * @param log Where the choice is logged.
 * @returns The driver.
 */
export async function chooseWireguardDriver(
  choice: WireguardConfig["driver"],
  log: Logger,
): Promise<WireguardDriver> {
  if (choice === "userspace") {
    log.info("WireGuard driver: userspace (wireguard-go over UAPI), as configured");
    return userspaceDriver();
  }
  const { kernelDriver } = await import("./kernel_driver.ts");
  const kernel = await kernelDriver();
  if (kernel.available) {
    log.info("WireGuard driver: kernel (generic netlink family wireguard)", { choice });
    return kernel.driver;
  }
  if (choice === "kernel") {
    throw new ConfigError(
      `the WireGuard kernel driver was asked for ("Driver": "kernel" or WEFT_WIREGUARD_DRIVER=kernel), but ${kernel.reason}; load the module (modprobe wireguard) or use "Driver": "userspace"`,
      "Backend.Driver",
    );
  }
  log.info("WireGuard driver: userspace (wireguard-go over UAPI)", { why: kernel.reason });
  return userspaceDriver();
}

/**
 * The wireguard backend.
 *
 * @param options The datapath; optionally the driver choice, key file, env.
 * @returns The backend, type `wireguard`.
 * @example
 * ```ts
 * const backend = wireguardBackend({ datapath: await openNetlinkDatapath() });
 * ```
 */
export function wireguardBackend(options: WireguardBackendOptions): Backend {
  return { type: "wireguard", register: (ctx) => registerWireguard(options, ctx) };
}

/** Inputs of {@link wireguardTarget}. */
export interface WireguardTargetOptions {
  readonly datapath: Datapath;
  readonly driver: WireguardDriver;
  readonly device: string;
  readonly keys: WireguardKeys;
  readonly listenPort: number;
  readonly mtu: number;
  /** This host's subnet (its `.ip`/32 goes on the device). */
  readonly subnet: IPv4Net;
  /** The cluster network (routed into the device). */
  readonly network: IPv4Net;
  readonly logger: Logger;
}

/**
 * The WireGuard device as a {@link RouteTarget}: a full sync makes the
 * device exist with this key and port, its address/MTU/route right (through
 * the Datapath), and its peers exactly the wanted ones (read with `get`,
 * only the difference written); an update writes only the given peers.
 *
 * @param o Device, driver, keys, addresses.
 * @returns The target, named `wireguard`.
 */
export function wireguardTarget(
  o: WireguardTargetOptions,
): RouteTarget<PeerConfig> & { setupDevice(): Promise<ApplyResult> } {
  const { datapath: dp, driver, device, logger: log } = o;
  const routeScope = {
    name: "wireguard-route",
    network: o.network,
    routeDevices: [device],
  };
  const routes = dp.entries(routeScope);
  const networkRoute = new Map([["network", { routes: [{ dst: o.network, device }] }]]);
  /** Peer key → what the device holds for it, as far as we wrote or read. */
  const installed = new Map<string, PeerConfig>();

  const writePeers = async (
    writes: readonly { key: string; peer: PeerConfig }[],
    removes: readonly string[],
  ): Promise<ApplyResult> => {
    if (writes.length === 0 && removes.length === 0) {
      return { written: 0, deleted: 0, failures: [] };
    }
    const peers = [
      ...removes.map((publicKey): PeerConfig => ({
        publicKey,
        remove: true,
        keepalive: 0,
        allowedIPs: [],
      })),
      ...writes.map((w) => w.peer),
    ];
    try {
      await driver.set(device, { peers });
      return { written: writes.length, deleted: removes.length, failures: [] };
    } catch (e) {
      if (peers.length === 1) {
        return {
          written: 0,
          deleted: 0,
          failures: [{ key: writes[0]?.key, error: e as Error }],
        };
      }
      // find the peers that fail, one request each
      const failures: EntryFailure[] = [];
      let written = 0;
      let deleted = 0;
      for (const publicKey of removes) {
        const r = await writePeers([], [publicKey]);
        deleted += r.deleted;
        failures.push(...r.failures);
      }
      for (const w of writes) {
        const r = await writePeers([w], []);
        written += r.written;
        failures.push(...r.failures);
      }
      return { written, deleted, failures };
    }
  };

  /** The device with this key and port, its address, MTU and route; returns the route writes. */
  const setupDevice = async (): Promise<ApplyResult> => {
    const started = await driver.ensure(device, new AbortController().signal);
    if (started.length > 0) log.info("WireGuard device set up", { device, changes: started });
    const state = await driver.get(device);
    const privateKeyHex = o.keys.privateKeyHex();
    if (state.privateKeyHex !== privateKeyHex || state.listenPort !== o.listenPort) {
      await driver.set(device, { privateKeyHex, listenPort: o.listenPort, peers: [] });
      log.info("WireGuard device key and port set", {
        device,
        publicKey: o.keys.publicKey,
        listenPort: o.listenPort,
        was: state.listenPort,
      });
    }
    await ensureDevices(dp, [{
      kind: "existing",
      name: device,
      mtu: o.mtu,
      addresses: [{ ip: o.subnet.ip, prefixLen: 32 }],
    }], log);
    return await routes.sync(networkRoute);
  };

  return {
    name: "wireguard",
    setupDevice,
    async sync(entries) {
      const route = await setupDevice();
      const state = await driver.get(device);
      const { writes, removes } = diffPeers(entries, state);
      const r = await writePeers(writes, removes);
      installed.clear();
      for (const [k, p] of entries) installed.set(k, p);
      for (const f of r.failures) if (f.key !== undefined) installed.delete(f.key);
      return {
        written: r.written + route.written,
        deleted: r.deleted + route.deleted,
        failures: [...route.failures, ...r.failures],
      };
    },
    async update(changes) {
      const writes: { key: string; peer: PeerConfig }[] = [];
      const removes: string[] = [];
      for (const [key, peer] of changes) {
        const old = installed.get(key);
        if (peer === null) {
          if (old) removes.push(old.publicKey);
          installed.delete(key);
          continue;
        }
        if (old && old.publicKey !== peer.publicKey) removes.push(old.publicKey);
        writes.push({ key, peer });
        installed.set(key, peer);
      }
      const r = await writePeers(writes, removes);
      for (const f of r.failures) if (f.key !== undefined) installed.delete(f.key);
      return r;
    },
    async *drift(signal): AsyncIterable<Drift> {
      for await (const d of dp.drift(signal)) {
        // the network route is the device's: repair it with the device
        if (d.kind === "entries" && d.table === routeScope.name) {
          yield { kind: "device", device, reason: d.reason };
        } else if (d.kind !== "entries") {
          yield d;
        }
      }
    },
  };
}

async function registerWireguard(
  options: WireguardBackendOptions,
  ctx: BackendContext,
): Promise<WireguardNetwork> {
  const log = (options.logger ?? ctx.logger ?? nullLogger).with({ backend: "wireguard" });
  const env = options.env ?? process.env;
  const cfg = parseWireguardConfig(ctx.config, env);
  if (cfg.mode === "ipv6") {
    throw new ConfigError(
      'weft\'s wireguard backend programs IPv4 only: "Backend.Mode" "ipv6" is not supported; use "separate", "auto" or "ipv4"',
      "Backend.Mode",
    );
  }
  const network = ipv4NetworkOf(ctx.config, "wireguard", log);
  const ext = ctx.extIface;
  if (!isIPv4(ext.extAddr)) {
    throw new Error(
      `wireguard needs an IPv4 public address for peers to reach: current value is ${
        JSON.stringify(ext.extAddr)
      }; pick an interface with --iface or set --public-ip`,
    );
  }
  const underlayMtu = cfg.mtu || ext.mtu;
  const mtu = underlayMtu - WIREGUARD_OVERHEAD;
  if (mtu < 68) {
    throw new Error(
      `wireguard MTU would be ${mtu} (${underlayMtu} − ${WIREGUARD_OVERHEAD}), below IPv4's minimum 68: raise Backend.MTU or the interface MTU`,
    );
  }
  const keyFile = options.keyFile ?? (env.WIREGUARD_KEY_FILE || DEFAULT_KEY_FILE);
  const { keys, created } = loadOrCreateKeys(keyFile);
  log.info(created ? "WireGuard key created" : "WireGuard key loaded", {
    keyFile,
    publicKey: keys.publicKey,
  });
  const driver = await (options.driver ?? chooseWireguardDriver)(cfg.driver, log);
  log.info("WireGuard config", {
    device: DEVICE_V4,
    driver: driver.kind,
    listenPort: cfg.listenPort,
    mode: cfg.mode,
    keepalive: cfg.keepalive,
    psk: cfg.psk !== undefined,
    mtu,
  });

  const lease = await ctx.acquire({
    publicIP: ext.extAddr,
    ...(ext.extV6Addr ? { publicIPv6: ext.extV6Addr } : {}),
    backendType: "wireguard",
    backendData: wireguardLeaseData(keys.publicKey, cfg.listenPort),
    ...(ctx.config.enableIPv6
      ? { backendV6Data: wireguardLeaseData(keys.publicKey, cfg.listenPortV6) }
      : {}),
  }, ctx.signal);
  const subnet = ipv4SubnetOf(lease, "the wireguard backend");
  const target = wireguardTarget({
    datapath: options.datapath,
    driver,
    device: DEVICE_V4,
    keys,
    listenPort: cfg.listenPort,
    mtu,
    subnet,
    network,
    logger: log,
  });
  const route = await target.setupDevice();
  if (route.failures.length > 0) throw route.failures[0].error;
  const net = routedNetwork(
    "wireguard",
    { lease, mtu, target, peerEntries: (peer) => wireguardPeer(peer, cfg) },
    ctx,
    log,
    { ...options, resyncIntervalMs: options.resyncIntervalMs ?? 5_000 },
  );
  return { ...net, deviceName: DEVICE_V4, publicKey: keys.publicKey, driverKind: driver.kind };
}
