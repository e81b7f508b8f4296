/**
 * One udp-backend host for tests and benchmarks, run inside a network
 * namespace (`ip netns exec <ns> deno run -A test/bench/udp_host.ts '<json>'`,
 * or the same with `bun`): registers the real udp backend (TUN, rtnetlink
 * datapath, engine Worker) with a fixed lease, routes to the given peers,
 * and answers commands on stdin with JSON lines on stdout.
 *
 * Argument (JSON): `{ network, subnet, publicIP, peers: [{ subnet, publicIP }],
 * port?, mtu?, mode? }`.
 *
 * stdin commands: `stats` → `{"event":"stats","counters":{…},"cpuMs":n}`;
 * `peers <json array>` → re-sync peers; `stop` (or end of input) → exit.
 * Prints `{"event":"ready"}` once the engine runs.
 *
 * @module
 */

import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import process from "node:process";
import { existsSync, readFileSync } from "node:fs";
import { nullLogger } from "../../core/log.ts";
import { Registry } from "../../core/metrics.ts";
import { openNetlinkDatapath } from "../../datapath/netlink/datapath.ts";
import { type Clock, systemClock } from "../../core/clock.ts";
import { waitFor } from "../../testing/wait.ts";
import { parseNetworkConfig } from "../../lease/config.ts";
import { parseIPv4Net } from "../../core/ip.ts";
import type { Lease } from "../../lease/types.ts";
import { kernelUdpIo, udpBackend } from "../../backends/udp/backend.ts";
import type { SocketIoMode } from "../../backends/udp/io.ts";
import { DROP_REASONS } from "../../backends/udp/packet.ts";
import type { UdpCounters } from "../../backends/udp/loop.ts";
import { execPath } from "../../core/runtime.ts";

/** The host's configuration (the JSON argument). */
export interface UdpHostConfig {
  readonly network: string;
  readonly subnet: string;
  readonly publicIP: string;
  readonly peers: readonly { readonly subnet: string; readonly publicIP: string }[];
  readonly port?: number;
  readonly mtu?: number;
  readonly extMtu?: number;
  readonly mode?: SocketIoMode;
  /** TUN and socket offloads (default true). */
  readonly offload?: boolean;
}

function peerLeases(peers: UdpHostConfig["peers"]): Lease[] {
  return peers.map((p) => ({
    subnet: parseIPv4Net(p.subnet),
    attrs: { publicIP: p.publicIP },
    expiration: null,
  }));
}

