import assert from "node:assert/strict";
import { parseIPv4Net } from "../core/ip.ts";
import { Registry } from "../core/metrics.ts";
import type { Lease } from "../lease/types.ts";
import type { Network, PeerChange } from "../backends/types.ts";
import { FakeClock } from "../testing/fake_clock.ts";
import { memoryLogger } from "../testing/memory_logger.ts";
import { agentMetrics } from "./metrics.ts";
import { PEER_SYNC_RETRY_MS, PeerSync } from "./peer_sync.ts";

const lease = (cidr: string, publicIP: string): Lease => ({
  subnet: parseIPv4Net(cidr),
  attrs: { publicIP },
  expiration: null,
});
const A = lease("10.5.2.0/24", "192.0.2.2");
const B = lease("10.5.3.0/24", "192.0.2.3");
const C = lease("10.5.4.0/24", "192.0.2.4");

/** One write the fake network received; the test settles it. */
interface Write {
  readonly kind: "sync" | "update";
  readonly what: string[];
  resolve(): void;
  reject(e: Error): void;
}

/** A network whose writes wait until the test settles them. */
function fakeNetwork(options: { incremental: boolean }) {
  const writes: Write[] = [];
  let taken = 0;
  let waiter: ((w: Write) => void) | undefined;
  const record = (kind: Write["kind"], what: string[]) =>
    new Promise<void>((resolve, reject) => {
      const w = { kind, what, resolve, reject };
      writes.push(w);
      waiter?.(w);
      waiter = undefined;
    });
  const network: Network = {
    lease: lease("10.5.1.0/24", "192.0.2.1"),
    mtu: 1500,
    syncPeers: (peers) => record("sync", peers.map((p) => p.attrs.publicIP)),
    ...(options.incremental
      ? {
        updatePeers: (changes: readonly PeerChange[]) =>
          record("update", changes.map((c) => `${c.type} ${c.lease.attrs.publicIP}`)),
      }
      : {}),
    run: () => Promise.resolve(),
  };
  return {
    network,
    writes,
    /** The next write not looked at yet (already made, or the one to come). */
    next(): Promise<Write> {
      if (taken < writes.length) return Promise.resolve(writes[taken++]);
      return new Promise((resolve) => {
        waiter = (w) => {
          taken++;
          resolve(w);
        };
      });
    },
  };
}

function rig(options: { incremental: boolean }) {
  const clock = new FakeClock();
  const logger = memoryLogger();
  const registry = new Registry();
  const metrics = agentMetrics(registry);
  let peers: Lease[] = [];
  const sync = new PeerSync({ clock, logger, metrics, peers: () => peers });
  const fake = fakeNetwork(options);
  const ac = new AbortController();
  return {
    clock,
    logger,
    metrics,
    sync,
    fake,
    ac,
    setPeers: (next: Lease[]) => (peers = next),
  };
}

Deno.test("PeerSync writes nothing into an attached network until the first request, then the whole set", async () => {
  const r = rig({ incremental: true });
  r.setPeers([A, B]);
  r.sync.attach(r.fake.network, r.ac.signal);
  await r.clock.advance(0);
  assert.equal(r.fake.writes.length, 0, "no write before the peers were read");
  r.sync.requestChanges([{ type: "added", lease: B }]);
  const first = await r.fake.next();
  assert.deepEqual([first.kind, first.what], ["sync", ["192.0.2.2", "192.0.2.3"]]);
  first.resolve();
  r.ac.abort();
});

Deno.test("PeerSync hands a network with updatePeers only the changes, merged per peer while a write is in flight", async () => {
  const r = rig({ incremental: true });
  r.setPeers([A]);
  r.sync.attach(r.fake.network, r.ac.signal);
  r.sync.requestWholeSet();
  const whole = await r.fake.next();
  // while the whole-set write is in flight, three batches arrive
  r.sync.requestChanges([{ type: "added", lease: B }]);
  r.sync.requestChanges([{ type: "added", lease: C }, { type: "removed", lease: A }]);
  r.sync.requestChanges([{ type: "removed", lease: B }]);
  assert.equal(r.fake.writes.length, 1, "one write at a time");
  whole.resolve();
  const merged = await r.fake.next();
  assert.deepEqual([merged.kind, merged.what], [
    "update",
    ["added 192.0.2.4", "removed 192.0.2.2", "removed 192.0.2.3"],
  ]);
  merged.resolve();
  r.sync.requestChanges([{ type: "added", lease: A }]);
  const single = await r.fake.next();
  assert.deepEqual([single.kind, single.what], ["update", ["added 192.0.2.2"]]);
  single.resolve();
  await r.sync.detach();
  assert.ok(
    r.metrics.reconcileDuration.render().includes("weft_reconcile_duration_seconds_count 3"),
  );
  r.ac.abort();
});

