/**
 * Waiting in tests for something that happens on its own time (a real etcd
 * expiring a TTL, a server accepting a watch): poll the condition, with a
 * deadline and a message that says what never happened. Never a fixed sleep.
 *
 * @module
 */

/** Options of {@link waitFor}. */
export interface WaitOptions {
  /** What is awaited, for the failure message, e.g. `the lease to expire`. */
  readonly what: string;
  /** Give up after this long (default 10 s). */
  readonly timeoutMs?: number;
  /** Pause between checks (default 20 ms). */
  readonly intervalMs?: number;
}

/**
 * Check `condition` until it returns something truthy; a check that throws
 * counts as not yet (its error is reported if time runs out).
 *
 * @param condition The check.
 * @param options What is awaited, deadline, poll interval.
 * @returns The first truthy result.
 * @throws {Error} When the deadline passes: `timed out after N ms waiting for <what>`,
 *   with the last check's error.
 * @example
 * ```ts
 * await waitFor(async () => (await store.list()).leases.length === 0, { what: "the lease to expire" });
 * ```
 */
export async function waitFor<T>(
  condition: () => T | Promise<T>,
  options: WaitOptions,
): Promise<T> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const intervalMs = options.intervalMs ?? 20;
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const result = await condition();
      if (result) return result;
      lastError = undefined;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() >= deadline) {
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${options.what}${
          lastError ? `; the last check failed: ${(lastError as Error)?.message ?? lastError}` : ""
        }`,
        { cause: lastError },
      );
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
