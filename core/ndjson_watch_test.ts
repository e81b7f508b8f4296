import assert from "node:assert/strict";
import { FakeClock } from "../testing/fake_clock.ts";
import { StoreUnavailableError } from "./errors.ts";
import {
  type NdjsonStream,
  NdjsonStreamError,
  readNdjson,
  resumableNdjson,
} from "./ndjson_watch.ts";

const enc = new TextEncoder();

/** A body the test feeds by hand; `cancelled` tells whether the reader let it go. */
function body() {
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  const state = { cancelled: false };
  const stream = new ReadableStream<Uint8Array>({
    start(c) {
      controller = c;
    },
    cancel() {
      state.cancelled = true;
    },
  });
  return {
    stream,
    state,
    send: (part: string | Uint8Array) =>
      controller.enqueue(typeof part === "string" ? enc.encode(part) : part),
    end: () => controller.close(),
    fail: (e: unknown) => controller.error(e),
  };
}

/** A body that delivers `parts` (one chunk each) and then ends, or stays open. */
function fixed(parts: (string | Uint8Array)[], end = true): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    start(c) {
      for (const p of parts) c.enqueue(typeof p === "string" ? enc.encode(p) : p);
      if (end) c.close();
    },
  });
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

Deno.test("readNdjson() reassembles lines split anywhere, multi-byte characters included", async () => {
  const values = [{ a: 1 }, { text: "é€😀 across chunks" }, [1, 2, 3], "s", 42, null];
  const bytes = enc.encode(values.map((v) => JSON.stringify(v) + "\n").join(""));
  for (const size of [1, 2, 3, 5, 7, 64, bytes.length]) {
    const parts: Uint8Array[] = [];
    for (let i = 0; i < bytes.length; i += size) parts.push(bytes.slice(i, i + size));
    const batches = await collect(readNdjson(fixed(parts)));
    assert.deepEqual(batches.flat(), values, `chunks of ${size} bytes`);
  }
});

Deno.test("readNdjson() yields one batch per chunk and skips blank and CRLF-ended lines", async () => {
  const batches = await collect(
    readNdjson(fixed(['{"n":1}\n{"n":2}\n{"n"', ":3}\r\n\n  \n", '{"n":4}\n'])),
  );
  assert.deepEqual(batches, [[{ n: 1 }, { n: 2 }], [{ n: 3 }], [{ n: 4 }]]);
});

Deno.test("readNdjson() reads a line of many megabytes spread over many chunks", async () => {
  const big = "x".repeat(5 * 1024 * 1024);
  const line = JSON.stringify({ big }) + "\n";
  const parts: string[] = [];
  for (let i = 0; i < line.length; i += 16 * 1024) parts.push(line.slice(i, i + 16 * 1024));
  const batches = await collect(readNdjson(fixed([...parts, '{"after":true}\n'])));
  assert.equal((batches[0][0] as { big: string }).big.length, big.length);
  assert.deepEqual(batches[1], [{ after: true }]);
});

Deno.test("readNdjson() refuses a line longer than maxLineLength, complete or not", async () => {
  for (const parts of [["0123456789", "0123456789"], ['"0123456789012"\n']]) {
    await assert.rejects(
      () => collect(readNdjson(fixed(parts, false), { maxLineLength: 12, what: "test stream" })),
      (e: Error) =>
        e instanceof NdjsonStreamError && e.reason === "too-long" &&
        /test stream sent a line longer than 12 characters/.test(e.message),
    );
  }
  await assert.rejects(
    () => collect(readNdjson(fixed([]), { maxLineLength: 0 })),
    (e: Error) => e instanceof RangeError && /'maxLineLength' 0/.test(e.message),
  );
});

Deno.test("readNdjson() returns at a clean end and reports a body cut inside a line", async () => {
  assert.deepEqual(await collect(readNdjson(fixed(['{"a":1}\n', "  \n"]))), [[{ a: 1 }]]);
  const got: unknown[] = [];
  await assert.rejects(
    async () => {
      for await (const b of readNdjson(fixed(['{"a":1}\n{"b":', "2"]), { what: "w" })) {
        got.push(...b);
      }
    },
    (e: Error) =>
      e instanceof NdjsonStreamError && e.reason === "truncated" &&
      e.message === "w ended in the middle of a line (6 characters unread)",
  );
  assert.deepEqual(got, [{ a: 1 }], "the complete line before the cut is delivered");
});