Deno.test("PeerSync writes the whole set for a snapshot, and always for a network without updatePeers", async () => {
  for (const incremental of [true, false]) {
    const r = rig({ incremental });
    r.setPeers([A]);
    r.sync.attach(r.fake.network, r.ac.signal);
    r.sync.requestWholeSet();
    (await r.fake.next()).resolve();
    r.setPeers([A, B]);
    r.sync.requestChanges([{ type: "added", lease: B }]);
    const change = await r.fake.next();
    assert.deepEqual(
      [change.kind, change.what],
      incremental ? ["update", ["added 192.0.2.3"]] : ["sync", ["192.0.2.2", "192.0.2.3"]],
    );
    change.resolve();
    r.setPeers([C]);
    r.sync.requestWholeSet();
    const snapshot = await r.fake.next();
    assert.deepEqual([snapshot.kind, snapshot.what], ["sync", ["192.0.2.4"]]);
    snapshot.resolve();
    r.ac.abort();
  }
});

Deno.test("PeerSync falls back to the whole set at once when an incremental update fails", async () => {
  const r = rig({ incremental: true });
  r.setPeers([A]);
  r.sync.attach(r.fake.network, r.ac.signal);
  r.sync.requestWholeSet();
  (await r.fake.next()).resolve();
  r.setPeers([A, B]);
  r.sync.requestChanges([{ type: "added", lease: B }]);
  (await r.fake.next()).reject(new Error("EEXIST on the fdb entry"));
  const fallback = await r.fake.next();
  assert.deepEqual([fallback.kind, fallback.what], ["sync", ["192.0.2.2", "192.0.2.3"]]);
  fallback.resolve();
  assert.equal(r.metrics.reconcileErrors.get(), 1);
  assert.ok(r.logger.lines.some((l) => l.includes("incremental peer update failed")));
  r.ac.abort();
});

Deno.test("PeerSync retries a failed whole-set write after 1 s and logs the same error once", async () => {
  const r = rig({ incremental: false });
  r.setPeers([A]);
  r.sync.attach(r.fake.network, r.ac.signal);
  r.sync.requestWholeSet();
  (await r.fake.next()).reject(new Error("netlink: ENOBUFS"));
  await r.clock.advance(PEER_SYNC_RETRY_MS - 1);
  assert.equal(r.fake.writes.length, 1, "no retry before the pause is over");
  await r.clock.advance(1);
  const retry = await r.fake.next();
  assert.equal(retry.kind, "sync");
  retry.reject(new Error("netlink: ENOBUFS"));
  await r.clock.advance(PEER_SYNC_RETRY_MS);
  (await r.fake.next()).resolve();
  assert.equal(r.metrics.reconcileErrors.get(), 2);
  assert.equal(r.logger.lines.filter((l) => l.includes("peer sync failed")).length, 1);
  await r.clock.advance(10 * PEER_SYNC_RETRY_MS);
  assert.equal(r.fake.writes.length, 3, "no more writes once it succeeded");
  r.ac.abort();
});

Deno.test("PeerSync.detach() waits for the write in flight and writes nothing more into that network", async () => {
  const r = rig({ incremental: true });
  r.setPeers([A]);
  r.sync.attach(r.fake.network, r.ac.signal);
  r.sync.requestWholeSet();
  const inFlight = await r.fake.next();
  let detached = false;
  const detaching = r.sync.detach().then(() => (detached = true));
  r.sync.requestChanges([{ type: "added", lease: B }]);
  await r.clock.advance(0);
  assert.equal(detached, false, "still writing");
  inFlight.resolve();
  await detaching;
  await r.clock.advance(0);
  assert.equal(r.fake.writes.length, 1);
  r.ac.abort();
});
