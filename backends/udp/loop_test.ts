import assert from "node:assert/strict";
import { parseIPv4, parseIPv4Net } from "../../core/ip.ts";
import { MemoryNetwork, MemoryPacketDevice, pumpUntilIdle } from "../../testing/udp_fakes.ts";
import { COUNTER_COUNT, PacketBatch, readCounters, UdpEngine } from "./loop.ts";
import { internetChecksum, type PeerRoute } from "./packet.ts";

const PORT = 8285;
const A_IP = parseIPv4("192.0.2.1");
const B_IP = parseIPv4("192.0.2.2");
const STRANGER = parseIPv4("192.0.2.66");

function packet(src: string, dst: string, opts: { ttl?: number; id?: number; size?: number } = {}) {
  const size = opts.size ?? 60;
  const p = new Uint8Array(size);
  const v = new DataView(p.buffer);
  p[0] = 0x45;
  v.setUint16(2, size);
  v.setUint16(4, opts.id ?? 1);
  p[8] = opts.ttl ?? 64;
  p[9] = 17;
  v.setUint32(12, parseIPv4(src));
  v.setUint32(16, parseIPv4(dst));
  for (let i = 20; i < size; i++) p[i] = i & 0xff;
  v.setUint16(10, internetChecksum(p, 0, 20));
  return p;
}

const routeTo = (subnet: string, publicIP: number): PeerRoute => ({
  subnet: parseIPv4Net(subnet),
  publicIP,
  port: PORT,
});

/** Two hosts: A owns 10.5.1.0/24 at 192.0.2.1, B owns 10.5.2.0/24 at 192.0.2.2. */
function twoHosts() {
  const net = new MemoryNetwork();
  const tunA = new MemoryPacketDevice();
  const tunB = new MemoryPacketDevice();
  const bindA = net.bind(A_IP, PORT);
  const bindB = net.bind(B_IP, PORT);
  const a = new UdpEngine({
    tun: tunA,
    bind: bindA,
    ownSubnet: parseIPv4Net("10.5.1.0/24"),
    mtu: 1472,
    routes: [routeTo("10.5.2.0/24", B_IP)],
  });
  const b = new UdpEngine({
    tun: tunB,
    bind: bindB,
    ownSubnet: parseIPv4Net("10.5.2.0/24"),
    mtu: 1472,
    routes: [routeTo("10.5.1.0/24", A_IP)],
  });
  return { net, tunA, tunB, bindA, bindB, a, b };
}

Deno.test("two engines carry packets both ways, decrementing TTL once on each side", () => {
  const { tunA, tunB, a, b } = twoHosts();
  tunA.inject(packet("10.5.1.7", "10.5.2.9"));
  tunB.inject(packet("10.5.2.9", "10.5.1.7", { ttl: 5 }));
  pumpUntilIdle([a, b]);
  const [atB] = tunB.take();
  const [atA] = tunA.take();
  assert.equal(atB[8], 62);
  assert.equal(atA[8], 3);
  for (const p of [atA, atB]) assert.equal(internetChecksum(p, 0, 20), 0);
  assert.deepEqual(atB.subarray(12), packet("10.5.1.7", "10.5.2.9").subarray(12));
  const ca = readCounters(a.counters);
  assert.deepEqual([ca.packetsOut, ca.bytesOut, ca.packetsIn, ca.bytesIn], [1, 60, 1, 60]);
});

Deno.test("a thousand packets cross in order in batches", () => {
  const { tunA, tunB, a, b } = twoHosts();
  for (let i = 0; i < 1000; i++) tunA.inject(packet("10.5.1.7", "10.5.2.9", { id: i }));
  pumpUntilIdle([a, b]);
  const got = tunB.take().map((p) => (p[4] << 8) | p[5]);
  assert.deepEqual(got, Array.from({ length: 1000 }, (_, i) => i));
  assert.equal(readCounters(b.counters).packetsIn, 1000);
});

