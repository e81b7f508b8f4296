import assert from "node:assert/strict";
import { clip, quote } from "./quote.ts";

Deno.test("quote() gives short values as JSON", () => {
  assert.equal(quote("10.5.0.0/16"), '"10.5.0.0/16"');
  assert.equal(quote(24), "24");
  assert.equal(quote(null), "null");
  assert.equal(quote(undefined), "undefined");
  assert.equal(quote({ Type: "vxlan" }), '{"Type":"vxlan"}');
  assert.equal(quote(10n), "10");
});

Deno.test("quote() cuts a long value and says how long it was", () => {
  assert.equal(quote("x".repeat(1000), 10), '"xxxxxxxxx… (1002 characters)');
  const big = quote({ a: "y".repeat(8 << 20) });
  assert.ok(big.length < 200, big);
  assert.match(big, /… \(8388616 characters\)$/);
});

Deno.test("clip() keeps a short text and cuts a long one", () => {
  assert.equal(clip("abc", 3), "abc");
  assert.equal(clip("abcdef", 3), "abc… (6 characters)");
});
