import assert from "node:assert/strict";
import { FakeClock } from "../testing/fake_clock.ts";
import { isAbortError, linkedController, sleepQuietly, whenAborted } from "./abort.ts";

Deno.test("isAbortError() knows aborts and timeouts and nothing else", () => {
  assert.equal(isAbortError(new DOMException("x", "AbortError")), true);
  assert.equal(isAbortError(new DOMException("x", "TimeoutError")), true);
  assert.equal(isAbortError(new DOMException("x", "NetworkError")), false);
  assert.equal(isAbortError(new Error("AbortError")), false);
  assert.equal(isAbortError(undefined), false);
});

Deno.test("sleepQuietly() returns true after the time and false when aborted, never throwing", async () => {
  const clock = new FakeClock(0);
  const full = sleepQuietly(clock, 100);
  await clock.advance(100);
  assert.equal(await full, true);

  const ac = new AbortController();
  const cut = sleepQuietly(clock, 100, ac.signal);
  ac.abort(new Error("stop"));
  assert.equal(await cut, false);
  assert.equal(await sleepQuietly(clock, 5, ac.signal), false, "already aborted");
  assert.equal(clock.pending, 0);
});

Deno.test("whenAborted() resolves on abort, at once when already aborted", async () => {
  const ac = new AbortController();
  let done = false;
  const p = whenAborted(ac.signal).then(() => (done = true));
  await Promise.resolve();
  assert.equal(done, false);
  ac.abort();
  await p;
  assert.equal(done, true);
  await whenAborted(ac.signal);
});

Deno.test("linkedController() aborts with a parent's reason and detaches on dispose", () => {
  const a = new AbortController(), b = new AbortController();
  const call = linkedController({ parents: [a.signal, undefined, b.signal] });
  const reason = new Error("parent stopped");
  b.abort(reason);
  assert.equal(call.signal.aborted, true);
  assert.equal(call.signal.reason, reason);

  const second = linkedController({ parents: [a.signal] });
  second.dispose();
  a.abort();
  assert.equal(second.signal.aborted, false, "disposed controllers no longer follow the parent");
});

Deno.test("linkedController() starts aborted when a parent already is", () => {
  const a = new AbortController();
  a.abort(new Error("early"));
  const call = linkedController({ parents: [a.signal], timeoutMs: 10, clock: new FakeClock() });
  assert.equal(call.signal.aborted, true);
  assert.equal((call.signal.reason as Error).message, "early");
});

Deno.test("linkedController() times out on the injected clock with a TimeoutError naming the work", async () => {
  const clock = new FakeClock(0);
  const call = linkedController({ timeoutMs: 500, clock, what: "etcd put" });
  await clock.advance(499);
  assert.equal(call.signal.aborted, false);
  await clock.advance(1);
  assert.equal(call.signal.aborted, true);
  assert.ok(isAbortError(call.signal.reason));
  assert.equal((call.signal.reason as DOMException).message, "etcd put timed out after 500 ms");
});

Deno.test("linkedController() dispose() stops the timer; abort() aborts with the given reason", async () => {
  const clock = new FakeClock(0);
  const call = linkedController({ timeoutMs: 500, clock });
  call.dispose();
  assert.equal(clock.pending, 0);
  await clock.advance(1000);
  assert.equal(call.signal.aborted, false);
  const reason = new Error("done");
  call.abort(reason);
  assert.equal(call.signal.reason, reason);
});

Deno.test("linkedController() refuses a timeout without a clock", () => {
  assert.throws(() => linkedController({ timeoutMs: 5 }), RangeError);
});
