import assert from "node:assert/strict";
import { hold, waitFor } from "./wait.ts";

Deno.test("waitFor() returns once the check passes, after polling", async () => {
  let calls = 0;
  const ms = await waitFor("third call", () => (++calls >= 3 ? null : `call ${calls}`), 5000, 1);
  assert.equal(calls, 3);
  assert.ok(ms >= 0);
});

Deno.test("waitFor() fails on timeout naming the condition and the last complaint", async () => {
  let calls = 0;
  await assert.rejects(
    () => waitFor("the route is back", () => `missing ${++calls}`, 30, 5),
    (e: Error) => {
      assert.match(e.message, /^the route is back: not done after 30 ms: missing \d+$/);
      assert.ok(e.message.endsWith(`missing ${calls}`), "the last complaint is reported");
      return true;
    },
  );
});

Deno.test("waitFor() fails at once when the check throws", async () => {
  let calls = 0;
  await assert.rejects(
    () =>
      waitFor("agent ready", () => {
        calls++;
        throw new Error("agent exited with 1");
      }),
    /agent exited with 1/,
  );
  assert.equal(calls, 1);
});

Deno.test("waitFor() and hold() reject negative or NaN times", async () => {
  await assert.rejects(
    () => waitFor("x", () => null, -1),
    new RangeError(
      "Cannot wait for x as 'timeoutMs' must be a non-negative number: current value is -1",
    ),
  );
  await assert.rejects(() => waitFor("x", () => null, 10, NaN), RangeError);
  assert.throws(() => hold("x", -5), RangeError);
});

Deno.test("hold() resolves after the time has passed", async () => {
  const t0 = performance.now();
  await hold("the scenario's pause", 20);
  assert.ok(performance.now() - t0 >= 18);
});
