/**
 * Waiting in tests without fixed sleeps. A test that needs something to
 * happen waits for that very condition, polled with a deadline, and fails
 * naming the condition and what was still wrong ({@link waitFor}). Where the
 * time itself is the scenario — an agent stays down a while, pings keep
 * flowing for a number of seconds — the pause says so ({@link hold}).
 *
 * @module
 */

/**
 * Poll a condition until it holds.
 *
 * @param what The condition, for the timeout error ("every pod pair pings").
 * @param check Returns null when satisfied, else what is still wrong; an
 *   exception fails the wait at once.
 * @param timeoutMs Give up after this long (default 10 s).
 * @param intervalMs Pause between checks (default 20 ms).
 * @returns Milliseconds from the call until the check passed.
 * @throws {Error} On timeout: `<what>: not done after <timeoutMs> ms: <last complaint>`.
 * @throws {RangeError} When `timeoutMs` or `intervalMs` is negative or not a number.
 * @example
 * ```ts
 * await waitFor("flannel0 gone", async () => {
 *   const r = await lab.exec(ns, "ip link show flannel0");
 *   return r.code === 0 ? "still there" : null;
 * }, 3000);
 * ```
 */
export async function waitFor(
  what: string,
  check: () => Promise<string | null> | string | null,
  timeoutMs = 10_000,
  intervalMs = 20,
): Promise<number> {
  const start = performance.now();
  await poll(
    what,
    async () => {
      const complaint = await check();
      return complaint === null ? { done: true, value: undefined } : { done: false, complaint };
    },
    timeoutMs,
    intervalMs,
  );
  return performance.now() - start;
}

/**
 * Poll until `produce` returns something truthy, and return it; a check
 * that throws counts as "not yet" (a server still starting, a lease not yet
 * free), and its error is the complaint if time runs out.
 *
 * @param what What is awaited, for the timeout error ("the lease to expire").
 * @param produce The check; its first truthy result is returned.
 * @param options Deadline (default 10 s) and pause between checks (default 20 ms).
 * @returns The first truthy result.
 * @throws {Error} On timeout: `<what>: not done after <timeoutMs> ms: <last complaint>`.
 * @example
 * ```ts
 * const lease = await waitForValue("a free subnet", () => store.acquire(config, request));
 * ```
 */
export async function waitForValue<T>(
  what: string,
  produce: () => T | Promise<T>,
  options: { timeoutMs?: number; intervalMs?: number } = {},
): Promise<NonNullable<T>> {
  return await poll(
    what,
    async () => {
      try {
        const value = await produce();
        return value ? { done: true, value: value as NonNullable<T> } : {
          done: false,
          complaint: `got ${JSON.stringify(value)}`,
        };
      } catch (e) {
        return { done: false, complaint: `the check failed: ${(e as Error)?.message ?? e}` };
      }
    },
    options.timeoutMs ?? 10_000,
    options.intervalMs ?? 20,
  );
}

type Attempt<T> = { done: true; value: T } | { done: false; complaint: string };

async function poll<T>(
  what: string,
  attempt: () => Promise<Attempt<T>>,
  timeoutMs: number,
  intervalMs: number,
): Promise<T> {
  for (const [name, value] of [["timeoutMs", timeoutMs], ["intervalMs", intervalMs]] as const) {
    if (!(value >= 0)) {
      throw new RangeError(
        `Cannot wait for ${what} as '${name}' must be a non-negative number: current value is ${value}`,
      );
    }
  }
  const start = performance.now();
  for (;;) {
    const r = await attempt();
    if (r.done) return r.value;
    if (performance.now() - start > timeoutMs) {
      throw new Error(`${what}: not done after ${timeoutMs} ms: ${r.complaint}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/**
 * Let time pass because the passing time is what the scenario tests (never
 * to wait for something to happen: use {@link waitFor}).
 *
 * @param why What the pause is in the scenario ("no agent on host 1").
 * @param ms How long.
 * @returns When the time has passed.
 * @throws {RangeError} When `ms` is negative or not a number.
 * @example
 * ```ts
 * await agent.kill9();
 * await hold("no agent at all for a while", 250);
 * ```
 */
export function hold(why: string, ms: number): Promise<void> {
  if (!(ms >= 0)) {
    throw new RangeError(
      `Cannot hold for ${why} as 'ms' must be a non-negative number: current value is ${ms}`,
    );
  }
  return new Promise((r) => setTimeout(r, ms));
}
