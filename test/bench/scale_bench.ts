/**
 * Benchmark: one agent at cluster scale. A real agent (`mod.ts`, vxlan, the
 * real kernel) runs in a lab host against a store the bench fills with
 * thousands of peer leases (the peers need not exist as hosts):
 *
 * - etcd (a real etcd in the lab's underlay, data in memory so its fsync is
 *   not measured) with 5000 leases, each bound to its own etcd lease;
 * - Kubernetes (the fake API server in the underlay) with 5000 nodes;
 * - the file store with 1000 leases.
 *
 * Per store, phases on fresh hosts of one lab (one agent at a time): first
 * with {@link ScaleOptions.smallPeers} peers, then {@link ScaleOptions.starts}
 * agents with all of them (each after its own kernel floor, with
 * {@link ScaleOptions.kernelFloor}); the events run with the last.
 * Each phase times the agent from spawn to its first full sync done (its
 * log timestamps; the sync's own duration is in the log line), checks the
 * kernel holds every peer's entries, then writes one lease at a time and
 * removes it, each timed from just before the store write (stamped by the
 * writer in the underlay namespace) to the kernel's notification (`ip -ts
 * monitor` in the host: for an add the route, written last; for a removal
 * the last of route, neighbour and fdb entry to go), and samples the
 * agent's CPU (all threads) around every write. The large phase then runs
 * {@link ScaleOptions.rate} writes per second for
 * {@link ScaleOptions.seconds} (a lease added, one removed; each lives
 * 0.5 s) and reads the agent's CPU and RSS from /proc.
 *
 * The writes go through a driver process in the underlay namespace
 * (`scale_driver.ts`), except the file store's, written by this process.
 * Agents run with `--iptables-forward-rules=false`, so no rule keeper's
 * `iptables` children run beside them.
 *
 * Run alone: `deno run -A test/bench/scale_bench.ts [etcd|kube|file] …`;
 * environment: `WEFT_SCALE_RUNTIME=bun` (the agent's runtime; `binary`:
 * `dist/weft`, built by `deno task compile:bun`, with `BINARY_AGENT_ENV`),
 * `WEFT_SCALE_V8_FLAGS` (a Deno agent's V8 flags), `WEFT_SCALE_LOGS=/tmp/x`
 * (each phase's agent log, ms since spawn first, to /tmp/x-<host>.log),
 * `WEFT_SCALE_DEBUG=1` (the agent at --log-level debug), `WEFT_SCALE_STARTS=1`
 * (starts with all peers; default 3).
 *
 * @module
 */

import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import process from "node:process";
import { createInterface } from "node:readline";
import { formatIPv4, formatIPv4Net } from "../../core/ip.ts";
import { encodeLeaseAttrs } from "../../lease/types.ts";
import { createFileRegistry } from "../../lease/file_store.ts";
import { startEtcd } from "../../testing/etcd_server.ts";
import { type KubeControlCommand, startLabKube } from "../../testing/fake_kube_main.ts";
import {
  type AgentLogRecord,
  type AgentRuntime,
  BINARY_AGENT_ENV,
  startAgent,
} from "../lab/agents.ts";
import { createLab, type Lab, type LabHost, REPO_ROOT } from "../lab/lab.ts";
import { execPath, runtimeName } from "../../core/runtime.ts";
import type { DriverRequest, Step } from "./scale_driver.ts";
import {
  benchKernelFloor,
  type KernelFloorResult,
  KernelMonitor,
  processCpuMs,
  rssMB,
  threadsCpuNs,
} from "./scale_kernel.ts";
import { median, percentile, roundTo } from "./stats.ts";
import { hold } from "../../testing/wait.ts";

