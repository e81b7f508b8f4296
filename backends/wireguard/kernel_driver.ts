/**
 * The kernel WireGuard driver: the `wireguard` link type (created with
 * `ip link add <dev> type wireguard`) configured over generic netlink
 * (family `wireguard`, resolved through the controller), with the
 * encoder and decoder of `datapath/netlink/wireguard_messages.ts`.
 *
 * {@link kernelDriver} says whether the family resolves: it does not on a
 * kernel without the module (as on weft's CI machines), and then the
 * backend uses wireguard-go.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { type Exec, systemExec } from "../../core/exec.ts";
import { formatIPv4, formatIPv4Net, parseIPv4 } from "../../core/ip.ts";
import { NLM_F_DUMP } from "../../datapath/netlink/codec.ts";
import { NetlinkError } from "../../datapath/netlink/error.ts";
import { NetlinkSocket } from "../../datapath/netlink/socket.ts";
import {
  decodeFamilyId,
  decodeGetDevice,
  encodeGetDevice,
  encodeGetFamily,
  encodeSetDevice,
  GENL_ID_CTRL,
  WG_GENL_NAME,
  type WgDeviceSet,
} from "../../datapath/netlink/wireguard_messages.ts";
import type { WireguardDriver } from "./driver.ts";
import { decodeKey } from "./keys.ts";
import type { DeviceConfig, DeviceState, PeerState } from "./uapi.ts";

const NETLINK_GENERIC = 16;
const ENOENT = 2;

/**
 * A {@link DeviceConfig} as a `WG_CMD_SET_DEVICE` request (pure).
 *
 * @param ifname The device.
 * @param config What to set (keys base64, private key hex).
 * @returns The request for the encoder.
 */
export function toSetDevice(ifname: string, config: DeviceConfig): WgDeviceSet {
  return {
    ifname,
    ...(config.privateKeyHex !== undefined
      ? { privateKey: new Uint8Array(Buffer.from(config.privateKeyHex, "hex")) }
      : {}),
    ...(config.listenPort !== undefined ? { listenPort: config.listenPort } : {}),
    ...(config.replacePeers ? { replacePeers: true } : {}),
    peers: config.peers.map((p) => {
      const publicKey = decodeKey(p.publicKey, "a peer's public key");
      if (p.remove) return { publicKey, remove: true };
      const [host, port] = (p.endpoint ?? "").split(":");
      return {
        publicKey,
        presharedKey: p.presharedKey
          ? decodeKey(p.presharedKey, "the preshared key")
          : new Uint8Array(32),
        ...(p.endpoint ? { endpoint: { ip: parseIPv4(host), n: Number(port) } } : {}),
        keepalive: p.keepalive,
        allowedIPs: p.allowedIPs.map((a) => ({ ip: a.ip, n: a.prefixLen })),
      };
    }),
  };
}

/** The kernel driver when the family resolves, else why not. */
export type KernelDriverProbe =
  | { readonly available: true; readonly driver: WireguardDriver }
  | { readonly available: false; readonly reason: string };

/**
 * Resolve the `wireguard` generic netlink family and, when it exists,
 * return the kernel driver.
 *
 * @param options `exec` for `ip link add` (default: the system's).
 * @returns The driver, or why there is none.
 */
export async function kernelDriver(options: { exec?: Exec } = {}): Promise<KernelDriverProbe> {
  const exec = options.exec ?? systemExec;
  let sock: NetlinkSocket;
  try {
    sock = await NetlinkSocket.open({ protocol: NETLINK_GENERIC, receiveBufferBytes: 1 << 20 });
  } catch (e) {
    return { available: false, reason: `no generic netlink socket: ${(e as Error).message}` };
  }
  let family: number;
  try {
    const reply = await sock.get({
      type: GENL_ID_CTRL,
      flags: 0,
      body: encodeGetFamily(WG_GENL_NAME),
      describe: () => `CTRL_CMD_GETFAMILY ${WG_GENL_NAME}`,
    });
    family = decodeFamilyId(reply.body);
  } catch (e) {
    sock.close();
    const missing = e instanceof NetlinkError && e.errno === ENOENT;
    return {
      available: false,
      reason: missing
        ? "the generic netlink family wireguard does not resolve (this kernel has no WireGuard module)"
        : `resolving the generic netlink family wireguard failed: ${(e as Error).message}`,
    };
  }

  const get = async (device: string): Promise<DeviceState> => {
    const messages = await sock.dump({
      type: family,
      flags: NLM_F_DUMP,
      body: encodeGetDevice(device),
      describe: () => `WG_CMD_GET_DEVICE ${device}`,
    });
    const info = decodeGetDevice(messages.map((m) => m.body));
    const peers = new Map<string, PeerState>();
    for (const p of info.peers) {
      const publicKey = Buffer.from(p.publicKey).toString("base64");
      peers.set(publicKey, {
        publicKey,
        ...(p.presharedKey ? { presharedKey: Buffer.from(p.presharedKey).toString("base64") } : {}),
        ...(p.endpoint ? { endpoint: `${formatIPv4(p.endpoint.ip)}:${p.endpoint.n}` } : {}),
        keepalive: p.keepalive,
        allowedIPs: p.allowedIPs.map((a) => formatIPv4Net({ ip: a.ip, prefixLen: a.n })).sort(),
        lastHandshakeSec: 0,
      });
    }
    return {
      ...(info.privateKey ? { privateKeyHex: Buffer.from(info.privateKey).toString("hex") } : {}),
      listenPort: info.listenPort,
      peers,
    };
  };

  const driver: WireguardDriver = {
    kind: "kernel",
    async ensure(device, signal) {
      const shown = await exec("ip", ["link", "show", "dev", device], { signal });
      if (shown.code === 0) return [];
      const added = await exec("ip", ["link", "add", device, "type", "wireguard"], { signal });
      if (added.code !== 0) {
        throw new Error(
          `Cannot create the WireGuard device ${device}: ${added.stderr.trim()}; load the module (modprobe wireguard) or use "Driver": "userspace"`,
        );
      }
      return [`created ${device} (type wireguard)`];
    },
    get,
    async set(device, config) {
      const [err] = await sock.execute([{
        type: family,
        flags: 0,
        body: encodeSetDevice(toSetDevice(device, config)),
        describe: () => `WG_CMD_SET_DEVICE ${device} (${config.peers.length} peer changes)`,
      }]);
      if (err) throw err;
    },
  };
  return { available: true, driver };
}
