import assert from "node:assert/strict";
import { serveHttp } from "../../../core/runtime.ts";
import { FakeClock } from "../../../testing/fake_clock.ts";
import { createFakeImds, type FakeImds, type ImdsInstance } from "../../../testing/fake_imds.ts";
import { RouteProviderError } from "../provider.ts";
import { createImdsClient, DEFAULT_IMDS_ENDPOINT, imdsEndpoint } from "./imds.ts";

const INSTANCE: ImdsInstance = {
  instanceId: "i-0123456789abcdef0",
  region: "eu-west-3",
  interfaces: [{
    mac: "02:42:ac:11:00:02",
    interfaceId: "eni-0a1b2c3d4e5f60718",
    subnetId: "subnet-0aaaabbbbccccdddd",
    vpcId: "vpc-0123abcd4567ef890",
    vpcCidrs: ["10.0.0.0/16", "100.64.0.0/16"],
    privateIp: "10.0.1.10",
  }],
};

async function withImds(
  fn: (imds: FakeImds, clock: FakeClock) => Promise<void>,
  instances: readonly ImdsInstance[] = [INSTANCE],
): Promise<void> {
  const clock = new FakeClock();
  const imds = await createFakeImds({ instances, clock });
  try {
    await fn(imds, clock);
  } finally {
    await imds.close();
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

Deno.test("identity() reads this instance through IMDSv2: one token, then GETs carrying it", async () => {
  await withImds(async (imds, clock) => {
    const client = createImdsClient({ endpoint: imds.endpoint, clock });
    assert.deepEqual(await client.identity(), {
      instanceId: "i-0123456789abcdef0",
      region: "eu-west-3",
      mac: "02:42:ac:11:00:02",
      interfaceId: "eni-0a1b2c3d4e5f60718",
      subnetId: "subnet-0aaaabbbbccccdddd",
      vpcId: "vpc-0123abcd4567ef890",
      vpcCidrs: ["10.0.0.0/16", "100.64.0.0/16"],
    });
    const puts = imds.requests.filter((r) => r.method === "PUT");
    assert.equal(puts.length, 1, "concurrent GETs share one token request");
    assert.equal(imds.requests.filter((r) => r.method === "GET").length, 7);
    assert.ok(imds.requests.every((r) => r.status === 200), JSON.stringify(imds.requests));
  });
});

Deno.test("get() asks for a new token on a 401 and retries once", async () => {
  await withImds(async (imds, clock) => {
    const client = createImdsClient({ endpoint: imds.endpoint, clock });
    assert.equal(await client.get("instance-id"), INSTANCE.instanceId);
    imds.expireTokens();
    assert.equal(await client.get("placement/region"), "eu-west-3");
    assert.deepEqual(
      imds.requests.map((r) => `${r.method} ${r.path} ${r.status}`),
      [
        "PUT /latest/api/token 200",
        "GET /latest/meta-data/instance-id 200",
        "GET /latest/meta-data/placement/region 401",
        "PUT /latest/api/token 200",
        "GET /latest/meta-data/placement/region 200",
      ],
    );
  });
});

Deno.test("get() keeps its token until shortly before the TTL ends on the injected clock", async () => {
  await withImds(async (imds, clock) => {
    const client = createImdsClient({ endpoint: imds.endpoint, clock, tokenTtlSeconds: 600 });
    await client.get("instance-id");
    await clock.advance(500_000);
    await client.get("instance-id");
    assert.equal(imds.requests.filter((r) => r.method === "PUT").length, 1);
    await clock.advance(50_000); // 550 s: inside the last tenth of the lifetime
    await client.get("instance-id");
    assert.equal(imds.requests.filter((r) => r.method === "PUT").length, 2);
    assert.ok(imds.requests.every((r) => r.status === 200), "no request was refused");
  });
});

Deno.test("the endpoint comes from AWS_EC2_METADATA_SERVICE_ENDPOINT, with a path prefix kept", async () => {
  const second: ImdsInstance = {
    ...INSTANCE,
    instanceId: "i-0fedcba9876543210",
    interfaces: [{ ...INSTANCE.interfaces[0], interfaceId: "eni-0ffffeeeeddddcccc" }],
  };
  await withImds(async (imds, clock) => {
    const client = createImdsClient({
      env: { AWS_EC2_METADATA_SERVICE_ENDPOINT: `${imds.endpointFor(second.instanceId)}/` },
      clock,
    });
    assert.equal(client.endpoint, imds.endpointFor(second.instanceId));
    const me = await client.identity();
    assert.equal(me.instanceId, second.instanceId);
    assert.equal(me.interfaceId, "eni-0ffffeeeeddddcccc");
  }, [INSTANCE, second]);
});

Deno.test("imdsEndpoint() follows the AWS SDKs' environment variables", () => {
  const table: [Record<string, string>, string | null][] = [
    [{}, DEFAULT_IMDS_ENDPOINT],
    [{ AWS_EC2_METADATA_SERVICE_ENDPOINT: "http://127.0.0.1:1338/" }, "http://127.0.0.1:1338"],
    [{ AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE: "IPv6" }, "http://[fd00:ec2::254]"],
    [{ AWS_EC2_METADATA_DISABLED: "true" }, null],
    [{ AWS_EC2_METADATA_DISABLED: "false" }, DEFAULT_IMDS_ENDPOINT],
  ];
  for (const [env, want] of table) assert.equal(imdsEndpoint(env), want, JSON.stringify(env));
  assert.throws(
    () => imdsEndpoint({ AWS_EC2_METADATA_SERVICE_ENDPOINT: "169.254.169.254" }),
    (e: unknown) =>
      e instanceof RouteProviderError && e.kind === "invalid" &&
      e.message.includes('current value is "169.254.169.254"'),
  );
});

Deno.test("with AWS_EC2_METADATA_DISABLED=true every read is 'unavailable' and says why", async () => {
  const client = createImdsClient({ env: { AWS_EC2_METADATA_DISABLED: "true" } });
  const e = await rejection(client.identity());
  assert.equal(e.kind, "unavailable");
  assert.match(e.message, /AWS_EC2_METADATA_DISABLED=true.*unset AWS_EC2_METADATA_DISABLED/);
});

Deno.test("a refused connection (not on EC2) is 'unavailable' naming the endpoint", async () => {
  const closed = await serveHttp({ hostname: "127.0.0.1", port: 0, fetch: () => new Response() });
  const endpoint = `http://127.0.0.1:${closed.port}`;
  await closed.shutdown();
  const client = createImdsClient({ endpoint, clock: new FakeClock() });
  const e = await rejection(client.identity());
  assert.equal(e.kind, "unavailable");
  assert.ok(
    e.message.includes(`Cannot reach the instance metadata service at ${endpoint}`),
    e.message,
  );
  assert.match(e.message, /does not look like an EC2 instance/);
});

Deno.test("a metadata service that never answers times out on the injected clock", async () => {
  await withImds(async (imds, clock) => {
    imds.hang();
    const client = createImdsClient({ endpoint: imds.endpoint, clock, timeoutMs: 1000 });
    let settled = false;
    const pending = rejection(client.identity()).finally(() => (settled = true));
    await clock.advance(999);
    assert.equal(settled, false, "gave up before the timeout");
    await clock.advance(1);
    const e = await pending;
    assert.equal(e.kind, "unavailable");
    assert.match(e.message, /No answer from the instance metadata service at .* within 1000 ms/);
    assert.match(e.message, /HttpPutResponseHopLimit/);
  });
});

Deno.test("garbage from the metadata service is an 'unavailable' error naming the path, not a crash", async () => {
  const cases: [path: string, body: string, status: number, want: RegExp][] = [
    [
      "instance-id",
      "<html><body>Welcome to nginx</body></html>",
      200,
      /instance-id with .*nginx.*which is not an instance id \(i-…\)/,
    ],
    [
      "placement/region",
      "Europe",
      200,
      /placement\/region with "Europe", which is not a region name/,
    ],
    ["mac", "02:42", 200, /answered mac with "02:42", which is not a MAC address/],
    [
      "network/interfaces/macs/02:42:ac:11:00:02/vpc-ipv4-cidr-blocks",
      "10.0.0.0/16\nten.0.0.0/8",
      200,
      /vpc-ipv4-cidr-blocks with "10.0.0.0\/16 ten.0.0.0\/8", which is not an IPv4 CIDR/,
    ],
    [
      "network/interfaces/macs/02:42:ac:11:00:02/interface-id",
      "internal error",
      500,
      /answered 500 for \/latest\/meta-data\/network\/interfaces\/macs\/02:42:ac:11:00:02\/interface-id "internal error"/,
    ],
  ];
  for (const [path, body, status, want] of cases) {
    await withImds(async (imds, clock) => {
      imds.override(path, body, status);
      const e = await rejection(createImdsClient({ endpoint: imds.endpoint, clock }).identity());
      assert.equal(e.kind, "unavailable", path);
      assert.match(e.message, want);
    });
  }
});

Deno.test("a missing metadata path is a 404 message; a token refused is explained", async () => {
  await withImds(async (imds, clock) => {
    const client = createImdsClient({ endpoint: imds.endpoint, clock });
    const e = await rejection(client.get("network/interfaces/macs/02:00:00:00:00:99/interface-id"));
    assert.match(e.message, /answered 404 .*no such metadata/);
    const bad = createImdsClient({ endpoint: imds.endpoint, clock, tokenTtlSeconds: 99999 });
    const t = await rejection(bad.get("instance-id"));
    assert.match(t.message, /refused an IMDSv2 token \(PUT \/latest\/api\/token answered 400/);
  });
});

Deno.test("an aborted caller gets its own abort reason, not a provider error", async () => {
  await withImds(async (imds, clock) => {
    imds.hang();
    const client = createImdsClient({ endpoint: imds.endpoint, clock });
    const ctl = new AbortController();
    const pending = client.get("instance-id", ctl.signal);
    const reason = new Error("agent stopping");
    ctl.abort(reason);
    await assert.rejects(pending, (e) => e === reason);
  });
});
