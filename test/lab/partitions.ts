/**
 * Partitions of one host (drop rules inside its namespace: packets vanish,
 * nothing is refused), with three vxlan agents on a short `--lease-ttl`:
 *
 * - {@link cutFromStore}: host 1 cut from etcd for twice the TTL. Its lease
 *   expires in etcd and the peers remove its routes, neighbour and fdb
 *   entry; when the cut heals it takes the same subnet again and every peer
 *   routes it again — the recovery time is measured — and pods on all
 *   hosts reach each other.
 * - {@link cutFromPeers}: host 1 cut from the other hosts but not from etcd
 *   for twice the TTL. It keeps renewing its lease, which never leaves etcd,
 *   and every host keeps its routes; when the cut heals pods reach each
 *   other again.
 *
 * @module
 */

import assert from "node:assert/strict";
import { type Cluster, networkAddress, pingFailures, startCluster } from "./cluster.ts";
import { cutFrom, since, waitRouted } from "./probes.ts";
import { hold, waitFor } from "../../testing/wait.ts";

/** The agents' lease TTL: renewed every 4 s, so a partition outlives it quickly. */
export const PARTITION_LEASE_TTL_MS = 8000;

/**
 * How long the recovery may take after the cut heals: a renewal stuck in the
 * partition gives up after the agent's 5 s request timeout, and a store that
 * did not answer is retried within 1 s; the rest is margin for a busy machine.
 */
export const PARTITION_RECOVERY_LIMIT_MS = 10_000;

/** Figures of {@link cutFromStore}. */
export interface StoreCutFigures {
  readonly leaseTtlMs: number;
  /** How long the host was cut off, ms. */
  readonly cutMs: number;
  /** From the cut to the lease gone from etcd, ms. */
  readonly expiredMs: number;
  /** From the cut to every peer having dropped the host's route, ms. */
  readonly peersRemovedMs: number;
  /** From the heal to the lease back in etcd, ms. */
  readonly leaseBackMs: number;
  /** From the heal to every peer routing the host again, ms. */
  readonly recoveryMs: number;
}

/** Figures of {@link cutFromPeers}. */
export interface PeerCutFigures {
  readonly leaseTtlMs: number;
  readonly cutMs: number;
  /** Renewals the cut host made while cut off. */
  readonly renewalsWhileCut: number;
}

function startPartitionCluster(prefix: string): Promise<Cluster> {
  return startCluster({
    backend: "vxlan",
    hosts: 3,
    podsPerHost: 1,
    prefix,
    agentArgs: ["--lease-ttl", `${PARTITION_LEASE_TTL_MS / 1000}s`],
  });
}

/** Whether `subnet` is routed on host `i` (kernel). */
async function routes(c: Cluster, i: number, subnet: string): Promise<boolean> {
  const r = await c.lab.exec(c.host(i).ns, ["ip", "-j", "route", "show", subnet]);
  return r.stdout.trim() !== "[]" && r.stdout.trim() !== "";
}

/**
 * Host 1 cut from etcd for twice the lease TTL, then healed (see the module doc).
 *
 * @returns The figures.
 * @throws {AssertionError} When the lease does not expire, a peer keeps its
 *   route, or the host comes back with another subnet or too late.
 */
