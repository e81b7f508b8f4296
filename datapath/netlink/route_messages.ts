/**
 * rtnetlink IPv4 route messages: replace, delete, dump, decode.
 *
 * @module
 */

import { formatIPv4, formatIPv4Net } from "../../core/ip.ts";
import {
  NLM_F_CREATE,
  NLM_F_DUMP,
  NLM_F_EXCL,
  NLM_F_REPLACE,
  NlWriter,
  parseAttrs,
  readIPv4,
  readU32,
} from "./codec.ts";
import {
  AF_INET,
  type BatchEncoder,
  batchEncoder,
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

/** Describe a route the way `ip route` prints it. */
export function describeRoute(r: Route): string {
  let s = (r.type === RTN_BLACKHOLE ? "blackhole " : "") + formatIPv4Net(r.dst);
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
    rtmsg(w, r.dst.prefixLen, table, 0, RT_SCOPE_NOWHERE, 0, 0);
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
