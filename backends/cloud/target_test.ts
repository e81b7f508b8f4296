import assert from "node:assert/strict";
import { parseIPv4Net, parseIPv6Net } from "../../core/ip.ts";
import { FakeClock } from "../../testing/fake_clock.ts";
import { memoryLogger } from "../../testing/memory_logger.ts";
import {
  type ProviderRoute,
  type RouteProvider,
  RouteProviderError,
  type RouteProviderErrorKind,
} from "./provider.ts";
import { type CloudEntry, cloudRouteTarget, insideNetworks, staleReason } from "./target.ts";

/** A route table in memory: what the target's logic needs, without an SDK. */
class MemoryProvider implements RouteProvider {
  readonly name = "memory";
  readonly routes = new Map<string, ProviderRoute>();
  readonly calls: string[] = [];
  failNext: RouteProviderErrorKind | null = null;

  #call(what: string) {
    this.calls.push(what);
    const kind = this.failNext;
    if (kind) throw new RouteProviderError(kind, `memory: ${what} failed (${kind})`);
  }
  discover() {
    return Promise.resolve({ target: "me", tables: ["t"], location: "here" });
  }
  list(table: string) {
    this.#call("list");
    return Promise.resolve([...this.routes.values()].map((r) => ({ ...r, table })));
  }
  create(table: string, destination: string, target: string) {
    this.#call(`create ${destination}`);
    if (this.routes.has(destination)) {
      return Promise.reject(new RouteProviderError("exists", `${destination} exists`));
    }
    this.routes.set(destination, { table, destination, target, owned: true });
    return Promise.resolve();
  }
  replace(table: string, destination: string, target: string) {
    this.#call(`replace ${destination}`);
    this.routes.set(destination, { table, destination, target, owned: true });
    return Promise.resolve();
  }
  remove(_table: string, destination: string) {
    this.#call(`remove ${destination}`);
    this.routes.delete(destination);
    return Promise.resolve();
  }
  put(destination: string, target: string | null, owned = true) {
    this.routes.set(destination, { table: "t", destination, target, owned });
  }
}

const OWN: CloudEntry = { kind: "own", destinations: ["10.5.1.0/24"] };

function setup(random = () => 0.5) {
  const provider = new MemoryProvider();
  const clock = new FakeClock(0);
  const logger = memoryLogger();
  const target = cloudRouteTarget({
    provider,
    self: { target: "me", tables: ["t"], location: "here" },
    networks: [parseIPv4Net("10.5.0.0/16")],
    ownKey: "10.5.1.0/24",
    clock,
    logger,
    random,
    listIntervalMs: 100_000,
  });
  const signal = new AbortController().signal;
  const entries = (...peers: [string, string | null | undefined][]) =>
    new Map<string, CloudEntry>([
      ["10.5.1.0/24", OWN],
      ...peers.map(([d, t]): [string, CloudEntry] => [
        d,
        { kind: "peer", destinations: [d], ...(t === undefined ? {} : { target: t }) },
      ]),
    ]);
  return { provider, clock, logger, target, signal, entries };
}

Deno.test("staleReason(): blackholes, gone leases, hosts elsewhere and dead targets go; the rest stays", () => {
  const peer = (target?: string | null): CloudEntry => ({
    kind: "peer",
    destinations: ["10.5.2.0/24"],
    ...(target === undefined ? {} : { target }),
  });
  const route = (destination: string, target: string | null): ProviderRoute => ({
    table: "t",
    destination,
    target,
    owned: true,
  });
  const live = new Map<string, CloudEntry>([["10.5.1.0/24", OWN]]);
  const targets = new Set(["me", "eni-b"]);
  const cases: [ProviderRoute, CloudEntry | undefined, string | null][] = [
    [route("10.5.1.0/24", "eni-x"), OWN, null], // this host's: replaced, never removed
    [route("10.5.2.0/24", null), peer(), "blackhole (its target is gone)"],
    [route("10.5.2.0/24", "eni-b"), undefined, "no current lease has this subnet"],
    [route("10.5.2.0/24", "eni-b"), peer(null), "the lease's host is not in vpc-1"],
    [route("10.5.2.0/24", "eni-b"), peer(), null], // flannel's lease: nothing known, keep
    [route("10.5.2.0/24", "eni-b"), peer("eni-b"), null],
    [route("10.5.2.0/24", "eni-b"), peer("eni-c"), null], // a live target: its owner fixes it
    [
      route("10.5.2.0/24", "eni-z"),
      peer("eni-c"),
      "it points at eni-z, which no current lease has",
    ],
  ];
  for (const [r, entry, want] of cases) {
    const map = new Map(live);
    if (entry && entry.kind === "peer") map.set("10.5.2.0/24", entry);
    assert.equal(staleReason(r, map, targets, "vpc-1"), want, JSON.stringify([r, entry]));
  }
});

