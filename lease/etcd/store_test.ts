import assert from "node:assert/strict";
import { nullLogger } from "../../core/log.ts";
import { memoryLogger } from "../../testing/memory_logger.ts";
import { Registry } from "../../core/metrics.ts";
import {
  CONTRACT_CONFIG,
  type ContractHarness,
  hostAttrs,
  hostIP,
  leaseStoreContract,
  watchUntil,
} from "../../testing/lease_contract.ts";
import { type EtcdServer, startEtcd } from "../../testing/etcd_server.ts";
import { waitForValue } from "../../testing/wait.ts";
import { formatSubnetPair, parseIPv4, parseIPv4Net, subnetKey } from "../../core/ip.ts";
import { createEtcdLeaseStore, createEtcdRegistry, type EtcdStoreOptions } from "./store.ts";
import { encodeLeaseAttrs, type Lease, type LeaseStore } from "../types.ts";
import { PoolExhaustedError, StoreUnavailableError } from "../../core/errors.ts";
import type { NetworkConfig } from "../config.ts";

const PREFIX = "/coreos.com/network";

function keyOf(subnet: string): string {
  return `${PREFIX}/subnets/${subnetKey(parseIPv4Net(subnet))}`;
}

async function etcdHarness(): Promise<ContractHarness> {
  const etcd = await startEtcd();
  await etcd.etcdctl(["put", `${PREFIX}/config`, CONTRACT_CONFIG]);
  return {
    minTtlMs: 2000, // etcd raises shorter TTLs to its minimum
    open: (_host, o) =>
      Promise.resolve(createEtcdLeaseStore({ endpoints: [etcd.endpoint], ttlMs: o?.ttlMs })),
    writeReservation: async (subnet, publicIP) => {
      await etcd.etcdctl([
        "put",
        "--",
        keyOf(subnet),
        encodeLeaseAttrs({ publicIP, backendType: "alloc" }),
      ]);
    },
    writeGarbage: async (subnet, value) => {
      await etcd.etcdctl(["put", "--", keyOf(subnet)], { input: value });
    },
    removeExternally: async (lease) => {
      await etcd.etcdctl(["del", `${PREFIX}/subnets/${subnetKey(lease.subnet, lease.ipv6Subnet)}`]);
    },
    compact: async () => await etcd.compact(await etcd.revision()),
    restart: () => etcd.restart(),
    watchers: () => etcd.watchers(),
    cleanup: () => etcd.close(),
  };
}

leaseStoreContract("etcd", {
  ttl: true,
  reservations: true,
  compaction: true,
  restart: true,
  allocation: true,
  garbage: true,
}, etcdHarness);

/** Run `fn` with a fresh etcd holding the contract config; always clean up. */
async function withEtcd(
  fn: (etcd: EtcdServer, open: (o?: Partial<EtcdStoreOptions>) => LeaseStore) => Promise<void>,
  options: Parameters<typeof startEtcd>[0] = {},
): Promise<void> {
  const etcd = await startEtcd(options);
  const stores: LeaseStore[] = [];
  try {
    await etcd.etcdctl(["put", `${PREFIX}/config`, CONTRACT_CONFIG]);
    await fn(etcd, (o = {}) => {
      const s = createEtcdLeaseStore({ endpoints: [etcd.endpoint], logger: nullLogger, ...o });
      stores.push(s);
      return s;
    });
  } finally {
    for (const s of stores) await s.close();
    await etcd.close();
  }
}

const FLANNEL_VALUE =
  '{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}';

Deno.test("etcd store: a lease weft writes reads back byte-for-byte in flannel's format", async () => {
  await withEtcd(async (etcd, open) => {
    const s = open();
    const cfg = await s.getNetworkConfig();
    const lease = await s.acquire(cfg, {
      attrs: {
        publicIP: "192.168.64.3",
        backendType: "vxlan",
        backendData: { VNI: 1, VtepMAC: "c6:d2:32:6f:8f:44" },
      },
    });
    const key = `${PREFIX}/subnets/${subnetKey(lease.subnet)}`;
    assert.match(key, /^\/coreos\.com\/network\/subnets\/10\.5\.\d+\.0-24$/);
    const raw = await etcd.etcdctl(["get", key, "-w", "json"]);
    assert.equal(atob(JSON.parse(raw).kvs[0].value), FLANNEL_VALUE);
    // lease IDs exceed 2^53: read the digits, not a JSON number
    const leaseId = raw.match(/"lease":(\d+)/)?.[1];
    assert.ok(leaseId, "the key is bound to an etcd lease");
    const ttl = JSON.parse(
      await etcd.etcdctl(["lease", "timetolive", BigInt(leaseId).toString(16), "-w", "json"]),
    );
    assert.ok(ttl.ttl > 24 * 3600 - 60 && ttl.ttl <= 24 * 3600, `24 h TTL, got ${ttl.ttl}`);
  });
});