Deno.test("a destination no peer owns is answered with ICMP net-unreachable into the TUN", () => {
  const { tunA, bindA, net, a } = twoHosts();
  tunA.inject(packet("10.5.1.7", "10.5.77.1"));
  pumpUntilIdle([a]);
  const [icmp] = tunA.take();
  assert.equal(icmp[9], 1);
  assert.deepEqual([icmp[20], icmp[21]], [3, 0]);
  assert.deepEqual([...icmp.subarray(16, 20)], [10, 5, 1, 7]);
  assert.deepEqual([...icmp.subarray(12, 16)], [10, 5, 77, 1], "from the unreachable address");
  const c = readCounters(a.counters);
  assert.equal(c.dropped["no-route"], 1);
  assert.equal(c.icmpUnreachable, 1);
  assert.equal(c.packetsOut, 0);
  assert.equal(bindA.queue.length + net.lost, 0, "nothing sent");
});

Deno.test("datagrams from a non-peer never reach the TUN and are counted", () => {
  const { net, tunB, a, b } = twoHosts();
  const valid = packet("10.5.1.7", "10.5.2.9");
  net.deliver(STRANGER, PORT, B_IP, PORT, valid);
  net.deliver(STRANGER, 40000, B_IP, PORT, new Uint8Array([1, 2, 3]));
  pumpUntilIdle([a, b]);
  assert.equal(tunB.take().length, 0);
  assert.equal(readCounters(b.counters).dropped["unknown-peer"], 2);
});

Deno.test("a peer sending an inner source outside its subnet is dropped as spoofed", () => {
  const { net, tunB, a, b } = twoHosts();
  net.deliver(A_IP, PORT, B_IP, PORT, packet("10.5.3.7", "10.5.2.9"));
  net.deliver(A_IP, PORT, B_IP, PORT, packet("10.5.2.8", "10.5.2.9"));
  net.deliver(A_IP, PORT, B_IP, PORT, packet("10.5.1.7", "8.8.8.8"));
  pumpUntilIdle([a, b]);
  assert.equal(tunB.take().length, 0);
  const c = readCounters(b.counters);
  assert.equal(c.dropped["spoofed-inner-source"], 2);
  assert.equal(c.dropped["wrong-destination"], 1);
});

Deno.test("TTL runs out on the sender at 1 and on the receiver at 2", () => {
  const { tunA, tunB, a, b } = twoHosts();
  tunA.inject(packet("10.5.1.7", "10.5.2.9", { ttl: 1 }));
  tunA.inject(packet("10.5.1.7", "10.5.2.9", { ttl: 2 }));
  tunA.inject(packet("10.5.1.7", "10.5.2.9", { ttl: 3 }));
  pumpUntilIdle([a, b]);
  assert.deepEqual(tunB.take().map((p) => p[8]), [1]);
  assert.equal(readCounters(a.counters).dropped["ttl-expired"], 1);
  assert.equal(readCounters(b.counters).dropped["ttl-expired"], 1);
});

Deno.test("random datagrams from a peer never throw and are all accounted for", () => {
  const { net, tunB, a, b } = twoHosts();
  let seed = 42;
  const rand = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
  const count = 5000;
  for (let i = 0; i < count; i++) {
    const len = Math.floor(rand() * 1600);
    const p = new Uint8Array(len);
    for (let j = 0; j < len; j++) p[j] = Math.floor(rand() * 256);
    if (len > 0 && rand() < 0.5) p[0] = 0x45; // look like IPv4 half of the time
    net.deliver(rand() < 0.5 ? A_IP : STRANGER, PORT, B_IP, PORT, p);
    if (i % 1000 === 999) pumpUntilIdle([a, b]);
  }
  const c = readCounters(b.counters);
  const drops = Object.values(c.dropped).reduce((x, y) => x + y, 0);
  assert.equal(drops + c.packetsIn, count);
  assert.equal(tunB.take().length, c.packetsIn);
  assert.ok(c.dropped["unknown-peer"] > 2000);
  assert.ok(c.dropped["truncated"] + c.dropped["malformed"] + c.dropped["not-ipv4"] > 1000);
});

