/**
 * Peer commands, once each: the desired peer set (from the leases) is
 * compared with the peers whose `SubnetAddCommand` succeeded (kept in the
 * state file), and per peer the difference is worked off:
 *
 * | desired \ applied | none           | same state | other state              |
 * |-------------------|----------------|------------|--------------------------|
 * | none              | —              | remove     | remove                   |
 * | present           | add            | —          | remove (old), then add   |
 *
 * ("remove" without a `SubnetRemoveCommand`, or "add" without a
 * `SubnetAddCommand`, only updates the record.) A peer whose add never
 * succeeded gets no remove: there is nothing to undo, and a remove of
 * something absent (`ip route del`) would fail for ever.
 *
 * Each peer has at most one worker, so its commands run in order; at most
 * `maxParallel` commands run at once across peers. A failed run is retried
 * with exponential back-off (on the injected clock) until it succeeds or
 * the peer's desired state changes, which wakes the worker at once. A
 * resync that changes nothing runs nothing.
 *
 * @module
 */

import { backoff, type Clock } from "../../core/clock.ts";
import { linkedController, sleepQuietly } from "../../core/abort.ts";
import type { Logger } from "../../core/log.ts";
import type { CommandExecutor, CommandName, RunOutcome } from "./executor.ts";
import type { PeerState, PeerStateFile, StateBasis } from "./state.ts";

/** Options of {@link PeerCommands}. */
export interface PeerCommandsOptions {
  readonly executor: CommandExecutor;
  readonly stateFile: PeerStateFile;
  /** What the adds depend on now (this host's BackendData, the add command). */
  readonly basis: StateBasis;
  /** `SubnetAddCommand` ("" = none). */
  readonly addCommand: string;
  /** `SubnetRemoveCommand` ("" = none). */
  readonly removeCommand: string;
  /** Commands running at once across peers. */
  readonly maxParallel: number;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly random?: () => number;
  /** First retry delay, ms (default 1000); doubles per failure. */
  readonly retryBaseMs?: number;
  /** Longest retry delay, ms (default 30 000). */
  readonly retryMaxMs?: number;
}

type Op =
  | { readonly kind: "add" | "remove"; readonly peer: PeerState }
  | { readonly kind: "record"; readonly peer: PeerState }
  | { readonly kind: "forget" };

interface Worker {
  /** Identity of the op being retried (a new op starts at attempt 0). */
  opId: string;
  attempt: number;
  /** Ends a back-off pause early. */
  wake: AbortController | null;
  /** True while running, or waiting for a slot or a command (not while pausing). */
  busy: boolean;
}

function opId(op: Op | null): string {
  if (op === null) return "";
  return op.kind === "forget" ? "forget" : `${op.kind} ${JSON.stringify(op.peer)}`;
}

/** Whether two peer states give the commands the same inputs. */
export function samePeerState(a: PeerState | undefined, b: PeerState | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  return a.subnet === b.subnet && a.ipv6Subnet === b.ipv6Subnet && a.publicIP === b.publicIP &&
    a.publicIPv6 === b.publicIPv6 && a.backendData === b.backendData;
}

/**
 * The environment of a peer's add and remove commands: flannel's `SUBNET`
 * and `PUBLIC_IP`, plus `IPV6SUBNET` and `PUBLIC_IPV6` (empty when the
 * peer has none).
 *
 * @param peer The peer.
 * @returns The variables.
 */
export function peerEnv(peer: PeerState): Record<string, string> {
  return {
    SUBNET: peer.subnet,
    IPV6SUBNET: peer.ipv6Subnet ?? "",
    PUBLIC_IP: peer.publicIP,
    PUBLIC_IPV6: peer.publicIPv6 ?? "",
  };
}

/** A peer as messages name it: `10.5.2.0/24 (192.0.2.12)`. */
export function describePeer(peer: PeerState): string {
  return `${peer.subnet}${peer.ipv6Subnet ? ` ${peer.ipv6Subnet}` : ""} (${peer.publicIP})`;
}

/** The per-peer command reconciler (see the module note). */
export class PeerCommands {
  readonly #o: PeerCommandsOptions;
  #desired = new Map<string, PeerState>();
  readonly #applied: Map<string, PeerState>;
  readonly #workers = new Map<string, Worker>();
  readonly #running = new Set<Promise<void>>();
  readonly #slots: Slots;
  readonly #stop = new AbortController();
  #idleWaiters: (() => void)[] = [];
  /** Workers running a command or waiting for a slot. */
  #busy = 0;
  /** Peers still waiting for their first attempt after the first full sync. */
  #firstPass: Set<string> | null = null;
  #synced = false;
  #stateError: string | null = null;

