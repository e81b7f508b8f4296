/**
 * Fuzzing the udp backend's packet path with what a remote can send:
 * datagrams that are mutations of real encapsulated packets (UDP, TCP,
 * ICMP, options, fragments; bits flipped, lengths and addresses rewritten,
 * cut short, padded), random bytes, from peers and strangers, single or
 * GRO-merged; and what the kernel hands the TUN side (with and without a
 * virtio header, TSO super-packets with garbled GSO fields). Properties:
 * the pure checks never throw and leave a dropped packet untouched; the
 * engine never throws, accounts for every datagram once, and writes into
 * the TUN device only well-formed IPv4 packets for this host's subnet from
 * a peer's, with the TTL decremented and the checksum right.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { parseIPv4, parseIPv4Net } from "../../core/ip.ts";
import {
  acceptFromPeer,
  buildNetUnreachable,
  checkIPv4,
  Drop,
  ICMP_UNREACHABLE_MAX,
  internetChecksum,
  routeFromTun,
  RouteTable,
} from "./packet.ts";
import { COUNTER_COUNT, CounterIndex, readCounters, UdpEngine } from "./loop.ts";
import { MemoryNetwork, MemoryPacketDevice } from "../../testing/udp_fakes.ts";
import { GSO_TCPV4, VNET_F_NEEDS_CSUM, VNET_HDR_LEN } from "./offload.ts";
import { fuzzParameters, mutatedBytes, Tally } from "../../testing/fuzz.ts";

const PORT = 8285;
const OWN = parseIPv4Net("10.5.1.0/24");
const PEER_IP = parseIPv4("192.0.2.2");
const PEER2_IP = parseIPv4("192.0.2.3");
const STRANGER = parseIPv4("203.0.113.9");
const ROUTES = [
  { subnet: parseIPv4Net("10.5.2.0/24"), publicIP: PEER_IP, port: PORT },
  { subnet: parseIPv4Net("10.5.3.0/24"), publicIP: PEER2_IP, port: PORT },
  { subnet: parseIPv4Net("10.5.128.0/17"), publicIP: PEER2_IP, port: PORT },
];
const TABLE = new RouteTable(ROUTES);

/** An IPv4 packet with a valid header checksum. */
function ipv4(
  src: string,
  dst: string,
  o: { proto?: number; ttl?: number; size?: number; options?: number; frag?: number } = {},
): Uint8Array {
  const ihl = 20 + (o.options ?? 0);
  const size = Math.max(o.size ?? 60, ihl);
  const p = new Uint8Array(size);
  const v = new DataView(p.buffer);
  p[0] = 0x40 | (ihl >> 2);
  v.setUint16(2, size);
  v.setUint16(4, 0x1234);
  v.setUint16(6, o.frag ?? 0x4000);
  p[8] = o.ttl ?? 64;
  p[9] = o.proto ?? 17;
  v.setUint32(12, parseIPv4(src));
  v.setUint32(16, parseIPv4(dst));
  for (let i = 20; i < ihl; i++) p[i] = 1; // NOP options
  for (let i = ihl; i < size; i++) p[i] = (i * 7) & 0xff;
  if (p[9] === 1) p[ihl] = 8; // ICMP echo request
  v.setUint16(10, internetChecksum(p, 0, ihl));
  return p;
}

/** A TCP packet of `payload` bytes (20-byte IP + 32-byte TCP header). */
function tcp(src: string, dst: string, payload: number): Uint8Array {
  const p = ipv4(src, dst, { proto: 6, size: 52 + payload });
  p[32] = 8 << 4;
  p[33] = 0x18;
  return p;
}

/** Datagrams a peer sends (inner packets from its subnet to ours), and some that are wrong. */
const FROM_PEER = [
  ipv4("10.5.2.7", "10.5.1.9"),
  ipv4("10.5.2.7", "10.5.1.9", { proto: 1, size: 84 }),
  ipv4("10.5.2.7", "10.5.1.9", { options: 8, size: 100 }),
  ipv4("10.5.2.7", "10.5.1.9", { frag: 0x2000, size: 1400 }),
  ipv4("10.5.2.7", "10.5.1.9", { ttl: 2 }),
  tcp("10.5.2.7", "10.5.1.9", 1448),
  tcp("10.5.2.7", "10.5.1.9", 0),
  ipv4("10.5.3.7", "10.5.1.9"), // the other peer's subnet
];
/** Packets the kernel routes into the TUN device. */
const FROM_TUN = [
  ipv4("10.5.1.9", "10.5.2.7"),
  ipv4("10.5.1.9", "10.5.200.7", { proto: 1, size: 84 }),
  ipv4("10.5.1.9", "10.5.99.7"), // no route: an ICMP unreachable goes back
  ipv4("10.5.1.9", "10.5.2.7", { ttl: 1 }),
  tcp("10.5.1.9", "10.5.2.7", 8000),
];

