/**
 * rtnetlink messages: encoders for the requests weft sends (links, VXLAN,
 * bridges, addresses, routes, neighbours, fdb entries, dumps) and decoders
 * for what the kernel answers and broadcasts. Pure functions over bytes.
 *
 * @module
 */

import { formatIPv4, formatIPv4Net } from "../../core/ip.ts";
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
} from "./codec.ts";
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
} from "../types.ts";

/** rtnetlink message type `RTM_NEWLINK`. */
export const RTM_NEWLINK = 16;
/** rtnetlink message type `RTM_DELLINK`. */
export const RTM_DELLINK = 17;
/** rtnetlink message type `RTM_GETLINK`. */
export const RTM_GETLINK = 18;
/** rtnetlink message type `RTM_NEWADDR`. */
export const RTM_NEWADDR = 20;
/** rtnetlink message type `RTM_DELADDR`. */
export const RTM_DELADDR = 21;
/** rtnetlink message type `RTM_GETADDR`. */
export const RTM_GETADDR = 22;
/** rtnetlink message type `RTM_NEWROUTE`. */
export const RTM_NEWROUTE = 24;
/** rtnetlink message type `RTM_DELROUTE`. */
export const RTM_DELROUTE = 25;
/** rtnetlink message type `RTM_GETROUTE`. */
export const RTM_GETROUTE = 26;
/** rtnetlink message type `RTM_NEWNEIGH`. */
export const RTM_NEWNEIGH = 28;
/** rtnetlink message type `RTM_DELNEIGH`. */
export const RTM_DELNEIGH = 29;
/** rtnetlink message type `RTM_GETNEIGH`. */
export const RTM_GETNEIGH = 30;

/** Address family `AF_UNSPEC`. */
export const AF_UNSPEC = 0;
/** Address family `AF_INET`. */
export const AF_INET = 2;
/** Address family `AF_BRIDGE`. */
export const AF_BRIDGE = 7;

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
/** VXLAN link attribute (inside IFLA_INFO_DATA) `IFLA_VXLAN_GBP`. */
export const IFLA_VXLAN_GBP = 23;
/** Link flag `IFF_UP`. */
export const IFF_UP = 0x1;

/** Address attribute `IFA_ADDRESS`. */
export const IFA_ADDRESS = 1;
/** Address attribute `IFA_LOCAL`. */
export const IFA_LOCAL = 2;

/** Route attribute `RTA_DST`. */
export const RTA_DST = 1;
/** Route attribute `RTA_OIF`. */
export const RTA_OIF = 4;
/** Route attribute `RTA_GATEWAY`. */
export const RTA_GATEWAY = 5;
/** Route attribute `RTA_PRIORITY`. */
export const RTA_PRIORITY = 6;
/** Route attribute `RTA_TABLE`. */
export const RTA_TABLE = 15;
/** Route next-hop flag `RTNH_F_ONLINK`. */
export const RTNH_F_ONLINK = 0x4;
/** Route flag: a cached clone, not a configured route `RTM_F_CLONED`. */
export const RTM_F_CLONED = 0x200;
/** Route scope `RT_SCOPE_NOWHERE`. */
export const RT_SCOPE_NOWHERE = 255;

/** Neighbour attribute `NDA_DST`. */
export const NDA_DST = 1;
/** Neighbour attribute `NDA_LLADDR`. */
export const NDA_LLADDR = 2;
/** Neighbour flag `NTF_SELF`. */
export const NTF_SELF = 0x2;

/** Multicast group bit `RTMGRP_LINK`. */
export const RTMGRP_LINK = 0x1;
/** Multicast group bit `RTMGRP_NEIGH`. */
export const RTMGRP_NEIGH = 0x4;
/** Multicast group bit `RTMGRP_IPV4_IFADDR`. */
export const RTMGRP_IPV4_IFADDR = 0x10;
/** Multicast group bit `RTMGRP_IPV4_ROUTE`. */
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

/**
 * One kind of request over many items, for batches: appends the whole
 * message for an item straight into the send buffer, and describes an item
 * for error messages only when one fails.
 */
