/**
 * Generic netlink messages of the kernel's WireGuard (family `wireguard`,
 * `include/uapi/linux/wireguard.h`): `WG_CMD_SET_DEVICE` with nested
 * `WGDEVICE_A_*` / `WGPEER_A_*` / `WGALLOWEDIP_A_*` attributes, the
 * `WG_CMD_GET_DEVICE` dump and its decoding, and the controller's
 * `CTRL_CMD_GETFAMILY` that resolves the family id.
 *
 * Bodies only (genlmsghdr + attributes); the socket adds the netlink header
 * with the family id as message type. IPv4 only (endpoints and allowed IPs).
 *
 * @module
 */

import { listAttrs, NlWriter, readU16, readU8 } from "./codec.ts";

/** Generic netlink's controller family id. */
export const GENL_ID_CTRL = 0x10;
/** `CTRL_CMD_GETFAMILY`. */
export const CTRL_CMD_GETFAMILY = 3;
/** `CTRL_ATTR_FAMILY_ID` (u16). */
export const CTRL_ATTR_FAMILY_ID = 1;
/** `CTRL_ATTR_FAMILY_NAME` (string). */
export const CTRL_ATTR_FAMILY_NAME = 2;

/** `WG_GENL_NAME`. */
export const WG_GENL_NAME = "wireguard";
/** `WG_GENL_VERSION`. */
export const WG_GENL_VERSION = 1;
/** `WG_CMD_GET_DEVICE` (a dump). */
export const WG_CMD_GET_DEVICE = 0;
/** `WG_CMD_SET_DEVICE`. */
export const WG_CMD_SET_DEVICE = 1;

/** `enum wgdevice_attribute`. */
export const WGDEVICE_A_IFINDEX = 1;
export const WGDEVICE_A_IFNAME = 2;
export const WGDEVICE_A_PRIVATE_KEY = 3;
export const WGDEVICE_A_PUBLIC_KEY = 4;
export const WGDEVICE_A_FLAGS = 5;
export const WGDEVICE_A_LISTEN_PORT = 6;
export const WGDEVICE_A_FWMARK = 7;
export const WGDEVICE_A_PEERS = 8;
/** `WGDEVICE_F_REPLACE_PEERS`. */
export const WGDEVICE_F_REPLACE_PEERS = 1;

/** `enum wgpeer_attribute`. */
export const WGPEER_A_PUBLIC_KEY = 1;
export const WGPEER_A_PRESHARED_KEY = 2;
export const WGPEER_A_FLAGS = 3;
export const WGPEER_A_ENDPOINT = 4;
export const WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL = 5;
export const WGPEER_A_LAST_HANDSHAKE_TIME = 6;
export const WGPEER_A_ALLOWEDIPS = 9;
/** `enum wgpeer_flag`. */
export const WGPEER_F_REMOVE_ME = 1;
export const WGPEER_F_REPLACE_ALLOWEDIPS = 2;

/** `enum wgallowedip_attribute`. */
export const WGALLOWEDIP_A_FAMILY = 1;
export const WGALLOWEDIP_A_IPADDR = 2;
export const WGALLOWEDIP_A_CIDR_MASK = 3;

/** `NLA_F_NESTED`, set on nested attributes as `wg` does. */
export const NLA_F_NESTED = 0x8000;
const AF_INET = 2;

/** An IPv4 endpoint or allowed IP: address as uint32 and a port or prefix length. */
export interface WgIPv4 {
  readonly ip: number;
  readonly n: number;
}

/** One peer of a set request (keys raw, 32 bytes). */
export interface WgPeerSet {
  readonly publicKey: Uint8Array;
  readonly remove?: boolean;
  /** 32 bytes; all zero clears it. */
  readonly presharedKey?: Uint8Array;
  /** Address and port. */
  readonly endpoint?: WgIPv4;
  readonly keepalive?: number;
  /** Replace the allowed IPs with these (address, prefix length). */
  readonly allowedIPs?: readonly WgIPv4[];
}