/** CPU time (user + system) of this process in ms, from /proc. */
function cpuMs(): number {
  const fields = readFileSync("/proc/self/stat", "utf8").split(") ")[1].split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/** How often the backend copies the engine's counters into the metrics registry. */
const METRICS_INTERVAL_MS = 100;

/**
 * The real clock, counting the backend's metrics sleeps: it copies the
 * counters just before starting each, so once one has started after a
 * moment, the registry holds every packet counted until that moment.
 */
function countingClock(): { clock: Clock; metricsSleeps: () => number } {
  let n = 0;
  return {
    clock: {
      now: systemClock.now,
      sleep(ms, signal) {
        if (ms === METRICS_INTERVAL_MS) n++;
        return systemClock.sleep(ms, signal);
      },
    },
    metricsSleeps: () => n,
  };
}

async function main(arg: string): Promise<void> {
  const cfg = JSON.parse(arg) as UdpHostConfig;
  const backend: Record<string, unknown> = { Type: "udp" };
  if (cfg.port) backend.Port = cfg.port;
  if (cfg.mtu) backend.MTU = cfg.mtu;
  const config = parseNetworkConfig(JSON.stringify({ Network: cfg.network, Backend: backend }));
  const datapath = await openNetlinkDatapath();
  const metrics = new Registry();
  const stop = new AbortController();
  const { clock, metricsSleeps } = countingClock();
  const network = await udpBackend({
    datapath,
    io: kernelUdpIo({ mode: cfg.mode, offload: cfg.offload }),
    metricsIntervalMs: METRICS_INTERVAL_MS,
  }).register({
    config,
    extIface: {
      name: "eth0",
      index: 0,
      mtu: cfg.extMtu ?? 1500,
      ifaceAddr: cfg.publicIP,
      extAddr: cfg.publicIP,
    },
    acquire: (attrs) =>
      Promise.resolve({ subnet: parseIPv4Net(cfg.subnet), attrs, expiration: null }),
    logger: nullLogger,
    metrics,
    clock,
    signal: stop.signal,
  });
  await network.syncPeers(peerLeases(cfg.peers));
  const running = network.run(stop.signal);
  await waitFor("the udp engine runs", () => network.notReadyReason?.() ?? null, 20_000, 10);
  const say = (o: unknown) => process.stdout.write(JSON.stringify(o) + "\n");
  say({ event: "ready", pid: process.pid });

  const packets = metrics.counter("weft_udp_packets_total", "");
  const bytes = metrics.counter("weft_udp_bytes_total", "");
  const dropped = metrics.counter("weft_udp_dropped_packets_total", "");
  const icmp = metrics.counter("weft_udp_icmp_unreachable_total", "");
  const rl = createInterface({ input: process.stdin });
  for await (const line of rl) {
    const [cmd, ...rest] = line.trim().split(" ");
    if (cmd === "stats") {
      const copies = metricsSleeps();
      await waitFor(
        "the backend copies the engine's counters into the registry",
        () =>
          metricsSleeps() > copies ? null : `${METRICS_INTERVAL_MS} ms metrics sleeps: ${copies}`,
        5000,
        5,
      );
      say({
        event: "stats",
        cpuMs: cpuMs(),
        counters: {
          packetsOut: packets.get({ direction: "out" }),
          packetsIn: packets.get({ direction: "in" }),
          bytesOut: bytes.get({ direction: "out" }),
          bytesIn: bytes.get({ direction: "in" }),
          icmpUnreachable: icmp.get(),
          dropped: Object.fromEntries(DROP_REASONS.map((r) => [r, dropped.get({ reason: r })])),
        },
      });
    } else if (cmd === "peers") {
      await network.syncPeers(peerLeases(JSON.parse(rest.join(" "))));
      say({ event: "peers" });
    } else if (cmd === "stop") {
      break;
    }
  }
  stop.abort();
  await running;
  datapath.close();
  say({ event: "stopped" });
  process.exit(0);
}

/** A running host process, as {@link spawnUdpHost} returns it. */
export interface UdpHostProcess {
  /** The runtime process id (inside the namespace; `ip netns exec` execs it). */
  readonly pid: number;
  /** The engine's counters (as exported to metrics) and the process CPU time. */
  stats(): Promise<{ counters: UdpCounters; cpuMs: number }>;
  /** Replace the peer set. */
  peers(peers: UdpHostConfig["peers"]): Promise<void>;
  /** Ask it to stop; kills it after `timeoutMs`. */
  stop(timeoutMs?: number): Promise<void>;
  /** Whether the process is still running. */
  readonly alive: boolean;
}

/**
 * Start a host process inside a namespace and wait until its engine runs.
 *
 * @param ns Network namespace.
 * @param runtime `deno` or `bun` (the binary next to the running one, or on PATH).
 * @param config The host's configuration.
 * @param timeoutMs How long to wait for it to be ready (default 20 s).
 * @returns The process handle.
 * @throws {Error} With its stderr when it exits or times out before it is ready.
 */
export async function spawnUdpHost(
  ns: string,
  runtime: "deno" | "bun",
  config: UdpHostConfig,
  timeoutMs = 20_000,
): Promise<UdpHostProcess> {
  const script = new URL(import.meta.url).pathname;
  const bin = runtimeBinary(runtime);
  const args = runtime === "deno" ? [bin, "run", "-A", script] : [bin, script];
  const child = spawn("ip", ["netns", "exec", ns, ...args, JSON.stringify(config)], {
    stdio: ["pipe", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr!.on("data", (d) => (stderr += d));
  const waiting: ((o: Record<string, unknown>) => void)[] = [];
  let exited = false;
  const exit = new Promise<void>((r) => child.on("exit", () => ((exited = true), r())));
  createInterface({ input: child.stdout! }).on("line", (line) => {
    let o: Record<string, unknown>;
    try {
      o = JSON.parse(line);
    } catch {
      return;
    }
    waiting.shift()?.(o);
  });
  const next = (what: string) =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      const t = setTimeout(
        () => reject(new Error(`udp host in ${ns} (${runtime}): no ${what}; stderr: ${stderr}`)),
        timeoutMs,
      );
      waiting.push((o) => (clearTimeout(t), resolve(o)));
      exit.then(() => {
        clearTimeout(t);
        reject(new Error(`udp host in ${ns} (${runtime}) exited; stderr: ${stderr}`));
      });
    });
  let ready: Record<string, unknown>;
  try {
    ready = await next("ready");
  } catch (e) {
    child.kill("SIGKILL");
    throw e;
  }
  const send = (line: string) => child.stdin!.write(line + "\n");
  return {
    pid: Number(ready.pid),
    get alive() {
      return !exited;
    },
    async stats() {
      const reply = next("stats");
      send("stats");
      const o = await reply;
      return { counters: o.counters as UdpCounters, cpuMs: Number(o.cpuMs) };
    },
    async peers(peers) {
      const reply = next("peers");
      send(`peers ${JSON.stringify(peers)}`);
      await reply;
    },
    async stop(stopTimeoutMs = 5000) {
      if (exited) return;
      send("stop");
      child.stdin!.end();
      const t = setTimeout(() => child.kill("SIGKILL"), stopTimeoutMs);
      await exit;
      clearTimeout(t);
    },
  };
}

/** The path of a runtime binary: the running one, else its sibling, else the name. */
function runtimeBinary(runtime: "deno" | "bun"): string {
  const self = execPath();
  const base = self.split("/").pop() ?? "";
  if (base.startsWith(runtime)) return self;
  for (
    const dir of [
      self.slice(0, self.lastIndexOf("/")),
      new URL("../../node_modules/.bin", import.meta.url).pathname,
    ]
  ) {
    const candidate = `${dir}/${runtime}`;
    if (existsSync(candidate)) return candidate;
  }
  return runtime;
}

if (import.meta.main) {
  main(process.argv[2] ?? "").catch((e) => {
    process.stderr.write(`udp_host: ${e?.stack ?? e}\n`);
    process.exit(1);
  });
}
