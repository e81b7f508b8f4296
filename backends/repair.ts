/**
 * The repair loop every backend with kernel state runs: drift reports (a
 * deleted route, a device set down, lost events) and a slow periodic timer
 * become repair requests, which are batched briefly and carried out one at
 * a time; a failed repair is retried with back-off.
 *
 * A request is either *full* (sync everything: after lost events, a device
 * change, the periodic resync) or a set of peer keys (re-apply only these
 * peers' entries). Keys requested while a full repair is pending are part
 * of it.
 *
 * @module
 */

import { linkedController, sleepQuietly, whenAborted } from "../core/abort.ts";
import { backoff, type Clock } from "../core/clock.ts";
import type { Logger } from "../core/log.ts";
import type { Drift } from "../datapath/types.ts";

/** What to repair. */
export interface RepairWork {
  /** Sync everything. */
  readonly full: boolean;
  /** Else: re-apply these peers' entries. */
  readonly keys: ReadonlySet<string>;
  /** Why, first reason first (for logs). */
  readonly reason: string;
}

/** A repair request. */
export interface RepairRequest {
  readonly full?: boolean;
  readonly keys?: Iterable<string>;
  readonly reason: string;
}

/** Options for {@link Repairs}. */
export interface RepairOptions {
  /** Drift reports to turn into requests; absent: only the periodic resync. */
  readonly drift?: (signal: AbortSignal) => AsyncIterable<Drift>;
  /** The entry table whose entry drift counts (others' is ignored). */
  readonly table?: string;
  /** Carry out a repair; throw to have it retried with back-off. */
  readonly repair: (work: RepairWork, signal: AbortSignal) => Promise<void>;
  readonly clock: Clock;
  readonly logger: Logger;
  /** Wait after the first request, to batch a burst. Default 20 ms. */
  readonly debounceMs?: number;
  /**
   * Full resync even without drift. Default 60 s; 0 = never. A function is
   * asked afresh each time the loop goes idle (a target with its own
   * schedule, e.g. a cloud listing due at a jittered time).
   */
  readonly resyncIntervalMs?: number | (() => number);
  /** Called after each successful repair with its reason (tests, metrics). */
  readonly onRepaired?: (reason: string) => void;
}

/**
 * Requests in, repairs out: call {@link Repairs.request} from anywhere,
 * {@link Repairs.run} carries them out until its signal aborts.
 *
 * @example
 * ```ts
 * const repairs = new Repairs({ drift: (s) => dp.drift(s), repair, clock, logger });
 * const running = repairs.run(signal);
 * repairs.request({ keys: ["10.5.2.0/24"], reason: "a write failed" });
 * ```
 */
export class Repairs {
  readonly #options: RepairOptions;
  #full = false;
  #keys = new Set<string>();
  #reason: string | null = null;
  #wake: (() => void) | undefined;

  /** @param options Drift source, repair function, clock, logger, timings. */
  constructor(options: RepairOptions) {
    this.#options = options;
  }

  /** Ask for a repair (merged with any pending one). */
  request(r: RepairRequest): void {
    if (r.full) this.#full = true;
    for (const k of r.keys ?? []) this.#keys.add(k);
    this.#reason ??= r.reason;
    this.#wake?.();
  }

  /** Turn a drift report into a request. */
  #onDrift(d: Drift): void {
    if (d.kind === "entries") {
      if (this.#options.table === undefined || d.table === this.#options.table) {
        this.request({ keys: d.keys, reason: d.reason });
      }
    } else {
      this.request({ full: true, reason: d.reason });
    }
  }

  #take(): RepairWork | null {
    if (this.#reason === null) return null;
    const work = { full: this.#full, keys: this.#keys, reason: this.#reason };
    this.#full = false;
    this.#keys = new Set();
    this.#reason = null;
    return work;
  }

  async #watch(signal: AbortSignal): Promise<void> {
    const drift = this.#options.drift;
    if (!drift) return;
    for (let attempt = 0; !signal.aborted; attempt++) {
      try {
        for await (const d of drift(signal)) {
          attempt = 0;
          this.#onDrift(d);
        }
        return; // ended without an abort: the datapath closed
      } catch (e) {
        if (signal.aborted) return;
        const delay = backoff(attempt, { base: 500, max: 30_000 });
        this.#options.logger.error("watching for drift failed; watching again", {
          error: e,
          retryInMs: delay,
        });
        this.request({ full: true, reason: "drift watch restarted" });
        await sleepQuietly(this.#options.clock, delay, signal);
      }
    }
  }

  /** Wait for a request, or for the periodic resync to be due. */
  async #idle(signal: AbortSignal): Promise<void> {
    const { clock, resyncIntervalMs = 60_000 } = this.#options;
    const interval = typeof resyncIntervalMs === "function" ? resyncIntervalMs() : resyncIntervalMs;
    const woken = new Promise<void>((r) => (this.#wake = r));
    const wait = linkedController({ parents: [signal] });
    const timer = interval > 0 && Number.isFinite(interval)
      ? sleepQuietly(clock, interval, wait.signal).then((full) => {
        if (full) this.request({ full: true, reason: "periodic resync" });
      })
      : woken;
    await Promise.race([woken, timer, whenAborted(signal)]);
    wait.abort();
    wait.dispose();
    this.#wake = undefined;
  }

  /**
   * Watch for drift and carry out repairs until `signal` aborts.
   *
   * @param signal Ends the loop.
   * @returns When `signal` aborts (or the drift source ends and the loop is aborted).
   */
  async run(signal: AbortSignal): Promise<void> {
    const { clock, logger } = this.#options;
    const watcher = this.#watch(signal);
    let attempt = 0;
    while (!signal.aborted) {
      if (this.#reason === null) await this.#idle(signal);
      if (signal.aborted) break;
      if (this.#reason === null) continue;
      await sleepQuietly(clock, this.#options.debounceMs ?? 20, signal);
      const work = this.#take();
      if (signal.aborted || !work) break;
      try {
        await this.#options.repair(work, signal);
        attempt = 0;
        this.#options.onRepaired?.(work.reason);
      } catch (e) {
        if (signal.aborted) break;
        const delay = backoff(attempt++, { base: 100, max: 30_000 });
        logger.error("repair failed; retrying", {
          reason: work.reason,
          error: e,
          retryInMs: delay,
        });
        this.request({ full: work.full, keys: work.keys, reason: work.reason });
        await sleepQuietly(clock, delay, signal);
      }
    }
    await watcher;
  }
}
