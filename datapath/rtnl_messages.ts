/**
 * rtnetlink messages: encoders for the requests weft sends (links, VXLAN,
 * bridges, addresses, routes, neighbours, fdb entries, dumps) and decoders
 * for what the kernel answers and broadcasts. Pure functions over bytes.
 *
 * @module
 */

import { formatIPv4, formatIPv4Net } from "../lease/ip.ts";
import {
  NLM_F_APPEND,
  NLM_F_CREATE,
  NLM_F_DUMP,
  NLM_F_EXCL,
  NLM_F_REPLACE,
  type NlMessage,
  NlWriter,
  parseAttrs,
  readBe16,
  readIPv4,
  readMac,
  readString,
  readU32,
  readU8,
} from "./nl_codec.ts";
import {
  type Address,
  type BridgeSpec,
  type DatapathEvent,
  type FdbEntry,
  type Link,
  type LinkChanges,
  type Neighbour,
  NUD_PERMANENT,
  type Route,
  RT_SCOPE_LINK,
  RT_SCOPE_UNIVERSE,
  RT_TABLE_MAIN,
  RTN_UNICAST,
  RTPROT_BOOT,
  type VxlanInfo,
  type VxlanSpec,
} from "./types.ts";

// Message types.
export const RTM_NEWLINK = 16;
export const RTM_DELLINK = 17;
export const RTM_GETLINK = 18;
export const RTM_NEWADDR = 20;
export const RTM_DELADDR = 21;
export const RTM_GETADDR = 22;
export const RTM_NEWROUTE = 24;
export const RTM_DELROUTE = 25;
export const RTM_GETROUTE = 26;
export const RTM_NEWNEIGH = 28;
export const RTM_DELNEIGH = 29;
export const RTM_GETNEIGH = 30;

// Address families.
export const AF_UNSPEC = 0;
export const AF_INET = 2;
export const AF_BRIDGE = 7;

// Link attributes.
export const IFLA_ADDRESS = 1;
export const IFLA_IFNAME = 3;
export const IFLA_MTU = 4;
export const IFLA_MASTER = 10;
export const IFLA_LINKINFO = 18;
export const IFLA_INFO_KIND = 1;
export const IFLA_INFO_DATA = 2;
export const IFLA_VXLAN_ID = 1;
export const IFLA_VXLAN_LINK = 3;
export const IFLA_VXLAN_LOCAL = 4;
export const IFLA_VXLAN_LEARNING = 7;
export const IFLA_VXLAN_PORT = 15;
export const IFLA_VXLAN_GBP = 23;
export const IFF_UP = 0x1;

// Address attributes.
export const IFA_ADDRESS = 1;
export const IFA_LOCAL = 2;

// Route attributes and flags.
export const RTA_DST = 1;
export const RTA_OIF = 4;
export const RTA_GATEWAY = 5;
export const RTA_PRIORITY = 6;
export const RTA_TABLE = 15;
export const RTNH_F_ONLINK = 0x4;
export const RTM_F_CLONED = 0x200;
export const RT_SCOPE_NOWHERE = 255;

// Neighbour attributes and flags.
export const NDA_DST = 1;
export const NDA_LLADDR = 2;
export const NTF_SELF = 0x2;

// Multicast groups (bit masks for sockaddr_nl.nl_groups).
export const RTMGRP_LINK = 0x1;
export const RTMGRP_NEIGH = 0x4;
export const RTMGRP_IPV4_IFADDR = 0x10;
export const RTMGRP_IPV4_ROUTE = 0x40;

/** The groups `Datapath.events()` subscribes to. */
export const EVENT_GROUPS = RTMGRP_LINK | RTMGRP_NEIGH | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE;

/**
 * One request, before the socket adds the header: message type, `NLM_F_*`
 * flags other than REQUEST/ACK, the body, and a description for errors
 * (built only when needed: batches hold thousands of requests).
 */
export interface NlRequest {
  readonly type: number;
  readonly flags: number;
  readonly body: Uint8Array;
  describe(): string;
}

// One scratch writer: encoders run to completion synchronously, so sharing it is safe.
const w = new NlWriter(1024);

// ---- family headers ----------------------------------------------------------

function ifinfomsg(index: number, flags = 0, change = 0, family = AF_UNSPEC): void {
  const v = w.header(16);
  v.setUint8(0, family);
  v.setInt32(4, index, true);
  v.setUint32(8, flags, true);
  v.setUint32(12, change, true);
}

