import assert from "node:assert/strict";
import { ConfigError } from "../../core/errors.ts";
import { parseIPv4 } from "../../core/ip.ts";
import { encodeLeaseAttrs, type Lease } from "../../lease/types.ts";
import { addInstance, hostContext, type SimInstance } from "../../testing/aws_hosts.ts";
import { FakeDatapath } from "../../testing/datapath_fake.ts";
import { type AwsHarness, makeFakeAwsHarness } from "../../testing/ec2_world.ts";
import type { FakeEc2 } from "../../testing/fake_ec2.ts";
import { FakeClock } from "../../testing/fake_clock.ts";
import { peerLease } from "../../testing/routing.ts";
import { ThrottleGate } from "../cloud/throttle.ts";
import { parseCloudRouteData } from "./hybrid.ts";
import { parseVxlanLeaseData, vxlanBackend, type VxlanNetwork } from "./vxlan.ts";

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

/** A hybrid vxlan host: fake kernel, its own instance in the fake EC2. */
async function hybridHost(
  h: Harness,
  options: {
    index?: number;
    instance?: SimInstance;
    cloudRoutes?: unknown;
    env?: Record<string, string>;
  } = {},
) {
  const index = options.index ?? 0;
  const instance = options.instance ?? await addInstance(h, index);
  const clock = new FakeClock();
  const ip = `192.0.2.${10 + index}`;
  const dp = new FakeDatapath({ random: () => 0.5 });
  dp.addLink({
    name: "eth0",
    mtu: 9001,
    up: true,
    addresses: [{ ip: parseIPv4(ip), prefixLen: 24 }],
  });
  const ctx = hostContext({
    backend: { Type: "vxlan", CloudRoutes: options.cloudRoutes ?? { Type: "aws-vpc" } },
    index,
    clock,
  });
  const backend = vxlanBackend({
    datapath: dp,
    aws: options.env ? { ...instance.aws, env: options.env } : instance.aws,
    gate: new ThrottleGate({ clock }),
    random: () => 0.5,
  });
  const register = async () => await backend.register(ctx) as VxlanNetwork;
  return { ctx, dp, clock, instance, register };
}

/** The lease a host published (as a peer sees it). */
const published = (ctx: ReturnType<typeof hostContext>, subnet: string): Lease => ({
  ...peerLease(subnet, ctx.acquired[0].publicIP),
  attrs: ctx.acquired[0],
});

const tableRoutes = (h: Harness) =>
  Object.fromEntries(
    h.ec2.routeTable(h.world.table)!.routes
      .filter((r) => r.destination.startsWith("10.5."))
      .map((r) => [r.destination, r.networkInterfaceId ?? r.state]),
  );

test("a hybrid host's lease: vxlan's VNI and VtepMAC first, then CloudRoute; flannel's decoding still reads it", async () => {
  await withWorld(async (h) => {
    const a = await hybridHost(h);
    const network = await a.register();
    const attrs = a.ctx.acquired[0];
    assert.equal(attrs.backendType, "vxlan");
    assert.deepEqual(attrs.backendData, {
      VNI: 1,
      VtepMAC: network.vtepMac,
      CloudRoute: { Type: "aws-vpc", Location: h.world.vpcId, Target: a.instance.eni },
    });
    assert.equal(
      encodeLeaseAttrs(attrs),
      `{"PublicIP":"192.0.2.10","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,` +
        `"VtepMAC":"${network.vtepMac}","CloudRoute":{"Type":"aws-vpc","Location":"${h.world.vpcId}",` +
        `"Target":"${a.instance.eni}"}}}`,
    );
    // what a flannel (or plain weft) vxlan node reads from it
    assert.deepEqual(parseVxlanLeaseData(attrs.backendData), { vni: 1, vtepMac: network.vtepMac });
    assert.deepEqual(parseCloudRouteData(attrs.backendData), {
      Type: "aws-vpc",
      Location: h.world.vpcId,
      Target: a.instance.eni,
    });
    assert.deepEqual(tableRoutes(h), { "10.5.1.0/24": a.instance.eni });
    assert.equal(network.notReadyReason?.(), null);
    assert.equal(network.mtu, 9001 - 50, "vxlan's MTU: some peers are encapsulated");
  });
});

