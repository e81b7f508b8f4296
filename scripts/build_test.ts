import assert from "node:assert/strict";
import { neutralizeOptionalRequires } from "./build.ts";

const HEAD = 'import{createRequire as __deno_internal_createRequire}from"node:module";' +
  "var w=__deno_internal_createRequire(import.meta.url);";

Deno.test("neutralizeOptionalRequires() turns require() of an optional package into a throw, and leaves the rest", () => {
  const js = HEAD +
    'try{B=w("bufferutil")}catch{}var f=w("node:fs");function g(w){return w("text")}' +
    'try{c=w("supports-color")}catch{}x.w("utf-8-validate");var o=w("openid-client");';
  const r = neutralizeOptionalRequires(js);
  assert.deepEqual(r.replaced.sort(), ["bufferutil", "supports-color"]);
  assert.deepEqual(r.remaining.sort(), ["openid-client", "text"]);
  assert.ok(!r.text.includes('w("bufferutil")'));
  assert.ok(r.text.includes('w("node:fs")'));
  assert.ok(
    r.text.includes('x.w("utf-8-validate")'),
    "a method named like the require is not touched",
  );
  // the replacement throws what a missing module throws, so try/catch fallbacks run
  const thrown = r.text.slice(r.text.indexOf("try{B=") + 6, r.text.indexOf("}catch{}var f"));
  assert.throws(() => new Function(`return ${thrown}`)(), (e: Error & { code?: string }) => {
    assert.equal(e.code, "MODULE_NOT_FOUND");
    assert.match(e.message, /Cannot find module 'bufferutil': not bundled/);
    return true;
  });
});

Deno.test("neutralizeOptionalRequires() leaves a bundle without a require shim alone", () => {
  const js = 'console.log(w("bufferutil"))';
  assert.deepEqual(neutralizeOptionalRequires(js), { text: js, replaced: [], remaining: [] });
});
