/**
 * What the scale benchmark (`scale_bench.ts`) reads from the kernel and
 * from /proc, and the kernel's own floor it compares the agent with:
 *
 * - {@link KernelMonitor}: `ip -ts monitor route neigh` in a host
 *   namespace; every route, neighbour and fdb notification with the time
 *   `ip` read it (wall clock, µs), so a store write stamped by the driver
 *   can be matched with the kernel entry it caused.
 * - {@link processCpuMs} (utime + stime from `/proc/<pid>/stat`, all
 *   threads, 10 ms ticks), {@link threadsCpuNs} (the sum of
 *   `/proc/<pid>/task/<tid>/schedstat`: the same time in ns, for per-event
 *   medians), {@link rssMB} (`VmRSS`).
 * - {@link benchKernelFloor}: the same vxlan entries for N peers (neighbour,
 *   fdb entry, route each) written straight through weft's netlink client
 *   into a fresh namespace: one batched call per kind, nothing else — no
 *   dump, no plan, no event subscription.
 *
 * @module
 */

import { spawn, spawnSync } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import process from "node:process";
import { openNetlinkClient } from "../../datapath/netlink/client.ts";
import type { FdbEntry, Neighbour, Route } from "../../datapath/netlink/kernel.ts";
import { createNetns, deleteNetns, sweepNetns } from "../../testing/netns.ts";
import { median, roundTo } from "./stats.ts";

/** Clock ticks per second of /proc/<pid>/stat (`getconf CLK_TCK`; 100 on Linux). */
const CLK_TCK = 100;

/**
 * CPU time (user + system) of a process and all its threads so far, from
 * `/proc/<pid>/stat`.
 *
 * @param pid The process.
 * @returns Milliseconds (10 ms resolution).
 * @throws {Error} When the process is gone.
 */
export function processCpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // fields from 3 (state) on: utime is field 14, stime 15
  return ((Number(fields[14 - 3]) + Number(fields[15 - 3])) * 1000) / CLK_TCK;
}

/**
 * CPU time of all threads of a process so far, in ns (the scheduler's own
 * accounting, `/proc/<pid>/task/<tid>/schedstat`). Threads that ended are
 * not counted, so compare only short intervals.
 *
 * @param pid The process.
 * @returns Nanoseconds.
 */
export function threadsCpuNs(pid: number): number {
  let sum = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      sum += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[0]);
    } catch {
      // the thread ended meanwhile
    }
  }
  return sum;
}

/**
 * Resident set size of a process.
 *
 * @param pid The process.
 * @returns MB (10^6 bytes).
 */
export function rssMB(pid: number): number {
  const m = readFileSync(`/proc/${pid}/status`, "utf8").match(/^VmRSS:\s+(\d+) kB/m);
  return m ? (Number(m[1]) * 1024) / 1e6 : NaN;
}

/** One notification as `ip -ts monitor` printed it. */
export interface KernelNote {
  /** Wall-clock ms (µs resolution) when `ip` read it. */
  readonly t: number;
  readonly deleted: boolean;
  /**
   * `route 10.64.0.0/24`, or `neigh <ip>` for neighbours (their IP) and fdb
   * entries (their remote) alike: a deleted neighbour is printed without
   * its MAC.
   */
  readonly key: string;
}

/**
 * Parse one line of `TZ=UTC ip -ts monitor route neigh`.
 *
 * @param line e.g. `[2026-11-30T02:16:43.035544] 10.5.1.0/24 via 10.5.1.0 dev flannel.1 onlink`.
 * @returns The note, or null for other lines.
 */
export function parseMonitorLine(line: string): KernelNote | null {
  const m = line.match(/^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?\] (Deleted )?(\S+) (.*)$/);
  if (!m) return null;
  const t = Date.parse(`${m[1]}Z`) + Number(m[2] ?? 0) * 1000;
  const deleted = m[3] !== undefined;
  if (m[4].includes("/")) return { t, deleted, key: `route ${m[4]}` };
  if (!/^\d+\.\d+\.\d+\.\d+$/.test(m[4]) || !m[5].startsWith("dev ")) return null;
  return { t, deleted, key: `neigh ${m[4]}` };
}

/** `ip -ts monitor route neigh` in a namespace, with waits on what it printed. */
export class KernelMonitor {
  readonly #child: ChildProcess;
  readonly #seen = new Map<string, number>();
  readonly #waiters = new Map<string, (t: number) => void>();
  #buffer = "";

