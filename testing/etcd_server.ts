/**
 * A real, throwaway etcd for tests and benchmarks: one member on free
 * loopback ports with its data in a fresh temp directory, optionally with
 * TLS client certificates (made with `openssl`) and user/password auth.
 *
 * ```ts
 * await using etcd = await startEtcd({ tls: true });
 * await etcd.etcdctl(["put", "/coreos.com/network/config", '{"Network":"10.5.0.0/16"}']);
 * await etcd.restart();        // same data dir and ports
 * await etcd.compact(await etcd.revision());
 * ```
 *
 * `close()` (or `await using`) kills the process and removes the directory;
 * servers still running when the process exits are killed too.
 *
 * @module
 */

import { execFile, spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { createFetch } from "../core/runtime.ts";

/** Options for {@link startEtcd}. */
export interface EtcdServerOptions {
  /**
   * Serve clients over TLS and require a client certificate signed by a
   * throwaway CA; the client's files are in {@link EtcdServer.tls}. The
   * client certificate has no Common Name (etcd's JSON gateway refuses one
   * that has, when auth is enabled).
   */
  tls?: boolean;
  /**
   * Enable auth. `root` gets `password`; when `username` is not `root`, that
   * user is created too, with read/write on every key.
   */
  auth?: { username: string; password: string };
  /** Extra etcd flags, e.g. `["--auth-token-ttl", "1"]`. */
  extraArgs?: string[];
  /** How long to wait for the member to become healthy (default 20 s). */
  startTimeoutMs?: number;
  /**
   * Run etcd inside this network namespace (a lab's), listening on `host`
   * (an address in that namespace) at port 2379/2380; health checks and
   * etcdctl then run in the namespace too. Default: the caller's namespace
   * on 127.0.0.1 with free ports.
   */
  netns?: string;
  /** Listen address with `netns` (default 127.0.0.1). */
  host?: string;
  /**
   * Keep the data directory in memory (`/dev/shm`), so etcd's fsync costs
   * nothing: for benchmarks that measure what happens after a write, not
   * the disk (etcd 3.4 has no `--unsafe-no-fsync`).
   */
  inMemory?: boolean;
}

/** Client-side TLS files of a TLS-enabled test etcd. */
export interface EtcdTlsFiles {
  readonly caFile: string;
  readonly certFile: string;
  readonly keyFile: string;
}

/** A running test etcd. */
export interface EtcdServer extends AsyncDisposable {
  /** Client URL, `http://127.0.0.1:PORT` (or `https://…` with TLS). */
  readonly endpoint: string;
  /** The temp directory (data dir, certificates, `etcd.log`). */
  readonly dir: string;
  /** Client certificate, key and CA, when started with `tls`. */
  readonly tls?: EtcdTlsFiles;
  /** The credentials given in `auth`, when enabled. */
  readonly auth?: { username: string; password: string };
  /** Process id of the running etcd, `undefined` while stopped. */
  readonly pid: number | undefined;
  /**
   * Run `etcdctl` against this member (endpoint, TLS files and root
   * credentials added).
   *
   * @param args e.g. `["put", "--", "/k", "v"]`.
   * @param options `input` is written to etcdctl's stdin (e.g. a value for `put`).
   * @returns etcdctl's stdout.
   * @throws {Error} When etcdctl exits non-zero; the message holds its stderr.
   */
  etcdctl(args: string[], options?: { input?: string }): Promise<string>;
  /** Current store revision. */
  revision(): Promise<number>;
  /** Compact history up to `revision` (physically), so older watches fail. */
  compact(revision: number): Promise<void>;
  /**
   * How many watchers the member serves now (its `etcd_debugging_mvcc_watcher_total`
   * metric), e.g. to restart it under a running watch.
   *
   * @throws {Error} When the member does not answer or lacks the metric.
   */
  watchers(): Promise<number>;
  /**
   * The member's Prometheus metrics as text (`GET /metrics`; with `netns`
   * fetched by `curl` inside the namespace).
   *
   * @throws {Error} When the member does not answer.
   */
  metrics(): Promise<string>;
  /** Stop the process (SIGTERM, then SIGKILL after 5 s); keeps the data. */
  stop(): Promise<void>;
  /** Kill the process with SIGKILL (a crash: no clean shutdown); keeps the data. */
  kill(): Promise<void>;
  /** Start again on the same ports and data dir and wait until healthy. */
  restart(): Promise<void>;
  /** Stop and delete the temp directory. Safe to call twice. */
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

/** A port that was free a moment ago on 127.0.0.1. */
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

function run(
  cmd: string,
  args: string[],
  options: { input?: string; env?: Record<string, string>; cwd?: string } = {},
): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, {
      env: { ...process.env, ...options.env },
      cwd: options.cwd,
      maxBuffer: 64 * 1024 * 1024,
      timeout: 30_000,
    }, (err, stdout, stderr) => {
      if (err) {
        reject(
          new Error(
            `${cmd} ${args.join(" ")} failed: ${String(stderr).trim() || err.message}`,
            { cause: err },
          ),
        );
      } else resolve(String(stdout));
    });
    child.stdin?.end(options.input ?? "");
  });
}