  /**
   * Load the state file; a state written for another basis (this host's
   * BackendData or the add command changed) is dropped, so every peer's
   * add runs again.
   *
   * @param options Commands, executor, state file, limits, clock, logger.
   */
  constructor(options: PeerCommandsOptions) {
    this.#o = options;
    this.#slots = new Slots(options.maxParallel);
    const log = options.logger;
    const loaded = options.stateFile.load();
    for (const p of loaded.problems) log.warn("extension state partly unreadable", { problem: p });
    let peers = loaded.peers;
    const basis = loaded.basis;
    if (
      basis && (basis.hostBackendData !== options.basis.hostBackendData ||
        basis.addCommand !== options.basis.addCommand)
    ) {
      log.info("the recorded peer commands no longer apply; every peer's add runs again", {
        why: basis.addCommand !== options.basis.addCommand
          ? "SubnetAddCommand changed"
          : "this host's BackendData changed (PreStartupCommand rebuilt the datapath)",
        peers: peers.size,
      });
      peers = new Map();
    } else if (peers.size) {
      log.info("peer commands recorded before this start", {
        peers: peers.size,
        file: options.stateFile.snapshotPath,
      });
    }
    this.#applied = new Map(peers);
    this.#save(() => options.stateFile.reset(options.basis, this.#applied));
  }

