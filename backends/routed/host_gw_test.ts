import assert from "node:assert/strict";
import { FakeClock } from "../../testing/fake_clock.ts";
import { parseIPv4, parseIPv4Net } from "../../core/ip.ts";
import { encodeLeaseAttrs } from "../../lease/types.ts";
import { FakeDatapath } from "../../testing/datapath_fake.ts";
import { NetlinkError } from "../../datapath/netlink/error.ts";
import { hostGwBackend, hostGwPeerEntries } from "./host_gw.ts";
import { peerLease, testContext } from "../../testing/routing.ts";
import type { ExternalInterface } from "../../datapath/iface.ts";

const ip = parseIPv4;
const net = parseIPv4Net;

function setup(ext: Partial<ExternalInterface> = {}) {
  const dp = new FakeDatapath();
  const eth0 = dp.addLink({
    name: "eth0",
    mtu: 9000,
    up: true,
    addresses: [{ ip: ip("192.0.2.11"), prefixLen: 24 }],
  });
  const clock = new FakeClock();
  const ctx = testContext({
    backend: { Type: "host-gw" },
    ext: {
      name: "eth0",
      index: eth0.index,
      mtu: 9000,
      ifaceAddr: "192.0.2.11",
      extAddr: "192.0.2.11",
      ...ext,
    },
    subnet: "10.5.1.0/24",
    clock,
  });
  return { dp, eth0, ctx, clock };
}

const A = peerLease("10.5.2.0/24", "192.0.2.12", "host-gw");
const B = peerLease("10.5.3.0/24", "192.0.2.13", "host-gw");

Deno.test("hostGwPeerEntries routes a host-gw peer via its PublicIP on the external interface", () => {
  assert.deepEqual(hostGwPeerEntries(A, "eth0"), {
    entries: { routes: [{ dst: net("10.5.2.0/24"), gateway: ip("192.0.2.12"), device: "eth0" }] },
  });
  assert.deepEqual(hostGwPeerEntries(peerLease("10.5.4.0/24", "192.0.2.14", "vxlan"), "eth0"), {
    skip: 'backend type is "vxlan", not "host-gw"',
  });
  assert.deepEqual(hostGwPeerEntries(peerLease("10.5.5.0/24", "x", "host-gw"), "eth0"), {
    skip: 'PublicIP "x" is not IPv4',
  });
});

Deno.test("register publishes host-gw attributes without BackendData and uses the external MTU", async () => {
  const { dp, ctx } = setup();
  const network = await hostGwBackend({ datapath: dp }).register(ctx);
  assert.equal(network.mtu, 9000);
  assert.equal(
    encodeLeaseAttrs(ctx.acquired[0]),
    '{"PublicIP":"192.0.2.11","PublicIPv6":null,"BackendType":"host-gw"}',
  );
});

Deno.test("register refuses a public IP that differs from the interface address (NAT)", async () => {
  const { dp, ctx } = setup({ extAddr: "203.0.113.7" });
  await assert.rejects(
    hostGwBackend({ datapath: dp }).register(ctx),
    /public IP 203\.0\.113\.7 differs from eth0's address 192\.0\.2\.11.*NAT/,
  );
  assert.equal(ctx.acquired.length, 0);
});

Deno.test("register refuses when the public IP is not on the external interface", async () => {
  const { dp, ctx } = setup({ extAddr: "192.0.2.99", ifaceAddr: "192.0.2.99" });
  await assert.rejects(
    hostGwBackend({ datapath: dp }).register(ctx),
    /public IP 192\.0\.2\.99 is not an address of eth0 \(it has 192\.0\.2\.11\/24\)/,
  );
  assert.equal(ctx.acquired.length, 0);
});

Deno.test("register refuses a missing external interface", async () => {
  const { dp, ctx } = setup({ name: "eth9", index: 0 });
  await assert.rejects(hostGwBackend({ datapath: dp }).register(ctx), /eth9.*does not exist/);
});

Deno.test("syncPeers installs routes, changes nothing on a second sync and removes stale peers", async () => {
  const { dp, ctx } = setup();
  const network = await hostGwBackend({ datapath: dp }).register(ctx);
  await network.syncPeers([A, B]);
  assert.deepEqual(dp.routes(), [
    "10.5.2.0/24 via 192.0.2.12 dev eth0",
    "10.5.3.0/24 via 192.0.2.13 dev eth0",
  ]);
  const before = dp.writes;
  await network.syncPeers([A, B]);
  assert.equal(dp.writes, before);
  await network.syncPeers([B]);
  assert.deepEqual(dp.routes(), ["10.5.3.0/24 via 192.0.2.13 dev eth0"]);
  assert.equal(dp.writes, before + 1);
});

Deno.test("syncPeers installs reachable peers and reports an unreachable one", async () => {
  const { dp, ctx } = setup();
  const network = await hostGwBackend({ datapath: dp }).register(ctx);
  const far = peerLease("10.5.4.0/24", "198.51.100.4", "host-gw");
  await assert.rejects(
    network.syncPeers([A, far]),
    (e) =>
      e instanceof NetlinkError && e.code === "ENETUNREACH" &&
      /10\.5\.4\.0\/24 via 198\.51\.100\.4/.test(e.message),
  );
  assert.deepEqual(dp.routes(), ["10.5.2.0/24 via 192.0.2.12 dev eth0"]);
});

Deno.test("syncPeers replaces a route someone pointed elsewhere", async () => {
  const { dp, ctx } = setup();
  const network = await hostGwBackend({ datapath: dp }).register(ctx);
  await dp.replaceRoute({ dst: net("10.5.2.0/24"), gateway: ip("192.0.2.99"), device: "eth0" });
  await network.syncPeers([A]);
  assert.deepEqual(dp.routes(), ["10.5.2.0/24 via 192.0.2.12 dev eth0"]);
});

Deno.test("run restores a deleted peer route, and the routes after the interface comes back up", async () => {
  const { dp, ctx, clock } = setup();
  const network = await hostGwBackend({ datapath: dp, resyncIntervalMs: 0 }).register(ctx);
  await network.syncPeers([A, B]);
  const ac = new AbortController();
  const running = network.run(ac.signal);
  try {
    await clock.advance(0);
    await dp.deleteRoute({ dst: net("10.5.2.0/24") });
    await clock.advance(50);
    assert.equal(dp.routes().length, 2);
    await dp.setLink("eth0", { up: false });
    assert.equal(dp.routes().length, 0);
    await dp.setLink("eth0", { up: true });
    await clock.advance(50);
    assert.equal(dp.routes().length, 2);
  } finally {
    ac.abort();
    await running;
  }
});