  private constructor(child: ChildProcess) {
    this.#child = child;
    child.stdout!.setEncoding("utf8");
    child.stdout!.on("data", (chunk: string) => {
      this.#buffer += chunk;
      const lines = this.#buffer.split("\n");
      this.#buffer = lines.pop() ?? "";
      for (const line of lines) {
        const note = parseMonitorLine(line);
        if (!note) continue;
        const k = `${note.deleted ? "-" : "+"}${note.key}`;
        if (!this.#seen.has(k)) this.#seen.set(k, note.t);
        this.#waiters.get(k)?.(note.t);
        this.#waiters.delete(k);
      }
    });
  }

  /**
   * Start monitoring a namespace; resolves once `ip` reports a probe route
   * added after it started (so nothing later is missed).
   *
   * @param ns The namespace.
   * @returns The monitor; `close()` it.
   * @throws {Error} When the probe is not reported within 10 s.
   */
  static async open(ns: string): Promise<KernelMonitor> {
    const child = spawn("ip", ["-n", ns, "-ts", "monitor", "route", "neigh"], {
      env: { ...process.env, TZ: "UTC" },
      stdio: ["ignore", "pipe", "ignore"],
    });
    const m = new KernelMonitor(child);
    const probe = "198.18.255.0/24"; // outside every lease the bench writes
    const seen = m.when(`+route ${probe}`, 10_000);
    const route = (op: string) => spawnSync("ip", ["-n", ns, "route", op, probe, "dev", "lo"]);
    for (let i = 0; i < 100 && !m.#seen.has(`+route ${probe}`); i++) {
      route("del"); // an identical replace is not notified: delete and add each time
      route("add");
      await Promise.race([seen, new Promise((r) => setTimeout(r, 100))]);
    }
    await seen;
    route("del");
    return m;
  }

  /**
   * When a notification was (or will be) printed.
   *
   * @param key `+` (added) or `-` (deleted) and a {@link KernelNote} key.
   * @param timeoutMs How long to wait.
   * @returns Its wall-clock time.
   * @throws {Error} On timeout.
   */
  when(key: string, timeoutMs = 10_000): Promise<number> {
    const t = this.#seen.get(key);
    if (t !== undefined) return Promise.resolve(t);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters.delete(key);
        reject(new Error(`the kernel did not report ${key} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#waiters.set(key, (at) => {
        clearTimeout(timer);
        resolve(at);
      });
    });
  }

  /** The time of a notification already printed, if any. */
  seen(key: string): number | undefined {
    return this.#seen.get(key);
  }

  /** Forget what was printed (keeps memory flat over long runs). */
  clear(): void {
    this.#seen.clear();
  }

  close(): void {
    this.#child.kill("SIGTERM");
  }
}

/** Result of {@link benchKernelFloor}. */
export interface KernelFloorResult {
  readonly peers: number;
  /** Requests per round: a neighbour, an fdb entry and a route per peer. */
  readonly requests: number;
  readonly rounds: number;
  /** Median wall time of the three batched calls, ms. */
  readonly ms: number;
  /** Median CPU time of this process (user + system) during them, ms. */
  readonly cpuMs: number;
  /** Every round's wall time, ms. */
  readonly runs: number[];
}

const hex = (n: number) => n.toString(16).padStart(2, "0");

/**
 * The kernel's floor for programming N vxlan peers: in a fresh namespace
 * with `eth0` (a bridge, 192.0.2.1/24) and `flannel.1` (VNI 1, as weft
 * creates it), write each peer's neighbour, fdb entry and onlink route with
 * one batched `replace` call per kind, as the datapath's plan orders them.
 *
 * @param options `peers` (default 5000), `rounds` (default 3).
 * @returns Median time and CPU.
 * @throws {Error} When a request fails.
 */
export async function benchKernelFloor(
  options: { peers?: number; rounds?: number } = {},
): Promise<KernelFloorResult> {
  const n = options.peers ?? 5000;
  const rounds = options.rounds ?? 3;
  sweepNetns("wsf");
  const runs: number[] = [];
  const cpus: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const ns = createNetns("wsf", "floor");
    const c = await openNetlinkClient({ netns: ns });
    try {
      const eth = await c.createBridge({ name: "eth0", mtu: 1500, up: true });
      await c.addAddresses([{ index: eth.index, ip: 0xc0000201, prefixLen: 24 }]);
      const vx = await c.createVxlan({
        name: "flannel.1",
        vni: 1,
        port: 8472,
        local: 0xc0000201,
        link: eth.index,
        learning: false,
        gbp: false,
        mac: "02:42:00:00:00:01",
        mtu: 1450,
      });
      await c.setLink(vx.index, { up: true });
      await c.addAddresses([{ index: vx.index, ip: 0x0a000100, prefixLen: 32 }]);
      const neighbours: Neighbour[] = [];
      const fdb: FdbEntry[] = [];
      const routes: Route[] = [];
      for (let i = 0; i < n; i++) {
        const ip = (0x0a400000 + i * 256) >>> 0;
        const mac = `02:00:00:${hex((i >> 16) & 255)}:${hex((i >> 8) & 255)}:${hex(i & 255)}`;
        neighbours.push({ index: vx.index, ip, mac });
        fdb.push({ index: vx.index, mac, dst: (0xc6120000 + i) >>> 0 });
        routes.push({ dst: { ip, prefixLen: 24 }, gateway: ip, index: vx.index, onlink: true });
      }
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      const failed = [
        ...await c.settle("replaceNeighbours", neighbours),
        ...await c.settle("replaceFdb", fdb),
        ...await c.settle("replaceRoutes", routes),
      ].filter((e) => e !== null);
      runs.push(performance.now() - t0);
      const used = process.cpuUsage(c0);
      cpus.push((used.user + used.system) / 1000);
      if (failed.length > 0) {
        throw new Error(`${failed.length} floor requests failed; first: ${failed[0]!.message}`);
      }
    } finally {
      c.close();
      deleteNetns(ns);
    }
  }
  return {
    peers: n,
    requests: 3 * n,
    rounds,
    ms: roundTo(median(runs), 1),
    cpuMs: roundTo(median(cpus), 1),
    runs: runs.map((x) => roundTo(x, 1)),
  };
}
