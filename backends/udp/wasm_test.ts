import assert from "node:assert/strict";
import { onesSum } from "./offload.ts";
import { createWasmChecksum } from "./wasm.ts";

Deno.test("the wasm sum equals the JavaScript sum for every offset and length", () => {
  const wasm = createWasmChecksum(200_000);
  assert.ok(wasm, "WebAssembly is available in this runtime");
  const mem = new Uint8Array(wasm.buffer);
  let seed = 5;
  for (let i = 0; i < 140_000; i++) mem[i] = (seed = (seed * 1103515245 + 12345) >>> 0) >>> 24;
  for (const base of [0, 1, 2, 3, 4096]) {
    const view = mem.subarray(base, base + 70_000);
    for (const off of [0, 1, 2, 3, 5, 7]) {
      for (const len of [0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 63, 64, 1449, 65_535]) {
        assert.equal(
          wasm.sum(view, off, len),
          onesSum(view, off, len),
          `base ${base} off ${off} len ${len}`,
        );
      }
    }
  }
});

Deno.test("the wasm sum folds long carry chains and sizes its memory in pages", () => {
  const wasm = createWasmChecksum(70_000)!;
  assert.equal(wasm.buffer.byteLength, 2 * 65536);
  const all = new Uint8Array(wasm.buffer).fill(0xff);
  assert.equal(wasm.sum(all, 0, 65536), 0xffff);
  assert.equal(wasm.sum(all, 1, 65535), onesSum(all, 1, 65535));
});

Deno.test("the wasm sum refuses buffers outside its memory", () => {
  const wasm = createWasmChecksum(1)!;
  assert.throws(() => wasm.sum(new Uint8Array(16), 0, 16), /outside the wasm memory/);
});
