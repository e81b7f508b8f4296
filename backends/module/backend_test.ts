import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as v from "valibot";
import { ConfigError } from "../../core/errors.ts";
import { FakeClock } from "../../testing/fake_clock.ts";
import { peerLease, testContext } from "../../testing/routing.ts";
import {
  isRouteProviderError,
  type ProviderRoute,
  type RouteProvider,
  RouteProviderError,
} from "../cloud/provider.ts";
import { ThrottleGate } from "../cloud/throttle.ts";
import type { Backend, Network } from "../types.ts";
import { moduleBackend, parseModuleSettings } from "./backend.ts";
import { isolateProvider, ModuleCallError } from "./guard.ts";
import { loadBackendModule, moduleOptionsOf, moduleUrl, validateModuleOptions } from "./load.ts";
import type { WeftModule } from "./types.ts";

const test = (name: string, fn: () => Promise<void> | void) =>
  Deno.test({ name, fn, sanitizeOps: false, sanitizeResources: false });

const configError = (path: string, re: RegExp) => (e: unknown) => {
  assert.ok(e instanceof ConfigError, String(e));
  assert.equal(e.path, path);
  assert.match(e.message, re);
  return true;
};

/** Write a module file into a fresh folder outside the repository. */
function moduleFile(code: string, name = "mod.js"): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "weft-m1-"));
  const file = path.join(dir, name);
  fs.writeFileSync(file, code);
  return file;
}

test("Module must be an absolute path or a file URL", () => {
  assert.throws(() => moduleUrl("./acme.js"), configError("Backend.Module", /absolute path/));
  assert.throws(() => moduleUrl("https://x/acme.js"), configError("Backend.Module", /file: URL/));
  assert.throws(
    () => moduleUrl(undefined),
    configError("Backend.Module", /current value is undefined/),
  );
  assert.equal(moduleUrl("/etc/weft/a b.js"), "file:///etc/weft/a%20b.js");
  assert.equal(moduleUrl("file:///etc/weft/a.js"), "file:///etc/weft/a.js");
});

test("a module outside the repository loads from its path; one that breaks the contract is named with the fix", async () => {
  const ok = moduleFile(
    `export default { apiVersion: 1, kind: "route-provider", name: "acme", createProvider() {} };`,
  );
  const { module, url } = await loadBackendModule(ok);
  assert.equal(module.name, "acme");
  assert.equal(url, `file://${ok}`);
  const named = moduleFile(
    `export const weftModule = { apiVersion: 1, kind: "backend", name: "b", createBackend() {} };`,
    "named.ts",
  );
  assert.equal((await loadBackendModule(`file://${named}`)).module.kind, "backend");

  await assert.rejects(
    loadBackendModule("/nonexistent/weft-m1/acme.js"),
    configError(
      "Backend.Module",
      /cannot load "Backend.Module" file:\/\/\/nonexistent.*check the file exists/,
    ),
  );
  const cases: [string, RegExp][] = [
    [`export const x = 1;`, /exports no module.*current value is \["x"\]/],
    [
      `export default { apiVersion: 2, kind: "route-provider", name: "a", createProvider() {} };`,
      /implements module API 2, this weft implements 1/,
    ],
    [`export default { apiVersion: 1, kind: "router", name: "a" };`, /`kind` must be/],
    [
      `export default { apiVersion: 1, kind: "route-provider", name: "a" };`,
      /must export a function `createProvider`/,
    ],
    [
      `export default { apiVersion: 1, kind: "route-provider", name: "a", createProvider() {}, options: {} };`,
      /`options` must be a Standard Schema/,
    ],
    [`export default { apiVersion: 1, kind: "backend", name: "Has Spaces" };`, /`name` must be/],
    [`throw new Error("boom at load");`, /cannot load.*boom at load/],
  ];
  for (const [code, re] of cases) {
    await assert.rejects(loadBackendModule(moduleFile(code)), configError("Backend.Module", re));
  }
});

test("options: weft's keys are folded out; the module's schema validates the rest with field, value and fix", async () => {
  assert.deepEqual(
    moduleOptionsOf({ type: "module", MODULE: "/x.js", callTimeoutSeconds: 3, Url: "u" }),
    { Url: "u" },
  );
  assert.deepEqual(
    parseModuleSettings({ Type: "module", Module: "/x.js", CallTimeoutSeconds: 2.5 }),
    {
      module: "/x.js",
      callTimeoutMs: 2500,
      listIntervalMs: 120_000,
    },
  );
  assert.throws(
    () => parseModuleSettings({ CallTimeoutSeconds: "30" }),
    configError("Backend.CallTimeoutSeconds", /current value is "30"; give the seconds/),
  );
  const module: WeftModule = {
    apiVersion: 1,
    kind: "route-provider",
    name: "acme",
    options: v.object({ Zone: v.object({ Id: v.pipe(v.string(), v.minLength(3)) }) }),
    createProvider: () => ({}) as RouteProvider,
  };
  assert.deepEqual(await validateModuleOptions(module, { Zone: { Id: "abc" } }), {
    Zone: { Id: "abc" },
  });
  await assert.rejects(
    validateModuleOptions(module, { Zone: { Id: "a" } }),
    configError(
      "Backend.Zone.Id",
      /"Backend\.Zone\.Id" is invalid for the backend module acme .*current value is "a"/,
    ),
  );
  await assert.rejects(
    validateModuleOptions({ ...module, options: undefined }, { Zone: 1 }),
    configError("Backend.Zone", /takes no options: current keys are \["Zone"\]/),
  );
});