export interface BatchEncoder<T> {
  /** Append the message for `item` with sequence number `seq` (and NLM_F_REQUEST). */
  encode(w: NlWriter, item: T, seq: number): void;
  /** What the request for `item` asks, e.g. `RTM_NEWROUTE replace 10.5.2.0/24 …`. */
  describe(item: T): string;
}

interface Kind<T> {
  readonly type: number;
  readonly flags: number;
  body(w: NlWriter, item: T): void;
  describe(item: T): string;
}

const NLM_F_REQUEST = 0x1;

function batchEncoder<T>(k: Kind<T>): BatchEncoder<T> {
  return {
    encode: (w, item, seq) =>
      w.message(k.type, k.flags | NLM_F_REQUEST, seq, () => k.body(w, item)),
    describe: k.describe,
  };
}

// One scratch writer for single requests: they are encoded synchronously, so sharing it is safe.
const scratch = new NlWriter(1024);

function request<T>(k: Kind<T>, item: T): NlRequest {
  k.body(scratch, item);
  return { type: k.type, flags: k.flags, body: scratch.finish(), describe: () => k.describe(item) };
}

/** Encoder for pre-built requests (of any type), for {@link NlRequest} batches. */
export const requestEncoder: BatchEncoder<NlRequest> = {
  encode: (w, r, seq) => w.message(r.type, r.flags | NLM_F_REQUEST, seq, () => w.raw(r.body)),
  describe: (r) => r.describe(),
};

// ---- family headers ----------------------------------------------------------

function ifinfomsg(w: NlWriter, index: number, flags = 0, change = 0, family = AF_UNSPEC): void {
  const at = w.header(16);
  w.put8(at, family);
  w.put32(at + 4, index);
  w.put32(at + 8, flags);
  w.put32(at + 12, change);
}

function ifaddrmsg(w: NlWriter, prefixLen: number, index: number, scope = 0): void {
  const at = w.header(8);
  w.put8(at, AF_INET);
  w.put8(at + 1, prefixLen);
  w.put8(at + 3, scope);
  w.put32(at + 4, index);
}

function rtmsg(
  w: NlWriter,
  dstLen: number,
  table: number,
  protocol: number,
  scope: number,
  type: number,
  flags: number,
): void {
  const at = w.header(12);
  w.put8(at, AF_INET);
  w.put8(at + 1, dstLen);
  w.put8(at + 4, table < 256 ? table : 0);
  w.put8(at + 5, protocol);
  w.put8(at + 6, scope);
  w.put8(at + 7, type);
  w.put32(at + 8, flags);
}

function ndmsg(
  w: NlWriter,
  family: number,
  index: number,
  state: number,
  flags: number,
  type = 0,
): void {
  const at = w.header(12);
  w.put8(at, family);
  w.put32(at + 4, index);
  w.put16(at + 8, state);
  w.put8(at + 10, flags);
  w.put8(at + 11, type);
}

// ---- links -------------------------------------------------------------------

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

const addressAdd: Kind<Address> = {
  type: RTM_NEWADDR,
  flags: NLM_F_CREATE | NLM_F_REPLACE,
  body: (w, a) => {
    ifaddrmsg(w, a.prefixLen, a.index);
    w.ipv4(IFA_LOCAL, a.ip).ipv4(IFA_ADDRESS, a.ip);
  },
  describe: (a) => `RTM_NEWADDR ${describeAddr(a)}`,
};

const addressDelete: Kind<Address> = {
  type: RTM_DELADDR,
  flags: 0,
  body: addressAdd.body,
  describe: (a) => `RTM_DELADDR ${describeAddr(a)}`,
};

/** Batch encoder for {@link addAddressRequest}. */
export const addAddressEncoder: BatchEncoder<Address> = batchEncoder(addressAdd);
/** Batch encoder for {@link deleteAddressRequest}. */
export const deleteAddressEncoder: BatchEncoder<Address> = batchEncoder(addressDelete);

/** `ip addr replace <ip>/<len> dev <index>`. */
export function addAddressRequest(a: Address): NlRequest {
  return request(addressAdd, a);
}

/** `ip addr del <ip>/<len> dev <index>`. */
export function deleteAddressRequest(a: Address): NlRequest {
  return request(addressDelete, a);
}