const sources = fc.constantFrom(PEER_IP, PEER2_IP, STRANGER, 0, 0xffffffff);

Deno.test("fuzz checkIPv4(), acceptFromPeer(), routeFromTun(), buildNetUnreachable(): mutated packets (10 000 inputs)", () => {
  const tally = new Tally();
  fc.assert(
    fc.property(
      fc.oneof({ weight: 5, arbitrary: mutatedBytes([...FROM_PEER, ...FROM_TUN], 3) }, {
        weight: 1,
        arbitrary: fc.uint8Array({ maxLength: 80 }),
      }),
      sources,
      fc.nat(8),
      (pkt, from, trim) => {
        const len = Math.max(0, pkt.length - (trim > 5 ? trim : 0));
        const before = pkt.slice();
        const check = checkIPv4(pkt, len, true);
        assert.ok(Number.isInteger(check) && check >= 0 && check <= Drop.TUN_WRITE_FAILED + 10);
        const code = acceptFromPeer(TABLE, OWN, from, pkt, len);
        tally.count(code === Drop.OK);
        if (code !== Drop.OK) {
          assert.deepEqual(pkt, before, "a dropped packet is left as it was");
        } else {
          assert.equal(pkt[8], before[8] - 1, "TTL decremented");
          const ihl = (pkt[0] & 15) * 4;
          assert.equal(internetChecksum(pkt, 0, ihl), 0, "header checksum still right");
          pkt.set(before); // back to what came in, for the TUN-side checks
        }
        const route = routeFromTun(TABLE, pkt, len);
        assert.deepEqual(pkt, before, "routing never changes the packet");
        if (route === Drop.NO_ROUTE) {
          const out = new Uint8Array(ICMP_UNREACHABLE_MAX);
          const n = buildNetUnreachable(pkt, 0x0a056307, out);
          assert.ok(n >= 0 && n <= ICMP_UNREACHABLE_MAX);
          if (n > 0) {
            assert.equal(internetChecksum(out, 0, 20), 0, "ICMP error's IP checksum");
            assert.equal(internetChecksum(out, 20, n - 20), 0, "ICMP checksum");
          }
        }
      },
    ),
    fuzzParameters(),
  );
  tally.assertMix("packets from peers");
});

/** One round of input for an engine. */
const datagram = fc.record({
  from: sources,
  payload: fc.oneof({ weight: 6, arbitrary: mutatedBytes(FROM_PEER, 3) }, {
    weight: 1,
    arbitrary: fc.uint8Array({ maxLength: 200 }),
  }),
  /** Merged with the next ones as one GRO datagram of this segment size. */
  merge: fc.nat(3),
});
const tunPacket = fc.record({
  packet: fc.oneof({ weight: 6, arbitrary: mutatedBytes(FROM_TUN, 3) }, {
    weight: 1,
    arbitrary: fc.uint8Array({ maxLength: 200 }),
  }),
  /** A virtio header (for a vnet TUN): GSO type, size, checksum start and offset. */
  vnet: fc.record({
    flags: fc.constantFrom(0, VNET_F_NEEDS_CSUM, 0xff),
    gsoType: fc.constantFrom(0, GSO_TCPV4, GSO_TCPV4 | 0x80, 3, 4, 0xff),
    gsoSize: fc.oneof(fc.constantFrom(0, 1, 536, 1448, 9000, 65535), fc.nat(65535)),
    csumStart: fc.oneof(fc.constantFrom(0, 20, 40, 65535), fc.nat(65535)),
    csumOffset: fc.oneof(fc.constantFrom(6, 16, 65535), fc.nat(65535)),
  }),
});

function vnetHeader(v: {
  flags: number;
  gsoType: number;
  gsoSize: number;
  csumStart: number;
  csumOffset: number;
}, packet: Uint8Array): Uint8Array {
  const out = new Uint8Array(VNET_HDR_LEN + packet.length);
  const dv = new DataView(out.buffer);
  out[0] = v.flags;
  out[1] = v.gsoType;
  dv.setUint16(2, 52, true);
  dv.setUint16(4, v.gsoSize, true);
  dv.setUint16(6, v.csumStart, true);
  dv.setUint16(8, v.csumOffset, true);
  out.set(packet, VNET_HDR_LEN);
  return out;
}

