import assert from "node:assert/strict";
import { EVENT_FIELD_MAX, EventRing, recordingLogger } from "./events.ts";
import { createLogger } from "./log.ts";

Deno.test("EventRing keeps the last events, newest first, numbered from 1", () => {
  let now = 1000;
  const ring = new EventRing({ capacity: 3, now: () => now++ });
  assert.equal(ring.lastSeq, 0);
  assert.deepEqual(ring.recent(), []);
  for (const msg of ["a", "b", "c", "d"]) ring.record("info", msg);
  assert.equal(ring.lastSeq, 4);
  assert.deepEqual(ring.recent().map((e) => [e.seq, e.msg, e.at]), [
    [4, "d", 1003],
    [3, "c", 1002],
    [2, "b", 1001],
  ]);
  assert.deepEqual(ring.recent(1).map((e) => e.msg), ["d"]);
  assert.deepEqual(ring.recent(0), []);
});

Deno.test("EventRing turns fields into short texts and drops undefined ones", () => {
  const ring = new EventRing();
  const e = ring.record("error", "peer sync failed", {
    error: new Error("EEXIST"),
    count: 3,
    big: 2n ** 70n,
    list: ["a", 1],
    gone: undefined,
    long: "x".repeat(1000),
  });
  assert.deepEqual({ ...e.fields, long: e.fields.long.length }, {
    error: "EEXIST",
    count: "3",
    big: "1180591620717411303424",
    list: '["a",1]',
    long: EVENT_FIELD_MAX,
  });
  assert.ok(e.fields.long.endsWith("…"));
});

Deno.test("EventRing rejects a capacity that is not a positive integer", () => {
  assert.throws(
    () => new EventRing({ capacity: 0 }),
    /'capacity' must be a positive integer: current value is 0/,
  );
});

Deno.test("recordingLogger() writes every line and records info and above with with() fields", () => {
  const lines: string[] = [];
  const ring = new EventRing();
  const logger = recordingLogger(
    createLogger({ format: "json", level: "debug", write: (l) => lines.push(l) }),
    ring,
  );
  const backend = logger.with({ backend: "vxlan" });
  backend.debug("dump", { n: 1 });
  backend.warn("repairing the vxlan datapath", { reason: "route deleted" });
  logger.info("peer added", { subnet: "10.5.2.0/24" });
  assert.equal(lines.length, 3);
  assert.match(lines[1], /"backend":"vxlan"/);
  assert.deepEqual(ring.recent().map((e) => [e.level, e.msg, e.fields]), [
    ["info", "peer added", { subnet: "10.5.2.0/24" }],
    ["warn", "repairing the vxlan datapath", { backend: "vxlan", reason: "route deleted" }],
  ]);
});
