/**
 * rtnetlink route messages, IPv4 and IPv6 (the family of the destination):
 * replace, delete, dump (both families), decode.
 *
 * @module
 */

import { formatIP, formatIPNet } from "../../core/ip.ts";
import {
  NLM_F_CREATE,
  NLM_F_DUMP,
  NLM_F_EXCL,
  NLM_F_REPLACE,
  NlWriter,
  parseAttrs,
  readIP,
  readU32,
} from "./codec.ts";
import {
  AF_INET,
  AF_INET6,
  AF_UNSPEC,
  type BatchEncoder,
  batchEncoder,
  familyOf,
  type Kind,
  type NlRequest,
  request,
  scratch,
} from "./request.ts";
import {
  type Route,
  RT_SCOPE_LINK,
  RT_SCOPE_UNIVERSE,
  RT_TABLE_MAIN,
  RTN_BLACKHOLE,
  RTN_UNICAST,
  RTPROT_BOOT,
} from "./kernel.ts";

/** rtnetlink message type `RTM_NEWROUTE`. */
export const RTM_NEWROUTE = 24;
/** rtnetlink message type `RTM_DELROUTE`. */
export const RTM_DELROUTE = 25;
/** rtnetlink message type `RTM_GETROUTE`. */
export const RTM_GETROUTE = 26;

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

function rtmsg(
  w: NlWriter,
  family: number,
  dstLen: number,
  table: number,
  protocol: number,
  scope: number,
  type: number,
  flags: number,
): void {
  const at = w.header(12);
  w.put8(at, family);
  w.put8(at + 1, dstLen);
  w.put8(at + 4, table < 256 ? table : 0);
  w.put8(at + 5, protocol);
  w.put8(at + 6, scope);
  w.put8(at + 7, type);
  w.put32(at + 8, flags);
}

/** Describe a route the way `ip route` prints it. */
export function describeRoute(r: Route): string {
  let s = (r.type === RTN_BLACKHOLE ? "blackhole " : "") + formatIPNet(r.dst);
  if (r.gateway !== undefined && r.gateway !== null) s += ` via ${formatIP(r.gateway)}`;
  if (r.index !== undefined && r.index !== null) s += ` dev ${r.index}`;
  if (r.onlink) s += " onlink";
  if (r.table !== undefined && r.table !== RT_TABLE_MAIN) s += ` table ${r.table}`;
  if (r.metric) s += ` metric ${r.metric}`;
  return s;
}

function routeAttrs(w: NlWriter, r: Route, table: number): void {
  if (r.dst.prefixLen > 0) w.ip(RTA_DST, r.dst.ip);
  if (r.gateway !== undefined && r.gateway !== null) w.ip(RTA_GATEWAY, r.gateway);
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
      familyOf(r.dst.ip),
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

const routeAdd: Kind<Route> = {
  ...routeReplace,
  flags: NLM_F_CREATE | NLM_F_EXCL,
  describe: (r) => `RTM_NEWROUTE add ${describeRoute(r)}`,
};

const routeDelete: Kind<Route> = {
  type: RTM_DELROUTE,
  flags: 0,
  body: (w, r) => {
    const table = r.table ?? RT_TABLE_MAIN;
    rtmsg(w, familyOf(r.dst.ip), r.dst.prefixLen, table, 0, RT_SCOPE_NOWHERE, 0, 0);
    routeAttrs(w, r, table);
  },
  describe: (r) => `RTM_DELROUTE ${describeRoute(r)}`,
};

/** Batch encoder for {@link replaceRouteRequest}. */
export const replaceRouteEncoder: BatchEncoder<Route> = batchEncoder(routeReplace);
/** Batch encoder for `ip route add`: fails with EEXIST where a route with the same key is. */
export const addRouteEncoder: BatchEncoder<Route> = batchEncoder(routeAdd);
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

/** Dump IPv4 and IPv6 routes (all tables). */
export function dumpRoutesRequest(): NlRequest {
  rtmsg(scratch, AF_UNSPEC, 0, 0, 0, 0, 0, 0);
  return {
    type: RTM_GETROUTE,
    flags: NLM_F_DUMP,
    body: scratch.finish(),
    describe: () => "RTM_GETROUTE dump",
  };
}

/**
 * Decode an RTM_NEWROUTE/RTM_DELROUTE body; null for families other than
 * IPv4 and IPv6 and for cloned (cache) routes. A gateway of the other
 * family (an IPv4 route via an IPv6 next hop, `RTA_VIA`) is not read.
 *
 * @throws {SyntaxError} When the body is too short.
 */
export function decodeRoute(body: Uint8Array): Route | null {
  if (body.length < 12) throw new SyntaxError(`Cannot decode rtmsg: ${body.length} bytes`);
  const family = body[0];
  if (family !== AF_INET && family !== AF_INET6) return null;
  const size = family === AF_INET6 ? 16 : 4;
  const v = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const flags = v.getUint32(8, true);
  if (flags & RTM_F_CLONED) return null;
  const a = parseAttrs(body.subarray(12));
  const dst = a.get(RTA_DST), gw = a.get(RTA_GATEWAY), oif = a.get(RTA_OIF);
  const prio = a.get(RTA_PRIORITY), table = a.get(RTA_TABLE);
  const zero = family === AF_INET6 ? 0n : 0;
  const dstIP = (dst && dst.length === size ? readIP(dst) : null) ?? zero;
  return {
    dst: { ip: dstIP, prefixLen: body[1] } as Route["dst"],
    gateway: gw && gw.length === size ? readIP(gw) : null,
    index: oif ? readU32(oif) : null,
    onlink: (flags & RTNH_F_ONLINK) !== 0,
    table: table ? readU32(table) : body[4],
    protocol: body[5],
    scope: body[6],
    type: body[7],
    metric: prio ? readU32(prio) : 0,
  };
}