Deno.test("etcd store: config and a lease written the way flannel writes them are read", async () => {
  await withEtcd(async (etcd, open) => {
    await etcd.etcdctl([
      "put",
      `${PREFIX}/config`,
      '{"Network":"10.244.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan","VNI":1}}',
    ]);
    // flannel: grant a 24 h lease, then put the key with it
    const grant = await etcd.etcdctl(["lease", "grant", "86400"]);
    const id = grant.match(/lease ([0-9a-f]+) granted/)![1];
    await etcd.etcdctl(["put", "--lease", id, "--", `${PREFIX}/subnets/10.244.7.0-24`], {
      input: FLANNEL_VALUE,
    });
    const s = open();
    const cfg = await s.getNetworkConfig();
    assert.equal(cfg.backendType, "vxlan");
    assert.equal(cfg.network?.prefixLen, 16);
    const { leases } = await s.list();
    assert.equal(leases.length, 1);
    const l = leases[0];
    assert.equal(l.subnet!.ip, parseIPv4("10.244.7.0"));
    assert.deepEqual(l.attrs, {
      publicIP: "192.168.64.3",
      publicIPv6: null,
      backendType: "vxlan",
      backendData: { VNI: 1, VtepMAC: "c6:d2:32:6f:8f:44" },
    });
    const left = l.expiration! - Date.now();
    assert.ok(left > 86_300_000 && left <= 86_400_000, `expiry from the etcd lease, got ${left}`);
    // flannel's host restarts as weft: same subnet, value rewritten identically
    const again = await s.acquire(cfg, { attrs: l.attrs });
    assert.equal(again.subnet!.ip, l.subnet!.ip);
    assert.equal(
      await etcd.etcdctl(["get", "--print-value-only", `${PREFIX}/subnets/10.244.7.0-24`]),
      FLANNEL_VALUE + "\n",
    );
  });
});

Deno.test("etcd store: a dual-stack lease key matches flannel's", async () => {
  await withEtcd(async (etcd, open) => {
    await etcd.etcdctl([
      "put",
      `${PREFIX}/config`,
      '{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:12:13::/48","IPv6SubnetLen":56,"Backend":{"Type":"vxlan"}}',
    ]);
    const s = open();
    const lease = await s.acquire(await s.getNetworkConfig(), { attrs: hostAttrs(0) });
    const keys = await etcd.etcdctl(["get", "--prefix", "--keys-only", `${PREFIX}/subnets/`]);
    assert.match(
      keys.trim(),
      /^\/coreos\.com\/network\/subnets\/10\.5\.\d+\.0-24&fd00:12:13:[0-9a-f]*::-56$/,
    );
    assert.ok(lease.ipv6Subnet);
  });
});

Deno.test("etcd store: a missing config says how to write it with the v3 API", async () => {
  const etcd = await startEtcd();
  const s = createEtcdLeaseStore({ endpoints: [etcd.endpoint] });
  try {
    await assert.rejects(
      () => s.getNetworkConfig(),
      /network config not found at etcd key \/coreos\.com\/network\/config: .*etcdctl put .*v3 API/,
    );
  } finally {
    await s.close();
    await etcd.close();
  }
});

Deno.test("etcd store: a custom prefix is used for config and leases", async () => {
  await withEtcd(async (etcd, open) => {
    await etcd.etcdctl(["put", "/weft/net/config", CONTRACT_CONFIG]);
    const s = open({ prefix: "/weft/net/" });
    const lease = await s.acquire(await s.getNetworkConfig(), { attrs: hostAttrs(0) });
    const keys = (await etcd.etcdctl(["get", "--prefix", "--keys-only", "/weft/"])).trim().split(
      /\n+/,
    );
    assert.deepEqual(keys, ["/weft/net/config", `/weft/net/subnets/${subnetKey(lease.subnet)}`]);
  });
});

