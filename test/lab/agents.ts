/**
 * Running real weft agents (the CLI, `mod.ts`) in lab hosts, under Deno or
 * Bun, with JSON logs the tests can wait on. Used by the e2e tests, the
 * demo and the benchmarks.
 *
 * @module
 */

import * as path from "node:path";
import type { Lab, LabHost, LabProcess } from "./lab.ts";
import { REPO_ROOT } from "./lab.ts";
import { waitFor } from "../../testing/wait.ts";

/** Which runtime runs an agent. */
export type AgentRuntime = "deno" | "bun";

/** The runtime binaries installed by npm (real executables, no node wrapper). */
export const RUNTIME_BIN: Record<AgentRuntime, string> = {
  deno: path.join(REPO_ROOT, "node_modules/.bin/deno"),
  bun: path.join(REPO_ROOT, "node_modules/.bin/bun"),
};

/**
 * The V8 flags the README recommends for an agent under Deno on a large
 * cluster (`deno run --v8-flags=…`, or `DENO_V8_FLAGS`): a young generation
 * of 1 MB semi-spaces, V8's optimize-for-size heap growth, and no
 * optimizing compiler above Sparkplug (`--max-opt=1`: Maglev and TurboFan
 * took about 10 MB of an agent of 5000 peers, and an agent's time goes to
 * the kernel and the store), which keep that agent under 100 MB.
 */
export const DENO_AGENT_V8_FLAGS = "--max-semi-space-size=1,--optimize-for-size,--max-opt=1";

/**
 * The environment the README recommends for the binary (Bun, `--smol` built
 * in) on a large cluster: JavaScriptCore without its optimizing compilers
 * (`BUN_JSC_useDFGJIT=0`: no DFG, and so no FTL), the counterpart of
 * `--max-opt=1` above. The unit and the DaemonSet in `examples/` set it.
 */
export const BINARY_AGENT_ENV: Readonly<Record<string, string>> = { BUN_JSC_useDFGJIT: "0" };

/** The command line that runs `mod.ts` with a runtime. */
export function agentCommand(runtime: AgentRuntime, args: readonly string[]): {
  cmd: string;
  args: string[];
} {
  const entry = path.join(REPO_ROOT, "mod.ts");
  return runtime === "deno"
    ? { cmd: RUNTIME_BIN.deno, args: ["run", "-A", entry, ...args] }
    : { cmd: RUNTIME_BIN.bun, args: [entry, ...args] };
}

/** Options of {@link startAgent}. */
export interface StartAgentOptions {
  /** Default deno. */
  readonly runtime?: AgentRuntime;
  /** Flags (store, backend-related, healthz…). `--subnet-file` and `--log-format json` are added. */
  readonly args?: readonly string[];
  readonly env?: Record<string, string>;
  /** subnet.env path (default `<lab.dir>/<host ns>.subnet.env`). */
  readonly subnetFile?: string;
  /**
   * A command the agent's command line is appended to, e.g. `["sh", "-c",
   * "mount … && exec \"$@\"", "sh"]` to run it with a read-only /proc/sys.
   */
  readonly wrap?: readonly string[];
  /**
   * Program and arguments that run weft instead of `mod.ts` under
   * `runtime`, e.g. `[bun, "dist/weft.js"]` or `["dist/weft"]` (a built form).
   */
  readonly command?: readonly string[];
}

/** One JSON log record of an agent. */
export interface AgentLogRecord {
  readonly ts: string;
  readonly level: string;
  readonly msg: string;
  readonly [field: string]: unknown;
}

/** A running agent. */
export interface AgentProcess {
  readonly host: LabHost;
  readonly runtime: AgentRuntime;
  readonly subnetFile: string;
  readonly process: LabProcess;
  /** Parsed JSON log records so far. */
  logs(): AgentLogRecord[];
  /**
   * Wait for the agent's "ready" line.
   *
   * @returns The subnet it reported (CIDR).
   * @throws {Error} On timeout or exit, with the agent's output.
   */
  waitReady(timeoutMs?: number): Promise<string>;
  /** Wait for a log record matching `pred` that appears after `since` records. */
  waitLog(
    pred: (r: AgentLogRecord) => boolean,
    timeoutMs?: number,
    since?: number,
  ): Promise<AgentLogRecord>;
  /** SIGKILL (no clean stop). */
  kill9(): Promise<void>;
  /** SIGTERM and wait. */
  stop(): Promise<number>;
}

/**
 * Start an agent in a lab host.
 *
 * @param lab The lab.
 * @param host The host namespace to run in.
 * @param options Runtime, flags, environment.
 * @returns The agent handle.
 */
export function startAgent(lab: Lab, host: LabHost, options: StartAgentOptions = {}): AgentProcess {
  const runtime = options.runtime ?? "deno";
  const subnetFile = options.subnetFile ?? path.join(lab.dir, `${host.ns}.subnet.env`);
  const flags = ["--subnet-file", subnetFile, "--log-format", "json", ...(options.args ?? [])];
  const { cmd, args } = options.command
    ? { cmd: options.command[0], args: [...options.command.slice(1), ...flags] }
    : agentCommand(runtime, flags);
  const [first, ...rest] = [...(options.wrap ?? []), cmd, ...args];
  const proc = lab.spawn(host.ns, first, rest, { cwd: REPO_ROOT, env: options.env });
  const logs = (): AgentLogRecord[] => {
    const out: AgentLogRecord[] = [];
    for (const line of proc.stderr().split("\n")) {
      if (!line.startsWith("{")) continue;
      try {
        out.push(JSON.parse(line));
      } catch {
        // a partial last line
      }
    }
    return out;
  };
  const waitLog = async (
    pred: (r: AgentLogRecord) => boolean,
    timeoutMs = 20_000,
    since = 0,
  ): Promise<AgentLogRecord> => {
    const output = () => `output:\n${proc.stderr().slice(-4000)}\n${proc.stdout().slice(-1000)}`;
    let hit: AgentLogRecord | undefined;
    await waitFor(
      `a log record matching ${pred} from the agent on ${host.ns} (${runtime})`,
      () => {
        hit = logs().slice(since).find(pred);
        if (hit) return null;
        const code = proc.exitCode();
        if (code !== null) {
          throw new Error(`agent on ${host.ns} (${runtime}) exited with ${code}; ${output()}`);
        }
        return `none yet; ${output()}`;
      },
      timeoutMs,
      10,
    );
    return hit!;
  };
  return {
    host,
    runtime,
    subnetFile,
    process: proc,
    logs,
    waitLog,
    async waitReady(timeoutMs = 30_000) {
      const r = await waitLog((x) => x.msg === "ready", timeoutMs);
      return String(r.subnet);
    },
    async kill9() {
      proc.kill("SIGKILL");
      await proc.exited;
    },
    stop: () => proc.stop(),
  };
}
