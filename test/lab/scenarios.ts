/**
 * The end-to-end scenarios every kernel backend must pass, written once and
 * run by `test/e2e_vxlan_test.ts` and `test/e2e_hostgw_test.ts` against
 * real agents (host 2's under Bun) and a real etcd in a lab:
 *
 * - {@link joinAndLeave}: three hosts, every pod pair pings; a fourth host
 *   joins and is reachable from all; its lease removed (agent killed), it
 *   disappears from every peer's routes (and vxlan's neighbours and fdb).
 * - {@link killAndRestart}: `kill -9` and restart of two agents (Deno and
 *   Bun) while a pod pings across hosts every 50 ms: no reply missing, same
 *   subnet, the device kept.
 * - {@link repairByHand}: kernel state deleted by hand (device, route,
 *   neighbour, fdb entry) is restored by the running agent (the time is
 *   measured by `deno task bench repair`).
 *
 * Every check reads kernel state (`ip -j`, `bridge -j`) or sends packets.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  type Cluster,
  type LeaseRow,
  networkAddress,
  type OverlayBackend,
  pingFailures,
  podsOf,
  readPeerState,
  startCluster,
} from "./cluster.ts";
import { hold, waitFor } from "../../testing/wait.ts";

/** How long each killed agent stays down in {@link killAndRestart}: part of the scenario. */
export const AGENT_DOWN_MS = 250;

/**
 * Three hosts converge and every pod pair pings; a fourth joins and is
 * reachable from all; its lease removed, it vanishes from every peer.
 *
 * @param backend The backend under test.
 * @throws {AssertionError} When a step fails.
 */
export async function joinAndLeave(backend: OverlayBackend): Promise<void> {
  const c = await startCluster({ backend, hosts: 4, podsPerHost: 2, start: 3 });
  try {
    assert.equal(c.agents.get(2)?.runtime, "bun", "host 2's agent runs under Bun");
    await c.waitConverged();
    assert.deepEqual(await pingFailures(c.lab, c.pods), [], "all pod pairs of hosts 1–3 ping");

    // a fourth host joins
    const s4 = await c.startAgent(4);
    await c.attach(4);
    await c.waitConverged();
    const touches4 = (a: { hostIndex: number }, b: { hostIndex: number }) =>
      a.hostIndex === 4 || b.hostIndex === 4;
    assert.deepEqual(
      await pingFailures(c.lab, c.pods, touches4),
      [],
      "host 4's pods reach and are reached by every pod",
    );

    // its lease is removed (agent stopped first, so it cannot take it again)
    const h4 = c.host(4);
    const lease4 = (await c.leases()).find((l) => l.subnet === s4)!;
    await c.agents.get(4)!.kill9();
    c.agents.delete(4);
    c.subnets.delete(4);
    await c.etcd.etcdctl(["del", c.leaseKey(s4)]);
    await c.waitConverged(10_000);
    for (const i of [1, 2, 3]) {
      const text = JSON.stringify(await readPeerState(c.lab, c.host(i).ns, backend));
      assert.ok(!text.includes(networkAddress(s4)), `host ${i} still routes ${s4}: ${text}`);
      assert.ok(!text.includes(h4.ip), `host ${i} still points at ${h4.ip}: ${text}`);
      if (lease4.vtepMAC) {
        assert.ok(!text.includes(lease4.vtepMAC), `host ${i} still knows ${lease4.vtepMAC}`);
      }
    }
    assert.deepEqual(
      await pingFailures(c.lab, c.pods, (a, b) => !touches4(a, b)),
      [],
      "the remaining pods still reach each other",
    );
  } finally {
    await c.close();
  }
}

/** Echo reply sequence numbers in ping's output. */
export function replySeqs(output: string): Set<number> {
  return new Set([...output.matchAll(/bytes from .*icmp_seq=(\d+)/g)].map((m) => Number(m[1])));
}

async function deviceIndex(c: Cluster, host: number): Promise<number | undefined> {
  if (c.backend !== "vxlan") return undefined;
  const [link] = JSON.parse(await c.lab.run(c.host(host).ns, "ip -j link show flannel.1"));
  return link.ifindex;
}

/**
 * Kill -9 and restart host 1's (Deno) and host 2's (Bun) agents while pod
 * h1p1 pings pod h2p1 every 50 ms: no echo reply may be missing, each agent
 * comes back with its subnet, and the vxlan device is kept.
 *
 * @param backend The backend under test.
 * @throws {AssertionError} When a reply is missing or a subnet changed.
 */
