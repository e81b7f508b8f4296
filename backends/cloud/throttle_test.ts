import assert from "node:assert/strict";
import { FakeClock } from "../../testing/fake_clock.ts";
import { ThrottleGate } from "./throttle.ts";

Deno.test("ThrottleGate is open until a call is throttled, then doubles its pause up to maxMs", async () => {
  const clock = new FakeClock(0);
  const gate = new ThrottleGate({ clock, baseMs: 1000, maxMs: 8000, random: () => 0.5 });
  await gate.wait(); // open: resolves without the clock moving
  const pauses: number[] = [];
  for (let i = 0; i < 5; i++) {
    gate.throttled();
    pauses.push(gate.closedForMs);
    await clock.advance(gate.closedForMs);
  }
  assert.deepEqual(pauses, [1000, 2000, 4000, 8000, 8000]);
});

Deno.test("ThrottleGate.wait() holds every caller until the gate opens, and follows a later throttle", async () => {
  const clock = new FakeClock(0);
  const gate = new ThrottleGate({ clock, random: () => 0.5 });
  gate.throttled(); // 1 s
  const opened: number[] = [];
  const waiters = [gate.wait(), gate.wait()].map((p) => p.then(() => opened.push(clock.now())));
  await clock.advance(500);
  gate.throttled(); // now 2 s from t=500
  await clock.advance(3000);
  await Promise.all(waiters);
  assert.deepEqual(opened, [2500, 2500]);
});

Deno.test("ThrottleGate halves its pause with each call that gets through, and honours Retry-After", () => {
  const clock = new FakeClock(0);
  const gate = new ThrottleGate({ clock, baseMs: 1000, random: () => 0.5 });
  for (let i = 0; i < 4; i++) gate.throttled();
  assert.equal(gate.pauseMs, 8000);
  gate.passed();
  assert.equal(gate.pauseMs, 4000);
  gate.passed();
  gate.passed();
  assert.equal(gate.pauseMs, 1000);
  gate.passed();
  assert.equal(gate.pauseMs, 0, "below baseMs the pause is gone");
  gate.throttled(30_000);
  assert.equal(gate.closedForMs, 30_000, "the API's Retry-After wins when longer");
});

Deno.test("ThrottleGate jitters its pause ±20 % and refuses nonsense bounds", () => {
  const clock = new FakeClock(0);
  const low = new ThrottleGate({ clock, random: () => 0 });
  low.throttled();
  assert.equal(low.closedForMs, 800);
  const high = new ThrottleGate({ clock, random: () => 1 });
  high.throttled();
  assert.equal(high.closedForMs, 1200);
  assert.throws(
    () => new ThrottleGate({ clock, baseMs: 0 }),
    /'baseMs' must be positive and at most 'maxMs': current values are 0 and 60000/,
  );
});

Deno.test("ThrottleGate.wait() rejects with the signal's reason when it aborts", async () => {
  const clock = new FakeClock(0);
  const gate = new ThrottleGate({ clock });
  gate.throttled();
  const ac = new AbortController();
  const waiting = gate.wait(ac.signal);
  ac.abort(new Error("stopping"));
  await assert.rejects(waiting, /stopping/);
});
