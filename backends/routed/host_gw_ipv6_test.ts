/**
 * The host-gw backend over IPv6, against the recording fake datapath:
 * `<peer ipv6Subnet> via <peer PublicIPv6> dev <ext>` in dual-stack and
 * IPv6-only networks, flannel's lease attributes, the NAT check per family,
 * and repairs.
 *
 * @module
 */

import assert from "node:assert/strict";
import { FakeClock } from "../../testing/fake_clock.ts";
import { parseIPv4, parseIPv6, parseIPv6Net } from "../../core/ip.ts";
import { encodeLeaseAttrs } from "../../lease/types.ts";
import { FakeDatapath } from "../../testing/datapath_fake.ts";
import { hostGwBackend, hostGwPeerEntries } from "./host_gw.ts";
import { peerLease, peerLease6, testContext } from "../../testing/routing.ts";
import type { ExternalInterface } from "../../datapath/iface.ts";

const DUAL = { Network: "10.5.0.0/16", EnableIPv6: true, IPv6Network: "fd00:5::/56" };
const V6ONLY = { EnableIPv4: false, EnableIPv6: true, IPv6Network: "fd00:5::/56" };

function setup(network: Record<string, unknown> = DUAL, ext: Partial<ExternalInterface> = {}) {
  const dp = new FakeDatapath();
  const eth0 = dp.addLink({
    name: "eth0",
    mtu: 9000,
    up: true,
    addresses: [
      { ip: parseIPv4("192.0.2.11"), prefixLen: 24 },
      { ip: parseIPv6("fd00::11"), prefixLen: 64 },
    ],
  });
  const v4 = network.EnableIPv4 !== false;
  const clock = new FakeClock();
  const ctx = testContext({
    network,
    backend: { Type: "host-gw" },
    ext: {
      name: "eth0",
      index: eth0.index,
      mtu: 9000,
      ifaceAddr: v4 ? "192.0.2.11" : "",
      extAddr: v4 ? "192.0.2.11" : "",
      ifaceV6Addr: "fd00::11",
      extV6Addr: "fd00::11",
      ...ext,
    },
    subnet: v4 ? "10.5.1.0/24" : undefined,
    ipv6Subnet: "fd00:5:0:1::/64",
    clock,
  });
  return { dp, ctx, clock };
}

const A = peerLease6({
  subnet: "10.5.2.0/24",
  ipv6Subnet: "fd00:5:0:2::/64",
  publicIP: "192.0.2.12",
  publicIPv6: "fd00::12",
  backend: "host-gw",
});
const B6 = peerLease6({
  ipv6Subnet: "fd00:5:0:3::/64",
  publicIPv6: "fd00::13",
  backend: "host-gw",
});

Deno.test("hostGwPeerEntries routes each enabled family via the peer's public address", () => {
  const both = { ipv4: true, ipv6: true };
  assert.deepEqual(hostGwPeerEntries(A, "eth0", both), {
    entries: {
      routes: [
        {
          dst: { ip: parseIPv4("10.5.2.0"), prefixLen: 24 },
          gateway: parseIPv4("192.0.2.12"),
          device: "eth0",
        },
        { dst: parseIPv6Net("fd00:5:0:2::/64"), gateway: parseIPv6("fd00::12"), device: "eth0" },
      ],
    },
  });
  const partial = hostGwPeerEntries(B6, "eth0", both);
  assert.ok("entries" in partial && partial.entries.routes?.length === 1);
  assert.match("partial" in partial ? partial.partial ?? "" : "", /no IPv4 subnet/);
  assert.deepEqual(
    hostGwPeerEntries(peerLease("10.5.4.0/24", "192.0.2.14", "host-gw"), "eth0", {
      ipv4: false,
      ipv6: true,
    }),
    { skip: "it has no IPv6 subnet" },
  );
  // IPv4 only, as before
  assert.equal(Object.hasOwn(hostGwPeerEntries(A, "eth0"), "partial"), false);
});

Deno.test("dual-stack register publishes PublicIPv6 as flannel does and routes both families", async () => {
  const { dp, ctx } = setup();
  const network = await hostGwBackend({ datapath: dp }).register(ctx);
  assert.equal(network.mtu, 9000);
  assert.equal(
    encodeLeaseAttrs(ctx.acquired[0]),
    '{"PublicIP":"192.0.2.11","PublicIPv6":"fd00::11","BackendType":"host-gw"}',
  );
  await network.syncPeers([A, B6]);
  assert.deepEqual(dp.routes(), [
    "10.5.2.0/24 via 192.0.2.12 dev eth0",
    "fd00:5:0:2::/64 via fd00::12 dev eth0",
    "fd00:5:0:3::/64 via fd00::13 dev eth0",
  ]);
});

Deno.test("IPv6-only register publishes PublicIP 0.0.0.0 and routes only IPv6", async () => {
  const { dp, ctx } = setup(V6ONLY);
  const network = await hostGwBackend({ datapath: dp }).register(ctx);
  assert.equal(
    encodeLeaseAttrs(ctx.acquired[0]),
    '{"PublicIP":"0.0.0.0","PublicIPv6":"fd00::11","BackendType":"host-gw"}',
  );
  await network.syncPeers([A, B6]);
  assert.deepEqual(dp.routes(), [
    "fd00:5:0:2::/64 via fd00::12 dev eth0",
    "fd00:5:0:3::/64 via fd00::13 dev eth0",
  ]);
});

Deno.test("register refuses a public IPv6 address behind NAT or not on the interface", async () => {
  const nat = setup(DUAL, { extV6Addr: "2001:db8::7" });
  await assert.rejects(
    hostGwBackend({ datapath: nat.dp }).register(nat.ctx),
    /public IPv6 address 2001:db8::7 differs from eth0's address fd00::11.*NAT.*--public-ipv6/,
  );
  const off = setup(V6ONLY, { ifaceV6Addr: "fd00::99", extV6Addr: "fd00::99" });
  await assert.rejects(
    hostGwBackend({ datapath: off.dp }).register(off.ctx),
    /public IPv6 address fd00::99 is not an address of eth0 \(it has 192\.0\.2\.11\/24, fd00::11\/64\)/,
  );
  const none = setup(V6ONLY, { ifaceV6Addr: undefined, extV6Addr: undefined });
  await assert.rejects(
    hostGwBackend({ datapath: none.dp }).register(none.ctx),
    /IPv6 is enabled but eth0 has no global IPv6 address/,
  );
});

Deno.test("an IPv6 peer off every connected prefix is reported; run restores a deleted IPv6 route", async () => {
  const { dp, ctx, clock } = setup(V6ONLY);
  const network = await hostGwBackend({ datapath: dp, resyncIntervalMs: 0 }).register(ctx);
  const far = peerLease6({
    ipv6Subnet: "fd00:5:0:4::/64",
    publicIPv6: "fd01::4",
    backend: "host-gw",
  });
  await assert.rejects(network.syncPeers([B6, far]), /EHOSTUNREACH.*fd00:5:0:4::\/64 via fd01::4/);
  assert.deepEqual(dp.routes(), ["fd00:5:0:3::/64 via fd00::13 dev eth0"]);
  await network.syncPeers([B6]);
  const ac = new AbortController();
  const running = network.run(ac.signal);
  try {
    await clock.advance(0);
    await dp.deleteRoute({ dst: parseIPv6Net("fd00:5:0:3::/64") });
    assert.deepEqual(dp.routes(), []);
    await clock.advance(50);
    assert.deepEqual(dp.routes(), ["fd00:5:0:3::/64 via fd00::13 dev eth0"]);
  } finally {
    ac.abort();
    await running;
  }
});
