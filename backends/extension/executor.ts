/**
 * One run of an extension command, accounted for: a time limit on the
 * injected clock (the process group is killed when it passes), the result
 * classified (success, failure, timeout, error), counted in `/metrics`, and
 * what keeps failing kept on a board that `/readyz` and a gauge read.
 *
 * Metrics (on the agent's registry):
 * - `weft_extension_commands_total{command,result}` — runs by command (the
 *   config key, e.g. `SubnetAddCommand`) and result (`success`, `failure`:
 *   non-zero exit or killed by a signal, `timeout`, `error`: could not start);
 * - `weft_extension_commands_failing{command}` — commands whose last run
 *   failed and that are being retried;
 * - `weft_extension_command_duration_seconds` — run time of every command.
 *
 * @module
 */

import { linkedController } from "../../core/abort.ts";
import type { Clock } from "../../core/clock.ts";
import type { Registry as Metrics } from "../../core/metrics.ts";
import { type CommandResult, type CommandRunner, goTrimSpace } from "./command.ts";

/** The four commands, named by their config keys. */
export type CommandName =
  | "PreStartupCommand"
  | "PostStartupCommand"
  | "SubnetAddCommand"
  | "SubnetRemoveCommand";

/** Every command name, in the order a host meets them. */
export const COMMAND_NAMES: readonly CommandName[] = [
  "PreStartupCommand",
  "PostStartupCommand",
  "SubnetAddCommand",
  "SubnetRemoveCommand",
];

/** How one run went. */
export interface RunOutcome {
  readonly command: CommandName;
  /** `success` (exit 0), `failure` (non-zero exit or a signal), `timeout`, `error` (not started). */
  readonly result: "success" | "failure" | "timeout" | "error";
  /** What the runner reported. */
  readonly raw: CommandResult;
  /** Run time in ms on the injected clock. */
  readonly durationMs: number;
  /** One line for logs and /readyz: exit status and trimmed stderr, or the timeout. */
  readonly summary: string;
}

/** Stderr kept in a summary, characters. */
const SUMMARY_STDERR_CHARS = 500;

/**
 * Describe a result in one line: `exit status 2: RTNETLINK answers: File
 * exists`, `killed by SIGSEGV`, `timed out after 30 s (process group
 * killed)`, `could not start: …`.
 *
 * @param raw What the runner reported.
 * @param timedOutAfterMs Set when the time limit ended the run.
 * @returns The summary.
 */
export function summarize(raw: CommandResult, timedOutAfterMs?: number): string {
  let err = goTrimSpace(raw.stderr).replace(/\s*\n\s*/g, " | ");
  if (err.length > SUMMARY_STDERR_CHARS) err = `${err.slice(0, SUMMARY_STDERR_CHARS)}…`;
  const tail = err ? `: ${err}` : "";
  if (timedOutAfterMs !== undefined) {
    return `timed out after ${
      timedOutAfterMs / 1000
    } s (process group killed; raise Backend.CommandTimeoutSeconds if it needs longer)${tail}`;
  }
  if (raw.startError !== undefined) return `could not start: ${raw.startError}`;
  if (raw.exitCode === null) return `killed by ${raw.signal ?? "a signal"}${tail}`;
  return `exit status ${raw.exitCode}${tail}`;
}

/** One command that keeps failing, as {@link FailureBoard} holds it. */
export interface Failure {
  readonly command: CommandName;
  /** What it was run for: `this host`, or a peer such as `10.5.2.0/24 (192.0.2.12)`. */
  readonly subject: string;
  readonly summary: string;
  /** Failed runs in a row. */
  readonly attempts: number;
  /** When the next run is due (clock ms), if one is scheduled. */
  readonly retryAt?: number;
}

/**
 * The commands that keep failing, by an id of the caller's choice; keeps
 * the `weft_extension_commands_failing` gauge in step.
 */
export class FailureBoard {
  #entries = new Map<string, Failure>();
  #counts = Object.fromEntries(COMMAND_NAMES.map((n) => [n, 0])) as Record<CommandName, number>;
  readonly #onChange: (command: CommandName, failing: number) => void;

  /** @param onChange Told a command's failing count whenever it changes. */
  constructor(onChange: (command: CommandName, failing: number) => void = () => {}) {
    this.#onChange = onChange;
  }

  /** Record (or update) a failure. */
  set(id: string, failure: Failure): void {
    const before = this.#entries.get(id);
    this.#entries.set(id, failure);
    if (before?.command === failure.command) return;
    if (before) this.#count(before.command, -1);
    this.#count(failure.command, 1);
  }

