/**
 * The LeaseStore contract: one suite every store (file, etcd, kube, and the
 * in-memory one over `createKvLeaseStore`) runs. A store's test file calls
 * {@link leaseStoreContract} with the store's capabilities and a harness
 * that knows how to set that store up; a case needing a capability the store
 * lacks is registered ignored, with the reason the test file gives (e.g.
 * Kubernetes has no TTLs), never counted as passed.
 *
 * @module
 */

import assert from "node:assert/strict";
import { formatIPv4Net, formatSubnetPair, parseIPv4, parseIPv6Net } from "../core/ip.ts";
import { parseNetworkConfig } from "../lease/config.ts";
import type { NetworkConfig } from "../lease/config.ts";
import { isLeaseCompatible, isSubnetCompatible } from "../lease/alloc.ts";
import { type Lease, type LeaseAttrs, type LeaseEvent, type LeaseStore } from "../lease/types.ts";
import { PoolExhaustedError } from "../core/errors.ts";
import { testUnless } from "./ignorable.ts";
import { waitForValue } from "./wait.ts";

/** A capability the store has (`true`), or why it does not (the case is then ignored with that reason). */
export type Capability = true | string;

/** What a store supports. */
export interface ContractCapabilities {
  /** Leases carry a TTL and vanish when not renewed. */
  readonly ttl: Capability;
  /** Records without a TTL can be written by an operator and are never expired. */
  readonly reservations: Capability;
  /** History can be compacted, forcing a re-list. */
  readonly compaction: Capability;
  /** The server can be restarted under a running watch. */
  readonly restart: Capability;
  /** The store picks subnets itself (not when, as in Kubernetes, they are assigned outside). */
  readonly allocation: Capability;
  /** Malformed records can be written by hand. */
  readonly garbage: Capability;
}

/** Sets up one store backing for one test. */
export interface ContractHarness {
  /**
   * A store client acting for host number `host` (0, 1, 2…). Each call is a
   * new client (as after an agent restart). Host n publishes public IP
   * {@link hostIP}(n).
   */
  open(host: number, options?: { ttlMs?: number }): Promise<LeaseStore>;
  /** Smallest TTL the store honours, ms (etcd: 2000; default 1000). */
  readonly minTtlMs?: number;
  /**
   * The clock the stores run on, when it is a manual one: TTL cases move it
   * instead of waiting. Without it they wait in real time for the result,
   * with a deadline.
   */
  readonly clock?: { now(): number; advance(ms: number): Promise<void> };
  /** Write a reservation (a record without TTL) for `subnet` (CIDR) and public IP. */
  writeReservation?(subnet: string, publicIP: string): Promise<void>;
  /** Write a malformed record for `subnet` with the given raw value. */
  writeGarbage?(subnet: string, value: string): Promise<void>;
  /** Remove a host's lease behind the agent's back (as an operator would). */
  removeExternally(lease: Lease): Promise<void>;
  /** Compact all history up to now. */
  compact?(): Promise<void>;
  /** Restart the server (same data). */
  restart?(): Promise<void>;
  /** How many watches the server has open (to restart it under one). */
  watchers?(): Promise<number>;
  /** Remove everything the harness made. */
  cleanup(): Promise<void>;
}

/** Network config every contract case uses: 10.5.0.0/16, /24 subnets. */
export const CONTRACT_CONFIG = '{"Network":"10.5.0.0/16","Backend":{"Type":"alloc"}}';

/** The public IP of contract host n. */
export function hostIP(n: number): string {
  return `192.0.2.${10 + n}`;
}

/** Attributes contract host n publishes. */
export function hostAttrs(n: number, extra: Partial<LeaseAttrs> = {}): LeaseAttrs {
  return { publicIP: hostIP(n), backendType: "alloc", ...extra };
}

/**
 * Read a watch until `done(events so far)` holds or `timeoutMs` passes,
 * running `during` (which sees the events as they come) alongside.
 *
 * @returns All events seen.
 * @throws {Error} On timeout, listing what was seen.
 */
