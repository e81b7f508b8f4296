/**
 * Where one lease event's CPU goes, at few and at many peers: the layers
 * of the agent measured one at a time, in this process (CPU time of the
 * whole process, all threads, less its idle rate), with the store writes
 * done by a child process (`scale_driver.ts`) so they are not counted.
 *
 * - `store`: the etcd store's watch (HTTP stream, JSON, decoding) consumed
 *   by a loop that does nothing else;
 * - `reducer`: the agent's pure reducer (`reducePeers`) on one-event
 *   batches over a peer set of that size (no I/O);
 * - `datapath`: the vxlan backend's `updatePeers` of one lease into a
 *   namespace holding every peer's entries (engine, plan, netlink writes,
 *   the echoes of its own writes), drift watching on;
 * - `agent`: the whole agent (`createAgent`, etcd store, vxlan over
 *   netlink in a namespace, JSON logs to /dev/null) following the same
 *   writes.
 *
 * The layers do not add up to the agent exactly (the agent also logs and
 * keeps metrics, and the processes share two cores with everything else),
 * but a layer whose cost grows with the peers shows here.
 *
 * Run alone: `deno run -A test/bench/event_cost.ts [events] [peers…]`.
 *
 * @module
 */

import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import process from "node:process";
import { createInterface } from "node:readline";
import { formatIPv4 } from "../../core/ip.ts";
import { createLogger, nullLogger } from "../../core/log.ts";
import { Registry } from "../../core/metrics.ts";
import { systemClock } from "../../core/clock.ts";
import { execPath, runtimeName } from "../../core/runtime.ts";
import { createEtcdLeaseStore } from "../../lease/etcd/store.ts";
import { encodeLeaseAttrs, type Lease } from "../../lease/types.ts";
import { leaseKey } from "../../lease/kv_store.ts";
import { parseNetworkConfig } from "../../lease/config.ts";
import { openNetlinkClient } from "../../datapath/netlink/client.ts";
import { openNetlinkDatapath } from "../../datapath/netlink/datapath.ts";
import { vxlanBackend } from "../../backends/routed/vxlan.ts";
import { createAgent } from "../../agent/agent.ts";
import { PeerSet, reducePeers } from "../../agent/peers.ts";
import { startEtcd } from "../../testing/etcd_server.ts";
import { createNetns, deleteNetns, sweepNetns } from "../../testing/netns.ts";
import { REPO_ROOT } from "../lab/lab.ts";
import type { DriverRequest, Step } from "./scale_driver.ts";
import { roundTo } from "./stats.ts";

/** CPU ms per event of each layer, at one peer count. */
export interface LayerCosts {
  readonly peers: number;
  readonly store: number;
  readonly reducer: number;
  readonly datapath: number;
  readonly agent: number;
}

/** Result of {@link benchEventCost}. */
export interface EventCostResult {
  /** Events per layer and size. */
  readonly events: number;
  readonly sizes: LayerCosts[];
}

const PREFIX = "/coreos.com/network";
const hex = (n: number) => n.toString(16).padStart(2, "0");

function lease(i: number): Lease {
  const mac = `02:00:00:${hex((i >> 16) & 255)}:${hex((i >> 8) & 255)}:${hex(i & 255)}`;
  return {
    subnet: { ip: (0x0a400000 + i * 256) >>> 0, prefixLen: 24 },
    attrs: {
      publicIP: formatIPv4((0xc6120000 + i) >>> 0),
      backendType: "vxlan",
      backendData: { VNI: 1, VtepMAC: mac },
    },
    expiration: null,
  };
}

const record = (i: number): [string, string] => [
  `${PREFIX}/subnets/${leaseKey(lease(i))}`,
  encodeLeaseAttrs(lease(i).attrs),
];

const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

/**
 * CPU per event of `work`, less the process's idle rate over the same time:
 * one unmeasured warm-up round (the JIT), then the least of `rounds`
 * (the rounds least disturbed by the rest of the machine).
 */
async function costPerEvent(
  events: number,
  work: (round: number) => Promise<void>,
  rounds = 3,
): Promise<number> {
  await work(0);
  let best = Infinity;
  for (let round = 1; round <= rounds; round++) {
    const i0 = cpuMs();
    const w0 = performance.now();
    await new Promise((r) => setTimeout(r, 500));
    const idle = (cpuMs() - i0) / (performance.now() - w0);
    const c0 = cpuMs();
    const t0 = performance.now();
    await work(round);
    best = Math.min(best, (cpuMs() - c0 - idle * (performance.now() - t0)) / events);
  }
  return roundTo(best, 3);
}

