/**
 * A logger that keeps its lines in memory, for tests that assert on logs.
 *
 * @module
 */

import { createLogger, type Logger, type LogLevel } from "../core/log.ts";

/** A logger that keeps lines in memory, for tests. */
export function memoryLogger(level: LogLevel = "debug"): Logger & { lines: string[] } {
  const lines: string[] = [];
  const log = createLogger({ level, write: (l) => lines.push(l) });
  return Object.assign(log, { lines });
}