export async function watchUntil(
  store: LeaseStore,
  revision: string,
  done: (events: LeaseEvent[]) => boolean,
  timeoutMs: number,
  during?: (seen: readonly LeaseEvent[]) => Promise<void>,
): Promise<LeaseEvent[]> {
  const ac = new AbortController();
  const seen: LeaseEvent[] = [];
  const timer = setTimeout(() => ac.abort(new Error("timeout")), timeoutMs);
  const reader = (async () => {
    try {
      for await (const batch of store.watch(revision, ac.signal)) {
        seen.push(...batch);
        if (done(seen)) return true;
      }
    } catch (e) {
      if (!ac.signal.aborted) throw e;
    }
    return done(seen);
  })();
  try {
    if (during) {
      await during(seen);
      // the change may have arrived before `during` set what `done` checks
      if (done(seen)) {
        ac.abort();
        await reader;
        return seen;
      }
    }
    const ok = await reader;
    if (!ok) {
      throw new Error(
        `watch did not see the expected events within ${timeoutMs} ms; saw: ${describe(seen)}`,
      );
    }
    return seen;
  } finally {
    clearTimeout(timer);
    ac.abort();
  }
}

function describe(events: LeaseEvent[]): string {
  return events.map((e) =>
    e.type === "snapshot"
      ? `snapshot[${e.leases.map((l) => formatSubnetPair(l)).join(",")}]`
      : `${e.type} ${formatSubnetPair(e.lease)}`
  ).join("; ") || "(nothing)";
}

/** Whether the events include `type` for the lease's subnets. */
export function sawEvent(events: LeaseEvent[], type: "added" | "removed", lease: Lease): boolean {
  return events.some((e) => e.type === type && sameSubnets(e.lease, lease));
}

/** Whether two leases hold the same subnets (both families). */
export function sameSubnets(a: Lease, b: Lease): boolean {
  return formatSubnetPair(a) === formatSubnetPair(b);
}

/** The set of subnets the events describe at the end (snapshots reset it). */
export function replay(initial: Lease[], events: LeaseEvent[]): Map<string, Lease> {
  const m = new Map<string, Lease>(initial.map((l) => [formatSubnetPair(l), l]));
  for (const e of events) {
    if (e.type === "snapshot") {
      m.clear();
      for (const l of e.leases) m.set(formatSubnetPair(l), l);
    } else if (e.type === "added") m.set(formatSubnetPair(e.lease), e.lease);
    else m.delete(formatSubnetPair(e.lease));
  }
  return m;
}

/**
 * Register the contract cases as Deno tests.
 *
 * @param name Store name, prefixed to each test name.
 * @param capabilities What the store supports, and why not where it does not.
 * @param makeHarness Builds a fresh harness per case.
 * @param options `sanitize: false` when the store's client keeps timers or
 *   sockets alive across the test boundary by design.
 */
