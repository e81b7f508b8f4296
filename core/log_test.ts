import assert from "node:assert/strict";
import { createLogger, type LogLevel, nullLogger } from "./log.ts";
import { memoryLogger } from "../testing/memory_logger.ts";

const T0 = Date.UTC(2030, 0, 2, 3, 4, 5, 678);

function capture(options: Parameters<typeof createLogger>[0] = {}) {
  const lines: string[] = [];
  const log = createLogger({ now: () => T0, write: (l) => lines.push(l), ...options });
  return { log, lines };
}

Deno.test("createLogger() text lines: time, padded level, message, key=value fields", () => {
  const { log, lines } = capture();
  log.info("lease acquired", { subnet: "10.5.3.0/24", attempts: 2, ok: true });
  log.warn("store slow");
  log.error("boom", { error: new Error("connection refused") });
  assert.deepEqual(lines, [
    "2030-01-02T03:04:05.678Z INFO  lease acquired subnet=10.5.3.0/24 attempts=2 ok=true",
    "2030-01-02T03:04:05.678Z WARN  store slow",
    `2030-01-02T03:04:05.678Z ERROR boom error="connection refused"`,
  ]);
});

Deno.test("text format quotes values that need it and renders every kind of value", () => {
  const cases: [unknown, string][] = [
    ["eth0", "eth0"],
    ["http://10.0.0.1:2379", "http://10.0.0.1:2379"],
    ["two words", `"two words"`],
    ["", `""`],
    ['say "hi"', `"say \\"hi\\""`],
    ["line\nbreak", `"line\\nbreak"`],
    [42, "42"],
    [1.5, "1.5"],
    [false, "false"],
    [null, "null"],
    [undefined, "undefined"],
    [12345678901234567890n, "12345678901234567890"],
    [{ a: 1, b: [1, 2] }, `{"a":1,"b":[1,2]}`],
    [{ big: 5n }, `{"big":"5"}`],
    [new Error("bad", { cause: new Error("ECONNREFUSED") }), `"bad: ECONNREFUSED"`],
    [new Error("bad: ECONNREFUSED", { cause: new Error("ECONNREFUSED") }), `"bad: ECONNREFUSED"`],
  ];
  for (const [value, want] of cases) {
    const { log, lines } = capture();
    log.info("m", { k: value });
    assert.equal(lines[0], `2030-01-02T03:04:05.678Z INFO  m k=${want}`, String(value));
  }
});

Deno.test("text format keeps one event on one line", () => {
  const { log, lines } = capture();
  log.warn("first\nsecond\r", { detail: "a\nb" });
  assert.equal(lines.length, 1);
  assert.equal(lines[0], `2030-01-02T03:04:05.678Z WARN  first\\nsecond\\r detail="a\\nb"`);
});

Deno.test("createLogger() json lines are objects with ts, level, msg and the fields", () => {
  const { log, lines } = capture({ format: "json" });
  log.info("lease acquired", { subnet: "10.5.3.0/24", attempts: 2 });
  log.error("failed", {
    error: new Error("watch failed", { cause: new Error("compacted") }),
    big: 2n ** 64n,
    nested: { e: new Error("inner"), n: 1n },
  });
  assert.equal(
    lines[0],
    `{"ts":"2030-01-02T03:04:05.678Z","level":"info","msg":"lease acquired","subnet":"10.5.3.0/24","attempts":2}`,
  );
  assert.deepEqual(JSON.parse(lines[1]), {
    ts: "2030-01-02T03:04:05.678Z",
    level: "error",
    msg: "failed",
    error: "watch failed: compacted",
    big: "18446744073709551616",
    nested: { e: "inner", n: "1" },
  });
});

Deno.test("json format never throws and never lets a field replace ts, level or msg", () => {
  const { log, lines } = capture({ format: "json" });
  const cyclic: Record<string, unknown> = { name: "a" };
  cyclic.self = cyclic;
  const shared = { x: 1 };
  log.info("real message", { msg: "spoof", level: "error", cyclic, pair: [shared, shared] });
  const rec = JSON.parse(lines[0]);
  assert.equal(rec.msg, "real message");
  assert.equal(rec.level, "info");
  assert.equal(rec["field.msg"], "spoof");
  assert.equal(rec["field.level"], "error");
  assert.deepEqual(rec.cyclic, { name: "a", self: "[circular]" });
  assert.deepEqual(rec.pair, [{ x: 1 }, { x: 1 }], "a shared object is not a cycle");
  const text = capture();
  text.log.info("m", { cyclic });
  assert.equal(
    text.lines[0],
    `2030-01-02T03:04:05.678Z INFO  m cyclic={"name":"a","self":"[circular]"}`,
  );
});

Deno.test("createLogger() drops lines below the level", () => {
  const levels: LogLevel[] = ["debug", "info", "warn", "error"];
  for (const [i, min] of levels.entries()) {
    const { log, lines } = capture({ level: min, format: "json" });
    for (const l of levels) log[l](l);
    assert.deepEqual(lines.map((x) => JSON.parse(x).msg), levels.slice(i), `level ${min}`);
  }
  const { log, lines } = capture();
  log.debug("hidden");
  assert.deepEqual(lines, [], "info is the default level");
});

Deno.test("with() adds fields to every line; call fields win; the parent is unchanged", () => {
  const { log, lines } = capture({ fields: { app: "weft" } });
  const child = log.with({ store: "etcd", attempt: 1 });
  const grandchild = child.with({ attempt: 2 });
  child.info("a");
  grandchild.info("b", { extra: "x" });
  child.info("c", { store: "kube" });
  log.info("d");
  assert.deepEqual(lines, [
    "2030-01-02T03:04:05.678Z INFO  a app=weft store=etcd attempt=1",
    "2030-01-02T03:04:05.678Z INFO  b app=weft store=etcd attempt=2 extra=x",
    "2030-01-02T03:04:05.678Z INFO  c app=weft store=kube attempt=1",
    "2030-01-02T03:04:05.678Z INFO  d app=weft",
  ]);
});

Deno.test("memoryLogger() keeps debug and up in memory; nullLogger() drops everything", () => {
  const mem = memoryLogger();
  mem.debug("d");
  mem.with({ k: "v" }).error("e");
  assert.equal(mem.lines.length, 2);
  assert.match(mem.lines[0], / DEBUG d$/);
  assert.match(mem.lines[1], / ERROR e k=v$/);
  const warnOnly = memoryLogger("warn");
  warnOnly.info("no");
  warnOnly.warn("yes");
  assert.equal(warnOnly.lines.length, 1);
  nullLogger.error("nothing happens", { error: new Error("x") });
  nullLogger.with({ a: 1 }).info("nothing");
});