export async function killAndRestart(backend: OverlayBackend): Promise<void> {
  const c = await startCluster({ backend, hosts: 2, podsPerHost: 1 });
  try {
    await c.waitConverged();
    const [p1] = podsOf(c, 1);
    const [p2] = podsOf(c, 2);
    const devices = [await deviceIndex(c, 1), await deviceIndex(c, 2)];
    const ping = c.lab.spawn(p1.ns, "ping", ["-n", "-i", "0.05", p2.ip]);
    await ping.waitForOutput(/icmp_seq=3 /, 5000);
    for (const host of [1, 2]) {
      const agent = c.agents.get(host)!;
      const before = c.subnets.get(host);
      await agent.kill9();
      await hold(`no agent at all on host ${host}`, AGENT_DOWN_MS);
      const after = await c.startAgent(host, agent.runtime);
      assert.equal(after, before, `host ${host}'s agent (${agent.runtime}) kept its subnet`);
      await c.agents.get(host)!.waitLog((r) => r.msg === "peers listed");
    }
    await c.waitConverged();
    const seen = replySeqs(ping.stdout()).size;
    await waitFor(
      "10 more echo replies",
      () =>
        Promise.resolve(
          replySeqs(ping.stdout()).size >= seen + 10 ? null : ping.stdout().slice(-200),
        ),
    );
    ping.kill("SIGINT");
    await ping.exited;
    const seqs = replySeqs(ping.stdout());
    const last = Math.max(...seqs);
    const missing = Array.from({ length: last }, (_, i) => i + 1).filter((s) => !seqs.has(s));
    assert.ok(last >= 20, `only ${last} pings were sent across the restarts`);
    assert.deepEqual(missing, [], `echo replies missing out of ${last}:\n${ping.stdout()}`);
    assert.deepEqual(
      [await deviceIndex(c, 1), await deviceIndex(c, 2)],
      devices,
      "flannel.1 was kept, not recreated",
    );
  } finally {
    await c.close();
  }
}

/** One piece of kernel state deleted by hand. */
/** Kernel state deleted by hand on one host. */
export interface Tamper {
  readonly what: string;
  /** Host whose state is deleted (its agent repairs it). */
  readonly host: number;
  /** Commands run in that host. */
  readonly commands: (c: Cluster) => Promise<string[][]>;
}

async function leaseOf(c: Cluster, host: number) {
  const subnet = c.subnets.get(host)!;
  return (await c.leases()).find((l) => l.subnet === subnet)!;
}

/**
 * Do one tamper on its host and wait until the agent has repaired it: the
 * host's peer state equals `leases` again (and, for vxlan, flannel.1 holds
 * its address).
 *
 * @returns Milliseconds from the first command to the first check that saw the repair.
 * @throws {Error} When it is not repaired within `timeoutMs` (default 15 s), with the difference.
 */
export async function tamperAndWait(
  c: Cluster,
  t: Tamper,
  leases: readonly LeaseRow[],
  timeoutMs = 15_000,
): Promise<number> {
  const ns = c.host(t.host).ns;
  const commands = await t.commands(c);
  const start = performance.now();
  for (const cmd of commands) await c.lab.run(ns, cmd);
  await waitFor(
    `repair of ${t.what}`,
    async () => {
      const diff = await c.peerStateDiff(t.host, leases);
      if (diff || c.backend !== "vxlan") return diff;
      const own = networkAddress(c.subnets.get(t.host)!);
      const addr = await c.lab.exec(ns, "ip -o -4 addr show dev flannel.1");
      return addr.stdout.includes(`inet ${own}/32`) ? null : `flannel.1 lacks ${own}/32`;
    },
    timeoutMs,
    10,
  );
  return performance.now() - start;
}

/**
 * What {@link repairByHand} and the repair benchmark delete by hand: per
 * backend, routes, a neighbour, an fdb entry and the device, on different
 * hosts (host 2 runs Bun).
 */
export function tampers(backend: OverlayBackend): Tamper[] {
  const route = (host: number, peer: number): Tamper => ({
    what: `host ${host}: the route to host ${peer}'s subnet`,
    host,
    commands: (c) => Promise.resolve([["ip", "route", "del", c.subnets.get(peer)!]]),
  });
  if (backend === "host-gw") {
    return [route(1, 2), route(2, 3), {
      what: "host 3: every peer route",
      host: 3,
      commands: (c) =>
        Promise.resolve([1, 2].map((p) => ["ip", "route", "del", c.subnets.get(p)!])),
    }];
  }
  return [
    route(1, 2),
    {
      what: "host 2: the neighbour of host 3",
      host: 2,
      commands: async (c) => [[
        "ip",
        "neigh",
        "del",
        networkAddress((await leaseOf(c, 3)).subnet),
        "dev",
        "flannel.1",
      ]],
    },
    {
      what: "host 3: the fdb entry of host 1",
      host: 3,
      commands: async (c) => {
        const l = await leaseOf(c, 1);
        return [["bridge", "fdb", "del", l.vtepMAC!, "dev", "flannel.1", "dst", l.publicIP]];
      },
    },
    {
      what: "host 2: flannel.1 itself",
      host: 2,
      commands: () => Promise.resolve([["ip", "link", "del", "flannel.1"]]),
    },
    {
      what: "host 1: flannel.1 itself",
      host: 1,
      commands: () => Promise.resolve([["ip", "link", "del", "flannel.1"]]),
    },
  ];
}

/**
 * Delete kernel state by hand on hosts whose agents run (Deno and Bun) and
 * wait until each agent has put all of it back (up to 15 s each: the time is
 * returned and logged, not asserted — `deno task bench repair` measures it
 * against the 1 s goal). Pods reach each other afterwards.
 *
 * @param backend The backend under test.
 * @returns Repair times, ms, by what was deleted.
 * @throws {AssertionError} When a repair is missing.
 */
export async function repairByHand(backend: OverlayBackend): Promise<Record<string, number>> {
  const c = await startCluster({ backend, hosts: 3, podsPerHost: 1 });
  const times: Record<string, number> = {};
  try {
    await c.waitConverged();
    const leases = await c.leases();
    for (const t of tampers(backend)) times[t.what] = Math.round(await tamperAndWait(c, t, leases));
    assert.deepEqual(await pingFailures(c.lab, c.pods), [], "pods reach each other after repairs");
    return times;
  } finally {
    await c.close();
  }
}