Deno.test("setRoutes() takes effect on the next packet", () => {
  const { tunA, tunB, net, a, b } = twoHosts();
  a.setRoutes([]);
  tunA.inject(packet("10.5.1.7", "10.5.2.9"));
  pumpUntilIdle([a, b]);
  assert.equal(tunB.take().length, 0);
  assert.equal(tunA.take().length, 1, "ICMP back");
  // The subnet moves to another host at 192.0.2.3.
  const c = net.bind(parseIPv4("192.0.2.3"), PORT);
  a.setRoutes([routeTo("10.5.2.0/24", parseIPv4("192.0.2.3"))]);
  tunA.inject(packet("10.5.1.7", "10.5.2.9"));
  pumpUntilIdle([a, b]);
  assert.equal(c.queue.length, 1);
  assert.equal(tunB.take().length, 0);
  assert.equal(a.routes.size, 1);
});

Deno.test("refused sends and refused TUN writes are counted, not thrown", () => {
  const { tunA, tunB, bindA, a, b } = twoHosts();
  bindA.refuseSends = true;
  tunA.inject(packet("10.5.1.7", "10.5.2.9"));
  tunA.inject(packet("10.5.1.7", "10.5.2.9"));
  pumpUntilIdle([a, b]);
  assert.equal(readCounters(a.counters).dropped["send-failed"], 2);
  bindA.refuseSends = false;
  tunB.down = true;
  tunA.inject(packet("10.5.1.7", "10.5.2.9"));
  pumpUntilIdle([a, b]);
  assert.equal(readCounters(b.counters).dropped["tun-write-failed"], 1);
});

Deno.test("non-IPv4 and malformed packets from the TUN are dropped by reason", () => {
  const { tunA, a } = twoHosts();
  const v6 = new Uint8Array(48);
  v6[0] = 0x60;
  tunA.inject(v6);
  tunA.inject(packet("10.5.1.7", "10.5.2.9").subarray(0, 30)); // total length says 60
  pumpUntilIdle([a]);
  const c = readCounters(a.counters);
  assert.equal(c.dropped["not-ipv4"], 1);
  assert.equal(c.dropped["truncated"], 1);
});

Deno.test("oversized datagrams are cut to the slot and dropped as truncated", () => {
  const { net, tunB, a, b } = twoHosts();
  net.deliver(A_IP, PORT, B_IP, PORT, packet("10.5.1.7", "10.5.2.9", { size: 20000 }));
  pumpUntilIdle([a, b]);
  assert.equal(tunB.take().length, 0);
  assert.equal(readCounters(b.counters).dropped["truncated"], 1);
});

Deno.test("pump() surfaces a failing TUN device", () => {
  const { tunA, a } = twoHosts();
  tunA.failure = new Error("flannel0 is gone");
  assert.throws(() => a.pump(), /flannel0 is gone/);
});

Deno.test("the engine counts into a caller's shared array", () => {
  const shared = new Float64Array(new SharedArrayBuffer(COUNTER_COUNT * 8));
  const net = new MemoryNetwork();
  const tun = new MemoryPacketDevice();
  const e = new UdpEngine({
    tun,
    bind: net.bind(A_IP, PORT),
    ownSubnet: parseIPv4Net("10.5.1.0/24"),
    mtu: 1472,
    counters: shared,
  });
  tun.inject(packet("10.5.1.7", "10.9.9.9"));
  e.pump();
  assert.equal(readCounters(shared).dropped["no-route"], 1);
});

