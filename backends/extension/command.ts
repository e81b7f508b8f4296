/**
 * Running the extension backend's shell commands: `sh -c <command>` with
 * extra environment variables and a standard input, in a process group of
 * its own so a time limit can kill everything the command started (a
 * pipeline, a `sleep` in the background). The runner is a function type so
 * the backend can be tested with a scripted fake and the injected clock.
 *
 * @module
 */

import { spawn } from "node:child_process";
import process from "node:process";

/** One command to run. */
export interface CommandSpec {
  /** The command line, run as `sh -c <command>`. */
  readonly command: string;
  /** Variables added to (or replacing those of) weft's own environment. */
  readonly env: Readonly<Record<string, string>>;
  /** Written to standard input, which is then closed. */
  readonly stdin: string;
  /** Aborting kills the command's whole process group (SIGKILL). */
  readonly signal: AbortSignal;
}

/** How a command ended. */
export interface CommandResult {
  /** Exit status; null when a signal ended it. */
  readonly exitCode: number | null;
  /** The signal that ended it (e.g. `SIGKILL`), or null. */
  readonly signal: string | null;
  /** Standard output (UTF-8; at most {@link OUTPUT_LIMIT} bytes kept). */
  readonly stdout: string;
  /** Standard error (UTF-8; at most {@link OUTPUT_LIMIT} bytes kept). */
  readonly stderr: string;
  /** Why the command could not be started at all (e.g. `sh` missing), if so. */
  readonly startError?: string;
}

/**
 * Runs one command to its end. Never rejects: a command that cannot start
 * resolves with `startError`; an aborted one resolves once its process
 * group is dead.
 */
export type CommandRunner = (spec: CommandSpec) => Promise<CommandResult>;

/** Bytes of output kept per stream; the rest is dropped (and said so). */
export const OUTPUT_LIMIT = 1 << 20;

/** The shell flannel uses for every command. */
export const SHELL = "sh";

/**
 * The real {@link CommandRunner}: `sh -c <command>` through
 * node:child_process, detached into its own session and process group so
 * that abort can SIGKILL the group: the shell and everything it started.
 * Like Go's `exec.Cmd`, it resolves once stdout and stderr are closed (a
 * background process that keeps them open keeps the command running); a
 * process that detached its output may outlive the command.
 *
 * @param spec Command, environment, standard input, abort signal.
 * @returns How it ended, with its output.
 * @example
 * ```ts
 * const r = await shellRunner({ command: "read X; echo $X $SUBNET", env: { SUBNET: "10.5.2.0/24" },
 *   stdin: "hello\n", signal: AbortSignal.timeout(5000) });
 * r.stdout; // "hello 10.5.2.0/24\n"
 * ```
 */
export const shellRunner: CommandRunner = (spec) =>
  new Promise<CommandResult>((resolve) => {
    if (spec.signal.aborted) {
      resolve({ exitCode: null, signal: null, stdout: "", stderr: "", startError: "aborted" });
      return;
    }
    const child = spawn(SHELL, ["-c", spec.command], {
      stdio: ["pipe", "pipe", "pipe"],
      env: { ...process.env, ...spec.env },
      detached: true,
    });
    const out = new Capture();
    const err = new Capture();
    let startError: string | undefined;
    const killGroup = () => {
      if (child.pid === undefined) return;
      try {
        process.kill(-child.pid, "SIGKILL");
      } catch {
        // the group is already gone
      }
    };
    spec.signal.addEventListener("abort", killGroup, { once: true });
    child.stdout!.on("data", (c: Uint8Array) => out.add(c));
    child.stderr!.on("data", (c: Uint8Array) => err.add(c));
    child.stdin!.on("error", () => {}); // the command may exit without reading its input
    child.stdin!.end(spec.stdin);
    child.on("error", (e: Error) => {
      startError = `cannot start ${SHELL}: ${e.message}`;
    });
    child.on("close", (code: number | null, sig: string | null) => {
      spec.signal.removeEventListener("abort", killGroup);
      resolve({
        exitCode: code,
        signal: sig,
        stdout: out.text(),
        stderr: err.text(),
        ...(startError !== undefined ? { startError } : {}),
      });
    });
  });

/** Collects a stream up to {@link OUTPUT_LIMIT} bytes. */
class Capture {
  #chunks: Uint8Array[] = [];
  #size = 0;
  #dropped = 0;
  add(chunk: Uint8Array): void {
    const room = OUTPUT_LIMIT - this.#size;
    if (room <= 0) {
      this.#dropped += chunk.length;
      return;
    }
    const kept = chunk.length > room ? chunk.subarray(0, room) : chunk;
    this.#chunks.push(kept);
    this.#size += kept.length;
    this.#dropped += chunk.length - kept.length;
  }
  text(): string {
    const buf = new Uint8Array(this.#size);
    let off = 0;
    for (const c of this.#chunks) {
      buf.set(c, off);
      off += c.length;
    }
    const text = new TextDecoder().decode(buf);
    return this.#dropped ? `${text}\n[${this.#dropped} more bytes dropped]` : text;
  }
}

/**
 * Trim white space as Go's `strings.TrimSpace` does (flannel trims a
 * command's output with it): ASCII space, \t \n \v \f \r, U+0085, U+00A0
 * and the other Unicode white space — but not U+FEFF, which JavaScript's
 * `trim()` also removes.
 *
 * @param text Any text.
 * @returns The text without leading and trailing white space.
 * @example
 * ```ts
 * goTrimSpace("\u0085 aa:bb \n"); // "aa:bb"
 * goTrimSpace("\ufeffx"); // "\ufeffx"
 * ```
 */
export function goTrimSpace(text: string): string {
  return text.replace(GO_SPACE_EDGES, "");
}

const GO_SPACE =
  "\\t\\n\\v\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
const GO_SPACE_EDGES = new RegExp(`^[${GO_SPACE}]+|[${GO_SPACE}]+$`, "g");
