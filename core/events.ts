/**
 * Recent events of the agent for the status page: a small ring buffer of
 * what weft logged at info level and above (peer added/removed, lease
 * renewed, repairs, errors, state changes), filled by wrapping the logger
 * the agent, its backends and its store log through, so every part that
 * already says what happened feeds the page without extra plumbing.
 *
 * @module
 */

import type { LogFields, Logger, LogLevel } from "./log.ts";

/** One recorded event. */
export interface RecordedEvent {
  /** Increases by one per event, from 1; the page asks for events after a number. */
  readonly seq: number;
  /** When, ms since the epoch. */
  readonly at: number;
  readonly level: Exclude<LogLevel, "debug">;
  /** The log message, e.g. `peer added`. */
  readonly msg: string;
  /** Its fields as short texts (errors as their messages). */
  readonly fields: Readonly<Record<string, string>>;
}

/** Longest field text kept, in characters. */
export const EVENT_FIELD_MAX = 300;

/** A field value as a short text. */
function fieldText(value: unknown): string {
  let text: string;
  if (value instanceof Error) text = value.message || value.name;
  else if (typeof value === "string") text = value;
  else if (typeof value === "bigint") text = value.toString();
  else {
    try {
      text = JSON.stringify(value) ?? String(value);
    } catch {
      text = String(value);
    }
  }
  return text.length > EVENT_FIELD_MAX ? `${text.slice(0, EVENT_FIELD_MAX - 1)}…` : text;
}

/**
 * The last `capacity` events, oldest dropped first.
 *
 * @example
 * ```ts
 * const ring = new EventRing({ capacity: 100 });
 * ring.record("info", "peer added", { subnet: "10.5.2.0/24" });
 * ring.recent(); // [{ seq: 1, msg: "peer added", … }]
 * ```
 */
export class EventRing {
  readonly #capacity: number;
  readonly #now: () => number;
  readonly #events: RecordedEvent[] = [];
  #seq = 0;

  /**
   * @param options `capacity` (default 100) and `now` (default `Date.now`).
   * @throws {RangeError} When `capacity` is not a positive integer.
   */
  constructor(options: { capacity?: number; now?: () => number } = {}) {
    const capacity = options.capacity ?? 100;
    if (!Number.isInteger(capacity) || capacity < 1) {
      throw new RangeError(
        `Cannot create an event ring as 'capacity' must be a positive integer: current value is ${capacity}`,
      );
    }
    this.#capacity = capacity;
    this.#now = options.now ?? Date.now;
  }

  /** The number of the last event recorded (0 before the first). */
  get lastSeq(): number {
    return this.#seq;
  }

  /**
   * Record an event.
   *
   * @param level Its severity.
   * @param msg What happened.
   * @param fields Details; values become short texts.
   * @returns The recorded event.
   */
  record(level: RecordedEvent["level"], msg: string, fields: LogFields = {}): RecordedEvent {
    const texts: Record<string, string> = {};
    for (const [k, v] of Object.entries(fields)) {
      if (v !== undefined) texts[k] = fieldText(v);
    }
    const event: RecordedEvent = { seq: ++this.#seq, at: this.#now(), level, msg, fields: texts };
    this.#events.push(event);
    if (this.#events.length > this.#capacity) this.#events.shift();
    return event;
  }

  /**
   * The events kept, newest first.
   *
   * @param limit At most this many (default all kept).
   * @returns The events.
   */
  recent(limit: number = this.#capacity): RecordedEvent[] {
    // slice(-0) would be the whole array
    if (!(limit > 0)) return [];
    return this.#events.slice(-limit).reverse();
  }
}

/**
 * A logger that also records its info, warn and error lines in `ring`
 * (with the fields of `with()` included); debug lines only go to `base`.
 *
 * @param base Where lines are written.
 * @param ring Where events are kept.
 * @returns The recording logger.
 * @example
 * ```ts
 * const logger = recordingLogger(createLogger(), ring);
 * logger.with({ backend: "vxlan" }).warn("repairing the vxlan datapath", { reason });
 * ```
 */
export function recordingLogger(base: Logger, ring: EventRing): Logger {
  const make = (inner: Logger, extra: LogFields): Logger => {
    const emit = (level: RecordedEvent["level"]) => (msg: string, fields?: LogFields) => {
      inner[level](msg, fields);
      ring.record(level, msg, { ...extra, ...fields });
    };
    return {
      debug: (msg, fields) => inner.debug(msg, fields),
      info: emit("info"),
      warn: emit("warn"),
      error: emit("error"),
      with: (fields) => make(inner.with(fields), { ...extra, ...fields }),
    };
  };
  return make(base, {});
}