export function leaseStoreContract(
  name: string,
  capabilities: ContractCapabilities,
  makeHarness: () => Promise<ContractHarness>,
  options: { sanitize?: boolean } = {},
): void {
  const sanitize = options.sanitize ?? true;
  const opened: LeaseStore[] = [];
  const test = (
    title: string,
    needs: (keyof ContractCapabilities)[],
    fn: (h: ContractHarness, open: ContractHarness["open"]) => Promise<void>,
  ) => {
    const missing = needs.map((c) => capabilities[c]).find((c) => c !== true);
    testUnless(missing ?? null, {
      name: `${name} store: ${title}`,
      sanitizeOps: sanitize,
      sanitizeResources: sanitize,
      fn: async () => {
        const h = await makeHarness();
        try {
          const open: ContractHarness["open"] = async (host, o) => {
            const s = await h.open(host, o);
            opened.push(s);
            return s;
          };
          await fn(h, open);
        } finally {
          for (const s of opened.splice(0)) await s.close().catch(() => {});
          await h.cleanup();
        }
      },
    });
  };
  const all: (keyof ContractCapabilities)[] = [];
  const now = (h: ContractHarness) => h.clock?.now() ?? Date.now();
  const minTtl = (h: ContractHarness) => Math.max(h.minTtlMs ?? 1000, 1000);

  test("reads and validates the network config", all, async (_h, open) => {
    const s = await open(0);
    const cfg = await s.getNetworkConfig();
    assert.equal(formatIPv4Net(cfg.network!), "10.5.0.0/16");
    assert.equal(cfg.subnetLen, 24);
  });

  test("acquire gives a lease inside the network and list shows it", all, async (_h, open) => {
    const s = await open(0);
    const cfg = await s.getNetworkConfig();
    const lease = await s.acquire(cfg, { attrs: hostAttrs(0) });
    assert.ok(isSubnetCompatible(cfg, lease.subnet), formatSubnetPair(lease));
    assert.equal(lease.attrs.publicIP, hostIP(0));
    const { leases } = await s.list();
    const found = leases.find((l) => sameSubnets(l, lease));
    assert.ok(found, "acquired lease is listed");
    assert.equal(found.attrs.publicIP, hostIP(0));
    assert.equal(found.attrs.backendType, "alloc");
  });

  test("hosts get distinct subnets", all, async (_h, open) => {
    const subnets = new Set<string>();
    for (let i = 0; i < 3; i++) {
      const s = await open(i);
      const lease = await s.acquire(await s.getNetworkConfig(), { attrs: hostAttrs(i) });
      subnets.add(formatSubnetPair(lease));
    }
    assert.equal(subnets.size, 3);
  });

  test("a restarted host gets its own lease back", all, async (_h, open) => {
    const s1 = await open(0);
    const cfg = await s1.getNetworkConfig();
    const first = await s1.acquire(cfg, { attrs: hostAttrs(0) });
    await s1.close();
    const s2 = await open(0);
    const again = await s2.acquire(cfg, { attrs: hostAttrs(0, { backendData: { n: 2 } }) });
    assert.deepEqual(again.subnet, first.subnet);
    const { leases } = await s2.list();
    assert.equal(leases.filter((l) => l.attrs.publicIP === hostIP(0)).length, 1);
    assert.deepEqual(
      leases.find((l) => l.attrs.publicIP === hostIP(0))?.attrs.backendData,
      { n: 2 },
      "attributes are republished on reuse",
    );
  });

  test("the previous subnet is preferred when free", ["allocation"], async (_h, open) => {
    const s = await open(0);
    const cfg = await s.getNetworkConfig();
    const prev = { ip: parseIPv4("10.5.77.0"), prefixLen: 24 };
    const lease = await s.acquire(cfg, { attrs: hostAttrs(0), previousSubnet: prev });
    assert.equal(formatSubnetPair(lease), "10.5.77.0/24");
  });

  test("a previous subnet outside the pool is ignored", ["allocation"], async (_h, open) => {
    const s = await open(0);
    const cfg = await s.getNetworkConfig();
    const prev = { ip: parseIPv4("10.6.77.0"), prefixLen: 24 };
    const lease = await s.acquire(cfg, { attrs: hostAttrs(0), previousSubnet: prev });
    assert.ok(isSubnetCompatible(cfg, lease.subnet));
  });

  test("a full pool fails with PoolExhaustedError", ["allocation"], async (_h, open) => {
    const s = await open(0);
    const base = await s.getNetworkConfig();
    // three subnets: 10.5.1.0 .. 10.5.3.0
    const cfg: NetworkConfig = { ...base, subnetMax: parseIPv4("10.5.3.0") };
    for (let i = 0; i < 3; i++) {
      const si = await open(i);
      await si.acquire(cfg, { attrs: hostAttrs(i) });
    }
    const s4 = await open(3);
    await assert.rejects(
      () => s4.acquire(cfg, { attrs: hostAttrs(3) }),
      (e: Error) => e instanceof PoolExhaustedError && /3 of 3 in use/.test(e.message),
    );
  });

  test("renew extends the expiry and republishes attributes", ["ttl"], async (h, open) => {
    const ttl = 60_000;
    const s = await open(0, { ttlMs: ttl });
    const cfg = await s.getNetworkConfig();
    const t0 = now(h);
    const lease = await s.acquire(cfg, { attrs: hostAttrs(0) });
    const t1 = now(h);
    assert.ok(
      lease.expiration !== null && lease.expiration >= t0 + ttl && lease.expiration <= t1 + ttl,
      `expiry ${lease.expiration} is the TTL after the acquire (${t0}..${t1})`,
    );
    await h.clock?.advance(1000);
    const r0 = now(h);
    const renewed = await s.renew({ ...lease, attrs: hostAttrs(0, { backendData: { v: 2 } }) });
    const r1 = now(h);
    assert.ok(
      renewed.expiration! >= r0 + ttl && renewed.expiration! <= r1 + ttl,
      `renewed expiry ${renewed.expiration} is the TTL after the renew (${r0}..${r1})`,
    );
    if (r0 > t1) assert.ok(renewed.expiration! > lease.expiration!, "expiry moved forward");
    const listed = (await s.list()).leases.find((l) => sameSubnets(l, lease));
    assert.deepEqual(listed?.attrs.backendData, { v: 2 });
  });

  test("an unrenewed lease expires and watchers see it go", ["ttl"], async (h, open) => {
    const ttl = minTtl(h);
    const s = await open(0, { ttlMs: ttl });
    const cfg = await s.getNetworkConfig();
    const snap = await s.list();
    const lease = await s.acquire(cfg, { attrs: hostAttrs(0) });
    const events = await watchUntil(
      s,
      snap.revision,
      (ev) => sawEvent(ev, "removed", lease),
      ttl + 10_000,
      h.clock ? () => h.clock!.advance(ttl + 1) : undefined,
    );
    assert.ok(sawEvent(events, "added", lease));
    const { leases } = await s.list();
    assert.ok(!leases.some((l) => sameSubnets(l, lease)));
  });

  test("release removes the lease", all, async (_h, open) => {
    const s = await open(0);
    const lease = await s.acquire(await s.getNetworkConfig(), { attrs: hostAttrs(0) });
    await s.release(lease);
    const { leases } = await s.list();
    assert.ok(!leases.some((l) => sameSubnets(l, lease)));
  });

  test("watch sees peers added, updated and removed", all, async (_h, open) => {
    const watcher = await open(0);
    const cfg = await watcher.getNetworkConfig();
    const snap = await watcher.list();
    const peer = await open(1);
    let lease: Lease | undefined;
    const events = await watchUntil(
      watcher,
      snap.revision,
      (ev) => lease !== undefined && sawEvent(ev, "removed", lease),
      10_000,
      async () => {
        lease = await peer.acquire(cfg, { attrs: hostAttrs(1) });
        await peer.renew({ ...lease, attrs: hostAttrs(1, { backendData: { v: 3 } }) });
        await peer.release(lease);
      },
    );
    const added = events.filter((e) => e.type === "added");
    assert.ok(added.length >= 1, "added seen");
    assert.ok(
      added.some((e) =>
        e.type === "added" && (e.lease.attrs.backendData as { v?: number })?.v === 3
      ),
      "update seen as added with the new attributes",
    );
    assert.equal(replay(snap.leases, events).size, snap.leases.length);
  });

  test("a watch from a list's revision starts with the next change", all, async (_h, open) => {
    const s = await open(0);
    const cfg = await s.getNetworkConfig();
    await s.acquire(cfg, { attrs: hostAttrs(0) });
    const snap = await s.list();
    const peer = await open(1);
    let lease: Lease | undefined;
    const events = await watchUntil(
      s,
      snap.revision,
      (ev) => lease !== undefined && sawEvent(ev, "added", lease),
      10_000,
      async () => void (lease = await peer.acquire(cfg, { attrs: hostAttrs(1) })),
    );
    assert.equal(describe(events), `added ${formatIPv4Net(lease!.subnet!)}`, "nothing before it");
  });

  test("an operator deleting a lease is seen by watchers", all, async (h, open) => {
    const s = await open(0);
    const cfg = await s.getNetworkConfig();
    const peer = await open(1);
    const lease = await peer.acquire(cfg, { attrs: hostAttrs(1) });
    const snap = await s.list();
    const events = await watchUntil(
      s,
      snap.revision,
      (ev) => sawEvent(ev, "removed", lease),
      10_000,
      () => h.removeExternally(lease),
    );
    assert.equal(replay(snap.leases, events).has(formatSubnetPair(lease)), false);
  });

  test("watch resumes after the server restarts", ["restart"], async (h, open) => {
    if (!h.restart || !h.watchers) {
      throw new Error(
        "a harness with the restart capability must provide restart() and watchers()",
      );
    }
    const s = await open(0);
    const cfg = await s.getNetworkConfig();
    const snap = await s.list();
    const peer = await open(1);
    let lease: Lease | undefined;
    const events = await watchUntil(
      s,
      snap.revision,
      (ev) => lease !== undefined && sawEvent(ev, "added", lease),
      30_000,
      async () => {
        await waitForValue("the watch to reach the server", async () => (await h.watchers!()) > 0);
        await h.restart!();
        lease = await waitForValue(
          "an acquire to succeed after the restart",
          () => peer.acquire(cfg, { attrs: hostAttrs(1) }),
          {
            timeoutMs: 20_000,
          },
        );
      },
    );
    assert.ok(replay(snap.leases, events).has(formatSubnetPair(lease!)));
  });

  test("a compacted history is re-listed as a snapshot", ["compaction"], async (h, open) => {
    if (!h.compact) throw new Error("a harness with the compaction capability must compact");
    const s = await open(0);
    const cfg = await s.getNetworkConfig();
    const snap = await s.list();
    const peer1 = await open(1);
    const peer2 = await open(2);
    const a = await peer1.acquire(cfg, { attrs: hostAttrs(1) });
    const b = await peer2.acquire(cfg, { attrs: hostAttrs(2) });
    await peer1.release(a);
    await h.compact();
    const events = await watchUntil(
      s,
      snap.revision,
      (ev) => ev.some((e) => e.type === "snapshot"),
      10_000,
    );
    const final = replay(snap.leases, events);
    assert.ok(final.has(formatSubnetPair(b)), "the surviving lease is in the snapshot");
    assert.ok(!final.has(formatSubnetPair(a)), "the released lease is not");
  });

  test(
    "reservations are honoured and never expire",
    ["reservations", "ttl"],
    async (h, open) => {
      if (!h.writeReservation) throw new Error("a harness with reservations must write them");
      await h.writeReservation("10.5.9.0/24", hostIP(5));
      const ttl = minTtl(h);
      const s = await open(0, { ttlMs: ttl });
      const cfg: NetworkConfig = {
        ...(await s.getNetworkConfig()),
        subnetMin: parseIPv4("10.5.8.0"),
        subnetMax: parseIPv4("10.5.9.0"),
      };
      const other = await s.acquire(cfg, {
        attrs: hostAttrs(0),
        previousSubnet: { ip: parseIPv4("10.5.9.0"), prefixLen: 24 },
      });
      assert.equal(
        formatSubnetPair(other),
        "10.5.8.0/24",
        "the reserved subnet is not handed out",
      );
      const owner = await open(5, { ttlMs: ttl });
      const mine = await owner.acquire(cfg, { attrs: hostAttrs(5) });
      assert.equal(formatSubnetPair(mine), "10.5.9.0/24", "the reservation's host gets it");
      assert.equal(mine.expiration, null, "still a reservation after reuse");
      await h.clock?.advance(ttl + 1);
      await waitForValue(
        `the ordinary lease to expire after its ${ttl} ms TTL`,
        async () => !(await s.list()).leases.some((l) => sameSubnets(l, other)),
        { timeoutMs: ttl + 10_000 },
      );
      const { leases } = await s.list();
      const kept = leases.find((l) => formatSubnetPair(l) === "10.5.9.0/24");
      assert.ok(kept, "reservation outlives the TTL");
      assert.equal(kept.expiration, null);
    },
  );

  test("malformed records are skipped, not thrown", ["garbage"], async (h, open) => {
    if (!h.writeGarbage) throw new Error("a harness with the garbage capability must write it");
    await h.writeGarbage("10.5.3.0/24", "{not json");
    await h.writeGarbage("10.5.4.0/24", '{"PublicIP":"not-an-ip"}');
    const s = await open(0);
    const cfg = await s.getNetworkConfig();
    const lease = await s.acquire(cfg, { attrs: hostAttrs(0) });
    const { leases } = await s.list();
    assert.deepEqual(leases.map((l) => formatSubnetPair(l)), [formatSubnetPair(lease)]);
  });

  test(
    "dual-stack leases: each host gets an IPv4 and an IPv6 subnet, listed and watched with both",
    ["allocation"],
    async (_h, open) => {
      const cfg = parseNetworkConfig(DUAL_STACK_CONFIG);
      const watcher = await open(0);
      const snap = await watcher.list();
      const leases: Lease[] = [];
      const events = await watchUntil(
        watcher,
        snap.revision,
        (ev) => leases.length === 2 && leases.every((l) => sawEvent(ev, "added", l)),
        10_000,
        async () => {
          for (const i of [1, 2]) {
            const s = await open(i);
            leases.push(
              await s.acquire(cfg, { attrs: hostAttrs(i, { publicIPv6: hostIPv6(i) }) }),
            );
          }
        },
      );
      for (const l of leases) {
        assert.ok(l.subnet && l.ipv6Subnet, formatSubnetPair(l));
        assert.ok(isLeaseCompatible(cfg, l), formatSubnetPair(l));
      }
      assert.notEqual(formatSubnetPair(leases[0]), formatSubnetPair(leases[1]));
      const added = events.find((e) => e.type === "added" && sameSubnets(e.lease, leases[0]));
      assert.equal(added?.type === "added" && added.lease.attrs.publicIPv6, hostIPv6(1));
      const { leases: listed } = await watcher.list();
      assert.deepEqual(
        listed.map((l) => [formatSubnetPair(l), l.attrs.publicIP, l.attrs.publicIPv6]).sort(),
        leases.map((l) => [formatSubnetPair(l), l.attrs.publicIP, l.attrs.publicIPv6]).sort(),
      );
      // a restarted host gets both subnets back
      const again = await (await open(1)).acquire(cfg, {
        attrs: hostAttrs(1, { publicIPv6: hostIPv6(1) }),
      });
      assert.equal(formatSubnetPair(again), formatSubnetPair(leases[0]));
    },
  );

  test(
    "IPv6-only leases: no IPv4 subnet, hosts told apart by their IPv6 address",
    ["allocation"],
    async (_h, open) => {
      const cfg = parseNetworkConfig(IPV6_ONLY_CONFIG);
      const leases: Lease[] = [];
      for (const i of [0, 1, 2]) {
        const s = await open(i);
        leases.push(await s.acquire(cfg, { attrs: ipv6OnlyAttrs(i) }));
      }
      for (const l of leases) {
        assert.equal(l.subnet, undefined);
        assert.ok(l.ipv6Subnet && isLeaseCompatible(cfg, l), formatSubnetPair(l));
      }
      assert.equal(new Set(leases.map((l) => formatSubnetPair(l))).size, 3, "distinct subnets");
      const s = await open(1);
      const { leases: listed } = await s.list();
      assert.deepEqual(
        listed.map((l) => [formatSubnetPair(l), l.attrs.publicIP, l.attrs.publicIPv6]).sort(),
        leases.map((l, i) => [formatSubnetPair(l), "", hostIPv6(i)]).sort(),
      );
      const again = await s.acquire(cfg, { attrs: ipv6OnlyAttrs(1) });
      assert.equal(formatSubnetPair(again), formatSubnetPair(leases[1]), "own lease reused");
      const prev = parseIPv6Net("fd00:10:5:77::/64");
      const fresh = await (await open(3)).acquire(cfg, {
        attrs: ipv6OnlyAttrs(3),
        previousIPv6Subnet: prev,
      });
      assert.equal(formatSubnetPair(fresh), "fd00:10:5:77::/64", "previous IPv6 subnet preferred");
      await s.release(again);
      assert.ok(!(await s.list()).leases.some((l) => sameSubnets(l, again)), "released");
    },
  );
}

/** A dual-stack network config: 10.5.0.0/16 and fd00:10:5::/48, /24 and /64 subnets. */
export const DUAL_STACK_CONFIG =
  '{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:5::/48","Backend":{"Type":"alloc"}}';

/** An IPv6-only network config: fd00:10:5::/48, /64 subnets. */
export const IPV6_ONLY_CONFIG =
  '{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:5::/48","Backend":{"Type":"alloc"}}';

/** The public IPv6 address of contract host n. */
export function hostIPv6(n: number): string {
  return `2001:db8::${10 + n}`;
}

/** Attributes contract host n publishes in an IPv6-only network. */
export function ipv6OnlyAttrs(n: number): LeaseAttrs {
  return { publicIP: "", publicIPv6: hostIPv6(n), backendType: "alloc" };
}