function ifaddrmsg(prefixLen: number, index: number, scope = 0): void {
  const v = w.header(8);
  v.setUint8(0, AF_INET);
  v.setUint8(1, prefixLen);
  v.setUint8(3, scope);
  v.setUint32(4, index, true);
}

interface RtmsgFields {
  dstLen: number;
  table: number;
  protocol: number;
  scope: number;
  type: number;
  flags: number;
}

function rtmsg(f: RtmsgFields): void {
  const v = w.header(12);
  v.setUint8(0, AF_INET);
  v.setUint8(1, f.dstLen);
  v.setUint8(4, f.table < 256 ? f.table : 0);
  v.setUint8(5, f.protocol);
  v.setUint8(6, f.scope);
  v.setUint8(7, f.type);
  v.setUint32(8, f.flags, true);
}

function ndmsg(family: number, index: number, state: number, flags: number, type = 0): void {
  const v = w.header(12);
  v.setUint8(0, family);
  v.setInt32(4, index, true);
  v.setUint16(8, state, true);
  v.setUint8(10, flags);
  v.setUint8(11, type);
}

// ---- links -------------------------------------------------------------------

/** `ip link show <name|index>`: one link (the reply is an RTM_NEWLINK). */
export function getLinkRequest(nameOrIndex: string | number): NlRequest {
  if (typeof nameOrIndex === "number") {
    ifinfomsg(nameOrIndex);
    return {
      type: RTM_GETLINK,
      flags: 0,
      body: w.finish(),
      describe: () => `RTM_GETLINK index ${nameOrIndex}`,
    };
  }
  ifinfomsg(0);
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
  ifinfomsg(0);
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

function commonLinkAttrs(spec: { name: string; mtu?: number; mac?: string }): void {
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
  checkName(spec.name);
  if (!Number.isInteger(spec.vni) || spec.vni < 0 || spec.vni > 0xffffff) {
    throw new RangeError(`Cannot create vxlan: VNI must be 0..16777215: current value is ${spec.vni}`);
  }
  if (!Number.isInteger(spec.port) || spec.port < 1 || spec.port > 65535) {
    throw new RangeError(`Cannot create vxlan: port must be 1..65535: current value is ${spec.port}`);
  }
  const up = spec.up ? IFF_UP : 0;
  ifinfomsg(0, up, up);
  commonLinkAttrs(spec);
  w.nest(IFLA_LINKINFO, () => {
    w.string(IFLA_INFO_KIND, "vxlan");
    w.nest(IFLA_INFO_DATA, () => {
      w.u32(IFLA_VXLAN_ID, spec.vni);
      if (spec.link !== undefined && spec.link > 0) w.u32(IFLA_VXLAN_LINK, spec.link);
      if (spec.local !== undefined) w.ipv4(IFLA_VXLAN_LOCAL, spec.local);
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
        spec.local !== undefined ? `, local ${formatIPv4(spec.local)}` : ""
      }${spec.link ? `, dev ${spec.link}` : ""}${spec.learning ? "" : ", nolearning"}${
        spec.gbp ? ", gbp" : ""
      }${spec.mac ? `, address ${spec.mac}` : ""}${spec.mtu ? `, mtu ${spec.mtu}` : ""})`,
  };
}

/** `ip link add <name> type bridge`. */
export function createBridgeRequest(spec: BridgeSpec): NlRequest {
  checkName(spec.name);
  const up = spec.up ? IFF_UP : 0;
  ifinfomsg(0, up, up);
  commonLinkAttrs(spec);
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
  let flags = 0, change = 0;
  if (changes.up !== undefined) {
    change = IFF_UP;
    flags = changes.up ? IFF_UP : 0;
  }
  ifinfomsg(index, flags, change);
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
  ifinfomsg(index);
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
      const local = d.get(IFLA_VXLAN_LOCAL), port = d.get(IFLA_VXLAN_PORT);
      const learning = d.get(IFLA_VXLAN_LEARNING);
      vxlan = {
        vni: id ? readU32(id) : 0,
        local: local && local.length === 4 ? readIPv4(local) : null,
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

// ---- addresses ---------------------------------------------------------------

function describeAddr(a: Address): string {
  return `${formatIPv4(a.ip)}/${a.prefixLen} dev ${a.index}`;
}

/** `ip addr replace <ip>/<len> dev <index>`. */
export function addAddressRequest(a: Address): NlRequest {
  ifaddrmsg(a.prefixLen, a.index);
  w.ipv4(IFA_LOCAL, a.ip).ipv4(IFA_ADDRESS, a.ip);
  return {
    type: RTM_NEWADDR,
    flags: NLM_F_CREATE | NLM_F_REPLACE,
    body: w.finish(),
    describe: () => `RTM_NEWADDR ${describeAddr(a)}`,
  };
}

/** `ip addr del <ip>/<len> dev <index>`. */
export function deleteAddressRequest(a: Address): NlRequest {
  ifaddrmsg(a.prefixLen, a.index);
  w.ipv4(IFA_LOCAL, a.ip).ipv4(IFA_ADDRESS, a.ip);
  return {
    type: RTM_DELADDR,
    flags: 0,
    body: w.finish(),
    describe: () => `RTM_DELADDR ${describeAddr(a)}`,
  };
}

/** Dump IPv4 addresses. */
export function dumpAddressesRequest(): NlRequest {
  ifaddrmsg(0, 0);
  return {
    type: RTM_GETADDR,
    flags: NLM_F_DUMP,
    body: w.finish(),
    describe: () => "RTM_GETADDR dump",
  };
}

/**
 * Decode an RTM_NEWADDR/RTM_DELADDR body; null for non-IPv4 addresses.
 *
 * @throws {SyntaxError} When the body is too short.
 */
export function decodeAddress(body: Uint8Array): Address | null {
  if (body.length < 8) throw new SyntaxError(`Cannot decode ifaddrmsg: ${body.length} bytes`);
  if (body[0] !== AF_INET) return null;
  const v = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const a = parseAttrs(body.subarray(8));
  const ip = a.get(IFA_LOCAL) ?? a.get(IFA_ADDRESS);
  if (!ip || ip.length !== 4) return null;
  return { index: v.getUint32(4, true), ip: readIPv4(ip), prefixLen: body[1] };
}

// ---- routes ------------------------------------------------------------------

/** Describe a route the way `ip route` prints it. */
export function describeRoute(r: Route): string {
  let s = formatIPv4Net(r.dst);
  if (r.gateway !== undefined && r.gateway !== null) s += ` via ${formatIPv4(r.gateway)}`;
  if (r.index !== undefined && r.index !== null) s += ` dev ${r.index}`;
  if (r.onlink) s += " onlink";
  if (r.table !== undefined && r.table !== RT_TABLE_MAIN) s += ` table ${r.table}`;
  if (r.metric) s += ` metric ${r.metric}`;
  return s;
}

function routeAttrs(r: Route, table: number): void {
  if (r.dst.prefixLen > 0) w.ipv4(RTA_DST, r.dst.ip);
  if (r.gateway !== undefined && r.gateway !== null) w.ipv4(RTA_GATEWAY, r.gateway);
  if (r.index !== undefined && r.index !== null) w.u32(RTA_OIF, r.index);
  if (r.metric) w.u32(RTA_PRIORITY, r.metric);
  if (table >= 256) w.u32(RTA_TABLE, table);
}

/** `ip route replace <dst> [via <gw>] [dev <index>] [onlink] [table] [metric]`. */
export function replaceRouteRequest(r: Route): NlRequest {
  const table = r.table ?? RT_TABLE_MAIN;
  const hasGw = r.gateway !== undefined && r.gateway !== null;
  rtmsg({
    dstLen: r.dst.prefixLen,
    table,
    protocol: r.protocol ?? RTPROT_BOOT,
    scope: r.scope ?? (hasGw ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK),
    type: r.type ?? RTN_UNICAST,
    flags: r.onlink ? RTNH_F_ONLINK : 0,
  });
  routeAttrs(r, table);
  return {
    type: RTM_NEWROUTE,
    flags: NLM_F_CREATE | NLM_F_REPLACE,
    body: w.finish(),
    describe: () => `RTM_NEWROUTE replace ${describeRoute(r)}`,
  };
}

/** `ip route del <dst> [via <gw>] [dev <index>] [table]`: matches any scope/protocol. */
export function deleteRouteRequest(r: Route): NlRequest {
  const table = r.table ?? RT_TABLE_MAIN;
  rtmsg({ dstLen: r.dst.prefixLen, table, protocol: 0, scope: RT_SCOPE_NOWHERE, type: 0, flags: 0 });
  routeAttrs(r, table);
  return {
    type: RTM_DELROUTE,
    flags: 0,
    body: w.finish(),
    describe: () => `RTM_DELROUTE ${describeRoute(r)}`,
  };
}

/** Dump IPv4 routes (all tables). */
export function dumpRoutesRequest(): NlRequest {
  rtmsg({ dstLen: 0, table: 0, protocol: 0, scope: 0, type: 0, flags: 0 });
  return {
    type: RTM_GETROUTE,
    flags: NLM_F_DUMP,
    body: w.finish(),
    describe: () => "RTM_GETROUTE dump",
  };
}

/**
 * Decode an RTM_NEWROUTE/RTM_DELROUTE body; null for non-IPv4 and cloned (cache) routes.
 *
 * @throws {SyntaxError} When the body is too short.
 */
export function decodeRoute(body: Uint8Array): Route | null {
  if (body.length < 12) throw new SyntaxError(`Cannot decode rtmsg: ${body.length} bytes`);
  if (body[0] !== AF_INET) return null;
  const v = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const flags = v.getUint32(8, true);
  if (flags & RTM_F_CLONED) return null;
  const a = parseAttrs(body.subarray(12));
  const dst = a.get(RTA_DST), gw = a.get(RTA_GATEWAY), oif = a.get(RTA_OIF);
  const prio = a.get(RTA_PRIORITY), table = a.get(RTA_TABLE);
  return {
    dst: { ip: dst ? readIPv4(dst) : 0, prefixLen: body[1] },
    gateway: gw && gw.length === 4 ? readIPv4(gw) : null,
    index: oif ? readU32(oif) : null,
    onlink: (flags & RTNH_F_ONLINK) !== 0,
    table: table ? readU32(table) : body[4],
    protocol: body[5],
    scope: body[6],
    type: body[7],
    metric: prio ? readU32(prio) : 0,
  };
}

// ---- neighbours and fdb ------------------------------------------------------

/** `ip neigh replace <ip> lladdr <mac> dev <index> nud permanent`. */
export function replaceNeighbourRequest(n: Neighbour): NlRequest {
  if (n.mac === null) {
    throw new TypeError(
      `Cannot replace neighbour ${formatIPv4(n.ip)} dev ${n.index}: mac is null; give a MAC address`,
    );
  }
  ndmsg(AF_INET, n.index, n.state ?? NUD_PERMANENT, 0, RTN_UNICAST);
  w.ipv4(NDA_DST, n.ip).mac(NDA_LLADDR, n.mac);
  return {
    type: RTM_NEWNEIGH,
    flags: NLM_F_CREATE | NLM_F_REPLACE,
    body: w.finish(),
    describe: () => `RTM_NEWNEIGH replace ${formatIPv4(n.ip)} lladdr ${n.mac} dev ${n.index}`,
  };
}

/** `ip neigh del <ip> dev <index>`. */
export function deleteNeighbourRequest(n: Neighbour): NlRequest {
  ndmsg(AF_INET, n.index, 0, 0);
  w.ipv4(NDA_DST, n.ip);
  return {
    type: RTM_DELNEIGH,
    flags: 0,
    body: w.finish(),
    describe: () => `RTM_DELNEIGH ${formatIPv4(n.ip)} dev ${n.index}`,
  };
}

/** Dump IPv4 neighbours. */
export function dumpNeighboursRequest(): NlRequest {
  ndmsg(AF_INET, 0, 0, 0);
  return {
    type: RTM_GETNEIGH,
    flags: NLM_F_DUMP,
    body: w.finish(),
    describe: () => "RTM_GETNEIGH dump",
  };
}

function describeFdb(e: FdbEntry): string {
  return `${e.mac} dev ${e.index}${e.dst !== null ? ` dst ${formatIPv4(e.dst)}` : ""} self`;
}

function fdbAttrs(e: FdbEntry): void {
  w.mac(NDA_LLADDR, e.mac);
  if (e.dst !== null) w.ipv4(NDA_DST, e.dst);
}

/** `bridge fdb append|replace <mac> dev <index> dst <ip> self permanent`. */
export function addFdbRequest(e: FdbEntry, mode: "append" | "replace"): NlRequest {
  ndmsg(AF_BRIDGE, e.index, e.state ?? NUD_PERMANENT, NTF_SELF);
  fdbAttrs(e);
  return {
    type: RTM_NEWNEIGH,
    flags: NLM_F_CREATE | (mode === "append" ? NLM_F_APPEND : NLM_F_REPLACE),
    body: w.finish(),
    describe: () => `RTM_NEWNEIGH fdb ${mode} ${describeFdb(e)}`,
  };
}

/** `bridge fdb del <mac> dev <index> dst <ip> self`. */
export function deleteFdbRequest(e: FdbEntry): NlRequest {
  ndmsg(AF_BRIDGE, e.index, 0, NTF_SELF);
  fdbAttrs(e);
  return {
    type: RTM_DELNEIGH,
    flags: 0,
    body: w.finish(),
    describe: () => `RTM_DELNEIGH fdb ${describeFdb(e)}`,
  };
}

/** Dump the bridge forwarding database (all devices). */
export function dumpFdbRequest(): NlRequest {
  ndmsg(AF_BRIDGE, 0, 0, 0);
  return {
    type: RTM_GETNEIGH,
    flags: NLM_F_DUMP,
    body: w.finish(),
    describe: () => "RTM_GETNEIGH fdb dump",
  };
}

/** A decoded neighbour message: an IPv4 neighbour, an fdb entry, or neither. */
export type DecodedNeigh =
  | { kind: "neighbour"; neighbour: Neighbour }
  | { kind: "fdb"; fdb: FdbEntry }
  | null;

/**
 * Decode an RTM_NEWNEIGH/RTM_DELNEIGH body into an IPv4 neighbour
 * (AF_INET) or an fdb entry (AF_BRIDGE with NTF_SELF); null otherwise.
 *
 * @throws {SyntaxError} When the body is too short.
 */
export function decodeNeigh(body: Uint8Array): DecodedNeigh {
  if (body.length < 12) throw new SyntaxError(`Cannot decode ndmsg: ${body.length} bytes`);
  const v = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const family = body[0];
  const index = v.getInt32(4, true);
  const state = v.getUint16(8, true);
  const flags = body[10];
  const a = parseAttrs(body.subarray(12));
  const dst = a.get(NDA_DST), ll = a.get(NDA_LLADDR);
  if (family === AF_INET) {
    if (!dst || dst.length !== 4) return null;
    return {
      kind: "neighbour",
      neighbour: { index, ip: readIPv4(dst), mac: ll && ll.length === 6 ? readMac(ll) : null, state },
    };
  }
  if (family === AF_BRIDGE && flags & NTF_SELF) {
    if (!ll || ll.length !== 6) return null;
    return {
      kind: "fdb",
      fdb: { index, mac: readMac(ll), dst: dst && dst.length === 4 ? readIPv4(dst) : null, state },
    };
  }
  return null;
}

/**
 * Turn a multicast notification into a {@link DatapathEvent}; null for
 * messages weft does not report (other families, cloned routes, …).
 *
 * @param msg A message received on a socket subscribed to {@link EVENT_GROUPS}.
 * @returns The event, or null.
 * @throws {SyntaxError} When the body is malformed.
 */
export function decodeEvent(msg: NlMessage): DatapathEvent | null {
  switch (msg.type) {
    case RTM_NEWLINK:
    case RTM_DELLINK:
      return {
        kind: "link",
        action: msg.type === RTM_NEWLINK ? "new" : "del",
        link: decodeLink(msg.body),
      };
    case RTM_NEWADDR:
    case RTM_DELADDR: {
      const address = decodeAddress(msg.body);
      return address && { kind: "address", action: msg.type === RTM_NEWADDR ? "new" : "del", address };
    }
    case RTM_NEWROUTE:
    case RTM_DELROUTE: {
      const route = decodeRoute(msg.body);
      return route && { kind: "route", action: msg.type === RTM_NEWROUTE ? "new" : "del", route };
    }
    case RTM_NEWNEIGH:
    case RTM_DELNEIGH: {
      const d = decodeNeigh(msg.body);
      const action = msg.type === RTM_NEWNEIGH ? "new" : "del";
      if (d?.kind === "neighbour") return { kind: "neighbour", action, neighbour: d.neighbour };
      if (d?.kind === "fdb") return { kind: "fdb", action, fdb: d.fdb };
      return null;
    }
    default:
      return null;
  }
}
