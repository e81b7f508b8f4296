/**
 * Lease churn against running agents: three agents (vxlan or host-gw, host
 * 2's under Bun) whose pods ping each other while test/lab/lease_writer.ts
 * adds, updates and removes peer leases in etcd at `rate` per second (a
 * fifth of the adds bound to etcd leases that expire by themselves). At the
 * end each host's kernel holds exactly the peer state the leases in etcd
 * call for — no leftover route, neighbour or fdb entry, none missing — and
 * each agent handled exactly as many lease events as etcd delivered (none
 * lost, none twice, no re-list); the real peers' pods lost no echo reply.
 *
 * CI runs {@link churn} for 2 minutes per backend; `deno task bench churn`
 * runs it for 5 (the figure). {@link compactionUnderLoad} runs the
 * same writer while compacting etcd's history and cutting hosts off it.
 * A failure names the writer's seed; `WEFT_CHURN_SEED=<seed>` repeats its
 * writes (their timing against the agents is another matter).
 *
 * @module
 */

import assert from "node:assert/strict";
import * as path from "node:path";
import process from "node:process";
import { type Cluster, type OverlayBackend, startCluster } from "./cluster.ts";
import { type LabProcess, REPO_ROOT } from "./lab.ts";
import { type PingPairResult, refuseFrom, since, startPingRing } from "./probes.ts";
import type { WriterReport } from "./lease_writer.ts";
import { execPath, runtimeName } from "../../core/runtime.ts";
import { hold, waitFor } from "../../testing/wait.ts";

/** Where the agents serve /metrics inside their host namespaces. */
const STATUS_PORT = 10256;

/** Options of {@link churn}. */
export interface ChurnOptions {
  readonly backend: Exclude<OverlayBackend, "udp">;
  /** How long the writer runs, ms. */
  readonly durationMs: number;
  /** Lease operations per second (the issue: 100). */
  readonly rate: number;
  /** Subnets the writer uses (default 100). */
  readonly pool?: number;
  /** Seed of the writer's choices (default: time based; printed in the figures). */
  readonly seed?: number;
}

/** Figures of {@link churn}. */
export interface ChurnFigures {
  readonly backend: string;
  readonly seed: number;
  /** What the writer did (operations, rate achieved, changes etcd delivered). */
  readonly writer: WriterReport;
  /** Lease events each agent handled during the churn, by host. */
  readonly agentEvents: Record<string, number>;
  /** From the writer's report (its last change seen on its own watch) to every agent having handled every change, ms. */
  readonly handledMs: number;
  /** From the writer's report to every host's kernel matching etcd (as read by `ip`), ms. */
  readonly convergedMs: number;
  /** Peer leases in etcd at the end (the writer's; the hosts' own excluded). */
  readonly peersAtEnd: number;
  readonly pings: readonly PingPairResult[];
}

/** GET a path of one agent's status API (from inside its host). */
function statusApi(c: Cluster, host: number, route: string): Promise<string> {
  return c.lab.run(c.host(host).ns, [
    "curl",
    "-sS",
    "--fail",
    "--max-time",
    "10",
    `http://127.0.0.1:${STATUS_PORT}${route}`,
  ]);
}

/** One agent's `weft_lease_events_total` by type, read from its /metrics. */
async function leaseEvents(c: Cluster, host: number): Promise<Record<string, number>> {
  const text = await statusApi(c, host, "/metrics");
  const out: Record<string, number> = { added: 0, removed: 0, snapshot: 0 };
  for (const m of text.matchAll(/^weft_lease_events_total\{type="(\w+)"\} (\d+)/gm)) {
    out[m[1]] = Number(m[2]);
  }
  return out;
}

/** Options of {@link startWriter}. */
interface WriterOptions {
  readonly backend: Exclude<OverlayBackend, "udp">;
  readonly durationMs: number;
  readonly rate: number;
  readonly pool?: number;
  readonly seed: number;
  /** Compact etcd's history this often, ms (default never). */
  readonly compactEveryMs?: number;
}

/** Start test/lab/lease_writer.ts in the lab's underlay; `done` resolves with its report. */
function startWriter(
  c: Cluster,
  options: WriterOptions,
): { process: LabProcess; done: Promise<{ report: WriterReport; line: string }> } {
  const args = [
    path.join(REPO_ROOT, "test/lab/lease_writer.ts"),
    "--endpoint",
    c.endpoint,
    "--rate",
    String(options.rate),
    "--duration-ms",
    String(options.durationMs),
    "--pool",
    String(options.pool ?? 100),
    "--backend",
    options.backend,
    "--seed",
    String(options.seed),
    "--compact-every-ms",
    String(options.compactEveryMs ?? 0),
  ];
  const writer = c.lab.spawn(
    c.lab.underlay.ns,
    execPath(),
    runtimeName === "deno" ? ["run", "-A", ...args] : args,
    { cwd: REPO_ROOT },
  );
  const done = writer.waitForOutput(/\{"msg":"done".*\}/, options.durationMs + 90_000)
    .then((m) => ({ report: JSON.parse(m[0]) as WriterReport, line: m[0] }));
  return { process: writer, done };
}

