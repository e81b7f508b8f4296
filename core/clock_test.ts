import assert from "node:assert/strict";
import { backoff, retryDelay, systemClock, UNREACHABLE_RETRY_MAX_MS } from "./clock.ts";
import { StoreUnavailableError } from "./errors.ts";
import { FakeClock } from "../testing/fake_clock.ts";

Deno.test("FakeClock starts where told and moves only on advance()", async () => {
  const clock = new FakeClock(1000);
  assert.equal(clock.now(), 1000);
  await clock.advance(0);
  assert.equal(clock.now(), 1000);
  await clock.advance(250);
  assert.equal(clock.now(), 1250);
  assert.equal(new FakeClock().now(), 1_700_000_000_000);
});

Deno.test("FakeClock.advance() wakes sleepers in time order, each seeing its own time", async () => {
  const clock = new FakeClock(0);
  const woke: [string, number][] = [];
  const sleep = (name: string, ms: number) =>
    clock.sleep(ms).then(() => void woke.push([name, clock.now()]));
  const all = [
    sleep("c", 300),
    sleep("a", 100),
    sleep("b", 200),
    sleep("a2", 100),
    sleep("late", 1000),
  ];
  assert.equal(clock.pending, 5);
  await clock.advance(99);
  assert.deepEqual(woke, []);
  await clock.advance(201);
  assert.deepEqual(woke, [["a", 100], ["a2", 100], ["b", 200], ["c", 300]]);
  assert.equal(clock.now(), 300);
  assert.equal(clock.pending, 1);
  await clock.advance(10_000);
  assert.deepEqual(woke.at(-1), ["late", 1000]);
  assert.equal(clock.now(), 10_300);
  await Promise.all(all);
});

Deno.test("FakeClock.advance() also wakes sleeps started by woken work within the same advance", async () => {
  const clock = new FakeClock(0);
  const ticks: number[] = [];
  const loop = (async () => {
    for (let i = 0; i < 5; i++) {
      await clock.sleep(60_000);
      ticks.push(clock.now());
    }
  })();
  await clock.advance(3 * 60_000 + 1);
  assert.deepEqual(ticks, [60_000, 120_000, 180_000]);
  await clock.advance(10 * 60_000);
  assert.deepEqual(ticks, [60_000, 120_000, 180_000, 240_000, 300_000]);
  await loop;
});

Deno.test("FakeClock.sleep() treats zero and negative delays as now", async () => {
  const clock = new FakeClock(0);
  let done = 0;
  clock.sleep(0).then(() => done++);
  clock.sleep(-5).then(() => done++);
  await clock.advance(0);
  assert.equal(done, 2);
});

Deno.test("FakeClock.sleep() rejects with the abort reason and forgets the sleeper", async () => {
  const clock = new FakeClock(0);
  const ac = new AbortController();
  const p = clock.sleep(1000, ac.signal);
  const other = clock.sleep(1000);
  assert.equal(clock.pending, 2);
  const reason = new Error("stopping");
  ac.abort(reason);
  await assert.rejects(p, (e) => e === reason);
  assert.equal(clock.pending, 1);
  await clock.advance(1000);
  await other;
  // already aborted: rejects at once, never pending
  await assert.rejects(clock.sleep(5, ac.signal), (e) => e === reason);
  assert.equal(clock.pending, 0);
});

Deno.test("FakeClock.sleep() leaves no abort listener behind once it wakes", async () => {
  const clock = new FakeClock(0);
  const ac = new AbortController();
  let listeners = 0;
  const signal = ac.signal;
  const add = signal.addEventListener.bind(signal);
  const remove = signal.removeEventListener.bind(signal);
  signal.addEventListener = ((...a: Parameters<typeof add>) => {
    listeners++;
    return add(...a);
  }) as typeof signal.addEventListener;
  signal.removeEventListener = ((...a: Parameters<typeof remove>) => {
    listeners--;
    return remove(...a);
  }) as typeof signal.removeEventListener;
  const sleeps = [1, 2, 3, 4, 5].map((ms) => clock.sleep(ms, signal));
  assert.equal(listeners, 5);
  await clock.advance(5);
  await Promise.all(sleeps);
  assert.equal(listeners, 0);
  // aborting afterwards touches no finished sleep
  ac.abort();
  assert.equal(clock.pending, 0);
});