async function makeCertificates(
  dir: string,
): Promise<{ server: EtcdTlsFiles; client: EtcdTlsFiles }> {
  const ossl = (args: string[]) => run("openssl", args, { cwd: dir });
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  await ossl([
    "req",
    "-x509",
    ...ec,
    "-keyout",
    "ca.key",
    "-out",
    "ca.crt",
    "-days",
    "2",
    "-subj",
    "/CN=weft-test-ca",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ]);
  const leaf = async (name: string, cn: string, ext: string) => {
    writeFileSync(join(dir, `${name}.ext`), ext);
    await ossl([
      "req",
      ...ec,
      "-keyout",
      `${name}.key`,
      "-out",
      `${name}.csr`,
      "-subj",
      `/CN=${cn}`,
    ]);
    await ossl([
      "x509",
      "-req",
      "-in",
      `${name}.csr`,
      "-CA",
      "ca.crt",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      "-out",
      `${name}.crt`,
      "-days",
      "2",
      "-extfile",
      `${name}.ext`,
    ]);
  };
  await leaf(
    "server",
    "127.0.0.1",
    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n" +
      "extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
  );
  // No Common Name: with auth enabled, etcd's JSON gateway refuses client
  // certificates that carry one (it cannot map a CN to a user through the gateway).
  await leaf(
    "client",
    "",
    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n" +
      "extendedKeyUsage=clientAuth\n",
  );
  const f = (n: string) => join(dir, n);
  return {
    server: { caFile: f("ca.crt"), certFile: f("server.crt"), keyFile: f("server.key") },
    client: { caFile: f("ca.crt"), certFile: f("client.crt"), keyFile: f("client.key") },
  };
}

/**
 * Start a single-member etcd for a test. Always `close()` it in `finally`
 * (or use `await using`).
 *
 * @param options TLS, auth, extra flags.
 * @returns The running server.
 * @throws {Error} When etcd does not become healthy in time; the message holds
 *   the tail of its log.
 * @example
 * ```ts
 * const etcd = await startEtcd();
 * try {
 *   console.log(await etcd.etcdctl(["get", "--prefix", "/"]));
 * } finally {
 *   await etcd.close();
 * }
 * ```
 */
