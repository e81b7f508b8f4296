import assert from "node:assert/strict";
import type { AgentStatus } from "../agent/agent.ts";
import { parseNetworkConfig } from "../lease/config.ts";
import { parseIPv4Net, parseIPv6Net } from "../core/ip.ts";
import type { Lease } from "../lease/types.ts";
import { createStatusApp, leaseView } from "./app.ts";
import { ago } from "./page.ts";
import { EventRing } from "../core/events.ts";
import type { PeerKernelState } from "../backends/types.ts";
import { Registry } from "../core/metrics.ts";

const extIface = {
  name: "eth0",
  index: 2,
  mtu: 1500,
  ifaceAddr: "192.0.2.1",
  extAddr: "192.0.2.1",
};

function lease(cidr: string, publicIP: string, extra: Partial<Lease> = {}): Lease {
  return {
    subnet: parseIPv4Net(cidr),
    attrs: {
      publicIP,
      publicIPv6: null,
      backendType: "vxlan",
      backendData: { VNI: 1, VtepMAC: "c6:d2:32:6f:8f:44" },
    },
    expiration: Date.UTC(2030, 0, 2, 3, 4, 5),
    ...extra,
  };
}

/** A status the test changes between requests, as the agent would. */
function harness() {
  let status: AgentStatus = {
    ready: false,
    state: "registering",
    reason: "acquiring a lease from etcd",
    peers: [],
    extIface,
    storeName: "etcd",
  };
  const metrics = new Registry();
  const app = createStatusApp({ status: () => status, metrics, version: "9.9.9" });
  return {
    app,
    metrics,
    set: (patch: Partial<AgentStatus>) => void (status = { ...status, ...patch }),
  };
}

Deno.test("GET /healthz answers 200 whether or not the agent is ready", async () => {
  const h = harness();
  for (const ready of [false, true]) {
    h.set({ ready });
    const res = await h.app.request("/healthz");
    assert.equal(res.status, 200);
    assert.equal(await res.text(), "ok\n");
  }
});

Deno.test("GET /readyz answers 503 with the reason until ready, then 200", async () => {
  const h = harness();
  let res = await h.app.request("/readyz");
  assert.equal(res.status, 503);
  assert.equal(await res.text(), "not ready: acquiring a lease from etcd\n");
  h.set({ reason: null });
  res = await h.app.request("/readyz");
  assert.equal(res.status, 503);
  assert.equal(await res.text(), "not ready: starting\n");
  h.set({ ready: true, reason: null, lease: lease("10.5.3.0/24", "192.0.2.1") });
  res = await h.app.request("/readyz");
  assert.equal(res.status, 200);
  assert.equal(await res.text(), "ok\n");
  h.set({ ready: false, reason: "subnet.env not written: EACCES" });
  res = await h.app.request("/readyz");
  assert.equal(res.status, 503);
  assert.equal(await res.text(), "not ready: subnet.env not written: EACCES\n");
});

Deno.test("GET /metrics serves the registry in Prometheus text format", async () => {
  const h = harness();
  h.metrics.counter("weft_test_total", "A test counter").inc({ store: "etcd" }, 3);
  const res = await h.app.request("/metrics");
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  assert.equal(
    await res.text(),
    '# HELP weft_test_total A test counter\n# TYPE weft_test_total counter\nweft_test_total{store="etcd"} 3\n',
  );
});

Deno.test("GET /v1/lease answers 503 before a lease and the lease as JSON after", async () => {
  const h = harness();
  let res = await h.app.request("/v1/lease");
  assert.equal(res.status, 503);
  assert.deepEqual(await res.json(), { error: "no lease yet: acquiring a lease from etcd" });
  h.set({
    ready: true,
    reason: null,
    lease: lease("10.5.3.0/24", "192.0.2.1", {
      ipv6Subnet: parseIPv6Net("fd00:12:13:3::/64"),
      attrs: { publicIP: "192.0.2.1", publicIPv6: "fd00::1", backendType: "host-gw" },
    }),
  });
  res = await h.app.request("/v1/lease");
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /^application\/json/);
  assert.deepEqual(await res.json(), {
    subnet: "10.5.3.0/24",
    ipv6Subnet: "fd00:12:13:3::/64",
    publicIP: "192.0.2.1",
    publicIPv6: "fd00::1",
    backendType: "host-gw",
    backendData: null,
    expiration: "2030-01-02T03:04:05.000Z",
  });
});

