import assert from "node:assert/strict";
import process from "node:process";
import * as sdk from "@aws-sdk/client-ec2";
import { serveHttp } from "../../../core/runtime.ts";
import {
  type AwsHarness,
  makeAwsHarness,
  TEST_CREDENTIALS,
  testEc2Client,
} from "../../../testing/ec2_world.ts";
import { FakeClock } from "../../../testing/fake_clock.ts";
import { createFakeEc2, type FakeEc2 } from "../../../testing/fake_ec2.ts";
import { routeProviderContract } from "../../../testing/route_provider_contract.ts";
import { RouteProviderError } from "../provider.ts";
import { AWS_IAM_ACTIONS } from "./errors.ts";
import { createAwsVpcProvider, parseRouteTableIds } from "./provider.ts";

/** The region the fake plays: not the SDK's default, so a provider that ignores IMDS fails. */
const REGION = "eu-west-3";

async function fakeHarness(
  options: Parameters<typeof makeAwsHarness>[1] = {},
  fakeOptions: Parameters<typeof createFakeEc2>[0] = {},
): Promise<AwsHarness & { ec2: FakeEc2 }> {
  const ec2 = await createFakeEc2({ region: REGION, ...fakeOptions });
  try {
    const h = await makeAwsHarness({
      endpoint: ec2.endpoint,
      region: REGION,
      faults: (world) => ({
        limit: (n) => ec2.setRouteLimit(n, world.table),
        throttle: (n) => ec2.throttle(n),
        denyWrites() {
          for (const a of ["CreateRoute", "ReplaceRoute", "DeleteRoute"]) ec2.deny(a);
          return "ec2:CreateRoute";
        },
        async removeTarget(target) {
          await testEc2Client(ec2.endpoint, REGION).send(
            new sdk.DeleteNetworkInterfaceCommand({ NetworkInterfaceId: target }),
          );
        },
      }),
      missing: {},
      close: () => ec2.close(),
    }, options);
    ec2.resetCalls();
    return Object.assign(h, { ec2 });
  } catch (e) {
    await ec2.close();
    throw e;
  }
}

routeProviderContract("aws-vpc on the EC2 fake", () => fakeHarness());

async function withFake(
  fn: (h: AwsHarness & { ec2: FakeEc2 }) => Promise<void>,
  options: Parameters<typeof makeAwsHarness>[1] = {},
  fakeOptions: Parameters<typeof createFakeEc2>[0] = {},
): Promise<void> {
  const h = await fakeHarness(options, fakeOptions);
  try {
    await fn(h);
  } finally {
    await h.close();
  }
}

async function rejection(p: Promise<unknown>): Promise<RouteProviderError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof RouteProviderError, `expected a RouteProviderError, got ${e}`);
    return e;
  }
  assert.fail("expected a rejection");
}

const test = (name: string, fn: () => Promise<void>) =>
  Deno.test({ name, fn, sanitizeOps: false, sanitizeResources: false });

test("discover() turns SourceDestCheck off on this host's interface and finds the subnet's table", async () => {
  await withFake(async (h) => {
    const me = h.world.interfaces[0].id;
    assert.equal(h.ec2.networkInterface(me)?.sourceDestCheck, true);
    const self = await h.provider.discover();
    assert.deepEqual(self, {
      target: me,
      tables: [h.world.table],
      location: h.world.vpcId,
      locationCidrs: ["10.0.0.0/16"],
    });
    assert.equal(h.ec2.networkInterface(me)?.sourceDestCheck, false);
    assert.equal(h.ec2.networkInterface(h.world.interfaces[1].id)?.sourceDestCheck, true);
    await h.provider.discover(); // idempotent
    assert.equal(h.ec2.networkInterface(me)?.sourceDestCheck, false);
    assert.deepEqual(h.ec2.log.map((c) => `${c.action} ${c.status}`), [
      "ModifyNetworkInterfaceAttribute 200",
      "DescribeRouteTables 200",
      "ModifyNetworkInterfaceAttribute 200",
      "DescribeRouteTables 200",
    ]);
  });
});

test("discover() falls back to the VPC's main table when the subnet has none of its own", async () => {
  await withFake(async (h) => {
    // a host in a subnet without an explicit association: the main table routes it
    const client = testEc2Client(h.ec2.endpoint, REGION);
    const bare = await client.send(
      new sdk.CreateSubnetCommand({ VpcId: h.world.vpcId, CidrBlock: "10.0.2.0/24" }),
    );
    h.imds.addInstance({
      instanceId: "i-0bbbbbbbbbbbbbbbb",
      region: REGION,
      interfaces: [{
        mac: "02:00:00:00:00:02",
        interfaceId: h.world.interfaces[1].id,
        subnetId: bare.Subnet!.SubnetId!,
        vpcId: h.world.vpcId,
        vpcCidrs: ["10.0.0.0/16"],
      }],
    });
    const { createImdsClient } = await import("./imds.ts");
    const provider = h.withOptions({
      imds: createImdsClient({ endpoint: h.imds.endpointFor("i-0bbbbbbbbbbbbbbbb") }),
    });
    const self = await provider.discover();
    assert.deepEqual(self.tables, [h.world.mainTable]);
    assert.equal(self.target, h.world.interfaces[1].id);
  });
});

