import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { execPath } from "../../../core/runtime.ts";
import { type FakeGce, startFakeGce } from "../../../testing/fake_gce.ts";
import { makeFakeGceHarness, setupGce } from "../../../testing/gce_world.ts";
import { routeProviderContract } from "../../../testing/route_provider_contract.ts";
import { RouteProviderError } from "../provider.ts";
import { computeEndpoint, createGceRouteProvider } from "./provider.ts";

const setup = setupGce;

routeProviderContract("gce on the GCE fake", () => makeFakeGceHarness());

const test = (name: string, fn: () => Promise<void>) =>
  Deno.test({ name, sanitizeOps: false, sanitizeResources: false, fn });

/**
 * Wait until the fake saw `n` calls of `method` while `pending` is still
 * running; fail (instead of hanging) when `pending` settles first.
 */
async function untilCalls(fake: FakeGce, method: string, n: number, pending: Promise<unknown>) {
  await Promise.race([
    fake.waitForCalls(method, n),
    pending.then(
      () => assert.fail(`the call ended before the fake saw ${n} × ${method}`),
      (e) => assert.fail(`the call failed before the fake saw ${n} × ${method}: ${e}`),
    ),
  ]);
}

async function rejects(p: Promise<unknown>, kind: string): Promise<RouteProviderError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof RouteProviderError, `expected a RouteProviderError, got ${e}`);
    assert.equal(e.kind, kind, e.message);
    return e;
  }
  assert.fail(`expected a RouteProviderError of kind ${kind}, got success`);
}

Deno.test("computeEndpoint() maps gcloud's override onto apiEndpoint, port and protocol", () => {
  assert.deepEqual(computeEndpoint({}), {
    apiEndpoint: "compute.googleapis.com",
    port: 443,
    protocol: "https",
    url: "https://compute.googleapis.com/compute/v1/",
  });
  const cases: [string, string, number, string][] = [
    ["http://127.0.0.1:8089/compute/v1/", "127.0.0.1", 8089, "http"],
    ["https://compute.example.internal/compute/v1", "compute.example.internal", 443, "https"],
    ["http://[::1]:9000/", "::1", 9000, "http"],
    ["http://localhost", "localhost", 80, "http"],
  ];
  for (const [raw, host, port, protocol] of cases) {
    const e = computeEndpoint({ CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE: raw });
    assert.deepEqual([e.apiEndpoint, e.port, e.protocol], [host, port, protocol], raw);
  }
  for (const bad of ["compute.googleapis.com", "https://h/compute/beta/", "ftp://h/compute/v1/"]) {
    assert.throws(
      () => computeEndpoint({ CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE: bad }),
      (e: unknown) =>
        e instanceof RouteProviderError && e.kind === "invalid" && e.message.includes(bad),
    );
  }
});

test("discover() uses instance/name and the NIC's network, not the hostname", async () => {
  const h = await setup({ instanceName: "pool-a-7x2k", hostname: "worker-3.corp.example" });
  try {
    const self = await h.provider.discover();
    assert.equal(self.target, h.fake.instanceLink);
    assert.ok(self.target.endsWith("/zones/europe-west1-b/instances/pool-a-7x2k"));
    assert.deepEqual(self.tables, [h.fake.networkLink]);
    assert.equal(
      h.fake.calls["metadata.instance/hostname"],
      undefined,
      "the hostname is never read",
    );
    assert.equal(h.fake.calls["routes.list"], 1, "discovery proves access with one list call");
  } finally {
    await h.close();
  }
});

