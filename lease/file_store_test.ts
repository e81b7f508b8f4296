import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { compactLeaseFile, createFileLeaseStore, createFileRegistry } from "./file_store.ts";
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
