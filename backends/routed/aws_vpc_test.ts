import assert from "node:assert/strict";
import { ConfigError } from "../../core/errors.ts";
import { parseIPv4Net, parseIPv6Net } from "../../core/ip.ts";
import { parseNetworkConfig } from "../../lease/config.ts";
import type { Lease } from "../../lease/types.ts";
import { addInstance, hostContext, type SimInstance } from "../../testing/aws_hosts.ts";
import { type AwsHarness, makeFakeAwsHarness } from "../../testing/ec2_world.ts";
import type { FakeEc2 } from "../../testing/fake_ec2.ts";
import { FakeClock } from "../../testing/fake_clock.ts";
import { peerLease } from "../../testing/routing.ts";
import { RouteProviderError } from "../cloud/provider.ts";
import { ThrottleGate } from "../cloud/throttle.ts";
import { awsVpcBackend, type AwsVpcNetwork } from "./aws_vpc.ts";
import { parseCloudRouteOptions } from "./cloud.ts";

const REGION = "eu-west-3";
type Harness = AwsHarness & { ec2: FakeEc2 };

const test = (name: string, fn: () => Promise<void>) =>
  Deno.test({ name, fn, sanitizeOps: false, sanitizeResources: false });

async function withWorld(fn: (h: Harness) => Promise<void>): Promise<void> {
  const h = await makeFakeAwsHarness(REGION, { maxAttempts: 1 });
  try {
    await fn(h);
  } finally {
    await h.close();
  }
}

/** Register the aws-vpc backend of host `index` (its own ENI and instance). */
async function register(
  h: Harness,
  options: {
    index?: number;
    instance?: SimInstance;
    backend?: Record<string, unknown>;
    clock?: FakeClock;
    subnet?: string;
  } = {},
) {
  const index = options.index ?? 0;
  const instance = options.instance ?? await addInstance(h, index);
  const clock = options.clock ?? new FakeClock();
  const ctx = hostContext({
    backend: { Type: "aws-vpc", ...options.backend },
    index,
    subnet: options.subnet,
    clock,
  });
  const backend = awsVpcBackend({
    aws: instance.aws,
    gate: new ThrottleGate({ clock }),
    random: () => 0.5,
  });
  return { ctx, instance, clock, backend, register: () => backend.register(ctx) };
}

const routesOf = (h: Harness) =>
  Object.fromEntries(
    h.ec2.routeTable(h.world.table)!.routes
      .filter((r) => r.destination.startsWith("10.5."))
      .map((r) => [r.destination, r.networkInterfaceId ?? r.state]),
  );

test("register discovers, leases as flannel's aws-vpc (PublicIP only) and writes its route first", async () => {
  await withWorld(async (h) => {
    const host = await register(h);
    const network = await host.register() as AwsVpcNetwork;
    assert.deepEqual(host.ctx.acquired, [{ publicIP: "192.0.2.10" }]);
    assert.deepEqual(routesOf(h), { "10.5.1.0/24": host.instance.eni });
    assert.equal(h.ec2.networkInterface(host.instance.eni)?.sourceDestCheck, false);
    assert.equal(network.notReadyReason?.(), null);
    assert.equal(network.mtu, 9001, "no encapsulation: the interface's MTU");
    assert.deepEqual(network.self.tables, [h.world.table]);
    assert.deepEqual(h.ec2.log.map((c) => c.action), [
      "ModifyNetworkInterfaceAttribute",
      "DescribeRouteTables", // the subnet's table
      "DescribeRouteTables", // its routes
      "CreateRoute",
    ]);
  });
});

test("peers' routes are kept and cost no call; a gone lease's route goes at the next listing", async () => {
  await withWorld(async (h) => {
    const a = await register(h, { index: 0, backend: { RouteResyncSeconds: 60 } });
    const b = await register(h, { index: 1 });
    const na = await a.register();
    await b.register();
    const leaseB = peerLease("10.5.2.0/24", "192.0.2.11");
    h.ec2.resetCalls();
    await na.syncPeers([leaseB]);
    await na.updatePeers!([{ type: "added", lease: peerLease("10.5.3.0/24", "192.0.2.12") }]);
    await na.updatePeers!([{ type: "removed", lease: leaseB }]);
    assert.equal(h.ec2.calls(), 0, "lease events cost no EC2 call");
    assert.equal(routesOf(h)["10.5.2.0/24"], b.instance.eni);
    // the periodic sync lists once (60 s ± 25 %) and removes the gone lease's route
    const ac = new AbortController();
    const running = na.run(ac.signal);
    try {
      await a.clock.advance(80_000);
      assert.deepEqual(routesOf(h), { "10.5.1.0/24": a.instance.eni });
      assert.deepEqual(h.ec2.log.map((c) => c.action), ["DescribeRouteTables", "DeleteRoute"]);
    } finally {
      ac.abort();
      await running;
    }
  });
});

