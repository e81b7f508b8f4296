import assert from "node:assert/strict";
import { parseIPv4, parseIPv4Net } from "../lease/ip.ts";
import { MemoryNetwork, MemoryPacketDevice, pumpUntilIdle } from "./udp_fakes.ts";
import { COUNTER_COUNT, PacketBatch, readCounters, UdpEngine } from "./udp_loop.ts";
import { internetChecksum, type PeerRoute } from "./udp_packet.ts";

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
  assert.deepEqual([...icmp.subarray(12, 16)], [10, 5, 1, 0]);
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
