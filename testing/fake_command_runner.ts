/**
 * A scripted CommandRunner for the extension backend's unit tests: every
 * call is recorded (command, environment, standard input) and answered by a
 * script — a result, or "hang" until the run's signal aborts (the time
 * limit or shutdown), which then ends it as SIGKILL would.
 *
 * @module
 */

import type { CommandResult, CommandRunner, CommandSpec } from "../backends/extension/command.ts";

/** What the script answers for one call. */
export type FakeAnswer = Partial<CommandResult> | "hang";

/** One recorded call. */
export interface FakeCall {
  readonly command: string;
  readonly env: Readonly<Record<string, string>>;
  readonly stdin: string;
  /** Set when the run's signal aborted before it answered (a hang that was killed). */
  killed: boolean;
  /** Whether it is still running. */
  running: boolean;
}

/** The fake and what it saw. */
export class FakeCommandRunner {
  /** Every call, in order. */
  readonly calls: FakeCall[] = [];
  /** Most calls running at the same time so far. */
  maxConcurrent = 0;
  #script: (spec: CommandSpec, call: FakeCall) => FakeAnswer;
  #hung = new Set<() => void>();

  /** @param script Answers a call (default: success, no output). */
  constructor(script: (spec: CommandSpec, call: FakeCall) => FakeAnswer = () => ({})) {
    this.#script = script;
  }

  /** Replace the script (e.g. make a failing command succeed). */
  setScript(script: (spec: CommandSpec, call: FakeCall) => FakeAnswer): void {
    this.#script = script;
  }

  /** Calls still running. */
  get running(): number {
    return this.calls.filter((c) => c.running).length;
  }

  /** Calls whose command line is `command`. */
  callsOf(command: string): FakeCall[] {
    return this.calls.filter((c) => c.command === command);
  }

  /** Let every hanging call finish with success (exit 0). */
  releaseHung(): void {
    for (const release of [...this.#hung]) release();
  }

  /** The runner to inject. */
  readonly runner: CommandRunner = (spec) => {
    const call: FakeCall = {
      command: spec.command,
      env: { ...spec.env },
      stdin: spec.stdin,
      killed: false,
      running: true,
    };
    this.calls.push(call);
    this.maxConcurrent = Math.max(this.maxConcurrent, this.running);
    const answer = this.#script(spec, call);
    const done = (r: CommandResult) => {
      call.running = false;
      return r;
    };
    if (answer !== "hang") {
      return Promise.resolve(done({
        exitCode: answer.exitCode === undefined ? 0 : answer.exitCode,
        signal: answer.signal ?? null,
        stdout: answer.stdout ?? "",
        stderr: answer.stderr ?? "",
        ...(answer.startError !== undefined ? { startError: answer.startError } : {}),
      }));
    }
    return new Promise<CommandResult>((resolve) => {
      const release = () => {
        this.#hung.delete(release);
        spec.signal.removeEventListener("abort", onAbort);
        resolve(done({ exitCode: 0, signal: null, stdout: "", stderr: "" }));
      };
      const onAbort = () => {
        this.#hung.delete(release);
        call.killed = true;
        resolve(done({ exitCode: null, signal: "SIGKILL", stdout: "", stderr: "" }));
      };
      this.#hung.add(release);
      if (spec.signal.aborted) return onAbort();
      spec.signal.addEventListener("abort", onAbort, { once: true });
    });
  };
}
