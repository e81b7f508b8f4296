import assert from "node:assert/strict";
import { memoryLogger } from "../../testing/memory_logger.ts";
import { Registry } from "../../core/metrics.ts";
import { FakeDatapath } from "../../testing/datapath_fake.ts";
import { RT_SCOPE_UNIVERSE } from "../../datapath/types.ts";
import { FakeClock } from "../../testing/fake_clock.ts";
import { parseNetworkConfig } from "../../lease/config.ts";
import { formatIPv4Net, parseIPv4, parseIPv4Net } from "../../core/ip.ts";
import { encodeLeaseAttrs, type Lease, type LeaseAttrs } from "../../lease/types.ts";
import { ConfigError } from "../../core/errors.ts";
import type { BackendContext, Network } from "../types.ts";
import { parseUdpConfig, udpBackend, udpRoutes } from "./backend.ts";
import { MemoryNetwork, MemoryUdpIo } from "../../testing/udp_fakes.ts";
import { internetChecksum } from "./packet.ts";

const NET = '{"Network":"10.5.0.0/16","Backend":{"Type":"udp"}}';

function packet(src: string, dst: string): Uint8Array {
  const p = new Uint8Array(40);
  const v = new DataView(p.buffer);
  p[0] = 0x45;
  v.setUint16(2, 40);
  p[8] = 64;
  p[9] = 17;
  v.setUint32(12, parseIPv4(src));
  v.setUint32(16, parseIPv4(dst));
  v.setUint16(10, internetChecksum(p, 0, 20));
  return p;
}

interface Host {
  dp: FakeDatapath;
  io: MemoryUdpIo;
  ctx: BackendContext;
  acquired: LeaseAttrs[];
  metrics: Registry;
  log: ReturnType<typeof memoryLogger>;
  clock: FakeClock;
}

function host(
  net: MemoryNetwork,
  ip: string,
  subnet: string,
  config = NET,
  extMtu = 1500,
  offload = false,
): Host {
  const dp = new FakeDatapath();
  dp.addLink({ name: "eth0", mtu: extMtu, up: true });
  const io = new MemoryUdpIo(dp, net, offload, offload);
  const acquired: LeaseAttrs[] = [];
  const metrics = new Registry();
  const log = memoryLogger();
  const clock = new FakeClock();
  const ctx: BackendContext = {
    config: parseNetworkConfig(config),
    extIface: { name: "eth0", index: 2, mtu: extMtu, ifaceAddr: ip, extAddr: ip },
    acquire: (attrs) => {
      acquired.push(attrs);
      return Promise.resolve({ subnet: parseIPv4Net(subnet), attrs, expiration: null });
    },
    logger: log,
    metrics,
    clock,
    signal: new AbortController().signal,
  };
  return { dp, io, ctx, acquired, metrics, log, clock };
}

function leaseOf(n: Network): Lease {
  return n.lease;
}

Deno.test("register() publishes flannel's udp lease attributes: PublicIP only", async () => {
  const h = host(new MemoryNetwork(), "192.0.2.1", "10.5.1.0/24");
  await udpBackend({ datapath: h.dp, io: h.io }).register(h.ctx);
  assert.equal(encodeLeaseAttrs(h.acquired[0]), '{"PublicIP":"192.0.2.1","PublicIPv6":null}');
});

Deno.test("register() sets up flannel0 with <subnet.ip>/32, MTU ext-28, up, and the network route", async () => {
  const h = host(new MemoryNetwork(), "192.0.2.1", "10.5.1.0/24");
  const n = await udpBackend({ datapath: h.dp, io: h.io }).register(h.ctx);
  assert.equal(n.mtu, 1472);
  const link = (await h.dp.link("flannel0"))!;
  assert.equal(link.mtu, 1472);
  assert.equal(link.up, true);
  assert.deepEqual(link.addresses, [{ ip: parseIPv4("10.5.1.0"), prefixLen: 32 }]);
  assert.deepEqual(h.dp.routes(), ["10.5.0.0/16 dev flannel0"]);
  const sync = h.dp.calls.find((c) => c.method === "sync")!;
  assert.deepEqual(
    sync.arg,
    new Map([["network", {
      routes: [{ dst: parseIPv4Net("10.5.0.0/16"), device: "flannel0", scope: RT_SCOPE_UNIVERSE }],
    }]]),
  );
  assert.equal(n.notReadyReason?.(), "udp packet engine is not running");
});