test("a peer in the same VPC gets no kernel entries (the VPC routes it); others get vxlan's", async () => {
  await withWorld(async (h) => {
    const a = await hybridHost(h, { index: 0 });
    const b = await hybridHost(h, { index: 1 });
    const na = await a.register();
    await b.register();
    const vpcPeer = published(b.ctx, "10.5.2.0/24");
    const onPrem = peerLease("10.5.3.0/24", "198.51.100.7", "vxlan", "02:00:00:00:00:07");
    const otherVpc: Lease = {
      ...peerLease("10.5.4.0/24", "198.51.100.8", "vxlan", "02:00:00:00:00:08"),
      attrs: {
        publicIP: "198.51.100.8",
        backendType: "vxlan",
        backendData: {
          VNI: 1,
          VtepMAC: "02:00:00:00:00:08",
          CloudRoute: { Type: "aws-vpc", Location: "vpc-0ffffffffffffffff", Target: "eni-0f" },
        },
      },
    };
    h.ec2.resetCalls();
    await na.syncPeers([vpcPeer, onPrem, otherVpc]);
    assert.equal(h.ec2.calls(), 0);
    assert.deepEqual(a.dp.routes(), [
      "10.5.3.0/24 via 10.5.3.0 dev flannel.1 onlink",
      "10.5.4.0/24 via 10.5.4.0 dev flannel.1 onlink",
    ]);
    assert.deepEqual(tableRoutes(h), {
      "10.5.1.0/24": a.instance.eni,
      "10.5.2.0/24": b.instance.eni,
    });
    // the VPC peer moves on-prem (its lease loses CloudRoute): vxlan takes over
    const moved = peerLease("10.5.2.0/24", "198.51.100.9", "vxlan", "02:00:00:00:00:09");
    await na.updatePeers!([{ type: "added", lease: moved }]);
    assert.ok(a.dp.routes().includes("10.5.2.0/24 via 10.5.2.0 dev flannel.1 onlink"));
  });
});

test("a route in the VPC for a peer that is not in it is stale: removed at the next listing", async () => {
  await withWorld(async (h) => {
    const a = await hybridHost(h, { cloudRoutes: { Type: "aws-vpc", RouteResyncSeconds: 60 } });
    const na = await a.register();
    // an on-prem peer whose subnet still has a route from when it was in the VPC
    await h.provider.create(h.world.table, "10.5.3.0/24", h.world.interfaces[1].id);
    const onPrem = peerLease("10.5.3.0/24", "198.51.100.7", "vxlan", "02:00:00:00:00:07");
    await na.syncPeers([onPrem]);
    const ac = new AbortController();
    const running = na.run(ac.signal);
    try {
      await a.clock.advance(80_000);
      assert.deepEqual(tableRoutes(h), { "10.5.1.0/24": a.instance.eni });
      assert.ok(a.ctx.logger.lines.some((l) => l.includes(`is not in ${h.world.vpcId}`)));
    } finally {
      ac.abort();
      await running;
    }
  });
});

test("AWS_EC2_METADATA_DISABLED=true: an on-prem host, plain vxlan, no EC2 call", async () => {
  await withWorld(async (h) => {
    const a = await hybridHost(h, { env: { AWS_EC2_METADATA_DISABLED: "true" } });
    h.ec2.resetCalls();
    const network = await a.register();
    assert.deepEqual(Object.keys(a.ctx.acquired[0].backendData as object), ["VNI", "VtepMAC"]);
    assert.equal(h.ec2.calls(), 0);
    assert.equal(network.notReadyReason?.(), null);
    await network.syncPeers([peerLease("10.5.2.0/24", "192.0.2.11", "vxlan", "02:00:00:00:00:02")]);
    assert.deepEqual(a.dp.routes(), ["10.5.2.0/24 via 10.5.2.0 dev flannel.1 onlink"]);
  });
});

test("no instance metadata: after two tries the host joins as on-prem and says why", async () => {
  await withWorld(async (h) => {
    const instance = await addInstance(h, 0);
    const { createImdsClient } = await import("../cloud/aws/imds.ts");
    const a = await hybridHost(h, {
      instance: {
        ...instance,
        aws: { ...instance.aws, imds: createImdsClient({ endpoint: "http://127.0.0.1:9" }) },
      },
    });
    const registering = a.register();
    await a.clock.advance(1000); // the pause between the two tries
    await registering;
    assert.deepEqual(Object.keys(a.ctx.acquired[0].backendData as object), ["VNI", "VtepMAC"]);
    assert.ok(
      a.ctx.logger.lines.some((l) =>
        l.includes("not in aws-vpc: this host joins as an on-prem host") &&
        l.includes("does not look like an EC2 instance")
      ),
    );
  });
});

test("CloudRoutes must be an object with a known Type and a valid RouteTableID", async () => {
  await withWorld(async (h) => {
    const cases: [unknown, string, RegExp][] = [
      ["aws-vpc", "Backend.CloudRoutes", /must be an object/],
      [{ Type: "gce-ish" }, "Backend.CloudRoutes.Type", /not a cloud weft can route in/],
      [
        { Type: "aws-vpc", RouteTableID: "rtb-nope" },
        "Backend.CloudRoutes.RouteTableID",
        /Backend\.CloudRoutes\.RouteTableID: expected a route table id .* current value is "rtb-nope"/,
      ],
    ];
    for (const [cloudRoutes, path, message] of cases) {
      const a = await hybridHost(h, { cloudRoutes });
      await assert.rejects(a.register(), (e: unknown) => {
        assert.ok(e instanceof ConfigError, `${e}`);
        assert.equal(e.path, path);
        assert.match(e.message, message);
        return true;
      });
      assert.deepEqual(a.ctx.acquired, [], "no lease taken");
    }
  });
});

test("a hybrid host whose discovery is denied fails register (the agent retries), naming the action", async () => {
  await withWorld(async (h) => {
    h.ec2.deny("DescribeRouteTables");
    const a = await hybridHost(h);
    await assert.rejects(a.register(), /ec2:DescribeRouteTables was denied/);
  });
});
