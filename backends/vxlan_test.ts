import assert from "node:assert/strict";
import { FakeClock } from "../testing/fake_clock.ts";
import { parseNetworkConfig } from "../lease/config.ts";
import { formatIPv4, formatIPv4Net, parseIPv4, parseIPv4Net } from "../core/ip.ts";
import { encodeLeaseAttrs, type Lease } from "../lease/types.ts";
import { ConfigError } from "../core/errors.ts";
import { FakeDatapath } from "../testing/datapath_fake.ts";
import type { Route } from "../datapath/types.ts";
import { peerLease, testContext } from "../testing/routing.ts";
import type { ExternalInterface } from "../datapath/iface.ts";
import {
  parseVxlanConfig,
  parseVxlanLeaseData,
  randomMac,
  vxlanBackend,
  vxlanDesiredState,
  vxlanIncompatibility,
  type VxlanNetwork,
} from "./vxlan.ts";

const ip = parseIPv4;
const net = parseIPv4Net;

function setup(options: { backend?: Record<string, unknown>; previousLease?: Lease } = {}) {
  const dp = new FakeDatapath({ random: () => 0.5 });
  const eth0 = dp.addLink({ name: "eth0", mtu: 1500, up: true });
  const ext: ExternalInterface = {
    name: "eth0",
    index: eth0.index,
    mtu: 1500,
    ifaceAddr: "192.0.2.11",
    extAddr: "192.0.2.11",
  };
  const clock = new FakeClock();
  const ctx = testContext({
    backend: options.backend ?? { Type: "vxlan" },
    ext,
    subnet: "10.5.1.0/24",
    previousLease: options.previousLease,
    clock,
  });
  return { dp, eth0, ext, ctx, clock };
}

async function seedUnderlay(dp: FakeDatapath, index: number) {
  await dp.addAddresses([{ index, ip: ip("192.0.2.11"), prefixLen: 24 }]);
}

const A = peerLease("10.5.2.0/24", "192.0.2.12", "vxlan", "02:00:00:00:00:02");
const B = peerLease("10.5.3.0/24", "192.0.2.13", "vxlan", "02:00:00:00:00:03");
const FAR = peerLease("10.5.4.0/24", "198.51.100.4", "vxlan", "02:00:00:00:00:04");

function overlayRoutes(routes: Route[]): string[] {
  return routes
    .filter((r) => r.dst.prefixLen === 24 && (r.dst.ip >>> 16) === 0x0a05)
    .map((r) =>
      `${formatIPv4Net(r.dst)} via ${formatIPv4(r.gateway ?? 0)} dev ${r.index}${
        r.onlink ? " onlink" : ""
      }`
    )
    .sort();
}

Deno.test("parseVxlanConfig applies flannel's defaults and reads keys case-insensitively", () => {
  const table: [Record<string, unknown>, object][] = [
    [{ Type: "vxlan" }, {
      vni: 1,
      port: 8472,
      mtu: 0,
      gbp: false,
      learning: false,
      directRouting: false,
    }],
    [
      {
        type: "vxlan",
        vni: 4,
        PORT: 4789,
        mtu: 9000,
        gbp: true,
        Learning: true,
        directrouting: true,
      },
      { vni: 4, port: 4789, mtu: 9000, gbp: true, learning: true, directRouting: true },
    ],
    [{ Type: "vxlan", Port: 0 }, {
      vni: 1,
      port: 8472,
      mtu: 0,
      gbp: false,
      learning: false,
      directRouting: false,
    }],
  ];
  for (const [backend, want] of table) {
    const cfg = parseNetworkConfig(JSON.stringify({ Network: "10.5.0.0/16", Backend: backend }));
    assert.deepEqual(parseVxlanConfig(cfg), want, JSON.stringify(backend));
  }
  const bad = parseNetworkConfig('{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","VNI":"1"}}');
  assert.throws(
    () => parseVxlanConfig(bad),
    (e) => e instanceof ConfigError && e.path === "Backend.VNI",
  );
});

Deno.test("parseVxlanLeaseData accepts flannel's BackendData and explains what is wrong", () => {
  assert.deepEqual(parseVxlanLeaseData({ VNI: 1, VtepMAC: "C6:D2:32:6F:8F:44" }), {
    vni: 1,
    vtepMac: "c6:d2:32:6f:8f:44",
  });
  assert.deepEqual(parseVxlanLeaseData({ vni: 1, vtepmac: "c6:d2:32:6f:8f:44" }), {
    vni: 1,
    vtepMac: "c6:d2:32:6f:8f:44",
  });
  for (const bad of [null, "x", [], { VNI: 1 }, { VNI: 1, VtepMAC: "zz" }]) {
    assert.ok("error" in parseVxlanLeaseData(bad), JSON.stringify(bad));
  }
});

