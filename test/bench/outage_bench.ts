/**
 * What N agents cost an etcd that is down and then comes back
 * (`deno task bench outage-load`): N lease watches (test/bench/outage_watchers.ts,
 * each an agent's peer follower) in a lab host, etcd in the underlay killed
 * for 20 s and restarted on its data. Counted in the underlay's firewall:
 * connection attempts per second while etcd is down (each a refused SYN)
 * and HTTP requests after its return, every 100 ms, until all N watches
 * are back on etcd's side.
 *
 * @module
 */

import * as path from "node:path";
import { createLab, REPO_ROOT } from "../lab/lab.ts";
import { since, trafficBetween, trafficCounter } from "../lab/probes.ts";
import { startEtcd } from "../../testing/etcd_server.ts";
import { execPath, runtimeName } from "../../core/runtime.ts";
import { hold, waitFor } from "../../testing/wait.ts";

/** Figures of {@link benchOutageLoad}. */
export interface OutageLoadFigures {
  readonly watchers: number;
  readonly downMs: number;
  /** Connection attempts per watcher per second while etcd was down. */
  readonly connectionsPerWatcherPerSecond: number;
  /** Requests per watcher from etcd's restart until 3 s after it answered health checks. */
  readonly requestsPerWatcherAtRecovery: number;
  /** From the restart to etcd answering health checks, ms. */
  readonly etcdStartMs: number;
  /** From etcd answering health checks to all N watches open on etcd's side, ms (≤ 0: before). */
  readonly allBackMs: number;
  /** Most requests in one 100 ms slot, as a rate per second. */
  readonly peakRequestsPerSecond: number;
  /** Requests per 100 ms slot, from the first request after the restart. */
  readonly requestsPer100ms: number[];
}

/**
 * Measure N watches across a 20 s etcd outage.
 *
 * @param options Watchers and outage length.
 * @returns The figures.
 */
export async function benchOutageLoad(
  options: { watchers: number; downMs: number },
): Promise<OutageLoadFigures> {
  const lab = await createLab({ prefix: "wbo", hosts: 1 });
  const etcd = await startEtcd({ netns: lab.underlay.ns, host: lab.underlay.serviceIP });
  try {
    const endpoint = `http://${lab.underlay.serviceIP}:2379`;
    const host = lab.hosts[0];
    const script = path.join(REPO_ROOT, "test/bench/outage_watchers.ts");
    const args = [script, "--endpoint", endpoint, "--n", String(options.watchers)];
    lab.spawn(host.ns, execPath(), runtimeName === "deno" ? ["run", "-A", ...args] : args, {
      cwd: REPO_ROOT,
    });
    const allWatching = (what: string) =>
      waitFor(
        what,
        async () => {
          const n = await etcd.watchers().catch(() => 0);
          return n >= options.watchers ? null : `${n} of ${options.watchers}`;
        },
        60_000,
        100,
      );
    await allWatching("every watch open");
    const counter = await trafficCounter(lab, lab.underlay.ns, 2379, [host.ip]);
    await etcd.kill();
    const atKill = await counter.read();
    const killedAt = performance.now();
    await hold("etcd is down", options.downMs);
    const atRestart = await counter.read();
    const downMs = since(killedAt);
    // requests are counted from the restart on: etcd may serve before its health check says so
    const restartAt = performance.now();
    let backAt = 0;
    const restarting = etcd.restart().then(() => void (backAt = performance.now()));
    const slots: number[] = [];
    let last = atRestart;
    let allBackMs = -1;
    while (backAt === 0 || since(backAt) < 3000 || allBackMs < 0) {
      await hold("count the requests of the next 100 ms", 100);
      const now = await counter.read();
      slots.push(trafficBetween(now, last).all.requests);
      last = now;
      if (backAt && allBackMs < 0 && (await etcd.watchers().catch(() => 0)) >= options.watchers) {
        allBackMs = since(backAt);
      }
      if (since(restartAt) > 60_000) throw new Error("the watches did not all come back in 60 s");
    }
    await restarting;
    const firstRequest = slots.findIndex((x) => x > 0);
    const down = trafficBetween(atRestart, atKill).all;
    const recovery = trafficBetween(last, atRestart).all;
    const n = options.watchers;
    return {
      watchers: n,
      downMs,
      connectionsPerWatcherPerSecond: Math.round(down.connections / n / (downMs / 1000) * 100) /
        100,
      requestsPerWatcherAtRecovery: Math.round(recovery.requests / n * 100) / 100,
      etcdStartMs: Math.round(backAt - restartAt),
      allBackMs,
      peakRequestsPerSecond: Math.max(...slots) * 10,
      requestsPer100ms: slots.slice(Math.max(0, firstRequest)),
    };
  } finally {
    await etcd.close();
    await lab.teardown();
  }
}