export async function startEtcd(options: EtcdServerOptions = {}): Promise<EtcdServer> {
  installExitHook();
  const dir = mkdtempSync(join(options.inMemory ? "/dev/shm" : tmpdir(), "weft-etcd-"));
  try {
    return await startIn(dir, options);
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}

async function startIn(dir: string, options: EtcdServerOptions): Promise<EtcdServer> {
  const certs = options.tls ? await makeCertificates(dir) : undefined;
  const scheme = certs ? "https" : "http";
  const fetcher = certs
    ? createFetch({
      ca: readFileSync(certs.client.caFile, "utf8"),
      cert: readFileSync(certs.client.certFile, "utf8"),
      key: readFileSync(certs.client.keyFile, "utf8"),
    })
    : fetch;
  const timeoutMs = options.startTimeoutMs ?? 20_000;
  let child: ChildProcess | undefined;
  let clientPort = 0;
  let peerPort = 0;
  let authOn = false;
  let closed = false;
  const logFile = join(dir, "etcd.log");
  const host = options.host ?? "127.0.0.1";
  const endpoint = () => `${scheme}://${host}:${clientPort}`;
  const inNs = (cmd: string, cmdArgs: string[]): [string, string[]] =>
    options.netns ? ["ip", ["netns", "exec", options.netns, cmd, ...cmdArgs]] : [cmd, cmdArgs];

  const args = () => [
    "--name",
    "weft-test",
    "--data-dir",
    join(dir, "data"),
    "--listen-client-urls",
    endpoint(),
    "--advertise-client-urls",
    endpoint(),
    "--listen-peer-urls",
    `http://${host}:${peerPort}`,
    "--initial-advertise-peer-urls",
    `http://${host}:${peerPort}`,
    "--initial-cluster",
    `weft-test=http://${host}:${peerPort}`,
    "--logger",
    "zap",
    "--log-outputs",
    "stderr",
    "--log-level",
    "warn",
    ...(certs
      ? [
        "--cert-file",
        certs.server.certFile,
        "--key-file",
        certs.server.keyFile,
        "--trusted-ca-file",
        certs.server.caFile,
        "--client-cert-auth",
      ]
      : []),
    ...(options.extraArgs ?? []),
  ];

  const logTail = () => {
    try {
      return readFileSync(logFile, "utf8").split("\n").slice(-15).join("\n");
    } catch {
      return "(no log)";
    }
  };

  const spawnEtcd = () => {
    const fd = openSync(logFile, "a");
    try {
      const [cmd, cmdArgs] = inNs("etcd", args());
      child = spawn(cmd, cmdArgs, { stdio: ["ignore", fd, fd] });
    } finally {
      closeSync(fd);
    }
    const c = child;
    live.add(c);
    c.once("exit", () => live.delete(c));
    c.once("error", () => live.delete(c));
  };

  const exited = (c: ChildProcess) => c.exitCode !== null || c.signalCode !== null;

  const waitHealthy = async () => {
    const deadline = Date.now() + timeoutMs;
    let last = "";
    while (Date.now() < deadline) {
      if (!child || exited(child)) {
        throw new Error(`etcd exited during start (code ${child?.exitCode}):\n${logTail()}`);
      }
      try {
        if (options.netns) {
          const [cmd, cmdArgs] = inNs("etcdctl", [
            `--endpoints=${endpoint()}`,
            "endpoint",
            "health",
          ]);
          // etcdctl exits 0 only when the member answers and is healthy
          await run(cmd, cmdArgs, { env: { ETCDCTL_API: "3" } });
          return;
        } else {
          const r = await fetcher(`${endpoint()}/health`, { signal: AbortSignal.timeout(2000) });
          last = await r.text();
          if (r.ok && JSON.parse(last).health === "true") return;
        }
      } catch (e) {
        last = String(e);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(
      `etcd at ${endpoint()} not healthy after ${timeoutMs} ms (last: ${last}):\n${logTail()}`,
    );
  };

  const stop = async (signal: "SIGTERM" | "SIGKILL" = "SIGTERM") => {
    const c = child;
    child = undefined;
    if (!c || exited(c)) return;
    const gone = new Promise<void>((r) => c.once("exit", () => r()));
    c.kill(signal);
    const t = setTimeout(() => c.kill("SIGKILL"), 5000);
    await gone;
    clearTimeout(t);
  };

  // Ports can be taken between probing and binding (other tests run here too): retry.
  for (let attempt = 1;; attempt++) {
    clientPort = options.netns ? 2379 : await freePort();
    peerPort = options.netns ? 2380 : await freePort();
    spawnEtcd();
    try {
      await waitHealthy();
      break;
    } catch (e) {
      await stop();
      if (attempt >= 3 || !/address already in use/.test(logTail())) throw e;
      rmSync(join(dir, "data"), { recursive: true, force: true });
    }
  }

  const tlsFlags = certs
    ? [
      `--cacert=${certs.client.caFile}`,
      `--cert=${certs.client.certFile}`,
      `--key=${certs.client.keyFile}`,
    ]
    : [];
  const etcdctl = (cmdArgs: string[], o: { input?: string } = {}) =>
    run(
      ...inNs("etcdctl", [
        `--endpoints=${endpoint()}`,
        ...tlsFlags,
        ...(authOn && options.auth ? [`--user=root:${options.auth.password}`] : []),
        ...cmdArgs,
      ]),
      { input: o.input, env: { ETCDCTL_API: "3" } },
    );

  const server: EtcdServer = {
    get endpoint() {
      return endpoint();
    },
    dir,
    tls: certs?.client,
    auth: options.auth,
    get pid() {
      return child && !exited(child) ? child.pid : undefined;
    },
    etcdctl,
    async revision() {
      const out = JSON.parse(await etcdctl(["endpoint", "status", "-w", "json"]));
      return Number(out[0].Status.header.revision);
    },
    async compact(revision) {
      await etcdctl(["compaction", "--physical", String(revision)]);
    },
    async metrics() {
      if (!options.netns) return await (await fetcher(`${endpoint()}/metrics`)).text();
      const [cmd, cmdArgs] = inNs("curl", [
        "-sS",
        "--fail",
        "--max-time",
        "10",
        ...(certs
          ? [
            "--cacert",
            certs.client.caFile,
            "--cert",
            certs.client.certFile,
            "--key",
            certs.client.keyFile,
          ]
          : []),
        `${endpoint()}/metrics`,
      ]);
      return await run(cmd, cmdArgs);
    },
    async watchers() {
      const text = await server.metrics();
      const m = text.match(/^etcd_debugging_mvcc_watcher_total (\d+)/m);
      if (!m) {
        throw new Error(`etcd at ${endpoint()} has no etcd_debugging_mvcc_watcher_total metric`);
      }
      return Number(m[1]);
    },
    stop: () => stop(),
    kill: () => stop("SIGKILL"),
    async restart() {
      if (closed) throw new Error(`Cannot restart etcd: it was closed (dir ${dir} is gone)`);
      await stop();
      spawnEtcd();
      await waitHealthy();
    },
    async close() {
      if (closed) return;
      closed = true;
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
    [Symbol.asyncDispose]() {
      return this.close();
    },
  };

  try {
    if (options.auth) {
      const { username, password } = options.auth;
      await etcdctl(["user", "add", "root", `--new-user-password=${password}`]);
      if (username !== "root") {
        await etcdctl(["user", "add", username, `--new-user-password=${password}`]);
        await etcdctl(["role", "add", "weft-rw"]);
        await etcdctl(["role", "grant-permission", "weft-rw", "--prefix=true", "readwrite", ""]);
        await etcdctl(["user", "grant-role", username, "weft-rw"]);
      }
      await etcdctl(["auth", "enable"]);
      authOn = true;
    }
  } catch (e) {
    await server.close();
    throw e;
  }
  return server;
}