export async function cutFromStore(): Promise<StoreCutFigures> {
  const c = await startPartitionCluster("wrs");
  try {
    await c.waitConverged();
    const subnet = c.subnets.get(1)!;
    const peers = [2, 3];
    const cut = await cutFrom(c.lab, c.host(1).ns, [c.lab.underlay.serviceIP]);
    const cutAt = performance.now();
    let expiredMs = 0;
    let peersRemovedMs = 0;
    try {
      await waitFor(
        "host 1's lease to expire in etcd",
        async () => {
          const held = (await c.leases()).some((l) => l.subnet === subnet);
          return held ? "still there" : null;
        },
        PARTITION_LEASE_TTL_MS + 10_000,
        50,
      );
      expiredMs = since(cutAt);
      await waitFor(
        "the peers to drop host 1's route",
        async () => {
          const still = [];
          for (const i of peers) if (await routes(c, i, subnet)) still.push(i);
          return still.length ? `hosts ${still.join(", ")} still route ${subnet}` : null;
        },
        10_000,
        20,
      );
      peersRemovedMs = since(cutAt);
      // the peers hold no neighbour or fdb entry of host 1 either
      const leases = await c.leases();
      for (const i of peers) {
        const diff = await c.peerStateDiff(i, leases);
        assert.equal(diff, null, `host ${i} after host 1's lease expired: ${diff}`);
        const text = await c.lab.run(c.host(i).ns, "ip neigh show dev flannel.1");
        assert.ok(!text.includes(`${networkAddress(subnet)} `), `host ${i} neighbours: ${text}`);
      }
      await hold(
        "host 1 stays cut off for twice the lease TTL",
        Math.max(0, 2 * PARTITION_LEASE_TTL_MS - since(cutAt)),
      );
    } finally {
      await cut.heal();
    }
    const cutMs = since(cutAt);
    const healedAt = performance.now();
    await waitFor(
      "host 1's lease back in etcd",
      async () => {
        const back = (await c.leases()).find((l) => l.publicIP === c.host(1).ip);
        return back ? null : "not yet";
      },
      PARTITION_RECOVERY_LIMIT_MS + 10_000,
      20,
    );
    const leaseBackMs = since(healedAt);
    await waitRouted(
      c.lab,
      peers.map((i) => c.host(i).ns),
      subnet,
      PARTITION_RECOVERY_LIMIT_MS + 10_000,
    );
    const recoveryMs = since(healedAt);
    const back = (await c.leases()).filter((l) => l.publicIP === c.host(1).ip);
    assert.deepEqual(back.map((l) => l.subnet), [subnet], "host 1 took the same subnet again");
    await c.waitConverged();
    assert.deepEqual(await pingFailures(c.lab, c.pods), [], "pods reach each other after the heal");
    const figures = {
      leaseTtlMs: PARTITION_LEASE_TTL_MS,
      cutMs,
      expiredMs,
      peersRemovedMs,
      leaseBackMs,
      recoveryMs,
    };
    assert.ok(
      recoveryMs <= PARTITION_RECOVERY_LIMIT_MS,
      `host 1 was routed again ${recoveryMs} ms after the heal (limit ${PARTITION_RECOVERY_LIMIT_MS}): ${
        JSON.stringify(figures)
      }`,
    );
    return figures;
  } finally {
    await c.close();
  }
}

/**
 * Host 1 cut from the other hosts, not from etcd, for twice the lease TTL
 * (see the module doc).
 *
 * @returns The figures.
 * @throws {AssertionError} When the lease leaves etcd, a route goes, or
 *   pods do not reach each other after the heal.
 */
export async function cutFromPeers(): Promise<PeerCutFigures> {
  const c = await startPartitionCluster("wrq");
  try {
    await c.waitConverged();
    const agent = c.agents.get(1)!;
    const since0 = agent.logs().length;
    const leasesBefore = await c.leases();
    const cut = await cutFrom(c.lab, c.host(1).ns, [c.host(2).ip, c.host(3).ip]);
    const cutAt = performance.now();
    try {
      assert.ok(
        (await pingFailures(c.lab, c.pods)).length > 0,
        "the cut separates host 1's pods from the others",
      );
      // every 500 ms for twice the TTL: the lease is in etcd and every host routes every peer
      while (since(cutAt) < 2 * PARTITION_LEASE_TTL_MS) {
        const leases = await c.leases();
        assert.deepEqual(
          leases.map((l) => l.subnet).sort(),
          leasesBefore.map((l) => l.subnet).sort(),
          `the leases changed ${since(cutAt)} ms into the cut`,
        );
        for (const i of [1, 2, 3]) {
          const diff = await c.peerStateDiff(i, leases);
          assert.equal(diff, null, `host ${i} ${since(cutAt)} ms into the cut: ${diff}`);
        }
        await hold("the cut goes on; look again", 500);
      }
    } finally {
      await cut.heal();
    }
    const cutMs = since(cutAt);
    const logs = agent.logs().slice(since0);
    const renewalsWhileCut = logs.filter((r) => r.msg === "lease renewed").length;
    assert.ok(renewalsWhileCut >= 2, `host 1 renewed ${renewalsWhileCut} times while cut off`);
    assert.ok(!logs.some((r) => r.msg === "lease re-acquired"), "host 1 never lost its lease");
    await c.waitConverged();
    assert.deepEqual(await pingFailures(c.lab, c.pods), [], "pods reach each other after the heal");
    return { leaseTtlMs: PARTITION_LEASE_TTL_MS, cutMs, renewalsWhileCut };
  } finally {
    await c.close();
  }
}
