/**
 * The contract every route provider passes (backends/cloud/provider.ts):
 * list, create, replace, remove, discovery and the error kinds the
 * reconcile loop acts on. Each implementation's test file calls
 * {@link routeProviderContract} with a harness that makes a fresh provider
 * over its backing API (a fake, an emulator such as moto, a lab router) —
 * or, for a backing API that is slow to start, {@link runRouteProviderContract}
 * runs the same cases as steps of one test that owns the emulator's process.
 * Faults a backing API cannot produce, and real-API behaviours it does not
 * reproduce ({@link ProviderGap}), are reported as ignored, with the reason
 * the harness gives — never counted as passed.
 *
 * Third parties run it against their own provider from outside the
 * repository through `testing/mod.ts` (`deno test`; see
 * examples/router-module/module_test.ts). Errors are recognised with
 * `isRouteProviderError` (by name and `kind`), so a module's own error
 * class passes.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  isRouteProviderError,
  type RouteProvider,
  type RouteProviderError,
} from "../backends/cloud/provider.ts";
import { stepUnless, testUnless } from "./ignorable.ts";

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

/**
 * What a backing API may lack: a fault it cannot inject, or a behaviour of
 * the real API it does not reproduce — `duplicateCreate`: it accepts a
 * create over an existing destination instead of refusing it (moto 5.2.1
 * silently replaces an interface route).
 */
export type ProviderGap = keyof ProviderFaults | "duplicateCreate";

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
  /** For each fault or behaviour it cannot produce: why (e.g. "moto 5.2.1 has no route limits"). */
  readonly missing: Partial<Record<ProviderGap, string>>;
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
  // by name and kind: a module's errors are its own copy of the class
  assert.ok(isRouteProviderError(caught), `expected a RouteProviderError, got ${caught}`);
  assert.equal(caught.kind, kind, `kind of "${caught.message}"`);
  if (typeof messagePart === "string") {
    assert.ok(caught.message.includes(messagePart), caught.message);
  } else if (messagePart) assert.match(caught.message, messagePart);
  return caught;
}

/** One test of the contract. */
interface ContractCase {
  readonly title: string;
  /** The gap that makes this test not apply, when the backing API declares it missing. */
  readonly gap?: ProviderGap;
  /** The fault the test injects (the harness must offer it). */
  readonly fault?: keyof ProviderFaults;
  readonly fn: (h: ProviderHarness, faults: ProviderFaults) => Promise<void>;
}

const CASES: readonly ContractCase[] = [
  {
    title: "discover() finds this host's target and a table it may program",
    fn: async (h) => {
      const self = await h.provider.discover();
      assert.equal(self.target, h.targets[0]);
      assert.ok(self.tables.includes(h.table), `${JSON.stringify(self.tables)} lacks ${h.table}`);
      assert.ok(self.location.length > 0);
    },
  },
  {
    title: "create() adds an owned route that list() reports with its target",
    fn: async (h) => {
      assert.equal(await routeTo(h, DEST_A), undefined);
      await h.provider.create(h.table, DEST_A, h.targets[0]);
      const r = await routeTo(h, DEST_A);
      assert.ok(r, `list() lacks ${DEST_A} after create()`);
      assert.equal(r.table, h.table);
      assert.equal(r.target, h.targets[0]);
      assert.equal(r.owned, true);
    },
  },
  {
    title: "create() over an existing destination fails with kind 'exists' and changes nothing",
    gap: "duplicateCreate",
    fn: async (h) => {
      await h.provider.create(h.table, DEST_A, h.targets[0]);
      await rejectsWithKind(h.provider.create(h.table, DEST_A, h.targets[1]), "exists", DEST_A);
      assert.equal((await routeTo(h, DEST_A))?.target, h.targets[0]);
    },
  },
  {
    title: "replace() points a route at another target; a missing one is 'not-found'",
    fn: async (h) => {
      await h.provider.create(h.table, DEST_A, h.targets[0]);
      await h.provider.replace(h.table, DEST_A, h.targets[1]);
      assert.equal((await routeTo(h, DEST_A))?.target, h.targets[1]);
      await rejectsWithKind(h.provider.replace(h.table, DEST_B, h.targets[0]), "not-found");
    },
  },
  {
    title: "remove() deletes a route and accepts one that is already gone",
    fn: async (h) => {
      await h.provider.create(h.table, DEST_A, h.targets[0]);
      await h.provider.create(h.table, DEST_B, h.targets[1]);
      await h.provider.remove(h.table, DEST_A);
      assert.equal(await routeTo(h, DEST_A), undefined);
      assert.equal((await routeTo(h, DEST_B))?.target, h.targets[1], "the other route stays");
      await h.provider.remove(h.table, DEST_A);
    },
  },
  {
    title: "list() reports routes weft did not write as not owned",
    fn: async (h) => {
      const routes = await h.provider.list(h.table);
      for (const destination of h.foreignDestinations) {
        const r = routes.find((x) => x.destination === destination);
        assert.ok(r, `list() lacks the foreign route ${destination}`);
        assert.equal(r.owned, false, `${destination} must not be owned: ${JSON.stringify(r)}`);
      }
    },
  },
  {
    title: "a full table fails with kind 'limit' naming the table",
    fault: "limit",
    fn: async (h, f) => {
      await h.provider.create(h.table, DEST_A, h.targets[0]);
      const before = (await h.provider.list(h.table)).length;
      await f.limit(before);
      const e = await rejectsWithKind(h.provider.create(h.table, DEST_B, h.targets[1]), "limit");
      assert.ok(e.message.includes(h.table), `"${e.message}" does not name the table`);
    },
  },
  {
    title: "a throttled API fails with kind 'throttled'",
    fault: "throttle",
    fn: async (h, f) => {
      await f.throttle(20);
      await rejectsWithKind(h.provider.create(h.table, DEST_A, h.targets[0]), "throttled");
    },
  },
  {
    title: "a denied write fails with kind 'denied' naming the permission",
    fault: "denyWrites",
    fn: async (h, f) => {
      const permission = await f.denyWrites();
      await rejectsWithKind(h.provider.create(h.table, DEST_A, h.targets[0]), "denied", permission);
    },
  },
  {
    title: "a route whose target is gone is listed as an owned blackhole",
    fault: "removeTarget",
    fn: async (h, f) => {
      await h.provider.create(h.table, DEST_A, h.targets[1]);
      await f.removeTarget(h.targets[1]);
      const r = await routeTo(h, DEST_A);
      assert.ok(r, "the route stays in the table");
      assert.equal(r.target, null);
      assert.equal(r.owned, true);
    },
  },
];

