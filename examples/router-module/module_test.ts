/**
 * The example router module passes weft's route provider contract suite,
 * run as a third party would run it (through `testing/mod.ts`), against the
 * real router API (./router.ts) programming the kernel routes of a fresh
 * namespace per test; and weft loads it as a module (options validated by
 * its schema, errors recognised across copies).
 *
 * @module
 */

import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import process from "node:process";
import { routeProviderContract } from "../../testing/mod.ts";
import type { ProviderHarness } from "../../testing/mod.ts";
import { createNetns, deleteNetns, sweepNetns } from "../../testing/netns.ts";
import routerModule, { createRouterProvider } from "./module.ts";
import { startRouter } from "./router.ts";
import { checkModule, moduleOptionsOf, validateModuleOptions } from "../../backends/module/load.ts";
import { parseModuleSettings } from "../../backends/module/backend.ts";
import { parseNetworkConfig } from "../../lease/config.ts";
import { ConfigError } from "../../core/errors.ts";

const PREFIX = "m1r";
sweepNetns(PREFIX);

const ADMIN = "admin-secret";
const TOKEN = "api-secret";

/** A namespace with a link 10.98.0.1/24 (next hops .2, .3) and a foreign default route. */
async function routerHarness(): Promise<ProviderHarness & { url: string }> {
  const ns = createNetns(PREFIX, "r");
  const ipn = (...a: string[]) => execFileSync("ip", ["-n", ns, ...a]);
  let server: Awaited<ReturnType<typeof startRouter>> | undefined;
  try {
    ipn("link", "add", "l0", "type", "veth", "peer", "name", "l1");
    ipn("addr", "add", "10.98.0.1/24", "dev", "l0");
    ipn("link", "set", "l0", "up");
    ipn("link", "set", "l1", "up");
    ipn("route", "add", "default", "via", "10.98.0.254");
    server = await startRouter({
      listen: "127.0.0.1:0",
      netns: ns,
      token: TOKEN,
      adminToken: ADMIN,
      name: ns,
    });
  } catch (e) {
    deleteNetns(ns);
    throw e;
  }
  const url = server.url;
  const settings = async (body: Record<string, unknown>) => {
    const r = await fetch(`${url}/v1/settings`, {
      method: "PUT",
      headers: { authorization: `Bearer ${ADMIN}` },
      body: JSON.stringify(body),
    });
    assert.equal(r.status, 200, await r.text());
  };
  return {
    url,
    provider: createRouterProvider({ RouterURL: url, Token: TOKEN, Table: "main" }, "10.98.0.2"),
    table: "main",
    targets: ["10.98.0.2", "10.98.0.3"],
    foreignDestinations: ["0.0.0.0/0", "10.98.0.0/24"],
    faults: {
      limit: (n) => settings({ maxRoutes: n }),
      throttle: () => settings({ requestsPerMinute: 0 }),
      denyWrites: async () => {
        await settings({ writable: false });
        return "routes:write";
      },
    },
    missing: {
      removeTarget:
        "a Linux router has no dangling next hops: it refuses a route via an unreachable " +
        "gateway and drops the routes of a link that goes down",
    },
    async close() {
      await server!.close();
      deleteNetns(ns);
    },
  };
}

routeProviderContract("router module on a Linux router", routerHarness, {
  removeTarget: "a Linux router has no dangling next hops: it refuses a route via an unreachable " +
    "gateway and drops the routes of a link that goes down",
});

Deno.test("the router module passes weft's module checks and validates its options", async () => {
  const module = checkModule({ default: routerModule }, "file:///example/module.ts");
  assert.deepEqual(
    await validateModuleOptions(module, { RouterURL: "http://192.0.2.1:8087" }),
    { RouterURL: "http://192.0.2.1:8087", Table: "main" },
  );
  await assert.rejects(
    validateModuleOptions(module, { RouterURL: "http://192.0.2.1:8087", NextHop: "host-1" }),
    (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.equal(e.path, "Backend.NextHop");
      assert.match(
        e.message,
        /"Backend\.NextHop" is invalid .*IP address.*current value is "host-1"/,
      );
      return true;
    },
  );
  await assert.rejects(validateModuleOptions(module, {}), /"Backend\.RouterURL" is invalid/);
});

