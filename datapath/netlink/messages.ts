/**
 * rtnetlink messages, one file per family (links, addresses, routes,
 * neighbours and fdb entries), re-exported here, and the decoder that turns
 * a multicast notification into a {@link KernelEvent}.
 *
 * @module
 */

import { type NlMessage, NLMSG_HDRLEN } from "./codec.ts";
import type { KernelEvent } from "./kernel.ts";
import { decodeLink, RTM_DELLINK, RTM_NEWLINK } from "./link_messages.ts";
import { decodeAddress, RTM_DELADDR, RTM_NEWADDR } from "./address_messages.ts";
import { decodeRoute, RTM_DELROUTE, RTM_NEWROUTE } from "./route_messages.ts";
import {
  type DecodedNeigh,
  decodeNeigh,
  decodeNeighAt,
  RTM_DELNEIGH,
  RTM_NEWNEIGH,
} from "./neighbour_messages.ts";

export * from "./request.ts";
export * from "./link_messages.ts";
export * from "./address_messages.ts";
export * from "./route_messages.ts";
export * from "./neighbour_messages.ts";

/** Multicast group bit `RTMGRP_LINK`. */
export const RTMGRP_LINK = 0x1;
/** Multicast group bit `RTMGRP_NEIGH`. */
export const RTMGRP_NEIGH = 0x4;
/** Multicast group bit `RTMGRP_IPV4_IFADDR`. */
export const RTMGRP_IPV4_IFADDR = 0x10;
/** Multicast group bit `RTMGRP_IPV4_ROUTE`. */
export const RTMGRP_IPV4_ROUTE = 0x40;
/** Multicast group bit `RTMGRP_IPV6_IFADDR`. */
export const RTMGRP_IPV6_IFADDR = 0x100;
/** Multicast group bit `RTMGRP_IPV6_ROUTE`. */
export const RTMGRP_IPV6_ROUTE = 0x400;

/** The groups the kernel client subscribes to for change events (both families). */
export const EVENT_GROUPS = RTMGRP_LINK | RTMGRP_NEIGH | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE |
  RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE;

/**
 * Turn a multicast notification into a {@link KernelEvent}; null for
 * messages weft does not report (other families, cloned routes, …).
 *
 * @param msg A message received on a socket subscribed to {@link EVENT_GROUPS}.
 * @returns The event, or null.
 * @throws {SyntaxError} When the body is malformed.
 */
export function decodeEvent(msg: NlMessage): KernelEvent | null {
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
    case RTM_DELNEIGH:
      return neighbourEvent(msg.type, decodeNeigh(msg.body));
    default:
      return null;
  }
}

function neighbourEvent(type: number, d: DecodedNeigh): KernelEvent | null {
  const action = type === RTM_NEWNEIGH ? "new" : "del";
  if (d?.kind === "neighbour") return { kind: "neighbour", action, neighbour: d.neighbour };
  if (d?.kind === "fdb") return { kind: "fdb", action, fdb: d.fdb };
  return null;
}

/**
 * {@link decodeEvent} of the message at `bytes[at, at + len)` (header
 * included): neighbours and fdb entries, most of what a sync causes, are
 * read in place; other messages are copied out first.
 *
 * @param bytes A receive buffer.
 * @param at Where the message's header starts.
 * @param len The message's length (its header's `nlmsg_len`).
 * @returns The event, or null.
 * @throws {SyntaxError} When the body is malformed.
 */
export function decodeEventAt(bytes: Uint8Array, at: number, len: number): KernelEvent | null {
  const type = bytes[at + 4] | (bytes[at + 5] << 8);
  if (type === RTM_NEWNEIGH || type === RTM_DELNEIGH) {
    return neighbourEvent(type, decodeNeighAt(bytes, at + NLMSG_HDRLEN, at + len));
  }
  const v = new DataView(bytes.buffer, bytes.byteOffset + at, len);
  return decodeEvent({
    type,
    flags: v.getUint16(6, true),
    seq: v.getUint32(8, true),
    pid: v.getUint32(12, true),
    body: bytes.slice(at + NLMSG_HDRLEN, at + len),
  });
}