test("a node join costs the same few calls whatever the cluster size, and the others none", async () => {
  await withWorld(async (h) => {
    const joined: { network: AwsVpcNetwork; lease: Lease }[] = [];
    const perJoin: number[] = [];
    const byOthers: number[] = [];
    for (let i = 0; i < 12; i++) {
      const host = await register(h, { index: i });
      h.ec2.resetCalls();
      const network = await host.register() as AwsVpcNetwork;
      perJoin.push(h.ec2.calls());
      const lease = peerLease(`10.5.${i + 1}.0/24`, `192.0.2.${10 + i}`);
      h.ec2.resetCalls();
      for (const other of joined) {
        await other.network.updatePeers!([{ type: "added", lease }]);
      }
      await network.syncPeers(joined.map((j) => j.lease));
      byOthers.push(h.ec2.calls());
      joined.push({ network, lease });
    }
    assert.deepEqual(perJoin, Array(12).fill(4), "discovery 2 + list 1 + create 1");
    assert.deepEqual(byOthers, Array(12).fill(0));
    assert.equal(Object.keys(routesOf(h)).length, 12);
  });
});

test("a malformed RouteTableID is a ConfigError naming the value, before any EC2 call", async () => {
  await withWorld(async (h) => {
    for (const bad of ["rtb-xyz", 42, ["rtb-01234567", "igw-0123456789abcdef0"]]) {
      const host = await register(h, { backend: { RouteTableID: bad } });
      h.ec2.resetCalls();
      await assert.rejects(host.register(), (e: unknown) => {
        assert.ok(e instanceof ConfigError, `${e}`);
        assert.equal(e.path, "Backend.RouteTableID");
        assert.ok(e.message.includes(`current value is ${JSON.stringify(bad)}`), e.message);
        return true;
      });
      assert.equal(h.ec2.calls(), 0);
    }
  });
});

test("RouteResyncSeconds must be an integer from 1 to 86400", () => {
  assert.equal(
    parseCloudRouteOptions({ routeresyncseconds: 30 }, "Backend").listIntervalMs,
    30_000,
  );
  assert.equal(parseCloudRouteOptions({}, "Backend").listIntervalMs, 120_000);
  for (const bad of [0, 1.5, "60", 100_000]) {
    assert.throws(
      () => parseCloudRouteOptions({ RouteResyncSeconds: bad }, "Backend"),
      (e: unknown) =>
        e instanceof ConfigError && e.path === "Backend.RouteResyncSeconds" &&
        e.message.includes(`current value is ${JSON.stringify(bad)}`),
    );
  }
  return Promise.resolve();
});

test("a route table of another VPC fails register naming both VPCs", async () => {
  await withWorld(async (h) => {
    const host = await register(h, { backend: { RouteTableID: h.world.otherVpc.mainTable } });
    await assert.rejects(host.register(), (e: unknown) => {
      assert.ok(e instanceof RouteProviderError && e.kind === "invalid", `${e}`);
      assert.match(e.message, new RegExp(`belongs to VPC ${h.world.otherVpc.vpcId}`));
      assert.match(e.message, new RegExp(`is in VPC ${h.world.vpcId}`));
      return true;
    });
    assert.deepEqual(host.ctx.acquired, [], "no lease taken");
  });
});

test("a missing IAM permission for SourceDestCheck fails register naming the action", async () => {
  await withWorld(async (h) => {
    h.ec2.deny("ModifyNetworkInterfaceAttribute");
    const host = await register(h);
    await assert.rejects(
      host.register(),
      /ec2:ModifyNetworkInterfaceAttribute was denied .*allow the IAM action ec2:ModifyNetworkInterfaceAttribute/,
    );
  });
});

