/**
 * Structured logging: one line per event, text or JSON, to stderr.
 *
 * @module
 */

/** Severity, lowest first. */
export type LogLevel = "debug" | "info" | "warn" | "error";

/** Extra fields attached to a log line. */
export type LogFields = Record<string, unknown>;

/** What every part of weft logs through (injected, never global). */
export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  /** A logger that adds `fields` to every line. */
  with(fields: LogFields): Logger;
}

const ORDER: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };

/** An error as one string: its message, then the messages of its causes. */
function errorText(e: Error): string {
  let text = e.message || e.name;
  const seen = new Set<unknown>([e]);
  for (let c = e.cause; c !== undefined && !seen.has(c); c = (c as Error).cause) {
    seen.add(c);
    const m = c instanceof Error ? c.message || c.name : String(c);
    if (!text.includes(m)) text += `: ${m}`;
    if (!(c instanceof Error)) break;
  }
  return text;
}

/** JSON that never throws: bigints as strings, errors as their text, cycles cut. */
function safeJson(v: unknown): string {
  // the objects enclosing the value being written, to tell a cycle from a shared object
  const ancestors: unknown[] = [];
  try {
    return JSON.stringify(v, function (this: unknown, _k: string, x: unknown) {
      while (ancestors.length && ancestors[ancestors.length - 1] !== this) ancestors.pop();
      if (typeof x === "bigint") return x.toString();
      if (x instanceof Error) return errorText(x);
      if (typeof x === "object" && x !== null) {
        if (ancestors.includes(x)) return "[circular]";
        ancestors.push(x);
      }
      return x;
    }) ?? String(v);
  } catch {
    return JSON.stringify(String(v));
  }
}

function renderValue(v: unknown): string {
  if (v instanceof Error) return JSON.stringify(errorText(v));
  if (typeof v === "string") return /^[\w./:@,+-]*$/.test(v) && v !== "" ? v : JSON.stringify(v);
  if (typeof v === "bigint") return v.toString();
  return safeJson(v);
}

/** Keep a text line one line: control characters in the message are escaped. */
const oneLine = (msg: string) => msg.replace(/[\r\n]/g, (c) => (c === "\n" ? "\\n" : "\\r"));

/**
 * Create a logger.
 *
 * @param options `format` text (default) or json, minimum `level`, and the
 *   `write` sink (default: stderr).
 * @returns The logger.
 * @example
 * ```ts
 * const log = createLogger({ format: "json" });
 * log.info("lease acquired", { subnet: "10.5.3.0/24" });
 * ```
 */
export function createLogger(options: {
  format?: "text" | "json";
  level?: LogLevel;
  write?: (line: string) => void;
  fields?: LogFields;
  now?: () => number;
} = {}): Logger {
  const format = options.format ?? "text";
  const min = ORDER[options.level ?? "info"];
  const write = options.write ?? ((line: string) => console.error(line));
  const now = options.now ?? Date.now;
  const make = (base: LogFields): Logger => {
    const emit = (level: LogLevel, msg: string, fields?: LogFields) => {
      if (ORDER[level] < min) return;
      const all = { ...base, ...fields };
      const ts = new Date(now()).toISOString();
      if (format === "json") {
        const rec: Record<string, unknown> = { ts, level, msg };
        // a field never replaces ts, level or msg
        for (const [k, v] of Object.entries(all)) rec[Object.hasOwn(rec, k) ? `field.${k}` : k] = v;
        write(safeJson(rec));
      } else {
        const parts = Object.entries(all).map(([k, v]) => `${k}=${renderValue(v)}`);
        write(
          `${ts} ${level.toUpperCase().padEnd(5)} ${oneLine(msg)}${
            parts.length ? " " + parts.join(" ") : ""
          }`,
        );
      }
    };
    return {
      debug: (m, f) => emit("debug", m, f),
      info: (m, f) => emit("info", m, f),
      warn: (m, f) => emit("warn", m, f),
      error: (m, f) => emit("error", m, f),
      with: (f) => make({ ...base, ...f }),
    };
  };
  return make(options.fields ?? {});
}

/** A logger that drops everything. */
export const nullLogger: Logger = createLogger({ write: () => {} });