  /**
   * Make `peers` the whole desired set. Peers recorded but absent get their
   * remove; only peers whose state changed (or that have work left) are
   * touched.
   *
   * @param peers Desired peer states by lease key.
   */
  setAll(peers: ReadonlyMap<string, PeerState>): void {
    const previous = this.#desired;
    this.#desired = new Map(peers);
    const keys = new Set([...previous.keys(), ...peers.keys(), ...this.#applied.keys()]);
    if (!this.#synced) {
      this.#synced = true;
      this.#firstPass = new Set([...keys].filter((k) => this.#nextOp(k) !== null));
    }
    for (const key of keys) {
      this.#kick(key, !samePeerState(previous.get(key), peers.get(key)));
    }
  }

  /**
   * Change one peer of the desired set.
   *
   * @param key Its lease key.
   * @param peer Its new state, or undefined when it is gone.
   */
  set(key: string, peer: PeerState | undefined): void {
    const before = this.#desired.get(key);
    if (peer) this.#desired.set(key, peer);
    else this.#desired.delete(key);
    this.#kick(key, !samePeerState(before, peer));
  }

  /** Peers whose add succeeded (and that were not removed since), by key. */
  applied(): ReadonlyMap<string, PeerState> {
    return this.#applied;
  }

  /**
   * Why the peer commands are not done: the first pass still running, or
   * the state file failing (failures of commands are on the executor's board).
   */
  pendingReason(): string | null {
    if (this.#stateError) return this.#stateError;
    if (this.#firstPass?.size) {
      return `running the first extension commands for ${this.#firstPass.size} peer(s)`;
    }
    return null;
  }

  /**
   * Resolves when no worker is running a command or waiting for a slot
   * (workers pausing before a retry do not count).
   */
  idle(): Promise<void> {
    if (this.#busy === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /**
   * Stop: no new command starts, pauses end; commands already running are
   * waited for (their time limit bounds the wait) and their result recorded.
   */
  async stop(): Promise<void> {
    this.#stop.abort();
    while (this.#running.size) await Promise.all(this.#running);
  }

  #kick(key: string, changed: boolean): void {
    const worker = this.#workers.get(key);
    if (worker) {
      if (changed) worker.wake?.abort();
      return;
    }
    if (this.#stop.signal.aborted || this.#nextOp(key) === null) return;
    const w: Worker = { opId: "", attempt: 0, wake: null, busy: false };
    this.#setBusy(w, true);
    this.#workers.set(key, w);
    const p = this.#work(key, w).finally(() => this.#running.delete(p));
    this.#running.add(p);
  }

  async #work(key: string, w: Worker): Promise<void> {
    try {
      await this.#workOff(key, w);
    } finally {
      // synchronously with the last check of the op: a change arriving now starts a new worker
      this.#workers.delete(key);
      this.#firstDone(key);
      this.#o.executor.board.clear(key);
      this.#setBusy(w, false);
    }
  }

  #nextOp(key: string): Op | null {
    const want = this.#desired.get(key);
    const have = this.#applied.get(key);
    if (have && samePeerState(want, have)) return null;
    if (have) return this.#o.removeCommand ? { kind: "remove", peer: have } : { kind: "forget" };
    if (want) {
      return this.#o.addCommand ? { kind: "add", peer: want } : { kind: "record", peer: want };
    }
    return null;
  }

  async #workOff(key: string, w: Worker): Promise<void> {
    const { executor, clock, logger: log } = this.#o;
    while (!this.#stop.signal.aborted) {
      const op = this.#nextOp(key);
      if (op === null) return;
      const id = opId(op);
      if (id !== w.opId) {
        w.opId = id;
        w.attempt = 0;
        executor.board.clear(key);
      }
      if (op.kind === "forget" || op.kind === "record") {
        this.#record(key, op.kind === "record" ? op.peer : undefined);
        continue;
      }
      this.#setBusy(w, true);
      const release = await this.#slots.acquire(this.#stop.signal);
      if (!release) return;
      const name: CommandName = op.kind === "add" ? "SubnetAddCommand" : "SubnetRemoveCommand";
      let outcome: RunOutcome;
      try {
        if (opId(this.#nextOp(key)) !== id) continue; // changed while waiting for a slot
        outcome = await executor.run(
          name,
          op.kind === "add" ? this.#o.addCommand : this.#o.removeCommand,
          peerEnv(op.peer),
          op.peer.backendData + "\n",
        );
      } finally {
        release();
      }
      this.#firstDone(key);
      const fields = {
        command: name,
        subnet: op.peer.subnet,
        publicIP: op.peer.publicIP,
        ms: outcome.durationMs,
      };
      if (outcome.result === "success") {
        const out = outcome.raw.stdout.trim();
        log.info(
          w.attempt ? `${name} succeeded after ${w.attempt} failed attempt(s)` : `ran ${name}`,
          {
            ...fields,
            ...(out ? { output: out.slice(0, 500) } : {}),
          },
        );
        executor.board.clear(key);
        w.attempt = 0;
        this.#record(key, op.kind === "add" ? op.peer : undefined);
        continue;
      }
      w.attempt++;
      const delay = backoff(w.attempt - 1, {
        base: this.#o.retryBaseMs ?? 1000,
        max: this.#o.retryMaxMs ?? 30_000,
        random: this.#o.random,
      });
      const previous = executor.board.get(key);
      executor.board.set(key, {
        command: name,
        subject: describePeer(op.peer),
        summary: outcome.summary,
        attempts: w.attempt,
        retryAt: clock.now() + delay,
      });
      const details = {
        ...fields,
        result: outcome.result,
        exitCode: outcome.raw.exitCode,
        ...(outcome.raw.signal ? { signal: outcome.raw.signal } : {}),
        stderr: outcome.raw.stderr.trim().slice(0, 2000),
        attempt: w.attempt,
        retryInMs: delay,
      };
      if (w.attempt === 1 || previous?.summary !== outcome.summary || w.attempt % 10 === 0) {
        log.warn(`${name} failed, retrying`, details);
      } else {
        log.debug(`${name} still failing`, details);
      }
      this.#setBusy(w, false);
      w.wake = new AbortController();
      const pause = linkedController({ parents: [this.#stop.signal, w.wake.signal] });
      try {
        await sleepQuietly(clock, delay, pause.signal);
      } finally {
        pause.dispose();
        w.wake = null;
      }
    }
  }

  #record(key: string, peer: PeerState | undefined): void {
    const file = this.#o.stateFile;
    if (peer) {
      this.#applied.set(key, peer);
      this.#save(() => file.set(key, peer));
    } else {
      this.#applied.delete(key);
      this.#save(() => file.delete(key));
    }
  }

  #save(write: () => void): void {
    try {
      write();
      if (this.#stateError) {
        this.#o.logger.info("extension state file written again", {
          file: this.#o.stateFile.snapshotPath,
        });
      }
      this.#stateError = null;
    } catch (e) {
      const msg = `cannot write the extension state ${this.#o.stateFile.snapshotPath}: ${
        (e as Error).message
      }; commands may run again after a restart — fix the directory or set Backend.StateDir`;
      if (msg !== this.#stateError) this.#o.logger.error(msg);
      this.#stateError = msg;
    }
  }

  #firstDone(key: string): void {
    if (!this.#firstPass?.delete(key)) return;
    if (this.#firstPass.size === 0) this.#firstPass = null;
  }

  #setBusy(w: Worker, busy: boolean): void {
    if (w.busy === busy) return;
    w.busy = busy;
    this.#busy += busy ? 1 : -1;
    if (this.#busy > 0) return;
    const waiters = this.#idleWaiters;
    this.#idleWaiters = [];
    for (const resolve of waiters) resolve();
  }
}

/** A counting semaphore whose waits end (with null) when a signal aborts. */
class Slots {
  #free: number;
  #queue: ((release: (() => void) | null) => void)[] = [];

  constructor(size: number) {
    this.#free = size;
  }

  acquire(signal: AbortSignal): Promise<(() => void) | null> {
    if (signal.aborted) return Promise.resolve(null);
    if (this.#free > 0) {
      this.#free--;
      return Promise.resolve(this.#releaser());
    }
    return new Promise((resolve) => {
      const entry = (release: (() => void) | null) => {
        signal.removeEventListener("abort", onAbort);
        resolve(release);
      };
      const onAbort = () => {
        this.#queue = this.#queue.filter((e) => e !== entry);
        resolve(null);
      };
      signal.addEventListener("abort", onAbort, { once: true });
      this.#queue.push(entry);
    });
  }

  #releaser(): () => void {
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const next = this.#queue.shift();
      if (next) next(this.#releaser());
      else this.#free++;
    };
  }
}