Deno.test("parseUdpConfig() reads Port and MTU case-insensitively with flannel's default", () => {
  const cases: [string, number, number | undefined][] = [
    ['{"Type":"udp"}', 8285, undefined],
    ['{"Type":"udp","Port":9000}', 9000, undefined],
    ['{"type":"udp","port":7000,"mtu":1400}', 7000, 1400],
  ];
  for (const [backend, port, mtu] of cases) {
    const cfg = parseUdpConfig(
      parseNetworkConfig(`{"Network":"10.5.0.0/16","Backend":${backend}}`),
    );
    assert.deepEqual(cfg, { port, mtu }, backend);
  }
});

Deno.test("parseUdpConfig() rejects bad options and IPv6 with the key in the error", () => {
  const cases: [string, RegExp][] = [
    ['{"Network":"10.5.0.0/16","Backend":{"Type":"udp","Port":70000}}', /Backend\.Port.*70000/],
    ['{"Network":"10.5.0.0/16","Backend":{"Type":"udp","Port":"8285"}}', /Backend\.Port/],
    ['{"Network":"10.5.0.0/16","Backend":{"Type":"udp","MTU":20}}', /Backend\.MTU.*20/],
    [
      '{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10::/48","Backend":{"Type":"udp"}}',
      /does not carry IPv6/,
    ],
  ];
  for (const [text, re] of cases) {
    assert.throws(() => parseUdpConfig(parseNetworkConfig(text)), (e: Error) => {
      assert.ok(e instanceof ConfigError, `${text}: ${e}`);
      assert.match(e.message, re);
      return true;
    });
  }
});

Deno.test("register() uses the MTU override and refuses an external MTU too small", async () => {
  const h = host(
    new MemoryNetwork(),
    "192.0.2.1",
    "10.5.1.0/24",
    '{"Network":"10.5.0.0/16","Backend":{"Type":"udp","MTU":1400}}',
  );
  const n = await udpBackend({ datapath: h.dp, io: h.io }).register(h.ctx);
  assert.equal(n.mtu, 1400);
  const tiny = host(new MemoryNetwork(), "192.0.2.1", "10.5.1.0/24", NET, 90);
  await assert.rejects(
    udpBackend({ datapath: tiny.dp, io: tiny.io }).register(tiny.ctx),
    /MTU would be 62 .*set "Backend.MTU"/,
  );
});

Deno.test("udpRoutes() maps udp peers and skips other backend types and bad addresses", () => {
  const lease = (subnet: string, attrs: LeaseAttrs): Lease => ({
    subnet: parseIPv4Net(subnet),
    attrs,
    expiration: null,
  });
  const { routes, skipped } = udpRoutes([
    lease("10.5.2.0/24", { publicIP: "192.0.2.2" }),
    lease("10.5.3.0/24", { publicIP: "192.0.2.3", backendType: "udp" }),
    lease("10.5.4.0/24", { publicIP: "192.0.2.4", backendType: "vxlan", backendData: { VNI: 1 } }),
    lease("10.5.5.0/24", { publicIP: "fd00::5" }),
  ], 8285);
  assert.deepEqual(routes.map((r) => [formatIPv4Net(r.subnet), r.publicIP, r.port]), [
    ["10.5.2.0/24", parseIPv4("192.0.2.2"), 8285],
    ["10.5.3.0/24", parseIPv4("192.0.2.3"), 8285],
  ]);
  assert.deepEqual(skipped.map((s) => s.reason), [
    "backend type is vxlan, not udp",
    'PublicIP "fd00::5" is not IPv4',
  ]);
});

