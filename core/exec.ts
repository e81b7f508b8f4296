/**
 * Running helper programs (`iptables-restore`, `nft`, `ip`, CNI plugins)
 * behind one injectable function type, so rule and pod code can be tested
 * with a recording fake and run inside a network namespace by wrapping.
 *
 * @module
 */

import { spawn } from "node:child_process";
import process from "node:process";

/** What a finished command produced. */
export interface ExecResult {
  /** Exit status; 128+N when killed by signal N; 127 when the program was not found. */
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Options of one command run. */
export interface ExecOptions {
  /** Text written to the command's standard input (then closed). */
  readonly input?: string;
  /** Extra environment variables (added to this process's environment). */
  readonly env?: Readonly<Record<string, string>>;
  /** Abort kills the command (SIGKILL). */
  readonly signal?: AbortSignal;
  /**
   * Start it in a new session (setsid), so what it leaves running (a
   * daemon) is not in this process's group and outlives a kill of it.
   */
  readonly detached?: boolean;
}

/**
 * Runs a program with arguments and collects its output. It resolves also
 * when the exit status is non-zero; see {@link run} for the throwing form.
 */
export type Exec = (
  cmd: string,
  args: readonly string[],
  options?: ExecOptions,
) => Promise<ExecResult>;

/** A helper program failed: carries the command line, exit status and stderr. */
export class CommandError extends Error {
  /** The command line that failed. */
  readonly argv: readonly string[];
  /** Its exit status. */
  readonly code: number;
  /** What it wrote to standard error. */
  readonly stderr: string;

  /**
   * @param argv The command line.
   * @param result What it produced.
   * @param hint How to fix it, appended to the message.
   */
  constructor(argv: readonly string[], result: ExecResult, hint = "") {
    const err = result.stderr.trim() || result.stdout.trim() || "(no output)";
    super(
      `Command failed with exit status ${result.code}: ${argv.join(" ")}: ${err}${
        hint ? ` (${hint})` : ""
      }`,
    );
    this.name = "CommandError";
    this.argv = argv;
    this.code = result.code;
    this.stderr = result.stderr;
  }
}

/**
 * The real {@link Exec}: spawns the program with node:child_process (no
 * shell), in the current network namespace.
 *
 * @param cmd Program name (looked up in PATH) or path.
 * @param args Arguments.
 * @param options Standard input, environment, abort signal.
 * @returns Exit status and output; code 127 with a message in stderr when
 *   the program cannot be started.
 * @example
 * ```ts
 * const r = await systemExec("ip", ["-j", "link", "show"]);
 * ```
 */
export const systemExec: Exec = (cmd, args, options = {}) =>
  new Promise<ExecResult>((resolve) => {
    const child = spawn(cmd, [...args], {
      stdio: ["pipe", "pipe", "pipe"],
      env: options.env ? { ...process.env, ...options.env } : undefined,
      signal: options.signal,
      killSignal: "SIGKILL",
      detached: options.detached ?? false,
    });
    const out: Uint8Array[] = [];
    const err: Uint8Array[] = [];
    let spawnError: Error | undefined;
    child.stdout!.on("data", (c: Uint8Array) => out.push(c));
    child.stderr!.on("data", (c: Uint8Array) => err.push(c));
    child.on("error", (e: Error) => {
      spawnError = e;
    });
    child.stdin!.on("error", () => {}); // the program may exit before reading its input
    child.stdin!.end(options.input ?? "");
    child.on("close", (code: number | null, sig: NodeJS.Signals | null) => {
      const dec = new TextDecoder();
      const stdout = dec.decode(concat(out));
      let stderr = dec.decode(concat(err));
      let status = code ?? (sig ? 128 + signalNumber(sig) : 1);
      if (spawnError && code === null) {
        const notFound = (spawnError as NodeJS.ErrnoException).code === "ENOENT";
        status = notFound ? 127 : status;
        stderr += `${cmd}: ${spawnError.message}`;
      }
      resolve({ code: status, stdout, stderr });
    });
  });

function concat(chunks: Uint8Array[]): Uint8Array {
  const len = chunks.reduce((n, c) => n + c.length, 0);
  const buf = new Uint8Array(len);
  let off = 0;
  for (const c of chunks) {
    buf.set(c, off);
    off += c.length;
  }
  return buf;
}

function signalNumber(sig: string): number {
  const table: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15 };
  return table[sig] ?? 0;
}

/**
 * An {@link Exec} that runs every command inside the named network
 * namespace (`ip netns exec <ns> …`). Used by tests and the lab to drive
 * code that normally runs in the agent's own namespace.
 *
 * @param ns Network namespace name (as in `ip netns list`).
 * @param base The exec to wrap.
 * @returns The wrapping exec.
 * @example
 * ```ts
 * const exec = netnsExec("wlb1-h1");
 * await exec("iptables", ["-t", "nat", "-S"]);
 * ```
 */
export function netnsExec(ns: string, base: Exec = systemExec): Exec {
  return (cmd, args, options) => base("ip", ["netns", "exec", ns, cmd, ...args], options);
}

/**
 * Run a command and return its standard output, throwing when it fails.
 *
 * @param exec How to run it.
 * @param cmd Program.
 * @param args Arguments.
 * @param options Standard input, environment, abort signal.
 * @param hint How to fix a failure, added to the error message.
 * @returns Standard output.
 * @throws {CommandError} When the exit status is not 0.
 */
export async function run(
  exec: Exec,
  cmd: string,
  args: readonly string[],
  options?: ExecOptions,
  hint?: string,
): Promise<string> {
  const r = await exec(cmd, args, options);
  if (r.code !== 0) throw new CommandError([cmd, ...args], r, hint);
  return r.stdout;
}

/**
 * A recording fake {@link Exec} for unit tests: each call is logged and
 * answered by `respond` (default: success with empty output).
 *
 * @param respond Produces the result of one call.
 * @returns The exec and the list of calls it received.
 */
export function recordingExec(
  respond: (argv: string[], input: string | undefined) => Partial<ExecResult> = () => ({}),
): { exec: Exec; calls: { argv: string[]; input?: string }[] } {
  const calls: { argv: string[]; input?: string }[] = [];
  const exec: Exec = (cmd, args, options) => {
    const argv = [cmd, ...args];
    calls.push({ argv, input: options?.input });
    const r = respond(argv, options?.input);
    return Promise.resolve({ code: r.code ?? 0, stdout: r.stdout ?? "", stderr: r.stderr ?? "" });
  };
  return { exec, calls };
}
