import assert from "node:assert/strict";
import { FakeClock } from "../../testing/fake_clock.ts";
import {
  containsIPv4Net,
  formatIPv4Net,
  type IPv4Net,
  parseIPv4,
  parseIPv4Net,
} from "../../core/ip.ts";
import { FakeDatapath } from "../../testing/datapath_fake.ts";
import { peerLease, testContext } from "../../testing/routing.ts";
import type { Lease } from "../../lease/types.ts";
import type { ApplyResult, EntryScope } from "../../datapath/types.ts";
import { peerKey, type PeerResult, routedNetwork, type RouteTarget } from "./engine.ts";
import { kernelTarget } from "./target.ts";
import { hostGwPeerEntries } from "./host_gw.ts";

const net = parseIPv4Net;
const ip = parseIPv4;
const OWN = peerLease("10.5.1.0/24", "192.0.2.11", "host-gw");
const peer = (n: number, type = "host-gw") => peerLease(`10.5.${n}.0/24`, `192.0.2.${n}`, type);

const SCOPE: EntryScope = {
  name: "host-gw",
  network: net("10.5.0.0/16"),
  except: [OWN.subnet!],
  gatewayDevices: ["eth0"],
};

/** A host-gw-like network over the fake kernel. */
function kernelSetup(options: { resyncIntervalMs?: number } = {}) {
  const dp = new FakeDatapath();
  dp.addLink({ name: "eth0", up: true, addresses: [{ ip: ip("192.0.2.11"), prefixLen: 24 }] });
  const clock = new FakeClock();
  const ctx = testContext({
    ext: { name: "eth0", index: 2, mtu: 1500, ifaceAddr: "192.0.2.11", extAddr: "192.0.2.11" },
    subnet: "10.5.1.0/24",
    clock,
  });
  const repaired: string[] = [];
  const network = routedNetwork(
    "host-gw",
    {
      lease: OWN,
      mtu: 1500,
      target: kernelTarget({ datapath: dp, devices: [], scope: SCOPE, logger: ctx.logger }),
      peerEntries: (p) => hostGwPeerEntries(p, "eth0"),
    },
    ctx,
    ctx.logger,
    {
      resyncIntervalMs: options.resyncIntervalMs ?? 0,
      onRepaired: (r) => repaired.push(r),
    },
  );
  const ac = new AbortController();
  let running: Promise<void> | undefined;
  return {
    dp,
    ctx,
    clock,
    network,
    repaired,
    async start() {
      running = network.run(ac.signal);
      await clock.advance(0);
    },
    async stop() {
      ac.abort();
      await running;
    },
    /** The keys of the target calls since `from`. */
    callsSince(from: number) {
      return dp.calls.slice(from).map((
        c,
      ) => [c.method, [...(c.arg as Map<string, unknown>).keys()]]);
    },
  };
}

Deno.test("syncPeers skips peers of another type with one warning each and ignores the own lease", async () => {
  const h = kernelSetup();
  const other = peer(5, "vxlan");
  await h.network.syncPeers([OWN, peer(2), other]);
  await h.network.syncPeers([OWN, peer(2), other]);
  assert.deepEqual(h.dp.routes(), ["10.5.2.0/24 via 192.0.2.2 dev eth0"]);
  const warnings = h.ctx.logger.lines.filter((l) => /skipping peer lease/.test(l));
  assert.equal(warnings.length, 1);
  assert.match(warnings[0], /10\.5\.5\.0\/24/);
  // Gone and back: warned again.
  await h.network.syncPeers([peer(2)]);
  await h.network.updatePeers!([{ type: "added", lease: other }]);
  assert.equal(h.ctx.logger.lines.filter((l) => /skipping peer lease/.test(l)).length, 2);
});

Deno.test("updatePeers hands the target only the changed peers, whatever the number of peers", async () => {
  const h = kernelSetup();
  const many: Lease[] = [];
  for (let i = 0; i < 3000; i++) {
    const subnet = { ip: (parseIPv4("10.5.2.0") + i * 16) >>> 0, prefixLen: 28 };
    many.push({ ...peer(2), subnet });
  }
  await h.network.syncPeers(many);
  assert.equal(h.dp.routes().length, 3000);
  const from = h.dp.calls.length;
  const writes = h.dp.writes;
  await h.network.updatePeers!([
    { type: "removed", lease: many[10] },
    { type: "added", lease: { ...many[11], attrs: { ...many[11].attrs, publicIP: "192.0.2.99" } } },
  ]);
  assert.deepEqual(h.callsSince(from), [[
    "update",
    [formatIPv4Net(many[10].subnet!), formatIPv4Net(many[11].subnet!)],
  ]]);
  assert.equal(h.dp.writes - writes, 2, "one route out, one replaced");
  assert.equal(h.dp.routes().length, 2999);
});