Deno.test("leaseView() shows reservations as never expiring and udp leases without a type", () => {
  const view = leaseView({
    subnet: parseIPv4Net("10.5.9.0/24"),
    attrs: { publicIP: "192.0.2.9" },
    expiration: null,
  });
  assert.deepEqual(view, {
    subnet: "10.5.9.0/24",
    publicIP: "192.0.2.9",
    publicIPv6: null,
    backendType: null,
    backendData: null,
    expiration: null,
  });
});

Deno.test("GET /v1/leases lists self and the peers in address order", async () => {
  const h = harness();
  h.set({
    peers: [
      lease("10.5.10.0/24", "192.0.2.10"),
      lease("10.5.2.0/24", "192.0.2.2"),
      lease("10.5.100.0/24", "192.0.2.100"),
      lease("9.0.0.0/24", "192.0.2.9"),
    ],
  });
  let body = await (await h.app.request("/v1/leases")).json();
  assert.equal(body.self, null);
  assert.deepEqual(
    body.peers.map((p: { subnet: string }) => p.subnet),
    ["9.0.0.0/24", "10.5.2.0/24", "10.5.10.0/24", "10.5.100.0/24"],
  );
  assert.deepEqual(body.peers[1], {
    subnet: "10.5.2.0/24",
    publicIP: "192.0.2.2",
    publicIPv6: null,
    backendType: "vxlan",
    backendData: { VNI: 1, VtepMAC: "c6:d2:32:6f:8f:44" },
    expiration: "2030-01-02T03:04:05.000Z",
  });
  h.set({ lease: lease("10.5.3.0/24", "192.0.2.1") });
  body = await (await h.app.request("/v1/leases")).json();
  assert.equal(body.self.subnet, "10.5.3.0/24");
});

Deno.test("GET /v1/status summarises the agent", async () => {
  const h = harness();
  h.set({
    ready: true,
    state: "ready",
    reason: null,
    backendType: "vxlan",
    config: parseNetworkConfig(`{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}`),
    lease: lease("10.5.3.0/24", "192.0.2.1"),
    peers: [lease("10.5.4.0/24", "192.0.2.4")],
  });
  const body = await (await h.app.request("/v1/status")).json();
  assert.deepEqual({ ...body, lease: body.lease.subnet }, {
    ready: true,
    state: "ready",
    reason: null,
    version: "9.9.9",
    store: "etcd",
    backend: "vxlan",
    iface: "eth0",
    publicIP: "192.0.2.1",
    publicIPv6: null,
    network: "10.5.0.0/16",
    ipv6Network: null,
    lease: "10.5.3.0/24",
    peers: 1,
  });
});

