/**
 * rtnetlink link messages: get/dump, create VXLAN devices and bridges, set
 * state/MTU/MAC/master, delete, and the decoder for what the kernel answers
 * and broadcasts.
 *
 * @module
 */

import { formatIP } from "../../core/ip.ts";
import {
  NLM_F_CREATE,
  NLM_F_DUMP,
  NLM_F_EXCL,
  NlWriter,
  parseAttrs,
  readBe16,
  readIPv4,
  readIPv6,
  readMac,
  readString,
  readU32,
  readU8,
} from "./codec.ts";
import { AF_UNSPEC, type NlRequest, scratch } from "./request.ts";
import type { BridgeSpec, Link, LinkChanges, VxlanInfo, VxlanSpec } from "./kernel.ts";

/** rtnetlink message type `RTM_NEWLINK`. */
export const RTM_NEWLINK = 16;
/** rtnetlink message type `RTM_DELLINK`. */
export const RTM_DELLINK = 17;
/** rtnetlink message type `RTM_GETLINK`. */
export const RTM_GETLINK = 18;

/** Link attribute `IFLA_ADDRESS`. */
export const IFLA_ADDRESS = 1;
/** Link attribute `IFLA_IFNAME`. */
export const IFLA_IFNAME = 3;
/** Link attribute `IFLA_MTU`. */
export const IFLA_MTU = 4;
/** Link attribute `IFLA_MASTER`. */
export const IFLA_MASTER = 10;
/** Link attribute `IFLA_LINKINFO`. */
export const IFLA_LINKINFO = 18;
/** Link-info attribute (inside IFLA_LINKINFO) `IFLA_INFO_KIND`. */
export const IFLA_INFO_KIND = 1;
/** Link-info attribute (inside IFLA_LINKINFO) `IFLA_INFO_DATA`. */
export const IFLA_INFO_DATA = 2;
/** VXLAN link attribute (inside IFLA_INFO_DATA) `IFLA_VXLAN_ID`. */
export const IFLA_VXLAN_ID = 1;
/** VXLAN link attribute (inside IFLA_INFO_DATA) `IFLA_VXLAN_LINK`. */
export const IFLA_VXLAN_LINK = 3;
/** VXLAN link attribute (inside IFLA_INFO_DATA) `IFLA_VXLAN_LOCAL`. */
export const IFLA_VXLAN_LOCAL = 4;
/** VXLAN link attribute (inside IFLA_INFO_DATA) `IFLA_VXLAN_LEARNING`. */
export const IFLA_VXLAN_LEARNING = 7;
/** VXLAN link attribute (inside IFLA_INFO_DATA) `IFLA_VXLAN_PORT`. */
export const IFLA_VXLAN_PORT = 15;
/** VXLAN link attribute (inside IFLA_INFO_DATA) `IFLA_VXLAN_LOCAL6`: an IPv6 source. */
export const IFLA_VXLAN_LOCAL6 = 17;
/** VXLAN link attribute (inside IFLA_INFO_DATA) `IFLA_VXLAN_GBP`. */
export const IFLA_VXLAN_GBP = 23;
/** Link flag `IFF_UP`. */
export const IFF_UP = 0x1;

function ifinfomsg(w: NlWriter, index: number, flags = 0, change = 0, family = AF_UNSPEC): void {
  const at = w.header(16);
  w.put8(at, family);
  w.put32(at + 4, index);
  w.put32(at + 8, flags);
  w.put32(at + 12, change);
}

/** `ip link show <name|index>`: one link (the reply is an RTM_NEWLINK). */
export function getLinkRequest(nameOrIndex: string | number): NlRequest {
  const w = scratch;
  if (typeof nameOrIndex === "number") {
    ifinfomsg(w, nameOrIndex);
    return {
      type: RTM_GETLINK,
      flags: 0,
      body: w.finish(),
      describe: () => `RTM_GETLINK index ${nameOrIndex}`,
    };
  }
  ifinfomsg(w, 0);
  w.string(IFLA_IFNAME, nameOrIndex);
  return {
    type: RTM_GETLINK,
    flags: 0,
    body: w.finish(),
    describe: () => `RTM_GETLINK ${nameOrIndex}`,
  };
}