Deno.test("vxlanDesiredState gives each vxlan peer a neighbour, an fdb entry and an onlink route", () => {
  const own = peerLease("10.5.1.0/24", "192.0.2.11", "vxlan", "02:00:00:00:00:01");
  const peers = [
    own,
    A,
    peerLease("10.5.5.0/24", "192.0.2.15", "host-gw"),
    peerLease("10.5.6.0/24", "192.0.2.16"),
    {
      ...peerLease("10.5.7.0/24", "192.0.2.17", "vxlan"),
      attrs: { publicIP: "192.0.2.17", backendType: "vxlan", backendData: { VNI: 1 } },
    },
    peerLease("10.5.8.0/24", "fd00::1", "vxlan"),
  ];
  const d = vxlanDesiredState(own, peers, { linkIndex: 7, extIndex: 2, directNets: [] });
  assert.deepEqual(d.routes, [{
    dst: net("10.5.2.0/24"),
    gateway: ip("10.5.2.0"),
    index: 7,
    onlink: true,
  }]);
  assert.deepEqual(d.neighbours, [{ index: 7, ip: ip("10.5.2.0"), mac: "02:00:00:00:00:02" }]);
  assert.deepEqual(d.fdb, [{ index: 7, mac: "02:00:00:00:00:02", dst: ip("192.0.2.12") }]);
  assert.deepEqual(d.skipped.map((s) => formatIPv4Net(s.lease.subnet!)), [
    "10.5.5.0/24",
    "10.5.6.0/24",
    "10.5.7.0/24",
    "10.5.8.0/24",
  ]);
  assert.match(d.skipped[0].reason, /"host-gw", not "vxlan"/);
  assert.match(d.skipped[1].reason, /"udp", not "vxlan"/);
});

Deno.test("vxlanDesiredState routes peers on a connected prefix directly when DirectRouting is on", () => {
  const own = peerLease("10.5.1.0/24", "192.0.2.11", "vxlan");
  const d = vxlanDesiredState(own, [A, FAR], {
    linkIndex: 7,
    extIndex: 2,
    directNets: [net("192.0.2.0/24")],
  });
  assert.deepEqual(d.routes, [
    { dst: net("10.5.2.0/24"), gateway: ip("192.0.2.12"), index: 2 },
    { dst: net("10.5.4.0/24"), gateway: ip("10.5.4.0"), index: 7, onlink: true },
  ]);
  assert.deepEqual(d.neighbours.map((n) => formatIPv4(n.ip)), ["10.5.4.0"]);
  assert.deepEqual(d.fdb.map((e) => formatIPv4(e.dst!)), ["198.51.100.4"]);
});

Deno.test("vxlanIncompatibility names the first differing setting", () => {
  const base = {
    index: 5,
    name: "flannel.1",
    kind: "vxlan",
    mtu: 1450,
    mac: "02:00:00:00:00:01",
    up: true,
    flags: 1,
    master: null,
    vxlan: { vni: 1, local: ip("192.0.2.11"), link: 2, port: 8472, learning: false, gbp: false },
  };
  const want = { name: "flannel.1", vni: 1, port: 8472, local: ip("192.0.2.11"), link: 2 };
  assert.equal(vxlanIncompatibility(base, want), null);
  const table: [object, RegExp][] = [
    [{ kind: "bridge", vxlan: null }, /bridge, not vxlan/],
    [{ vxlan: { ...base.vxlan, vni: 2 } }, /VNI 2, want 1/],
    [{ vxlan: { ...base.vxlan, link: 3 } }, /underlay device index 3, want 2/],
    [{ vxlan: { ...base.vxlan, local: ip("192.0.2.99") } }, /local address 192\.0\.2\.99/],
    [{ vxlan: { ...base.vxlan, port: 4789 } }, /port 4789, want 8472/],
    [{ vxlan: { ...base.vxlan, gbp: true } }, /gbp true/],
    [{ vxlan: { ...base.vxlan, learning: true } }, /learning true/],
  ];
  for (const [patch, re] of table) {
    assert.match(vxlanIncompatibility({ ...base, ...patch }, want) ?? "", re);
  }
});