test("create, replace and remove cost 2, 5 and 3 API calls (operations DONE within one wait)", async () => {
  const h = await setup();
  try {
    const table = h.fake.networkLink;
    const perAction: Record<string, Record<string, number>> = {};
    const measure = async (what: string, fn: () => Promise<void>) => {
      h.fake.resetCalls();
      await fn();
      perAction[what] = Object.fromEntries(
        Object.entries(h.fake.calls).filter(([k]) => !k.startsWith("metadata.")),
      );
    };
    await h.provider.list(table); // loads the client and the token
    await measure("create", () => h.provider.create(table, "10.244.1.0/24", h.fake.instanceLink));
    await measure("replace", () => h.provider.replace(table, "10.244.1.0/24", h.second));
    await measure(
      "replace (already there)",
      () => h.provider.replace(table, "10.244.1.0/24", h.second),
    );
    await measure("remove", () => h.provider.remove(table, "10.244.1.0/24"));
    await measure("remove (gone)", () => h.provider.remove(table, "10.244.1.0/24"));
    assert.deepEqual(perAction, {
      create: { "routes.insert": 1, "globalOperations.wait": 1 },
      replace: {
        "routes.get": 1,
        "routes.delete": 1,
        "globalOperations.wait": 2,
        "routes.insert": 1,
      },
      "replace (already there)": { "routes.get": 1 },
      remove: { "routes.get": 1, "routes.delete": 1, "globalOperations.wait": 1 },
      "remove (gone)": { "routes.get": 1 },
    });
  } finally {
    await h.close();
  }
});

test("a wait that returns RUNNING is repeated until the operation is DONE", async () => {
  const h = await setup({ waitTimeoutMs: 5 });
  try {
    h.fake.holdOperations(true);
    const created = h.provider.create(h.fake.networkLink, "10.244.1.0/24", h.fake.instanceLink);
    await untilCalls(h.fake, "globalOperations.wait", 3, created);
    assert.deepEqual(h.fake.routes().filter((r) => r.name === "flannel-10-244-1-0-24"), []);
    h.fake.completeOperations();
    await created;
    const r = h.fake.routes().find((r) => r.name === "flannel-10-244-1-0-24");
    assert.equal(r?.nextHopInstance, h.fake.instanceLink);
    assert.equal(r?.description, "weft pod-subnet route");
    assert.equal(r?.priority, 1000);
  } finally {
    await h.close();
  }
});

test("an operation still RUNNING at operationTimeoutMs fails 'unavailable' naming it", async () => {
  const h = await setup({ waitTimeoutMs: 5 }, { operationTimeoutMs: 30 });
  try {
    h.fake.holdOperations(true);
    const e = await rejects(
      h.provider.create(h.fake.networkLink, "10.244.1.0/24", h.fake.instanceLink),
      "unavailable",
    );
    assert.match(e.message, /operation operation-\S+ is still RUNNING/);
  } finally {
    await h.close();
  }
});

test("QUOTA_EXCEEDED in a DONE operation is 'limit', naming the quota, its limit and the routes held", async () => {
  const h = await setup({ routesQuota: 3 });
  try {
    await h.provider.create(h.fake.networkLink, "10.244.1.0/24", h.fake.instanceLink);
    const e = await rejects(
      h.provider.create(h.fake.networkLink, "10.244.2.0/24", h.second),
      "limit",
    );
    for (const part of ["ROUTES-per-project", "limit 3", "holds 3 routes", h.fake.networkLink]) {
      assert.ok(e.message.includes(part), `"${e.message}" lacks ${part}`);
    }
    assert.match(e.message, /request a higher quota/);
  } finally {
    await h.close();
  }
});

test("a rate-limit storm is 'throttled' on every call, and the calls succeed once it ends", async () => {
  const h = await setup();
  try {
    const table = h.fake.networkLink;
    h.fake.throttle(6);
    for (let i = 0; i < 3; i++) {
      const e = await rejects(h.provider.list(table), "throttled");
      assert.match(e.message, /rateLimitExceeded/);
      assert.match(e.message, /raise the API rate quota/);
    }
    await rejects(h.provider.create(table, "10.244.1.0/24", h.fake.instanceLink), "throttled");
    h.fake.throttle(1, 429);
    const e = await rejects(h.provider.list(table), "throttled");
    assert.match(e.message, /HTTP 429/);
    h.fake.throttle(0);
    await h.provider.create(table, "10.244.1.0/24", h.fake.instanceLink);
    assert.equal((await h.provider.list(table)).length, 3);
  } finally {
    await h.close();
  }
});