/** The writer child, in this namespace. */
function driver() {
  const entry = path.join(REPO_ROOT, "test/bench/scale_driver.ts");
  const child = spawn(execPath(), runtimeName === "deno" ? ["run", "-A", entry] : [entry], {
    cwd: REPO_ROOT,
    stdio: ["pipe", "pipe", "inherit"],
  });
  const pending = new Map<number, (r: Record<string, unknown>) => void>();
  let next = 1;
  let ready: () => void;
  const started = new Promise<void>((r) => (ready = r));
  createInterface({ input: child.stdout! }).on("line", (line) => {
    const msg = JSON.parse(line);
    if (msg.ready) return ready();
    pending.get(msg.id)?.(msg);
  });
  return {
    async send(c: DriverRequest) {
      await started;
      const id = next++;
      const reply = new Promise<Record<string, unknown>>((r) => pending.set(id, r));
      child.stdin!.write(JSON.stringify({ id, ...c }) + "\n");
      const r = await reply;
      if (r.error) throw new Error(`driver: ${r.error}`);
      return r;
    },
    close: () => child.stdin!.end(),
  };
}

/** Steps adding lease `from + j` and removing it again `live` steps later (2·adds steps). */
function churnSteps(endpoint: string, from: number, adds: number, live: number): Step[] {
  const steps: Step[] = [];
  for (let j = 0; j < adds + live; j++) {
    if (j < adds) {
      steps.push({
        kind: "etcd-put",
        endpoint,
        key: record(from + j)[0],
        value: record(from + j)[1],
      });
    }
    if (j >= live) steps.push({ kind: "etcd-delete", endpoint, key: record(from + j - live)[0] });
  }
  return steps;
}