/** Options of {@link benchScale}. */
export interface ScaleOptions {
  readonly store: "etcd" | "kube" | "file";
  /** Peers in the large phase (default 5000; the file store's goal is 1000). */
  readonly peers?: number;
  /** Peers in the small phase (default 10). */
  readonly smallPeers?: number;
  /**
   * Leases added and removed one at a time per phase (default 500: 1000
   * events). A p99 needs that many: of 100 it is the second slowest, so two
   * pauses of any kind (a major GC, the machine's own noise) decide it.
   */
  readonly events?: number;
  /**
   * Writes per second in the sustained run (default 100; the file store 10,
   * its goal in issue 14 — a write appends one line to the lease file in the
   * bench process).
   */
  readonly rate?: number;
  /** Length of the sustained run, s (default 20). */
  readonly seconds?: number;
  /** Runtime of the agent running `mod.ts` (default deno); ignored with `command`. */
  readonly runtime?: AgentRuntime;
  /** V8 flags for a Deno agent (`DENO_V8_FLAGS`), e.g. `--max-semi-space-size=1`. */
  readonly v8Flags?: string;
  /** Program and arguments that run weft instead, e.g. `["dist/weft"]` (the binary). */
  readonly command?: readonly string[];
  /** More environment for the agent, e.g. {@link BINARY_AGENT_ENV} for the binary. */
  readonly env?: Readonly<Record<string, string>>;
  /**
   * Measures the kernel's floor (`benchKernelFloor`) right before the large
   * phase's agent starts, so the sync is compared with a floor taken under
   * the same load of this noisy machine, not minutes earlier.
   */
  readonly kernelFloor?: () => Promise<KernelFloorResult>;
  /**
   * Agents started with all peers, one after another, each on a fresh lab
   * host (and each after its own kernel floor); the events run with the
   * last. The start-up figures are reported per start and as their median:
   * on this machine one start swings by half, and the kernel's own time for
   * the same writes by a third from one floor round to the next. Default 5.
   */
  readonly starts?: number;
}

/** One start of an agent with all peers. */
export interface StartFigures {
  /** Spawn → first full sync done, ms. */
  readonly startToSyncedMs: number;
  /** The sync, and the datapath's part of it (kernel programming), as the agent logged them, ms. */
  readonly syncMs: number;
  readonly syncWriteMs: number;
  /** The kernel floor taken just before this start, ms (with {@link ScaleOptions.kernelFloor}). */
  readonly floorMs?: number;
}

/** Figures of one-at-a-time lease events. */
export interface EventFigures {
  /** Peers the agent listed. */
  readonly peers: number;
  /** Agent RSS right after its first full sync, MB. */
  readonly rssAfterSyncMB: number;
  readonly events: number;
  /** Store write sent → route present, ms. */
  readonly addP50Ms: number;
  readonly addP99Ms: number;
  /** Store write sent → route, neighbour and fdb entry all gone, ms. */
  readonly removeP50Ms: number;
  readonly removeP99Ms: number;
  /** The slowest add and remove, ms. */
  readonly addMaxMs: number;
  readonly removeMaxMs: number;
  /**
   * The add latency split at the agent's "peer added" log line (ms
   * resolution): store write → the agent has the event (store commit, watch
   * delivery, decoding, reducer), and that line → route present (datapath).
   */
  readonly addStoreP50Ms: number;
  readonly addStoreP99Ms: number;
  readonly addDatapathP50Ms: number;
  readonly addDatapathP99Ms: number;
  /** Agent CPU (all threads, schedstat ns) from one write to the next, median, ms. */
  readonly cpuPerEventMs: number;
  /** Agent CPU over all events from /proc/<pid>/stat, less its idle rate, per event, ms. */
  readonly cpuPerEventMeanMs: number;
}

/** What the sustained run measured. */
export interface SustainedFigures {
  /** Writes per second asked, and done. */
  readonly rate: number;
  readonly achievedRate: number;
  readonly seconds: number;
  /** Agent CPU over the run, % of one core (/proc/<pid>/stat). */
  readonly cpuPercent: number;
  /** Agent RSS: highest sample (every 250 ms) and at the end, MB. */
  readonly rssMaxMB: number;
  readonly rssEndMB: number;
  /** Leases added whose route appeared, of those added. */
  readonly routesSeen: number;
  readonly added: number;
  /** Store write sent → route present under that load, ms. */
  readonly addP50Ms: number;
  readonly addP99Ms: number;
}