Deno.test("readNdjson() wraps a failing body as broken, with the cause", async () => {
  const b = body();
  const reading = collect(readNdjson(b.stream, { what: "w" }));
  b.send('{"a":1}\n');
  const cause = new TypeError("connection reset");
  b.fail(cause);
  await assert.rejects(
    reading,
    (e: Error) =>
      e instanceof NdjsonStreamError && e.reason === "broken" && e.cause === cause &&
      /w broke: connection reset/.test(e.message),
  );
});

Deno.test("readNdjson() hands over the lines before one the parser rejects, then throws", async () => {
  const got: unknown[] = [];
  const parse = (line: string) => {
    if (line === "skip") return undefined;
    if (line === "bad") throw new SyntaxError("bad line");
    return Number(line);
  };
  await assert.rejects(async () => {
    for await (const b of readNdjson(fixed(["1\nskip\n2\nbad\n3\n"]), { parse })) got.push(...b);
  }, /bad line/);
  assert.deepEqual(got, [1, 2]);
});

Deno.test("readNdjson() ends quietly on abort and cancels the body", async () => {
  const b = body();
  const ac = new AbortController();
  const got: unknown[] = [];
  const reading = (async () => {
    for await (const batch of readNdjson(b.stream, { signal: ac.signal })) got.push(...batch);
  })();
  b.send('{"a":1}\n');
  while (got.length === 0) await new Promise((r) => setTimeout(r, 0));
  ac.abort();
  await reading;
  assert.equal(b.state.cancelled, true);
  assert.deepEqual(got, [{ a: 1 }]);
  // already aborted: nothing is read
  const early = body();
  early.send('{"a":1}\n');
  assert.deepEqual(await collect(readNdjson(early.stream, { signal: ac.signal })), []);
});

Deno.test("readNdjson() cancels the body when the reader stops early", async () => {
  const b = body();
  b.send('{"a":1}\n{"a":2}\n');
  for await (const _ of readNdjson(b.stream)) break;
  assert.equal(b.state.cancelled, true);
});

Deno.test("readNdjson() fails a body silent for idleTimeoutMs on the injected clock", async () => {
  const clock = new FakeClock(0);
  const b = body();
  const got: unknown[] = [];
  const reading = (async () => {
    for await (const batch of readNdjson(b.stream, { idleTimeoutMs: 1000, clock, what: "w" })) {
      got.push(...batch);
    }
  })();
  const failed = assert.rejects(
    reading,
    (e: Error) =>
      e instanceof NdjsonStreamError && e.reason === "idle" &&
      /w got nothing for 1000 ms/.test(e.message),
  );
  await clock.advance(900);
  b.send('{"a":1}\n'); // data restarts the quiet period
  await clock.advance(900);
  assert.deepEqual(got, [{ a: 1 }]);
  await clock.advance(99);
  assert.equal(b.state.cancelled, false, "not idle yet");
  await clock.advance(1);
  await failed;
  assert.equal(b.state.cancelled, true);
  assert.equal(clock.pending, 0, "the watchdog left no timer behind");
});

// ---------------------------------------------------------------------------

interface Line {
  rev?: number;
  fail?: string;
  done?: boolean;
}

/** A server of numbered events that the test can cut; records each stream's start. */
function server() {
  const opened: number[] = [];
  const bodies: ReturnType<typeof body>[] = [];
  const refusals: Error[] = [];
  const open = (from: number): Promise<NdjsonStream> => {
    opened.push(from);
    const refusal = refusals.shift();
    if (refusal) return Promise.reject(refusal);
    const b = body();
    bodies.push(b);
    return Promise.resolve({ body: b.stream, what: `stream ${opened.length}` });
  };
  return { opened, bodies, refusals, open, last: () => bodies[bodies.length - 1] };
}