async function until(
  what: string,
  done: () => boolean,
  timeoutMs = 60_000,
  state: () => unknown = () => "",
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > deadline) {
      throw new Error(
        `event cost: ${what} did not happen in ${timeoutMs} ms: ${JSON.stringify(state())}`,
      );
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

const CONFIG = '{"Network":"10.0.0.0/8","SubnetLen":24,"Backend":{"Type":"vxlan"}}';

async function oneSize(n: number, events: number, rate: number): Promise<LayerCosts> {
  const etcd = await startEtcd({ inMemory: true });
  const d = driver();
  const ns = createNetns("wec", "n");
  const client = await openNetlinkClient({ netns: ns });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "weft-event-cost-"));
  try {
    await etcd.etcdctl(["put", `${PREFIX}/config`, CONFIG]);
    await d.send({
      op: "fill",
      endpoint: etcd.endpoint,
      records: Array.from({ length: n }, (_, i) => record(i)),
    });
    const adds = events / 2;
    const churn = (from: number) =>
      d.send({
        op: "churn",
        steps: churnSteps(etcd.endpoint, from, adds, 10),
        rate,
        seconds: events / rate,
      });

    // store: the watch alone
    const store = createEtcdLeaseStore({ endpoints: [etcd.endpoint] });
    const snap = await store.list(undefined, { exactExpiry: false });
    const ac = new AbortController();
    let seen = 0;
    const reading = (async () => {
      for await (const batch of store.watch(snap.revision, ac.signal)) seen += batch.length;
    })();
    const storeCost = await costPerEvent(events, async (round) => {
      await churn(20_000 + round * 1000);
      await until("the store watch delivering every write", () => seen >= events * (round + 1));
    });
    ac.abort();
    await reading;
    await store.close();

    // reducer: one-event batches over n peers
    const own = { subnet: { ip: 0x0a000100, prefixLen: 24 }, attrs: { publicIP: "192.0.2.1" } };
    let peers = PeerSet.of(
      Array.from({ length: n }, (_, i) => [leaseKey(lease(i)), lease(i)] as const),
    );
    const reducerCost = await costPerEvent(events * 100, () => {
      for (let k = 0; k < events * 100; k++) {
        const l = lease(25_000 + (k % 1000));
        peers = reducePeers(peers, own, [{ type: k % 2 ? "removed" : "added", lease: l }]).peers;
      }
      return Promise.resolve();
    });

    // datapath: the vxlan network's updatePeers
    const eth = await client.createBridge({ name: "eth0", mtu: 1500, up: true });
    await client.addAddresses([{ index: eth.index, ip: 0xc0000201, prefixLen: 24 }]);
    const extIface = {
      name: "eth0",
      index: eth.index,
      mtu: 1500,
      ifaceAddr: "192.0.2.1",
      extAddr: "192.0.2.1",
    };
    const dp = await openNetlinkDatapath({ netns: ns });
    const network = await vxlanBackend({ datapath: dp }).register({
      config: parseNetworkConfig(CONFIG),
      extIface,
      acquire: (attrs) => Promise.resolve({ subnet: own.subnet, attrs, expiration: null }),
      logger: nullLogger,
      metrics: new Registry(),
      clock: systemClock,
      signal: new AbortController().signal,
    });
    await network.syncPeers(Array.from({ length: n }, (_, i) => lease(i)));
    const running = new AbortController();
    const run = network.run(running.signal);
    const datapathCost = await costPerEvent(events, async (round) => {
      for (let k = 0; k < events / 2; k++) {
        const l = lease(30_000 + round * 1000 + k);
        await network.updatePeers!([{ type: "added", lease: l }]);
        await network.updatePeers!([{ type: "removed", lease: l }]);
      }
    });
    running.abort();
    await run;
    dp.close();
    await client.deleteLink((await client.getLink("flannel.1"))!.index);

    // agent: everything, following the same kind of writes
    const log = fs.openSync("/dev/null", "w");
    const dp2 = await openNetlinkDatapath({ netns: ns });
    const agentStore = createEtcdLeaseStore({ endpoints: [etcd.endpoint] });
    const agent = createAgent({
      store: agentStore,
      backends: { vxlan: () => vxlanBackend({ datapath: dp2 }) },
      extIface,
      subnetFile: path.join(dir, "subnet.env"),
      ipMasq: false,
      logger: createLogger({
        format: "json",
        write: (line) => {
          fs.writeSync(log, line + "\n");
          if (/warn|error/.test(line.slice(0, 60))) console.error(line);
        },
      }),
      metrics: new Registry(),
    });
    const stop = new AbortController();
    const agentRun = agent.run(stop.signal);
    await until(
      "the agent ready with every peer",
      () => agent.status().ready && agent.status().peers.length === n,
      60_000,
      () => ({ ...agent.status(), config: undefined, peers: agent.status().peers.length }),
    );
    const synced = () => client.listRoutes().then((r) => r.length);
    const before = await synced();
    let routesNow = 0;
    const agentCost = await costPerEvent(events, async (round) => {
      await churn(40_000 + round * 1000);
      const deadline = Date.now() + 60_000;
      while ((routesNow = await synced()) !== before && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
      }
    });
    stop.abort();
    await agentRun;
    dp2.close();
    await agentStore.close();
    fs.closeSync(log);
    if (routesNow !== before) throw new Error(`the agent left ${routesNow} routes, not ${before}`);
    return {
      peers: n,
      store: storeCost,
      reducer: reducerCost,
      datapath: datapathCost,
      agent: agentCost,
    };
  } finally {
    d.close();
    client.close();
    deleteNetns(ns);
    await etcd.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * CPU per lease event of each layer at each peer count.
 *
 * @param options `events` per layer (default 400), `peers` (default [10, 5000]),
 *   `rate` of the store writes per second (default 50).
 * @returns The costs.
 * @throws {Error} When a layer does not see every event.
 */
export async function benchEventCost(
  options: { events?: number; peers?: readonly number[]; rate?: number } = {},
): Promise<EventCostResult> {
  const events = options.events ?? 400;
  sweepNetns("wec");
  const sizes: LayerCosts[] = [];
  for (const n of options.peers ?? [10, 5000]) {
    sizes.push(await oneSize(n, events, options.rate ?? 50));
  }
  return { events, sizes };
}

if (import.meta.main) {
  const [events, ...peers] = process.argv.slice(2).map(Number);
  console.log(JSON.stringify(
    await benchEventCost({ events: events || undefined, peers: peers.length ? peers : undefined }),
  ));
  process.exit(0);
}