Deno.test("constructors reject sizes out of range, saying which", () => {
  assert.throws(() => new PacketBatch(0, 2048), /capacity must be 1\.\.1024, got 0/);
  assert.throws(() => new PacketBatch(8, 10), /slotSize must be 64\.\.65536, got 10/);
  const net = new MemoryNetwork();
  const base = {
    tun: new MemoryPacketDevice(),
    bind: net.bind(A_IP, PORT),
    ownSubnet: parseIPv4Net("10.5.1.0/24"),
  };
  assert.throws(() => new UdpEngine({ ...base, mtu: 20 }), /mtu must be 68\.\.65535, got 20/);
  assert.throws(
    () => new UdpEngine({ ...base, mtu: 1400, counters: new Float64Array(3) }),
    /expected length \d+, got 3/,
  );
});

// ---- offloads -------------------------------------------------------------------

/** Reference checksum check of a whole IPv4 packet: header and TCP/UDP. */
function validOnWire(p: Uint8Array): boolean {
  const sum = (b: Uint8Array) => {
    let s = 0;
    for (let i = 0; i < b.length; i += 2) s += (b[i] << 8) | (i + 1 < b.length ? b[i + 1] : 0);
    while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
    return s;
  };
  const ihl = (p[0] & 15) * 4;
  const total = (p[2] << 8) | p[3];
  if (total !== p.length || sum(p.subarray(0, ihl)) !== 0xffff) return false;
  const l4 = new Uint8Array(12 + total - ihl);
  l4.set(p.subarray(12, 20));
  l4[9] = p[9];
  l4[10] = (total - ihl) >> 8;
  l4[11] = (total - ihl) & 255;
  l4.set(p.subarray(ihl), 12);
  return sum(l4) === 0xffff;
}

/**
 * What a vnet-header TUN hands over for a TCP send of `payload` bytes:
 * virtio header (GSO_TCPV4, NEEDS_CSUM) + one IPv4/TCP packet with a partial checksum.
 */
function tsoRead(payload: number, mss = 1448, opts: { src?: string; dst?: string } = {}) {
  const hdr = 52;
  const p = new Uint8Array(10 + hdr + payload);
  const v = new DataView(p.buffer);
  v.setUint8(0, 1); // NEEDS_CSUM
  v.setUint8(1, 1); // GSO_TCPV4
  v.setUint16(2, hdr, true);
  v.setUint16(4, mss, true);
  v.setUint16(6, 20, true);
  v.setUint16(8, 16, true);
  const o = 10;
  p[o] = 0x45;
  v.setUint16(o + 2, hdr + payload);
  v.setUint16(o + 6, 0x4000);
  p[o + 8] = 64;
  p[o + 9] = 6;
  v.setUint32(o + 12, parseIPv4(opts.src ?? "10.5.1.7"));
  v.setUint32(o + 16, parseIPv4(opts.dst ?? "10.5.2.9"));
  v.setUint16(o + 10, internetChecksum(p.subarray(o), 0, 20));
  v.setUint16(o + 20, 40000);
  v.setUint16(o + 22, 5201);
  v.setUint32(o + 24, 1000);
  v.setUint32(o + 28, 77);
  p[o + 32] = 8 << 4;
  p[o + 33] = 0x18;
  v.setUint16(o + 34, 1000);
  p.set([1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2], o + 40);
  for (let i = o + hdr; i < p.length; i++) p[i] = (i * 31) & 0xff;
  return p;
}

function hosts(opts: { aVnet: boolean; aGso: boolean; bVnet: boolean; bGso: boolean }) {
  const net = new MemoryNetwork();
  net.wire = [];
  const tunA = new MemoryPacketDevice(opts.aVnet);
  const tunB = new MemoryPacketDevice(opts.bVnet);
  const a = new UdpEngine({
    tun: tunA,
    bind: net.bind(A_IP, PORT, opts.aGso),
    ownSubnet: parseIPv4Net("10.5.1.0/24"),
    mtu: 1500,
    routes: [routeTo("10.5.2.0/24", B_IP)],
  });
  const b = new UdpEngine({
    tun: tunB,
    bind: net.bind(B_IP, PORT, opts.bGso),
    ownSubnet: parseIPv4Net("10.5.2.0/24"),
    mtu: 1500,
    routes: [routeTo("10.5.1.0/24", A_IP)],
  });
  return { net, tunA, tunB, a, b };
}

