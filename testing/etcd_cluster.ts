/**
 * A real, throwaway etcd cluster of several members (separate processes) for
 * fail-over tests: each member has its own data dir in one temp directory,
 * and can be killed and started again on the same data.
 *
 * ```ts
 * const cluster = await startEtcdCluster({ members: 3, netns: lab.underlay.ns, host: "192.0.2.2" });
 * try {
 *   const leader = await cluster.leader();          // index of the leader
 *   await cluster.members[leader].kill();            // SIGKILL: a crash
 *   await cluster.etcdctl(["put", "/k", "v"]);       // the others still serve
 *   await cluster.members[leader].start();           // same data dir, rejoins
 * } finally {
 *   await cluster.close();
 * }
 * ```
 *
 * Members listen on `host` (default 127.0.0.1) at client port 2379 + 10000·i
 * and peer port 2380 + 10000·i (i from 0) inside `netns`, or on free loopback
 * ports without one. Processes still running when this process exits are
 * killed.
 *
 * @module
 */

import { execFile, spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";

/** Options of {@link startEtcdCluster}. */
export interface EtcdClusterOptions {
  /** Number of members, 1–7 (default 3). */
  readonly members?: number;
  /** Run the members inside this network namespace (etcdctl runs there too). */
  readonly netns?: string;
  /** Listen address (default 127.0.0.1); with `netns`, an address in it. */
  readonly host?: string;
  /** How long to wait for the cluster, or a restarted member, to be healthy (default 30 s). */
  readonly startTimeoutMs?: number;
}

/** One member of an {@link EtcdCluster}. */
export interface EtcdMember {
  /** e.g. `m0`. */
  readonly name: string;
  /** Client URL, `http://host:port`. */
  readonly endpoint: string;
  /** Process id while running, else undefined. */
  readonly pid: number | undefined;
  /** Kill with SIGKILL (a crash); the data stays. */
  kill(): Promise<void>;
  /** Start again on the same data dir and wait until it is healthy. */
  start(): Promise<void>;
}

/** A running cluster. */
export interface EtcdCluster extends AsyncDisposable {
  readonly members: readonly EtcdMember[];
  /** Every member's client URL, in member order. */
  readonly endpoints: readonly string[];
  /** The temp directory (data dirs, `<name>.log`). */
  readonly dir: string;
  /**
   * Run etcdctl against the running members (it picks one that answers).
   *
   * @throws {Error} When etcdctl exits non-zero, with its stderr.
   */
  etcdctl(args: string[], options?: { input?: string }): Promise<string>;
  /**
   * Index of the current leader, asked of the running members.
   *
   * @throws {Error} When no running member names a leader among them.
   */
  leader(): Promise<number>;
  /** Kill every member and delete the directory. Safe to call twice. */
  close(): Promise<void>;
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", () => {
    for (const child of live) {
      try {
        child.kill("SIGKILL");
      } catch { /* already gone */ }
    }
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

function run(cmd: string, args: string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, {
      env: { ...process.env, ETCDCTL_API: "3" },
      maxBuffer: 64 * 1024 * 1024,
      timeout: 30_000,
    }, (err, stdout, stderr) => {
      if (err) {
        reject(
          new Error(`${cmd} ${args.join(" ")} failed: ${String(stderr).trim() || err.message}`, {
            cause: err,
          }),
        );
      } else resolve(String(stdout));
    });
    child.stdin?.end(input ?? "");
  });
}

/**
 * Start a cluster of etcd members and wait until every member is healthy.
 * Always `close()` it in `finally` (or use `await using`).
 *
 * @param options Members, namespace, address, start timeout.
 * @returns The running cluster.
 * @throws {RangeError} When `members` is not 1–7.
 * @throws {Error} When a member does not become healthy in time, with the
 *   tail of its log (everything started is stopped again).
 */