Deno.test("run repairs a peer's deleted route by updating that peer only", async () => {
  const h = kernelSetup();
  await h.network.syncPeers([peer(2), peer(3)]);
  await h.start();
  try {
    const from = h.dp.calls.length;
    await h.dp.deleteRoute({ dst: net("10.5.3.0/24") });
    await h.clock.advance(50);
    assert.deepEqual(h.callsSince(from), [["update", ["10.5.3.0/24"]]]);
    assert.equal(h.dp.routes().length, 2);
    assert.deepEqual(h.repaired, ["route 10.5.3.0/24 was deleted"]);
  } finally {
    await h.stop();
  }
});

Deno.test("run syncs everything after lost events, and periodically", async () => {
  const h = kernelSetup({ resyncIntervalMs: 1000 });
  await h.network.syncPeers([peer(2)]);
  await h.start();
  try {
    await h.clock.advance(1100);
    assert.deepEqual(h.repaired, ["periodic resync"]);
    const from = h.dp.calls.length;
    h.dp.overrun();
    await h.clock.advance(50);
    assert.equal(h.repaired.length, 2);
    assert.match(h.repaired[1], /lost/);
    assert.deepEqual(h.callsSince(from), [["sync", ["10.5.2.0/24"]]]);
  } finally {
    await h.stop();
  }
});

Deno.test("run retries a failed repair with back-off until it succeeds", async () => {
  const h = kernelSetup();
  await h.network.syncPeers([peer(2)]);
  await h.start();
  try {
    h.dp.failKey("10.5.2.0/24", 105);
    await h.dp.deleteRoute({ dst: net("10.5.2.0/24") });
    await h.clock.advance(50);
    assert.deepEqual(h.dp.routes(), []);
    assert.ok(
      h.ctx.logger.lines.some((l) => /repair failed; retrying/.test(l) && /ENOBUFS/.test(l)),
    );
    h.dp.failKey("10.5.2.0/24", 0);
    await h.clock.advance(500);
    assert.deepEqual(h.dp.routes(), ["10.5.2.0/24 via 192.0.2.2 dev eth0"]);
  } finally {
    await h.stop();
  }
});

Deno.test("a write that failed in syncPeers is thrown, then retried by run", async () => {
  const h = kernelSetup();
  h.dp.failKey("10.5.3.0/24", 105);
  await assert.rejects(h.network.syncPeers([peer(2), peer(3)]), /ENOBUFS/);
  h.dp.failKey("10.5.3.0/24", 0);
  await h.start();
  try {
    await h.clock.advance(50);
    assert.equal(h.dp.routes().length, 2);
  } finally {
    await h.stop();
  }
});

Deno.test("run ignores its own writes, and drift of another table", async () => {
  const h = kernelSetup();
  await h.start();
  try {
    await h.network.syncPeers([peer(2), peer(3)]);
    await h.network.updatePeers!([{ type: "removed", lease: peer(3) }]);
    const other = h.dp.entries({ ...SCOPE, name: "other", network: net("10.6.0.0/16") });
    await other.sync(
      new Map([["x", {
        routes: [{ dst: net("10.6.2.0/24"), gateway: parseIPv4("192.0.2.2"), device: "eth0" }],
      }]]),
    );
    await h.dp.deleteRoute({ dst: net("10.6.2.0/24") });
    await h.clock.advance(200);
    assert.deepEqual(h.repaired, []);
  } finally {
    await h.stop();
  }
});

/**
 * A cloud-like route table: each host writes only the route to its own
 * subnet and deletes routes of leases that are gone, never a live peer's.
 */
class MemoryRouteTable {
  /** dst → next hop (an instance name). */
  readonly routes = new Map<string, string>();
  calls = 0;
}

type CloudEntry = { readonly dst: IPv4Net; readonly nextHop?: string };

function cloudTarget(table: MemoryRouteTable, network: IPv4Net): RouteTarget<CloudEntry> {
  const inNetwork = (k: string) => containsIPv4Net(network, parseIPv4Net(k));
  const apply = (entries: Iterable<[string, CloudEntry | null]>, deleteOthers: boolean) => {
    table.calls++;
    let written = 0, deleted = 0;
    const keep = new Set<string>();
    for (const [k, e] of entries) {
      keep.add(k);
      if (e === null) {
        if (table.routes.delete(k)) deleted++;
      } else if (e.nextHop && table.routes.get(k) !== e.nextHop) {
        table.routes.set(k, e.nextHop);
        written++;
      }
    }
    if (deleteOthers) {
      for (const k of [...table.routes.keys()]) {
        if (inNetwork(k) && !keep.has(k) && table.routes.delete(k)) deleted++;
      }
    }
    return Promise.resolve<ApplyResult>({ written, deleted, failures: [] });
  };
  return {
    name: "cloud",
    sync: (entries) => apply(entries, true),
    update: (changes) => apply(changes, false),
  };
}