/** Result of {@link benchScale}. */
export interface ScaleResult {
  readonly store: string;
  /** Spawn → first full sync done with all peers in the kernel (log timestamps), ms. */
  readonly startToSyncedMs: number;
  /** Spawn → the agent's log lines: first line, "ready" (lease, subnet.env), "peers listed". */
  readonly firstLogMs: number;
  readonly readyMs: number;
  readonly listedMs: number;
  /** The first full sync as the agent timed it (entries, dumps, plan, writes, events), ms. */
  readonly syncMs: number;
  /** The agent's CPU (all threads) during that sync, as it logged it, ms. */
  readonly syncCpuMs: number;
  /**
   * Of the sync, the datapath's part (dumps, diff, the 15 000 writes), after
   * the entries were derived from the leases: wall and CPU ms.
   */
  readonly syncWriteMs: number;
  readonly syncWriteCpuMs: number;
  /** Kernel entries found after the sync (each should equal the peers). */
  readonly kernel: { routes: number; neighbours: number; fdb: number };
  /** Agent RSS right after the sync, MB. */
  readonly rssAfterSyncMB: number;
  /**
   * Agent CPU (all threads, /proc/<pid>/stat) from spawn to just after the
   * sync: runtime start, lease, list and the sync, ms. Unlike the wall
   * times it does not grow with the machine's load.
   */
  readonly cpuToSyncedMs: number;
  /** Agent CPU while idle at full size, % of one core. */
  readonly idleCpuPercent: number;
  readonly small: EventFigures;
  readonly large: EventFigures;
  readonly sustained: SustainedFigures;
  /** The kernel floor taken just before the last start (with {@link ScaleOptions.kernelFloor}). */
  readonly floor?: KernelFloorResult;
  /** Every start with all peers (the last one is the one the other figures come from). */
  readonly starts: StartFigures[];
}

const round = (x: number, digits = 2) => roundTo(x, digits);
const hex = (n: number) => n.toString(16).padStart(2, "0");
const NET_CONF = JSON.stringify({
  Network: "10.0.0.0/8",
  SubnetLen: 24,
  Backend: { Type: "vxlan" },
});
const ETCD_PREFIX = "/coreos.com/network";
const A = "flannel.alpha.coreos.com/";

/** Peer i: subnet 10.64.0.0/24 + i, public IP 198.18.0.0 + i, a VtepMAC of its own. */
function peer(i: number) {
  const subnet = { ip: (0x0a400000 + i * 256) >>> 0, prefixLen: 24 };
  const mac = `02:00:00:${hex((i >> 16) & 255)}:${hex((i >> 8) & 255)}:${hex(i & 255)}`;
  const publicIP = formatIPv4((0xc6120000 + i) >>> 0);
  return {
    subnet,
    cidr: formatIPv4Net(subnet),
    key: `${formatIPv4(subnet.ip)}-24`,
    ip: formatIPv4(subnet.ip),
    mac,
    publicIP,
    attrs: { publicIP, backendType: "vxlan", backendData: { VNI: 1, VtepMAC: mac } },
    node: `peer-${String(i).padStart(5, "0")}`,
  };
}

/** Event leases come from here on, so they never collide with the filled ones. */
const EVENT_BASE = 20_000;

// ---- the driver ------------------------------------------------------------

/** The writer process in the underlay namespace. */
class Driver {
  readonly #child;
  readonly #pending = new Map<number, (r: Record<string, unknown>) => void>();
  #next = 1;
  readonly ready: Promise<void>;

