/**
 * The fake Kubernetes API server ({@link createFakeKube}) as a process, so it
 * can run inside a lab namespace where agents in the lab's hosts reach it,
 * plus the client the tests and benchmarks use to start and drive it.
 *
 * The process serves the API on `--hostname` (a free port) and a control
 * endpoint on `--hostname`:`--control-port` (default free): `POST /` with a JSON array of commands
 * `{"op": "addNode", "args": ["n1", {"podCIDRs": ["10.244.1.0/24"]}]}`, run
 * in order in one turn of the event loop (so a batch such as "break the
 * watches, delete a node, compact the history" is atomic with respect to
 * the agents' watches), answered with the array of their results. It prints
 * one JSON line `{"msg":"fake kube listening","url":…,"control":…}` when
 * both listen, and stops on SIGTERM/SIGINT.
 *
 * Run: `deno run -A testing/fake_kube_main.ts --hostname 192.0.2.2
 * [--control-port 6444] [--token T] [--tls-cert cert.pem --tls-key key.pem]`
 * (or with `bun`). In tests use {@link startLabKube}: the test process lives
 * in the machine's own namespace and cannot reach lab addresses, so the
 * client sends control requests with `curl` run inside the lab's underlay
 * namespace, and runs `kubectl` there ({@link LabKube.kubectl}).
 *
 * @module
 */

import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import * as v from "valibot";
import { execPath, runtimeName, serveHttp } from "../core/runtime.ts";
import { createFakeKube, type FakeKube, makeTestCerts, writeKubeconfig } from "./fake_kube.ts";
import type { Lab, LabProcess } from "../test/lab/lab.ts";
import { REPO_ROOT } from "../test/lab/lab.ts";

/** Operations the control endpoint runs, each a {@link FakeKube} method or getter. */
export const KUBE_CONTROL_OPS = [
  "addNode",
  "setPodCIDR",
  "annotate",
  "deleteNode",
  "getNode",
  "nodeNames",
  "addPod",
  "breakWatches",
  "sendBookmarks",
  "advanceResourceVersion",
  "compactHistory",
  "injectFailure",
  "resourceVersion",
  "watchCount",
  "requests",
  "down",
  "up",
] as const;

/** One control command. */
export type KubeControlOp = typeof KUBE_CONTROL_OPS[number];

const CommandsSchema = v.array(v.object({
  op: v.picklist(KUBE_CONTROL_OPS),
  args: v.optional(v.array(v.unknown()), []),
}));

/** One control command as sent to the endpoint. */
export interface KubeControlCommand {
  readonly op: KubeControlOp;
  readonly args?: readonly unknown[];
}

/**
 * Run control commands against a fake, in order, synchronously.
 *
 * @param kube The fake.
 * @param body The decoded request body.
 * @returns The results, one per command.
 * @throws {TypeError} When the body is not a list of known commands.
 * @throws {Error} When a command fails (e.g. a node that does not exist); earlier ones stay done.
 */
export function runKubeCommands(kube: FakeKube, body: unknown): unknown[] {
  const parsed = v.safeParse(CommandsSchema, body);
  if (!parsed.success) {
    const issue = parsed.issues[0];
    throw new TypeError(
      `control request must be a JSON array of {op, args}: ${
        issue.path?.map((p) => p.key).join(".") ?? ""
      } ${issue.message}; ops: ${KUBE_CONTROL_OPS.join(", ")}`,
    );
  }
  // deno-lint-ignore no-explicit-any
  const k = kube as any;
  return parsed.output.map(({ op, args }) => {
    switch (op) {
      case "resourceVersion":
      case "watchCount":
        return k[op];
      case "requests":
        return kube.requests;
      case "injectFailure": {
        const f = (args[0] ?? {}) as { path?: string; method?: string; status: number };
        return kube.injectFailure({ ...f, path: f.path ? new RegExp(f.path) : undefined });
      }
      default:
        return k[op](...args) ?? null;
    }
  });
}

