/**
 * The network-namespace lab: hosts, an underlay, pods and "the internet",
 * all built from network namespaces on this one machine. The e2e tests,
 * the demo and the benchmarks use it. Nothing touches the machine's own
 * namespace: every link, address, route, rule and sysctl lives inside a
 * namespace the lab created.
 *
 * ## Topology
 *
 * ```
 * underlay: "bridge" (default)                 underlay: "router"
 *
 *  <id>-u: br0 ─┬─ h1 ── eth0 <id>-h1 .11        <id>-u (router, ip_forward=1)
 *               ├─ h2 ── eth0 <id>-h2 .12          br0 192.0.2.1/24     ─ odd hosts
 *               ├─ …                               br1 198.51.100.1/24  ─ even hosts
 *               └─ inet ─ eth0 <id>-net .1         inet 203.0.113.254   ─ <id>-net
 *   192.0.2.0/24, hosts at 192.0.2.(10+i)         hosts at 192.0.2.(10+i) / 198.51.100.(10+i)
 * ```
 *
 * - Host i (1-based) is namespace `<id>-h<i>` with `eth0` (MTU `mtu`,
 *   default 1500), `lo` up, a default route via the segment gateway
 *   (`192.0.2.1` / `198.51.100.1`; in bridge mode that address answers only
 *   when the internet namespace exists — agents still find their default
 *   route interface), and `net.ipv4.ip_forward=1` unless
 *   `hostForwarding: false`.
 * - "router" puts odd hosts on 192.0.2.0/24 and even hosts on
 *   198.51.100.0/24, so hosts 1 and 2 are on different L2 segments
 *   (routed vxlan tests; host-gw needs hosts 1 and 3).
 * - `internet: true` adds `<id>-net`, holding 203.0.113.1 (`lab.internet.ip`),
 *   reachable from every host but with no route to any overlay network:
 *   a pod reaches it only when its traffic is masqueraded.
 * - Pods are namespaces `<id>-h<i>p<j>` with only `lo` up; wire them with
 *   {@link Lab.attachPods} (weft attach) or `test/lab/cni.ts` (CNI plugins).
 *
 * ## Helpers
 *
 * `lab.exec/run(ns, cmd)` run a command in a namespace; `lab.spawn(ns,
 * cmd, args)` starts a long-running one (an agent) in its own process group
 * with captured output and `waitForOutput(re)`; `lab.ping(fromNs, ip)`;
 * `lab.attachPods(host, subnetFile)`; `evalCommand(code)` + `REPO_ROOT`
 * run TypeScript with the current runtime (Deno or Bun) inside a
 * namespace, e.g. `lab.spawn(h.ns, cmd, args, { cwd: REPO_ROOT })`.
 * `netnsExec(ns)` (core/exec.ts) turns a namespace into an injectable
 * `Exec` for code that normally runs in the agent's own namespace.
 *
 * ## Names and cleanup
 *
 * `prefix` is the caller's own 2–4 letter prefix (`wlb`, …); each lab adds
 * 3 random characters, giving the lab id (e.g. `wlbk3x`), so labs of one
 * prefix can run side by side. All names stay ≤ 15 characters. A marker
 * `/run/weft-lab/<id>.json` records the creating process; `createLab`
 * first sweeps labs of the same prefix whose creator is dead (processes in
 * their namespaces killed, namespaces deleted). Call `teardown()` in
 * `finally` (or `await using lab = await createLab(…)`): it kills the
 * processes started with `spawn` (their whole process group), then any
 * process left in a lab namespace, then deletes the namespaces.
 *
 * @module
 */

import { spawn as spawnChild } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import process from "node:process";
import { type ExecResult, netnsExec, systemExec } from "../../core/exec.ts";
import { attachPod, type PodAttachment } from "../../cli/attach.ts";
import { execPath, runtimeName } from "../../core/runtime.ts";
import { processAlive } from "../../core/files.ts";

/** The repository root (for running code that imports weft's modules). */
export const REPO_ROOT: string = path.resolve(
  path.dirname(new URL(import.meta.url).pathname),
  "../..",
);

/**
 * A command line that runs TypeScript source with the current runtime
 * (`deno eval` / `bun -e`) from the repository root, so bare imports such as
 * `valibot` resolve. Run it with `cwd: REPO_ROOT`; pass data through the
 * environment.
 *
 * @param code Module source; import weft files by absolute file URL.
 * @returns Program and arguments.
 */
