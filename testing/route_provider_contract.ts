/**
 * The contract every route provider passes (backends/cloud/provider.ts):
 * list, create, replace, remove, discovery and the error kinds the
 * reconcile loop acts on. Each implementation's test file calls
 * {@link routeProviderContract} with a harness that makes a fresh provider
 * over its backing API (a fake, an emulator such as moto, a lab router).
 * Faults a backing API cannot produce are reported as ignored, with the
 * reason the harness gives — never counted as passed.
 *
 * @module
 */

import assert from "node:assert/strict";
import { type RouteProvider, RouteProviderError } from "../backends/cloud/provider.ts";
import { testUnless } from "./ignorable.ts";

/** Fault injection a harness may offer. */
export interface ProviderFaults {
  /** From now on `table` holds at most `n` routes (the API's own route limit). */
  limit(n: number): void | Promise<void>;
  /** The next `calls` API calls are throttled (enough to exhaust the SDK's own retries). */
  throttle(calls: number): void | Promise<void>;
  /**
   * From now on route writes are denied; returns the permission the
   * provider's message must name (e.g. `ec2:CreateRoute`, `compute.routes.create`).
   */
  denyWrites(): string | Promise<string>;
  /** The target disappears (ENI deleted, instance gone): its routes become blackholes. */
  removeTarget(target: string): void | Promise<void>;
}

/** A fresh provider over its backing API, made for one test. */
export interface ProviderHarness {
  readonly provider: RouteProvider;
  /** A table the test may write into. */
  readonly table: string;
  /** This host's target (what `discover()` must find) and a second valid target. */
  readonly targets: readonly [string, string];
  /**
   * Destinations of routes in `table` that weft did not write (the VPC's
   * local route, a default route to an internet gateway): at least one.
   */
  readonly foreignDestinations: readonly string[];
  /** The faults this backing API can produce. */
  readonly faults: Partial<ProviderFaults>;
  /** For each fault it cannot produce: why (e.g. "moto 5.2.1 has no route limits"). */
  readonly missing: Partial<Record<keyof ProviderFaults, string>>;
  close(): Promise<void>;
}

/** Destinations the suite writes: inside a pod network no backing API uses otherwise. */
const DEST_A = "10.244.1.0/24";
const DEST_B = "10.244.2.0/24";

async function withHarness(
  make: () => Promise<ProviderHarness>,
  fn: (h: ProviderHarness) => Promise<void>,
): Promise<void> {
  const h = await make();
  try {
    await fn(h);
  } finally {
    await h.close();
  }
}

async function routeTo(h: ProviderHarness, destination: string) {
  return (await h.provider.list(h.table)).find((r) => r.destination === destination);
}

async function rejectsWithKind(
  p: Promise<unknown>,
  kind: RouteProviderError["kind"],
  messagePart?: string | RegExp,
): Promise<RouteProviderError> {
  let caught: unknown;
  try {
    await p;
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof RouteProviderError, `expected a RouteProviderError, got ${caught}`);
  assert.equal(caught.kind, kind, `kind of "${caught.message}"`);
  if (typeof messagePart === "string") {
    assert.ok(caught.message.includes(messagePart), caught.message);
  } else if (messagePart) assert.match(caught.message, messagePart);
  return caught;
}

/**
 * Register the contract tests for one provider implementation.
 *
 * @param name Shown in every test name, e.g. `aws-vpc on the EC2 fake`.
 * @param make Makes a fresh harness for each test.
 * @param missing The faults this backing API cannot produce, with why (known
 *   before any harness exists, so the ignored tests can be registered).
 */