/** The writer's seed: `WEFT_CHURN_SEED` (to repeat a failed run's writes), else from the clock. */
function chosenSeed(): number {
  const given = Number(process.env.WEFT_CHURN_SEED);
  return Number.isSafeInteger(given) && given > 0 ? given : Date.now() % 100_000;
}

/**
 * Why the hosts did not converge, for a failure message: the seed, and for
 * each subnet the difference names, per agent, whether its status API lists
 * it as a peer and the log lines that mention it (peer added/removed) — so a
 * missed change shows in which layer it was lost (the store's events, the
 * peer set, or the datapath) — then the agents' warnings.
 */
async function notConverged(c: Cluster, e: unknown, seed: number): Promise<Error> {
  const message = (e as Error).message;
  const subnets = [
    ...new Set([...message.matchAll(/\b(\d+\.\d+\.\d+)\.0\/24\b/g)].map((m) => m[1])),
  ]
    .slice(0, 4);
  const lines = [message, `writer seed ${seed} (WEFT_CHURN_SEED=${seed} repeats the writes)`];
  for (const prefix of subnets) {
    const subnet = `${prefix}.0/24`;
    for (const [i, a] of c.agents) {
      const listed = await statusApi(c, i, "/v1/leases").then(
        (t) => t.includes(`"${subnet}"`) ? "lists it" : "does not list it",
        (err) => `status API failed: ${(err as Error).message}`,
      );
      const mentions = a.logs().filter((r) => JSON.stringify(r).includes(subnet)).slice(-6)
        .map((r) => `${r.ts} ${r.msg}`);
      lines.push(
        `${subnet} on host ${i}: the agent ${listed}; its log: ${
          mentions.length ? mentions.join(", ") : "never mentions it"
        }`,
      );
    }
  }
  lines.push(agentComplaints(c));
  return new Error(lines.join("\n"), { cause: e });
}

/** The warnings and errors the agents logged (the last 10 each), for a failure message. */
function agentComplaints(c: Cluster): string {
  return [...c.agents].map(([i, a]) => {
    const bad = a.logs().filter((r) => r.level === "warn" || r.level === "error").slice(-10);
    return `host ${i}'s agent: ${
      bad.length ? bad.map((r) => JSON.stringify(r)).join("\n  ") : "no warnings"
    }`;
  }).join("\n");
}

/**
 * Churn leases under three running agents and check the end state (see the
 * module doc).
 *
 * @param options Backend, duration, rate, pool, seed.
 * @returns The figures.
 * @throws {AssertionError} When the kernel differs from etcd, an event was
 *   lost or repeated, the rate was not reached, or a ping was lost.
 */
export async function churn(options: ChurnOptions): Promise<ChurnFigures> {
  const seed = options.seed ?? chosenSeed();
  const c = await startCluster({
    backend: options.backend,
    hosts: 3,
    podsPerHost: 1,
    prefix: "wrc",
    agentArgs: ["--healthz-port", String(STATUS_PORT)],
  });
  try {
    const hosts = [1, 2, 3];
    await c.waitConverged();
    const ring = await startPingRing(c.lab, c.pods);
    const before = await Promise.all(hosts.map((i) => leaseEvents(c, i)));
    const writer = startWriter(c, { ...options, seed });
    const { report, line } = await writer.done;
    const doneAt = performance.now();
    assert.ok(report.eventsComplete, `the writer's own watch missed changes: ${line}`);
    const total = Math.round((options.rate * options.durationMs) / 1000);
    assert.equal(report.ops, total, `the writer did ${report.ops} operations of ${total}`);
    // on a machine shared with other work etcd's fsync stalls now and then; below half the
    // rate the run says little about churn
    assert.ok(
      report.rate >= options.rate / 2,
      `the writer averaged ${report.rate} operations/s, under half of ${options.rate}: ${line}`,
    );
    const delivered = report.events.put + report.events.delete;
    const agentEvents: Record<string, number> = {};
    await waitFor(
      "every agent handled each change etcd delivered, once",
      async () => {
        const wrong: string[] = [];
        for (const [k, i] of hosts.entries()) {
          const now = await leaseEvents(c, i);
          const handled = now.added + now.removed - before[k].added - before[k].removed;
          agentEvents[`host ${i}`] = handled;
          if (now.snapshot !== before[k].snapshot) {
            wrong.push(`host ${i} re-listed ${now.snapshot - before[k].snapshot} times`);
          }
          if (handled !== delivered) wrong.push(`host ${i}: ${handled} events of ${delivered}`);
        }
        return wrong.length ? wrong.join("; ") : null;
      },
      60_000,
      50,
    );
    const handledMs = since(doneAt);
    await c.waitConverged(60_000).catch(async (e) => {
      throw await notConverged(c, e, seed);
    });
    const convergedMs = since(doneAt);
    const leases = await c.leases();
    const pings = await ring.stop();
    for (const p of pings) {
      assert.deepEqual(p.missing, [], `echo replies lost from ${p.from} to ${p.to}`);
    }
    return {
      backend: options.backend,
      seed,
      writer: report,
      agentEvents,
      handledMs,
      convergedMs,
      peersAtEnd: leases.length - hosts.length,
      pings,
    };
  } finally {
    await c.close();
  }
}