  constructor(ns: string) {
    const entry = path.join(REPO_ROOT, "test/bench/scale_driver.ts");
    const args = runtimeName === "deno" ? ["run", "-A", entry] : [entry];
    this.#child = spawn("ip", ["netns", "exec", ns, execPath(), ...args], {
      cwd: REPO_ROOT,
      stdio: ["pipe", "pipe", "inherit"],
    });
    let ready: () => void;
    this.ready = new Promise((r) => (ready = r));
    createInterface({ input: this.#child.stdout! }).on("line", (line) => {
      const msg = JSON.parse(line);
      if (msg.ready) return ready();
      this.#pending.get(msg.id)?.(msg);
      this.#pending.delete(msg.id);
    });
  }

  async send(command: DriverRequest): Promise<Record<string, unknown>> {
    await this.ready;
    const id = this.#next++;
    const reply = new Promise<Record<string, unknown>>((r) => this.#pending.set(id, r));
    this.#child.stdin!.write(JSON.stringify({ id, ...command }) + "\n");
    const r = await reply;
    if (r.error) throw new Error(`scale driver: ${command.op} failed: ${r.error}`);
    return r;
  }

  close(): void {
    this.#child.stdin!.end();
  }
}

// ---- the stores -----------------------------------------------------------

/** How the bench writes one store. */
interface StoreUnderTest {
  readonly name: string;
  /** Make peers [from, to) exist. */
  fill(from: number, to: number): Promise<void>;
  /** The agent's store flags and environment for a host. */
  agent(host: LabHost): { args: string[]; env?: Record<string, string> };
  /** The write that adds / removes peer i. */
  step(i: number, add: boolean): Step | (() => Promise<void>);
  close(): Promise<void>;
}

async function etcdStore(lab: Lab, driver: Driver): Promise<StoreUnderTest> {
  const etcd = await startEtcd({
    netns: lab.underlay.ns,
    host: lab.underlay.serviceIP,
    inMemory: true,
  });
  await etcd.etcdctl(["put", `${ETCD_PREFIX}/config`, NET_CONF]);
  const endpoint = `http://${lab.underlay.serviceIP}:2379`;
  const record = (i: number) => {
    const p = peer(i);
    return [`${ETCD_PREFIX}/subnets/${p.key}`, encodeLeaseAttrs(p.attrs)] as const;
  };
  return {
    name: "etcd",
    async fill(from, to) {
      const records = Array.from({ length: to - from }, (_, k) => record(from + k));
      await driver.send({ op: "fill", endpoint, records });
    },
    agent: () => ({ args: ["--etcd-endpoints", endpoint] }),
    step(i, add) {
      const [key, value] = record(i);
      return add
        ? { kind: "etcd-put", endpoint, key, value }
        : { kind: "etcd-delete", endpoint, key };
    },
    close: () => etcd.close(),
  };
}

async function kubeStore(lab: Lab, driver: Driver): Promise<StoreUnderTest> {
  const kube = await startLabKube(lab);
  const netConf = path.join(lab.dir, "net-conf.json");
  fs.writeFileSync(netConf, NET_CONF);
  const control = (await kube.process.waitForOutput(/"control":"([^"]+)"/))[1];
  const addNode = (i: number): KubeControlCommand => {
    const p = peer(i);
    return {
      op: "addNode",
      args: [p.node, {
        podCIDRs: [p.cidr],
        internalIP: p.publicIP,
        annotations: {
          [A + "kube-subnet-manager"]: "true",
          [A + "backend-type"]: "vxlan",
          [A + "backend-data"]: JSON.stringify(p.attrs.backendData),
          [A + "public-ip"]: p.publicIP,
        },
      }],
    };
  };
  for (const [k, h] of lab.hosts.entries()) {
    await kube.call("addNode", h.ns, { podCIDRs: [`10.0.${k + 1}.0/24`], internalIP: h.ip });
  }
  return {
    name: "kube",
    async fill(from, to) {
      for (let at = from; at < to; at += 500) {
        const commands = [];
        for (let i = at; i < Math.min(to, at + 500); i++) commands.push(addNode(i));
        await driver.send({ op: "step", step: { kind: "kube", control, commands } });
      }
    },
    agent: (host) => ({
      args: [
        "--kube-subnet-mgr",
        "--kubeconfig-file",
        kube.kubeconfig,
        "--net-config-path",
        netConf,
      ],
      env: { NODE_NAME: host.ns },
    }),
    step: (i, add) => ({
      kind: "kube",
      control,
      commands: [add ? addNode(i) : { op: "deleteNode", args: [peer(i).node] }],
    }),
    close: async () => void (await kube.stop()),
  };
}

