import assert from "node:assert/strict";
import { ConfigError } from "../../core/errors.ts";
import { parseIPv4 } from "../../core/ip.ts";
import { parseNetworkConfig } from "../../lease/config.ts";
import type { Lease } from "../../lease/types.ts";
import { FakeClock } from "../../testing/fake_clock.ts";
import { FakeDatapath } from "../../testing/datapath_fake.ts";
import type { FakeGce } from "../../testing/fake_gce.ts";
import { addVm, gceHostContext, setupGce, type SimVm } from "../../testing/gce_world.ts";
import { peerLease } from "../../testing/routing.ts";
import { waitFor } from "../../testing/wait.ts";
import { RouteProviderError } from "../cloud/provider.ts";
import { ThrottleGate } from "../cloud/throttle.ts";
import type { CloudRoutedNetwork } from "./cloud.ts";
import { gceBackend } from "./gce.ts";
import { parseCloudRouteData } from "./hybrid.ts";
import { vxlanBackend, type VxlanNetwork } from "./vxlan.ts";

const test = (name: string, fn: () => Promise<void>) =>
  Deno.test({ name, fn, sanitizeOps: false, sanitizeResources: false });

async function withFake(fn: (fake: FakeGce) => Promise<void>, options = {}): Promise<void> {
  const h = await setupGce(options);
  try {
    await fn(h.fake);
  } finally {
    await h.close();
  }
}

/** The gce backend of host `index` (its own VM and metadata server). */
async function host(
  fake: FakeGce,
  options: {
    index?: number;
    vm?: SimVm;
    backend?: Record<string, unknown>;
    clock?: FakeClock;
  } = {},
) {
  const index = options.index ?? 0;
  const vm = options.vm ?? await addVm(fake, index);
  const clock = options.clock ?? new FakeClock();
  const ctx = gceHostContext({ backend: { Type: "gce", ...options.backend }, index, clock });
  const backend = gceBackend({ gce: vm.gce, gate: new ThrottleGate({ clock }), random: () => 0.5 });
  return {
    ctx,
    vm,
    clock,
    backend,
    register: async () => await backend.register(ctx) as CloudRoutedNetwork,
  };
}

/** weft's routes in the fake: destination → next hop. */
const podRoutes = (fake: FakeGce) =>
  Object.fromEntries(
    fake.routes().filter((r) => String(r.destRange).startsWith("10.5."))
      .map((r) => [r.destRange, r.nextHopInstance ?? r.nextHopIp]),
  );

const apiCalls = (fake: FakeGce) =>
  Object.fromEntries(Object.entries(fake.calls).filter(([k]) => !k.startsWith("metadata.")));

test("register discovers, leases as flannel's gce (PublicIP only) and writes its route, flannel's name", async () => {
  await withFake(async (fake) => {
    const h = await host(fake);
    fake.resetCalls();
    const network = await h.register();
    assert.deepEqual(h.ctx.acquired, [{ publicIP: "192.0.2.10" }]);
    const route = fake.routes().find((r) => r.destRange === "10.5.1.0/24")!;
    assert.equal(route.name, "flannel-10-5-1-0-24");
    assert.equal(route.nextHopInstance, fake.instanceLink);
    assert.equal(route.network, fake.networkLink);
    assert.equal(route.priority, 1000);
    assert.equal(route.description, "weft pod-subnet route");
    assert.equal(network.notReadyReason?.(), null);
    assert.equal(network.mtu, 1460, "no encapsulation: the interface's MTU");
    assert.deepEqual(network.self.tables, [fake.networkLink]);
    assert.equal(network.self.target, fake.instanceLink);
    assert.deepEqual(apiCalls(fake), {
      "routes.list": 2, // discovery's one-route probe, then the network's routes
      "routes.insert": 1,
      "globalOperations.wait": 1,
    });
    assert.equal(fake.calls["metadata.instance/hostname"], undefined, "never the hostname");
  });
});