export async function startEtcdCluster(options: EtcdClusterOptions = {}): Promise<EtcdCluster> {
  const n = options.members ?? 3;
  if (!Number.isInteger(n) || n < 1 || n > 7) {
    throw new RangeError(`Cannot start an etcd cluster of ${n} members: give 1–7`);
  }
  installExitHook();
  const host = options.host ?? "127.0.0.1";
  const timeoutMs = options.startTimeoutMs ?? 30_000;
  const dir = mkdtempSync(join(tmpdir(), "weft-etcd-cluster-"));
  const inNs = (cmd: string, args: string[]): [string, string[]] =>
    options.netns ? ["ip", ["netns", "exec", options.netns, cmd, ...args]] : [cmd, args];
  const ports: { client: number; peer: number }[] = [];
  for (let i = 0; i < n; i++) {
    ports.push(
      options.netns
        ? { client: 2379 + 10_000 * i, peer: 2380 + 10_000 * i }
        : { client: await freePort(), peer: await freePort() },
    );
  }
  const names = ports.map((_, i) => `m${i}`);
  const endpoints = ports.map((p) => `http://${host}:${p.client}`);
  const initialCluster = names.map((name, i) => `${name}=http://${host}:${ports[i].peer}`).join(
    ",",
  );
  const children: (ChildProcess | undefined)[] = new Array(n).fill(undefined);
  const exited = (c: ChildProcess) => c.exitCode !== null || c.signalCode !== null;
  const logOf = (i: number) => join(dir, `${names[i]}.log`);
  const logTail = (i: number) => {
    try {
      return readFileSync(logOf(i), "utf8").split("\n").slice(-15).join("\n");
    } catch {
      return "(no log)";
    }
  };

  const spawnMember = (i: number) => {
    const args = [
      "--name",
      names[i],
      "--data-dir",
      join(dir, names[i]),
      "--listen-client-urls",
      endpoints[i],
      "--advertise-client-urls",
      endpoints[i],
      "--listen-peer-urls",
      `http://${host}:${ports[i].peer}`,
      "--initial-advertise-peer-urls",
      `http://${host}:${ports[i].peer}`,
      "--initial-cluster",
      initialCluster,
      "--initial-cluster-state",
      "new",
      "--initial-cluster-token",
      `weft-${process.pid}`,
      "--logger",
      "zap",
      "--log-outputs",
      "stderr",
      "--log-level",
      "warn",
    ];
    const fd = openSync(logOf(i), "a");
    try {
      const [cmd, cmdArgs] = inNs("etcd", args);
      const c = spawn(cmd, cmdArgs, { stdio: ["ignore", fd, fd] });
      children[i] = c;
      live.add(c);
      c.once("exit", () => live.delete(c));
      c.once("error", () => live.delete(c));
    } finally {
      closeSync(fd);
    }
  };

  const waitHealthy = async (i: number) => {
    const deadline = Date.now() + timeoutMs;
    let last = "";
    while (Date.now() < deadline) {
      const c = children[i];
      if (!c || exited(c)) {
        throw new Error(`etcd member ${names[i]} exited (code ${c?.exitCode}):\n${logTail(i)}`);
      }
      try {
        // exits 0 only when the member answers and the cluster has a leader
        await run(...inNs("etcdctl", [`--endpoints=${endpoints[i]}`, "endpoint", "health"]));
        return;
      } catch (e) {
        last = (e as Error).message;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(
      `etcd member ${names[i]} at ${
        endpoints[i]
      } not healthy after ${timeoutMs} ms (last: ${last}):\n${logTail(i)}`,
    );
  };

  const kill = async (i: number) => {
    const c = children[i];
    children[i] = undefined;
    if (!c || exited(c)) return;
    const gone = new Promise<void>((r) => c.once("exit", () => r()));
    c.kill("SIGKILL");
    await gone;
  };

  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    await Promise.all(names.map((_, i) => kill(i)));
    rmSync(dir, { recursive: true, force: true });
  };

  const members: EtcdMember[] = names.map((name, i) => ({
    name,
    endpoint: endpoints[i],
    get pid() {
      const c = children[i];
      return c && !exited(c) ? c.pid : undefined;
    },
    kill: () => kill(i),
    async start() {
      if (closed) throw new Error(`Cannot start etcd member ${name}: the cluster was closed`);
      await kill(i);
      spawnMember(i);
      await waitHealthy(i);
    },
  }));

  /** Members running now (etcdctl would spend its timeout on a dead one first). */
  const running = () => endpoints.filter((_, i) => members[i].pid !== undefined);
  const etcdctl = (args: string[], o: { input?: string } = {}) =>
    run(...inNs("etcdctl", [`--endpoints=${running().join(",")}`, ...args]), o.input);

  try {
    names.forEach((_, i) => spawnMember(i));
    await Promise.all(names.map((_, i) => waitHealthy(i)));
  } catch (e) {
    await close();
    throw e;
  }

  return {
    members,
    endpoints,
    dir,
    etcdctl,
    async leader() {
      // member ids exceed 2^53: compare them as text
      const out = await etcdctl(["endpoint", "status", "-w", "json"]);
      const ids = [...out.matchAll(/"Endpoint":"([^"]+)".*?"member_id":(\d+).*?"leader":(\d+)/g)];
      const leaderId = ids[0]?.[3];
      const hit = ids.find((m) => m[2] === leaderId);
      const index = hit ? endpoints.indexOf(hit[1]) : -1;
      if (index < 0) throw new Error(`no running etcd member is the leader: ${out}`);
      return index;
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}