Deno.test("two registered hosts carry packets once peers are synced; metrics count them", async () => {
  const net = new MemoryNetwork();
  const a = host(net, "192.0.2.1", "10.5.1.0/24");
  const b = host(net, "192.0.2.2", "10.5.2.0/24");
  const na = await udpBackend({ datapath: a.dp, io: a.io }).register(a.ctx);
  const nb = await udpBackend({ datapath: b.dp, io: b.io }).register(b.ctx);
  const stop = new AbortController();
  const runs = [na.run(stop.signal), nb.run(stop.signal)];
  await a.clock.advance(0);
  await na.syncPeers([leaseOf(nb)]);
  await nb.syncPeers([leaseOf(na)]);
  assert.equal(na.notReadyReason?.(), null);
  assert.deepEqual([...na.peerStates!()], [["10.5.2.0/24", { state: "applied" }]]);

  a.io.tun.inject(packet("10.5.1.9", "10.5.2.7"));
  a.io.tun.inject(packet("10.5.1.9", "10.5.9.9")); // nobody's
  net.deliver(
    parseIPv4("192.0.2.99"),
    8285,
    parseIPv4("192.0.2.2"),
    8285,
    packet("10.5.1.9", "10.5.2.7"),
  );
  MemoryUdpIo.pump(a.io, b.io);
  assert.equal(b.io.tun.take().length, 1);
  assert.equal(a.io.tun.take().length, 1, "ICMP net-unreachable");

  await a.clock.advance(1000);
  await b.clock.advance(1000);
  const ma = a.metrics.render();
  const mb = b.metrics.render();
  assert.match(ma, /weft_udp_packets_total\{direction="out"\} 1\n/);
  assert.match(ma, /weft_udp_dropped_packets_total\{reason="no-route"\} 1\n/);
  assert.match(ma, /weft_udp_icmp_unreachable_total 1\n/);
  assert.match(mb, /weft_udp_packets_total\{direction="in"\} 1\n/);
  assert.match(mb, /weft_udp_bytes_total\{direction="in"\} 40\n/);
  assert.match(mb, /weft_udp_dropped_packets_total\{reason="unknown-peer"\} 1\n/);
  assert.match(mb, /weft_udp_dropped_packets_total\{reason="spoofed-inner-source"\} 0\n/);

  // A peer that leaves is no longer routed.
  await na.syncPeers([]);
  a.io.tun.inject(packet("10.5.1.9", "10.5.2.7"));
  MemoryUdpIo.pump(a.io, b.io);
  assert.equal(b.io.tun.take().length, 0);

  stop.abort();
  await Promise.all(runs);
  assert.equal(a.io.open.size, 0, "flannel0 closed on stop");
});

Deno.test("syncPeers() warns once about a peer of another backend type", async () => {
  const h = host(new MemoryNetwork(), "192.0.2.1", "10.5.1.0/24");
  const n = await udpBackend({ datapath: h.dp, io: h.io }).register(h.ctx);
  const vx: Lease = {
    subnet: parseIPv4Net("10.5.4.0/24"),
    attrs: { publicIP: "192.0.2.4", backendType: "vxlan" },
    expiration: null,
  };
  await n.syncPeers([vx]);
  await n.syncPeers([vx]);
  assert.equal(h.log.lines.filter((l) => l.includes("skipping peer")).length, 1);
  assert.deepEqual([...n.peerStates!()], [["10.5.4.0/24", {
    state: "skipped",
    detail: "backend type is vxlan, not udp",
  }]]);
});

