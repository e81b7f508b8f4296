import assert from "node:assert/strict";
import { growthAfterWarmup, sparkline } from "./soak_bench.ts";

Deno.test("growthAfterWarmup() compares the last minute with the first minute after the warm-up", () => {
  const samples: [number, number][] = [
    [0, 40],
    [30, 90],
    [60, 80],
    [90, 84],
    [120, 80],
    [
      150,
      84,
    ],
    [180, 82],
    [210, 82],
  ];
  const g = growthAfterWarmup(samples, 60);
  assert.equal(g.baseline, 82); // median of 80, 84
  assert.equal(g.end, 82); // median of 82, 82
  assert.equal(g.percent, 0);
  assert.equal(g.peak, 84);
});

Deno.test("growthAfterWarmup() reports steady growth as a percentage and a slope", () => {
  const samples = Array.from({ length: 31 }, (_, i) => [i * 10, 100 + i] as [number, number]);
  const g = growthAfterWarmup(samples, 0, 30);
  assert.equal(g.baseline, 101); // 100, 101, 102
  assert.equal(g.end, 129); // 128, 129, 130
  assert.ok(Math.abs(g.percent - (129 / 101 - 1) * 100) < 1e-9);
  assert.ok(Math.abs(g.slopePerHour - 360) < 1e-9); // 1 per 10 s
});

Deno.test("growthAfterWarmup() refuses a run with nothing after the warm-up", () => {
  assert.throws(() => growthAfterWarmup([[0, 1], [10, 2]], 60), /no sample after the 60 s warm-up/);
});

Deno.test("sparkline() scales to the range and averages into at most `width` bars", () => {
  assert.equal(sparkline([1, 2, 3, 4]), "▁▃▆█");
  assert.equal(sparkline([5, 5, 5]), "▄▄▄");
  assert.equal(sparkline([]), "");
  assert.equal(sparkline(Array.from({ length: 120 }, (_, i) => i), 60).length, 60);
});