Deno.test("GET /v1/status shows the IPv6 network, subnet and public IPv6 of a dual-stack and an IPv6-only agent", async () => {
  const h = harness();
  const dual: Lease = {
    subnet: parseIPv4Net("10.5.3.0/24"),
    ipv6Subnet: parseIPv6Net("fd00:5:0:3::/64"),
    attrs: {
      publicIP: "192.0.2.1",
      publicIPv6: "fd00::1",
      backendType: "vxlan",
      backendData: { VNI: 1, VtepMAC: "c6:d2:32:6f:8f:44" },
      backendV6Data: { VNI: 1, VtepMAC: "c6:d2:32:6f:8f:66" },
    },
    expiration: null,
  };
  h.set({
    ready: true,
    state: "ready",
    reason: null,
    config: parseNetworkConfig(
      `{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:5::/56","Backend":{"Type":"vxlan"}}`,
    ),
    extIface: { ...extIface, ifaceV6Addr: "fd00::1", extV6Addr: "fd00::1" },
    lease: dual,
  });
  const body = await (await h.app.request("/v1/status")).json();
  assert.deepEqual(
    [body.network, body.ipv6Network, body.publicIP, body.publicIPv6],
    ["10.5.0.0/16", "fd00:5::/56", "192.0.2.1", "fd00::1"],
  );
  assert.deepEqual(
    [body.lease.subnet, body.lease.ipv6Subnet, body.lease.publicIPv6, body.lease.backendV6Data],
    ["10.5.3.0/24", "fd00:5:0:3::/64", "fd00::1", { VNI: 1, VtepMAC: "c6:d2:32:6f:8f:66" }],
  );
  h.set({
    config: parseNetworkConfig(
      `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:5::/56","Backend":{"Type":"host-gw"}}`,
    ),
    extIface: {
      ...extIface,
      ifaceAddr: "",
      extAddr: "",
      ifaceV6Addr: "fd00::1",
      extV6Addr: "fd00::1",
    },
  });
  const v6only = await (await h.app.request("/v1/status")).json();
  assert.deepEqual(
    [v6only.network, v6only.ipv6Network, v6only.publicIP, v6only.publicIPv6],
    [null, "fd00:5::/56", null, "fd00::1"],
  );
  const page = await (await h.app.request("/")).text();
  assert.ok(page.includes("eth0 fd00::1"), page);
  // before the interface is picked
  h.set({
    ready: false,
    state: "picking-interface",
    reason: "picking the external interface",
    extIface: undefined,
  });
  const early = await (await h.app.request("/v1/status")).json();
  assert.deepEqual([early.iface, early.publicIP, early.publicIPv6], [null, null, null]);
  assert.equal((await h.app.request("/readyz")).status, 503);
});

Deno.test("GET / renders an HTML page with self first, peers in order and text escaped", async () => {
  const h = harness();
  h.set({
    reason: `store said <b>"no"</b> & closed`,
    backendType: "<vxlan>",
    lease: lease("10.5.3.0/24", "192.0.2.1"),
    peers: [
      lease("10.5.10.0/24", "192.0.2.10", { expiration: null }),
      { ...lease("10.5.2.0/24", "192.0.2.2"), attrs: { publicIP: "<img src=x>" } },
    ],
  });
  const res = await h.app.request("/");
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /^text\/html/);
  const html = await res.text();
  assert.ok(html.startsWith("<!doctype html>"));
  assert.ok(html.includes("<h1>weft 9.9.9</h1>"));
  assert.ok(
    html.includes("not ready: store said &lt;b&gt;&quot;no&quot;&lt;/b&gt; &amp; closed"),
    html,
  );
  assert.ok(html.includes("<dt>backend</dt><dd>&lt;vxlan&gt;</dd>"), html);
  assert.ok(html.includes("<td>&lt;img src=x&gt;</td>"));
  assert.ok(!html.includes("<img"), "no markup from data");
  assert.ok(!html.includes("<b>"), "no markup from data");
  const order = ["10.5.3.0/24", "10.5.2.0/24", "10.5.10.0/24"].map((s) => html.indexOf(s));
  assert.ok(order.every((i) => i > 0), String(order));
  assert.deepEqual([...order].sort((a, b) => a - b), order, "self, then peers by address");
  assert.ok(html.includes('<tr class="self"><td>10.5.3.0/24</td>'));
  assert.ok(html.includes("<td>this node</td>"), "the own row says so");
  assert.ok(html.includes("<script>"), "the page updates itself");
});

