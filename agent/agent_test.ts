import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { memoryLogger } from "../testing/memory_logger.ts";
import { Registry } from "../core/metrics.ts";
import { FakeClock } from "../testing/fake_clock.ts";
import { whenAborted } from "../core/abort.ts";
import { LeaseConflictError } from "../core/errors.ts";
import { formatIPv4Net } from "../core/ip.ts";
import { createKvLeaseStore, leaseKey } from "../lease/kv_store.ts";
import { encodeLeaseAttrs, type Lease, type LeaseStore } from "../lease/types.ts";
import { createMemoryRegistry, type MemoryRegistry } from "../testing/memory_registry.ts";
import {
  type Agent,
  type AgentDeps,
  BACKEND_READY_POLL_MS,
  createAgent,
  type HostRules,
} from "./agent.ts";
import type { AgentStateName } from "./state.ts";
import { allocBackend } from "../backends/alloc.ts";
import type { Backend, Network } from "../backends/types.ts";
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
  /** Every state the agent entered, in order (from its debug log). */
  states: () => AgentStateName[];
  stop: () => Promise<void>;
}

function rig(
  options: {
    config?: string | null;
    ttlMs?: number;
    clock?: FakeClock;
    reg?: MemoryRegistry;
    ip?: string;
    backend?: () => Backend;
    wrapStore?: (store: LeaseStore) => LeaseStore;
    rules?: HostRules;
    previousLease?: AgentDeps["previousLease"];
  } = {},
): Rig {
  const clock = options.clock ?? new FakeClock();
  const reg = options.reg ??
    createMemoryRegistry({ config: options.config === undefined ? CONFIG : options.config, clock });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "weft-agent-"));
  const metrics = new Registry();
  const logger = memoryLogger();
  const peersSeen: (readonly Lease[])[] = [];
  const base = createKvLeaseStore(reg, { ttlMs: options.ttlMs ?? 3600_000, clock, logger });
  const agent = createAgent({
    store: options.wrapStore ? options.wrapStore(base) : base,
    backends: {
      alloc: options.backend ?? (() => allocBackend({ onPeers: (p) => peersSeen.push(p) })),
    },
    extIface: iface(options.ip ?? "192.0.2.10"),
    subnetFile: path.join(dir, "subnet.env"),
    ipMasq: true,
    renewMarginMs: 10 * 60_000,
    rules: options.rules,
    previousLease: options.previousLease,
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
    states: () =>
      [
        "starting",
        ...logger.lines.flatMap((l) => /DEBUG agent state from=\S+ to=(\S+)/.exec(l)?.[1] ?? []),
      ] as AgentStateName[],
    stop: async () => {
      ac.abort();
      await running;
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Advance the fake clock in steps until `cond` holds; fail after `limitMs`
 * of fake time. No real time is waited for.
 */
async function until(
  clock: FakeClock,
  cond: () => boolean,
  what: string,
  options: { stepMs?: number; limitMs?: number } = {},
): Promise<void> {
  const stepMs = options.stepMs ?? 50;
  const limitMs = options.limitMs ?? 20_000;
  for (let waited = 0; waited <= limitMs; waited += stepMs) {
    if (cond()) return;
    await clock.advance(stepMs);
  }
  throw new Error(`timed out after ${limitMs} ms of fake time waiting for ${what}`);
}

const counter = (r: Rig, name: string, labels?: Record<string, string>) =>
  r.metrics.counter(name, "").get(labels);

Deno.test("agent acquires a lease, writes flannel's subnet.env and becomes ready", async () => {
  const r = rig();
  try {
    await until(r.clock, () => r.agent.status().ready, "ready");
    const lease = r.agent.status().lease!;
    const env = fs.readFileSync(path.join(r.dir, "subnet.env"), "utf8");
    const first = formatIPv4Net({ ip: lease.subnet!.ip + 1, prefixLen: 24 });
    assert.equal(
      env,
      `FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=${first}\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=true\n`,
    );
    assert.equal(r.metrics.gauge("weft_ready", "").get(), 1);
    assert.equal(r.agent.status().state, "ready");
  } finally {
    await r.stop();
  }
  assert.deepEqual(r.states(), [
    "starting",
    "reading-config",
    "registering",
    "installing",
    "ready",
    "stopped",
  ]);
});

Deno.test("agent keeps retrying while the store is down and says why", async () => {
  const clock = new FakeClock();
  const reg = createMemoryRegistry({ config: CONFIG, clock });
  reg.down = true;
  const r = rig({ clock, reg });
  try {
    await until(clock, () => (r.agent.status().reason ?? "").includes("down"), "reason");
    assert.match(
      r.agent.status().reason!,
      /reading the network config from the memory store: memory store is down/,
    );
    assert.equal(r.agent.status().ready, false);
    assert.equal(r.agent.status().state, "reading-config");
    await clock.advance(60_000);
    assert.equal(r.agent.status().ready, false, "still down, still not ready");
    reg.down = false;
    await until(clock, () => r.agent.status().ready, "ready after recovery", { stepMs: 500 });
    const errors = r.logger.lines.filter((l) => l.includes("will keep retrying"));
    assert.equal(errors.length, 1, "the same failure is logged once, not on every retry");
  } finally {
    await r.stop();
  }
});

Deno.test("agent reports a missing network config with how to write it", async () => {
  const r = rig({ config: null });
  try {
    await until(r.clock, () => (r.agent.status().reason ?? "").includes("not found"), "reason");
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
    await until(
      r.clock,
      () => (r.agent.status().reason ?? "").includes("not supported"),
      "reason",
    );
    assert.match(
      r.agent.status().reason!,
      /registering the wireguard backend: Backend.Type "wireguard" is not supported: use one of alloc/,
    );
  } finally {
    await r.stop();
  }
});

Deno.test("agent re-reads the config after a ConfigError: fixing Backend.Type in the store makes it ready without a restart", async () => {
  const r = rig({ config: '{"Network":"10.5.0.0/16","Backend":{"Type":"wireguard"}}' });
  try {
    await until(r.clock, () => (r.agent.status().reason ?? "").includes("not supported"), "reason");
    const broken = r.agent.status();
    assert.equal(broken.ready, false);
    assert.equal(broken.state, "registering");
    assert.equal(broken.backendType, "wireguard");
    assert.equal(r.metrics.gauge("weft_ready", "").get(), 0);
    // minutes of retries: the config is read again each time, the error logged once
    await r.clock.advance(5 * 60_000);
    assert.equal(r.agent.status().ready, false);
    const logged = r.logger.lines.filter((l) => l.includes("will keep retrying"));
    assert.equal(logged.length, 1, logged.join("\n"));
    const reads = r.logger.lines.filter((l) => l.includes("network config network=")).length;
    assert.ok(reads > 5, `the config was read ${reads} times`);

    r.reg.config = CONFIG;
    await until(r.clock, () => r.agent.status().ready, "ready with the fixed config", {
      stepMs: 500,
    });
    const fixed = r.agent.status();
    assert.equal(fixed.backendType, "alloc");
    assert.equal(fixed.config?.backendType, "alloc");
    assert.equal(fixed.reason, null);
    assert.ok(fixed.lease, "a lease was acquired");
    assert.ok(fs.existsSync(path.join(r.dir, "subnet.env")));
    assert.equal(r.metrics.gauge("weft_ready", "").get(), 1);
  } finally {
    await r.stop();
  }
  const states = r.states().join(" → ");
  assert.match(states, /^starting → reading-config → registering → reading-config → registering/);
  assert.match(states, /registering → installing → ready → stopped$/);
});

Deno.test("agent renews the lease before it expires", async () => {
  const r = rig({ ttlMs: 3600_000 });
  try {
    await until(r.clock, () => r.agent.status().ready, "ready");
    const first = r.agent.status().lease!.expiration!;
    // renew margin 10 min: nothing before 50 min
    await r.clock.advance(49 * 60_000);
    assert.equal(counter(r, "weft_lease_renewals_total", { result: "ok" }), 0);
    await r.clock.advance(2 * 60_000);
    await until(
      r.clock,
      () => counter(r, "weft_lease_renewals_total", { result: "ok" }) === 1,
      "one renewal",
    );
    assert.ok(r.agent.status().lease!.expiration! > first);
    // hours later the lease is still alive: renewals keep going
    await r.clock.advance(5 * 3600_000);
    const { records } = await r.reg.list();
    assert.equal(records.length, 1);
    assert.ok(counter(r, "weft_lease_renewals_total", { result: "ok" }) >= 5);
  } finally {
    await r.stop();
  }
});

Deno.test("agent re-acquires its own lease when someone deletes it", async () => {
  const r = rig();
  try {
    await until(r.clock, () => r.agent.status().ready, "ready");
    const before = r.agent.status().lease!;
    const key = leaseKey(before);
    await r.reg.delete(key);
    await until(
      r.clock,
      () => counter(r, "weft_lease_reacquisitions_total") === 1 && r.agent.status().ready,
      "re-acquired",
    );
    const { records } = await r.reg.list();
    assert.deepEqual(records.map((x) => x.key), [key], "same subnet again (previous-subnet hint)");
    assert.deepEqual(r.agent.status().lease!.subnet, before.subnet);
  } finally {
    await r.stop();
  }
  assert.deepEqual(r.states().slice(-5), [
    "ready",
    "re-acquiring",
    "installing",
    "ready",
    "stopped",
  ]);
});

Deno.test("agent re-acquires when its lease expires while the store was unreachable", async () => {
  const clock = new FakeClock();
  const reg = createMemoryRegistry({ config: CONFIG, clock });
  const r = rig({ clock, reg, ttlMs: 60_000 });
  try {
    await until(clock, () => r.agent.status().ready, "ready");
    reg.down = true;
    await clock.advance(120_000); // renewals fail, the lease lapses
    reg.down = false;
    reg.expire();
    await until(
      clock,
      () => counter(r, "weft_lease_reacquisitions_total") >= 1,
      "re-acquired",
      { stepMs: 500 },
    );
    await until(clock, () => r.agent.status().ready, "ready again");
    assert.equal((await reg.list()).records.length, 1);
    assert.ok(counter(r, "weft_lease_renewals_total", { result: "error" }) >= 1);
  } finally {
    await r.stop();
  }
});

Deno.test("agent re-acquires when the store refuses a renewal as no longer ours", async () => {
  let refuse = true;
  const r = rig({
    ttlMs: 60_000,
    wrapStore: (store) => ({
      ...store,
      renew: (lease, signal) => {
        if (!refuse) return store.renew(lease, signal);
        refuse = false;
        return Promise.reject(new LeaseConflictError("the node's podCIDR changed"));
      },
    }),
  });
  try {
    await until(r.clock, () => r.agent.status().ready, "ready");
    await until(
      r.clock,
      () => counter(r, "weft_lease_reacquisitions_total") === 1 && r.agent.status().ready,
      "re-acquired",
      { stepMs: 1000, limitMs: 120_000 },
    );
    assert.equal(counter(r, "weft_lease_renewals_total", { result: "error" }), 1);
    assert.ok(
      r.logger.lines.some((l) =>
        l.includes("this host's lease is gone") && l.includes("podCIDR changed")
      ),
    );
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
    await until(clock, () => a.agent.status().ready && b.agent.status().ready, "both ready");
    await until(clock, () => a.agent.status().peers.length === 1, "a sees b");
    const last = a.peersSeen[a.peersSeen.length - 1];
    assert.deepEqual(last.map((l) => l.attrs.publicIP), ["192.0.2.11"]);
    assert.equal(a.metrics.gauge("weft_peers", "").get(), 1);
    const seenAt = [...a.agent.status().peerChangedAt!];
    assert.deepEqual(seenAt.map(([k]) => k), [formatIPv4Net(b.agent.status().lease!.subnet!)]);
    assert.ok(seenAt[0][1] <= clock.now() && seenAt[0][1] > 0, `changedAt ${seenAt[0][1]}`);
    await b.stop();
    await reg.delete(leaseKey(b.agent.status().lease!));
    await until(clock, () => a.agent.status().peers.length === 0, "b gone");
    assert.deepEqual(a.peersSeen[a.peersSeen.length - 1], []);
    assert.equal(a.agent.status().peerChangedAt!.size, 0);
  } finally {
    await a.stop();
  }
});

/** What a recording network saw: writes, and its run's start and end. */
type NetworkEvent = string;

/**
 * A backend whose networks record their writes and lifetimes (`net1 run`,
 * `net1 sync 192.0.2.11`, `net1 update added 192.0.2.11`, `net1 run end`).
 */
function recordingBackend(
  events: NetworkEvent[],
  options: { incremental: boolean; notReady?: () => string | null },
): () => Backend {
  let registered = 0;
  return () => ({
    type: "alloc",
    async register(ctx) {
      const lease = await ctx.acquire({ publicIP: ctx.extIface.extAddr }, ctx.signal);
      const name = `net${++registered}`;
      const network: Network = {
        lease,
        mtu: ctx.extIface.mtu,
        syncPeers(peers) {
          events.push(`${name} sync ${peers.map((p) => p.attrs.publicIP).sort().join(" ")}`.trim());
          return Promise.resolve();
        },
        ...(options.incremental
          ? {
            updatePeers(changes) {
              events.push(
                `${name} update ${
                  changes.map((c) => `${c.type} ${c.lease.attrs.publicIP}`).join(", ")
                }`,
              );
              return Promise.resolve();
            },
          }
          : {}),
        async run(signal) {
          events.push(`${name} run`);
          await whenAborted(signal);
          events.push(`${name} run end`);
        },
        ...(options.notReady ? { notReadyReason: options.notReady } : {}),
      };
      return network;
    },
  });
}

/** Another host's lease, written straight into the registry. */
async function writePeer(reg: MemoryRegistry, cidr: string, publicIP: string): Promise<void> {
  await reg.put(cidr.replace("/", "-"), encodeLeaseAttrs({ publicIP }), 3600_000);
}

Deno.test("agent gives a network with updatePeers only the changes, and the whole set after a re-list", async () => {
  const events: NetworkEvent[] = [];
  let breakWatch: (() => void) | undefined;
  const r = rig({
    backend: recordingBackend(events, { incremental: true }),
    wrapStore: (store) => ({
      ...store,
      async *watch(revision, signal) {
        const broken = new AbortController();
        breakWatch = () => broken.abort();
        const both = AbortSignal.any([signal, broken.signal]);
        for await (const batch of store.watch(revision, both)) yield batch;
        if (broken.signal.aborted && !signal.aborted) throw new Error("watch broke (test)");
      },
    }),
  });
  const writes = () => events.filter((e) => !e.includes(" run"));
  try {
    await until(r.clock, () => writes().length === 1, "the first write");
    assert.deepEqual(writes(), ["net1 sync"], "the whole (empty) set after the first list");

    await writePeer(r.reg, "10.5.200.0/24", "192.0.2.11");
    await until(r.clock, () => writes().length === 2, "the join");
    assert.equal(writes()[1], "net1 update added 192.0.2.11");
    assert.ok(r.logger.lines.some((l) => l.includes("peer added subnet=10.5.200.0/24")));

    // a renewal of the peer changes nothing the datapath uses
    await writePeer(r.reg, "10.5.200.0/24", "192.0.2.11");
    await writePeer(r.reg, "10.5.201.0/24", "192.0.2.12");
    await until(r.clock, () => writes().length === 3, "the second join");
    assert.equal(writes()[2], "net1 update added 192.0.2.12");

    await r.reg.delete("10.5.200.0-24");
    await until(r.clock, () => writes().length === 4, "the leave");
    assert.equal(writes()[3], "net1 update removed 192.0.2.11");

    breakWatch!();
    await until(r.clock, () => writes().length === 5, "the re-list");
    assert.equal(writes()[4], "net1 sync 192.0.2.12");
    assert.equal(r.metrics.gauge("weft_peers", "").get(), 1);
    // the peers start from the listing taken before acquiring: the watch also sees this
    // host's own lease being created (counted, not a peer)
    assert.equal(counter(r, "weft_lease_events_total", { type: "added" }), 4);
    assert.equal(counter(r, "weft_lease_events_total", { type: "removed" }), 1);
  } finally {
    await r.stop();
  }
});

Deno.test("re-acquiring ends the old network's run and rules keeper before the new ones start", async () => {
  const events: NetworkEvent[] = [];
  let keepers = 0;
  const rules: HostRules = {
    apply: () => Promise.resolve(),
    async run(_config, lease, signal) {
      keepers++;
      events.push(`rules ${formatIPv4Net(lease.subnet!)}`);
      await whenAborted(signal);
      keepers--;
      events.push("rules end");
    },
  };
  const r = rig({ backend: recordingBackend(events, { incremental: true }), rules });
  try {
    await until(r.clock, () => r.agent.status().ready, "ready");
    await writePeer(r.reg, "10.5.200.0/24", "192.0.2.11");
    await until(r.clock, () => events.includes("net1 update added 192.0.2.11"), "the peer");
    for (let i = 1; i <= 3; i++) {
      await r.reg.delete(leaseKey(r.agent.status().lease!));
      await until(
        r.clock,
        () =>
          counter(r, "weft_lease_reacquisitions_total") === i && r.agent.status().ready &&
          events.includes(`net${i + 1} run`),
        `re-acquisition ${i}`,
      );
    }
    const runs = events.filter((e) => / run( end)?$/.test(e));
    assert.deepEqual(runs, [
      "net1 run",
      "net1 run end",
      "net2 run",
      "net2 run end",
      "net3 run",
      "net3 run end",
      "net4 run",
    ]);
    assert.equal(keepers, 1, "one rules keeper, not one per registration");
    // the new network's first write is the whole set, read again
    const net4 = events.filter((e) => e.startsWith("net4 ") && !e.includes(" run"));
    assert.deepEqual(net4.slice(0, 1), ["net4 sync 192.0.2.11"]);
    for (const net of ["net1", "net2", "net3", "net4"]) {
      const first = events.find((e) => e.startsWith(`${net} `) && !e.includes(" run"));
      assert.match(
        first ?? "(none)",
        new RegExp(`^${net} sync`),
        `${net} starts with the whole set`,
      );
    }
  } finally {
    await r.stop();
  }
  assert.equal(events[events.length - 1].endsWith("end"), true);
  assert.equal(keepers, 0, "stop ends the last registration's tasks");
});

Deno.test("agent reports a backend that is not ready yet, and becomes ready when it is", async () => {
  const events: NetworkEvent[] = [];
  let deviceUp = false;
  const r = rig({
    backend: recordingBackend(events, {
      incremental: false,
      notReady: () => deviceUp ? null : "flannel0 is not up",
    }),
  });
  try {
    await until(r.clock, () => r.agent.status().state === "ready", "the ready state");
    assert.equal(r.agent.status().ready, false);
    assert.equal(r.agent.status().reason, "backend: flannel0 is not up");
    assert.equal(r.metrics.gauge("weft_ready", "").get(), 0);
    deviceUp = true;
    await r.clock.advance(BACKEND_READY_POLL_MS);
    await until(r.clock, () => r.agent.status().ready, "ready");
    assert.equal(r.metrics.gauge("weft_ready", "").get(), 1);
  } finally {
    await r.stop();
  }
});

Deno.test("agent stop keeps the lease in the store", async () => {
  const r = rig();
  await until(r.clock, () => r.agent.status().ready, "ready");
  await r.stop();
  assert.equal((await r.reg.list()).records.length, 1);
  assert.equal(r.agent.status().reason, "stopped");
  assert.equal(r.agent.status().state, "stopped");
});

Deno.test("agent restarts onto the subnet recorded in subnet.env", async () => {
  const clock = new FakeClock();
  const r = rig({ clock });
  await until(clock, () => r.agent.status().ready, "ready");
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
    await until(clock, () => agent.status().ready, "ready");
    assert.deepEqual(agent.status().lease!.subnet, subnet);
  } finally {
    ac.abort();
    await run;
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

Deno.test("agent lists the leases once at start: acquire and the peers start from that listing", async () => {
  const clock = new FakeClock();
  const reg = createMemoryRegistry({ config: CONFIG, clock });
  await writePeer(reg, "10.5.200.0/24", "192.0.2.11");
  let lists = 0;
  const list = reg.list.bind(reg);
  reg.list = (...args) => (lists++, list(...args));
  const events: NetworkEvent[] = [];
  const r = rig({ clock, reg, backend: recordingBackend(events, { incremental: true }) });
  const writes = () => events.filter((e) => !e.includes(" run"));
  try {
    await until(r.clock, () => writes().length === 1, "the first write");
    assert.deepEqual(writes(), ["net1 sync 192.0.2.11"]);
    assert.equal(lists, 1, "one list of all leases from start to the first sync");
    // the own lease, created after that listing, arrives by the watch and is no peer
    await writePeer(reg, "10.5.201.0/24", "192.0.2.12");
    await until(r.clock, () => writes().length === 2, "a join");
    assert.equal(writes()[1], "net1 update added 192.0.2.12");
    assert.equal(lists, 1);
    assert.ok(!r.logger.lines.some((l) => l.includes("lease is gone")), r.logger.lines.join("\n"));
  } finally {
    await r.stop();
  }
});

Deno.test("agent with its own-lease hint from elsewhere lists the peers once, beside registering", async () => {
  const clock = new FakeClock();
  const reg = createMemoryRegistry({ config: CONFIG, clock });
  await writePeer(reg, "10.5.200.0/24", "192.0.2.11");
  let lists = 0;
  const list = reg.list.bind(reg);
  reg.list = (...args) => (lists++, list(...args));
  let hints = 0;
  const events: NetworkEvent[] = [];
  const r = rig({
    clock,
    reg,
    backend: recordingBackend(events, { incremental: true }),
    previousLease: () => (hints++, Promise.resolve(undefined)),
  });
  const writes = () => events.filter((e) => !e.includes(" run"));
  try {
    await until(r.clock, () => writes().length === 1, "the first write");
    assert.deepEqual(writes(), ["net1 sync 192.0.2.11"]);
    assert.equal(hints, 1);
    // one list, for the peers and for acquire's first try (this store lists to pick a subnet)
    assert.equal(lists, 1);
    assert.ok(!r.logger.lines.some((l) => l.includes("lease is gone")), r.logger.lines.join("\n"));
  } finally {
    await r.stop();
  }
});