export function evalCommand(code: string): { cmd: string; args: string[] } {
  return runtimeName === "deno"
    ? { cmd: execPath(), args: ["eval", "--ext=ts", code] }
    : { cmd: execPath(), args: ["-e", code] };
}

/** Where lab markers live. */
export const MARKER_DIR = "/run/weft-lab";

/** Options of {@link createLab}. */
export interface LabOptions {
  /** Caller's own prefix: 2–4 lowercase letters or digits, starting with a letter. */
  readonly prefix: string;
  /** Number of hosts (1–99). */
  readonly hosts: number;
  /** Empty pod namespaces to create per host (0–99, default 0). */
  readonly podsPerHost?: number;
  /** `bridge` (one L2 segment, default) or `router` (two segments, routed). */
  readonly underlay?: "bridge" | "router";
  /** Add the "internet" namespace (203.0.113.1). */
  readonly internet?: boolean;
  /** Set net.ipv4.ip_forward=1 in every host (default true). */
  readonly hostForwarding?: boolean;
  /** Underlay MTU (default 1500). */
  readonly mtu?: number;
  /** Sweep dead labs of this prefix first (default true). */
  readonly sweep?: boolean;
}

/** A pod namespace. */
export interface LabPod {
  readonly ns: string;
  /** 1-based index within its host. */
  readonly index: number;
  /** Index of its host. */
  readonly hostIndex: number;
}

/** A host namespace. */
export interface LabHost {
  /** 1-based. */
  readonly index: number;
  readonly ns: string;
  /** Underlay interface inside the host. */
  readonly iface: "eth0";
  /** Underlay address, dotted. */
  readonly ip: string;
  readonly prefixLen: 24;
  /** Default gateway. */
  readonly gateway: string;
  /** 0: 192.0.2.0/24, 1: 198.51.100.0/24. */
  readonly segment: 0 | 1;
  /** Its pod namespaces. */
  readonly pods: LabPod[];
}