Deno.test("randomMac makes locally administered unicast addresses", () => {
  for (const r of [0, 0.5, 0.999]) {
    const mac = randomMac(() => r);
    const first = parseInt(mac.slice(0, 2), 16);
    assert.equal(first & 0x03, 0x02, mac);
  }
});

Deno.test("register creates flannel.1 as flannel does and publishes flannel's lease attributes", async () => {
  const { dp, eth0, ctx } = setup();
  const network =
    (await vxlanBackend({ datapath: dp, random: () => 0.25 }).register(ctx)) as VxlanNetwork;
  const link = (await dp.getLink("flannel.1"))!;
  assert.equal(link.mtu, 1450);
  assert.equal(link.up, true);
  assert.equal(link.mac, "42:40:40:40:40:40");
  assert.deepEqual(link.vxlan, {
    vni: 1,
    local: ip("192.0.2.11"),
    link: eth0.index,
    port: 8472,
    learning: false,
    gbp: false,
  });
  assert.deepEqual(await dp.listAddresses(link.index), [{
    index: link.index,
    ip: ip("10.5.1.0"),
    prefixLen: 32,
  }]);
  assert.equal(network.mtu, 1450);
  assert.equal(network.vtepMac, "42:40:40:40:40:40");
  assert.equal(
    encodeLeaseAttrs(ctx.acquired[0]),
    '{"PublicIP":"192.0.2.11","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"42:40:40:40:40:40"}}',
  );
});

Deno.test("register honours VNI, Port, MTU, GBP and Learning", async () => {
  const { dp, ctx } = setup({
    backend: { Type: "vxlan", VNI: 42, Port: 4789, MTU: 1400, GBP: true, Learning: true },
  });
  const network = await vxlanBackend({ datapath: dp }).register(ctx);
  const link = (await dp.getLink("flannel.42"))!;
  assert.equal(link.mtu, 1350);
  assert.equal(network.mtu, 1350);
  assert.equal(link.vxlan?.vni, 42);
  assert.equal(link.vxlan?.port, 4789);
  assert.equal(link.vxlan?.gbp, true);
  assert.equal(link.vxlan?.learning, true);
  assert.deepEqual(ctx.acquired[0].backendData, { VNI: 42, VtepMAC: link.mac });
});

Deno.test("register keeps the MAC of an existing matching device and rewrites nothing", async () => {
  const { dp, ctx } = setup();
  const first = await vxlanBackend({ datapath: dp }).register(ctx) as VxlanNetwork;
  await first.syncPeers([A, B]);
  const before = dp.writeCount();
  const again = setup();
  const ctx2 = { ...again.ctx, extIface: ctx.extIface };
  const second = await vxlanBackend({ datapath: dp, random: () => 0.9 }).register(
    ctx2,
  ) as VxlanNetwork;
  await second.syncPeers([A, B]);
  assert.equal(second.vtepMac, first.vtepMac);
  assert.equal(
    dp.writeCount(),
    before,
    `restart wrote: ${JSON.stringify(dp.writes.slice(before))}`,
  );
});

Deno.test("register takes the VtepMAC from the previous lease when there is no device", async () => {
  const previousLease = peerLease("10.5.1.0/24", "192.0.2.11", "vxlan", "0e:11:22:33:44:55");
  const { dp, ctx } = setup({ previousLease });
  const network = await vxlanBackend({ datapath: dp }).register(ctx) as VxlanNetwork;
  assert.equal(network.vtepMac, "0e:11:22:33:44:55");
  assert.equal((await dp.getLink("flannel.1"))?.mac, "0e:11:22:33:44:55");
});

Deno.test("register recreates a mismatched device with the same MAC", async () => {
  const { dp, eth0, ctx } = setup();
  const old = await dp.createVxlan({
    name: "flannel.1",
    vni: 9,
    port: 4789,
    local: ip("192.0.2.11"),
    link: eth0.index,
    mac: "0a:00:00:00:00:09",
    up: true,
  });
  await dp.addAddresses([{ index: old.index, ip: ip("10.5.99.0"), prefixLen: 32 }]);
  const network = await vxlanBackend({ datapath: dp }).register(ctx) as VxlanNetwork;
  const link = (await dp.getLink("flannel.1"))!;
  assert.notEqual(link.index, old.index);
  assert.equal(link.vxlan?.vni, 1);
  assert.equal(link.vxlan?.port, 8472);
  assert.equal(link.mac, "0a:00:00:00:00:09");
  assert.equal(network.vtepMac, "0a:00:00:00:00:09");
  assert.ok(
    ctx.logger.lines.some((l) => /incompatible configuration/.test(l) && /VNI 9, want 1/.test(l)),
  );
});