function fileStore(lab: Lab): StoreUnderTest {
  const file = path.join(lab.dir, "leases.json");
  const netConf = path.join(lab.dir, "net-conf.json");
  fs.writeFileSync(netConf, NET_CONF);
  const registry = createFileRegistry({ path: file, configPath: netConf });
  const ttl = 24 * 3600_000;
  return {
    name: "file",
    async fill(from, to) {
      for (let i = from; i < to; i++) {
        await registry.put(peer(i).key, encodeLeaseAttrs(peer(i).attrs), ttl);
      }
    },
    agent: () => ({ args: ["--lease-file", file, "--net-config-path", netConf] }),
    step: (i, add) => async () => {
      if (add) await registry.put(peer(i).key, encodeLeaseAttrs(peer(i).attrs), ttl);
      else await registry.delete(peer(i).key);
    },
    close: () => registry.close(),
  };
}

/** Do one write; returns its wall-clock start. */
async function write(driver: Driver, step: Step | (() => Promise<void>)): Promise<number> {
  if (typeof step === "function") {
    const t0 = performance.timeOrigin + performance.now();
    await step();
    return t0;
  }
  return (await driver.send({ op: "step", step })).t0 as number;
}

/** Writes at `rate` per second for `seconds`; returns each write's start. */
async function churn(
  driver: Driver,
  steps: readonly (Step | (() => Promise<void>))[],
  rate: number,
): Promise<{ t0s: number[]; seconds: number }> {
  if (steps.every((s) => typeof s !== "function")) {
    const r = await driver.send({
      op: "churn",
      steps: steps as Step[],
      rate,
      seconds: steps.length / rate,
    });
    return { t0s: r.times as number[], seconds: r.seconds as number };
  }
  const start = performance.timeOrigin + performance.now();
  const t0s: number[] = [];
  for (const [i, step] of steps.entries()) {
    const wait = start + (i * 1000) / rate - (performance.timeOrigin + performance.now());
    // a timer turn even when behind: the file store's writes are all but
    // synchronous, and the RSS sampler must still run
    await hold("the writer's pace", Math.max(0, wait));
    t0s.push(await write(driver, step));
  }
  return { t0s, seconds: (performance.timeOrigin + performance.now() - start) / 1000 };
}

// ---- one phase ---------------------------------------------------------------

async function countKernel(lab: Lab, ns: string) {
  const lines = async (cmd: string) =>
    (await lab.run(ns, cmd)).split("\n").filter((l) => l.trim() !== "");
  return {
    routes: (await lines("ip -4 route show dev flannel.1")).filter((l) => l.includes("via")).length,
    neighbours: (await lines("ip neigh show dev flannel.1 nud permanent")).length,
    fdb: (await lines("bridge fdb show dev flannel.1")).filter((l) => l.includes(" dst ")).length,
  };
}

const at = (r: AgentLogRecord) => Date.parse(r.ts);