async function serverMain(argv: string[]): Promise<void> {
  const flag = (name: string, def?: string) => {
    const i = argv.indexOf(`--${name}`);
    if (i >= 0 && i + 1 < argv.length) return argv[i + 1];
    if (def === undefined) throw new TypeError(`fake_kube_main: --${name} is required`);
    return def;
  };
  const hostname = flag("hostname", "127.0.0.1");
  const token = flag("token", "");
  const certFile = flag("tls-cert", "");
  const keyFile = flag("tls-key", "");
  const tls = certFile && keyFile
    ? { cert: readFileSync(certFile, "utf8"), key: readFileSync(keyFile, "utf8") }
    : undefined;
  const kube = await createFakeKube({ hostname, token: token || undefined, tls });
  const control = await serveHttp({
    hostname,
    port: Number(flag("control-port", "0")),
    fetch: async (req) => {
      if (req.method !== "POST") {
        return new Response("POST a JSON array of commands\n", { status: 405 });
      }
      try {
        // started in one turn; the answer waits for those that take time (down, up)
        const results = await Promise.all(runKubeCommands(kube, await req.json()));
        return Response.json(results);
      } catch (e) {
        return Response.json({ error: (e as Error).message }, { status: 400 });
      }
    },
  });
  console.log(JSON.stringify({
    msg: "fake kube listening",
    url: kube.url,
    control: `http://${hostname}:${control.port}/`,
  }));
  const stop = async () => {
    await kube.close().catch(() => {});
    await control.shutdown().catch(() => {});
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

/** A fake API server running in a lab. */
export interface LabKube {
  /** API base URL as agents in the lab reach it, e.g. `http://192.0.2.2:41234`. */
  readonly url: string;
  /** The kubeconfig written for agents (`<lab.dir>/kubeconfig`). */
  readonly kubeconfig: string;
  readonly token: string;
  /** The CA certificate (PEM file) that signed the server's certificate. */
  readonly caFile: string;
  /** The server process. */
  readonly process: LabProcess;
  /**
   * Run commands in one batch.
   *
   * @returns Their results.
   * @throws {Error} When the control request fails, with the server's message.
   */
  control(commands: readonly KubeControlCommand[]): Promise<unknown[]>;
  /** Run one command and return its result. */
  // deno-lint-ignore no-explicit-any
  call(op: KubeControlOp, ...args: unknown[]): Promise<any>;
  /**
   * Run the real `kubectl` (client-go) against the fake, inside the lab's
   * underlay namespace, with the agents' kubeconfig (HTTPS and the token:
   * client-go sends credentials only over TLS).
   *
   * @param args kubectl's arguments, e.g. `["get", "nodes", "-o", "json"]`.
   * @param input Standard input (for `-f -`).
   * @returns Its standard output.
   * @throws {Error} When it exits non-zero, with its output.
   */
  kubectl(args: readonly string[], input?: string): Promise<string>;
  /** Stop the server (teardown also does it). */
  stop(): Promise<number>;
}

/**
 * Start the fake API server in the lab's underlay namespace (at
 * `lab.underlay.serviceIP`), with the current runtime, and write a
 * kubeconfig with a bearer token for agents.
 *
 * @param lab The lab.
 * @param options Bearer token (default `weft-e2e`).
 * @returns The running fake and its control client.
 * @throws {Error} When the server does not come up within 30 s.
 */
export async function startLabKube(lab: Lab, options: { token?: string } = {}): Promise<LabKube> {
  const token = options.token ?? "weft-e2e";
  const self = fileURLToPath(import.meta.url);
  const certs = makeTestCerts(lab.underlay.serviceIP);
  const certFile = join(lab.dir, "kube-cert.pem");
  const keyFile = join(lab.dir, "kube-key.pem");
  const caFile = join(lab.dir, "kube-ca.pem");
  writeFileSync(caFile, certs.ca);
  writeFileSync(certFile, certs.cert);
  writeFileSync(keyFile, certs.key, { mode: 0o600 });
  const args = [
    self,
    "--hostname",
    lab.underlay.serviceIP,
    "--control-port",
    "0",
    "--token",
    token,
    "--tls-cert",
    certFile,
    "--tls-key",
    keyFile,
  ];
  const proc = lab.spawn(
    lab.underlay.ns,
    execPath(),
    runtimeName === "deno" ? ["run", "-A", ...args] : args,
    { cwd: REPO_ROOT },
  );
  const m = await proc.waitForOutput(/\{"msg":"fake kube listening".*\}/, 30_000);
  const info = JSON.parse(m[0]) as { url: string; control: string };
  const kubeconfig = writeKubeconfig(lab.dir, { url: info.url }, { token, ca: certs.ca });
  const control = async (commands: readonly KubeControlCommand[]) => {
    const r = await lab.exec(lab.underlay.ns, [
      "curl",
      "-sS",
      "--max-time",
      "20",
      "-H",
      "content-type: application/json",
      "--data-binary",
      "@-",
      info.control,
    ], JSON.stringify(commands));
    let body: unknown;
    try {
      body = JSON.parse(r.stdout);
    } catch {
      throw new Error(
        `fake kube control request failed (curl exit ${r.code}): ${r.stderr.trim() || r.stdout}`,
      );
    }
    if (!Array.isArray(body)) {
      throw new Error(
        `fake kube control request ${JSON.stringify(commands)} failed: ${
          (body as { error?: string }).error
        }`,
      );
    }
    return body;
  };
  return {
    url: info.url,
    kubeconfig,
    token,
    caFile,
    process: proc,
    control,
    call: async (op, ...args) => (await control([{ op, args }]))[0],
    async kubectl(args, input) {
      const argv = [
        "kubectl",
        "--kubeconfig",
        kubeconfig,
        "--cache-dir",
        join(lab.dir, "kube-cache"),
      ];
      const r = await lab.exec(lab.underlay.ns, [...argv, ...args], input);
      if (r.code !== 0) {
        throw new Error(
          `kubectl ${args.join(" ")} failed (${r.code}): ${r.stderr.trim() || r.stdout.trim()}`,
        );
      }
      return r.stdout;
    },
    stop: () => proc.stop(),
  };
}

if (import.meta.main) await serverMain(process.argv.slice(2));