Deno.test("GET /v1/overview and the page show each peer's last change, kernel state and the recent events", async () => {
  const ring = new EventRing({ now: () => Date.UTC(2030, 0, 1, 0, 0, 0) });
  let status: AgentStatus = {
    ready: true,
    state: "ready",
    reason: null,
    peers: [
      lease("10.5.2.0/24", "192.0.2.2"),
      lease("10.5.4.0/24", "192.0.2.4"),
      lease("10.5.6.0/24", "192.0.2.6"),
    ],
    peerChangedAt: new Map([["10.5.2.0/24", Date.UTC(2030, 0, 1, 0, 0, 0) - 125_000]]),
    peerStates: new Map<string, PeerKernelState>([
      ["10.5.2.0/24", { state: "applied" }],
      ["10.5.4.0/24", { state: "failed", detail: "ENOBUFS <x>" }],
    ]),
    lease: lease("10.5.3.0/24", "192.0.2.1"),
    backendType: "vxlan",
    extIface,
    storeName: "etcd",
  };
  const app = createStatusApp({
    status: () => status,
    metrics: new Registry(),
    events: ring,
    now: () => Date.UTC(2030, 0, 1, 0, 0, 0),
  });
  ring.record("info", "peer added", { subnet: "10.5.2.0/24" });
  ring.record("warn", "could not write peer state", { peer: "10.5.4.0/24", error: "ENOBUFS" });
  const o = await (await app.request("/v1/overview")).json();
  assert.equal(o.node.ready, true);
  assert.equal(o.node.lease.subnet, "10.5.3.0/24");
  assert.deepEqual(
    o.peers.map((
      p: { subnet: string; changedAt: string | null; kernel: unknown },
    ) => [p.subnet, p.changedAt, p.kernel]),
    [
      ["10.5.2.0/24", "2029-12-31T23:57:55.000Z", { state: "applied" }],
      ["10.5.4.0/24", null, { state: "failed", detail: "ENOBUFS <x>" }],
      ["10.5.6.0/24", null, null],
    ],
  );
  assert.deepEqual(o.events.map((e: { msg: string }) => e.msg), [
    "could not write peer state",
    "peer added",
  ]);
  const live = await (await app.request("/v1/overview.html")).text();
  assert.ok(!live.startsWith("<!doctype"), "the live part only");
  assert.ok(live.includes("2 min ago"), live);
  assert.ok(live.includes('<td class="k-applied">✓ in place</td>'), live);
  assert.ok(live.includes('✗ failed<div class="detail">ENOBUFS &lt;x&gt;</div>'), live);
  assert.ok(live.includes('<td class="muted">not reported</td>'), live);
  assert.ok(
    live.includes('<strong>peer added</strong> <span class="f">subnet=10.5.2.0/24</span>'),
    live,
  );
  assert.ok(live.indexOf("could not write") < live.indexOf("peer added"), "newest first");
  status = { ...status, peers: [...status.peers, lease("10.5.7.0/24", "192.0.2.7")] };
  assert.ok((await (await app.request("/")).text()).includes("10.5.7.0/24"));
});

Deno.test("ago() says how long ago in people's units", () => {
  const now = "2030-01-01T12:00:00.000Z";
  const at = (s: number) => new Date(Date.parse(now) - s * 1000).toISOString();
  assert.deepEqual([0, 89, 600, 7200, 200_000].map((s) => ago(at(s), now)), [
    "0 s ago",
    "89 s ago",
    "10 min ago",
    "2 h ago",
    "2 d ago",
  ]);
  assert.equal(ago(null, now), "");
});

Deno.test("unknown paths answer 404", async () => {
  const res = await harness().app.request("/v1/nope");
  assert.equal(res.status, 404);
});

Deno.test("leaseView() and /v1/leases show IPv6-only leases without an IPv4 subnet, after the others", async () => {
  const v6 = (cidr6: string, ip6: string): Lease => ({
    ipv6Subnet: parseIPv6Net(cidr6),
    attrs: { publicIP: "", publicIPv6: ip6, backendType: "host-gw" },
    expiration: null,
  });
  assert.deepEqual(leaseView(v6("fd00:10:5:2::/64", "2001:db8::2")), {
    ipv6Subnet: "fd00:10:5:2::/64",
    publicIP: "",
    publicIPv6: "2001:db8::2",
    backendType: "host-gw",
    backendData: null,
    expiration: null,
  });
  const h = harness();
  h.set({
    peers: [
      v6("fd00:10:5:10::/64", "2001:db8::10"),
      lease("10.5.2.0/24", "192.0.2.2"),
      v6("fd00:10:5:2::/64", "2001:db8::2"),
    ],
  });
  const body = await (await h.app.request("/v1/leases")).json();
  assert.deepEqual(
    body.peers.map((p: { subnet?: string; ipv6Subnet?: string }) => p.subnet ?? p.ipv6Subnet),
    ["10.5.2.0/24", "fd00:10:5:2::/64", "fd00:10:5:10::/64"],
  );
  const page = await (await h.app.request("/")).text();
  assert.match(page, /<td>fd00:10:5:2::\/64<\/td><td>2001:db8::2<\/td>/);
});