Deno.test("register removes addresses of an old subnet from the device", async () => {
  const { dp, eth0, ctx } = setup();
  const link = await dp.createVxlan({
    name: "flannel.1",
    vni: 1,
    port: 8472,
    local: ip("192.0.2.11"),
    link: eth0.index,
    up: true,
  });
  await dp.addAddresses([{ index: link.index, ip: ip("10.5.77.0"), prefixLen: 32 }]);
  await vxlanBackend({ datapath: dp }).register(ctx);
  assert.deepEqual(await dp.listAddresses(link.index), [{
    index: link.index,
    ip: ip("10.5.1.0"),
    prefixLen: 32,
  }]);
});

Deno.test("syncPeers installs peers, a second sync writes nothing, stale peers are removed", async () => {
  const { dp, ctx } = setup();
  const network = await vxlanBackend({ datapath: dp }).register(ctx) as VxlanNetwork;
  const vx = network.deviceIndex();
  await network.syncPeers([A, B]);
  assert.deepEqual(overlayRoutes(await dp.listRoutes()), [
    `10.5.2.0/24 via 10.5.2.0 dev ${vx} onlink`,
    `10.5.3.0/24 via 10.5.3.0 dev ${vx} onlink`,
  ]);
  assert.deepEqual(
    (await dp.listNeighbours(vx)).map((n) => `${formatIPv4(n.ip)} ${n.mac}`).sort(),
    [
      "10.5.2.0 02:00:00:00:00:02",
      "10.5.3.0 02:00:00:00:00:03",
    ],
  );
  assert.deepEqual((await dp.listFdb(vx)).map((e) => `${e.mac} ${formatIPv4(e.dst!)}`).sort(), [
    "02:00:00:00:00:02 192.0.2.12",
    "02:00:00:00:00:03 192.0.2.13",
  ]);

  const before = dp.writeCount();
  const r = await network.resync();
  assert.deepEqual(r, { added: 0, removed: 0, failed: 0 });
  assert.equal(dp.writeCount(), before);

  await network.syncPeers([A]);
  assert.deepEqual(overlayRoutes(await dp.listRoutes()), [
    `10.5.2.0/24 via 10.5.2.0 dev ${vx} onlink`,
  ]);
  assert.deepEqual((await dp.listNeighbours(vx)).map((n) => formatIPv4(n.ip)), ["10.5.2.0"]);
  assert.deepEqual((await dp.listFdb(vx)).map((e) => e.mac), ["02:00:00:00:00:02"]);
  // Only B's three entries were deleted; A was not rewritten.
  const writes = dp.writes.slice(before).map((w) => w.method);
  assert.deepEqual(writes, ["deleteRoutes", "deleteNeighbours", "deleteFdb"]);
});

Deno.test("syncPeers follows a peer's new PublicIP and new VtepMAC", async () => {
  const { dp, ctx } = setup();
  const network = await vxlanBackend({ datapath: dp }).register(ctx) as VxlanNetwork;
  const vx = network.deviceIndex();
  await network.syncPeers([A]);
  await network.syncPeers([peerLease("10.5.2.0/24", "192.0.2.22", "vxlan", "02:00:00:00:00:02")]);
  assert.deepEqual((await dp.listFdb(vx)).map((e) => formatIPv4(e.dst!)), ["192.0.2.22"]);
  await network.syncPeers([peerLease("10.5.2.0/24", "192.0.2.22", "vxlan", "02:00:00:00:00:22")]);
  assert.deepEqual((await dp.listNeighbours(vx)).map((n) => n.mac), ["02:00:00:00:00:22"]);
  assert.deepEqual((await dp.listFdb(vx)).map((e) => `${e.mac} ${formatIPv4(e.dst!)}`), [
    "02:00:00:00:00:22 192.0.2.22",
  ]);
});

