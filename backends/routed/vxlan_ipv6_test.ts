/**
 * The vxlan backend over IPv6, against the recording fake datapath:
 * flannel's `flannel-v6.<VNI>` device and IPv6 per-peer entries in
 * dual-stack and IPv6-only networks, lease attributes byte for byte as
 * flannel writes them, VtepMACs kept per device, and repairs.
 *
 * @module
 */

import assert from "node:assert/strict";
import { FakeClock } from "../../testing/fake_clock.ts";
import { parseIPv4, parseIPv6, parseIPv6Net } from "../../core/ip.ts";
import { encodeLeaseAttrs, type Lease } from "../../lease/types.ts";
import { ConfigError } from "../../core/errors.ts";
import { FakeDatapath } from "../../testing/datapath_fake.ts";
import type { VxlanDeviceSpec } from "../../datapath/types.ts";
import { peerLease, peerLease6, testContext } from "../../testing/routing.ts";
import type { ExternalInterface } from "../../datapath/iface.ts";
import { vxlanBackend, type VxlanNetwork, vxlanPeerEntries } from "./vxlan.ts";

const ip6 = parseIPv6;
const net6 = parseIPv6Net;

const DUAL = { Network: "10.5.0.0/16", EnableIPv6: true, IPv6Network: "fd00:5::/56" };
const V6ONLY = { EnableIPv4: false, EnableIPv6: true, IPv6Network: "fd00:5::/56" };

function setup(
  options: {
    network?: { EnableIPv4?: boolean } & Record<string, unknown>;
    backend?: Record<string, unknown>;
    previousLease?: Lease;
    ext?: Partial<ExternalInterface>;
  } = {},
) {
  const dp = new FakeDatapath({ random: () => 0.5 });
  const eth0 = dp.addLink({
    name: "eth0",
    mtu: 1500,
    up: true,
    addresses: [
      { ip: parseIPv4("192.0.2.11"), prefixLen: 24 },
      { ip: ip6("fd00::11"), prefixLen: 64 },
    ],
  });
  const network: { EnableIPv4?: boolean } & Record<string, unknown> = options.network ?? DUAL;
  const v4 = network.EnableIPv4 !== false;
  const ext: ExternalInterface = {
    name: "eth0",
    index: eth0.index,
    mtu: 1500,
    ifaceAddr: v4 ? "192.0.2.11" : "",
    extAddr: v4 ? "192.0.2.11" : "",
    ifaceV6Addr: "fd00::11",
    extV6Addr: "fd00::11",
    ...options.ext,
  };
  const clock = new FakeClock();
  const ctx = testContext({
    network,
    backend: options.backend ?? { Type: "vxlan" },
    ext,
    subnet: v4 ? "10.5.1.0/24" : undefined,
    ipv6Subnet: "fd00:5:0:1::/64",
    previousLease: options.previousLease,
    clock,
  });
  return { dp, ctx, clock };
}

const A = peerLease6({
  subnet: "10.5.2.0/24",
  ipv6Subnet: "fd00:5:0:2::/64",
  publicIP: "192.0.2.12",
  publicIPv6: "fd00::12",
  backend: "vxlan",
  mac: "02:00:00:00:00:02",
  mac6: "02:00:00:00:06:02",
});
const B6 = peerLease6({
  ipv6Subnet: "fd00:5:0:3::/64",
  publicIPv6: "fd00::13",
  backend: "vxlan",
  mac6: "02:00:00:00:06:03",
});

const specs = (dp: FakeDatapath) =>
  dp.calls.filter((c) => c.method === "ensureDevice").map((c) => c.arg as VxlanDeviceSpec);

Deno.test("dual-stack register creates flannel.1 and flannel-v6.1 and publishes both as flannel does", async () => {
  const { dp, ctx } = setup();
  let n = 0;
  const network = await vxlanBackend({
    datapath: dp,
    random: () => [0.25, 0.75][Math.floor(n++ / 6)] ?? 0.5,
  }).register(ctx) as VxlanNetwork;
  const [v4, v6] = specs(dp);
  assert.equal(v4.name, "flannel.1");
  assert.deepEqual(v6, {
    kind: "vxlan",
    vni: 1,
    port: 8472,
    underlay: "eth0",
    learning: false,
    gbp: false,
    name: "flannel-v6.1",
    local: ip6("fd00::11"),
    mac: "c2:c0:c0:c0:c0:c0",
    mtu: 1430,
    addresses: [{ ip: ip6("fd00:5:0:1::"), prefixLen: 128 }],
  });
  assert.equal(v4.mtu, 1450);
  assert.equal(network.mtu, 1430, "pods get the smaller MTU");
  assert.deepEqual(
    [network.deviceName, network.vtepMac, network.v6DeviceName, network.v6VtepMac],
    ["flannel.1", "42:40:40:40:40:40", "flannel-v6.1", "c2:c0:c0:c0:c0:c0"],
  );
  assert.equal(
    encodeLeaseAttrs(ctx.acquired[0]),
    '{"PublicIP":"192.0.2.11","PublicIPv6":"fd00::11","BackendType":"vxlan",' +
      '"BackendData":{"VNI":1,"VtepMAC":"42:40:40:40:40:40"},' +
      '"BackendV6Data":{"VNI":1,"VtepMAC":"c2:c0:c0:c0:c0:c0"}}',
  );
});

