/**
 * rtnetlink address messages, IPv4 and IPv6: add (replace), delete, dump
 * (both families), decode.
 *
 * @module
 */

import { formatIP } from "../../core/ip.ts";
import {
  NLM_F_CREATE,
  NLM_F_DUMP,
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
  type Kind,
  type NlRequest,
  request,
  scratch,
} from "./request.ts";
import type { Address } from "./kernel.ts";

/** rtnetlink message type `RTM_NEWADDR`. */
export const RTM_NEWADDR = 20;
/** rtnetlink message type `RTM_DELADDR`. */
export const RTM_DELADDR = 21;
/** rtnetlink message type `RTM_GETADDR`. */
export const RTM_GETADDR = 22;

/** Address attribute `IFA_ADDRESS`. */
export const IFA_ADDRESS = 1;
/** Address attribute `IFA_LOCAL`. */
export const IFA_LOCAL = 2;
/** Address attribute `IFA_FLAGS`: the 32-bit flags (the header's byte holds only the low 8). */
export const IFA_FLAGS = 8;
/** Address flag `IFA_F_NODAD`: no duplicate address detection (usable at once). */
export const IFA_F_NODAD = 0x02;

function ifaddrmsg(
  w: NlWriter,
  family: number,
  prefixLen: number,
  index: number,
  flags = 0,
  scope = 0,
): void {
  const at = w.header(8);
  w.put8(at, family);
  w.put8(at + 1, prefixLen);
  w.put8(at + 2, flags);
  w.put8(at + 3, scope);
  w.put32(at + 4, index);
}

function describeAddr(a: Address): string {
  return `${formatIP(a.ip)}/${a.prefixLen} dev ${a.index}`;
}

const addressAdd: Kind<Address> = {
  type: RTM_NEWADDR,
  flags: NLM_F_CREATE | NLM_F_REPLACE,
  body: (w, a) => {
    if (typeof a.ip === "bigint") {
      // IPv6: the address alone; usable at once (an overlay address is unique by its lease)
      ifaddrmsg(w, AF_INET6, a.prefixLen, a.index, a.flags ?? IFA_F_NODAD);
      w.ipv6(IFA_ADDRESS, a.ip);
    } else {
      ifaddrmsg(w, AF_INET, a.prefixLen, a.index);
      w.ipv4(IFA_LOCAL, a.ip).ipv4(IFA_ADDRESS, a.ip);
    }
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

/** `ip addr replace <ip>/<len> dev <index>` (IPv6: `nodad`). */
export function addAddressRequest(a: Address): NlRequest {
  return request(addressAdd, a);
}

/** `ip addr del <ip>/<len> dev <index>`. */
export function deleteAddressRequest(a: Address): NlRequest {
  return request(addressDelete, a);
}

/** Dump IPv4 and IPv6 addresses. */
export function dumpAddressesRequest(): NlRequest {
  ifaddrmsg(scratch, AF_UNSPEC, 0, 0);
  return {
    type: RTM_GETADDR,
    flags: NLM_F_DUMP,
    body: scratch.finish(),
    describe: () => "RTM_GETADDR dump",
  };
}

/**
 * Decode an RTM_NEWADDR/RTM_DELADDR body; null for families other than
 * IPv4 and IPv6.
 *
 * @throws {SyntaxError} When the body is too short.
 */
export function decodeAddress(body: Uint8Array): Address | null {
  if (body.length < 8) throw new SyntaxError(`Cannot decode ifaddrmsg: ${body.length} bytes`);
  const family = body[0];
  if (family !== AF_INET && family !== AF_INET6) return null;
  const v = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const a = parseAttrs(body.subarray(8));
  const raw = a.get(IFA_LOCAL) ?? a.get(IFA_ADDRESS);
  if (!raw || raw.length !== (family === AF_INET6 ? 16 : 4)) return null;
  const flags = a.get(IFA_FLAGS);
  return {
    index: v.getUint32(4, true),
    ip: readIP(raw)!,
    prefixLen: body[1],
    flags: flags && flags.length >= 4 ? readU32(flags) : body[2],
    scope: body[3],
  };
}