/** Dump every link. */
export function dumpLinksRequest(): NlRequest {
  const w = scratch;
  ifinfomsg(w, 0);
  return {
    type: RTM_GETLINK,
    flags: NLM_F_DUMP,
    body: w.finish(),
    describe: () => "RTM_GETLINK dump",
  };
}

function checkName(name: string): void {
  if (name.length === 0 || name.length > 15 || /[\s/]/.test(name)) {
    throw new RangeError(
      `Cannot create link: name must be 1-15 characters without spaces or '/': current value is ${
        JSON.stringify(name)
      }`,
    );
  }
}

function commonLinkAttrs(w: NlWriter, spec: { name: string; mtu?: number; mac?: string }): void {
  w.string(IFLA_IFNAME, spec.name);
  if (spec.mtu !== undefined) w.u32(IFLA_MTU, spec.mtu);
  if (spec.mac !== undefined) w.mac(IFLA_ADDRESS, spec.mac);
}

/**
 * `ip link add <name> type vxlan id <vni> dstport <port> [local] [dev] [nolearning] [gbp]`.
 *
 * @throws {RangeError} When the name, VNI or port is out of range.
 */
export function createVxlanRequest(spec: VxlanSpec): NlRequest {
  const w = scratch;
  checkName(spec.name);
  if (!Number.isInteger(spec.vni) || spec.vni < 0 || spec.vni > 0xffffff) {
    throw new RangeError(
      `Cannot create vxlan: VNI must be 0..16777215: current value is ${spec.vni}`,
    );
  }
  if (!Number.isInteger(spec.port) || spec.port < 1 || spec.port > 65535) {
    throw new RangeError(
      `Cannot create vxlan: port must be 1..65535: current value is ${spec.port}`,
    );
  }
  const up = spec.up ? IFF_UP : 0;
  ifinfomsg(w, 0, up, up);
  commonLinkAttrs(w, spec);
  w.nest(IFLA_LINKINFO, () => {
    w.string(IFLA_INFO_KIND, "vxlan");
    w.nest(IFLA_INFO_DATA, () => {
      w.u32(IFLA_VXLAN_ID, spec.vni);
      if (spec.link !== undefined && spec.link > 0) w.u32(IFLA_VXLAN_LINK, spec.link);
      if (typeof spec.local === "bigint") w.ipv6(IFLA_VXLAN_LOCAL6, spec.local);
      else if (spec.local !== undefined) w.ipv4(IFLA_VXLAN_LOCAL, spec.local);
      w.be16(IFLA_VXLAN_PORT, spec.port);
      w.u8(IFLA_VXLAN_LEARNING, spec.learning ? 1 : 0);
      if (spec.gbp) w.flag(IFLA_VXLAN_GBP);
    });
  });
  return {
    type: RTM_NEWLINK,
    flags: NLM_F_CREATE | NLM_F_EXCL,
    body: w.finish(),
    describe: () =>
      `RTM_NEWLINK create vxlan ${spec.name} (vni ${spec.vni}, port ${spec.port}${
        spec.local !== undefined ? `, local ${formatIP(spec.local)}` : ""
      }${spec.link ? `, dev ${spec.link}` : ""}${spec.learning ? "" : ", nolearning"}${
        spec.gbp ? ", gbp" : ""
      }${spec.mac ? `, address ${spec.mac}` : ""}${spec.mtu ? `, mtu ${spec.mtu}` : ""})`,
  };
}

/** `ip link add <name> type bridge`. */
export function createBridgeRequest(spec: BridgeSpec): NlRequest {
  const w = scratch;
  checkName(spec.name);
  const up = spec.up ? IFF_UP : 0;
  ifinfomsg(w, 0, up, up);
  commonLinkAttrs(w, spec);
  w.nest(IFLA_LINKINFO, () => w.string(IFLA_INFO_KIND, "bridge"));
  return {
    type: RTM_NEWLINK,
    flags: NLM_F_CREATE | NLM_F_EXCL,
    body: w.finish(),
    describe: () => `RTM_NEWLINK create bridge ${spec.name}`,
  };
}