test("discover() uses the configured RouteTableID tables (string or list) after checking them", async () => {
  await withFake(async (h) => {
    const one = await h.withOptions({ routeTableIds: h.world.mainTable }).discover();
    assert.deepEqual(one.tables, [h.world.mainTable]);
    const both = await h.withOptions({ routeTableIds: [h.world.table, h.world.mainTable] })
      .discover();
    assert.deepEqual(both.tables, [h.world.table, h.world.mainTable]);
  });
});

test("a configured route table of another VPC is 'invalid', naming both VPCs", async () => {
  await withFake(async (h) => {
    const provider = h.withOptions({ routeTableIds: [h.world.table, h.world.otherVpc.mainTable] });
    const e = await rejection(provider.discover());
    assert.equal(e.kind, "invalid");
    assert.ok(e.message.includes(h.world.otherVpc.mainTable), e.message);
    assert.ok(e.message.includes(`belongs to VPC ${h.world.otherVpc.vpcId}`), e.message);
    assert.ok(e.message.includes(`is in VPC ${h.world.vpcId}`), e.message);
  });
});

test("a configured route table that does not exist is 'invalid', naming it", async () => {
  await withFake(async (h) => {
    const e = await rejection(h.withOptions({ routeTableIds: "rtb-0000000000000dead" }).discover());
    assert.equal(e.kind, "invalid");
    assert.match(e.message, /Route table rtb-0000000000000dead .* does not exist in eu-west-3/);
    const l = await rejection(h.provider.list("rtb-0000000000000dead"));
    assert.equal(l.kind, "invalid");
    assert.match(l.message, /rtb-0000000000000dead does not exist in eu-west-3/);
  });
});

test("a malformed RouteTableID is 'invalid' before any call, naming the value", () => {
  for (const bad of ["", "rtb-xyz", "igw-0123456789abcdef0", 42, [], ["rtb-01234567", 7], {}]) {
    assert.throws(
      () => createAwsVpcProvider({ routeTableIds: bad }),
      (e: unknown) =>
        e instanceof RouteProviderError && e.kind === "invalid" &&
        e.message.includes(`current value is ${JSON.stringify(bad)}`),
      JSON.stringify(bad),
    );
  }
  assert.deepEqual(parseRouteTableIds(undefined), []);
  assert.deepEqual(parseRouteTableIds("rtb-01234567"), ["rtb-01234567"]);
  assert.deepEqual(
    parseRouteTableIds(["rtb-0123456789abcdef0", "rtb-01234567", "rtb-01234567"]),
    ["rtb-0123456789abcdef0", "rtb-01234567"],
  );
  return Promise.resolve();
});

test("list() is one DescribeRouteTables call filtered by route-table-id only", async () => {
  await withFake(async (h) => {
    await h.provider.list(h.table);
    assert.deepEqual(h.ec2.log.map((c) => c.action), ["DescribeRouteTables"]);
  });
});

test("list() follows NextToken through pages that the filter left empty", async () => {
  await withFake(
    async (h) => {
      // three tables exist (main, the subnet's, the other VPC's main), one per
      // page: the other VPC's table is on the third page, after two empty ones
      const routes = await h.provider.list(h.world.otherVpc.mainTable);
      assert.deepEqual(routes.map((r) => r.destination), ["10.1.0.0/16"]);
      assert.equal(h.ec2.calls("DescribeRouteTables"), 3);
    },
    {},
    { pageSize: 1 },
  );
});

test("list() reports a route to an interface as owned even when EC2 also names the instance", async () => {
  await withFake(async (h) => {
    const peer = h.world.interfaces[1].id;
    h.ec2.attach(peer, "i-0123456789abcdef0");
    await h.provider.create(h.table, "10.244.7.0/24", peer);
    const route = (await h.provider.list(h.table)).find((r) => r.destination === "10.244.7.0/24");
    assert.deepEqual(route, {
      table: h.table,
      destination: "10.244.7.0/24",
      target: peer,
      owned: true,
    });
    const written = h.ec2.routeTable(h.table)!.routes.find((r) =>
      r.destination === "10.244.7.0/24"
    );
    assert.equal(written?.instanceId, "i-0123456789abcdef0", "EC2 names the instance too");
  });
});

