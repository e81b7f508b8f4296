import assert from "node:assert/strict";
import { serveHttp } from "../../../core/runtime.ts";
import { FakeClock } from "../../../testing/fake_clock.ts";
import { startFakeGce } from "../../../testing/fake_gce.ts";
import { RouteProviderError } from "../provider.ts";
import { createGceMetadata, metadataHostFromEnv } from "./metadata.ts";

const test = (name: string, fn: () => Promise<void>) =>
  Deno.test({ name, sanitizeOps: false, sanitizeResources: false, fn });

async function rejects(p: Promise<unknown>, kind: string, part: string | RegExp) {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof RouteProviderError, `expected a RouteProviderError, got ${e}`);
    assert.equal(e.kind, kind, e.message);
    if (typeof part === "string") assert.ok(e.message.includes(part), e.message);
    else assert.match(e.message, part);
    return;
  }
  assert.fail("expected a rejection");
}

test("instance() reads project, zone, instance name (not the hostname) and network", async () => {
  const fake = await startFakeGce({
    instanceName: "pool-a-7x2k",
    hostname: "worker-3.corp.example",
  });
  try {
    const md = createGceMetadata({ env: fake.env });
    assert.deepEqual(await md.instance(), {
      projectId: "weft-test",
      projectNumber: "123456789012",
      zone: "europe-west1-b",
      name: "pool-a-7x2k",
      network: { projectNumber: "123456789012", name: "default" },
    });
    assert.equal(fake.calls["metadata.instance/hostname"], undefined);
  } finally {
    await fake.close();
  }
});

test("the metadata fake refuses requests without Metadata-Flavor: Google, as GCE does", async () => {
  const fake = await startFakeGce();
  try {
    const url = `http://${fake.metadataHost}/computeMetadata/v1/project/project-id`;
    const bare = await fetch(url);
    assert.equal(bare.status, 403);
    assert.match(await bare.text(), /Metadata-Flavor/);
    const forwarded = await fetch(url, {
      headers: { "Metadata-Flavor": "Google", "X-Forwarded-For": "10.0.0.9" },
    });
    assert.equal(forwarded.status, 403);
    await forwarded.body?.cancel();
    const ok = await fetch(url, { headers: { "Metadata-Flavor": "Google" } });
    assert.equal(ok.headers.get("metadata-flavor"), "Google");
    assert.equal(await ok.text(), "weft-test");
  } finally {
    await fake.close();
  }
});

test("a reply without Metadata-Flavor: Google is refused as 'unavailable' (not GCE)", async () => {
  const fake = await startFakeGce();
  try {
    fake.setMetadataFlavor(false);
    const md = createGceMetadata({ env: fake.env });
    await rejects(md.instance(), "unavailable", "without the header 'Metadata-Flavor: Google'");
    await rejects(md.token(), "unavailable", "not a GCE metadata server");
  } finally {
    await fake.close();
  }
});

Deno.test("metadataHostFromEnv() reads GCE_METADATA_HOST, then GCE_METADATA_IP, else the GCE name", () => {
  assert.equal(metadataHostFromEnv({}), "metadata.google.internal");
  assert.equal(metadataHostFromEnv({ GCE_METADATA_HOST: "127.0.0.1:8080" }), "127.0.0.1:8080");
  assert.equal(metadataHostFromEnv({ GCE_METADATA_HOST: "http://md.test:81/" }), "md.test:81");
  assert.equal(metadataHostFromEnv({ GCE_METADATA_IP: "169.254.169.254" }), "169.254.169.254");
  assert.equal(
    metadataHostFromEnv({ GCE_METADATA_HOST: "a:1", GCE_METADATA_IP: "b" }),
    "a:1",
  );
  assert.equal(
    createGceMetadata({ env: { GCE_METADATA_HOST: "10.1.2.3:99" } }).base,
    "http://10.1.2.3:99/computeMetadata/v1/",
  );
});

test("token() is cached and fetched again 5 min before it expires", async () => {
  const fake = await startFakeGce({ tokenLifetimeS: 3600 });
  try {
    const clock = new FakeClock();
    const md = createGceMetadata({ env: fake.env, clock });
    const calls = () => fake.calls["metadata.instance/service-accounts/default/token"] ?? 0;
    const [a, b] = await Promise.all([md.token(), md.token()]);
    assert.equal(a, b);
    assert.equal(calls(), 1, "concurrent callers share one request");
    await clock.advance(3600_000 - 300_000 - 1);
    assert.equal(await md.token(), a);
    assert.equal(calls(), 1);
    await clock.advance(1);
    const c = await md.token();
    assert.notEqual(c, a);
    assert.equal(calls(), 2);
    md.invalidateToken();
    assert.notEqual(await md.token(), c);
    assert.equal(calls(), 3);
  } finally {
    await fake.close();
  }
});

test("a short-lived token is fetched again at half its life, not on every call", async () => {
  const fake = await startFakeGce({ tokenLifetimeS: 240 });
  try {
    const clock = new FakeClock();
    const md = createGceMetadata({ env: fake.env, clock });
    const first = await md.token();
    await clock.advance(119_999);
    assert.equal(await md.token(), first);
    await clock.advance(1);
    assert.notEqual(await md.token(), first);
    assert.equal(fake.calls["metadata.instance/service-accounts/default/token"], 2);
  } finally {
    await fake.close();
  }
});

test("a VM without a service account: token() is 'denied', naming what to attach", async () => {
  const fake = await startFakeGce();
  try {
    fake.removeServiceAccount();
    await rejects(createGceMetadata({ env: fake.env }).token(), "denied", "no service account");
  } finally {
    await fake.close();
  }
});

test("a metadata server that cannot be reached is 'unavailable', naming GCE_METADATA_HOST", async () => {
  const fake = await startFakeGce();
  const host = fake.metadataHost;
  await fake.close();
  const md = createGceMetadata({ env: { GCE_METADATA_HOST: host } });
  await rejects(
    md.instance(),
    "unavailable",
    `Cannot reach the GCE metadata server at http://${host}/`,
  );
  await rejects(md.token(), "unavailable", "set GCE_METADATA_HOST");
});

test("a metadata server that does not answer times out as 'unavailable'", async () => {
  let release = () => {};
  const stuck = new Promise<void>((r) => (release = r));
  const server = await serveHttp({
    hostname: "127.0.0.1",
    port: 0,
    fetch: async () => {
      await stuck;
      return new Response("late", { headers: { "Metadata-Flavor": "Google" } });
    },
  });
  try {
    const clock = new FakeClock();
    const md = createGceMetadata({
      env: { GCE_METADATA_HOST: `127.0.0.1:${server.port}` },
      clock,
      timeoutMs: 2000,
    });
    const outcome = rejects(md.get("instance/name"), "unavailable", /timed out after 2000 ms/);
    await clock.advance(2000);
    await outcome;
  } finally {
    release();
    await server.shutdown();
  }
});

test("an unexpected value is 'unavailable', naming the key and the value", async () => {
  const fake = await startFakeGce({ instanceName: "Node_1" });
  try {
    await rejects(
      createGceMetadata({ env: fake.env }).instance(),
      "unavailable",
      'unexpected instance/name: "Node_1"',
    );
  } finally {
    await fake.close();
  }
});

test("an aborted request rejects with the caller's reason", async () => {
  const fake = await startFakeGce();
  try {
    const ctl = new AbortController();
    const reason = new Error("stop");
    ctl.abort(reason);
    await assert.rejects(
      createGceMetadata({ env: fake.env }).token(ctl.signal),
      (e) => e === reason,
    );
  } finally {
    await fake.close();
  }
});