test("peers' routes are kept and cost no call; a gone lease's route goes at the next listing", async () => {
  await withFake(async (fake) => {
    const a = await host(fake, { index: 0, backend: { RouteResyncSeconds: 60 } });
    const b = await host(fake, { index: 1 });
    const na = await a.register();
    await b.register();
    const leaseB = peerLease("10.5.2.0/24", "192.0.2.11");
    fake.resetCalls();
    await na.syncPeers([leaseB]);
    await na.updatePeers!([{ type: "added", lease: peerLease("10.5.3.0/24", "192.0.2.12") }]);
    await na.updatePeers!([{ type: "removed", lease: leaseB }]);
    assert.deepEqual(apiCalls(fake), {}, "lease events cost no API call");
    assert.equal(podRoutes(fake)["10.5.2.0/24"], b.vm.instanceLink);
    const ac = new AbortController();
    const running = na.run(ac.signal);
    try {
      await a.clock.advance(80_000); // 60 s ± 25 %
      await fake.waitForCalls("globalOperations.wait", 1);
      await waitFor(
        "the gone lease's route leaves",
        () => "10.5.2.0/24" in podRoutes(fake) ? JSON.stringify(podRoutes(fake)) : null,
        10_000,
      );
      assert.deepEqual(podRoutes(fake), { "10.5.1.0/24": fake.instanceLink });
      assert.deepEqual(apiCalls(fake), {
        "routes.list": 1,
        "routes.get": 1,
        "routes.delete": 1,
        "globalOperations.wait": 1,
      });
    } finally {
      ac.abort();
      await running;
    }
  });
});

test("a node join costs the same few calls whatever the cluster size, and the others none", async () => {
  await withFake(async (fake) => {
    const perJoin: string[] = [];
    const hosts: Awaited<ReturnType<typeof host>>[] = [];
    for (let i = 0; i < 8; i++) hosts.push(await host(fake, { index: i }));
    const leases: Lease[] = [];
    const networks: CloudRoutedNetwork[] = [];
    for (const [i, h] of hosts.entries()) {
      fake.resetCalls();
      const n = await h.register();
      perJoin.push(JSON.stringify(fake.calls));
      const lease = peerLease(`10.5.${i + 1}.0/24`, `192.0.2.${10 + i}`);
      fake.resetCalls();
      for (const other of networks) await other.updatePeers!([{ type: "added", lease }]);
      assert.deepEqual(fake.calls, {}, "the other hosts make no call for a join");
      networks.push(n);
      leases.push(lease);
    }
    assert.equal(new Set(perJoin).size, 1, `every join costs the same: ${perJoin.join("\n")}`);
    const calls = JSON.parse(perJoin[0]) as Record<string, number>;
    const api = Object.entries(calls).filter(([k]) => !k.startsWith("metadata."));
    assert.deepEqual(Object.fromEntries(api), {
      "routes.list": 2,
      "routes.insert": 1,
      "globalOperations.wait": 1,
    });
    assert.equal(Object.keys(podRoutes(fake)).length, 8);
  });
});

test("Backend options: RouteResyncSeconds is checked; RouteTableID (aws-vpc's) and EnableIPv6 are refused", async () => {
  await withFake(async (fake) => {
    for (const bad of [{ RouteResyncSeconds: 0 }, { RouteResyncSeconds: "60" }]) {
      const h = await host(fake, { backend: bad });
      await assert.rejects(h.register(), (e: unknown) => {
        assert.ok(e instanceof ConfigError, String(e));
        assert.match(e.message, /"Backend\.RouteResyncSeconds" is invalid/);
        return true;
      });
    }
    fake.resetCalls();
    const h = await host(fake, { backend: { RouteTableID: "rtb-0123456789abcdef0" } });
    await assert.rejects(h.register(), (e: unknown) => {
      assert.ok(e instanceof ConfigError, String(e));
      assert.match(e.message, /"Backend\.RouteTableID" is an aws-vpc key.*"rtb-0123456789abcdef0"/);
      return true;
    });
    const v6 = await host(fake);
    const config = parseNetworkConfig(JSON.stringify({
      Network: "10.5.0.0/16",
      EnableIPv6: true,
      IPv6Network: "fd00:5::/56",
      Backend: { Type: "gce" },
    }));
    await assert.rejects(
      v6.backend.register({ ...v6.ctx, config }),
      /IPv4 routes only on GCE: "EnableIPv6" is on/,
    );
    assert.deepEqual(apiCalls(fake), {}, "refused before any API call");
  });
});

test("bad input: a metadata server that does not answer with Metadata-Flavor: Google fails register as 'unavailable'", async () => {
  await withFake(async (fake) => {
    fake.setMetadataFlavor(false);
    const h = await host(fake);
    const e = await rejectsKind(h.register(), "unavailable");
    assert.match(e.message, /Metadata-Flavor: Google/);
    assert.deepEqual(h.ctx.acquired, [], "no lease without discovery");
    assert.deepEqual(apiCalls(fake), {});
  });
});