export function routeProviderContract(
  name: string,
  make: () => Promise<ProviderHarness>,
  missing: Partial<Record<keyof ProviderFaults, string>> = {},
): void {
  const test = (title: string, fn: (h: ProviderHarness) => Promise<void>) =>
    Deno.test({
      name: `${name}: ${title}`,
      sanitizeOps: false,
      sanitizeResources: false,
      fn: () => withHarness(make, fn),
    });
  const faultTest = (
    fault: keyof ProviderFaults,
    title: string,
    fn: (h: ProviderHarness, faults: ProviderFaults) => Promise<void>,
  ) =>
    testUnless(missing[fault] ?? null, {
      name: `${name}: ${title}`,
      sanitizeOps: false,
      sanitizeResources: false,
      fn: () =>
        withHarness(make, async (h) => {
          const f = h.faults[fault];
          assert.ok(f, `the harness offers no ${fault}() but did not say why it is missing`);
          await fn(h, h.faults as ProviderFaults);
        }),
    });

  test("discover() finds this host's target and a table it may program", async (h) => {
    const self = await h.provider.discover();
    assert.equal(self.target, h.targets[0]);
    assert.ok(self.tables.includes(h.table), `${JSON.stringify(self.tables)} lacks ${h.table}`);
    assert.ok(self.location.length > 0);
  });

  test("create() adds an owned route that list() reports with its target", async (h) => {
    assert.equal(await routeTo(h, DEST_A), undefined);
    await h.provider.create(h.table, DEST_A, h.targets[0]);
    const r = await routeTo(h, DEST_A);
    assert.ok(r, `list() lacks ${DEST_A} after create()`);
    assert.equal(r.table, h.table);
    assert.equal(r.target, h.targets[0]);
    assert.equal(r.owned, true);
  });

  test("create() over an existing destination fails with kind 'exists' and changes nothing", async (h) => {
    await h.provider.create(h.table, DEST_A, h.targets[0]);
    await rejectsWithKind(h.provider.create(h.table, DEST_A, h.targets[1]), "exists", DEST_A);
    assert.equal((await routeTo(h, DEST_A))?.target, h.targets[0]);
  });

  test("replace() points a route at another target; a missing one is 'not-found'", async (h) => {
    await h.provider.create(h.table, DEST_A, h.targets[0]);
    await h.provider.replace(h.table, DEST_A, h.targets[1]);
    assert.equal((await routeTo(h, DEST_A))?.target, h.targets[1]);
    await rejectsWithKind(h.provider.replace(h.table, DEST_B, h.targets[0]), "not-found");
  });

  test("remove() deletes a route and accepts one that is already gone", async (h) => {
    await h.provider.create(h.table, DEST_A, h.targets[0]);
    await h.provider.create(h.table, DEST_B, h.targets[1]);
    await h.provider.remove(h.table, DEST_A);
    assert.equal(await routeTo(h, DEST_A), undefined);
    assert.equal((await routeTo(h, DEST_B))?.target, h.targets[1], "the other route stays");
    await h.provider.remove(h.table, DEST_A);
  });

  test("list() reports routes weft did not write as not owned", async (h) => {
    const routes = await h.provider.list(h.table);
    for (const destination of h.foreignDestinations) {
      const r = routes.find((x) => x.destination === destination);
      assert.ok(r, `list() lacks the foreign route ${destination}`);
      assert.equal(r.owned, false, `${destination} must not be owned: ${JSON.stringify(r)}`);
    }
  });

  faultTest("limit", "a full table fails with kind 'limit' naming the table", async (h, f) => {
    await h.provider.create(h.table, DEST_A, h.targets[0]);
    const before = (await h.provider.list(h.table)).length;
    await f.limit(before);
    const e = await rejectsWithKind(h.provider.create(h.table, DEST_B, h.targets[1]), "limit");
    assert.ok(e.message.includes(h.table), `"${e.message}" does not name the table`);
  });

  faultTest("throttle", "a throttled API fails with kind 'throttled'", async (h, f) => {
    await f.throttle(20);
    await rejectsWithKind(h.provider.create(h.table, DEST_A, h.targets[0]), "throttled");
  });

  faultTest(
    "denyWrites",
    "a denied write fails with kind 'denied' naming the permission",
    async (h, f) => {
      const permission = await f.denyWrites();
      await rejectsWithKind(h.provider.create(h.table, DEST_A, h.targets[0]), "denied", permission);
    },
  );

  faultTest(
    "removeTarget",
    "a route whose target is gone is listed as an owned blackhole",
    async (h, f) => {
      await h.provider.create(h.table, DEST_A, h.targets[1]);
      await f.removeTarget(h.targets[1]);
      const r = await routeTo(h, DEST_A);
      assert.ok(r, "the route stays in the table");
      assert.equal(r.target, null);
      assert.equal(r.owned, true);
    },
  );
}
