/**
 * Tests that do not apply everywhere, reported honestly: when a test cannot
 * apply (a store without reservations, an emulator without route limits, a
 * kernel module this machine lacks) it is registered as *ignored* with the
 * reason in its name, so `test/run.ts` counts it as ignored and lists why.
 * Never use this for a test CI is meant to run: such a test must fail
 * loudly when it cannot run.
 *
 * @module
 */

/** What separates a test's name from the reason it was ignored. */
export const IGNORED_MARK = " — ignored: ";

/**
 * Register a test that runs unless `reason` is given.
 *
 * @param reason Why the test does not apply here, or null to run it.
 * @param definition The test (name and body as for `Deno.test`).
 * @example
 * ```ts
 * testUnless(store.reservations ? null : "the kube store has no reservations", {
 *   name: "a reservation never expires",
 *   fn: async () => {},
 * });
 * ```
 */
export function testUnless(reason: string | null, definition: Deno.TestDefinition): void {
  if (reason === null) {
    Deno.test(definition);
    return;
  }
  Deno.test({ ...definition, name: `${definition.name}${IGNORED_MARK}${reason}`, ignore: true });
}

/**
 * The same for a step inside a test: a step that does not apply is
 * registered ignored, with the reason in its name.
 *
 * @param t The parent test's context.
 * @param reason Why the step does not apply, or null to run it.
 * @param name The step's name.
 * @param fn The step.
 * @returns Whether the step passed (true when ignored).
 */
export function stepUnless(
  t: Deno.TestContext,
  reason: string | null,
  name: string,
  fn: (t: Deno.TestContext) => void | Promise<void>,
): Promise<boolean> {
  if (reason === null) return t.step(name, fn);
  return t.step({ name: `${name}${IGNORED_MARK}${reason}`, ignore: true, fn });
}