test("a denied permission is 'denied', naming the permission, the role and the scope", async () => {
  const h = await setup();
  try {
    const table = h.fake.networkLink;
    for (const permission of ["compute.routes.create", "compute.networks.updatePolicy"]) {
      h.fake.deny(permission);
      const e = await rejects(
        h.provider.create(table, "10.244.1.0/24", h.fake.instanceLink),
        "denied",
      );
      assert.ok(e.message.includes(`Permission ${permission} is missing`), e.message);
      assert.match(e.message, /roles\/compute\.networkAdmin/);
      assert.match(e.message, /auth\/compute/);
      h.fake.allow(permission);
    }
    h.fake.deny("compute.routes.list");
    const e = await rejects(h.provider.discover(), "denied");
    assert.match(e.message, /compute\.routes\.list is missing on projects\/weft-test/);
  } finally {
    await h.close();
  }
});

test("a token without the compute scope can list but not write: 'denied' naming the scope", async () => {
  const h = await setup({ scopes: ["https://www.googleapis.com/auth/compute.readonly"] });
  try {
    await h.provider.discover();
    const e = await rejects(
      h.provider.create(h.fake.networkLink, "10.244.1.0/24", h.fake.instanceLink),
      "denied",
    );
    assert.match(e.message, /lacks a Compute scope/);
    assert.match(e.message, /--scopes=compute-rw/);
  } finally {
    await h.close();
  }
});

test("a wrong project is 'invalid', naming the project and where it came from", async () => {
  const h = await setup({}, { project: "not-my-project" });
  try {
    const e = await rejects(h.provider.discover(), "invalid");
    assert.match(e.message, /Project not-my-project does not exist/);
    assert.match(e.message, /check the project id/);
  } finally {
    await h.close();
  }
});