/** Add and remove `events` leases one at a time; latencies and CPU per write. */
async function oneAtATime(
  store: StoreUnderTest,
  driver: Driver,
  monitor: KernelMonitor,
  agent: { pid: number; logs(): AgentLogRecord[] },
  events: number,
  from: number,
  peers: number,
): Promise<EventFigures> {
  const pid = agent.pid;
  const rssAfterSync = rssMB(pid);
  // idle rate first, so the per-event mean can leave it out
  const idle0 = processCpuMs(pid);
  const w0 = performance.now();
  await hold("an idle window to measure the agent's idle CPU", 2000);
  const idleRate = (processCpuMs(pid) - idle0) / (performance.now() - w0);
  const adds: number[] = [];
  const removes: number[] = [];
  const perWrite: number[] = [];
  /** Per added subnet: store write started, route present. */
  const addTimes = new Map<string, { sent: number; kernel: number }>();
  const cpu0 = processCpuMs(pid);
  const t0 = performance.now();
  let ns = threadsCpuNs(pid);
  const sample = () => {
    const now = threadsCpuNs(pid);
    perWrite.push((now - ns) / 1e6);
    ns = now;
  };
  for (let k = 0; k < events; k++) {
    const p = peer(from + k);
    const added = await write(driver, store.step(from + k, true));
    const routed = await monitor.when(`+route ${p.cidr}`);
    adds.push(routed - added);
    addTimes.set(p.cidr, { sent: added, kernel: routed });
    sample();
    const removed = await write(driver, store.step(from + k, false));
    const gone = await Promise.all([
      monitor.when(`-route ${p.cidr}`),
      monitor.when(`-neigh ${p.ip}`),
      monitor.when(`-neigh ${p.publicIP}`),
    ]);
    removes.push(Math.max(...gone) - removed);
    sample();
  }
  const wall = performance.now() - t0;
  const cpu = processCpuMs(pid) - cpu0 - idleRate * wall;
  const toAgent: number[] = [];
  const toKernel: number[] = [];
  for (const r of agent.logs()) {
    const t = r.msg === "peer added" ? addTimes.get(String(r.subnet)) : undefined;
    if (!t) continue;
    toAgent.push(at(r) - t.sent);
    toKernel.push(t.kernel - at(r));
  }
  const p = (xs: number[], q: number) => round(xs.length ? percentile(xs, q) : NaN);
  return {
    peers,
    rssAfterSyncMB: round(rssAfterSync, 1),
    events: 2 * events,
    addP50Ms: round(percentile(adds, 0.5)),
    addP99Ms: round(percentile(adds, 0.99)),
    removeP50Ms: round(percentile(removes, 0.5)),
    removeP99Ms: round(percentile(removes, 0.99)),
    addMaxMs: round(Math.max(...adds)),
    removeMaxMs: round(Math.max(...removes)),
    addStoreP50Ms: p(toAgent, 0.5),
    addStoreP99Ms: p(toAgent, 0.99),
    addDatapathP50Ms: p(toKernel, 0.5),
    addDatapathP99Ms: p(toKernel, 0.99),
    cpuPerEventMs: round(median(perWrite), 3),
    cpuPerEventMeanMs: round(cpu / (2 * events), 3),
  };
}