Deno.test("IPv6-only register creates only flannel-v6.1 and publishes PublicIP 0.0.0.0 without BackendData", async () => {
  const { dp, ctx } = setup({ network: V6ONLY });
  const network = await vxlanBackend({ datapath: dp, random: () => 0.25 }).register(
    ctx,
  ) as VxlanNetwork;
  assert.deepEqual(specs(dp).map((s) => s.name), ["flannel-v6.1"]);
  assert.equal(await dp.link("flannel.1"), null);
  assert.deepEqual([network.deviceName, network.mtu], ["flannel-v6.1", 1430]);
  assert.equal(
    encodeLeaseAttrs(ctx.acquired[0]),
    '{"PublicIP":"0.0.0.0","PublicIPv6":"fd00::11","BackendType":"vxlan",' +
      '"BackendV6Data":{"VNI":1,"VtepMAC":"42:40:40:40:40:40"}}',
  );
});

Deno.test("the IPv6 VtepMAC comes from the existing flannel-v6.1, else the previous lease's BackendV6Data", async () => {
  const previousLease = peerLease6({
    subnet: "10.5.1.0/24",
    ipv6Subnet: "fd00:5:0:1::/64",
    publicIP: "192.0.2.11",
    publicIPv6: "fd00::11",
    backend: "vxlan",
    mac: "0e:00:00:00:00:04",
    mac6: "0e:00:00:00:00:06",
  });
  const { dp, ctx } = setup({ previousLease });
  const first = await vxlanBackend({ datapath: dp }).register(ctx) as VxlanNetwork;
  assert.deepEqual([first.vtepMac, first.v6VtepMac], ["0e:00:00:00:00:04", "0e:00:00:00:00:06"]);
  assert.equal((await dp.link("flannel-v6.1"))?.mac, "0e:00:00:00:00:06");
  // a restart without the previous lease keeps the devices' MACs and writes nothing
  await first.syncPeers([A]);
  const before = dp.writes;
  const again = setup();
  const second = await vxlanBackend({ datapath: dp, random: () => 0.9 }).register(
    again.ctx,
  ) as VxlanNetwork;
  await second.syncPeers([A]);
  assert.equal(second.v6VtepMac, "0e:00:00:00:00:06");
  assert.equal(dp.writes, before, "the restart changed the kernel");
});

Deno.test("vxlanPeerEntries gives a dual-stack peer flannel's three entries per family", () => {
  const r = vxlanPeerEntries(A, {
    device: "flannel.1",
    v6Device: "flannel-v6.1",
    extDevice: "eth0",
    directNets: [],
  });
  assert.ok("entries" in r && !r.partial);
  assert.deepEqual(r.entries.neighbours?.[1], {
    device: "flannel-v6.1",
    ip: ip6("fd00:5:0:2::"),
    mac: "02:00:00:00:06:02",
  });
  assert.deepEqual(r.entries.fdb?.[1], {
    device: "flannel-v6.1",
    mac: "02:00:00:00:06:02",
    dst: ip6("fd00::12"),
  });
  assert.deepEqual(r.entries.routes?.[1], {
    dst: net6("fd00:5:0:2::/64"),
    gateway: ip6("fd00:5:0:2::"),
    device: "flannel-v6.1",
    onlink: true,
  });
  assert.equal(r.entries.routes?.length, 2);
});

Deno.test("vxlanPeerEntries: a family the peer cannot serve is left out with a reason; none at all skips it", () => {
  const dual = { device: "flannel.1", v6Device: "flannel-v6.1", extDevice: "eth0", directNets: [] };
  const v6only = { ...dual, device: null };
  const table: [Lease, typeof dual | typeof v6only, string, RegExp][] = [
    [B6, dual, "partial", /no IPv4 subnet/],
    [peerLease("10.5.4.0/24", "192.0.2.14", "vxlan"), dual, "partial", /no IPv6 subnet/],
    [peerLease("10.5.4.0/24", "192.0.2.14", "vxlan"), v6only, "skip", /no IPv6 subnet/],
    [
      { ...A, attrs: { ...A.attrs, backendV6Data: { VNI: 1 } } },
      dual,
      "partial",
      /BackendV6Data .* is invalid/,
    ],
    [
      { ...B6, attrs: { ...B6.attrs, publicIPv6: "192.0.2.13" } },
      v6only,
      "skip",
      /PublicIPv6 "192\.0\.2\.13" is not IPv6/,
    ],
  ];
  for (const [lease, options, kind, re] of table) {
    const r = vxlanPeerEntries(lease, options);
    const reason = "skip" in r ? r.skip : r.partial ?? "";
    assert.equal("skip" in r ? "skip" : r.partial ? "partial" : "full", kind, reason);
    assert.match(reason, re);
  }
});