/** A process started in a lab namespace. */
export interface LabProcess {
  readonly pid: number;
  readonly ns: string;
  readonly argv: readonly string[];
  /** Everything written to stdout so far (the last 1 MiB). */
  stdout(): string;
  /** Everything written to stderr so far (the last 1 MiB). */
  stderr(): string;
  /** Resolves with the exit code (or 128+signal) when it ends. */
  readonly exited: Promise<number>;
  /** The exit code (or 128+signal) once it has ended, else null (still running). */
  exitCode(): number | null;
  /**
   * Wait until stdout or stderr matches.
   *
   * @throws {Error} On timeout or when the process exits first, with its output.
   */
  waitForOutput(pattern: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  /** Signal the whole process group. */
  kill(signal?: NodeJS.Signals): void;
  /** SIGTERM the group, SIGKILL after `graceMs` (default 3000); resolves with the exit code. */
  stop(graceMs?: number): Promise<number>;
}

/** Options of {@link Lab.ping}. */
export interface PingOptions {
  /** Echo requests (default 1). */
  readonly count?: number;
  /** Seconds to wait for each reply (default 2). */
  readonly timeoutSeconds?: number;
}

/** A running lab. */
export interface Lab {
  /** Lab id: prefix + 3 characters. */
  readonly id: string;
  readonly underlay: {
    readonly mode: "bridge" | "router";
    readonly ns: string;
    /**
     * Where services for all hosts listen (etcd, a fake API server), in the
     * underlay namespace: 192.0.2.2 on the bridge, or the router's 192.0.2.1.
     */
    readonly serviceIP: string;
  };
  readonly hosts: readonly LabHost[];
  /** The internet namespace, when requested. */
  readonly internet?: { readonly ns: string; readonly ip: string };
  /** A temporary directory removed at teardown (subnet files, IPAM, logs). */
  readonly dir: string;
  /** Every namespace of the lab, in creation order. */
  namespaces(): string[];
  /**
   * Run a command in a namespace (`ip netns exec`). A string is split on
   * whitespace (no shell).
   */
  exec(ns: string, cmd: string | readonly string[], input?: string): Promise<ExecResult>;
  /** Like {@link exec} but returns stdout and throws on a non-zero exit. */
  run(ns: string, cmd: string | readonly string[], input?: string): Promise<string>;
  /** Start a long-running process in a namespace, in its own process group. */
  spawn(
    ns: string,
    cmd: string,
    args?: readonly string[],
    options?: { env?: Record<string, string>; cwd?: string },
  ): LabProcess;
  /** Whether `ip` answers pings from `fromNs`. */
  ping(fromNs: string, ip: string, options?: PingOptions): Promise<boolean>;
  /** Add an empty pod namespace to a host. */
  addPod(host: LabHost): Promise<LabPod>;
  /**
   * Attach pods of a host with `weft attach` logic (bridge cni0 in the
   * host), from a subnet.env; IPAM state in the lab's directory.
   */
  attachPods(
    host: LabHost,
    subnetFile: string,
    pods?: readonly LabPod[],
  ): Promise<PodAttachment[]>;
  /** Kill processes and delete the namespaces. Safe to call twice. */
  teardown(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

interface Marker {
  prefix: string;
  pid: number;
  created: number;
  namespaces: string[];
  dir: string;
}

const OUTPUT_CAP = 1 << 20;

function words(cmd: string | readonly string[]): string[] {
  return typeof cmd === "string" ? cmd.trim().split(/\s+/) : [...cmd];
}

async function must(cmd: string, args: string[], input?: string): Promise<string> {
  const r = await systemExec(cmd, args, { input });
  if (r.code !== 0) {
    throw new Error(
      `lab: ${cmd} ${args.join(" ")} failed (${r.code}): ${r.stderr.trim() || r.stdout.trim()}${
        input ? `\ninput:\n${input}` : ""
      }`,
    );
  }
  return r.stdout;
}

async function listNetns(): Promise<string[]> {
  const out = await must("ip", ["netns", "list"]);
  return out.split("\n").map((l) => l.split(" ")[0]).filter((n) => n !== "");
}

async function killNetnsProcesses(ns: string): Promise<void> {
  const r = await systemExec("ip", ["netns", "pids", ns]);
  if (r.code !== 0) return;
  for (const pid of r.stdout.split(/\s+/).filter(Boolean).map(Number)) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
}

async function deleteNetns(names: readonly string[]): Promise<string[]> {
  const existing = new Set(await listNetns());
  const failures: string[] = [];
  for (const ns of names) {
    if (!existing.has(ns)) continue;
    await killNetnsProcesses(ns);
    const r = await systemExec("ip", ["netns", "del", ns]);
    if (r.code !== 0) failures.push(`${ns}: ${r.stderr.trim()}`);
  }
  return failures;
}

function validatePrefix(prefix: string): void {
  if (!/^[a-z][a-z0-9]{1,3}$/.test(prefix)) {
    throw new TypeError(
      `Cannot create a lab: 'prefix' must be 2–4 lowercase letters or digits starting with a letter (names must fit 15 characters), current value is ${
        JSON.stringify(prefix)
      }`,
    );
  }
}

/**
 * Remove labs of a prefix whose creating process is gone: kill what runs
 * in their namespaces, delete the namespaces, the marker and the lab
 * directory. Labs of live processes (tests running in parallel) and
 * namespaces without a marker are left alone.
 *
 * @param prefix The owner prefix given to {@link createLab}.
 * @returns Names of the namespaces deleted.
 * @throws {TypeError} When the prefix is malformed.
 */
export async function sweepLabs(prefix: string): Promise<string[]> {
  validatePrefix(prefix);
  let files: string[];
  try {
    files = fs.readdirSync(MARKER_DIR).filter((f) => f.startsWith(prefix) && f.endsWith(".json"));
  } catch {
    return [];
  }
  const all = await listNetns();
  const removed: string[] = [];
  for (const f of files) {
    const id = f.slice(0, -5);
    if (!new RegExp(`^${prefix}[a-z0-9]{3}$`).test(id)) continue;
    const file = path.join(MARKER_DIR, f);
    let marker: Marker;
    try {
      marker = JSON.parse(fs.readFileSync(file, "utf8"));
    } catch {
      continue; // being written by a live lab
    }
    if (marker.prefix !== prefix || processAlive(marker.pid)) continue;
    const names = [
      ...new Set([...marker.namespaces, ...all.filter((n) => n.startsWith(`${id}-`))]),
    ];
    const failures = await deleteNetns([...names].reverse());
    if (failures.length) throw new Error(`lab sweep of ${id} failed: ${failures.join("; ")}`);
    removed.push(...names.filter((n) => all.includes(n)));
    if (marker.dir?.startsWith(os.tmpdir())) {
      fs.rmSync(marker.dir, { recursive: true, force: true });
    }
    fs.rmSync(file, { force: true });
  }
  return removed;
}

/**
 * Build a lab (see the module note for the topology).
 *
 * @param options Prefix, number of hosts and pods, underlay kind, internet.
 * @returns The running lab; call `teardown()` in `finally`.
 * @throws {TypeError} On a bad prefix or counts.
 * @throws {Error} When a namespace or link cannot be created (what was built is torn down).
 * @example
 * ```ts
 * const lab = await createLab({ prefix: "wlb", hosts: 2, internet: true });
 * try {
 *   await lab.ping(lab.hosts[0].ns, lab.hosts[1].ip);
 * } finally {
 *   await lab.teardown();
 * }
 * ```
 */
export async function createLab(options: LabOptions): Promise<Lab> {
  validatePrefix(options.prefix);
  const nHosts = options.hosts;
  const nPods = options.podsPerHost ?? 0;
  if (!Number.isInteger(nHosts) || nHosts < 1 || nHosts > 99) {
    throw new TypeError(`Cannot create a lab: 'hosts' must be 1–99, current value is ${nHosts}`);
  }
  if (!Number.isInteger(nPods) || nPods < 0 || nPods > 99) {
    throw new TypeError(
      `Cannot create a lab: 'podsPerHost' must be 0–99, current value is ${nPods}`,
    );
  }
  const mode = options.underlay ?? "bridge";
  const mtu = options.mtu ?? 1500;
  if (options.sweep ?? true) await sweepLabs(options.prefix);

  fs.mkdirSync(MARKER_DIR, { recursive: true });
  let id = "";
  let markerFile = "";
  for (;;) {
    id = options.prefix + Math.random().toString(36).slice(2, 5).padEnd(3, "0");
    markerFile = path.join(MARKER_DIR, `${id}.json`);
    try {
      fs.writeFileSync(markerFile, "", { flag: "wx" });
      break;
    } catch {
      // id taken: pick another
    }
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${id}-`));
  const marker: Marker = {
    prefix: options.prefix,
    pid: process.pid,
    created: Date.now(),
    namespaces: [],
    dir,
  };
  const saveMarker = () => fs.writeFileSync(markerFile, JSON.stringify(marker));
  saveMarker();

  const procs = new Set<LabProcess>();
  let tornDown = false;

  const addNetns = async (names: string[]) => {
    marker.namespaces.push(...names);
    saveMarker();
    await must("ip", ["-batch", "-"], names.map((n) => `netns add ${n}\n`).join(""));
  };
  const ipBatch = (ns: string, lines: string[]) =>
    must("ip", ["-n", ns, "-batch", "-"], lines.join("\n") + "\n");
  const sysctl = (ns: string, name: string, value: string) =>
    must("ip", ["netns", "exec", ns, "sysctl", "-q", "-w", `${name}=${value}`]);

  const exec = (ns: string, cmd: string | readonly string[], input?: string) => {
    const [c, ...a] = words(cmd);
    return netnsExec(ns)(c, a, { input });
  };

  const teardown = async () => {
    if (tornDown) return;
    tornDown = true;
    await Promise.all([...procs].map((p) => p.stop(2000)));
    const failures = await deleteNetns([...marker.namespaces].reverse());
    fs.rmSync(dir, { recursive: true, force: true });
    if (failures.length) {
      throw new Error(`lab ${id} teardown left namespaces behind: ${failures.join("; ")}`);
    }
    fs.rmSync(markerFile, { force: true });
  };

  const underlayNs = `${id}-u`;
  const hosts: LabHost[] = [];
  let internet: Lab["internet"];
  const podCount = new Map<number, number>();

  const addPod = async (host: LabHost): Promise<LabPod> => {
    const index = (podCount.get(host.index) ?? 0) + 1;
    podCount.set(host.index, index);
    const pod: LabPod = { ns: `${host.ns}p${index}`, index, hostIndex: host.index };
    await addNetns([pod.ns]);
    await ipBatch(pod.ns, ["link set lo up"]);
    host.pods.push(pod);
    return pod;
  };

  try {
    const hostNames = Array.from({ length: nHosts }, (_, i) => `${id}-h${i + 1}`);
    await addNetns([underlayNs, ...hostNames, ...(options.internet ? [`${id}-net`] : [])]);
    // underlay
    const uLines = ["link set lo up", `link add br0 mtu ${mtu} type bridge`, "link set br0 up"];
    // the underlay itself answers at the service address (etcd, a fake API server)
    if (mode === "bridge") uLines.push("addr add 192.0.2.2/24 dev br0");
    if (mode === "router") {
      uLines.push(
        `link add br1 mtu ${mtu} type bridge`,
        "link set br1 up",
        "addr add 192.0.2.1/24 dev br0",
        "addr add 198.51.100.1/24 dev br1",
      );
    }
    await ipBatch(underlayNs, uLines);
    // bridged frames need no netfilter in the underlay (faster, and independent of br_netfilter)
    await systemExec(
      "ip",
      ["netns", "exec", underlayNs, "sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=0"],
    );
    if (mode === "router") await sysctl(underlayNs, "net.ipv4.ip_forward", "1");

    for (let i = 1; i <= nHosts; i++) {
      const ns = hostNames[i - 1];
      const segment: 0 | 1 = mode === "router" ? ((i - 1) % 2) as 0 | 1 : 0;
      const base = segment === 0 ? "192.0.2" : "198.51.100";
      const host: LabHost = {
        index: i,
        ns,
        iface: "eth0",
        ip: `${base}.${10 + i}`,
        prefixLen: 24,
        gateway: `${base}.1`,
        segment,
        pods: [],
      };
      await ipBatch(underlayNs, [
        `link add h${i} mtu ${mtu} type veth peer name eth0 mtu ${mtu} netns ${ns}`,
        `link set h${i} master br${segment} up`,
      ]);
      await ipBatch(ns, [
        "link set lo up",
        `addr add ${host.ip}/24 dev eth0`,
        "link set eth0 up",
        `route add default via ${host.gateway} dev eth0 onlink`,
      ]);
      if (options.hostForwarding ?? true) await sysctl(ns, "net.ipv4.ip_forward", "1");
      hosts.push(host);
    }

    if (options.internet) {
      const ns = `${id}-net`;
      if (mode === "bridge") {
        await ipBatch(underlayNs, [
          `link add inet mtu ${mtu} type veth peer name eth0 mtu ${mtu} netns ${ns}`,
          "link set inet master br0 up",
        ]);
        await ipBatch(ns, [
          "link set lo up",
          "addr add 192.0.2.1/24 dev eth0",
          "addr add 203.0.113.1/32 dev lo",
          "link set eth0 up",
        ]);
      } else {
        await ipBatch(underlayNs, [
          `link add inet mtu ${mtu} type veth peer name eth0 mtu ${mtu} netns ${ns}`,
          "addr add 203.0.113.254/24 dev inet",
          "link set inet up",
        ]);
        await ipBatch(ns, [
          "link set lo up",
          "addr add 203.0.113.1/24 dev eth0",
          "link set eth0 up",
          "route add default via 203.0.113.254",
        ]);
      }
      internet = { ns, ip: "203.0.113.1" };
    }

    for (const host of hosts) {
      for (let j = 0; j < nPods; j++) await addPod(host);
    }
  } catch (e) {
    await teardown().catch(() => {});
    throw e;
  }

  const spawn = (
    ns: string,
    cmd: string,
    args: readonly string[] = [],
    opts: { env?: Record<string, string>; cwd?: string } = {},
  ): LabProcess => {
    const argv = ["ip", "netns", "exec", ns, cmd, ...args];
    const child = spawnChild(argv[0], argv.slice(1), {
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
      env: opts.env ? { ...process.env, ...opts.env } : undefined,
      cwd: opts.cwd,
    });
    let out = "";
    let err = "";
    const listeners = new Set<() => void>();
    const notify = () => listeners.forEach((l) => l());
    const dec1 = new TextDecoder();
    const dec2 = new TextDecoder();
    // Appending is O(1) (V8 keeps a rope); trimming only past twice the cap keeps a
    // chatty process (an agent logging every lease event) from costing a copy per chunk.
    child.stdout!.on("data", (c: Uint8Array) => {
      out += dec1.decode(c, { stream: true });
      if (out.length > 2 * OUTPUT_CAP) out = out.slice(-OUTPUT_CAP);
      notify();
    });
    child.stderr!.on("data", (c: Uint8Array) => {
      err += dec2.decode(c, { stream: true });
      if (err.length > 2 * OUTPUT_CAP) err = err.slice(-OUTPUT_CAP);
      notify();
    });
    let done = false;
    let exitCode: number | null = null;
    const exited = new Promise<number>((resolve) => {
      child.on("close", (code: number | null, sig: NodeJS.Signals | null) => {
        done = true;
        exitCode = code ?? (sig === "SIGKILL" ? 137 : sig === "SIGTERM" ? 143 : 128);
        notify();
        resolve(exitCode);
      });
      child.on("error", (e: Error) => {
        err += `\nspawn failed: ${e.message}`;
      });
    });
    const pid = child.pid ?? -1;
    const kill = (signal: NodeJS.Signals = "SIGTERM") => {
      if (done || pid <= 0) return;
      try {
        process.kill(-pid, signal);
      } catch {
        // group gone
      }
    };
    const proc: LabProcess = {
      pid,
      ns,
      argv: [cmd, ...args],
      stdout: () => out.slice(-OUTPUT_CAP),
      stderr: () => err.slice(-OUTPUT_CAP),
      exited,
      exitCode: () => exitCode,
      kill,
      async stop(graceMs = 3000) {
        kill("SIGTERM");
        let timer: ReturnType<typeof setTimeout> | undefined;
        const code = await Promise.race([
          exited,
          new Promise<null>((r) => (timer = setTimeout(() => r(null), graceMs))),
        ]);
        clearTimeout(timer);
        if (code !== null) return code;
        kill("SIGKILL");
        return await exited;
      },
      waitForOutput(pattern, timeoutMs = 10_000) {
        return new Promise<RegExpMatchArray>((resolve, reject) => {
          const check = () => {
            const m = out.match(pattern) ?? err.match(pattern);
            if (m) finish(() => resolve(m));
            else if (done) {
              finish(() =>
                reject(
                  new Error(
                    `${cmd} in ${ns} exited before printing ${pattern}:\n--- stdout\n${
                      out.slice(-4000)
                    }\n--- stderr\n${err.slice(-4000)}`,
                  ),
                )
              );
            }
          };
          const timer = setTimeout(
            () =>
              finish(() =>
                reject(
                  new Error(
                    `${cmd} in ${ns} did not print ${pattern} within ${timeoutMs} ms:\n--- stdout\n${
                      out.slice(-4000)
                    }\n--- stderr\n${err.slice(-4000)}`,
                  ),
                )
              ),
            timeoutMs,
          );
          const finish = (f: () => void) => {
            clearTimeout(timer);
            listeners.delete(check);
            f();
          };
          listeners.add(check);
          check();
        });
      },
    };
    procs.add(proc);
    return proc;
  };

  const lab: Lab = {
    id,
    underlay: { mode, ns: underlayNs, serviceIP: mode === "bridge" ? "192.0.2.2" : "192.0.2.1" },
    hosts,
    internet,
    dir,
    namespaces: () => [...marker.namespaces],
    exec,
    async run(ns, cmd, input) {
      const r = await exec(ns, cmd, input);
      if (r.code !== 0) {
        throw new Error(
          `lab: '${words(cmd).join(" ")}' in ${ns} failed (${r.code}): ${
            r.stderr.trim() || r.stdout.trim()
          }`,
        );
      }
      return r.stdout;
    },
    spawn,
    async ping(fromNs, ip, opts = {}) {
      const count = opts.count ?? 1;
      const args = [
        "ping",
        "-n",
        "-q",
        "-c",
        String(count),
        "-W",
        String(opts.timeoutSeconds ?? 2),
      ];
      if (count > 1) args.push("-i", "0.2");
      const r = await exec(fromNs, [...args, ip]);
      return r.code === 0;
    },
    addPod,
    async attachPods(host, subnetFile, pods = host.pods) {
      const out: PodAttachment[] = [];
      for (const pod of pods) {
        out.push(
          await attachPod({
            netns: pod.ns,
            subnetFile,
            ipamDir: path.join(dir, "ipam", host.ns),
            exec: netnsExec(host.ns),
          }),
        );
      }
      return out;
    },
    teardown,
    [Symbol.asyncDispose]: teardown,
  };
  return lab;
}
