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
 * runs it for 5 (the figure).
 *
 * @module
 */

import assert from "node:assert/strict";
import * as path from "node:path";
import { type Cluster, type OverlayBackend, startCluster } from "./cluster.ts";
import { REPO_ROOT } from "./lab.ts";
import { type PingPairResult, since, startPingRing } from "./probes.ts";
import type { WriterReport } from "./lease_writer.ts";
import { execPath, runtimeName } from "../../core/runtime.ts";
import { waitFor } from "../../testing/wait.ts";

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

/** One agent's `weft_lease_events_total` by type, read from its /metrics. */
async function leaseEvents(c: Cluster, host: number): Promise<Record<string, number>> {
  const text = await c.lab.run(c.host(host).ns, [
    "curl",
    "-sS",
    "--fail",
    "--max-time",
    "10",
    `http://127.0.0.1:${STATUS_PORT}/metrics`,
  ]);
  const out: Record<string, number> = { added: 0, removed: 0, snapshot: 0 };
  for (const m of text.matchAll(/^weft_lease_events_total\{type="(\w+)"\} (\d+)/gm)) {
    out[m[1]] = Number(m[2]);
  }
  return out;
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
  const seed = options.seed ?? Date.now() % 100_000;
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
    const script = path.join(REPO_ROOT, "test/lab/lease_writer.ts");
    const args = [
      script,
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
      String(seed),
    ];
    const writer = c.lab.spawn(
      c.lab.underlay.ns,
      execPath(),
      runtimeName === "deno" ? ["run", "-A", ...args] : args,
      { cwd: REPO_ROOT },
    );
    const line = await writer.waitForOutput(/\{"msg":"done".*\}/, options.durationMs + 90_000);
    const doneAt = performance.now();
    const report = JSON.parse(line[0]) as WriterReport;
    assert.ok(report.eventsComplete, `the writer's own watch missed changes: ${line[0]}`);
    const total = Math.round((options.rate * options.durationMs) / 1000);
    assert.equal(report.ops, total, `the writer did ${report.ops} operations of ${total}`);
    // on a machine shared with other work etcd's fsync stalls now and then; below half the
    // rate the run says little about churn
    assert.ok(
      report.rate >= options.rate / 2,
      `the writer averaged ${report.rate} operations/s, under half of ${options.rate}: ${line[0]}`,
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
    await c.waitConverged(60_000).catch((e) => {
      throw new Error(`${(e as Error).message}\n${agentComplaints(c)}`, { cause: e });
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