Deno.test("syncPeers leaves routes it does not own alone", async () => {
  const { dp, eth0, ctx } = setup();
  await seedUnderlay(dp, eth0.index);
  const network = await vxlanBackend({ datapath: dp }).register(ctx) as VxlanNetwork;
  const bridge = await dp.createBridge({ name: "cni0", up: true });
  const foreign: Route[] = [
    { dst: net("10.5.1.0/24"), index: bridge.index }, // own subnet, on the pod bridge
    { dst: net("172.16.0.0/16"), gateway: ip("192.0.2.1"), index: eth0.index }, // outside Network
    { dst: net("10.5.9.0/24"), index: bridge.index }, // inside Network, but another device
  ];
  await dp.replaceRoutes(foreign);
  await network.syncPeers([A]);
  const routes = await dp.listRoutes();
  for (const f of foreign) {
    assert.ok(
      routes.some((r) => r.dst.ip === f.dst.ip && r.index === f.index),
      formatIPv4Net(f.dst),
    );
  }
});

Deno.test("DirectRouting routes same-L2 peers via their PublicIP and the rest over VXLAN", async () => {
  const { dp, eth0, ctx } = setup({ backend: { Type: "vxlan", DirectRouting: true } });
  await seedUnderlay(dp, eth0.index);
  const network = await vxlanBackend({ datapath: dp }).register(ctx) as VxlanNetwork;
  const vx = network.deviceIndex();
  await dp.replaceRoutes([{
    dst: net("198.51.100.0/24"),
    gateway: ip("192.0.2.1"),
    index: eth0.index,
  }]);
  await network.syncPeers([A, FAR]);
  assert.deepEqual(overlayRoutes(await dp.listRoutes()), [
    `10.5.2.0/24 via 192.0.2.12 dev ${eth0.index}`,
    `10.5.4.0/24 via 10.5.4.0 dev ${vx} onlink`,
  ]);
  assert.deepEqual((await dp.listFdb(vx)).map((e) => e.mac), ["02:00:00:00:00:04"]);
});

Deno.test("peers of another backend type are skipped with one warning each", async () => {
  const { dp, ctx } = setup();
  const network = await vxlanBackend({ datapath: dp }).register(ctx) as VxlanNetwork;
  const other = peerLease("10.5.5.0/24", "192.0.2.15", "host-gw");
  await network.syncPeers([A, other]);
  await network.syncPeers([A, other]);
  const warnings = ctx.logger.lines.filter((l) => /skipping peer lease/.test(l));
  assert.equal(warnings.length, 1);
  assert.match(warnings[0], /10\.5\.5\.0\/24/);
  assert.equal(overlayRoutes(await dp.listRoutes()).length, 1);
});

async function startRun(network: VxlanNetwork, clock: FakeClock) {
  const ac = new AbortController();
  const running = network.run(ac.signal);
  await clock.advance(0);
  return {
    /** Advance fake time until `check` passes (at most ~1 s of fake time). */
    async until(check: () => Promise<boolean>) {
      for (let i = 0; i < 50; i++) {
        if (await check()) return;
        await clock.advance(20);
      }
      assert.fail("the datapath was not repaired within 1 s of fake time");
    },
    async stop() {
      ac.abort();
      await running;
    },
  };
}

Deno.test("run restores a deleted route, neighbour and fdb entry", async () => {
  const { dp, ctx, clock } = setup();
  const network = await vxlanBackend({ datapath: dp, resyncIntervalMs: 0 }).register(
    ctx,
  ) as VxlanNetwork;
  await network.syncPeers([A, B]);
  const vx = network.deviceIndex();
  const r = await startRun(network, clock);
  try {
    await dp.deleteRoutes([{ dst: net("10.5.2.0/24") }]);
    await r.until(async () => overlayRoutes(await dp.listRoutes()).length === 2);
    await dp.deleteNeighbours([{ index: vx, ip: ip("10.5.3.0"), mac: null }]);
    await r.until(async () => (await dp.listNeighbours(vx)).length === 2);
    await dp.deleteFdb([{ index: vx, mac: "02:00:00:00:00:02", dst: ip("192.0.2.12") }]);
    await r.until(async () => (await dp.listFdb(vx)).length === 2);
    await dp.replaceNeighbours([{ index: vx, ip: ip("10.5.3.0"), mac: "02:ba:ad:00:00:00" }]);
    await r.until(async () =>
      (await dp.listNeighbours(vx)).every((n) => n.mac !== "02:ba:ad:00:00:00")
    );
  } finally {
    await r.stop();
  }
});