test("a route of the same name pointing elsewhere: 'exists' naming where it points", async () => {
  const h = await setup();
  try {
    const table = h.fake.networkLink;
    const other = h.fake.addNetwork("other-cluster");
    h.fake.addRoute({
      name: "flannel-10-244-1-0-24",
      network: other,
      destRange: "10.244.1.0/24",
      priority: 1000,
      nextHopInstance: h.second,
    });
    let e = await rejects(h.provider.create(table, "10.244.1.0/24", h.fake.instanceLink), "exists");
    assert.ok(e.message.includes(`via ${h.second} in network ${other}`), e.message);
    assert.match(e.message, /another cluster .* uses the same pod network/);
    e = await rejects(h.provider.replace(table, "10.244.1.0/24", h.fake.instanceLink), "invalid");
    assert.match(e.message, /not in .*networks\/default/);
    await h.provider.remove(table, "10.244.1.0/24");
    assert.ok(h.fake.routes().some((r) => r.network === other), "another network's route stays");

    h.fake.addRoute({
      name: "flannel-10-244-2-0-24",
      network: table,
      destRange: "10.244.2.0/24",
      priority: 1000,
      nextHopInstance: h.second,
    });
    e = await rejects(h.provider.create(table, "10.244.2.0/24", h.fake.instanceLink), "exists");
    assert.ok(e.message.includes(`via ${h.second} in network ${table}`), e.message);
    assert.match(e.message, /It is weft's or flannel's: replace\(\) points it at the new target/);
    e = await rejects(h.provider.create(table, "10.244.2.0/24", h.second), "exists");
    assert.match(e.message, /already to this target: nothing to change/);
    h.fake.addRoute({
      name: "flannel-10-244-3-0-24",
      network: table,
      destRange: "10.244.3.0/24",
      priority: 900,
      nextHopIp: "10.132.0.9",
    });
    e = await rejects(h.provider.create(table, "10.244.3.0/24", h.fake.instanceLink), "exists");
    assert.match(e.message, /via 10\.132\.0\.9 .* It is not weft's/);
    await h.provider.replace(table, "10.244.2.0/24", h.fake.instanceLink);
    const listed = (await h.provider.list(table)).find((r) => r.destination === "10.244.2.0/24");
    assert.deepEqual([listed?.target, listed?.owned], [h.fake.instanceLink, true]);
  } finally {
    await h.close();
  }
});

test("list() pages through more than 500 routes and keeps only the table's network", async () => {
  const h = await setup();
  try {
    const other = h.fake.addNetwork("elsewhere");
    for (let i = 0; i < 1100; i++) {
      h.fake.addRoute({
        name: `flannel-10-${100 + (i >> 8)}-${i & 255}-0-24`,
        network: i % 10 === 0 ? other : h.fake.networkLink,
        destRange: `10.${100 + (i >> 8)}.${i & 255}.0/24`,
        priority: 1000,
        nextHopInstance: h.fake.instanceLink,
      });
    }
    h.fake.resetCalls();
    const routes = await h.provider.list(h.fake.networkLink);
    assert.equal(routes.length, 990 + 2);
    assert.equal(h.fake.calls["routes.list"], 2);
    assert.ok(routes.every((r) => r.table === h.fake.networkLink));
  } finally {
    await h.close();
  }
});

test("an unreachable Compute API is 'unavailable' naming the endpoint", async () => {
  const fake = await startFakeGce();
  const closedPort = Number(new URL(fake.computeEndpoint).port);
  const env = { ...fake.env };
  await fake.close();
  const alive = await startFakeGce();
  const provider = createGceRouteProvider({
    env: {
      ...alive.env,
      CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE: env.CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE,
    },
  });
  try {
    const e = await rejects(provider.discover(), "unavailable");
    assert.ok(e.message.includes(`127.0.0.1:${closedPort}`), e.message);
    assert.match(e.message, /Cannot reach the Compute API/);
  } finally {
    await provider.close();
    await alive.close();
  }
});

test("an aborted call rejects with the abort reason while its operation runs", async () => {
  const h = await setup({ waitTimeoutMs: 60_000 });
  try {
    h.fake.holdOperations(true);
    const ctl = new AbortController();
    const created = h.provider.create(
      h.fake.networkLink,
      "10.244.1.0/24",
      h.fake.instanceLink,
      ctl.signal,
    );
    await untilCalls(h.fake, "globalOperations.wait", 1, created);
    const reason = new Error("agent stopping");
    ctl.abort(reason);
    await assert.rejects(created, (e) => e === reason);
  } finally {
    await h.close();
  }
});

test("the pruned protos decode routes and operations as the full Compute protos do", async () => {
  const lean = await setup();
  const full = await setup({}, { leanProtos: false });
  try {
    for (const h of [lean, full]) {
      await h.provider.create(h.fake.networkLink, "10.244.1.0/24", h.fake.instanceLink);
      h.fake.deny("compute.routes.delete");
      await rejects(h.provider.remove(h.fake.networkLink, "10.244.1.0/24"), "denied");
    }
    assert.deepEqual(
      await lean.provider.list(lean.fake.networkLink),
      await full.provider.list(full.fake.networkLink),
    );
  } finally {
    await lean.close();
    await full.close();
  }
});

test("a process that used the provider exits at once: no call leaves a timer behind", async () => {
  const here = new URL(".", import.meta.url).href;
  const script = `
    import { startFakeGce } from "${new URL("../../../testing/fake_gce.ts", here).href}";
    import { createGceRouteProvider } from "${new URL("./provider.ts", here).href}";
    const fake = await startFakeGce();
    const p = createGceRouteProvider({ env: fake.env, callTimeoutMs: 120000, operationPollMs: 1 });
    const self = await p.discover();
    await p.create(self.tables[0], "10.244.1.0/24", self.target);
    await p.list(self.tables[0]);
    fake.deny("compute.routes.delete");
    await p.remove(self.tables[0], "10.244.1.0/24").catch(() => {});
    await p.close();
    await fake.close();
    console.log("done", Date.now());
  `;
  const child = spawn(execPath(), ["eval", script], { stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  child.stdout.on("data", (d) => (out += d));
  const killer = setTimeout(() => child.kill(), 60_000);
  const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
  const exited = Date.now();
  clearTimeout(killer);
  const done = Number(/done (\d+)/.exec(out)?.[1]);
  assert.equal(code, 0, `the child was killed or failed: ${out}`);
  assert.ok(exited - done < 10_000, `the process lingered ${exited - done} ms after its last call`);
});