Deno.test("a TSO super-packet leaves as MSS-sized IPv4 packets with valid checksums (flannel's wire format)", () => {
  for (const aGso of [false, true]) {
    const { net, tunA, tunB, a, b } = hosts({ aVnet: true, aGso, bVnet: false, bGso: false });
    tunA.inject(tsoRead(20000));
    pumpUntilIdle([a, b]);
    const wire = net.wire!;
    assert.equal(wire.length, Math.ceil(20000 / 1448), `gso ${aGso}`);
    for (const p of wire) {
      assert.ok(p.length <= 1500);
      assert.ok(validOnWire(p), `segment checksums (gso ${aGso})`);
      assert.equal(p[8], 63);
    }
    const got = tunB.take();
    assert.equal(got.length, wire.length, "a plain receiver writes each packet");
    assert.ok(got.every((p) => p[8] === 62 && validOnWire(p)));
    const c = readCounters(a.counters);
    assert.equal(c.packetsOut, wire.length);
    assert.equal(c.bytesOut, wire.reduce((n, p) => n + p.length, 0));
  }
});

Deno.test("segments from a peer are merged back into one super-packet for a vnet TUN", () => {
  const { net, tunA, tunB, a, b } = hosts({ aVnet: true, aGso: true, bVnet: true, bGso: true });
  const sent = tsoRead(30000);
  tunA.inject(sent);
  pumpUntilIdle([a, b]);
  const segments = net.wire!.length;
  const got = tunB.take();
  assert.equal(got.length, 1);
  const merged = got[0];
  assert.deepEqual([merged[0], merged[1]], [1, 1], "NEEDS_CSUM, GSO_TCPV4");
  assert.equal(merged[4] | (merged[5] << 8), 1448, "gso_size");
  assert.deepEqual(merged.subarray(10 + 52), sent.subarray(10 + 52), "payload intact");
  assert.equal(merged[10 + 8], 62);
  const c = readCounters(b.counters);
  assert.equal(c.packetsIn, segments);
  assert.equal(c.bytesIn, net.wire!.reduce((n, p) => n + p.length, 0));
});

Deno.test("a GRO receiver merges what a plain (flannel-like) sender sent packet by packet", () => {
  const { net, tunA, tunB, a, b } = hosts({ aVnet: false, aGso: false, bVnet: true, bGso: true });
  // A plain TUN hands over MSS-sized packets: take them from a segmentation first.
  const seg = hosts({ aVnet: true, aGso: false, bVnet: false, bGso: false });
  seg.tunA.inject(tsoRead(1448 * 5));
  pumpUntilIdle([seg.a, seg.b]);
  for (const p of seg.tunB.take()) tunA.inject(p);
  pumpUntilIdle([a, b]);
  assert.equal(net.wire!.length, 5);
  const got = tunB.take();
  assert.equal(got.length, 1, "merged");
  assert.equal(got[0][1], 1);
});

Deno.test("packets with a partial checksum get it completed before they leave", () => {
  const { net, tunA, a, b } = hosts({ aVnet: true, aGso: true, bVnet: false, bGso: false });
  const p = new Uint8Array(10 + 28 + 30);
  const v = new DataView(p.buffer);
  p[0] = 1; // NEEDS_CSUM, GSO_NONE
  v.setUint16(6, 20, true);
  v.setUint16(8, 6, true);
  const ip = packet("10.5.1.7", "10.5.2.9", { size: 58 });
  p.set(ip, 10); // UDP already (protocol 17)
  v.setUint16(10 + 24, 38);
  // pseudo-header sum, folded, as the kernel leaves it
  let ps = 0x0a05 + 0x0107 + 0x0a05 + 0x0209 + 17 + 38;
  while (ps > 0xffff) ps = (ps & 0xffff) + (ps >>> 16);
  v.setUint16(10 + 26, ps);
  tunA.inject(p);
  pumpUntilIdle([a, b]);
  assert.equal(net.wire!.length, 1);
  assert.ok(validOnWire(net.wire![0]));
});