/** Figures of {@link compactionUnderLoad}. */
export interface CompactionFigures {
  readonly seed: number;
  readonly writer: WriterReport;
  /** Times each host's etcd connections were cut while the history moved on. */
  readonly cuts: Record<string, number>;
  /** Times each agent re-listed because its watch fell behind a compaction. */
  readonly relists: Record<string, number>;
  /** From the writer's report to every host's kernel matching etcd, ms. */
  readonly convergedMs: number;
  readonly pings: readonly PingPairResult[];
}

/** How long one host's connections to etcd stay refused: long enough for compactions to pass it. */
const CUT_MS = 1500;

/**
 * Compaction under load: the lease writer changes 100 leases per second and
 * compacts etcd's history every 500 ms, while each host in turn has its
 * connections to etcd reset and refused for {@link CUT_MS} — so its watch
 * resumes from a revision that is gone, and the agent must re-list. At the
 * end every host's kernel equals etcd's leases (no change missed), each
 * agent re-listed at least once, and no echo reply was lost.
 *
 * @param options How long the writer runs, ms.
 * @returns The figures.
 * @throws {AssertionError} When a change was missed or no re-list happened.
 */
export async function compactionUnderLoad(
  options: { durationMs: number; seed?: number },
): Promise<CompactionFigures> {
  const seed = options.seed ?? chosenSeed();
  const c = await startCluster({
    backend: "vxlan",
    hosts: 3,
    podsPerHost: 1,
    prefix: "wrp",
    agentArgs: ["--healthz-port", String(STATUS_PORT)],
  });
  try {
    const hosts = [1, 2, 3];
    await c.waitConverged();
    const ring = await startPingRing(c.lab, c.pods);
    const before = await Promise.all(hosts.map((i) => leaseEvents(c, i)));
    const writer = startWriter(c, {
      backend: "vxlan",
      durationMs: options.durationMs,
      rate: 100,
      seed,
      compactEveryMs: 500,
    });
    let finished = false;
    const done = writer.done.finally(() => (finished = true));
    const cuts: Record<string, number> = {};
    for (let round = 0; !finished; round++) {
      const i = hosts[round % hosts.length];
      const cut = await refuseFrom(c.lab, c.host(i).ns, c.lab.underlay.serviceIP, 2379);
      try {
        await hold(`host ${i} cannot reach etcd while the history moves on`, CUT_MS);
      } finally {
        await cut.heal();
      }
      cuts[`host ${i}`] = (cuts[`host ${i}`] ?? 0) + 1;
      await hold("the host catches up before the next cut", CUT_MS);
    }
    const { report } = await done;
    const doneAt = performance.now();
    assert.ok(report.compactions > 0, `etcd was never compacted: ${JSON.stringify(report)}`);
    await c.waitConverged(60_000).catch(async (e) => {
      throw await notConverged(c, e, seed);
    });
    const convergedMs = since(doneAt);
    const relists: Record<string, number> = {};
    for (const [k, i] of hosts.entries()) {
      relists[`host ${i}`] = (await leaseEvents(c, i)).snapshot - before[k].snapshot;
    }
    for (const i of hosts) {
      assert.ok(
        relists[`host ${i}`] >= 1,
        `host ${i}'s agent never re-listed, so no watch fell behind a compaction: ${
          JSON.stringify({ relists, cuts })
        }\n${agentComplaints(c)}`,
      );
    }
    const pings = await ring.stop();
    for (const p of pings) {
      assert.deepEqual(p.missing, [], `echo replies lost from ${p.from} to ${p.to}`);
    }
    return { seed, writer: report, cuts, relists, convergedMs, pings };
  } finally {
    await c.close();
  }
}
