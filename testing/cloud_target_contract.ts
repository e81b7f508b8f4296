/**
 * The contract of the cloud route target (`backends/cloud/target.ts`) over
 * any route provider's backing API: it is the reconcile loop that aws-vpc,
 * gce and the hybrid vxlan mode share, so each provider's test file runs
 * these cases against its fake and its emulator (moto), with a harness of
 * `testing/route_provider_contract.ts`. Faults a backing API cannot produce
 * are reported as ignored with the harness's reason.
 *
 * The target runs on a {@link FakeClock} (its listing schedule, its holds,
 * the throttle gate) while the API calls are real; calls are counted from
 * the target's own metrics, so the counts hold for any provider.
 *
 * @module
 */

import assert from "node:assert/strict";
import { parseIPv4Net } from "../core/ip.ts";
import { Registry } from "../core/metrics.ts";
import { guardProvider } from "../backends/cloud/calls.ts";
import {
  type CloudEntry,
  type CloudRouteTarget,
  cloudRouteTarget,
} from "../backends/cloud/target.ts";
import { ThrottleGate } from "../backends/cloud/throttle.ts";
import type { ApplyResult } from "../datapath/types.ts";
import { FakeClock } from "./fake_clock.ts";
import { memoryLogger } from "./memory_logger.ts";
import type { ProviderFaults, ProviderGap, ProviderHarness } from "./route_provider_contract.ts";
import { stepUnless, testUnless } from "./ignorable.ts";

/** The cluster network of the cases: no backing API uses it otherwise. */
export const CONTRACT_NETWORK = "10.244.0.0/16";
const OWN = "10.244.1.0/24";
const PEER = "10.244.2.0/24";
const GONE = "10.244.9.0/24";
const OUTSIDE = "172.31.99.0/24";
/** The listing period of the cases. */
const LIST_MS = 120_000;

/** A target over a harness, with what the cases inspect. */
export interface TargetFixture {
  readonly h: ProviderHarness;
  readonly target: CloudRouteTarget;
  readonly clock: FakeClock;
  readonly gate: ThrottleGate;
  readonly metrics: Registry;
  readonly logger: ReturnType<typeof memoryLogger>;
  readonly signal: AbortSignal;
  /** API calls by operation since the fixture was made (`list`, `create`, …). */
  calls(operation?: string): number;
  /** The route to `destination` in the harness's table, read afresh. */
  route(destination: string): Promise<{ target: string | null; owned: boolean } | undefined>;
}

const own: CloudEntry = { kind: "own", destinations: [OWN] };
const peer = (target?: string | null): CloudEntry => ({
  kind: "peer",
  destinations: [PEER],
  target,
});

/**
 * Build a target for `h`'s first target in `h.table`.
 *
 * @param h The harness.
 * @returns The fixture.
 */
export function targetFixture(h: ProviderHarness): TargetFixture {
  const clock = new FakeClock();
  const metrics = new Registry();
  const logger = memoryLogger();
  const gate = new ThrottleGate({ clock, random: () => 0.5 });
  const provider = guardProvider(h.provider, { gate, clock, metrics });
  const target = cloudRouteTarget({
    provider,
    self: { target: h.targets[0], tables: [h.table], location: "test-location" },
    networks: [parseIPv4Net(CONTRACT_NETWORK)],
    ownKey: OWN,
    clock,
    logger,
    metrics,
    random: () => 0.5,
    listIntervalMs: LIST_MS,
  });
  const counter = metrics.counter("weft_cloud_api_calls_total", "");
  return {
    h,
    target,
    clock,
    gate,
    metrics,
    logger,
    signal: new AbortController().signal,
    calls(operation) {
      const ops = operation ? [operation] : ["discover", "list", "create", "replace", "remove"];
      let n = 0;
      for (const op of ops) {
        for (
          const result of [
            "ok",
            "throttled",
            "limit",
            "denied",
            "unavailable",
            "invalid",
            "exists",
            "not-found",
            "error",
          ]
        ) n += counter.get({ provider: h.provider.name, operation: op, result });
      }
      return n;
    },
    async route(destination) {
      const r = (await h.provider.list(h.table)).find((x) => x.destination === destination);
      return r && { target: r.target, owned: r.owned };
    },
  };
}

/**
 * Run `p`, moving the fake clock while it waits on it (the gate, a hold).
 *
 * @param clock The fake clock `p` sleeps on.
 * @param p The work.
 * @param step How far to move the clock each time it waits (ms, or computed).
 * @returns What `p` resolved to.
 */