Deno.test("run recreates a deleted device with its MAC, address and peers", async () => {
  const { dp, ctx, clock } = setup();
  const network = await vxlanBackend({ datapath: dp, resyncIntervalMs: 0 }).register(
    ctx,
  ) as VxlanNetwork;
  await network.syncPeers([A, B]);
  const old = network.deviceIndex();
  const r = await startRun(network, clock);
  try {
    await dp.deleteLink(old);
    await r.until(async () => (await dp.getLink("flannel.1")) !== null);
    await r.until(async () => overlayRoutes(await dp.listRoutes()).length === 2);
    const link = (await dp.getLink("flannel.1"))!;
    assert.notEqual(link.index, old);
    assert.equal(network.deviceIndex(), link.index);
    assert.equal(link.mac, network.vtepMac);
    assert.equal(link.up, true);
    assert.deepEqual(await dp.listAddresses(link.index), [{
      index: link.index,
      ip: ip("10.5.1.0"),
      prefixLen: 32,
    }]);
    assert.equal((await dp.listNeighbours(link.index)).length, 2);
    assert.equal((await dp.listFdb(link.index)).length, 2);
  } finally {
    await r.stop();
  }
});

Deno.test("run sets a downed device up again and restores what went with it", async () => {
  const { dp, ctx, clock } = setup();
  const network = await vxlanBackend({ datapath: dp, resyncIntervalMs: 0 }).register(
    ctx,
  ) as VxlanNetwork;
  await network.syncPeers([A]);
  const vx = network.deviceIndex();
  const r = await startRun(network, clock);
  try {
    await dp.setLink(vx, { up: false });
    await r.until(async () => overlayRoutes(await dp.listRoutes()).length === 1);
    assert.equal((await dp.getLink(vx))?.up, true);
    assert.equal((await dp.listNeighbours(vx)).length, 1);
  } finally {
    await r.stop();
  }
});

Deno.test("run ignores the events of its own writes and of unrelated objects", async () => {
  const { dp, ctx, clock } = setup();
  const repaired: string[] = [];
  const network = await vxlanBackend({
    datapath: dp,
    resyncIntervalMs: 0,
    onRepaired: (reason) => repaired.push(reason),
  }).register(ctx) as VxlanNetwork;
  const r = await startRun(network, clock);
  try {
    await network.syncPeers([A, B]);
    await network.syncPeers([A]);
    const br = await dp.createBridge({ name: "br9", up: true });
    await dp.deleteLink(br.index);
    await clock.advance(200);
    assert.deepEqual(repaired, []);
  } finally {
    await r.stop();
  }
});

Deno.test("run resyncs periodically and after an event overrun", async () => {
  const { dp, ctx, clock } = setup();
  const repaired: string[] = [];
  const network = await vxlanBackend({
    datapath: dp,
    resyncIntervalMs: 1000,
    onRepaired: (reason) => repaired.push(reason),
  }).register(ctx) as VxlanNetwork;
  const r = await startRun(network, clock);
  try {
    await clock.advance(1100);
    assert.deepEqual(repaired, ["periodic resync"]);
    dp.overrun();
    await clock.advance(50);
    assert.equal(repaired.length, 2);
    assert.match(repaired[1], /overrun/);
  } finally {
    await r.stop();
  }
});

Deno.test("run retries a failed repair with backoff", async () => {
  const { dp, ctx, clock } = setup();
  const network = await vxlanBackend({ datapath: dp, resyncIntervalMs: 0 }).register(
    ctx,
  ) as VxlanNetwork;
  await network.syncPeers([A]);
  const r = await startRun(network, clock);
  try {
    dp.failNext("replaceRoutes", 105);
    await dp.deleteRoutes([{ dst: net("10.5.2.0/24") }]);
    await r.until(async () => overlayRoutes(await dp.listRoutes()).length === 1);
    assert.ok(ctx.logger.lines.some((l) => /repair failed; retrying/.test(l) && /ENOBUFS/.test(l)));
  } finally {
    await r.stop();
  }
});

Deno.test("run restores the VtepMAC and MTU when someone changes them", async () => {
  const { dp, ctx, clock } = setup();
  const network = await vxlanBackend({ datapath: dp, resyncIntervalMs: 0 }).register(
    ctx,
  ) as VxlanNetwork;
  const vx = network.deviceIndex();
  const r = await startRun(network, clock);
  try {
    await dp.setLink(vx, { mac: "02:ba:ad:00:00:01", mtu: 1200 });
    await r.until(async () => {
      const l = await dp.getLink(vx);
      return l?.mac === network.vtepMac && l.mtu === 1450;
    });
  } finally {
    await r.stop();
  }
});