/** A `WG_CMD_SET_DEVICE` request. */
export interface WgDeviceSet {
  readonly ifname: string;
  readonly privateKey?: Uint8Array;
  readonly listenPort?: number;
  readonly replacePeers?: boolean;
  readonly peers: readonly WgPeerSet[];
}

function genlHeader(w: NlWriter, cmd: number, version: number): void {
  const at = w.header(4);
  w.put8(at, cmd);
  w.put8(at + 1, version);
}

/**
 * The body of `CTRL_CMD_GETFAMILY` for a family name.
 *
 * @param name Family name, e.g. `wireguard`.
 * @returns genlmsghdr + `CTRL_ATTR_FAMILY_NAME`.
 */
export function encodeGetFamily(name: string): Uint8Array {
  const w = new NlWriter(64);
  genlHeader(w, CTRL_CMD_GETFAMILY, 1);
  w.string(CTRL_ATTR_FAMILY_NAME, name);
  return w.finish();
}

/**
 * The family id in a `CTRL_CMD_NEWFAMILY` reply body.
 *
 * @param body The reply body (genlmsghdr + attributes).
 * @returns The id.
 * @throws {SyntaxError} When the reply has no `CTRL_ATTR_FAMILY_ID`.
 */
export function decodeFamilyId(body: Uint8Array): number {
  for (const [t, v] of listAttrs(body.subarray(4))) {
    if (t === CTRL_ATTR_FAMILY_ID) return readU16(v);
  }
  throw new SyntaxError(
    "Cannot find CTRL_ATTR_FAMILY_ID in the generic netlink controller's reply",
  );
}

function sockaddrIn(e: WgIPv4): Uint8Array {
  const b = new Uint8Array(16);
  const v = new DataView(b.buffer);
  v.setUint16(0, AF_INET, true);
  v.setUint16(2, e.n, false);
  v.setUint32(4, e.ip >>> 0, false);
  return b;
}

function be32(ip: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, ip >>> 0, false);
  return b;
}

/**
 * The body of `WG_CMD_SET_DEVICE`.
 *
 * @param set Device name, key, port, peers.
 * @returns genlmsghdr (cmd 1, version 1) + attributes, as `wg set` sends them.
 */
export function encodeSetDevice(set: WgDeviceSet): Uint8Array {
  const w = new NlWriter(256);
  genlHeader(w, WG_CMD_SET_DEVICE, WG_GENL_VERSION);
  w.string(WGDEVICE_A_IFNAME, set.ifname);
  if (set.privateKey) w.bytes(WGDEVICE_A_PRIVATE_KEY, set.privateKey);
  if (set.listenPort !== undefined) w.u16(WGDEVICE_A_LISTEN_PORT, set.listenPort);
  if (set.replacePeers) w.u32(WGDEVICE_A_FLAGS, WGDEVICE_F_REPLACE_PEERS);
  if (set.peers.length > 0) {
    w.nest(WGDEVICE_A_PEERS | NLA_F_NESTED, () => {
      for (const p of set.peers) {
        w.nest(0 | NLA_F_NESTED, () => {
          w.bytes(WGPEER_A_PUBLIC_KEY, p.publicKey);
          if (p.remove) {
            w.u32(WGPEER_A_FLAGS, WGPEER_F_REMOVE_ME);
            return;
          }
          if (p.allowedIPs) w.u32(WGPEER_A_FLAGS, WGPEER_F_REPLACE_ALLOWEDIPS);
          if (p.presharedKey) w.bytes(WGPEER_A_PRESHARED_KEY, p.presharedKey);
          if (p.endpoint) w.bytes(WGPEER_A_ENDPOINT, sockaddrIn(p.endpoint));
          if (p.keepalive !== undefined) {
            w.u16(WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL, p.keepalive);
          }
          if (p.allowedIPs && p.allowedIPs.length > 0) {
            w.nest(WGPEER_A_ALLOWEDIPS | NLA_F_NESTED, () => {
              for (const a of p.allowedIPs!) {
                w.nest(0 | NLA_F_NESTED, () => {
                  w.u16(WGALLOWEDIP_A_FAMILY, AF_INET);
                  w.bytes(WGALLOWEDIP_A_IPADDR, be32(a.ip));
                  w.u8(WGALLOWEDIP_A_CIDR_MASK, a.n);
                });
              }
            });
          }
        });
      }
    });
  }
  return w.finish();
}

