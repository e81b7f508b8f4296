/**
 * Fuzzing the newline-delimited JSON reader: values written one per line
 * (blank lines between, `\r\n` endings now and then), the bytes split into
 * chunks anywhere — inside a line, a JSON token or a multi-byte character —
 * then cut short, garbled, or made huge. Property: exactly the values
 * written, in order; or, for a body cut inside a line, those before it and
 * a `truncated` NdjsonStreamError; for a garbled line, those before it and
 * the parser's SyntaxError; for an oversized line `too-long` — nothing else.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { NdjsonStreamError, readNdjson } from "./ndjson_watch.ts";
import { fuzzParameters, nastyString, unclearError } from "../testing/fuzz.ts";

function body(bytes: Uint8Array, cuts: number[], broken = false): ReadableStream<Uint8Array> {
  const at = [...new Set(cuts.map((c) => Math.floor(c * bytes.length)))].sort((a, b) => a - b);
  const chunks: Uint8Array[] = [];
  let from = 0;
  for (const c of [...at, bytes.length]) {
    if (c > from) chunks.push(bytes.slice(from, c));
    from = c;
  }
  return new ReadableStream({
    start(controller) {
      for (const ch of chunks) controller.enqueue(ch);
      if (broken) controller.error(new TypeError("connection reset"));
      else controller.close();
    },
  });
}

async function readAll(
  stream: ReadableStream<Uint8Array>,
  maxLineLength?: number,
): Promise<{ values: unknown[]; error?: unknown }> {
  const values: unknown[] = [];
  try {
    for await (const batch of readNdjson(stream, { maxLineLength, what: "fuzz stream" })) {
      assert.ok(batch.length > 0, "no empty batches");
      values.push(...batch);
    }
    return { values };
  } catch (error) {
    return { values, error };
  }
}

const values = fc.array(
  fc.oneof(
    fc.jsonValue({ maxDepth: 3 }),
    fc.record({ type: fc.constantFrom("ADDED", "PUT"), text: fc.fullUnicodeString() }),
  ),
  { maxLength: 8 },
);
const cuts = fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 12 });

Deno.test("fuzz readNdjson(): values split into chunks anywhere come out whole and in order (10 000 inputs)", async () => {
  await fc.assert(
    fc.asyncProperty(values, cuts, fc.array(fc.boolean()), async (vs, at, crlf) => {
      const text = vs.map((v, i) =>
        (crlf[i] ? "\n" : "") + JSON.stringify(v) + (crlf[i] ? "\r\n" : "\n")
      )
        .join("");
      const got = await readAll(body(new TextEncoder().encode(text), at));
      assert.equal(got.error, undefined, String(got.error));
      assert.deepEqual(got.values, vs.map((v) => JSON.parse(JSON.stringify(v))));
    }),
    fuzzParameters(),
  );
});

Deno.test("fuzz readNdjson(): a body cut, broken or garbled fails clearly after the good lines (10 000 inputs)", async () => {
  let truncated = 0, syntax = 0, broken = 0;
  await fc.assert(
    fc.asyncProperty(
      values,
      cuts,
      fc.double({ min: 0, max: 1, noNaN: true }),
      fc.constantFrom("cut", "break", "garble"),
      nastyString(),
      async (vs, at, where, how, junk) => {
        const lines = vs.map((v) => JSON.stringify(v));
        let text = lines.map((l) => l + "\n").join("");
        if (how === "cut") text = text.slice(0, Math.floor(where * text.length));
        if (how === "garble") {
          const i = Math.floor(where * (lines.length + 1));
          lines.splice(i, 0, junk.replace(/[\r\n]/g, " ") || "{");
          text = lines.map((l) => l + "\n").join("");
        }
        const got = await readAll(body(new TextEncoder().encode(text), at, how === "break"));
        // what came out is a prefix of what was written
        const written = text.split("\n").filter((l) => l.trim() !== "").map((l) => {
          try {
            return JSON.parse(l);
          } catch {
            return Symbol.for("bad");
          }
        });
        assert.deepEqual(got.values, written.slice(0, got.values.length));
        if (got.error === undefined) return;
        const why = unclearError(got.error, [NdjsonStreamError, SyntaxError]);
        assert.equal(why, null, why ?? "");
        if (got.error instanceof NdjsonStreamError) {
          if (got.error.reason === "truncated") truncated++;
          else if (got.error.reason === "broken") broken++;
          else assert.fail(`unexpected reason ${got.error.reason}`);
        } else syntax++;
      },
    ),
    fuzzParameters(),
  );
  const runs = fuzzParameters().numRuns!;
  assert.ok(
    truncated > runs / 100 && syntax > runs / 20 && broken > runs / 20,
    `${truncated} truncated, ${syntax} syntax, ${broken} broken`,
  );
});

Deno.test("fuzz readNdjson(): a line longer than maxLineLength fails with too-long, however it is split (2 000 inputs)", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 1, max: 4096 }),
      fc.integer({ min: 0, max: 3 }),
      cuts,
      async (limit, over, at) => {
        const long = JSON.stringify("x".repeat(limit + over));
        const text = `{"a":1}\n${long}\n{"b":2}\n`;
        const got = await readAll(body(new TextEncoder().encode(text), at), limit);
        assert.deepEqual(got.values.slice(0, 1), limit >= 7 ? [{ a: 1 }] : []);
        assert.ok(got.error instanceof NdjsonStreamError, String(got.error));
        assert.equal(got.error.reason, "too-long");
      },
    ),
    fuzzParameters(2_000),
  );
});