  /** The failure recorded under `id`, if any. */
  get(id: string): Failure | undefined {
    return this.#entries.get(id);
  }

  /** Forget a failure (the command succeeded, or is no longer wanted). */
  clear(id: string): void {
    const before = this.#entries.get(id);
    if (!before) return;
    this.#entries.delete(id);
    this.#count(before.command, -1);
  }

  /** Current failures, oldest first. */
  list(): Failure[] {
    return [...this.#entries.values()];
  }

  /** The oldest failure, if any. */
  first(): Failure | undefined {
    return this.#entries.values().next().value;
  }

  /** Number of failures. */
  get size(): number {
    return this.#entries.size;
  }

  #count(command: CommandName, by: number): void {
    this.#counts[command] += by;
    this.#onChange(command, this.#counts[command]);
  }
}

/** Options of {@link CommandExecutor}. */
export interface ExecutorOptions {
  readonly runner: CommandRunner;
  readonly clock: Clock;
  /** Time limit of each run, ms. */
  readonly timeoutMs: number;
  readonly metrics: Metrics;
}

/** Runs commands with a time limit and counts them. */
export class CommandExecutor {
  readonly #options: ExecutorOptions;
  readonly #runs;
  readonly #failing;
  readonly #duration;
  /** Failures of this executor's commands. */
  readonly board: FailureBoard;

  /** @param options Runner, clock, time limit, metrics registry. */
  constructor(options: ExecutorOptions) {
    this.#options = options;
    const m = options.metrics;
    this.#runs = m.counter(
      "weft_extension_commands_total",
      "Extension backend command runs, by command and result (success, failure, timeout, error)",
    );
    this.#failing = m.gauge(
      "weft_extension_commands_failing",
      "Extension backend commands whose last run failed and that are being retried, by command",
    );
    this.#duration = m.histogram(
      "weft_extension_command_duration_seconds",
      "Run time of extension backend commands",
      [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    );
    this.board = new FailureBoard((command, n) => this.#failing.set(n, { command }));
    for (const command of COMMAND_NAMES) this.#failing.set(0, { command });
  }

  /**
   * Run one command under the time limit.
   *
   * @param name Which command (for metrics and messages).
   * @param command The command line (`sh -c`).
   * @param env Extra environment variables.
   * @param stdin Standard input.
   * @param signal Aborting kills the command early (shutdown); a run that
   *   was aborted reports `error`.
   * @returns How it went; never rejects.
   */
  async run(
    name: CommandName,
    command: string,
    env: Readonly<Record<string, string>>,
    stdin: string,
    signal?: AbortSignal,
  ): Promise<RunOutcome> {
    const { clock, timeoutMs, runner } = this.#options;
    const limit = linkedController({
      parents: [signal],
      timeoutMs,
      clock,
      what: name,
    });
    const start = clock.now();
    let raw: CommandResult;
    try {
      raw = await runner({ command, env, stdin, signal: limit.signal });
    } catch (e) {
      // a runner must not reject; if one does, it is a run that could not start
      raw = { exitCode: null, signal: null, stdout: "", stderr: "", startError: String(e) };
    } finally {
      limit.dispose();
    }
    const durationMs = clock.now() - start;
    const reason = limit.signal.reason;
    const timedOut = limit.signal.aborted && reason instanceof DOMException &&
      reason.name === "TimeoutError";
    let result: RunOutcome["result"];
    if (timedOut) result = "timeout";
    else if (limit.signal.aborted || raw.startError !== undefined) result = "error";
    else result = raw.exitCode === 0 ? "success" : "failure";
    const summary = result === "error" && raw.startError === undefined
      ? "stopped: weft is shutting down"
      : summarize(raw, timedOut ? timeoutMs : undefined);
    this.#runs.inc({ command: name, result });
    this.#duration.observe(durationMs / 1000);
    return { command: name, result, raw, durationMs, summary };
  }
}

/**
 * A startup command failed: the backend cannot register (the agent retries
 * with back-off and shows the message in `/readyz`).
 */
export class ExtensionCommandError extends Error {
  override name = "ExtensionCommandError";
  /** How the run went. */
  readonly outcome: RunOutcome;

  /**
   * @param outcome The failed run.
   * @param command The command line, quoted (shortened) in the message.
   */
  constructor(outcome: RunOutcome, command: string) {
    const shown = command.length > 120 ? `${command.slice(0, 120)}…` : command;
    super(
      `${outcome.command} ${
        JSON.stringify(shown)
      } failed: ${outcome.summary}; fix the command in Backend.${outcome.command} or what it depends on`,
    );
    this.outcome = outcome;
  }
}