/**
 * The body of the `WG_CMD_GET_DEVICE` dump request for a device.
 *
 * @param ifname The device.
 * @returns genlmsghdr (cmd 0) + `WGDEVICE_A_IFNAME`.
 */
export function encodeGetDevice(ifname: string): Uint8Array {
  const w = new NlWriter(64);
  genlHeader(w, WG_CMD_GET_DEVICE, WG_GENL_VERSION);
  w.string(WGDEVICE_A_IFNAME, ifname);
  return w.finish();
}

/** A peer as a `WG_CMD_GET_DEVICE` reply has it. */
export interface WgPeerInfo {
  publicKey: Uint8Array;
  presharedKey?: Uint8Array;
  endpoint?: WgIPv4;
  keepalive: number;
  allowedIPs: WgIPv4[];
}

/** A device as `WG_CMD_GET_DEVICE` replies (merged over the dump's messages). */
export interface WgDeviceInfo {
  privateKey?: Uint8Array;
  listenPort: number;
  peers: WgPeerInfo[];
}

/**
 * Decode the bodies of a `WG_CMD_GET_DEVICE` dump (a device with many peers
 * spans several messages; a peer may continue in the next one).
 *
 * @param bodies Reply bodies in order.
 * @returns The device.
 */
export function decodeGetDevice(bodies: readonly Uint8Array[]): WgDeviceInfo {
  const dev: WgDeviceInfo = { listenPort: 0, peers: [] };
  const zero = (k: Uint8Array) => k.every((b) => b === 0);
  for (const body of bodies) {
    for (const [t, v] of listAttrs(body.subarray(4))) {
      if (t === WGDEVICE_A_PRIVATE_KEY && !zero(v)) dev.privateKey = v.slice();
      else if (t === WGDEVICE_A_LISTEN_PORT) dev.listenPort = readU16(v);
      else if (t === WGDEVICE_A_PEERS) {
        for (const [, pv] of listAttrs(v)) {
          let peer: WgPeerInfo | undefined;
          const attrs = listAttrs(pv);
          const key = attrs.find(([a]) => a === WGPEER_A_PUBLIC_KEY)?.[1];
          const last = dev.peers[dev.peers.length - 1];
          if (key && !(last && key.every((b, i) => b === last.publicKey[i]))) {
            peer = { publicKey: key.slice(), keepalive: 0, allowedIPs: [] };
            dev.peers.push(peer);
          } else peer = last;
          if (!peer) continue;
          for (const [a, av] of attrs) {
            if (a === WGPEER_A_PRESHARED_KEY && !zero(av)) peer.presharedKey = av.slice();
            else if (a === WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL) peer.keepalive = readU16(av);
            else if (a === WGPEER_A_ENDPOINT && av.length >= 8 && readU16(av) === AF_INET) {
              const dv = new DataView(av.buffer, av.byteOffset, av.byteLength);
              peer.endpoint = { ip: dv.getUint32(4, false), n: dv.getUint16(2, false) };
            } else if (a === WGPEER_A_ALLOWEDIPS) {
              for (const [, ipv] of listAttrs(av)) {
                const m = new Map(listAttrs(ipv));
                const fam = m.get(WGALLOWEDIP_A_FAMILY);
                const addr = m.get(WGALLOWEDIP_A_IPADDR);
                const mask = m.get(WGALLOWEDIP_A_CIDR_MASK);
                if (!fam || readU16(fam) !== AF_INET || !addr || !mask) continue;
                const dv = new DataView(addr.buffer, addr.byteOffset, 4);
                peer.allowedIPs.push({ ip: dv.getUint32(0, false), n: readU8(mask) });
              }
            }
          }
        }
      }
    }
  }
  return dev;
}