Deno.test({
  name:
    "the router module's errors name the fix: an unreachable router, a wrong token, no such table",
  sanitizeResources: false,
  async fn() {
    const kindOf = (kind: string, re: RegExp) => (e: unknown) => {
      assert.equal((e as Error).name, "RouteProviderError");
      assert.equal((e as { kind: string }).kind, kind, (e as Error).message);
      assert.match((e as Error).message, re);
      return true;
    };
    const gone = createRouterProvider(
      { RouterURL: "http://127.0.0.1:1", Table: "main" },
      "10.98.0.2",
    );
    await assert.rejects(
      gone.discover(),
      kindOf("unavailable", /cannot be reached.*check RouterURL/),
    );
    const h = await routerHarness();
    try {
      const url = h.url;
      const badToken = createRouterProvider(
        { RouterURL: url, Token: "nope", Table: "main" },
        "10.98.0.2",
      );
      await assert.rejects(badToken.list("main"), kindOf("denied", /401.*routes:write/));
      const badTable = createRouterProvider(
        { RouterURL: url, Token: TOKEN, Table: "42" },
        "10.98.0.2",
      );
      await assert.rejects(badTable.discover(), kindOf("invalid", /no table 42.*Backend\.Table/));
    } finally {
      await h.close();
    }
  },
});

/** A third party's test file: an in-memory provider run through weft's suite by file URL. */
const OUTSIDE_TEST = (testingUrl: string, sloppy: boolean) => `
import { routeProviderContract } from "${testingUrl}";

class ProviderError extends Error {
  name = "RouteProviderError";
  constructor(kind, message) { super(message); this.kind = kind; }
}

function memoryProvider() {
  const routes = new Map([["0.0.0.0/0", null]]);
  return {
    name: "memory",
    discover: async () => ({ target: "a", tables: ["t"], location: "here" }),
    list: async (table) => [...routes].map(([destination, target]) =>
      ({ table, destination, target: target ?? "gw", owned: target !== null })),
    create: async (_t, d, target) => {
      if (routes.has(d) && !${sloppy}) throw new ProviderError("exists", d + " exists");
      routes.set(d, target);
    },
    replace: async (_t, d, target) => {
      if (!routes.has(d)) throw new ProviderError("not-found", d + " missing");
      routes.set(d, target);
    },
    remove: async (_t, d) => { routes.delete(d); },
  };
}

routeProviderContract("memory", async () => ({
  provider: memoryProvider(), table: "t", targets: ["a", "b"], foreignDestinations: ["0.0.0.0/0"],
  faults: {}, close: async () => {},
  missing: { limit: "none", throttle: "none", denyWrites: "none", removeTarget: "none" },
}), { limit: "none", throttle: "none", denyWrites: "none", removeTarget: "none" });
`;

Deno.test("the contract suite runs from outside the repository, and fails a provider that breaks it", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "weft-m1-contract-"));
  try {
    const testing = new URL("../../testing/mod.ts", import.meta.url).href;
    const run = (sloppy: boolean) => {
      const file = path.join(dir, `${sloppy ? "sloppy" : "good"}_test.js`);
      fs.writeFileSync(file, OUTSIDE_TEST(testing, sloppy));
      return spawnSync(process.execPath, ["test", "-A", "--no-config", "--no-check", file], {
        cwd: dir,
        encoding: "utf8",
      });
    };
    const good = run(false);
    assert.equal(good.status, 0, good.stdout + good.stderr);
    assert.match(good.stdout, /6 passed \| 0 failed \| 4 ignored/);
    const sloppy = run(true);
    assert.notEqual(sloppy.status, 0, "a create that silently replaces must fail the suite");
    assert.match(
      sloppy.stdout,
      /create\(\) over an existing destination fails with kind 'exists'.*FAILED/,
    );
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

Deno.test("net-conf.json of the example parses, and its module options pass the module's schema", async () => {
  const text = fs.readFileSync(new URL("./net-conf.json", import.meta.url), "utf8");
  const config = parseNetworkConfig(text);
  assert.equal(config.backendType, "module");
  const settings = parseModuleSettings(config.backend);
  assert.equal(settings.module, "/etc/weft/router-module.js");
  assert.equal(settings.callTimeoutMs, 30_000);
  const module = checkModule({ default: routerModule }, "file:///etc/weft/router-module.js");
  assert.deepEqual(await validateModuleOptions(module, moduleOptionsOf(config.backend)), {
    RouterURL: "http://192.0.2.1:8087",
    Token: "s3cret",
    Table: "main",
  });
});