test("CreateRoute denied: ready waits, /readyz names ec2:CreateRoute, the route comes once allowed", async () => {
  await withWorld(async (h) => {
    h.ec2.deny("CreateRoute");
    const host = await register(h);
    const network = await host.register();
    assert.match(network.notReadyReason?.() ?? "", /ec2:CreateRoute was denied/);
    assert.ok(host.ctx.logger.lines.some((l) => l.includes("cannot write this host's route yet")));
    const metrics = host.ctx.metrics.render();
    assert.match(
      metrics,
      /weft_cloud_api_calls_total\{operation="create",provider="aws-vpc",result="denied"\} 1/,
    );
    assert.match(metrics, /weft_cloud_own_route\{provider="aws-vpc",table="rtb-[0-9a-f]+"\} 0/);
    h.ec2.allow("CreateRoute");
    h.ec2.resetCalls();
    await assert.rejects(network.syncPeers([]), /ec2:CreateRoute was denied/);
    assert.equal(h.ec2.calls(), 0, "held for 30 s: no call yet");
    assert.match(network.notReadyReason?.() ?? "", /denied/);
    await host.clock.advance(31_000);
    await network.syncPeers([]);
    assert.equal(network.notReadyReason?.(), null);
    assert.equal(routesOf(h)["10.5.1.0/24"], host.instance.eni);
  });
});

test("a full route table: /readyz and the log name the table, its routes and the quota", async () => {
  await withWorld(async (h) => {
    h.ec2.setRouteLimit(2, h.world.table); // the local route and the default route
    const host = await register(h);
    const network = await host.register();
    const reason = network.notReadyReason?.() ?? "";
    assert.match(
      reason,
      new RegExp(`Cannot add the route 10\\.5\\.1\\.0/24 to ${h.world.table}: .* holds 2 routes`),
    );
    assert.match(reason, /Raise the quota "Routes per route table"/);
    assert.match(host.ctx.metrics.render(), /result="limit"\} 1/);
  });
});

test("instance metadata unreachable: register fails 'unavailable' saying this is not EC2", async () => {
  await withWorld(async (h) => {
    const instance = await addInstance(h, 0);
    const { createImdsClient } = await import("../cloud/aws/imds.ts");
    const host = await register(h, {
      instance: {
        ...instance,
        aws: { ...instance.aws, imds: createImdsClient({ endpoint: "http://127.0.0.1:9" }) },
      },
    });
    await assert.rejects(host.register(), (e: unknown) => {
      assert.ok(e instanceof RouteProviderError && e.kind === "unavailable", `${e}`);
      assert.match(e.message, /does not look like an EC2 instance/);
      return true;
    });
  });
});

test("a throttled discovery fails 'throttled' and closes the process's gate", async () => {
  await withWorld(async (h) => {
    h.ec2.throttle(5);
    const host = await register(h);
    const gate = new ThrottleGate({ clock: host.clock });
    const backend = awsVpcBackend({ aws: host.instance.aws, gate });
    await assert.rejects(
      backend.register(host.ctx),
      /EC2 throttled ec2:ModifyNetworkInterfaceAttribute/,
    );
    assert.ok(gate.closedForMs > 0 && gate.pauseMs === 1000, `${gate.pauseMs}`);
  });
});

test("IPv6: with EnableIPv6 the lease's IPv6 subnet gets a route to the same interface", async () => {
  await withWorld(async (h) => {
    const host = await register(h);
    const config = parseNetworkConfig(JSON.stringify({
      Network: "10.5.0.0/16",
      EnableIPv6: true,
      IPv6Network: "fd00:5::/56",
      Backend: { Type: "aws-vpc" },
    }));
    const ctx = {
      ...host.ctx,
      config,
      acquire: () =>
        Promise.resolve<Lease>({
          subnet: parseIPv4Net("10.5.1.0/24"),
          ipv6Subnet: parseIPv6Net("fd00:5:0:1::/64"),
          attrs: { publicIP: "192.0.2.10" },
          expiration: null,
        }),
    };
    await host.backend.register(ctx);
    const routes = h.ec2.routeTable(h.world.table)!.routes;
    const v6 = routes.find((r) => r.destination === "fd00:5:0:1::/64");
    assert.equal(v6?.networkInterfaceId, host.instance.eni);
    assert.equal(v6?.family, 6);
  });
});

test("IPv6-only is refused with a clear ConfigError", async () => {
  await withWorld(async (h) => {
    const host = await register(h);
    const config = parseNetworkConfig(JSON.stringify({
      EnableIPv4: false,
      EnableIPv6: true,
      IPv6Network: "fd00:5::/56",
      Backend: { Type: "aws-vpc" },
    }));
    await assert.rejects(
      host.backend.register({ ...host.ctx, config }),
      (e: unknown) => e instanceof ConfigError && /IPv6-only is not supported/.test(e.message),
    );
  });
});

test("release() removes this host's route (the lease was given back)", async () => {
  await withWorld(async (h) => {
    const host = await register(h);
    const network = await host.register() as AwsVpcNetwork;
    await network.release();
    assert.deepEqual(routesOf(h), {});
  });
});
