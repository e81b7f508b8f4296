import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { memoryLogger } from "../testing/memory_logger.ts";
import { Registry } from "../core/metrics.ts";
import { FakeClock } from "../testing/fake_clock.ts";
import { formatIPv4Net } from "../core/ip.ts";
import { createKvLeaseStore } from "../lease/kv_store.ts";
import type { Lease } from "../lease/types.ts";
import { createMemoryRegistry, type MemoryRegistry } from "../testing/memory_registry.ts";
import { type Agent, createAgent } from "./agent.ts";
import { allocBackend } from "../backends/alloc.ts";
import type { ExternalInterface } from "../datapath/iface.ts";

const CONFIG = '{"Network":"10.5.0.0/16","Backend":{"Type":"alloc"}}';
const iface = (ip: string): ExternalInterface => ({
  name: "eth0",
  index: 2,
  mtu: 1500,
  ifaceAddr: ip,
  extAddr: ip,
});

interface Rig {
  reg: MemoryRegistry;
  clock: FakeClock;
  dir: string;
  metrics: Registry;
  logger: ReturnType<typeof memoryLogger>;
  peersSeen: (readonly Lease[])[];
  agent: Agent;
  stop: () => Promise<void>;
  running: Promise<void>;
}

function rig(
  options: {
    config?: string | null;
    ttlMs?: number;
    clock?: FakeClock;
    reg?: MemoryRegistry;
    ip?: string;
  } = {},
): Rig {
  const clock = options.clock ?? new FakeClock();
  const reg = options.reg ??
    createMemoryRegistry({ config: options.config === undefined ? CONFIG : options.config, clock });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "weft-agent-"));
  const metrics = new Registry();
  const logger = memoryLogger();
  const peersSeen: (readonly Lease[])[] = [];
  const store = createKvLeaseStore(reg, { ttlMs: options.ttlMs ?? 3600_000, clock, logger });
  const agent = createAgent({
    store,
    backends: { alloc: () => allocBackend({ onPeers: (p) => peersSeen.push(p) }) },
    extIface: iface(options.ip ?? "192.0.2.10"),
    subnetFile: path.join(dir, "subnet.env"),
    ipMasq: true,
    renewMarginMs: 10 * 60_000,
    logger,
    metrics,
    clock,
    random: () => 0.5,
  });
  const ac = new AbortController();
  const running = agent.run(ac.signal);
  return {
    reg,
    clock,
    dir,
    metrics,
    logger,
    peersSeen,
    agent,
    running,
    stop: async () => {
      ac.abort();
      await running;
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function until(cond: () => boolean, clock?: FakeClock, what = "condition"): Promise<void> {
  for (let i = 0; i < 400; i++) {
    if (cond()) return;
    if (clock) await clock.advance(50);
    else await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`timed out waiting for ${what}`);
}

Deno.test("agent acquires a lease, writes flannel's subnet.env and becomes ready", async () => {
  const r = rig();
  try {
    await until(() => r.agent.status().ready, r.clock, "ready");
    const lease = r.agent.status().lease!;
    const env = fs.readFileSync(path.join(r.dir, "subnet.env"), "utf8");
    const first = formatIPv4Net({ ip: lease.subnet.ip + 1, prefixLen: 24 });
    assert.equal(
      env,
      `FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=${first}\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=true\n`,
    );
    assert.equal(r.metrics.gauge("weft_ready", "").get(), 1);
  } finally {
    await r.stop();
  }
});

Deno.test("agent keeps retrying while the store is down and says why", async () => {
  const clock = new FakeClock();
  const reg = createMemoryRegistry({ config: CONFIG, clock });
  reg.down = true;
  const r = rig({ clock, reg });
  try {
    await until(() => (r.agent.status().reason ?? "").includes("down"), clock, "reason");
    assert.match(
      r.agent.status().reason!,
      /reading the network config from the memory store: memory store is down/,
    );
    assert.equal(r.agent.status().ready, false);
    await clock.advance(60_000);
    assert.equal(r.agent.status().ready, false, "still down, still not ready");
    reg.down = false;
    await until(() => r.agent.status().ready, clock, "ready after recovery");
    const errors = r.logger.lines.filter((l) => l.includes("will keep retrying"));
    assert.equal(errors.length, 1, "the same failure is logged once, not on every retry");
  } finally {
    await r.stop();
  }
});

Deno.test("agent reports a missing network config with how to write it", async () => {
  const r = rig({ config: null });
  try {
    await until(() => (r.agent.status().reason ?? "").includes("not found"), r.clock, "reason");
    assert.match(
      r.agent.status().reason!,
      /network config not found at memory config: write it first/,
    );
  } finally {
    await r.stop();
  }
});

Deno.test("agent names the supported backends when Backend.Type is unknown", async () => {
  const r = rig({ config: '{"Network":"10.5.0.0/16","Backend":{"Type":"wireguard"}}' });
  try {
    await until(() => (r.agent.status().reason ?? "").includes("not supported"), r.clock, "reason");
    assert.match(
      r.agent.status().reason!,
      /Backend.Type "wireguard" is not supported: use one of alloc/,
    );
  } finally {
    await r.stop();
  }
});

Deno.test("agent renews the lease before it expires", async () => {
  const r = rig({ ttlMs: 3600_000 });
  try {
    await until(() => r.agent.status().ready, r.clock, "ready");
    const first = r.agent.status().lease!.expiration!;
    // renew margin 10 min: nothing before 50 min
    await r.clock.advance(49 * 60_000);
    assert.equal(r.metrics.counter("weft_lease_renewals_total", "").get({ result: "ok" }), 0);
    await r.clock.advance(2 * 60_000);
    await until(
      () => r.metrics.counter("weft_lease_renewals_total", "").get({ result: "ok" }) === 1,
      r.clock,
    );
    assert.ok(r.agent.status().lease!.expiration! > first);
    // hours later the lease is still alive: renewals keep going
    await r.clock.advance(5 * 3600_000);
    const { records } = await r.reg.list();
    assert.equal(records.length, 1);
    assert.ok(r.metrics.counter("weft_lease_renewals_total", "").get({ result: "ok" }) >= 5);
  } finally {
    await r.stop();
  }
});

Deno.test("agent re-acquires its own lease when someone deletes it", async () => {
  const r = rig();
  try {
    await until(() => r.agent.status().ready, r.clock, "ready");
    const before = r.agent.status().lease!;
    const key = `${formatIPv4Net(before.subnet).replace("/", "-")}`;
    await r.reg.delete(key);
    await until(
      () =>
        r.metrics.counter("weft_lease_reacquisitions_total", "").get() === 1 &&
        r.agent.status().ready,
      r.clock,
      "re-acquired",
    );
    const { records } = await r.reg.list();
    assert.deepEqual(records.map((x) => x.key), [key], "same subnet again (previous-subnet hint)");
    assert.deepEqual(r.agent.status().lease!.subnet, before.subnet);
  } finally {
    await r.stop();
  }
});

Deno.test("agent re-acquires when its lease expires while the store was unreachable", async () => {
  const clock = new FakeClock();
  const reg = createMemoryRegistry({ config: CONFIG, clock });
  const r = rig({ clock, reg, ttlMs: 60_000 });
  try {
    await until(() => r.agent.status().ready, clock, "ready");
    reg.down = true;
    await clock.advance(120_000); // renewals fail, the lease lapses
    reg.down = false;
    reg.expire();
    await until(
      () => r.metrics.counter("weft_lease_reacquisitions_total", "").get() >= 1,
      clock,
      "re-acquired",
    );
    await until(() => r.agent.status().ready, clock, "ready again");
    assert.equal((await reg.list()).records.length, 1);
    assert.ok(r.metrics.counter("weft_lease_renewals_total", "").get({ result: "error" }) >= 1);
  } finally {
    await r.stop();
  }
});

Deno.test("agent hands peers to the backend and leaves its own lease out", async () => {
  const clock = new FakeClock();
  const reg = createMemoryRegistry({ config: CONFIG, clock });
  const a = rig({ clock, reg, ip: "192.0.2.10" });
  const b = rig({ clock, reg, ip: "192.0.2.11" });
  try {
    await until(() => a.agent.status().ready && b.agent.status().ready, clock, "both ready");
    await until(() => a.agent.status().peers.length === 1, clock, "a sees b");
    const last = a.peersSeen[a.peersSeen.length - 1];
    assert.deepEqual(last.map((l) => l.attrs.publicIP), ["192.0.2.11"]);
    assert.equal(a.metrics.gauge("weft_peers", "").get(), 1);
    await b.stop();
    await reg.delete(formatIPv4Net(b.agent.status().lease!.subnet).replace("/", "-"));
    await until(() => a.agent.status().peers.length === 0, clock, "b gone");
    assert.deepEqual(a.peersSeen[a.peersSeen.length - 1], []);
  } finally {
    await a.stop();
  }
});

Deno.test("agent stop keeps the lease in the store", async () => {
  const r = rig();
  await until(() => r.agent.status().ready, r.clock, "ready");
  await r.stop();
  assert.equal((await r.reg.list()).records.length, 1);
  assert.equal(r.agent.status().reason, "stopped");
});

Deno.test("agent restarts onto the subnet recorded in subnet.env", async () => {
  const clock = new FakeClock();
  const r = rig({ clock });
  await until(() => r.agent.status().ready, clock, "ready");
  const subnet = r.agent.status().lease!.subnet;
  const env = fs.readFileSync(path.join(r.dir, "subnet.env"), "utf8");
  await r.stop();
  // the store lost everything (a new etcd) and the host's IP changed: subnet.env still wins
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "weft-agent-"));
  fs.writeFileSync(path.join(dir, "subnet.env"), env);
  const agent = createAgent({
    store: createKvLeaseStore(createMemoryRegistry({ config: CONFIG, clock }), { clock }),
    backends: { alloc: () => allocBackend() },
    extIface: iface("192.0.2.99"),
    subnetFile: path.join(dir, "subnet.env"),
    ipMasq: false,
    logger: memoryLogger(),
    metrics: new Registry(),
    clock,
    random: () => 0.9,
  });
  const ac = new AbortController();
  const run = agent.run(ac.signal);
  try {
    await until(() => agent.status().ready, clock, "ready");
    assert.deepEqual(agent.status().lease!.subnet, subnet);
  } finally {
    ac.abort();
    await run;
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

Deno.test("agent becomes ready once a backend that was not ready yet says it is", async () => {
  const clock = new FakeClock();
  const reg = createMemoryRegistry({ config: CONFIG, clock });
  const store = createKvLeaseStore(reg, { ttlMs: 3600_000, clock, logger: memoryLogger() });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "weft-agent-"));
  let engineUp = false;
  const agent = createAgent({
    store,
    backends: {
      alloc: () => {
        const inner = allocBackend();
        return {
          ...inner,
          register: async (ctx) => ({
            ...(await inner.register(ctx)),
            notReadyReason: () => (engineUp ? null : "packet engine is not running"),
          }),
        };
      },
    },
    extIface: iface("192.0.2.10"),
    subnetFile: path.join(dir, "subnet.env"),
    ipMasq: false,
    renewMarginMs: 10 * 60_000,
    logger: memoryLogger(),
    metrics: new Registry(),
    clock,
    random: () => 0.5,
  });
  const ac = new AbortController();
  const running = agent.run(ac.signal);
  try {
    await until(() => agent.status().lease !== undefined, clock, "lease");
    await until(() => agent.status().reason === "backend: packet engine is not running", clock);
    assert.equal(agent.status().ready, false);
    engineUp = true;
    await until(() => agent.status().ready, clock, "ready after the backend came up");
  } finally {
    ac.abort();
    await running;
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