/** Dump IPv4 addresses. */
export function dumpAddressesRequest(): NlRequest {
  ifaddrmsg(scratch, 0, 0);
  return {
    type: RTM_GETADDR,
    flags: NLM_F_DUMP,
    body: scratch.finish(),
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

function routeAttrs(w: NlWriter, r: Route, table: number): void {
  if (r.dst.prefixLen > 0) w.ipv4(RTA_DST, r.dst.ip);
  if (r.gateway !== undefined && r.gateway !== null) w.ipv4(RTA_GATEWAY, r.gateway);
  if (r.index !== undefined && r.index !== null) w.u32(RTA_OIF, r.index);
  if (r.metric) w.u32(RTA_PRIORITY, r.metric);
  if (table >= 256) w.u32(RTA_TABLE, table);
}

const routeReplace: Kind<Route> = {
  type: RTM_NEWROUTE,
  flags: NLM_F_CREATE | NLM_F_REPLACE,
  body: (w, r) => {
    const table = r.table ?? RT_TABLE_MAIN;
    const hasGw = r.gateway !== undefined && r.gateway !== null;
    rtmsg(
      w,
      r.dst.prefixLen,
      table,
      r.protocol ?? RTPROT_BOOT,
      r.scope ?? (hasGw ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK),
      r.type ?? RTN_UNICAST,
      r.onlink ? RTNH_F_ONLINK : 0,
    );
    routeAttrs(w, r, table);
  },
  describe: (r) => `RTM_NEWROUTE replace ${describeRoute(r)}`,
};

const routeDelete: Kind<Route> = {
  type: RTM_DELROUTE,
  flags: 0,
  body: (w, r) => {
    const table = r.table ?? RT_TABLE_MAIN;
    rtmsg(w, r.dst.prefixLen, table, 0, RT_SCOPE_NOWHERE, 0, 0);
    routeAttrs(w, r, table);
  },
  describe: (r) => `RTM_DELROUTE ${describeRoute(r)}`,
};

/** Batch encoder for {@link replaceRouteRequest}. */
export const replaceRouteEncoder: BatchEncoder<Route> = batchEncoder(routeReplace);
/** Batch encoder for {@link deleteRouteRequest}. */
export const deleteRouteEncoder: BatchEncoder<Route> = batchEncoder(routeDelete);

/** `ip route replace <dst> [via <gw>] [dev <index>] [onlink] [table] [metric]`. */
export function replaceRouteRequest(r: Route): NlRequest {
  return request(routeReplace, r);
}

/** `ip route del <dst> [via <gw>] [dev <index>] [table]`: matches any scope/protocol. */
export function deleteRouteRequest(r: Route): NlRequest {
  return request(routeDelete, r);
}

/** Dump IPv4 routes (all tables). */
export function dumpRoutesRequest(): NlRequest {
  rtmsg(scratch, 0, 0, 0, 0, 0, 0);
  return {
    type: RTM_GETROUTE,
    flags: NLM_F_DUMP,
    body: scratch.finish(),
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

const neighbourReplace: Kind<Neighbour> = {
  type: RTM_NEWNEIGH,
  flags: NLM_F_CREATE | NLM_F_REPLACE,
  body: (w, n) => {
    if (n.mac === null) {
      throw new TypeError(
        `Cannot replace neighbour ${
          formatIPv4(n.ip)
        } dev ${n.index}: mac is null; give a MAC address`,
      );
    }
    ndmsg(w, AF_INET, n.index, n.state ?? NUD_PERMANENT, 0, RTN_UNICAST);
    w.ipv4(NDA_DST, n.ip).mac(NDA_LLADDR, n.mac);
  },
  describe: (n) => `RTM_NEWNEIGH replace ${formatIPv4(n.ip)} lladdr ${n.mac} dev ${n.index}`,
};

const neighbourDelete: Kind<Neighbour> = {
  type: RTM_DELNEIGH,
  flags: 0,
  body: (w, n) => {
    ndmsg(w, AF_INET, n.index, 0, 0);
    w.ipv4(NDA_DST, n.ip);
  },
  describe: (n) => `RTM_DELNEIGH ${formatIPv4(n.ip)} dev ${n.index}`,
};

/** Batch encoder for {@link replaceNeighbourRequest}. */
export const replaceNeighbourEncoder: BatchEncoder<Neighbour> = batchEncoder(neighbourReplace);
/** Batch encoder for {@link deleteNeighbourRequest}. */
export const deleteNeighbourEncoder: BatchEncoder<Neighbour> = batchEncoder(neighbourDelete);

/**
 * `ip neigh replace <ip> lladdr <mac> dev <index> nud permanent`.
 *
 * @throws {TypeError} When `mac` is null.
 */
export function replaceNeighbourRequest(n: Neighbour): NlRequest {
  return request(neighbourReplace, n);
}

/** `ip neigh del <ip> dev <index>`. */
export function deleteNeighbourRequest(n: Neighbour): NlRequest {
  return request(neighbourDelete, n);
}

/** Dump IPv4 neighbours. */
export function dumpNeighboursRequest(): NlRequest {
  ndmsg(scratch, AF_INET, 0, 0, 0);
  return {
    type: RTM_GETNEIGH,
    flags: NLM_F_DUMP,
    body: scratch.finish(),
    describe: () => "RTM_GETNEIGH dump",
  };
}

function describeFdb(e: FdbEntry): string {
  return `${e.mac} dev ${e.index}${e.dst !== null ? ` dst ${formatIPv4(e.dst)}` : ""} self`;
}

function fdbBody(w: NlWriter, e: FdbEntry, state: number): void {
  ndmsg(w, AF_BRIDGE, e.index, state, NTF_SELF);
  w.mac(NDA_LLADDR, e.mac);
  if (e.dst !== null) w.ipv4(NDA_DST, e.dst);
}

const fdbKinds: Record<"append" | "replace" | "delete", Kind<FdbEntry>> = {
  append: {
    type: RTM_NEWNEIGH,
    flags: NLM_F_CREATE | NLM_F_APPEND,
    body: (w, e) => fdbBody(w, e, e.state ?? NUD_PERMANENT),
    describe: (e) => `RTM_NEWNEIGH fdb append ${describeFdb(e)}`,
  },
  replace: {
    type: RTM_NEWNEIGH,
    flags: NLM_F_CREATE | NLM_F_REPLACE,
    body: (w, e) => fdbBody(w, e, e.state ?? NUD_PERMANENT),
    describe: (e) => `RTM_NEWNEIGH fdb replace ${describeFdb(e)}`,
  },
  delete: {
    type: RTM_DELNEIGH,
    flags: 0,
    body: (w, e) => fdbBody(w, e, 0),
    describe: (e) => `RTM_DELNEIGH fdb ${describeFdb(e)}`,
  },
};

/** Batch encoders for {@link addFdbRequest} (append, replace) and {@link deleteFdbRequest}. */
export const fdbEncoders: Record<"append" | "replace" | "delete", BatchEncoder<FdbEntry>> = {
  append: batchEncoder(fdbKinds.append),
  replace: batchEncoder(fdbKinds.replace),
  delete: batchEncoder(fdbKinds.delete),
};

/** `bridge fdb append|replace <mac> dev <index> dst <ip> self permanent`. */
export function addFdbRequest(e: FdbEntry, mode: "append" | "replace"): NlRequest {
  return request(fdbKinds[mode], e);
}

/** `bridge fdb del <mac> dev <index> dst <ip> self`. */
export function deleteFdbRequest(e: FdbEntry): NlRequest {
  return request(fdbKinds.delete, e);
}

/** Dump the bridge forwarding database (all devices). */
export function dumpFdbRequest(): NlRequest {
  ndmsg(scratch, AF_BRIDGE, 0, 0, 0);
  return {
    type: RTM_GETNEIGH,
    flags: NLM_F_DUMP,
    body: scratch.finish(),
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
      neighbour: {
        index,
        ip: readIPv4(dst),
        mac: ll && ll.length === 6 ? readMac(ll) : null,
        state,
      },
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
      return address &&
        { kind: "address", action: msg.type === RTM_NEWADDR ? "new" : "del", address };
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