Deno.test("etcd store: 50 agents racing for 32 subnets get 32 distinct leases and 18 PoolExhaustedErrors", async () => {
  await withEtcd(async (etcd, open) => {
    // 10.5.0.0/19 with /24 subnets: SubnetMin 10.5.1.0 .. SubnetMax 10.5.31.0 is 31; set 32 explicitly
    await etcd.etcdctl([
      "put",
      `${PREFIX}/config`,
      '{"Network":"10.5.0.0/16","SubnetMin":"10.5.1.0","SubnetMax":"10.5.32.0","Backend":{"Type":"vxlan"}}',
    ]);
    const logger = memoryLogger();
    const stores = Array.from({ length: 50 }, () => open({ logger }));
    const cfg: NetworkConfig = await stores[0].getNetworkConfig();
    const results = await Promise.allSettled(
      stores.map((s, i) =>
        s.acquire(cfg, { attrs: { publicIP: `192.0.2.${i + 1}`, backendType: "vxlan" } })
      ),
    );
    const leases = results.filter((r) => r.status === "fulfilled").map((r) =>
      (r as PromiseFulfilledResult<Lease>).value
    );
    const errors = results.filter((r) => r.status === "rejected").map((r) =>
      (r as PromiseRejectedResult).reason
    );
    assert.equal(leases.length, 32);
    assert.equal(new Set(leases.map((l) => l.subnet!.ip)).size, 32, "no subnet handed out twice");
    assert.equal(errors.length, 18);
    for (const e of errors) assert.ok(e instanceof PoolExhaustedError, String(e));
    const stored = JSON.parse(
      await etcd.etcdctl(["get", "--prefix", `${PREFIX}/subnets/`, "-w", "json"]),
    );
    assert.equal(stored.count, 32, "etcd holds exactly the 32 leases");
    const owners = new Set(
      stored.kvs.map((kv: { value: string }) => JSON.parse(atob(kv.value)).PublicIP),
    );
    assert.equal(owners.size, 32);
    // lost races leave no etcd lease behind: one lease per key
    const leaseIds = (await etcd.etcdctl(["lease", "list"])).trim().split("\n").slice(1);
    assert.equal(leaseIds.length, 32);
    const lost = logger.lines.filter((l) => l.includes("lost a race for a subnet")).length;
    assert.ok(lost > 0, "the agents really raced (some creates lost and were retried)");
    console.log(`50 agents / 32 subnets: ${lost} lost races retried`);
  });
});

