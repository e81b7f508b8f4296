/**
 * Stopping the agent: SIGTERM and SIGINT abort a signal (logged once), or,
 * when the caller passes its own signal (tests, embedding), that one does
 * and no process handlers are installed.
 *
 * @module
 */

import process from "node:process";
import { linkedController } from "../core/abort.ts";
import type { Logger } from "../core/log.ts";

/** A stop signal and the means to remove its handlers. */
export interface StopSignal {
  /** Aborts on SIGTERM/SIGINT, or when the caller's signal aborts. */
  readonly signal: AbortSignal;
  /** Remove the process handlers (call when the agent has stopped). */
  dispose(): void;
}

/**
 * Listen for the stop request.
 *
 * @param logger Where "signal received" goes.
 * @param parent The caller's signal; when given, process signals are left alone.
 * @returns The stop signal; `dispose()` it when done.
 * @example
 * ```ts
 * const stop = stopOnSignals(logger);
 * try { await agent.run(stop.signal); } finally { stop.dispose(); }
 * ```
 */
export function stopOnSignals(logger: Logger, parent?: AbortSignal): StopSignal {
  const stop = linkedController({ parents: [parent] });
  if (parent) return stop;
  const handlers = (["SIGTERM", "SIGINT"] as const).map((name) => {
    const handler = () => {
      if (stop.signal.aborted) return;
      logger.info("signal received, stopping", { signal: name });
      stop.abort();
    };
    process.on(name, handler);
    return () => process.off(name, handler);
  });
  return {
    signal: stop.signal,
    dispose: () => {
      for (const off of handlers) off();
      stop.dispose();
    },
  };
}