for (
  const variant of [{ vnet: false, gso: false }, { vnet: true, gso: true }, {
    vnet: true,
    gso: false,
  }]
) {
  Deno.test(`fuzz the udp engine (${variant.vnet ? "vnet TUN" : "plain TUN"}, ${variant.gso ? "GSO/GRO" : "no GSO"}): hostile datagrams and TUN packets (10 000 rounds)`, () => {
    const rig = () => {
      const net = new MemoryNetwork();
      const bind = net.bind(parseIPv4("192.0.2.1"), PORT, variant.gso);
      const peer = net.bind(PEER_IP, PORT, variant.gso);
      const peer2 = net.bind(PEER2_IP, PORT, variant.gso);
      const tun = new MemoryPacketDevice(variant.vnet);
      const counters = new Float64Array(COUNTER_COUNT);
      const engine = new UdpEngine({
        tun,
        bind,
        ownSubnet: OWN,
        mtu: 1472,
        counters,
        routes: ROUTES,
      });
      return { bind, peer, peer2, tun, counters, engine };
    };
    // one engine for all rounds: state carried between them (the TCP coalescer, batches) is fuzzed too
    const { bind, peer, peer2, tun, counters, engine } = rig();
    let delivered = 0, sent = 0;
    fc.assert(
      fc.property(
        fc.array(datagram, { maxLength: 6 }),
        fc.array(tunPacket, { maxLength: 3 }),
        (grams, packets) => {
          // a round that failed (while shrinking) may have left input behind
          tun.pending.length = 0;
          bind.queue.length = 0;
          tun.take();
          // UDP → TUN: every segment is delivered once or dropped once
          const inBefore = counters[CounterIndex.PACKETS_IN];
          const dropsBefore = drops(counters);
          let segments = 0;
          for (let i = 0; i < grams.length; i++) {
            const g = grams[i];
            const run = variant.gso && g.merge > 0 && g.payload.length > 0
              ? [
                g,
                ...grams.slice(i + 1, i + 1 + g.merge).filter((x) =>
                  x.payload.length === g.payload.length
                ),
              ]
              : [g];
            i += run.length - 1;
            const payload = new Uint8Array(run.reduce((n, x) => n + x.payload.length, 0));
            run.reduce((at, x) => (payload.set(x.payload, at), at + x.payload.length), 0);
            bind.queue.push({
              from: g.from,
              fromPort: PORT,
              payload,
              gso: run.length > 1 ? g.payload.length : 0,
            });
            segments += run.length;
          }
          engine.pump();
          const tunPackets = tun.take();
          const inDelta = counters[CounterIndex.PACKETS_IN] - inBefore;
          const dropDelta = drops(counters) - dropsBefore;
          assert.equal(
            inDelta + dropDelta,
            segments,
            `each datagram segment is delivered or dropped, once: ${inDelta} in, ${dropDelta} dropped; ${
              JSON.stringify(readCounters(counters).dropped)
            }`,
          );
          for (const raw of tunPackets) {
            const p = variant.vnet ? raw.subarray(VNET_HDR_LEN) : raw;
            assert.equal(
              checkIPv4(p, p.length, true),
              Drop.OK,
              "only well-formed IPv4 reaches the TUN",
            );
            const src = ((p[12] << 24) | (p[13] << 16) | (p[14] << 8) | p[15]) >>> 0;
            const dst = ((p[16] << 24) | (p[17] << 16) | (p[18] << 8) | p[19]) >>> 0;
            assert.equal((dst & 0xffffff00) >>> 0, OWN.ip, "for this host's subnet");
            assert.ok(TABLE.lookup(src) !== undefined, "from a peer's subnet");
            delivered++;
          }
          // TUN → UDP: nothing throws; what leaves goes to the peer that owns the destination
          for (const t of packets) {
            // a TUN read never returns an empty packet (the fake would take it for "nothing waiting")
            if (t.packet.length === 0 && !variant.vnet) continue;
            tun.inject(variant.vnet ? vnetHeader(t.vnet, t.packet) : t.packet);
          }
          engine.pump();
          for (const [b, ip] of [[peer, PEER_IP], [peer2, PEER2_IP]] as const) {
            for (const d of b.queue.splice(0)) {
              const size = d.gso || d.payload.length;
              for (let off = 0; off < d.payload.length; off += size) {
                const p = d.payload.subarray(off, off + size);
                // the kernel's checksums are trusted on this side (a garbled one is the peer's to drop)
                assert.equal(
                  checkIPv4(p, p.length, false),
                  Drop.OK,
                  "only well-formed IPv4 leaves",
                );
                const dst = ((p[16] << 24) | (p[17] << 16) | (p[18] << 8) | p[19]) >>> 0;
                assert.equal(TABLE.lookup(dst)?.publicIP, ip, "to the peer owning the destination");
                sent++;
              }
            }
          }
          tun.take(); // ICMP unreachables written back
        },
      ),
      fuzzParameters(),
    );
    const runs = fuzzParameters().numRuns!;
    assert.ok(delivered > runs / 10 && sent > runs / 10, `${delivered} delivered, ${sent} sent`);
  });
}

function drops(c: Float64Array): number {
  let n = 0;
  for (let i = CounterIndex.DROPS; i < COUNTER_COUNT; i++) n += c[i];
  return n;
}