/** An in-memory route table behind a provider whose calls a test can break. */
function memoryRouter() {
  const routes = new Map<string, string>([["0.0.0.0/0", "gw"]]);
  const calls: string[] = [];
  let mode: "ok" | "throw" | "hang" | "garbage" = "ok";
  const step = async (op: string) => {
    calls.push(op);
    if (mode === "throw") throw new TypeError(`socket closed during ${op}`);
    if (mode === "hang") await new Promise(() => {});
  };
  const provider: RouteProvider = {
    name: "memory",
    discover: async () => {
      await step("discover");
      return { target: "192.0.2.10", tables: ["t1"], location: "lab" };
    },
    list: async (table) => {
      await step("list");
      if (mode === "garbage") return [{ destination: 42 }] as unknown as ProviderRoute[];
      return [...routes].map(([destination, target]) => ({
        table,
        destination,
        target,
        owned: destination !== "0.0.0.0/0",
      }));
    },
    create: async (_t, d, target) => {
      await step("create");
      if (routes.has(d)) throw new RouteProviderError("exists", `${d} exists`);
      routes.set(d, target);
    },
    replace: async (_t, d, target) => {
      await step("replace");
      if (!routes.has(d)) throw new RouteProviderError("not-found", `${d} missing`);
      routes.set(d, target);
    },
    remove: async (_t, d) => {
      await step("remove");
      routes.delete(d);
    },
  };
  return { provider, routes, calls, set: (m: typeof mode) => (mode = m) };
}

test("isolateProvider: a throw becomes 'unavailable' naming the module, a hang ends at the time limit, garbage is refused", async () => {
  const clock = new FakeClock();
  const r = memoryRouter();
  const p = isolateProvider("acme", r.provider, { clock, timeoutMs: 5000 });
  r.set("throw");
  await assert.rejects(p.create("t1", "10.5.1.0/24", "x"), (e: unknown) => {
    assert.ok(isRouteProviderError(e));
    assert.equal(e.kind, "unavailable");
    assert.match(e.message, /module acme failed in create\(t1, 10\.5\.1\.0\/24\): socket closed/);
    return true;
  });
  r.set("hang");
  const hung = p.list("t1");
  const outcome = hung.then(() => "resolved", (e) => e as Error);
  await clock.advance(4999);
  assert.equal(await Promise.race([outcome, Promise.resolve("pending")]), "pending");
  await clock.advance(1);
  const e = await outcome as RouteProviderError;
  assert.equal(e.kind, "unavailable");
  assert.match(e.message, /list\(t1\) did not answer within 5000 ms.*CallTimeoutSeconds/);
  r.set("garbage");
  await assert.rejects(
    p.list("t1"),
    /returned garbage from list\(t1\).*current value is \{"destination":42\}/,
  );
  r.set("ok");
  await assert.rejects(
    p.create("t1", "0.0.0.0/0", "x"),
    (e: unknown) => isRouteProviderError(e) && e.kind === "exists",
    "the module's own kinds pass through",
  );
  assert.throws(
    () => isolateProvider("acme", {} as RouteProvider, { clock, timeoutMs: 1 }),
    /the provider lacks discover\(\)/,
  );
});

function registerWith(module: WeftModule, backend: Record<string, unknown> = {}) {
  const clock = new FakeClock();
  const stop = new AbortController();
  const ctx = testContext({
    signal: stop.signal,
    backend: { Type: "module", Module: "/unused.js", CallTimeoutSeconds: 5, ...backend },
    ext: { name: "eth0", index: 2, mtu: 1500, ifaceAddr: "192.0.2.10", extAddr: "192.0.2.10" },
    subnet: "10.5.1.0/24",
    clock,
  });
  const b = moduleBackend({
    load: () => Promise.resolve({ module, url: "file:///unused.js" }),
    gate: new ThrottleGate({ clock }),
    random: () => 0.5,
  });
  return { ctx, clock, stop, register: () => b.register(ctx) };
}

const providerModule = (provider: RouteProvider): WeftModule => ({
  apiVersion: 1,
  kind: "route-provider",
  name: "memory",
  options: v.object({ Url: v.string() }),
  createProvider: (options) => {
    assert.deepEqual(options, { Url: "u" });
    return provider;
  },
});