/** `ip link set <index> [up|down] [mtu] [address] [master]`. */
export function setLinkRequest(index: number, changes: LinkChanges): NlRequest {
  const w = scratch;
  let flags = 0, change = 0;
  if (changes.up !== undefined) {
    change = IFF_UP;
    flags = changes.up ? IFF_UP : 0;
  }
  ifinfomsg(w, index, flags, change);
  if (changes.mtu !== undefined) w.u32(IFLA_MTU, changes.mtu);
  if (changes.mac !== undefined) w.mac(IFLA_ADDRESS, changes.mac);
  if (changes.master !== undefined) w.u32(IFLA_MASTER, changes.master);
  return {
    type: RTM_NEWLINK,
    flags: 0,
    body: w.finish(),
    describe: () => {
      const parts: string[] = [];
      if (changes.mtu !== undefined) parts.push(`mtu ${changes.mtu}`);
      if (changes.mac !== undefined) parts.push(`address ${changes.mac}`);
      if (changes.master !== undefined) {
        parts.push(changes.master ? `master ${changes.master}` : "nomaster");
      }
      if (changes.up !== undefined) parts.push(changes.up ? "up" : "down");
      return `RTM_NEWLINK set dev ${index} ${parts.join(" ")}`.trimEnd();
    },
  };
}

/** `ip link del <index>`. */
export function deleteLinkRequest(index: number): NlRequest {
  const w = scratch;
  ifinfomsg(w, index);
  return {
    type: RTM_DELLINK,
    flags: 0,
    body: w.finish(),
    describe: () => `RTM_DELLINK dev ${index}`,
  };
}

/**
 * Decode an RTM_NEWLINK/RTM_DELLINK body.
 *
 * @throws {SyntaxError} When the body is too short.
 */
export function decodeLink(body: Uint8Array): Link {
  if (body.length < 16) throw new SyntaxError(`Cannot decode ifinfomsg: ${body.length} bytes`);
  const v = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const index = v.getInt32(4, true);
  const flags = v.getUint32(8, true);
  const a = parseAttrs(body.subarray(16));
  let kind: string | null = null;
  let vxlan: VxlanInfo | null = null;
  const info = a.get(IFLA_LINKINFO);
  if (info) {
    const ia = parseAttrs(info);
    const k = ia.get(IFLA_INFO_KIND);
    if (k) kind = readString(k);
    const data = ia.get(IFLA_INFO_DATA);
    if (kind === "vxlan" && data) {
      const d = parseAttrs(data);
      const id = d.get(IFLA_VXLAN_ID), link = d.get(IFLA_VXLAN_LINK);
      const local = d.get(IFLA_VXLAN_LOCAL), local6 = d.get(IFLA_VXLAN_LOCAL6);
      const port = d.get(IFLA_VXLAN_PORT);
      const learning = d.get(IFLA_VXLAN_LEARNING);
      vxlan = {
        vni: id ? readU32(id) : 0,
        local: local && local.length === 4
          ? readIPv4(local)
          : local6 && local6.length === 16
          ? readIPv6(local6)
          : null,
        link: link ? readU32(link) || null : null,
        port: port ? readBe16(port) : 0,
        learning: learning ? readU8(learning) !== 0 : false,
        gbp: d.has(IFLA_VXLAN_GBP),
      };
    }
  }
  const name = a.get(IFLA_IFNAME), mtu = a.get(IFLA_MTU), mac = a.get(IFLA_ADDRESS);
  const master = a.get(IFLA_MASTER);
  return {
    index,
    name: name ? readString(name) : "",
    kind,
    mtu: mtu ? readU32(mtu) : 0,
    mac: mac && mac.length === 6 ? readMac(mac) : null,
    up: (flags & IFF_UP) !== 0,
    flags,
    master: master ? readU32(master) || null : null,
    vxlan,
  };
}