/** Why `c` does not apply to a backing API that lacks `missing`, or null. */
const reasonFor = (c: ContractCase, missing: Partial<Record<ProviderGap, string>>) => {
  const gap = c.gap ?? c.fault;
  return (gap && missing[gap]) ?? null;
};

/** Run one case on a fresh harness. */
const runCase = (c: ContractCase, make: () => Promise<ProviderHarness>) =>
  withHarness(make, async (h) => {
    if (c.fault) {
      assert.ok(
        h.faults[c.fault],
        `the harness offers no ${c.fault}() but did not say why it is missing`,
      );
    }
    await c.fn(h, h.faults as ProviderFaults);
  });

/**
 * Register the contract tests for one provider implementation, one
 * `Deno.test` each.
 *
 * @param name Shown in every test name, e.g. `aws-vpc on the EC2 fake`.
 * @param make Makes a fresh harness for each test.
 * @param missing What this backing API cannot do, with why (known before
 *   any harness exists, so the ignored tests can be registered).
 */
export function routeProviderContract(
  name: string,
  make: () => Promise<ProviderHarness>,
  missing: Partial<Record<ProviderGap, string>> = {},
): void {
  for (const c of CASES) {
    testUnless(reasonFor(c, missing), {
      name: `${name}: ${c.title}`,
      sanitizeOps: false,
      sanitizeResources: false,
      fn: () => runCase(c, make),
    });
  }
}

/**
 * Run the contract as steps of one test: for a backing API that is slow to
 * start (an emulator process), started once by the test around the steps
 * and stopped in its `finally`. Each step still gets a fresh harness.
 *
 * @param t The test's context.
 * @param make Makes a fresh harness for each step.
 * @param missing What this backing API cannot do, with why.
 * @returns Whether every step passed.
 * @example
 * ```ts
 * Deno.test("aws-vpc on moto", async (t) => {
 *   const moto = await startMoto();
 *   try { await runRouteProviderContract(t, () => motoHarness(moto), MOTO_MISSING); }
 *   finally { await moto.stop(); }
 * });
 * ```
 */
export async function runRouteProviderContract(
  t: Deno.TestContext,
  make: () => Promise<ProviderHarness>,
  missing: Partial<Record<ProviderGap, string>> = {},
): Promise<boolean> {
  let ok = true;
  for (const c of CASES) {
    ok = (await stepUnless(t, reasonFor(c, missing), c.title, () => runCase(c, make))) && ok;
  }
  return ok;
}