test("bad input: a wrong project fails register as 'invalid', naming the project", async () => {
  await withFake(async (fake) => {
    const vm = await addVm(fake, 0, { project: "not-my-project" });
    const h = await host(fake, { vm });
    const e = await rejectsKind(h.register(), "invalid");
    assert.match(e.message, /Project not-my-project does not exist/);
    assert.deepEqual(h.ctx.acquired, []);
  });
});

test("bad input: ROUTES quota exceeded: /readyz and /metrics name the quota; the route comes once raised", async () => {
  await withFake(async (fake) => {
    fake.setRoutesQuota(2); // GCE's two routes of the network
    const h = await host(fake);
    const network = await h.register();
    const reason = network.notReadyReason?.() ?? "";
    assert.match(reason, /ROUTES-per-project/);
    assert.match(reason, /holds 2 routes/);
    assert.match(reason, /request a higher quota/);
    assert.match(
      h.ctx.metrics.render(),
      /weft_cloud_api_calls_total\{operation="create",provider="gce",result="limit"\} 1/,
    );
    fake.setRoutesQuota(250);
    await h.clock.advance(10 * 60_000);
    await network.syncPeers([]);
    assert.equal(network.notReadyReason?.(), null);
    assert.equal(podRoutes(fake)["10.5.1.0/24"], fake.instanceLink);
  });
});

test("bad input: a rate-limit storm: calls wait at the process gate with growing pauses, then the route lands", async () => {
  await withFake(async (fake) => {
    const h = await host(fake);
    await h.register();
    const b = await host(fake, { index: 1, clock: h.clock });
    fake.throttle(4);
    fake.resetCalls();
    await rejectsKind(b.register(), "throttled");
    assert.match(
      b.ctx.metrics.render(),
      /weft_cloud_api_throttle_pause_seconds\{provider="gce"\} [1-9]/,
    );
    // the same gate object is not shared here: each host's own gate backs off
    const network = await (async () => {
      for (let i = 0; i < 10; i++) {
        await b.clock.advance(60_000);
        try {
          return await b.register();
        } catch (e) {
          if (!(e instanceof RouteProviderError) || e.kind !== "throttled") throw e;
        }
      }
      throw new Error("still throttled after 10 minutes");
    })();
    assert.equal(network.notReadyReason?.(), null);
    assert.equal(podRoutes(fake)["10.5.2.0/24"], b.vm.instanceLink);
    assert.ok((fake.calls["routes.list"] ?? 0) >= 4, JSON.stringify(fake.calls));
  });
});

test("bad input: compute.routes.create denied: /readyz names the permission; the route comes once allowed", async () => {
  await withFake(async (fake) => {
    fake.deny("compute.routes.create");
    const h = await host(fake);
    const network = await h.register();
    const reason = network.notReadyReason?.() ?? "";
    assert.match(reason, /Permission compute\.routes\.create is missing/);
    assert.match(reason, /auth\/compute/);
    assert.match(
      h.ctx.metrics.render(),
      /weft_cloud_api_calls_total\{operation="create",provider="gce",result="denied"\} 1/,
    );
    fake.allow("compute.routes.create");
    await h.clock.advance(10 * 60_000);
    await network.syncPeers([]);
    assert.equal(network.notReadyReason?.(), null);
    assert.equal(podRoutes(fake)["10.5.1.0/24"], fake.instanceLink);
  });
});

