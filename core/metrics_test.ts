import assert from "node:assert/strict";
import { Counter, DURATION_BUCKETS, Gauge, Histogram, Registry } from "./metrics.ts";

Deno.test("Registry.render() writes HELP and TYPE before each family's samples", () => {
  const r = new Registry();
  r.counter("weft_events_total", "Lease events seen").inc();
  r.gauge("weft_peers", "Peers in the datapath").set(3);
  assert.equal(
    r.render(),
    [
      "# HELP weft_events_total Lease events seen",
      "# TYPE weft_events_total counter",
      "weft_events_total 1",
      "# HELP weft_peers Peers in the datapath",
      "# TYPE weft_peers gauge",
      "weft_peers 3",
      "",
    ].join("\n"),
  );
  assert.equal(new Registry().render(), "\n");
});

Deno.test("Counter adds per label set, with labels sorted and escaped", () => {
  const c = new Counter("weft_x_total", "x");
  c.inc({ store: "etcd" });
  c.inc({ store: "etcd" }, 2);
  c.inc({ store: "kube", kind: "put" });
  c.inc({ kind: "put", store: "kube" }, 0.5);
  c.inc({ path: 'C:\\dir "x"\nnext' });
  assert.equal(c.get({ store: "etcd" }), 3);
  assert.equal(c.get({ store: "kube", kind: "put" }), 1.5);
  assert.equal(c.get({ store: "file" }), 0);
  assert.deepEqual(c.render(), [
    'weft_x_total{store="etcd"} 3',
    'weft_x_total{kind="put",store="kube"} 1.5',
    'weft_x_total{path="C:\\\\dir \\"x\\"\\nnext"} 1',
  ]);
});

Deno.test("Counter without samples renders 0 and refuses to go down", () => {
  const c = new Counter("weft_y_total", "y");
  assert.deepEqual(c.render(), ["weft_y_total 0"]);
  for (const by of [-1, NaN]) {
    assert.throws(() => c.inc(undefined, by), {
      name: "RangeError",
      message: `Cannot add ${by} to counter weft_y_total: a counter only goes up; use a gauge`,
    });
  }
  assert.equal(c.get(), 0);
});

Deno.test("Gauge sets values per label set and renders special floats as Prometheus does", () => {
  const g = new Gauge("weft_g", "g");
  assert.deepEqual(g.render(), []);
  g.set(5);
  g.set(2);
  g.set(Infinity, { k: "inf" });
  g.set(-Infinity, { k: "ninf" });
  g.set(NaN, { k: "nan" });
  g.set(1e21, { k: "big" });
  assert.equal(g.get(), 2);
  assert.deepEqual(g.render(), [
    "weft_g 2",
    'weft_g{k="inf"} +Inf',
    'weft_g{k="ninf"} -Inf',
    'weft_g{k="nan"} NaN',
    'weft_g{k="big"} 1e+21',
  ]);
});

Deno.test("Histogram buckets are cumulative and end with +Inf, _sum and _count", () => {
  const h = new Histogram("weft_d_seconds", "d", [0.1, 1, 10]);
  for (const v of [0.05, 0.1, 0.5, 2, 20]) h.observe(v);
  assert.equal(h.count, 5);
  assert.deepEqual(h.render(), [
    'weft_d_seconds_bucket{le="0.1"} 2',
    'weft_d_seconds_bucket{le="1"} 3',
    'weft_d_seconds_bucket{le="10"} 4',
    'weft_d_seconds_bucket{le="+Inf"} 5',
    "weft_d_seconds_sum 22.65",
    "weft_d_seconds_count 5",
  ]);
  const empty = new Histogram("weft_e", "e", [1]);
  assert.deepEqual(empty.render(), [
    'weft_e_bucket{le="1"} 0',
    'weft_e_bucket{le="+Inf"} 0',
    "weft_e_sum 0",
    "weft_e_count 0",
  ]);
});

Deno.test("Histogram sorts and dedupes its bounds so the output stays cumulative", () => {
  const h = new Histogram("weft_h", "h", [10, 1, 1, Infinity, 0.5]);
  assert.deepEqual(h.buckets, [0.5, 1, 10]);
  h.observe(0.7);
  assert.deepEqual(h.render().slice(0, 4), [
    'weft_h_bucket{le="0.5"} 0',
    'weft_h_bucket{le="1"} 1',
    'weft_h_bucket{le="10"} 1',
    'weft_h_bucket{le="+Inf"} 1',
  ]);
  const d = new Histogram("weft_dd", "dd", DURATION_BUCKETS);
  assert.deepEqual(d.buckets, DURATION_BUCKETS, "the shared buckets are already ascending");
  d.observe(0.003);
  const counts = d.render().filter((l) => l.includes("_bucket")).map((l) =>
    Number(l.split(" ")[1])
  );
  assert.deepEqual(counts, [...counts].sort((a, b) => a - b), "never decreasing");
  assert.equal(d.render().find((l) => l.includes('le="0.0001"')), 'weft_dd_bucket{le="0.0001"} 0');
  assert.equal(d.render().find((l) => l.includes('le="0.005"')), 'weft_dd_bucket{le="0.005"} 1');
});

Deno.test("Registry returns the same family for a name and refuses a second type", () => {
  const r = new Registry();
  const a = r.counter("weft_a_total", "a");
  assert.equal(r.counter("weft_a_total", "other help"), a);
  a.inc();
  r.counter("weft_a_total", "a").inc();
  assert.equal(a.get(), 2);
  assert.throws(() => r.gauge("weft_a_total", "a"), {
    name: "TypeError",
    message:
      "Cannot register gauge weft_a_total: it is already a counter; give the gauge another name",
  });
  const h = r.histogram("weft_h_seconds", "h\\elp\nline", [1]);
  assert.equal(r.histogram("weft_h_seconds", "h", [2]), h);
  assert.ok(
    r.render().includes("# HELP weft_h_seconds h\\\\elp\\nline\n# TYPE weft_h_seconds histogram\n"),
  );
});
