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

function renderValue(v: unknown): string {
  if (v instanceof Error) return JSON.stringify(v.message);
  if (typeof v === "string") return /^[\w./:@,+-]*$/.test(v) && v !== "" ? v : JSON.stringify(v);
  if (typeof v === "bigint") return v.toString();
  return JSON.stringify(v) ?? String(v);
}

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
        for (const [k, v] of Object.entries(all)) {
          rec[k] = v instanceof Error ? v.message : typeof v === "bigint" ? v.toString() : v;
        }
        write(JSON.stringify(rec));
      } else {
        const parts = Object.entries(all).map(([k, v]) => `${k}=${renderValue(v)}`);
        write(
          `${ts} ${level.toUpperCase().padEnd(5)} ${msg}${
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

/** A logger that keeps lines in memory, for tests. */
export function memoryLogger(level: LogLevel = "debug"): Logger & { lines: string[] } {
  const lines: string[] = [];
  const log = createLogger({ level, write: (l) => lines.push(l) });
  return Object.assign(log, { lines });
}