test("a missing IAM permission is 'denied' naming the exact action, for each call", async () => {
  await withFake(async (h) => {
    const self = await h.provider.discover();
    const cases: [string, () => Promise<unknown>][] = [
      ["CreateRoute", () => h.provider.create(h.table, "10.244.1.0/24", self.target)],
      ["ReplaceRoute", () => h.provider.replace(h.table, "10.244.1.0/24", self.target)],
      ["DeleteRoute", () => h.provider.remove(h.table, "10.244.1.0/24")],
      ["DescribeRouteTables", () => h.provider.list(h.table)],
      ["ModifyNetworkInterfaceAttribute", () => h.provider.discover()],
    ];
    for (const [action, call] of cases) {
      h.ec2.deny(action);
      const e = await rejection(call());
      h.ec2.allow(action);
      assert.equal(e.kind, "denied", action);
      assert.ok(e.message.startsWith(`ec2:${action} was denied`), e.message);
      assert.ok(e.message.includes(`allow the IAM action ec2:${action}`), e.message);
      assert.ok(!e.message.includes("Encoded authorization failure"), "no encoded blob");
    }
  });
});

test("a full route table is 'limit': the table, its route count, the quota and where to raise it", async () => {
  await withFake(async (h) => {
    const self = await h.provider.discover();
    h.ec2.setRouteLimit(4, h.table); // local + default + two of ours
    await h.provider.create(h.table, "10.244.1.0/24", self.target);
    await h.provider.create(h.table, "10.244.2.0/24", h.world.interfaces[1].id);
    const e = await rejection(h.provider.create(h.table, "10.244.3.0/24", self.target));
    assert.equal(e.kind, "limit");
    assert.match(
      e.message,
      new RegExp(
        `Cannot add the route 10\\.244\\.3\\.0/24 to ${h.table}: the table is full: it holds 4 routes`,
      ),
    );
    assert.match(e.message, /"Routes per route table" \(default 50, often 500, at most 1000\)/);
    assert.match(
      e.message,
      /Service Quotas → Amazon Virtual Private Cloud \(Amazon VPC\), quota code L-93826ACB, region eu-west-3/,
    );
  });
});

test("a throttling storm is 'throttled' after the SDK's own retries, quickly", async () => {
  await withFake(async (h) => {
    await h.provider.discover();
    h.ec2.resetCalls();
    h.ec2.throttle(1000);
    const started = performance.now();
    const e = await rejection(h.provider.create(h.table, "10.244.1.0/24", h.targets[0]));
    assert.equal(e.kind, "throttled");
    assert.match(
      e.message,
      /EC2 throttled ec2:CreateRoute on rtb-[0-9a-f]+ \(RequestLimitExceeded, HTTP 503\) after 2 attempt\(s\)/,
    );
    assert.equal(h.ec2.calls("CreateRoute"), 2, "maxAttempts: 2 means one SDK retry");
    assert.ok(performance.now() - started < 5000);
    h.ec2.throttle(0);
    // once the storm passes, the same provider works
    await h.provider.create(h.table, "10.244.1.0/24", h.targets[0]);
  });
});

test("instance metadata unreachable: discover() and every EC2 call are 'unavailable' and say why", async () => {
  await withFake(async (h) => {
    await h.imds.close(); // nothing listens there any more
    const e = await rejection(h.provider.discover());
    assert.equal(e.kind, "unavailable");
    assert.match(
      e.message,
      /Cannot reach the instance metadata service at http:\/\/127\.0\.0\.1:\d+/,
    );
    assert.match(e.message, /does not look like an EC2 instance/);
    const l = await rejection(h.provider.list(h.table));
    assert.equal(l.kind, "unavailable", "the region comes from IMDS: no region, no EC2 client");
    assert.equal(h.ec2.calls(), 0);
  });
});

test("EC2 unreachable is 'unavailable' naming the endpoint", async () => {
  await withFake(async (h) => {
    await h.provider.discover();
    await h.ec2.close();
    const e = await rejection(h.provider.list(h.table));
    assert.equal(e.kind, "unavailable");
    assert.match(
      e.message,
      /Cannot reach EC2 at http:\/\/127\.0\.0\.1:\d+ for ec2:DescribeRouteTables on rtb-[0-9a-f]+ \(ECONNREFUSED\)/,
    );
  });
});

test("the EC2 endpoint comes from AWS_ENDPOINT_URL_EC2 when none is given", async () => {
  await withFake(async (h) => {
    const saved = process.env.AWS_ENDPOINT_URL_EC2;
    process.env.AWS_ENDPOINT_URL_EC2 = h.ec2.endpoint;
    try {
      const provider = h.withOptions({ endpoint: undefined });
      assert.equal((await provider.list(h.table)).length, 2);
      assert.equal(h.ec2.calls("DescribeRouteTables"), 1);
    } finally {
      if (saved === undefined) delete process.env.AWS_ENDPOINT_URL_EC2;
      else process.env.AWS_ENDPOINT_URL_EC2 = saved;
    }
  });
});

