import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import {
  COMPACT_MIN_BYTES,
  compactLeaseFile,
  createFileLeaseStore,
  createFileRegistry,
} from "./file_store.ts";
import { leaseKey } from "./kv_store.ts";
import { encodeLeaseAttrs } from "./types.ts";
import {
  CONTRACT_CONFIG,
  type ContractHarness,
  hostIP,
  leaseStoreContract,
} from "../testing/lease_contract.ts";
import { Registry } from "../core/metrics.ts";
import { memoryLogger } from "../testing/memory_logger.ts";
import { waitFor } from "../testing/wait.ts";

function fileHarness(): Promise<ContractHarness> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "weft-file-"));
  const leaseFile = path.join(dir, "leases.json");
  const configPath = path.join(dir, "net-conf.json");
  fs.writeFileSync(configPath, CONTRACT_CONFIG);
  const registry = createFileRegistry({ path: leaseFile, configPath });
  return Promise.resolve({
    minTtlMs: 1000,
    open: (_host, o) =>
      Promise.resolve(
        createFileLeaseStore({ path: leaseFile, configPath, ttlMs: o?.ttlMs, pollMs: 50 }),
      ),
    writeReservation: (subnet, publicIP) =>
      registry.put(subnet.replace("/", "-"), encodeLeaseAttrs({ publicIP }), null).then(() => {}),
    writeGarbage: (subnet, value) =>
      registry.put(subnet.replace("/", "-"), value, null).then(() => {}),
    removeExternally: (lease) => registry.delete(leaseKey(lease)),
    compact: () => compactLeaseFile(leaseFile, { forgetHistory: true }),
    cleanup: () => Promise.resolve(fs.rmSync(dir, { recursive: true, force: true })),
  });
}

leaseStoreContract("file", {
  ttl: true,
  reservations: true,
  compaction: true,
  restart: "the file store has no server to restart",
  allocation: true,
  garbage: true,
}, fileHarness);