Deno.test("equal-size packets to one peer share one GSO send; a shorter one closes it", () => {
  const { net, tunA, tunB, a, b } = hosts({ aVnet: true, aGso: true, bVnet: false, bGso: false });
  let sends = 0;
  const deliver = net.deliver.bind(net);
  net.deliver = (...args) => (sends++, deliver(...args));
  const withHdr = (p: Uint8Array) => ((h) => (h.set(p, 10), h))(new Uint8Array(10 + p.length));
  for (let i = 0; i < 10; i++) {
    tunA.inject(withHdr(packet("10.5.1.7", "10.5.2.9", { id: i, size: 200 })));
  }
  tunA.inject(withHdr(packet("10.5.1.7", "10.5.2.9", { id: 10, size: 100 })));
  tunA.inject(withHdr(packet("10.5.1.7", "10.5.2.9", { id: 11, size: 200 })));
  pumpUntilIdle([a, b]);
  assert.equal(sends, 2, "11 in one send, then one more");
  assert.deepEqual(
    tunB.take().map((p) => (p[4] << 8) | p[5]),
    Array.from({ length: 12 }, (_, i) => i),
  );
});

Deno.test("a vnet TUN gets ICMP errors and single packets behind an empty virtio header", () => {
  const { net, tunA, tunB, a, b } = hosts({ aVnet: true, aGso: true, bVnet: true, bGso: true });
  const withHdr = (p: Uint8Array) => ((h) => (h.set(p, 10), h))(new Uint8Array(10 + p.length));
  tunA.inject(withHdr(packet("10.5.1.7", "10.5.99.9")));
  tunA.inject(withHdr(packet("10.5.1.7", "10.5.2.9")));
  pumpUntilIdle([a, b]);
  const [icmp] = tunA.take();
  assert.deepEqual(icmp.subarray(0, 10), new Uint8Array(10));
  assert.equal(icmp[10 + 20], 3);
  const [udp] = tunB.take();
  assert.deepEqual(udp.subarray(0, 10), new Uint8Array(10));
  assert.equal(udp.length, 70);
  assert.equal(net.wire!.length, 1);
});

Deno.test("random reads from a vnet TUN and random GRO datagrams never throw", () => {
  const { net, tunA, tunB, a, b } = hosts({ aVnet: true, aGso: true, bVnet: true, bGso: true });
  let seed = 99;
  const rand = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
  for (let i = 0; i < 3000; i++) {
    const len = Math.floor(rand() * 3000);
    const p = new Uint8Array(len);
    for (let j = 0; j < len; j++) p[j] = Math.floor(rand() * 256);
    if (len > 40 && rand() < 0.7) {
      p[10] = 0x45; // plausible IPv4 behind the virtio header
      p[1] = rand() < 0.5 ? 1 : 0;
      p[26] = 10;
      p[27] = 5;
      p[28] = 2;
    }
    tunA.inject(p);
    net.deliver(A_IP, PORT, B_IP, PORT, p, Math.floor(rand() * 600));
    if (i % 500 === 499) pumpUntilIdle([a, b]);
  }
  pumpUntilIdle([a, b]);
  tunB.take();
  assert.ok(Object.values(readCounters(b.counters).dropped).reduce((x, y) => x + y, 0) > 2000);
});

Deno.test("a super-packet whose segments would not fit a datagram is dropped as malformed", () => {
  const { net, tunA, a, b } = hosts({ aVnet: true, aGso: false, bVnet: false, bGso: false });
  const p = tsoRead(30000, 20000); // gso_size beyond any slot
  tunA.inject(p);
  pumpUntilIdle([a, b]);
  assert.equal(net.wire!.length, 0);
  assert.equal(readCounters(a.counters).dropped.malformed, 1);
});