const step = (line: Line) => {
  if (line.fail) throw new Error(line.fail);
  return { items: line.rev ? [line.rev] : [], cursor: line.rev, done: line.done };
};

async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; !cond(); i++) {
    if (i > 2000) throw new Error(`gave up waiting: ${what}`);
    await new Promise((r) => setTimeout(r, 0));
  }
}

Deno.test("resumableNdjson() resumes from the last cursor after a cut, backing off on the clock", async () => {
  const clock = new FakeClock(0);
  const s = server();
  const ac = new AbortController();
  const got: number[][] = [];
  const retries: [string, number, number][] = [];
  const watch = (async () => {
    for await (
      const batch of resumableNdjson<number, Line, number>({
        from: 0,
        open: (c) => s.open(c),
        step,
        signal: ac.signal,
        clock,
        random: () => 1,
        onRetry: (e, r) => retries.push([(e as Error).message, r.delayMs, r.cursor]),
      })
    ) got.push(batch);
  })();
  await until(() => s.bodies.length === 1, "first stream");
  s.last().send('{"rev":1}\n{"rev":2}\n{"rev"');
  s.last().end(); // cut inside a line
  await until(() => retries.length === 1, "a retry");
  assert.deepEqual(retries[0], [
    "stream 1 ended in the middle of a line (6 characters unread)",
    200,
    2,
  ]);
  s.refusals.push(new Error("refused"));
  await clock.advance(200);
  await until(() => retries.length === 2, "second retry");
  assert.deepEqual(retries[1], ["refused", 400, 2], "backoff doubles while nothing arrives");
  await clock.advance(400);
  await until(() => s.bodies.length === 2, "third stream");
  s.last().send('{"rev":3}\n');
  s.last().fail(new TypeError("reset"));
  await until(() => retries.length === 3, "third retry");
  assert.equal(retries[2][1], 200, "a delivered line restarts the backoff");
  await clock.advance(200);
  await until(() => s.bodies.length === 3, "fourth stream");
  ac.abort();
  await watch;
  assert.deepEqual(s.opened, [0, 2, 2, 3]);
  assert.deepEqual(got, [[1, 2], [3]]);
  assert.equal(s.last().state.cancelled, true, "the open body was let go on abort");
});

Deno.test("resumableNdjson() retries a server that does not answer at all within a second", async () => {
  const clock = new FakeClock(0);
  const s = server();
  const ac = new AbortController();
  const delays: number[] = [];
  const down = () => new StoreUnavailableError("connection refused", { unreachable: true });
  s.refusals.push(down(), down(), down(), down(), down(), down(), new Error("HTTP 503"));
  const watch = (async () => {
    for await (
      const _ of resumableNdjson<number, Line, number>({
        from: 0,
        open: (c) => s.open(c),
        step,
        signal: ac.signal,
        clock,
        random: () => 1,
        onRetry: (_e, r) => delays.push(r.delayMs),
      })
    );
  })();
  for (let i = 1; i <= 7; i++) {
    await until(() => delays.length === i, `retry ${i}`);
    await clock.advance(delays[i - 1]);
  }
  await until(() => s.bodies.length === 1, "a stream once the server answers");
  assert.deepEqual(
    delays,
    [200, 400, 800, 1000, 1000, 1000, 10_000],
    "capped at 1 s while nothing answers; an answered failure backs off as before",
  );
  ac.abort();
  await watch;
});

Deno.test("resumableNdjson() opens the next stream at once after a clean end, unless told to fail", async () => {
  for (const onEnd of ["resume", "fail"] as const) {
    const clock = new FakeClock(0);
    const s = server();
    const ac = new AbortController();
    const retries: string[] = [];
    const watch = collect(resumableNdjson<number, Line, number>({
      from: 5,
      open: (c) => s.open(c),
      step,
      onEnd,
      signal: ac.signal,
      clock,
      onRetry: (e) => retries.push((e as Error).message),
    }));
    await until(() => s.bodies.length === 1, "first stream");
    s.last().send('{"rev":6}\n');
    s.last().end();
    if (onEnd === "resume") {
      await until(() => s.bodies.length === 2, "reopened at once");
      assert.deepEqual(retries, []);
    } else {
      await until(() => retries.length === 1, "backoff");
      assert.deepEqual(retries, ["stream 1 ended"]);
      assert.equal(s.bodies.length, 1);
    }
    ac.abort();
    assert.deepEqual(await watch, [[6]]);
    assert.deepEqual(s.opened, onEnd === "resume" ? [5, 6] : [5]);
  }
});