Deno.test("file store: a missing config names the file and how to write it", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "weft-file-"));
  try {
    const store = createFileLeaseStore({
      path: path.join(dir, "l.json"),
      configPath: path.join(dir, "nope.json"),
    });
    await assert.rejects(
      () => store.getNetworkConfig(),
      /network config not found at file .*nope\.json: write it first/,
    );
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

Deno.test("file store: malformed records are warned about once and counted", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "weft-file-"));
  try {
    const configPath = path.join(dir, "c.json");
    fs.writeFileSync(configPath, CONTRACT_CONFIG);
    const reg = createFileRegistry({ path: path.join(dir, "l.json"), configPath });
    await reg.put("10.5.3.0-24", "garbage", null);
    const metrics = new Registry();
    const logger = memoryLogger();
    const store = createFileLeaseStore({
      path: path.join(dir, "l.json"),
      configPath,
      metrics,
      logger,
    });
    await store.list();
    await store.list();
    assert.equal(
      metrics.counter("weft_store_malformed_records_total", "").get({ store: "file" }),
      2,
    );
    assert.equal(
      logger.lines.filter((l) => l.includes("skipping malformed lease record")).length,
      1,
    );
    assert.match(logger.lines[0], /key=10.5.3.0-24 reason="value is not JSON/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

Deno.test("file store: 20 concurrent acquirers on one file never share a subnet", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "weft-file-"));
  try {
    const configPath = path.join(dir, "c.json");
    fs.writeFileSync(configPath, '{"Network":"10.5.0.0/16","SubnetMax":"10.5.10.0"}');
    const stores = Array.from(
      { length: 20 },
      () => createFileLeaseStore({ path: path.join(dir, "l.json"), configPath }),
    );
    const cfg = await stores[0].getNetworkConfig();
    const results = await Promise.allSettled(
      stores.map((s, i) => s.acquire(cfg, { attrs: { publicIP: hostIP(i) } })),
    );
    const ok = results.filter((r) => r.status === "fulfilled").map((r) =>
      (r as PromiseFulfilledResult<{ subnet: { ip: number } }>).value.subnet.ip
    );
    assert.equal(ok.length, 10);
    assert.equal(new Set(ok).size, 10);
    const failed = results.filter((r) => r.status === "rejected") as PromiseRejectedResult[];
    assert.ok(
      failed.every((r) => r.reason.name === "PoolExhaustedError"),
      failed.map((f) => f.reason.message).join("\n"),
    );
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

/** A lease file in a fresh directory, with a config; removed by `done`. */
function scratch() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "weft-file-"));
  const file = path.join(dir, "leases.json");
  const configPath = path.join(dir, "c.json");
  fs.writeFileSync(configPath, CONTRACT_CONFIG);
  return { file, configPath, done: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

const lines = (file: string) => fs.readFileSync(file, "utf8").split("\n");
const attrs = (i: number, pad = 0) =>
  encodeLeaseAttrs({
    publicIP: hostIP(i),
    backendType: "vxlan",
    backendData: { pad: "x".repeat(pad) },
  });

/** The batches of a registry watch, pulled one at a time. */
function watching(reg: ReturnType<typeof createFileRegistry>, revision: number) {
  const stop = new AbortController();
  const it = reg.watch(revision, stop.signal)[Symbol.asyncIterator]();
  return {
    next: async () => {
      const r = await it.next();
      assert.ok(!r.done, "the watch ended");
      return r.value;
    },
    stop: async () => {
      stop.abort();
      await it.return?.();
    },
  };
}

Deno.test("file store: a change appends one line and leaves the snapshot line as it was", async () => {
  const t = scratch();
  try {
    const reg = createFileRegistry({ path: t.file, configPath: t.configPath });
    await reg.put("10.5.1.0-24", attrs(1), null);
    const before = lines(t.file);
    assert.equal(before.length, 2, "a snapshot line and the end");
    await reg.put("10.5.2.0-24", attrs(2), 60_000);
    await reg.delete("10.5.1.0-24");
    const after = lines(t.file);
    assert.equal(after[0], before[0]);
    assert.deepEqual(after.slice(1, 3).map((l) => JSON.parse(l)), [
      {
        revision: 3,
        key: "10.5.2.0-24",
        value: attrs(2),
        expiration: JSON.parse(after[1]).expiration,
      },
      { revision: 4, key: "10.5.1.0-24" },
    ]);
    assert.equal(after[3], "", "every line ends with a newline");
    // a second process (a fresh registry) reads snapshot and changes alike
    const other = createFileRegistry({ path: t.file, configPath: t.configPath });
    const { records, revision } = await other.list();
    assert.equal(revision, 4);
    assert.deepEqual(records.map((r) => r.key), ["10.5.2.0-24"]);
  } finally {
    t.done();
  }
});

Deno.test("file store: a file written by an older weft (one JSON object) is read and upgraded", async () => {
  const t = scratch();
  try {
    const old = {
      revision: 3,
      compacted: 0,
      records: { "10.5.1.0-24": { value: attrs(1), expiration: null } },
      log: [
        { revision: 2, key: "10.5.9.0-24", value: attrs(9), expiration: null },
        { revision: 3, key: "10.5.1.0-24", value: attrs(1), expiration: null },
      ],
    };
    fs.writeFileSync(t.file, JSON.stringify(old));
    const reg = createFileRegistry({ path: t.file, configPath: t.configPath });
    assert.deepEqual(await reg.list(), {
      records: [{ key: "10.5.1.0-24", value: attrs(1), expiration: null }],
      revision: 3,
    });
    const w = watching(reg, 2);
    try {
      assert.deepEqual(await w.next(), {
        events: [{
          type: "put",
          record: { key: "10.5.1.0-24", value: attrs(1), expiration: null },
        }],
        revision: 3,
      });
      await reg.put("10.5.2.0-24", attrs(2), null);
      assert.deepEqual((await w.next()).revision, 4);
    } finally {
      await w.stop();
    }
    const text = lines(t.file);
    assert.equal(text.length, 2, "the first write made it one snapshot line");
    assert.deepEqual(Object.keys(JSON.parse(text[0]).records), ["10.5.1.0-24", "10.5.2.0-24"]);
  } finally {
    t.done();
  }
});

Deno.test("file store: a malformed change line is skipped with a warning; later changes still arrive", async () => {
  const t = scratch();
  try {
    const logger = memoryLogger();
    const reg = createFileRegistry({ path: t.file, configPath: t.configPath, logger });
    await reg.put("10.5.1.0-24", attrs(1), null);
    const w = watching(reg, 2);
    try {
      fs.appendFileSync(t.file, "not json\n" + JSON.stringify({ revision: "x", key: 1 }) + "\n");
      await reg.put("10.5.2.0-24", attrs(2), null);
      const batch = await w.next();
      assert.deepEqual(batch.events.map((e) => e.type === "put" && e.record.key), ["10.5.2.0-24"]);
    } finally {
      await w.stop();
    }
    assert.equal(
      logger.lines.filter((l) => l.includes("skipping a malformed line of the lease file")).length,
      4,
      "two lines, warned once by the writer and once by the watcher: " + logger.lines.join("\n"),
    );
    const fresh = createFileRegistry({ path: t.file, configPath: t.configPath });
    assert.deepEqual((await fresh.list()).records.map((r) => r.key), [
      "10.5.1.0-24",
      "10.5.2.0-24",
    ]);
  } finally {
    t.done();
  }
});

Deno.test("file store: a torn last line is left by readers and cut off by the next writer", async () => {
  const t = scratch();
  try {
    const logger = memoryLogger();
    const reg = createFileRegistry({ path: t.file, configPath: t.configPath, logger });
    await reg.put("10.5.1.0-24", attrs(1), null);
    fs.appendFileSync(t.file, '{"revision":3,"key":"10.5.7.0-24","val');
    const reader = createFileRegistry({ path: t.file, configPath: t.configPath });
    assert.deepEqual(await reader.list().then((l) => l.revision), 2);
    await reg.put("10.5.2.0-24", attrs(2), null);
    assert.match(logger.lines.join("\n"), /dropping a torn last line of the lease file .*bytes=38/);
    const { records, revision } = await reader.list();
    assert.equal(revision, 3);
    assert.deepEqual(records.map((r) => r.key), ["10.5.1.0-24", "10.5.2.0-24"]);
    assert.equal(lines(t.file).length, 3);
  } finally {
    t.done();
  }
});

Deno.test("file store: writers fold the changes into a new snapshot; a watcher follows across it", async () => {
  const t = scratch();
  try {
    const reg = createFileRegistry({ path: t.file, configPath: t.configPath });
    await reg.put("10.5.1.0-24", attrs(1), null);
    const w = watching(reg, 2);
    try {
      // ~1 KB per change: the journal outgrows COMPACT_MIN_BYTES after ~64 changes
      const seen: string[] = [];
      let compacted = false;
      for (let i = 0; i < 100; i++) {
        const key = `10.5.${10 + (i % 20)}.0-24`;
        await reg.put(key, attrs(i, 1000), null);
        if (lines(t.file).length === 2) compacted = true;
        const batch = await w.next();
        for (const e of batch.events) if (e.type === "put") seen.push(e.record.key);
        assert.equal(batch.revision, 3 + i);
      }
      assert.ok(compacted, "the file was compacted to one snapshot line");
      assert.equal(seen.length, 100);
      assert.ok(fs.statSync(t.file).size < 2 * COMPACT_MIN_BYTES + 100_000);
    } finally {
      await w.stop();
    }
    const { records, revision } = await createFileRegistry({
      path: t.file,
      configPath: t.configPath,
    }).list();
    assert.equal(revision, 102);
    assert.equal(records.length, 21);
  } finally {
    t.done();
  }
});

Deno.test("file store: an empty lease file (created by hand) gets a snapshot line on the first write", async () => {
  const t = scratch();
  try {
    fs.writeFileSync(t.file, "");
    const reg = createFileRegistry({ path: t.file, configPath: t.configPath });
    assert.deepEqual(await reg.list(), { records: [], revision: 1 });
    await reg.put("10.5.1.0-24", attrs(1), null);
    await reg.put("10.5.2.0-24", attrs(2), null);
    const text = lines(t.file);
    assert.equal(text.length, 3, "a snapshot line, a change line and the end");
    assert.deepEqual(Object.keys(JSON.parse(text[0]).records), ["10.5.1.0-24"]);
    const fresh = createFileRegistry({ path: t.file, configPath: t.configPath });
    assert.deepEqual((await fresh.list()).records.map((r) => r.key), [
      "10.5.1.0-24",
      "10.5.2.0-24",
    ]);
  } finally {
    t.done();
  }
});

Deno.test("file store: three writers and a watcher through many compactions agree with a fresh read", async () => {
  const t = scratch();
  try {
    const open = () => createFileRegistry({ path: t.file, configPath: t.configPath, pollMs: 20 });
    const writers = [open(), open(), open()];
    const reader = open();
    const start = await reader.list();
    const stop = new AbortController();
    const seen = new Map<string, string>();
    let at = start.revision;
    const watched = (async () => {
      for await (const b of reader.watch(start.revision, stop.signal)) {
        for (const e of b.events) {
          if (e.type === "put") seen.set(e.record.key, e.record.value);
          else if (e.type === "delete") seen.delete(e.key);
          else throw new Error("compacted: the watcher fell more than LOG_LIMIT behind");
        }
        at = b.revision;
      }
    })();
    let n = 0;
    const step = async (w: number) => {
      for (let i = 0; i < 120; i++) {
        const k = (n++ * 7919) % 40; // a fixed spread of keys
        const key = `10.5.${k}.0-24`;
        if (k % 3 === 0) await writers[w].delete(key);
        else await writers[w].put(key, attrs(k, 1000 + i), null);
      }
    };
    await Promise.all([step(0), step(1), step(2)]);
    const final = await open().list();
    await waitFor(
      "the watcher reaches the last revision",
      () => at === final.revision ? null : `at ${at} of ${final.revision}`,
      10_000,
    );
    stop.abort();
    await watched;
    assert.deepEqual(
      [...seen].sort(),
      final.records.map((r) => [r.key, r.value] as [string, string]).sort(),
    );
    assert.ok(final.revision > 200, `revision ${final.revision}`);
    const head = JSON.parse(lines(t.file)[0]);
    assert.equal(typeof head.parent, "string", "compacted more than once");
  } finally {
    t.done();
  }
});