Deno.test("etcd store: garbage values are skipped with a warning and counted", async () => {
  await withEtcd(async (etcd, open) => {
    const bad: [string, string][] = [
      ["10.5.3.0-24", "{not json"],
      ["10.5.4.0-24", '{"PublicIP":"not-an-ip"}'],
      ["10.5.5.0-24", "\u00ff\u00fe binary"],
      ["not-a-subnet", FLANNEL_VALUE],
    ];
    for (const [k, val] of bad) {
      await etcd.etcdctl(["put", "--", `${PREFIX}/subnets/${k}`], { input: val });
    }
    await etcd.etcdctl(["put", "--", `${PREFIX}/subnets/10.5.6.0-24`, FLANNEL_VALUE]);
    const metrics = new Registry();
    const logger = memoryLogger();
    const s = open({ metrics, logger });
    const snap = await s.list();
    assert.deepEqual(snap.leases.map((l) => l.subnet!.ip), [parseIPv4("10.5.6.0")]);
    const counter = metrics.counter("weft_store_malformed_records_total", "");
    assert.equal(counter.get({ store: "etcd" }), 4);
    const warnings = logger.lines.filter((l) => l.includes("skipping malformed lease record"));
    assert.equal(warnings.length, 4);
    assert.ok(warnings.some((l) => /key=10.5.3.0-24 reason="value is not JSON/.test(l)));
    assert.ok(warnings.some((l) => /key=not-a-subnet reason=.*not a subnet key/.test(l)));
    // the occupied subnets are not handed out, and a garbage value arriving on a watch is skipped too
    const cfg: NetworkConfig = {
      ...(await s.getNetworkConfig()),
      subnetMin: parseIPv4("10.5.3.0"),
      subnetMax: parseIPv4("10.5.7.0"),
    };
    const lease = await s.acquire(cfg, { attrs: hostAttrs(0) });
    assert.equal(lease.subnet!.ip, parseIPv4("10.5.7.0"));
    const rev = (await s.list()).revision;
    const before = counter.get({ store: "etcd" });
    const events = await watchUntil(
      s,
      rev,
      (ev) => ev.some((e) => e.type === "added"),
      10_000,
      async () => {
        await etcd.etcdctl(["put", "--", `${PREFIX}/subnets/10.5.9.0-24`], { input: "garbage" });
        await etcd.etcdctl(["put", "--", `${PREFIX}/subnets/10.5.10.0-24`, FLANNEL_VALUE]);
      },
    );
    assert.equal(events.length, 1, "only the good record is delivered");
    assert.equal(events[0].type === "added" && events[0].lease.subnet!.ip, parseIPv4("10.5.10.0"));
    assert.equal(counter.get({ store: "etcd" }), before + 1);
  });
});

Deno.test("etcd store: renewals revoke the previous etcd lease", async () => {
  await withEtcd(async (etcd, open) => {
    const s = open({ ttlMs: 60_000 });
    const cfg = await s.getNetworkConfig();
    let lease = await s.acquire(cfg, { attrs: hostAttrs(0) });
    for (let i = 0; i < 3; i++) lease = await s.renew(lease);
    const ids = (await etcd.etcdctl(["lease", "list"])).trim().split("\n").slice(1);
    assert.equal(ids.length, 1, `one etcd lease left, got ${ids.join(",")}`);
    // a restarted agent (new client) reuses the key and also cleans up the old lease
    const s2 = open({ ttlMs: 60_000 });
    await s2.acquire(cfg, { attrs: hostAttrs(0) });
    const after = (await etcd.etcdctl(["lease", "list"])).trim().split("\n").slice(1);
    assert.equal(after.length, 1);
    assert.notEqual(after[0], ids[0]);
    await s2.release(lease);
    assert.equal((await etcd.etcdctl(["lease", "list"])).trim().split("\n").length, 1, "released");
  });
});

Deno.test("etcd store: a reservation written with etcdctl never expires and is not given a TTL on reuse", async () => {
  await withEtcd(async (etcd, open) => {
    await etcd.etcdctl([
      "put",
      "--",
      keyOf("10.5.9.0/24"),
      encodeLeaseAttrs({ publicIP: hostIP(5) }),
    ]);
    const s = open({ ttlMs: 2000 });
    const cfg = await s.getNetworkConfig();
    const mine = await s.acquire(cfg, { attrs: hostAttrs(5, { backendType: "vxlan" }) });
    assert.equal(mine.expiration, null);
    const renewed = await s.renew(mine);
    assert.equal(renewed.expiration, null);
    const out = JSON.parse(await etcd.etcdctl(["get", keyOf("10.5.9.0/24"), "-w", "json"]));
    assert.equal(out.kvs[0].lease, undefined, "still no etcd lease on the key");
    // an ordinary lease with the same TTL shows the time has passed
    const ordinary = await open({ ttlMs: 2000 }).acquire(cfg, { attrs: hostAttrs(6) });
    await waitForValue(
      "the ordinary lease to expire after its 2 s TTL",
      async () => !(await s.list()).leases.some((l) => l.subnet?.ip === ordinary.subnet!.ip),
      { timeoutMs: 15_000 },
    );
    const { leases } = await s.list();
    assert.equal(leases.length, 1);
    assert.equal(leases[0].expiration, null);
  });
});

Deno.test("etcd store: expiry of leases written by others is looked up (exactly for up to maxTtlLookups)", async () => {
  await withEtcd(async (etcd, open) => {
    // etcd counts TTLs in whole seconds: each expiry lies between "granted at
    // the start + TTL − 1 s" and "listed at the end + TTL + 1 s", whatever the load
    const within = (at: number, from: number, to: number, what: string) =>
      assert.ok(at >= from - 1000 && at <= to + 1000, `${what}: ${at} not in [${from}, ${to}]`);
    const granted = Date.now();
    for (let i = 0; i < 5; i++) {
      const id = (await etcd.etcdctl(["lease", "grant", String(1000 + i * 100)])).match(
        /lease ([0-9a-f]+) granted/,
      )![1];
      await etcd.etcdctl([
        "put",
        "--lease",
        id,
        "--",
        keyOf(`10.5.${i + 1}.0/24`),
        encodeLeaseAttrs({ publicIP: hostIP(i) }),
      ]);
    }
    const exact = await open({ maxTtlLookups: 64 }).list();
    const listed = Date.now();
    for (const l of exact.leases) {
      const ttlMs = (1000 + ((l.subnet!.ip >>> 8) & 255) * 100 - 100) * 1000;
      within(l.expiration!, granted + ttlMs, listed + ttlMs, `exact ${formatSubnetPair(l)}`);
    }
    const beforeBounded = Date.now();
    const bounded = await open({ maxTtlLookups: 2, ttlMs: 5_000_000 }).list();
    const afterBounded = Date.now();
    // the estimated ones are the store's own TTL from the list; the looked-up ones are ~1000–1400 s
    const estimated = bounded.leases.filter((l) => l.expiration! > afterBounded + 2_000_000);
    assert.equal(estimated.length, 3, "beyond the lookup budget the store's own TTL is assumed");
    for (const l of estimated) {
      within(l.expiration!, beforeBounded + 5_000_000, afterBounded + 5_000_000, "estimated");
    }
    const registry = createEtcdRegistry({ endpoints: [etcd.endpoint], ttlMs: 5_000_000 });
    try {
      const before = Date.now();
      const { records } = await registry.list(undefined, { exactExpiry: false });
      const after = Date.now();
      assert.equal(records.length, 5);
      for (const r of records) {
        within(r.expiration!, before + 5_000_000, after + 5_000_000, `estimated ${r.key}`);
      }
    } finally {
      await registry.close();
    }
  });
});

Deno.test("etcd store: the watch resumes after etcd restarts without losing events", async () => {
  await withEtcd(async (etcd, open) => {
    const logger = memoryLogger();
    const s = open({ logger });
    const cfg = await s.getNetworkConfig();
    const snap = await s.list();
    const ac = new AbortController();
    const seen: string[] = [];
    const reader = (async () => {
      for await (const batch of s.watch(snap.revision, ac.signal)) {
        for (const e of batch) {
          seen.push(e.type === "snapshot" ? "snapshot" : `${e.type}:${e.lease.attrs.publicIP}`);
        }
      }
    })();
    try {
      const a = await open().acquire(cfg, { attrs: hostAttrs(1) });
      await waitForValue("the first lease on the watch", () => seen.length === 1);
      await etcd.stop();
      await waitForValue(
        "the watcher to notice etcd is gone",
        () => logger.lines.some((l) => l.includes("etcd watch stream failed")),
      );
      await etcd.restart();
      // written while the watcher is still reconnecting
      const peer = open();
      await peer.release(a);
      await peer.acquire(cfg, { attrs: hostAttrs(2) });
      await waitForValue("the changes made meanwhile", () => seen.length >= 3, {
        timeoutMs: 20_000,
      });
      assert.deepEqual(seen, [`added:${hostIP(1)}`, "removed:" + hostIP(1), `added:${hostIP(2)}`]);
    } finally {
      ac.abort();
      await reader;
    }
  });
});

Deno.test("etcd store: two endpoints with the first dead work, and etcd down is StoreUnavailableError", async () => {
  await withEtcd(async (etcd, open) => {
    const logger = memoryLogger();
    const s = open({ endpoints: ["http://127.0.0.1:1", etcd.endpoint], logger });
    const lease = await s.acquire(await s.getNetworkConfig(), { attrs: hostAttrs(0) });
    assert.ok(lease.expiration);
    assert.ok(logger.lines.some((l) => l.includes("etcd endpoint failed over")));
    await etcd.stop();
    const metrics = new Registry();
    const down = open({
      endpoints: ["http://127.0.0.1:1", etcd.endpoint],
      metrics,
      requestTimeoutMs: 2000,
    });
    await assert.rejects(
      () => down.list(),
      (e: Error) =>
        e instanceof StoreUnavailableError && e.message.includes("http://127.0.0.1:1:") &&
        e.message.includes(`${etcd.endpoint}:`) && /--etcd-endpoints/.test(e.message),
    );
    assert.equal(metrics.counter("weft_store_errors_total", "").get({ store: "etcd" }), 1);
  });
});

Deno.test("etcd store: TLS client certificates and user/password auth", async () => {
  await withEtcd(async (etcd, open) => {
    const tls = etcd.tls!;
    const s = open({
      endpoints: [etcd.endpoint],
      caFile: tls.caFile,
      certFile: tls.certFile,
      keyFile: tls.keyFile,
      username: "weft",
      password: "s3cret",
    });
    const snap = await s.list();
    const lease = await s.acquire(await s.getNetworkConfig(), { attrs: hostAttrs(0) });
    const events = await watchUntil(s, snap.revision, (ev) => ev.length > 0, 10_000);
    assert.equal(events[0].type, "added");
    await s.release(lease);

    const noCert = open({
      endpoints: [etcd.endpoint],
      caFile: tls.caFile,
      username: "weft",
      password: "s3cret",
    });
    await assert.rejects(() => noCert.list(), StoreUnavailableError);
    const badPassword = open({
      ...tls,
      endpoints: [etcd.endpoint],
      username: "weft",
      password: "nope",
    });
    await assert.rejects(
      () => badPassword.list(),
      /refused user "weft": .*authentication failed.*--etcd-username and --etcd-password/,
    );
    const noUser = open({ ...tls, endpoints: [etcd.endpoint] });
    // with client-cert auth and no token, etcd takes the certificate's CN as the user
    await assert.rejects(() => noUser.list(), StoreUnavailableError);
    assert.throws(
      () => createEtcdRegistry({ endpoints: [etcd.endpoint], caFile: "/nonexistent/ca.pem" }),
      /Cannot read --etcd-cafile "\/nonexistent\/ca.pem": .*PEM file/,
    );
  }, { tls: true, auth: { username: "weft", password: "s3cret" } });
});

/**
 * Wait until etcd has expired every auth token last used before now
 * (`--auth-token-ttl`), without touching them: a use would extend them.
 * Fresh probe tokens are taken now, and each check spends one; the first
 * one etcd calls invalid proves the older tokens are gone too.
 */
async function waitForTokenExpiry(etcd: EtcdServer, user: string, password: string) {
  const post = (path: string, body: unknown, token?: string) =>
    fetch(`${etcd.endpoint}${path}`, {
      method: "POST",
      body: JSON.stringify(body),
      headers: token ? { authorization: token } : {},
    });
  // etcd expires a token 1-2 s after its last use (its sweep runs every second): 7 probes
  // checked 450 ms apart cover 3 s after the last was issued (each costs etcd a bcrypt)
  const probes: string[] = await Promise.all(
    Array.from({ length: 7 }, async () => {
      const res = await post("/v3/auth/authenticate", { name: user, password });
      return (await res.json()).token;
    }),
  );
  await waitForValue("etcd to expire idle auth tokens (--auth-token-ttl 1)", async () => {
    const token = probes.shift();
    if (!token) throw new Error("no probe token left");
    const res = await post("/v3/kv/range", { key: btoa("/") }, token);
    await res.body?.cancel();
    return res.status === 401;
  }, { intervalMs: 450 });
}

Deno.test("etcd store: an expired auth token is renewed transparently", async () => {
  await withEtcd(async (etcd, open) => {
    const logger = memoryLogger();
    const s = open({ username: "weft", password: "pw", logger });
    const cfg = await s.getNetworkConfig();
    const snap = await s.list();
    await waitForTokenExpiry(etcd, "weft", "pw");
    const lease = await s.acquire(cfg, { attrs: hostAttrs(0) });
    assert.ok(logger.lines.some((l) => l.includes("etcd auth token expired")));
    await waitForTokenExpiry(etcd, "weft", "pw");
    const events = await watchUntil(s, snap.revision, (ev) => ev.length > 0, 10_000);
    assert.equal(events[0].type === "added" && events[0].lease.subnet!.ip, lease.subnet!.ip);
    assert.ok(
      logger.lines.some((l) => l.includes("authenticating the watch again")),
      "the watch opened with the expired token and re-authenticated",
    );
  }, { auth: { username: "weft", password: "pw" }, extraArgs: ["--auth-token-ttl", "1"] });
});

Deno.test("etcd store: a watch behind a compaction yields a snapshot and continues", async () => {
  await withEtcd(async (etcd, open) => {
    const s = open();
    const cfg = await s.getNetworkConfig();
    const snap = await s.list();
    const peer = open();
    const a = await peer.acquire(cfg, { attrs: hostAttrs(1) });
    await peer.acquire(cfg, { attrs: hostAttrs(2) });
    await peer.release(a);
    await etcd.compact(await etcd.revision());
    let c: Lease | undefined;
    const events = await watchUntil(
      s,
      snap.revision,
      (ev) =>
        c !== undefined &&
        ev.some((e) => e.type === "added" && e.lease.subnet!.ip === c!.subnet!.ip),
      10_000,
      async (seen) => {
        await waitForValue(
          "the re-list after the compaction",
          () => seen.some((e) => e.type === "snapshot"),
        );
        c = await peer.acquire(cfg, { attrs: hostAttrs(3) });
      },
    );
    assert.equal(events[0].type, "snapshot");
    assert.deepEqual(
      events[0].type === "snapshot" && events[0].leases.map((l) => l.attrs.publicIP),
      [hostIP(2)],
    );
  });
});