Deno.test("run() recreates flannel0 and restarts the engine after it fails", async () => {
  const h = host(new MemoryNetwork(), "192.0.2.1", "10.5.1.0/24");
  const n = await udpBackend({ datapath: h.dp, io: h.io }).register(h.ctx);
  const stop = new AbortController();
  const running = n.run(stop.signal);
  await h.clock.advance(0);
  assert.equal(h.io.workers.length, 1);
  h.io.workers[0].crash(new Error("read(TUN) failed with EBADFD"));
  await h.clock.advance(0);
  assert.equal(n.notReadyReason?.(), "udp packet engine is not running");
  assert.ok(h.log.lines.some((l) => l.includes("recreating the TUN device")));
  await h.clock.advance(1000);
  assert.equal(h.io.workers.length, 2);
  assert.equal(n.notReadyReason?.(), null);
  const link = (await h.dp.link("flannel0"))!;
  assert.equal(link.mtu, 1472);
  assert.deepEqual(link.addresses.map((a) => a.ip), [parseIPv4("10.5.1.0")]);
  stop.abort();
  await running;
});

Deno.test("run() puts back a route, an address and the up state someone changed", async () => {
  const h = host(new MemoryNetwork(), "192.0.2.1", "10.5.1.0/24");
  const n = await udpBackend({ datapath: h.dp, io: h.io }).register(h.ctx);
  const stop = new AbortController();
  const running = n.run(stop.signal);
  await h.clock.advance(0);
  await h.dp.deleteRoute({ dst: parseIPv4Net("10.5.0.0/16") });
  assert.deepEqual(h.dp.routes(), []);
  await h.clock.advance(50);
  assert.deepEqual(h.dp.routes(), ["10.5.0.0/16 dev flannel0"], "route restored");
  await h.dp.deleteAddress("flannel0", parseIPv4Net("10.5.1.0/32"));
  await h.dp.setLink("flannel0", { up: false });
  await h.clock.advance(50);
  const link = (await h.dp.link("flannel0"))!;
  assert.deepEqual([link.up, link.addresses.map((a) => a.ip)], [true, [parseIPv4("10.5.1.0")]]);
  assert.deepEqual(h.dp.routes(), ["10.5.0.0/16 dev flannel0"], "route restored after down");
  assert.ok(h.log.lines.some((l) => l.includes("restored the TUN device")));
  stop.abort();
  await running;
});

Deno.test("with offloads the engine gets a virtio-header TUN and GSO socket: 64 KiB in, one write out", async () => {
  const net = new MemoryNetwork();
  net.wire = [];
  const a = host(net, "192.0.2.1", "10.5.1.0/24", NET, 1500, true);
  const b = host(net, "192.0.2.2", "10.5.2.0/24", NET, 1500, true);
  const na = await udpBackend({ datapath: a.dp, io: a.io }).register(a.ctx);
  const nb = await udpBackend({ datapath: b.dp, io: b.io }).register(b.ctx);
  const stop = new AbortController();
  const runs = [na.run(stop.signal), nb.run(stop.signal)];
  await a.clock.advance(0);
  await na.syncPeers([leaseOf(nb)]);
  await nb.syncPeers([leaseOf(na)]);
  // A TCP super-packet as the kernel hands it over with TSO on.
  const payload = 60000;
  const p = new Uint8Array(10 + 40 + payload);
  const v = new DataView(p.buffer);
  p[1] = 1; // GSO_TCPV4
  v.setUint16(4, 1432, true); // gso_size
  p[10] = 0x45;
  v.setUint16(12, 40 + payload);
  p[18] = 64;
  p[19] = 6;
  v.setUint32(22, parseIPv4("10.5.1.9"));
  v.setUint32(26, parseIPv4("10.5.2.7"));
  v.setUint16(20, internetChecksum(p.subarray(10), 0, 20));
  p[42] = 5 << 4;
  p[43] = 0x10;
  a.io.tun.inject(p);
  MemoryUdpIo.pump(a.io, b.io);
  assert.equal(net.wire.length, Math.ceil(payload / 1432), "MSS-sized packets on the wire");
  const got = b.io.tun.take();
  assert.equal(got.length, 1, "merged again for the receiving TUN");
  assert.equal(got[0].length, 10 + 40 + payload);
  stop.abort();
  await Promise.all(runs);
});