async function sustained(
  store: StoreUnderTest,
  driver: Driver,
  monitor: KernelMonitor,
  pid: number,
  rate: number,
  seconds: number,
  from: number,
): Promise<SustainedFigures> {
  // lease j is added at step 2j and removed at step 2(j + W) + 1: each lives W/rate·2 s
  const live = Math.max(1, Math.round(rate / 4));
  const adds = Math.round((rate * seconds) / 2);
  const steps: (Step | (() => Promise<void>))[] = [];
  const added: number[] = [];
  for (let j = 0; j < adds + live; j++) {
    if (j < adds) {
      steps.push(store.step(from + j, true));
      added.push(steps.length - 1);
    }
    if (j >= live) steps.push(store.step(from + j - live, false));
  }
  const rss: number[] = [];
  const sampler = setInterval(() => rss.push(rssMB(pid)), 250);
  const cpu0 = processCpuMs(pid);
  const w0 = performance.now();
  let run: { t0s: number[]; seconds: number };
  try {
    run = await churn(driver, steps, rate);
  } finally {
    clearInterval(sampler);
  }
  rss.push(rssMB(pid));
  const cpu = processCpuMs(pid) - cpu0;
  const wall = performance.now() - w0;
  const last = peer(from + adds - 1);
  await monitor.when(`-neigh ${last.publicIP}`, 30_000).catch(() => {});
  const lat: number[] = [];
  for (let j = 0; j < adds; j++) {
    const t = monitor.seen(`+route ${peer(from + j).cidr}`);
    if (t !== undefined) lat.push(t - run.t0s[added[j]]);
  }
  return {
    rate,
    achievedRate: round(steps.length / run.seconds, 1),
    seconds: round(run.seconds, 1),
    cpuPercent: round((cpu / wall) * 100, 1),
    rssMaxMB: round(Math.max(...rss), 1),
    rssEndMB: round(rssMB(pid), 1),
    routesSeen: lat.length,
    added: adds,
    addP50Ms: round(lat.length ? percentile(lat, 0.5) : NaN),
    addP99Ms: round(lat.length ? percentile(lat, 0.99) : NaN),
  };
}

/**
 * Run one store's scenario (see the module doc).
 *
 * @param options Store, sizes, rate.
 * @returns The figures.
 * @throws {Error} When an agent fails, or the kernel lacks entries after the sync.
 */