Deno.test("systemClock.sleep() rejects with the abort reason, before and during the sleep", async () => {
  const ac = new AbortController();
  const reason = new Error("stop");
  const p = systemClock.sleep(60_000, ac.signal);
  ac.abort(reason);
  await assert.rejects(p, (e) => e === reason);
  await assert.rejects(systemClock.sleep(1, ac.signal), (e) => e === reason);
  await systemClock.sleep(0);
  assert.ok(Math.abs(systemClock.now() - Date.now()) < 1000);
});

Deno.test("systemClock.sleep() longer than a timer can hold does not fire at once", async () => {
  // Deno, Bun and Node fire a setTimeout over 2^31-1 ms after 1 ms.
  const ac = new AbortController();
  let settled = false;
  const p = systemClock.sleep(2 ** 31 + 1000, ac.signal).then(
    () => (settled = true),
    () => "aborted",
  );
  await new Promise((r) => setTimeout(r, 30));
  assert.equal(settled, false);
  ac.abort();
  assert.equal(await p, "aborted");
});

Deno.test("backoff() doubles from base to max with at most 20% jitter below", () => {
  const cases: [number, number, number][] = [
    // attempt, expected delay with random()=1 (no jitter), with random()=0 (full jitter)
    [0, 200, 160],
    [1, 400, 320],
    [2, 800, 640],
    [5, 6400, 5120],
    [6, 10_000, 8000],
    [100, 10_000, 8000],
  ];
  for (const [attempt, hi, lo] of cases) {
    assert.equal(backoff(attempt, { random: () => 1 }), hi, `attempt ${attempt}`);
    assert.equal(backoff(attempt, { random: () => 0 }), lo, `attempt ${attempt}`);
    for (let i = 0; i < 50; i++) {
      const d = backoff(attempt);
      assert.ok(d >= lo && d <= hi, `attempt ${attempt}: ${d}`);
    }
  }
  assert.equal(backoff(3, { base: 10, max: 50, random: () => 1 }), 50);
  assert.equal(backoff(2, { base: 10, max: 50, random: () => 0.5 }), 36);
});

Deno.test("backoff() takes off up to `jitter` of the delay", () => {
  assert.equal(backoff(0, { jitter: 0.5, random: () => 0 }), 100);
  assert.equal(backoff(0, { jitter: 0.5, random: () => 1 }), 200);
  assert.equal(backoff(0, { jitter: 0, random: () => 0 }), 200);
});

Deno.test("retryDelay() retries a store that did not answer within a second, spread over half of it", () => {
  const down = new StoreUnavailableError("connection refused", { unreachable: true });
  const answered = new StoreUnavailableError("HTTP 503 too many requests");
  const cases: [string, unknown, number, number, number][] = [
    // what, error, attempt, delay with random()=1, with random()=0
    ["unreachable, first retry", down, 0, 200, 100],
    ["unreachable, capped", down, 3, UNREACHABLE_RETRY_MAX_MS, UNREACHABLE_RETRY_MAX_MS / 2],
    ["unreachable, long outage", down, 60, UNREACHABLE_RETRY_MAX_MS, UNREACHABLE_RETRY_MAX_MS / 2],
    ["answered with an error", answered, 6, 10_000, 8000],
    ["not a store error", new TypeError("bug"), 6, 10_000, 8000],
  ];
  for (const [what, error, attempt, hi, lo] of cases) {
    assert.equal(retryDelay(attempt, error, { random: () => 1 }), hi, what);
    assert.equal(retryDelay(attempt, error, { random: () => 0 }), lo, what);
  }
  assert.equal(retryDelay(9, down, { max: 300, random: () => 1 }), 300, "a lower cap stays");
  assert.equal(
    retryDelay(9, answered, { max: 30_000, random: () => 1 }),
    30_000,
    "the caller's cap for answered errors stays",
  );
});