Deno.test("DirectRouting routes a peer whose public IPv6 is on a connected prefix via it", async () => {
  const { dp, ctx } = setup({ backend: { Type: "vxlan", DirectRouting: true } });
  const network = await vxlanBackend({ datapath: dp }).register(ctx) as VxlanNetwork;
  const far = peerLease6({
    subnet: "10.5.4.0/24",
    ipv6Subnet: "fd00:5:0:4::/64",
    publicIP: "198.51.100.4",
    publicIPv6: "fd01::4",
    backend: "vxlan",
    mac6: "02:00:00:00:06:04",
  });
  await network.syncPeers([A, far]);
  assert.deepEqual(dp.routes(), [
    "10.5.2.0/24 via 192.0.2.12 dev eth0",
    "10.5.4.0/24 via 10.5.4.0 dev flannel.1 onlink",
    "fd00:5:0:2::/64 via fd00::12 dev eth0",
    "fd00:5:0:4::/64 via fd00:5:0:4:: dev flannel-v6.1 onlink",
  ]);
});

Deno.test("syncPeers installs IPv6 entries of dual-stack and IPv6-only peers; updatePeers removes them", async () => {
  const { dp, ctx } = setup();
  const network = await vxlanBackend({ datapath: dp }).register(ctx) as VxlanNetwork;
  await network.syncPeers([A, B6]);
  const s = await dp.snapshot();
  assert.deepEqual(s.routes, [
    "10.5.2.0/24 via 10.5.2.0 dev flannel.1 onlink",
    "fd00:5:0:2::/64 via fd00:5:0:2:: dev flannel-v6.1 onlink",
    "fd00:5:0:3::/64 via fd00:5:0:3:: dev flannel-v6.1 onlink",
  ]);
  assert.deepEqual(s.fdb, [
    "02:00:00:00:00:02 dev flannel.1 dst 192.0.2.12",
    "02:00:00:00:06:02 dev flannel-v6.1 dst fd00::12",
    "02:00:00:00:06:03 dev flannel-v6.1 dst fd00::13",
  ]);
  assert.ok(
    ctx.logger.lines.some((l) => /only partly usable/.test(l) && /no IPv4 subnet/.test(l)),
    ctx.logger.lines.join("\n"),
  );
  await network.updatePeers!([{ type: "removed", lease: B6 }]);
  const after = await dp.snapshot();
  assert.equal(after.routes.length, 2);
  assert.deepEqual(after.neighbours, [
    "10.5.2.0 lladdr 02:00:00:00:00:02 dev flannel.1",
    "fd00:5:0:2:: lladdr 02:00:00:00:06:02 dev flannel-v6.1",
  ]);
});

Deno.test("run restores a deleted IPv6 route, neighbour and fdb entry, and a deleted flannel-v6.1", async () => {
  const { dp, ctx, clock } = setup({ network: V6ONLY });
  const network = await vxlanBackend({ datapath: dp, resyncIntervalMs: 0 }).register(
    ctx,
  ) as VxlanNetwork;
  await network.syncPeers([A, B6]);
  const want = await dp.snapshot();
  const ac = new AbortController();
  const running = network.run(ac.signal);
  try {
    await clock.advance(0);
    await dp.deleteRoute({ dst: net6("fd00:5:0:2::/64") });
    await dp.deleteNeighbour({ device: "flannel-v6.1", ip: ip6("fd00:5:0:3::") });
    await dp.deleteFdb({ device: "flannel-v6.1", mac: "02:00:00:00:06:02", dst: ip6("fd00::12") });
    await clock.advance(50);
    assert.deepEqual(await dp.snapshot(), want);
    await dp.deleteLink("flannel-v6.1");
    await clock.advance(50);
    const link = (await dp.link("flannel-v6.1"))!;
    assert.deepEqual([link.mac, link.mtu, link.addresses], [
      network.vtepMac,
      1430,
      [{ ip: ip6("fd00:5:0:1::"), prefixLen: 128 }],
    ]);
    const s = await dp.snapshot();
    assert.deepEqual([s.routes, s.neighbours, s.fdb], [want.routes, want.neighbours, want.fdb]);
  } finally {
    ac.abort();
    await running;
  }
});

Deno.test("register says what is missing: an IPv6 address on the interface, a small MTU", async () => {
  const noV6 = setup({ ext: { ifaceV6Addr: undefined, extV6Addr: undefined } });
  await assert.rejects(
    vxlanBackend({ datapath: noV6.dp }).register(noV6.ctx),
    /vxlan over IPv6 needs a global IPv6 address on the external interface eth0.*--public-ipv6/,
  );
  const small = setup({ backend: { Type: "vxlan", MTU: 1340 } });
  await assert.rejects(
    vxlanBackend({ datapath: small.dp }).register(small.ctx),
    /vxlan IPv6 MTU would be 1270 \(1340 − 70\), below IPv6's minimum 1280/,
  );
  const cfg = setup({ network: V6ONLY });
  await assert.rejects(
    vxlanBackend({ datapath: cfg.dp }).register({
      ...cfg.ctx,
      config: { ...cfg.ctx.config, ipv6Network: undefined },
    }),
    (e) => e instanceof ConfigError && e.path === "IPv6Network",
  );
});