Deno.test("insideNetworks() needs the destination within a network, same or longer prefix", () => {
  const networks = [parseIPv4Net("10.5.0.0/16"), parseIPv6Net("fd00:5::/56")];
  const table: [string, boolean][] = [
    ["10.5.3.0/24", true],
    ["10.5.0.0/16", true],
    ["10.0.0.0/8", false],
    ["10.6.0.0/24", false],
    ["0.0.0.0/0", false],
    ["fd00:5:0:1::/64", true],
    ["fd00:6::/64", false],
    ["::/0", false],
    ["pl-12345", false],
  ];
  for (const [d, want] of table) assert.equal(insideNetworks(networks, d), want, d);
});

Deno.test("sync() lists on its own jittered schedule, whatever calls it in between", async () => {
  for (const [random, period] of [[0, 75_000], [0.5, 100_000], [0.999999, 125_000]] as const) {
    const s = setup(() => random);
    await s.target.ensureOwn(OWN, s.signal);
    s.provider.calls.length = 0;
    for (let t = 0; t <= 3 * period; t += 25_000) {
      await s.target.sync(s.entries(), s.signal); // e.g. the agent on every lease event
      await s.clock.advance(25_000);
    }
    assert.equal(s.provider.calls.filter((c) => c === "list").length, 3, `random ${random}`);
    assert.deepEqual(s.provider.calls.filter((c) => c !== "list"), []);
  }
});

Deno.test("a route of this host deleted behind its back comes back at the next listing", async () => {
  const s = setup();
  await s.target.ensureOwn(OWN, s.signal);
  s.provider.routes.delete("10.5.1.0/24");
  await s.target.sync(s.entries(), s.signal);
  assert.equal(s.provider.routes.has("10.5.1.0/24"), false, "not due: the cache is trusted");
  await s.clock.advance(100_000);
  const r = await s.target.sync(s.entries(), s.signal);
  assert.equal(r.written, 1);
  assert.equal(s.provider.routes.get("10.5.1.0/24")?.target, "me");
});

Deno.test("a create that finds a route (another host was quicker) replaces it", async () => {
  const s = setup();
  await s.target.ensureOwn(OWN, s.signal); // cache: our route
  s.provider.put("10.5.1.0/24", "eni-other");
  await s.clock.advance(100_000);
  await s.target.sync(s.entries(), s.signal);
  assert.deepEqual(s.provider.calls.slice(-1), ["replace 10.5.1.0/24"]);
  assert.equal(s.provider.routes.get("10.5.1.0/24")?.target, "me");
});

Deno.test("an unreachable API: holds grow (0.9 s, 1.8 s, 3.6 s with jitter 0) and calls wait for them", async () => {
  const s = setup();
  s.provider.failNext = "unavailable";
  const times: number[] = [];
  for (let i = 0; i < 28; i++) {
    const before = s.provider.calls.length;
    const r = await s.target.sync(s.entries(), s.signal);
    assert.equal(r.failures.length, 1);
    assert.match(s.target.notReadyReason() ?? "", /writing this host's route|failed/);
    if (s.provider.calls.length > before) times.push(s.clock.now());
    await s.clock.advance(250);
  }
  // a sync every 250 ms (as a retrying caller would): calls only after each hold
  assert.deepEqual(times, [0, 1000, 3000, 6750]);
  await s.clock.advance(8000);
  s.provider.failNext = null;
  const r = await s.target.sync(s.entries(), s.signal);
  assert.deepEqual(r.failures, []);
  assert.equal(s.target.notReadyReason(), null);
});

Deno.test("routes outside Network and routes weft cannot own are never touched", async () => {
  const s = setup();
  s.provider.put("172.16.0.0/16", "eni-vpn");
  s.provider.put("10.5.7.0/24", "igw-1", false);
  s.provider.put("10.5.8.0/24", null);
  await s.target.ensureOwn(OWN, s.signal);
  await s.clock.advance(100_000);
  const r = await s.target.sync(s.entries(), s.signal);
  assert.equal(r.deleted, 1);
  assert.deepEqual([...s.provider.routes.keys()].sort(), [
    "10.5.1.0/24",
    "10.5.7.0/24",
    "172.16.0.0/16",
  ]);
});