test("bad input: a route of the same name pointing elsewhere: this host's subnet is taken back (flannel's route, a hand-made one with a warning); others' hand-made routes are never touched", async () => {
  await withFake(async (fake) => {
    const other = fake.addInstance("europe-west1-d", "old-node");
    fake.addRoute({
      name: "flannel-10-5-1-0-24", // as flannel left it: its name form, no description
      network: fake.networkLink,
      destRange: "10.5.1.0/24",
      priority: 1000,
      nextHopInstance: other,
    });
    const h = await host(fake);
    const network = await h.register();
    assert.equal(network.notReadyReason?.(), null);
    assert.equal(podRoutes(fake)["10.5.1.0/24"], fake.instanceLink);
    assert.equal(
      fake.routes().find((r) => r.destRange === "10.5.1.0/24")?.description,
      "weft pod-subnet route",
    );

    // a hand-made route (not weft's) on a peer's subnet and on a gone subnet: never touched
    for (const [i, dest] of [[2, "10.5.2.0/24"], [9, "10.5.9.0/24"]] as const) {
      fake.addRoute({
        name: `flannel-10-5-${i}-0-24`,
        network: fake.networkLink,
        destRange: dest,
        priority: 900,
        nextHopIp: "10.132.0.9",
        description: "hand-made",
      });
    }
    const ac = new AbortController();
    const running = network.run(ac.signal);
    try {
      await network.syncPeers([peerLease("10.5.2.0/24", "192.0.2.11")]);
      fake.resetCalls();
      await h.clock.advance(200_000);
      await fake.waitForCalls("routes.list", 1);
    } finally {
      ac.abort();
      await running;
    }
    assert.equal(podRoutes(fake)["10.5.2.0/24"], "10.132.0.9");
    assert.equal(podRoutes(fake)["10.5.9.0/24"], "10.132.0.9");
    assert.equal(fake.calls["routes.delete"], undefined);

    // a hand-made route on this host's own leased subnet is taken over, with a warning
    fake.addRoute({
      name: "flannel-10-5-3-0-24",
      network: fake.networkLink,
      destRange: "10.5.3.0/24",
      priority: 900,
      nextHopIp: "10.132.0.9",
      description: "hand-made",
    });
    const c = await host(fake, { index: 2 });
    const nc = await c.register();
    assert.equal(nc.notReadyReason?.(), null);
    assert.equal(podRoutes(fake)["10.5.3.0/24"], c.vm.instanceLink);
    const logged = (c.ctx.logger as unknown as { lines: string[] }).lines.join("\n");
    assert.match(logged, /replacing a route weft did not write/);
  });
});

test("hybrid: CloudRoutes gce publishes the network and the VM; a same-network peer gets no vxlan entries", async () => {
  await withFake(async (fake) => {
    const vm = await addVm(fake, 0);
    const clock = new FakeClock();
    const dp = new FakeDatapath({ random: () => 0.5 });
    dp.addLink({
      name: "eth0",
      mtu: 1460,
      up: true,
      addresses: [{ ip: parseIPv4("192.0.2.10"), prefixLen: 24 }],
    });
    const ctx = gceHostContext({
      backend: { Type: "vxlan", CloudRoutes: { Type: "gce", RouteResyncSeconds: 60 } },
      index: 0,
      clock,
    });
    const backend = vxlanBackend({
      datapath: dp,
      gce: vm.gce,
      gate: new ThrottleGate({ clock }),
      random: () => 0.5,
    });
    const network = await backend.register(ctx) as VxlanNetwork;
    assert.equal(podRoutes(fake)["10.5.1.0/24"], fake.instanceLink);
    const data = parseCloudRouteData(ctx.acquired[0].backendData);
    assert.deepEqual(data, { Type: "gce", Location: fake.networkLink, Target: fake.instanceLink });
    assert.equal(network.notReadyReason?.(), null);

    // on-prem: METADATA_SERVER_DETECTION=none → plain vxlan, no metadata read
    fake.resetCalls();
    const onPrem = gceHostContext({
      backend: { Type: "vxlan", CloudRoutes: { Type: "gce" } },
      index: 1,
      clock,
    });
    const dp2 = new FakeDatapath({ random: () => 0.5 });
    dp2.addLink({
      name: "eth0",
      mtu: 1500,
      up: true,
      addresses: [{ ip: parseIPv4("192.0.2.11"), prefixLen: 24 }],
    });
    await vxlanBackend({
      datapath: dp2,
      gce: { ...vm.gce, env: { METADATA_SERVER_DETECTION: "none" } },
      gate: new ThrottleGate({ clock }),
    }).register(onPrem);
    assert.equal(parseCloudRouteData(onPrem.acquired[0].backendData), null);
    assert.deepEqual(fake.calls, {});
  });
});

async function rejectsKind(p: Promise<unknown>, kind: string): Promise<RouteProviderError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof RouteProviderError, `expected a RouteProviderError, got ${e}`);
    assert.equal(e.kind, kind, e.message);
    return e;
  }
  assert.fail(`expected a RouteProviderError of kind ${kind}, got success`);
}