Deno.test("the engine drives a cloud-like route table: own route written, gone leases' routes removed", async () => {
  const table = new MemoryRouteTable();
  table.routes.set("10.5.2.0/24", "host-2"); // a live peer's
  table.routes.set("10.5.9.0/24", "host-9"); // a lease that is gone
  table.routes.set("172.16.0.0/16", "vpn"); // not ours
  const clock = new FakeClock();
  const ctx = testContext({
    ext: { name: "eth0", index: 2, mtu: 1500, ifaceAddr: "192.0.2.11", extAddr: "192.0.2.11" },
    subnet: "10.5.1.0/24",
    clock,
  });
  const peerEntries = (p: Lease): PeerResult<CloudEntry> => ({ entries: { dst: p.subnet! } });
  const network = routedNetwork(
    "cloud",
    {
      lease: OWN,
      mtu: 1500,
      target: cloudTarget(table, net("10.5.0.0/16")),
      peerEntries,
      ownEntries: { dst: OWN.subnet!, nextHop: "host-1" },
    },
    ctx,
    ctx.logger,
  );
  await network.syncPeers([peer(2)]);
  assert.deepEqual(Object.fromEntries(table.routes), {
    "10.5.1.0/24": "host-1",
    "10.5.2.0/24": "host-2",
    "172.16.0.0/16": "vpn",
  });
  const calls = table.calls;
  await network.updatePeers!([{ type: "removed", lease: peer(2) }]);
  assert.equal(table.calls, calls + 1);
  assert.deepEqual([...table.routes.keys()].sort(), ["10.5.1.0/24", "172.16.0.0/16"]);
});

Deno.test("a peer's key is its subnet", () => {
  assert.equal(peerKey(peer(2)), "10.5.2.0/24");
});

Deno.test("a target's own schedule (nextSyncInMs) drives full syncs, only once the peers are known", async () => {
  const clock = new FakeClock();
  const ctx = testContext({
    ext: { name: "eth0", index: 2, mtu: 1500, ifaceAddr: "192.0.2.11", extAddr: "192.0.2.11" },
    subnet: "10.5.1.0/24",
    clock,
  });
  const syncs: number[] = [];
  let dueAt = clock.now() + 5000;
  const target: RouteTarget<string> = {
    name: "scheduled",
    sync: () => {
      syncs.push(clock.now());
      dueAt = clock.now() + 5000;
      return Promise.resolve({ written: 0, deleted: 0, failures: [] });
    },
    update: () => Promise.resolve({ written: 0, deleted: 0, failures: [] }),
    nextSyncInMs: () => Math.max(0, dueAt - clock.now()),
  };
  const network = routedNetwork(
    "scheduled",
    { lease: OWN, mtu: 1500, target, peerEntries: () => ({ entries: "keep" }) },
    ctx,
    ctx.logger,
    { resyncIntervalMs: 0 },
  );
  const ac = new AbortController();
  const running = network.run(ac.signal);
  try {
    await clock.advance(12_000);
    assert.deepEqual(syncs, [], "no sync before the peers are known");
    await network.syncPeers([peer(2)]);
    const first = clock.now();
    await clock.advance(11_000);
    // syncPeers' own sync, one left from the wait for the peers, then every 5 s as asked
    const at = syncs.map((t) => t - first);
    assert.equal(at.length, 4, JSON.stringify(at));
    for (const gap of [at[2] - at[1], at[3] - at[2]]) {
      assert.ok(gap >= 5000 && gap < 5500, JSON.stringify(at));
    }
  } finally {
    ac.abort();
    await running;
  }
});

Deno.test("peerStates says per peer whether its state is applied, failed (and why) or skipped", async () => {
  const h = kernelSetup();
  const states = () =>
    Object.fromEntries(
      [...h.network.peerStates!()].map(([k, s]) => [k, `${s.state} ${s.detail ?? ""}`.trim()]),
    );
  h.dp.failKey("10.5.3.0/24", 105);
  await assert.rejects(h.network.syncPeers([OWN, peer(2), peer(3), peer(5, "vxlan")]), /ENOBUFS/);
  const before = states();
  assert.equal(before["10.5.2.0/24"], "applied");
  assert.match(before["10.5.3.0/24"], /^failed .*ENOBUFS/);
  assert.match(before["10.5.5.0/24"], /^skipped .*vxlan/);
  assert.equal(Object.keys(before).length, 3, "the own lease is no peer");
  h.dp.failKey("10.5.3.0/24", 0);
  await h.network.updatePeers!([
    { type: "added", lease: peer(3) },
    { type: "removed", lease: peer(2) },
  ]);
  assert.deepEqual(states(), { "10.5.3.0/24": "applied", "10.5.5.0/24": before["10.5.5.0/24"] });
});