export async function settle<T>(
  clock: FakeClock,
  p: Promise<T>,
  step: number | (() => number) = 1000,
): Promise<T> {
  let done = false;
  const watched = p.finally(() => (done = true));
  while (!done) {
    await new Promise((r) => setTimeout(r, 2));
    if (!done && clock.pending > 0) {
      await clock.advance(Math.max(1, typeof step === "number" ? step : step()));
    }
  }
  return await watched;
}

interface TargetCase {
  readonly title: string;
  readonly fault?: keyof ProviderFaults;
  readonly gap?: ProviderGap;
  readonly fn: (f: TargetFixture, faults: ProviderFaults) => Promise<void>;
}

const CASES: readonly TargetCase[] = [
  {
    title: "ensureOwn() writes this host's route with one list and one create per table",
    async fn(f) {
      const r = await f.target.ensureOwn(own, f.signal);
      assert.deepEqual(r, { written: 1, deleted: 0, failures: [] });
      assert.deepEqual([f.calls("list"), f.calls("create"), f.calls()], [1, 1, 2]);
      assert.deepEqual(await f.route(OWN), { target: f.h.targets[0], owned: true });
      assert.equal(f.target.notReadyReason(), null);
    },
  },
  {
    title: "a route of another target is replaced; an identical one costs no call",
    async fn(f) {
      await f.h.provider.create(f.h.table, OWN, f.h.targets[1]);
      await f.target.ensureOwn(own, f.signal);
      assert.deepEqual([f.calls("replace"), f.calls("create")], [1, 0]);
      assert.equal((await f.route(OWN))?.target, f.h.targets[0]);
      const before = f.calls();
      const entries = new Map([[OWN, own]]);
      await f.target.sync(entries, f.signal); // listing not due: the cache is right
      assert.equal(f.calls(), before);
      await f.clock.advance(LIST_MS);
      const r = await f.target.sync(entries, f.signal); // due: one list, nothing written
      assert.deepEqual(r, { written: 0, deleted: 0, failures: [] });
      assert.equal(f.calls(), before + 1);
    },
  },
  {
    title:
      "routes of gone leases are removed only when the listing is due; live peers', foreign and outside routes stay",
    async fn(f) {
      await f.h.provider.create(f.h.table, PEER, f.h.targets[1]);
      await f.h.provider.create(f.h.table, GONE, f.h.targets[1]);
      await f.h.provider.create(f.h.table, OUTSIDE, f.h.targets[1]);
      await f.target.ensureOwn(own, f.signal);
      const entries = new Map([[OWN, own], [PEER, peer()]]);
      await f.target.sync(entries, f.signal);
      assert.equal(f.calls("remove"), 0, "not due yet: nothing removed");
      assert.ok(await f.route(GONE));
      await f.clock.advance(LIST_MS);
      const r = await f.target.sync(entries, f.signal);
      assert.deepEqual([r.deleted, r.failures.length, f.calls("remove")], [1, 0, 1]);
      assert.equal(await f.route(GONE), undefined);
      assert.equal((await f.route(PEER))?.target, f.h.targets[1], "a live peer's route stays");
      assert.ok(await f.route(OUTSIDE), "a route outside Network is never touched");
      for (const d of f.h.foreignDestinations) assert.ok(await f.route(d), `${d} stays`);
      assert.ok(f.logger.lines.some((l) => l.includes("no current lease has this subnet")));
    },
  },
  {
    title: "a peer whose lease says it is elsewhere loses its route here; a known one keeps it",
    async fn(f) {
      await f.h.provider.create(f.h.table, PEER, f.h.targets[1]);
      await f.target.ensureOwn(own, f.signal);
      await f.clock.advance(LIST_MS);
      await f.target.sync(new Map([[OWN, own], [PEER, peer(f.h.targets[1])]]), f.signal);
      assert.equal((await f.route(PEER))?.target, f.h.targets[1]);
      await f.clock.advance(LIST_MS * 2);
      await f.target.sync(new Map([[OWN, own], [PEER, peer(null)]]), f.signal);
      assert.equal(await f.route(PEER), undefined);
    },
  },
  {
    title: "a blackhole inside Network is removed at the next listing",
    fault: "removeTarget",
    async fn(f, faults) {
      await f.h.provider.create(f.h.table, PEER, f.h.targets[1]);
      await f.target.ensureOwn(own, f.signal);
      await faults.removeTarget(f.h.targets[1]);
      await f.clock.advance(LIST_MS * 2);
      const r = await f.target.sync(new Map([[OWN, own], [PEER, peer()]]), f.signal);
      assert.equal(r.deleted, 1);
      assert.equal(await f.route(PEER), undefined);
      assert.ok(f.logger.lines.some((l) => l.includes("blackhole")));
    },
  },
  {
    title:
      "a full table: the failure names the table, its routes and the quota; /readyz says so; no call until the hold ends",
    fault: "limit",
    async fn(f, faults) {
      await f.h.provider.create(f.h.table, PEER, f.h.targets[1]);
      const count = (await f.h.provider.list(f.h.table)).length;
      await faults.limit(count);
      const r = await f.target.ensureOwn(own, f.signal);
      assert.equal(r.failures.length, 1);
      const message = r.failures[0].error.message;
      assert.ok(message.includes(f.h.table), message);
      assert.ok(message.includes(`holds ${count} routes`), message);
      assert.match(message, /quota/);
      assert.equal(f.target.notReadyReason(), message);
      const before = f.calls();
      const again = await f.target.sync(new Map([[OWN, own]]), f.signal);
      assert.equal(again.failures[0].error.message, message);
      await f.clock.advance(20_000);
      await f.target.update(new Map([[OWN, own]]), f.signal);
      assert.equal(f.calls(), before, "held: no call within 30 s");
      await faults.limit(count + 5);
      await f.clock.advance(15_000);
      const ok = await f.target.update(new Map([[OWN, own]]), f.signal);
      assert.deepEqual(ok.failures, []);
      assert.equal(f.target.notReadyReason(), null);
    },
  },
  {
    title: "a denied write names the IAM permission in the failure and in /readyz",
    fault: "denyWrites",
    async fn(f, faults) {
      const permission = await faults.denyWrites();
      const r = await f.target.ensureOwn(own, f.signal);
      assert.equal(r.failures.length, 1);
      assert.ok(r.failures[0].error.message.includes(permission), r.failures[0].error.message);
      assert.ok(f.target.notReadyReason()?.includes(permission));
    },
  },
  {
    title: "a throttling storm: calls wait at the gate with growing pauses, never a tight loop",
    fault: "throttle",
    async fn(f, faults) {
      await f.target.ensureOwn(own, f.signal);
      await faults.throttle(1_000_000);
      await f.clock.advance(LIST_MS); // the listing is due
      const start = f.clock.now();
      const before = f.calls();
      // what the agent does on failure: try again at once, over and over
      for (let i = 0; i < 7; i++) {
        const r: ApplyResult = await settle(
          f.clock,
          f.target.sync(new Map([[OWN, own]]), f.signal),
          () => f.gate.closedForMs,
        );
        assert.equal(r.failures.length, 1);
        assert.match(r.failures[0].error.message, /throttled/);
      }
      assert.equal(f.calls() - before, 7, "one call per attempt (the SDK's own retries inside)");
      // the attempts waited 1+2+4+8+16+32 s at the gate (jitter 0)
      const waited = f.clock.now() - start;
      assert.ok(waited >= 63_000 && waited < 70_000, `waited ${waited} ms`);
      assert.equal(f.gate.pauseMs, 60_000);
    },
  },
  {
    title: "release() removes this host's route",
    async fn(f) {
      await f.target.ensureOwn(own, f.signal);
      await f.target.release(own, f.signal);
      assert.equal(await f.route(OWN), undefined);
      assert.match(f.target.notReadyReason() ?? "", /writing this host's route/);
    },
  },
];

const reasonFor = (c: TargetCase, missing: Partial<Record<ProviderGap, string>>) => {
  const gap = c.gap ?? c.fault;
  return (gap && missing[gap]) ?? null;
};

async function runCase(c: TargetCase, make: () => Promise<ProviderHarness>): Promise<void> {
  const h = await make();
  try {
    if (c.fault) assert.ok(h.faults[c.fault], `the harness offers no ${c.fault}()`);
    await c.fn(targetFixture(h), h.faults as ProviderFaults);
  } finally {
    await h.close();
  }
}

/**
 * Register the cloud-target contract for one backing API, one test each.
 *
 * @param name Shown in every test name.
 * @param make A fresh harness per test.
 * @param missing What the backing API cannot do, with why.
 */
export function cloudTargetContract(
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
 * The same cases as steps of one test (for a slow-to-start emulator).
 *
 * @param t The test's context.
 * @param make A fresh harness per step.
 * @param missing What the backing API cannot do, with why.
 * @returns Whether every step passed.
 */
export async function runCloudTargetContract(
  t: Deno.TestContext,
  make: () => Promise<ProviderHarness>,
  missing: Partial<Record<ProviderGap, string>> = {},
): Promise<boolean> {
  let ok = true;
  for (const c of CASES) {
    ok = (await stepUnless(t, reasonFor(c, missing), `cloud target: ${c.title}`, () =>
      runCase(c, make))) && ok;
  }
  return ok;
}
