// The agent in IPv6-only and dual-stack networks, over an in-memory registry: the lease,
// subnet.env, the host preparation it is given the config for, and a restart that keeps the
// lease (an IPv6-only host is known by its public IPv6 address).
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { memoryLogger } from "../testing/memory_logger.ts";
import { Registry } from "../core/metrics.ts";
import { FakeClock } from "../testing/fake_clock.ts";
import { formatSubnetPair } from "../core/ip.ts";
import { createKvLeaseStore } from "../lease/kv_store.ts";
import type { NetworkConfig } from "../lease/config.ts";
import type { Lease } from "../lease/types.ts";
import { createMemoryRegistry, type MemoryRegistry } from "../testing/memory_registry.ts";
import { createAgent } from "./agent.ts";
import type { Backend } from "../backends/types.ts";
import type { ExternalInterface } from "../datapath/iface.ts";

const V6ONLY =
  '{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:5::/48","Backend":{"Type":"six"}}';
const DUAL =
  '{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:5::/48","Backend":{"Type":"six"}}';

/** A lease-only backend publishing both families of the interface, as host-gw does. */
function sixBackend(peers: (readonly Lease[])[]): Backend {
  return {
    type: "six",
    async register(ctx) {
      const lease = await ctx.acquire({
        publicIP: ctx.config.enableIPv4 ? ctx.extIface.extAddr : "",
        publicIPv6: ctx.config.enableIPv6 ? ctx.extIface.extV6Addr ?? null : null,
        backendType: "six",
      }, ctx.signal);
      return {
        lease,
        mtu: ctx.extIface.mtu,
        syncPeers(p) {
          peers.push(p);
          return Promise.resolve();
        },
        run: (signal) => new Promise<void>((r) => signal.addEventListener("abort", () => r())),
      };
    },
  };
}

function start(reg: MemoryRegistry, clock: FakeClock, dir: string, ext: ExternalInterface) {
  const prepared: NetworkConfig[] = [];
  const peers: (readonly Lease[])[] = [];
  const agent = createAgent({
    store: createKvLeaseStore(reg, { ttlMs: 3600_000, clock, logger: memoryLogger() }),
    backends: { six: () => sixBackend(peers) },
    extIface: ext,
    subnetFile: path.join(dir, "subnet.env"),
    ipMasq: false,
    prepare: (config) => {
      prepared.push(config);
      return Promise.resolve();
    },
    logger: memoryLogger(),
    metrics: new Registry(),
    clock,
    random: () => 0.5,
  });
  const ac = new AbortController();
  const running = agent.run(ac.signal);
  return {
    agent,
    prepared,
    peers,
    stop: async () => {
      ac.abort();
      await running;
    },
  };
}

async function until(cond: () => boolean, clock: FakeClock, what: string): Promise<void> {
  for (let i = 0; i < 400; i++) {
    if (cond()) return;
    await clock.advance(50);
  }
  throw new Error(`timed out waiting for ${what}`);
}

const v6host = (n: number): ExternalInterface => ({
  name: "eth0",
  index: 2,
  mtu: 1500,
  ifaceAddr: "",
  extAddr: "",
  ifaceV6Addr: `2001:db8::${n}`,
  extV6Addr: `2001:db8::${n}`,
});

Deno.test("agent in an IPv6-only network: IPv6 lease, flannel's IPv6-only subnet.env, kept across a restart", async () => {
  const clock = new FakeClock();
  const reg = createMemoryRegistry({ config: V6ONLY, clock });
  const dirs = [1, 2].map(() => fs.mkdtempSync(path.join(os.tmpdir(), "weft-agent6-")));
  try {
    const a = start(reg, clock, dirs[0], v6host(1));
    const b = start(reg, clock, dirs[1], v6host(2));
    await until(() => a.agent.status().ready && b.agent.status().ready, clock, "both ready");
    const la = a.agent.status().lease!;
    const lb = b.agent.status().lease!;
    assert.equal(la.subnet, undefined);
    assert.notEqual(formatSubnetPair(la), formatSubnetPair(lb));
    assert.deepEqual(a.prepared.map((c) => [c.enableIPv4, c.enableIPv6]), [[false, true]]);
    const env = fs.readFileSync(path.join(dirs[0], "subnet.env"), "utf8");
    const first = formatSubnetPair(la).replace("::/64", "::1/64");
    assert.equal(
      env,
      `FLANNEL_IPV6_NETWORK=fd00:10:5::/48\nFLANNEL_IPV6_SUBNET=${first}\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=false\n`,
    );
    await until(
      () => a.peers.some((p) => p.length === 1 && p[0].attrs.publicIPv6 === "2001:db8::2"),
      clock,
      "a sees b",
    );
    // b restarts: same lease, and a still has exactly one peer
    await b.stop();
    fs.rmSync(path.join(dirs[1], "subnet.env"));
    const b2 = start(reg, clock, dirs[1], v6host(2));
    await until(() => b2.agent.status().ready, clock, "b ready again");
    assert.equal(formatSubnetPair(b2.agent.status().lease!), formatSubnetPair(lb));
    assert.equal((await reg.list()).records.length, 2, "no second lease for the same host");
    assert.equal(a.agent.status().ready, true, "a did not think its lease was taken");
    await a.stop();
    await b2.stop();
  } finally {
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  }
});

Deno.test("agent in a dual-stack network: both subnets, both pairs in subnet.env", async () => {
  const clock = new FakeClock();
  const reg = createMemoryRegistry({ config: DUAL, clock });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "weft-agent6-"));
  try {
    const a = start(reg, clock, dir, {
      ...v6host(1),
      ifaceAddr: "192.0.2.1",
      extAddr: "192.0.2.1",
    });
    await until(() => a.agent.status().ready, clock, "ready");
    const l = a.agent.status().lease!;
    assert.ok(l.subnet && l.ipv6Subnet, formatSubnetPair(l));
    assert.deepEqual(a.prepared.map((c) => [c.enableIPv4, c.enableIPv6]), [[true, true]]);
    const [v4, v6] = formatSubnetPair(l).split(" + ");
    assert.equal(
      fs.readFileSync(path.join(dir, "subnet.env"), "utf8"),
      `FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=${v4.replace(".0/24", ".1/24")}\n` +
        `FLANNEL_IPV6_NETWORK=fd00:10:5::/48\nFLANNEL_IPV6_SUBNET=${
          v6.replace("::/64", "::1/64")
        }\n` +
        `FLANNEL_MTU=1500\nFLANNEL_IPMASQ=false\n`,
    );
    await a.stop();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