test("a destination that is not canonical CIDR is 'invalid' before any call", async () => {
  await withFake(async (h) => {
    for (const bad of ["10.244.1.1/24", "10.244.1.0", "fd00::1/64"]) {
      const e = await rejection(h.provider.create(h.table, bad, h.targets[0]));
      assert.equal(e.kind, "invalid", bad);
      assert.ok(e.message.includes(JSON.stringify(bad)), e.message);
    }
    assert.equal(h.ec2.calls(), 0);
  });
});

test("an IPv6 destination is written as DestinationIpv6CidrBlock and listed back", async () => {
  await withFake(async (h) => {
    await h.provider.create(h.table, "fd00:10:244:1::/64", h.targets[0]);
    const r = (await h.provider.list(h.table)).find((x) => x.destination === "fd00:10:244:1::/64");
    assert.equal(r?.target, h.targets[0]);
    await h.provider.remove(h.table, "fd00:10:244:1::/64");
    assert.equal(h.ec2.routeTable(h.table)!.routes.length, 2);
  });
});

test("the provider calls only the IAM actions it lists (the policy for examples/aws/)", async () => {
  await withFake(async (h) => {
    const self = await h.provider.discover();
    await h.provider.list(h.table);
    await h.provider.create(h.table, "10.244.1.0/24", self.target);
    await h.provider.replace(h.table, "10.244.1.0/24", h.targets[1]);
    await h.provider.remove(h.table, "10.244.1.0/24");
    await h.withOptions({ routeTableIds: h.world.table }).discover();
    const used = [...new Set(h.ec2.log.map((c) => `ec2:${c.action}`))].sort();
    assert.deepEqual(used, [...AWS_IAM_ACTIONS].sort());
  });
});

test("calls per operation: discover 2 (+1 without a subnet table), list/create/replace/remove 1", async () => {
  await withFake(async (h) => {
    const count = async (fn: () => Promise<unknown>) => {
      h.ec2.resetCalls();
      await fn();
      return h.ec2.calls();
    };
    const self = await h.provider.discover();
    assert.equal(await count(() => h.provider.discover()), 2);
    assert.equal(await count(() => h.provider.list(h.table)), 1);
    assert.equal(await count(() => h.provider.create(h.table, "10.244.1.0/24", self.target)), 1);
    assert.equal(await count(() => h.provider.replace(h.table, "10.244.1.0/24", h.targets[1])), 1);
    assert.equal(await count(() => h.provider.remove(h.table, "10.244.1.0/24")), 1);
    assert.equal(await count(() => h.provider.remove(h.table, "10.244.1.0/24")), 1);
    const imdsGets = h.imds.requests.filter((r) => r.method === "GET").length;
    assert.equal(imdsGets, 7, "the instance identity is read once per provider");
  });
});

test("an aborted caller gets its own abort reason", async () => {
  await withFake(async (h) => {
    await h.provider.discover();
    const ctl = new AbortController();
    const reason = new Error("agent stopping");
    ctl.abort(reason);
    await assert.rejects(h.provider.list(h.table, ctl.signal), (e) => e === reason);
  });
});

test("an EC2 that never answers times out on the injected clock as 'unavailable'", async () => {
  const release: (() => void)[] = [];
  const silent = await serveHttp({
    hostname: "127.0.0.1",
    port: 0,
    fetch: () => new Promise<Response>((resolve) => release.push(() => resolve(new Response()))),
  });
  const clock = new FakeClock();
  try {
    const provider = createAwsVpcProvider({
      region: REGION, // no IMDS needed
      endpoint: `http://127.0.0.1:${silent.port}`,
      credentials: TEST_CREDENTIALS,
      clock,
      callTimeoutMs: 5000,
      env: {},
    });
    let settled = false;
    const pending = rejection(provider.list("rtb-0123456789abcdef0")).finally(
      () => (settled = true),
    );
    while (release.length === 0) await clock.advance(0); // the request is in flight
    await clock.advance(4999);
    assert.equal(settled, false, "gave up before the timeout");
    await clock.advance(1);
    const e = await pending;
    assert.equal(e.kind, "unavailable");
    assert.match(
      e.message,
      /EC2 at http:\/\/127\.0\.0\.1:\d+ did not answer ec2:DescribeRouteTables on rtb-0123456789abcdef0 within 5000 ms/,
    );
  } finally {
    for (const r of release) r();
    await silent.shutdown();
  }
});
