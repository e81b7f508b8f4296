/**
 * rtnetlink neighbour messages: IPv4 neighbours (ARP entries), IPv6
 * neighbours (NDP entries) and VXLAN forwarding-database entries
 * (`AF_BRIDGE`, `NTF_SELF`, with an IPv4 or IPv6 remote): replace, append,
 * delete, dump, decode.
 *
 * @module
 */

import { formatIP, type IPAddr } from "../../core/ip.ts";
import {
  align4,
  NLA_TYPE_MASK,
  NLM_F_APPEND,
  NLM_F_CREATE,
  NLM_F_DUMP,
  NLM_F_REPLACE,
  NlWriter,
  readIPv6,
  readMacAt,
} from "./codec.ts";
import {
  AF_BRIDGE,
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
import { type FdbEntry, type Neighbour, NUD_PERMANENT, RTN_UNICAST } from "./kernel.ts";

/** rtnetlink message type `RTM_NEWNEIGH`. */
export const RTM_NEWNEIGH = 28;
/** rtnetlink message type `RTM_DELNEIGH`. */
export const RTM_DELNEIGH = 29;
/** rtnetlink message type `RTM_GETNEIGH`. */
export const RTM_GETNEIGH = 30;

/** Neighbour attribute `NDA_DST`. */
export const NDA_DST = 1;
/** Neighbour attribute `NDA_LLADDR`. */
export const NDA_LLADDR = 2;
/** Neighbour flag `NTF_SELF`. */
export const NTF_SELF = 0x2;

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

const neighbourReplace: Kind<Neighbour> = {
  type: RTM_NEWNEIGH,
  flags: NLM_F_CREATE | NLM_F_REPLACE,
  body: (w, n) => {
    if (n.mac === null) {
      throw new TypeError(
        `Cannot replace neighbour ${
          formatIP(n.ip)
        } dev ${n.index}: mac is null; give a MAC address`,
      );
    }
    ndmsg(w, familyOf(n.ip), n.index, n.state ?? NUD_PERMANENT, 0, RTN_UNICAST);
    w.ip(NDA_DST, n.ip).mac(NDA_LLADDR, n.mac);
  },
  describe: (n) => `RTM_NEWNEIGH replace ${formatIP(n.ip)} lladdr ${n.mac} dev ${n.index}`,
};

const neighbourDelete: Kind<Neighbour> = {
  type: RTM_DELNEIGH,
  flags: 0,
  body: (w, n) => {
    ndmsg(w, familyOf(n.ip), n.index, 0, 0);
    w.ip(NDA_DST, n.ip);
  },
  describe: (n) => `RTM_DELNEIGH ${formatIP(n.ip)} dev ${n.index}`,
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

/** Dump IPv4 and IPv6 neighbours. */
export function dumpNeighboursRequest(): NlRequest {
  ndmsg(scratch, AF_UNSPEC, 0, 0, 0);
  return {
    type: RTM_GETNEIGH,
    flags: NLM_F_DUMP,
    body: scratch.finish(),
    describe: () => "RTM_GETNEIGH dump",
  };
}

function describeFdb(e: FdbEntry): string {
  return `${e.mac} dev ${e.index}${e.dst !== null ? ` dst ${formatIP(e.dst)}` : ""} self`;
}

function fdbBody(w: NlWriter, e: FdbEntry, state: number): void {
  ndmsg(w, AF_BRIDGE, e.index, state, NTF_SELF);
  w.mac(NDA_LLADDR, e.mac);
  if (e.dst !== null) w.ip(NDA_DST, e.dst);
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

/** A decoded neighbour message: an IPv4 or IPv6 neighbour, an fdb entry, or neither. */
export type DecodedNeigh =
  | { kind: "neighbour"; neighbour: Neighbour }
  | { kind: "fdb"; fdb: FdbEntry }
  | null;

/**
 * Decode an RTM_NEWNEIGH/RTM_DELNEIGH body into an IPv4 or IPv6 neighbour
 * (AF_INET, AF_INET6) or an fdb entry (AF_BRIDGE with NTF_SELF, its remote
 * IPv4 or IPv6 by the attribute's length); null otherwise.
 *
 * @throws {SyntaxError} When the body is too short or an attribute length is impossible.
 */
export function decodeNeigh(body: Uint8Array): DecodedNeigh {
  return decodeNeighAt(body, 0, body.length);
}

/**
 * {@link decodeNeigh} of the body at `bytes[start, end)`, read in place (a
 * notification inside a receive buffer: every fdb entry a sync writes comes
 * back as one, so nothing is copied or kept).
 *
 * @throws {SyntaxError} When the body is too short or an attribute length is impossible.
 */
export function decodeNeighAt(bytes: Uint8Array, start: number, end: number): DecodedNeigh {
  if (end - start < 12) throw new SyntaxError(`Cannot decode ndmsg: ${end - start} bytes`);
  const family = bytes[start];
  const index = bytes[start + 4] | (bytes[start + 5] << 8) | (bytes[start + 6] << 16) |
    (bytes[start + 7] << 24);
  const state = bytes[start + 8] | (bytes[start + 9] << 8);
  const flags = bytes[start + 10];
  // the payloads of NDA_DST and NDA_LLADDR (the last of each, as parseAttrs keeps)
  let dst = -1, dstLen = 0, ll = -1, llLen = 0;
  const attrs = start + 12;
  for (let off = attrs; off + 4 <= end;) {
    const len = bytes[off] | (bytes[off + 1] << 8);
    const type = (bytes[off + 2] | (bytes[off + 3] << 8)) & NLA_TYPE_MASK;
    if (len < 4 || off + len > end) {
      throw new SyntaxError(
        `Cannot parse netlink attribute ${type} at offset ${
          off - attrs
        }: length ${len} does not fit ${end - attrs} bytes`,
      );
    }
    if (type === NDA_DST) [dst, dstLen] = [off + 4, len - 4];
    else if (type === NDA_LLADDR) [ll, llLen] = [off + 4, len - 4];
    off += align4(len);
  }
  const ip = (): IPAddr | null =>
    dstLen === 4
      ? ((bytes[dst] << 24) | (bytes[dst + 1] << 16) | (bytes[dst + 2] << 8) | bytes[dst + 3]) >>> 0
      : dstLen === 16
      ? readIPv6(bytes.subarray(dst, dst + 16))
      : null;
  if (family === AF_INET || family === AF_INET6) {
    if (dst < 0 || dstLen !== (family === AF_INET6 ? 16 : 4)) return null;
    return {
      kind: "neighbour",
      neighbour: { index, ip: ip()!, mac: llLen === 6 ? readMacAt(bytes, ll) : null, state },
    };
  }
  if (family === AF_BRIDGE && flags & NTF_SELF) {
    if (llLen !== 6 || ll < 0) return null;
    return {
      kind: "fdb",
      fdb: { index, mac: readMacAt(bytes, ll), dst: dst < 0 ? null : ip(), state },
    };
  }
  return null;
}
