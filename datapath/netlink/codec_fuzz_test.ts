/**
 * Fuzzing netlink replies as weft decodes them: real messages (links with
 * nested vxlan data, addresses, routes, neighbours, fdb entries, errors
 * with extended acks, dump ends) built with weft's own encoders, then with
 * bits flipped, length and type fields overwritten with boundary values,
 * cut short or padded; and random bytes. Property: `parseMessages` and
 * every decoder return, or throw the SyntaxError they document with a
 * clear message — never a RangeError out of a DataView; and the in-place
 * decoder of notifications agrees with the copying one.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import {
  decodeError,
  encodeMessage,
  NLM_F_ACK_TLVS,
  NLM_F_MULTI,
  type NlMessage,
  NLMSG_DONE,
  NLMSG_ERROR,
  parseMessages,
} from "./codec.ts";
import {
  addAddressRequest,
  addFdbRequest,
  createBridgeRequest,
  createVxlanRequest,
  decodeAddress,
  decodeEvent,
  decodeEventAt,
  decodeLink,
  decodeNeigh,
  decodeRoute,
  replaceNeighbourRequest,
  replaceRouteRequest,
  RTM_DELNEIGH,
  RTM_DELROUTE,
  RTM_NEWADDR,
  RTM_NEWLINK,
  RTM_NEWNEIGH,
  RTM_NEWROUTE,
} from "./messages.ts";
import { parseIPv4 } from "../../core/ip.ts";
import { fuzzParameters, mutatedBytes, returnsOrThrowsClearly, Tally } from "../../testing/fuzz.ts";

const ip = parseIPv4;
/** Real messages, as the kernel would send them back (same layouts as the requests). */
const MESSAGES: Uint8Array[] = [
  encodeMessage(
    RTM_NEWLINK,
    NLM_F_MULTI,
    7,
    createVxlanRequest({
      name: "flannel.1",
      vni: 1,
      port: 8472,
      local: ip("192.0.2.1"),
      link: 2,
      learning: false,
      gbp: true,
      mac: "02:00:00:00:00:01",
      mtu: 1450,
      up: true,
    }).body,
  ),
  encodeMessage(
    RTM_NEWLINK,
    0,
    8,
    createBridgeRequest({ name: "cni0", mtu: 1500, mac: "02:00:00:00:00:02" }).body,
  ),
  encodeMessage(
    RTM_NEWADDR,
    0,
    9,
    addAddressRequest({ index: 3, ip: ip("10.5.1.0"), prefixLen: 32 }).body,
  ),
  encodeMessage(
    RTM_NEWROUTE,
    0,
    10,
    replaceRouteRequest({
      dst: { ip: ip("10.5.2.0"), prefixLen: 24 },
      gateway: ip("10.5.2.0"),
      index: 3,
      onlink: true,
      metric: 100,
      table: 254,
    }).body,
  ),
  encodeMessage(
    RTM_DELROUTE,
    0,
    11,
    replaceRouteRequest({ dst: { ip: ip("10.5.3.0"), prefixLen: 24 }, gateway: ip("192.0.2.3") })
      .body,
  ),
  encodeMessage(
    RTM_NEWNEIGH,
    0,
    12,
    replaceNeighbourRequest({ index: 3, ip: ip("10.5.2.0"), mac: "02:00:00:00:00:03" }).body,
  ),
  encodeMessage(
    RTM_DELNEIGH,
    0,
    13,
    addFdbRequest({ index: 3, mac: "02:00:00:00:00:03", dst: ip("192.0.2.3") }, "append").body,
  ),
  // an error with the original request header and an extended-ack message
  (() => {
    const text = new TextEncoder().encode("Nexthop has invalid gateway\0");
    const tlv = new Uint8Array(4 + text.length + ((4 - (text.length % 4)) % 4));
    new DataView(tlv.buffer).setUint16(0, 4 + text.length, true);
    new DataView(tlv.buffer).setUint16(2, 1, true);
    tlv.set(text, 4);
    const body = new Uint8Array(4 + 16 + tlv.length);
    const v = new DataView(body.buffer);
    v.setInt32(0, -22, true);
    v.setUint32(4, 16, true);
    v.setUint16(8, RTM_NEWROUTE, true);
    v.setUint32(12, 10, true);
    body.set(tlv, 20);
    return encodeMessage(NLMSG_ERROR, 0x100 | NLM_F_ACK_TLVS, 10, body);
  })(),
  encodeMessage(NLMSG_DONE, NLM_F_MULTI, 7, new Uint8Array(4)),
];
/** Datagrams as a dump delivers them: several messages back to back. */
const DATAGRAMS = [...MESSAGES, concat(MESSAGES.slice(0, 3)), concat(MESSAGES.slice(3, 9))];

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

const datagrams = fc.oneof(
  { weight: 6, arbitrary: mutatedBytes(DATAGRAMS, 4) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 256 }) },
);

/** What a decoder gave: its result, or the message of what it threw. */
function outcome<T>(f: () => T): { value: T } | { error: string } {
  try {
    return { value: f() };
  } catch (e) {
    return { error: `${(e as Error).name}: ${(e as Error).message}` };
  }
}

/**
 * The in-place decoder a subscription uses (the message inside a larger
 * buffer, with bytes around it) gives what `decodeEvent` gives on a copy.
 */
function sameInPlace(m: NlMessage): void {
  const len = 16 + m.body.length; // as the datagram had it, without padding
  const buffer = new Uint8Array(len + 16).fill(0xa5);
  const v = new DataView(buffer.buffer);
  v.setUint32(8, len, true);
  v.setUint16(12, m.type, true);
  v.setUint16(14, m.flags, true);
  v.setUint32(16, m.seq, true);
  v.setUint32(20, m.pid, true);
  buffer.set(m.body, 24);
  assert.deepEqual(outcome(() => decodeEventAt(buffer, 8, len)), outcome(() => decodeEvent(m)));
}

/** Decode a datagram the way the client does, every decoder on every body. */
function decodeAll(bytes: Uint8Array, tally?: Tally): void {
  const messages = returnsOrThrowsClearly(() => parseMessages(bytes), [SyntaxError], tally);
  for (const m of messages ?? []) {
    returnsOrThrowsClearly(() => decodeEvent(m), [SyntaxError]);
    sameInPlace(m);
    for (const decode of [decodeLink, decodeRoute, decodeNeigh, decodeAddress]) {
      returnsOrThrowsClearly(() => decode(m.body), [SyntaxError]);
    }
    if (m.type === NLMSG_ERROR) {
      const e = returnsOrThrowsClearly(() => decodeError(m), [SyntaxError]);
      if (e) assert.ok(Number.isInteger(e.errno) && e.errno >= 0, `errno ${e.errno}`);
    }
  }
}

Deno.test("fuzz netlink decoding: mutated real replies and random bytes (10 000 inputs)", () => {
  const tally = new Tally();
  fc.assert(fc.property(datagrams, (d) => decodeAll(d, tally)), fuzzParameters());
  tally.assertMix("netlink datagrams");
});

Deno.test("fuzz netlink decoding: attribute areas of every message kind (10 000 inputs)", () => {
  // the mutations above mostly break the outer header; these keep it and break the inside
  const bodies = MESSAGES.map((m) => m.subarray(16));
  fc.assert(
    fc.property(
      mutatedBytes(bodies, 3),
      fc.constantFrom(...MESSAGES.map((m) => new DataView(m.buffer).getUint16(4, true))),
      (body, type) => {
        decodeAll(encodeMessage(type, NLM_F_ACK_TLVS | 0x100, 1, body));
      },
    ),
    fuzzParameters(),
  );
});