export async function benchScale(options: ScaleOptions): Promise<ScaleResult> {
  const n = options.peers ?? 5000;
  const small = options.smallPeers ?? 10;
  const events = options.events ?? 500;
  const rate = options.rate ?? (options.store === "file" ? 10 : 100);
  const seconds = options.seconds ?? 20;
  const startCount = Math.max(1, options.starts ?? 5);
  // host 0 for the small phase, then one fresh host per start with all peers
  const lab = await createLab({ prefix: "wsc", hosts: 1 + startCount });
  const driver = new Driver(lab.underlay.ns);
  let store: StoreUnderTest | undefined;
  try {
    store = options.store === "etcd"
      ? await etcdStore(lab, driver)
      : options.store === "kube"
      ? await kubeStore(lab, driver)
      : fileStore(lab);
    const s = store;
    const phase = async (
      host: LabHost,
      measure: (
        agent: { pid: number; logs(): AgentLogRecord[] },
        monitor: KernelMonitor,
      ) => Promise<void>,
    ) => {
      const { args, env } = s.agent(host);
      const spawned = Date.now();
      const agent = startAgent(lab, host, {
        runtime: options.runtime,
        command: options.command,
        args: [
          "--iface",
          "eth0",
          "--iptables-forward-rules=false",
          ...(process.env.WEFT_SCALE_DEBUG ? ["--log-level", "debug"] : []),
          ...args,
        ],
        env: {
          ...env,
          ...options.env,
          ...(options.v8Flags ? { DENO_V8_FLAGS: options.v8Flags } : {}),
        },
      });
      try {
        const synced = await agent.waitLog((r) => r.msg === "vxlan peers synced", 120_000);
        const monitor = await KernelMonitor.open(host.ns);
        try {
          await measure({ pid: agent.process.pid, logs: () => agent.logs() }, monitor);
        } finally {
          monitor.close();
        }
        const log = (msg: string) => agent.logs().find((r) => r.msg === msg);
        return { agent, spawned, synced, log };
      } finally {
        await agent.stop();
        if (process.env.WEFT_SCALE_LOGS) {
          fs.writeFileSync(
            `${process.env.WEFT_SCALE_LOGS}-${host.ns}.log`,
            agent.logs().map((r) => `${Date.parse(r.ts) - spawned} ${JSON.stringify(r)}`).join(
              "\n",
            ),
          );
        }
      }
    };

    await s.fill(0, small);
    let smallFigures: EventFigures | undefined;
    await phase(lab.hosts[0], async (agent, monitor) => {
      smallFigures = await oneAtATime(s, driver, monitor, agent, events, EVENT_BASE, small);
    });

    await s.fill(small, n);
    let large: EventFigures | undefined;
    let steady: SustainedFigures | undefined;
    let kernel = { routes: 0, neighbours: 0, fdb: 0 };
    let rssAfterSync = 0;
    let idleCpu = 0;
    const starts: StartFigures[] = [];
    const start = async (host: LabHost, measure: Parameters<typeof phase>[1]) => {
      const floor = await options.kernelFloor?.();
      const run = await phase(host, measure);
      starts.push({
        startToSyncedMs: at(run.synced) - run.spawned,
        syncMs: Number(run.synced.durationMs),
        syncWriteMs: Number(run.synced.targetMs),
        ...(floor ? { floorMs: floor.ms } : {}),
      });
      return { run, floor };
    };
    for (let i = 1; i < startCount; i++) await start(lab.hosts[i], async () => {});
    const host = lab.hosts[startCount];
    let cpuToSynced = 0;
    const { run: big, floor } = await start(host, async (agent, monitor) => {
      const pid = agent.pid;
      cpuToSynced = processCpuMs(pid);
      rssAfterSync = rssMB(pid);
      kernel = await countKernel(lab, host.ns);
      const c0 = processCpuMs(pid);
      const w0 = performance.now();
      await hold("an idle window to measure the agent's idle CPU", 3000);
      idleCpu = ((processCpuMs(pid) - c0) / (performance.now() - w0)) * 100;
      large = await oneAtATime(s, driver, monitor, agent, events, EVENT_BASE + events, n);
      steady = await sustained(s, driver, monitor, pid, rate, seconds, EVENT_BASE + 2 * events);
    });
    const listed = big.log("peers listed");
    const want = Number(big.synced.peers);
    if (kernel.routes < want || kernel.neighbours < want || kernel.fdb < want) {
      throw new Error(
        `after the sync of ${want} peers the kernel holds ${
          JSON.stringify(kernel)
        }: entries are missing`,
      );
    }
    return {
      store: s.name,
      startToSyncedMs: at(big.synced) - big.spawned,
      firstLogMs: at(big.agent.logs()[0]) - big.spawned,
      readyMs: at(big.log("ready")!) - big.spawned,
      listedMs: listed ? at(listed) - big.spawned : NaN,
      syncMs: Number(big.synced.durationMs),
      syncCpuMs: Number(big.synced.cpuMs),
      syncWriteMs: Number(big.synced.targetMs),
      syncWriteCpuMs: Number(big.synced.targetCpuMs),
      kernel,
      rssAfterSyncMB: round(rssAfterSync, 1),
      cpuToSyncedMs: cpuToSynced,
      idleCpuPercent: round(idleCpu, 1),
      small: smallFigures!,
      large: large!,
      sustained: steady!,
      ...(floor ? { floor } : {}),
      starts,
    };
  } finally {
    driver.close();
    await store?.close();
    await lab.teardown();
  }
}

if (import.meta.main) {
  const which = process.argv.slice(2);
  const form = process.env.WEFT_SCALE_RUNTIME;
  for (const store of ["etcd", "kube", "file"] as const) {
    if (which.length && !which.includes(store)) continue;
    const r = await benchScale({
      store,
      peers: store === "file" ? 1000 : 5000,
      ...(form === "binary"
        ? { command: [path.join(REPO_ROOT, "dist/weft")], env: BINARY_AGENT_ENV }
        : { runtime: form as AgentRuntime | undefined }),
      v8Flags: process.env.WEFT_SCALE_V8_FLAGS,
      ...(store === "file" ? {} : { kernelFloor: () => benchKernelFloor({ peers: 5000 }) }),
      ...(process.env.WEFT_SCALE_STARTS ? { starts: Number(process.env.WEFT_SCALE_STARTS) } : {}),
    });
    console.log(JSON.stringify(r, null, 2));
  }
}