test("a route-provider module runs on weft's cloud loop: this host's route is written, leases are flannel's aws-vpc form", async () => {
  const r = memoryRouter();
  const h = registerWith(providerModule(r.provider), { Url: "u" });
  const network = await h.register();
  assert.deepEqual(h.ctx.acquired, [{ publicIP: "192.0.2.10" }]);
  assert.equal(r.routes.get("10.5.1.0/24"), "192.0.2.10");
  assert.equal(network.notReadyReason?.(), null);
  assert.equal(network.mtu, 1500);
  const metrics = h.ctx.metrics.render();
  assert.match(
    metrics,
    /weft_cloud_api_calls_total\{operation="create",provider="memory",result="ok"\} 1/,
  );
});

test("a module that throws, hangs or returns garbage: clear error, retried, and nothing installed is removed", async () => {
  const r = memoryRouter();
  const h = registerWith(providerModule(r.provider), { Url: "u", RouteResyncSeconds: 10 });
  const network = await h.register();
  r.routes.set("10.5.9.0/24", "192.0.2.99"); // a stale route weft would remove after a good listing
  const peers = [peerLease("10.5.2.0/24", "192.0.2.11")];

  for (const [i, mode] of (["throw", "garbage", "hang"] as const).entries()) {
    r.set(mode);
    await h.clock.advance(61_000); // past the listing period and any hold
    const sync = network.syncPeers(peers, h.ctx.signal).then(() => null, (e: Error) => e);
    if (mode === "hang") await h.clock.advance(5000);
    const e = await sync;
    assert.ok(e, `${mode}: syncPeers reports the failure`);
    assert.match(
      e.message,
      mode === "throw"
        ? /module memory failed in list\(t1\)/
        : mode === "garbage"
        ? /returned garbage from list\(t1\)/
        : /did not answer within 5000 ms/,
    );
    assert.match(
      h.ctx.metrics.render(),
      new RegExp(
        `weft_cloud_api_calls_total\\{operation="list",provider="memory",result="unavailable"\\} ${
          i + 1
        }\n`,
      ),
      `${mode}: counted`,
    );
    assert.equal(r.routes.get("10.5.1.0/24"), "192.0.2.10", `${mode}: this host's route stays`);
    assert.ok(r.routes.has("10.5.9.0/24"), `${mode}: nothing removed without a good listing`);
  }
  assert.ok(!r.calls.includes("remove"));

  r.set("ok");
  await h.clock.advance(61_000);
  await network.syncPeers(peers, h.ctx.signal);
  assert.equal(network.notReadyReason?.(), null);
  assert.ok(!r.routes.has("10.5.9.0/24"), "the stale route goes once the module answers again");
});

test("a backend module registers itself; weft checks what it returns and limits its peer calls", async () => {
  const backendModule = (network: unknown): WeftModule => ({
    apiVersion: 1,
    kind: "backend",
    name: "full",
    createBackend: (): Backend => ({
      type: "full",
      register: async (ctx) => {
        await ctx.acquire({ publicIP: ctx.extIface.extAddr, backendType: "full" });
        return network as Network;
      },
    }),
  });
  await assert.rejects(
    registerWith(backendModule({ mtu: 1500 })).register(),
    (e: unknown) =>
      e instanceof ModuleCallError && /register\(\) returned no Network/.test(e.message),
  );
  const synced: number[] = [];
  const h = registerWith(
    backendModule({
      lease: { subnet: {}, attrs: {} },
      mtu: 1450,
      syncPeers: (peers: unknown[]) => {
        synced.push(peers.length);
        return synced.length === 1 ? Promise.resolve() : new Promise(() => {});
      },
      run: () => Promise.resolve(),
    }),
  );
  const network = await h.register();
  assert.equal(network.mtu, 1450);
  await network.syncPeers([], h.ctx.signal);
  const hung = network.syncPeers([], h.ctx.signal).then(() => null, (e: Error) => e);
  await h.clock.advance(5000);
  const e = await hung;
  assert.ok(e instanceof ModuleCallError);
  assert.match(e.message, /module full failed in syncPeers\(\): .*did not answer within 5000 ms/);
  assert.deepEqual(synced, [0, 0]);
});

test("no call reaches a module after the agent stopped", async () => {
  const r = memoryRouter();
  const h = registerWith(providerModule(r.provider), { Url: "u", RouteResyncSeconds: 10 });
  const network = await h.register();
  const before = r.calls.length;
  h.stop.abort(new DOMException("agent stopping", "AbortError"));
  await h.clock.advance(61_000);
  await assert.rejects(network.syncPeers([], new AbortController().signal), /agent stopping/);
  assert.equal(r.calls.length, before, `calls after stop: ${r.calls.slice(before)}`);
});
