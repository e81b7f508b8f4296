/**
 * rtnetlink IPv4 address messages: add (replace), delete, dump, decode.
 *
 * @module
 */

import { formatIPv4 } from "../../core/ip.ts";
import {
  NLM_F_CREATE,
  NLM_F_DUMP,
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

function ifaddrmsg(w: NlWriter, prefixLen: number, index: number, scope = 0): void {
  const at = w.header(8);
  w.put8(at, AF_INET);
  w.put8(at + 1, prefixLen);
  w.put8(at + 3, scope);
  w.put32(at + 4, index);
}

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
  const flags = a.get(IFA_FLAGS);
  return {
    index: v.getUint32(4, true),
    ip: readIPv4(ip),
    prefixLen: body[1],
    flags: flags && flags.length >= 4 ? readU32(flags) : body[2],
    scope: body[3],
  };
}
