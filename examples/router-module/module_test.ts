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
import { execFileSync } from "node:child_process";
import { routeProviderContract } from "../../testing/mod.ts";
import type { ProviderHarness } from "../../testing/mod.ts";
import { createNetns, deleteNetns, sweepNetns } from "../../testing/netns.ts";
import routerModule, { createRouterProvider } from "./module.ts";
import { startRouter } from "./router.ts";
import { checkModule, validateModuleOptions } from "../../backends/module/load.ts";
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
