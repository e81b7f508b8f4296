import assert from "node:assert/strict";
import { FakeClock } from "../../testing/fake_clock.ts";
import { parseNetworkConfig } from "../../lease/config.ts";
import { formatIPv4Net, parseIPv4, parseIPv4Net } from "../../core/ip.ts";
import { encodeLeaseAttrs, type Lease } from "../../lease/types.ts";
import { ConfigError } from "../../core/errors.ts";
import { FakeDatapath } from "../../testing/datapath_fake.ts";
import type { VxlanDeviceSpec } from "../../datapath/types.ts";
import { peerLease, testContext } from "../../testing/routing.ts";
import type { ExternalInterface } from "../../datapath/iface.ts";
import {
  parseVxlanConfig,
  parseVxlanLeaseData,
  randomMac,
  vxlanBackend,
  vxlanLocalAddress,
  type VxlanNetwork,
  vxlanPeerEntries,
} from "./vxlan.ts";

const ip = parseIPv4;
const net = parseIPv4Net;

function setup(options: { backend?: Record<string, unknown>; previousLease?: Lease } = {}) {
  const dp = new FakeDatapath({ random: () => 0.5 });
  const eth0 = dp.addLink({
    name: "eth0",
    mtu: 1500,
    up: true,
    addresses: [{ ip: ip("192.0.2.11"), prefixLen: 24 }],
  });
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

const A = peerLease("10.5.2.0/24", "192.0.2.12", "vxlan", "02:00:00:00:00:02");
const B = peerLease("10.5.3.0/24", "192.0.2.13", "vxlan", "02:00:00:00:00:03");
const FAR = peerLease("10.5.4.0/24", "198.51.100.4", "vxlan", "02:00:00:00:00:04");

const OPTS = { device: "flannel.1", extDevice: "eth0", directNets: [] };

Deno.test("parseVxlanConfig applies flannel's defaults and reads keys case-insensitively", () => {
  const defaults = {
    vni: 1,
    port: 8472,
    mtu: 0,
    gbp: false,
    learning: false,
    directRouting: false,
  };
  const table: [Record<string, unknown>, object][] = [
    [{ Type: "vxlan" }, defaults],
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
    [{ Type: "vxlan", Port: 0 }, defaults],
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

Deno.test("vxlanPeerEntries gives a vxlan peer a neighbour, an fdb entry and an onlink route", () => {
  assert.deepEqual(vxlanPeerEntries(A, OPTS), {
    entries: {
      neighbours: [{ device: "flannel.1", ip: ip("10.5.2.0"), mac: "02:00:00:00:00:02" }],
      fdb: [{ device: "flannel.1", mac: "02:00:00:00:00:02", dst: ip("192.0.2.12") }],
      routes: [{
        dst: net("10.5.2.0/24"),
        gateway: ip("10.5.2.0"),
        device: "flannel.1",
        onlink: true,
      }],
    },
  });
});

Deno.test("vxlanPeerEntries skips other backend types, bad BackendData and non-IPv4 addresses", () => {
  const table: [Lease, RegExp][] = [
    [peerLease("10.5.5.0/24", "192.0.2.15", "host-gw"), /"host-gw", not "vxlan"/],
    [peerLease("10.5.6.0/24", "192.0.2.16"), /"udp", not "vxlan"/],
    [{
      ...peerLease("10.5.7.0/24", "192.0.2.17", "vxlan"),
      attrs: { publicIP: "192.0.2.17", backendType: "vxlan", backendData: { VNI: 1 } },
    }, /BackendData .* is invalid/],
    [peerLease("10.5.8.0/24", "fd00::1", "vxlan"), /not IPv4/],
  ];
  for (const [lease, re] of table) {
    const r = vxlanPeerEntries(lease, OPTS);
    assert.ok("skip" in r, formatIPv4Net(lease.subnet!));
    assert.match(r.skip, re);
  }
});

Deno.test("vxlanPeerEntries routes peers on a connected prefix directly when DirectRouting is on", () => {
  const opts = { ...OPTS, directNets: [net("192.0.2.0/24")] };
  assert.deepEqual(vxlanPeerEntries(A, opts), {
    entries: { routes: [{ dst: net("10.5.2.0/24"), gateway: ip("192.0.2.12"), device: "eth0" }] },
  });
  const far = vxlanPeerEntries(FAR, opts);
  assert.ok("entries" in far && far.entries.fdb?.[0].dst === ip("198.51.100.4"));
});

Deno.test("randomMac makes locally administered unicast addresses", () => {
  for (const r of [0, 0.5, 0.999]) {
    const mac = randomMac(() => r);
    const first = parseInt(mac.slice(0, 2), 16);
    assert.equal(first & 0x03, 0x02, mac);
  }
});

Deno.test("register creates flannel.1 as flannel does and publishes flannel's lease attributes", async () => {
  const { dp, ctx } = setup();
  const network =
    (await vxlanBackend({ datapath: dp, random: () => 0.25 }).register(ctx)) as VxlanNetwork;
  const spec = dp.calls.find((c) => c.method === "ensureDevice")?.arg as VxlanDeviceSpec;
  assert.deepEqual(spec, {
    kind: "vxlan",
    name: "flannel.1",
    vni: 1,
    port: 8472,
    local: ip("192.0.2.11"),
    underlay: "eth0",
    learning: false,
    gbp: false,
    mac: "42:40:40:40:40:40",
    mtu: 1450,
    addresses: [net("10.5.1.0/32")],
  });
  const link = (await dp.link("flannel.1"))!;
  assert.deepEqual([link.up, link.mtu, link.mac], [true, 1450, "42:40:40:40:40:40"]);
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
  const link = (await dp.link("flannel.42"))!;
  assert.equal(link.mtu, 1350);
  assert.equal(network.mtu, 1350);
  assert.deepEqual(link.vxlan, {
    vni: 42,
    local: ip("192.0.2.11"),
    link: 2,
    port: 4789,
    learning: true,
    gbp: true,
  });
  assert.deepEqual(ctx.acquired[0].backendData, { VNI: 42, VtepMAC: link.mac });
});

Deno.test("register keeps the MAC of an existing matching device and rewrites nothing", async () => {
  const { dp, ctx } = setup();
  const first = await vxlanBackend({ datapath: dp }).register(ctx) as VxlanNetwork;
  await first.syncPeers([A, B]);
  const before = dp.writes;
  const second = await vxlanBackend({ datapath: dp, random: () => 0.9 }).register(
    setup().ctx,
  ) as VxlanNetwork;
  await second.syncPeers([A, B]);
  assert.equal(second.vtepMac, first.vtepMac);
  assert.equal(dp.writes, before, "the restart changed the kernel");
});

Deno.test("register takes the VtepMAC from the previous lease when there is no device", async () => {
  const previousLease = peerLease("10.5.1.0/24", "192.0.2.11", "vxlan", "0e:11:22:33:44:55");
  const { dp, ctx } = setup({ previousLease });
  const network = await vxlanBackend({ datapath: dp }).register(ctx) as VxlanNetwork;
  assert.equal(network.vtepMac, "0e:11:22:33:44:55");
  assert.equal((await dp.link("flannel.1"))?.mac, "0e:11:22:33:44:55");
});

Deno.test("register recreates a mismatched device with the same MAC, without old addresses", async () => {
  const { dp, ctx } = setup();
  await dp.createVxlan({
    name: "flannel.1",
    vni: 9,
    port: 4789,
    local: ip("192.0.2.11"),
    underlay: "eth0",
    mac: "0a:00:00:00:00:09",
    up: true,
  });
  await dp.addAddress("flannel.1", net("10.5.99.0/32"));
  const old = (await dp.link("flannel.1"))!;
  const network = await vxlanBackend({ datapath: dp }).register(ctx) as VxlanNetwork;
  const link = (await dp.link("flannel.1"))!;
  assert.notEqual(link.index, old.index);
  assert.deepEqual([link.vxlan?.vni, link.vxlan?.port, link.mac], [1, 8472, "0a:00:00:00:00:09"]);
  assert.deepEqual(link.addresses, [net("10.5.1.0/32")]);
  assert.equal(network.vtepMac, "0a:00:00:00:00:09");
  assert.ok(
    ctx.logger.lines.some((l) => /incompatible configuration/.test(l) && /VNI 9, want 1/.test(l)),
    ctx.logger.lines.join("\n"),
  );
});

Deno.test("vxlanLocalAddress is the public IP when the interface holds it, else the interface address", () => {
  const held = [ip("192.0.2.11"), ip("192.0.2.111")];
  assert.deepEqual(
    vxlanLocalAddress({ ifaceAddr: "192.0.2.11", extAddr: "192.0.2.11" }, held),
    { local: ip("192.0.2.11"), publicIP: true },
  );
  // --public-ip (or node-public-ip) naming a second address of the interface: flannel v0.28's ExtAddr
  assert.deepEqual(
    vxlanLocalAddress({ ifaceAddr: "192.0.2.11", extAddr: "192.0.2.111" }, held),
    { local: ip("192.0.2.111"), publicIP: true },
  );
  // behind NAT: the kernel cannot send from an address the host does not have
  assert.deepEqual(
    vxlanLocalAddress({ ifaceAddr: "192.0.2.11", extAddr: "203.0.113.7" }, held),
    { local: ip("192.0.2.11"), publicIP: false },
  );
});

Deno.test("register keeps flannel's device whose local is a second address named by --public-ip", async () => {
  const { dp, eth0 } = setup();
  await dp.addAddress("eth0", { ip: ip("192.0.2.111"), prefixLen: 24 });
  await dp.createVxlan({
    name: "flannel.1",
    vni: 1,
    port: 8472,
    local: ip("192.0.2.111"),
    underlay: "eth0",
    mac: "0a:00:00:00:00:01",
    up: true,
  });
  const old = (await dp.link("flannel.1"))!;
  const natCtx = testContext({
    backend: { Type: "vxlan" },
    ext: {
      name: "eth0",
      index: eth0.index,
      mtu: 1500,
      ifaceAddr: "192.0.2.11",
      extAddr: "192.0.2.111",
    },
    subnet: "10.5.1.0/24",
  });
  const network = await vxlanBackend({ datapath: dp }).register(natCtx) as VxlanNetwork;
  const link = (await dp.link("flannel.1"))!;
  assert.equal(link.index, old.index, `flannel.1 was kept: ${natCtx.logger.lines.join("\n")}`);
  assert.equal(link.vxlan?.local, ip("192.0.2.111"));
  assert.equal(network.vtepMac, "0a:00:00:00:00:01");
  assert.equal(natCtx.acquired[0].publicIP, "192.0.2.111");
  assert.ok(
    !natCtx.logger.lines.some((l) => /incompatible|NAT/.test(l)),
    natCtx.logger.lines.join("\n"),
  );
});

Deno.test("register behind NAT sends from the interface address and says why", async () => {
  const { dp, eth0 } = setup();
  const natCtx = testContext({
    backend: { Type: "vxlan" },
    ext: {
      name: "eth0",
      index: eth0.index,
      mtu: 1500,
      ifaceAddr: "192.0.2.11",
      extAddr: "203.0.113.7",
    },
    subnet: "10.5.1.0/24",
  });
  await vxlanBackend({ datapath: dp }).register(natCtx);
  assert.equal((await dp.link("flannel.1"))?.vxlan?.local, ip("192.0.2.11"));
  assert.equal(natCtx.acquired[0].publicIP, "203.0.113.7", "peers still reach it at the public IP");
  assert.ok(
    natCtx.logger.lines.some((l) => /not an address of the external interface/.test(l)),
    natCtx.logger.lines.join("\n"),
  );
});

Deno.test("syncPeers asks for each peer's entries; updatePeers only for the changed peers", async () => {
  const { dp, ctx } = setup();
  const network = await vxlanBackend({ datapath: dp }).register(ctx) as VxlanNetwork;
  await network.syncPeers([A, B]);
  assert.deepEqual(dp.routes(), [
    "10.5.2.0/24 via 10.5.2.0 dev flannel.1 onlink",
    "10.5.3.0/24 via 10.5.3.0 dev flannel.1 onlink",
  ]);
  const snap = await dp.snapshot();
  assert.deepEqual(snap.neighbours, [
    "10.5.2.0 lladdr 02:00:00:00:00:02 dev flannel.1",
    "10.5.3.0 lladdr 02:00:00:00:00:03 dev flannel.1",
  ]);
  assert.deepEqual(snap.fdb, [
    "02:00:00:00:00:02 dev flannel.1 dst 192.0.2.12",
    "02:00:00:00:00:03 dev flannel.1 dst 192.0.2.13",
  ]);

  const moved = peerLease("10.5.2.0/24", "192.0.2.22", "vxlan", "02:00:00:00:00:22");
  const before = dp.calls.length;
  await network.updatePeers!([{ type: "removed", lease: B }, { type: "added", lease: moved }]);
  const update = dp.calls.slice(before);
  assert.deepEqual(update.map((c) => c.method), ["update"]);
  assert.deepEqual([...(update[0].arg as Map<string, unknown>).keys()], [
    "10.5.3.0/24",
    "10.5.2.0/24",
  ]);
  const after = await dp.snapshot();
  assert.deepEqual(after.routes, ["10.5.2.0/24 via 10.5.2.0 dev flannel.1 onlink"]);
  assert.deepEqual(after.fdb, ["02:00:00:00:00:22 dev flannel.1 dst 192.0.2.22"]);
  assert.deepEqual(after.neighbours, ["10.5.2.0 lladdr 02:00:00:00:00:22 dev flannel.1"]);
});

Deno.test("syncPeers leaves routes it does not own alone", async () => {
  const { dp, ctx } = setup();
  const network = await vxlanBackend({ datapath: dp }).register(ctx) as VxlanNetwork;
  dp.addLink({ name: "cni0", kind: "bridge", up: true });
  const foreign = [
    "10.5.1.0/24 dev cni0", // own subnet, on the pod bridge
    "10.5.9.0/24 dev cni0", // inside Network, but another device
    "172.16.0.0/16 via 192.0.2.1 dev eth0", // outside Network
  ];
  await dp.replaceRoute({ dst: net("10.5.1.0/24"), device: "cni0" });
  await dp.replaceRoute({ dst: net("10.5.9.0/24"), device: "cni0" });
  await dp.replaceRoute({ dst: net("172.16.0.0/16"), gateway: ip("192.0.2.1"), device: "eth0" });
  await network.syncPeers([A]);
  assert.deepEqual(
    dp.routes(),
    [...foreign, "10.5.2.0/24 via 10.5.2.0 dev flannel.1 onlink"].sort(),
  );
});

Deno.test("DirectRouting routes same-L2 peers via their PublicIP and the rest over VXLAN", async () => {
  const { dp, ctx } = setup({ backend: { Type: "vxlan", DirectRouting: true } });
  const network = await vxlanBackend({ datapath: dp }).register(ctx) as VxlanNetwork;
  await network.syncPeers([A, FAR]);
  assert.deepEqual(dp.routes(), [
    "10.5.2.0/24 via 192.0.2.12 dev eth0",
    "10.5.4.0/24 via 10.5.4.0 dev flannel.1 onlink",
  ]);
  assert.deepEqual((await dp.snapshot()).fdb, ["02:00:00:00:00:04 dev flannel.1 dst 198.51.100.4"]);
});

Deno.test("run recreates a deleted device with its MAC, address and peers", async () => {
  const { dp, ctx, clock } = setup();
  const network = await vxlanBackend({ datapath: dp, resyncIntervalMs: 0 }).register(
    ctx,
  ) as VxlanNetwork;
  await network.syncPeers([A, B]);
  const old = (await dp.link("flannel.1"))!;
  const ac = new AbortController();
  const running = network.run(ac.signal);
  try {
    await clock.advance(0);
    await dp.deleteLink("flannel.1");
    assert.deepEqual(dp.routes(), []);
    await clock.advance(50);
    const link = (await dp.link("flannel.1"))!;
    assert.notEqual(link.index, old.index);
    assert.deepEqual([link.mac, link.up, link.addresses], [
      network.vtepMac,
      true,
      [net("10.5.1.0/32")],
    ]);
    const s = await dp.snapshot();
    assert.deepEqual([s.routes.length, s.neighbours.length, s.fdb.length], [2, 2, 2]);
  } finally {
    ac.abort();
    await running;
  }
});

Deno.test("run restores the VtepMAC and MTU when someone changes them", async () => {
  const { dp, ctx, clock } = setup();
  const network = await vxlanBackend({ datapath: dp, resyncIntervalMs: 0 }).register(
    ctx,
  ) as VxlanNetwork;
  const ac = new AbortController();
  const running = network.run(ac.signal);
  try {
    await clock.advance(0);
    await dp.setLink("flannel.1", { mac: "02:ba:ad:00:00:01", mtu: 1200 });
    await clock.advance(50);
    const l = (await dp.link("flannel.1"))!;
    assert.deepEqual([l.mac, l.mtu], [network.vtepMac, 1450]);
  } finally {
    ac.abort();
    await running;
  }
});
