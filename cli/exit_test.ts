// The CLI as a real process, stopped with SIGTERM: it must end by itself —
// nothing forces the exit — promptly and with code 0, under Deno and under
// Bun. Each run happens in a throwaway network namespace (the agent enables
// ip_forward in its own namespace, never the host's).
//
// A small sh runs it and reports its pid and exit status: node:child_process
// under Deno reports a child it sent SIGTERM to as killed by the signal even
// when the child handled it and exited 0.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import process from "node:process";
import { createNetns, deleteNetns, run, sweepNetns } from "../testing/netns.ts";

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");
const PREFIX = "wcx";
const STATUS_PORT = 9100;
/** How long the process may take to exit after SIGTERM. */
const EXIT_DEADLINE_MS = 5000;
/** An on-link address nobody answers for: connections to it hang until the kernel gives up. */
const DEAD_API = "http://192.0.2.99:6443";

const RUNTIMES = {
  deno: (args: string[]) => [path.join(ROOT, "node_modules/.bin/deno"), "run", "-A", ...args],
  bun: (args: string[]) => [path.join(ROOT, "node_modules/.bin/bun"), ...args],
} as const;
type Runtime = keyof typeof RUNTIMES;

/** Resolve with the first output line matching, or reject at the deadline or exit. */
function waitForLine(
  child: ChildProcess,
  output: () => string,
  pattern: RegExp,
  timeoutMs: number,
): Promise<string> {
  return new Promise((resolve, reject) => {
    const check = () => {
      const line = output().split("\n").find((l) => pattern.test(l));
      if (line === undefined) return;
      done();
      resolve(line);
    };
    const onExit = (code: number | null) => {
      done();
      reject(new Error(`exited (${code}) before printing ${pattern}:\n${output().slice(-3000)}`));
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`no line matching ${pattern} within ${timeoutMs} ms:\n${output()}`));
    }, timeoutMs);
    const done = () => {
      clearTimeout(timer);
      child.stderr!.off("data", check);
      child.stdout!.off("data", check);
      child.off("exit", onExit);
    };
    child.stderr!.on("data", check);
    child.stdout!.on("data", check);
    child.on("exit", onExit);
    check();
  });
}

/** SIGKILL a process that may be gone already. */
function killQuietly(pid: number): void {
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    // already gone
  }
}

/** One run of the CLI until SIGTERM. */
interface Scenario {
  /** Flags besides the interface, files and JSON logs. */
  readonly flags: (dir: string) => string[];
  /** Extra environment. */
  readonly env?: Record<string, string>;
  /** Send SIGTERM once a log line matches. */
  readonly stopAfter: RegExp;
  /** Checks while it runs (namespace given). */
  readonly whileRunning?: (ns: string) => void;
}

/**
 * Start weft in a fresh namespace, wait for `stopAfter`, send SIGTERM and
 * wait for the exit status.
 */
async function stopWithSigterm(runtime: Runtime, scenario: Scenario) {
  sweepNetns(PREFIX);
  const ns = createNetns(PREFIX, runtime);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "weft-exit-"));
  let child: ChildProcess | undefined;
  let pid: number | undefined;
  let output = "";
  try {
    run("ip", ["-n", ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
    run("ip", ["-n", ns, "addr", "add", "192.0.2.5/24", "dev", "v0"]);
    run("ip", ["-n", ns, "link", "set", "v0", "up"]);
    run("ip", ["-n", ns, "link", "set", "v1", "up"]);
    const [cmd, ...args] = RUNTIMES[runtime]([
      path.join(ROOT, "mod.ts"),
      "--iface=v0",
      `--subnet-file=${path.join(dir, "subnet.env")}`,
      "--log-format=json",
      ...scenario.flags(dir),
    ]);
    const env = Object.entries(scenario.env ?? {}).map(([k, v]) => `${k}=${v}`);
    const script = 'ip netns exec "$0" env "$@" & echo "pid $!"; wait $!; echo "status $?"';
    child = spawn("sh", ["-c", script, ns, ...env, cmd, ...args], {
      cwd: ROOT,
      stdio: ["ignore", "pipe", "pipe"],
    });
    const collect = (chunk: Uint8Array) => void (output += new TextDecoder().decode(chunk));
    child.stdout!.on("data", collect);
    child.stderr!.on("data", collect);
    const announced = await waitForLine(child, () => output, /^pid \d+$/, 10_000);
    pid = Number(announced.slice(4));

    await waitForLine(child, () => output, scenario.stopAfter, 60_000);
    scenario.whileRunning?.(ns);

    const signalled = performance.now();
    process.kill(pid, "SIGTERM");
    const status = await waitForLine(child, () => output, /^status \d+$/, EXIT_DEADLINE_MS)
      .catch(() => null);
    const ms = performance.now() - signalled;
    assert.ok(
      status,
      `still running ${EXIT_DEADLINE_MS} ms after SIGTERM: something keeps it alive\n${
        output.slice(-3000)
      }`,
    );
    console.log(`${runtime}: exited ${ms.toFixed(0)} ms after SIGTERM`);
    assert.equal(
      status,
      "status 0",
      `exit status (143 = killed by SIGTERM)\n${output.slice(-3000)}`,
    );
    assert.match(output, /"msg":"signal received, stopping","signal":"SIGTERM"/);
    assert.match(output, /"msg":"stopped; lease and datapath left in place"/);
    return { dir, output };
  } finally {
    if (pid !== undefined) killQuietly(pid);
    if (child && child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    deleteNetns(ns);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

for (const runtime of ["deno", "bun"] as const) {
  Deno.test(`weft under ${runtime}, ready on the file store, exits by itself with code 0 soon after SIGTERM`, async () => {
    let subnetEnv = "";
    await stopWithSigterm(runtime, {
      flags: (dir) => {
        const config = path.join(dir, "net-conf.json");
        fs.writeFileSync(config, '{"Network":"10.5.0.0/16","Backend":{"Type":"alloc"}}');
        subnetEnv = path.join(dir, "subnet.env");
        return [
          `--lease-file=${path.join(dir, "leases.json")}`,
          `--net-config-path=${config}`,
          `--healthz-port=${STATUS_PORT}`,
        ];
      },
      stopAfter: /"msg":"ready"/,
      whileRunning: (ns) => {
        const readyz = run("ip", [
          ...["netns", "exec", ns, "curl", "-sS", "--max-time", "10"],
          `http://127.0.0.1:${STATUS_PORT}/readyz`,
        ]);
        assert.equal(readyz, "ok");
        assert.match(fs.readFileSync(subnetEnv, "utf8"), /^FLANNEL_NETWORK=10\.5\.0\.0\/16$/m);
      },
    });
  });

  Deno.test(`weft under ${runtime}, still looking for its Kubernetes node, exits with code 0 soon after SIGTERM`, async () => {
    await stopWithSigterm(runtime, {
      flags: (dir) => {
        const config = path.join(dir, "net-conf.json");
        fs.writeFileSync(config, '{"Network":"10.244.0.0/16","Backend":{"Type":"alloc"}}');
        return ["--kube-subnet-mgr", `--kube-api-url=${DEAD_API}`, `--net-config-path=${config}`];
      },
      env: { NODE_NAME: "n1" },
      stopAfter: /"msg":"Kubernetes API call failed, retrying"/,
    });
  });
}