Deno.test("resumableNdjson() delivers the lines before a rejected one, then resumes after them", async () => {
  const clock = new FakeClock(0);
  const s = server();
  const ac = new AbortController();
  const got: number[][] = [];
  const watch = (async () => {
    for await (
      const b of resumableNdjson<number, Line, number>({
        from: 0,
        open: (c) => s.open(c),
        step,
        signal: ac.signal,
        clock,
      })
    ) got.push(b);
  })();
  await until(() => s.bodies.length === 1, "first stream");
  s.last().send('{"rev":1}\n{"fail":"no"}\n{"rev":2}\n');
  await until(() => got.length === 1 && clock.pending > 0, "the failure");
  await clock.advance(10_000);
  await until(() => s.bodies.length === 2, "resumed");
  ac.abort();
  await watch;
  assert.deepEqual(got, [[1]]);
  assert.deepEqual(s.opened, [0, 1]);
});

Deno.test("resumableNdjson() lets recover() start afresh and ends on done or a fatal error", async () => {
  const s = server();
  const ac = new AbortController();
  const got: number[][] = [];
  const recovered: number[] = [];
  const watch = (async () => {
    for await (
      const b of resumableNdjson<number, Line, number>({
        from: 0,
        open: (c) => s.open(c),
        step,
        recover: (e, cursor) => {
          if ((e as Error).message !== "gone") return Promise.resolve(undefined);
          recovered.push(cursor);
          return Promise.resolve({ items: [100], cursor: 100 });
        },
        isFatal: (e) => (e as Error).message === "fatal",
        signal: ac.signal,
        clock: new FakeClock(0),
      })
    ) got.push(b);
  })();
  await until(() => s.bodies.length === 1, "first stream");
  s.last().send('{"rev":1}\n{"fail":"gone"}\n');
  await until(() => s.bodies.length === 2, "re-listed and reopened without backoff");
  s.last().send('{"rev":101}\n{"fail":"fatal"}\n');
  await assert.rejects(watch, /fatal/);
  assert.deepEqual(recovered, [1]);
  assert.deepEqual(s.opened, [0, 100]);
  assert.deepEqual(got, [[1], [100], [101]]);

  const d = server();
  const ended = collect(resumableNdjson<number, Line, number>({
    from: 0,
    open: (c) => d.open(c),
    step,
    signal: new AbortController().signal,
  }));
  await until(() => d.bodies.length === 1, "stream");
  d.last().send('{"rev":1}\n{"rev":2,"done":true}\n{"rev":3}\n');
  assert.deepEqual(await ended, [[1, 2]], "done ends the watch after its own items");
  assert.equal(d.last().state.cancelled, true);
});

Deno.test("resumableNdjson() stops quietly when aborted during a backoff or an open", async () => {
  const clock = new FakeClock(0);
  const ac = new AbortController();
  let opens = 0;
  const watch = collect(resumableNdjson<number, Line, number>({
    from: 0,
    open: () => {
      opens++;
      return Promise.reject(new Error("down"));
    },
    step,
    signal: ac.signal,
    clock,
  }));
  await until(() => clock.pending === 1, "backing off");
  ac.abort();
  assert.deepEqual(await watch, []);
  assert.equal(opens, 1);

  const never = new AbortController();
  const pending = collect(resumableNdjson<number, Line, number>({
    from: 0,
    open: (_c, signal) =>
      new Promise((_, reject) => signal.addEventListener("abort", () => reject(signal.reason))),
    step,
    signal: never.signal,
    clock,
  }));
  never.abort();
  assert.deepEqual(await pending, []);
});
