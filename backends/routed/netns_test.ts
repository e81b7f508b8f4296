/**
 * The vxlan and host-gw backends against the real kernel: hosts are network
 * namespaces on a veth/bridge underlay, each driven in-process through its
 * own rtnetlink datapath; traffic is checked with ping, repairs by deleting
 * things with `ip` and timing their return.
 */

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { memoryLogger } from "../../testing/memory_logger.ts";
import { Registry } from "../../core/metrics.ts";
import { systemClock } from "../../core/clock.ts";
import { parseNetworkConfig } from "../../lease/config.ts";
import { parseIPv4Net } from "../../core/ip.ts";
import type { Lease } from "../../lease/types.ts";
import { openNetlinkDatapath } from "../../datapath/netlink/datapath.ts";
import { createLab, nsOk, nsRun, sweepNetns } from "../../testing/netns.ts";
import type { Datapath } from "../../datapath/types.ts";
import { type KernelEvent } from "../../datapath/netlink/kernel.ts";
import { type NetlinkClient, openNetlinkClient } from "../../datapath/netlink/client.ts";
import type { BackendContext, Network } from "../types.ts";
import { vxlanBackend, type VxlanNetwork } from "./vxlan.ts";
import { hostGwBackend } from "./host_gw.ts";

/** Bun as installed by `npm ci` (test/setup.sh); the test must not skip silently without it. */
const BUN = new URL("../../node_modules/.bin/bun", import.meta.url).pathname;

const PREFIX = "wdp";
sweepNetns(PREFIX);
const opts = { sanitizeResources: false, sanitizeOps: false };

interface Host {
  ns: string;
  ip: string;
  dp: Datapath;
  network: Network;
  lease: Lease;
  stop: AbortController;
  running?: Promise<void>;
}

async function context(
  dp: Datapath,
  ns: string,
  ip: string,
  subnet: string,
  backend: Record<string, unknown>,
): Promise<BackendContext> {
  const eth0 = (await dp.link("eth0"))!;
  return {
    config: parseNetworkConfig(JSON.stringify({ Network: "10.5.0.0/16", Backend: backend })),
    extIface: { name: "eth0", index: eth0.index, mtu: eth0.mtu, ifaceAddr: ip, extAddr: ip },
    acquire: (attrs) => Promise.resolve({ subnet: parseIPv4Net(subnet), attrs, expiration: null }),
    logger: memoryLogger().with({ ns }),
    metrics: new Registry(),
    clock: systemClock,
    signal: new AbortController().signal,
  };
}

async function startHosts(
  lab: { hosts: readonly { ns: string; ip: string }[] },
  backend: Record<string, unknown>,
): Promise<Host[]> {
  const hosts: Host[] = [];
  for (const [i, h] of lab.hosts.entries()) {
    const dp = await openNetlinkDatapath({ netns: h.ns });
    const ctx = await context(dp, h.ns, h.ip, `10.5.${i + 1}.0/24`, backend);
    const make = backend.Type === "host-gw" ? hostGwBackend : vxlanBackend;
    const network = await make({ datapath: dp }).register(ctx);
    hosts.push({ ...h, dp, network, lease: network.lease, stop: new AbortController() });
  }
  const leases = hosts.map((h) => h.lease);
  for (const h of hosts) await h.network.syncPeers(leases.filter((l) => l !== h.lease));
  return hosts;
}

function runAll(hosts: Host[]): void {
  for (const h of hosts) h.running = h.network.run(h.stop.signal);
}

async function stopAll(hosts: Host[]): Promise<void> {
  for (const h of hosts) h.stop.abort();
  await Promise.all(hosts.map((h) => h.running));
  for (const h of hosts) h.dp.close();
}

function ping(ns: string, dst: string): boolean {
  return spawnSync("ip", ["netns", "exec", ns, "ping", "-c", "1", "-W", "1", "-q", dst], {
    stdio: "ignore",
  }).status === 0;
}

/**
 * Poll `check` every 10 ms; return the ms it took to pass (logged, not
 * asserted: `deno task bench repair` measures repair times), or fail after 15 s.
 */
async function timeUntil(check: () => boolean, what: string): Promise<number> {
  const t0 = performance.now();
  for (;;) {
    if (check()) return performance.now() - t0;
    if (performance.now() - t0 > 15_000) {
      assert.fail(`${what}: not restored within 15 s`);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}

const has = (ns: string, ...args: string[]) => {
  try {
    return nsRun(ns, ...(args as [string, ...string[]])) !== "";
  } catch {
    return false;
  }
};

Deno.test({
  name: "vxlan: three hosts reach each other's overlay addresses over flannel.1",
  ...opts,
  fn: async () => {
    const lab = createLab(PREFIX, 3);
    let hosts: Host[] = [];
    try {
      hosts = await startHosts(lab, { Type: "vxlan" });
      const [h1, h2, h3] = hosts;
      assert.match(
        nsRun(h1.ns, "ip", "-d", "link", "show", "flannel.1"),
        /vxlan id 1 local 192\.0\.2\.11 dev eth0 .*dstport 8472 nolearning/,
      );
      assert.match(nsRun(h1.ns, "ip", "link", "show", "flannel.1"), /mtu 1450/);
      assert.equal(
        nsRun(h1.ns, "ip", "route", "show", "10.5.2.0/24"),
        "10.5.2.0/24 via 10.5.2.0 dev flannel.1 onlink",
      );
      const mac2 = (h2.network as VxlanNetwork).vtepMac;
      assert.match(
        nsRun(h1.ns, "ip", "neigh", "show", "10.5.2.0", "dev", "flannel.1"),
        new RegExp(`lladdr ${mac2} PERMANENT`),
      );
      assert.match(
        nsRun(h1.ns, "bridge", "fdb", "show", "dev", "flannel.1"),
        new RegExp(`${mac2} dst 192\\.0\\.2\\.12 self permanent`),
      );
      assert.ok(ping(h1.ns, "10.5.2.0"), "h1 → h2 overlay");
      assert.ok(ping(h1.ns, "10.5.3.0"), "h1 → h3 overlay");
      assert.ok(ping(h3.ns, "10.5.2.0"), "h3 → h2 overlay");
    } finally {
      await stopAll(hosts);
      lab.destroy();
    }
  },
});

Deno.test({
  name: "vxlan: a deleted flannel.1, route, neighbour or fdb entry is restored",
  ...opts,
  fn: async () => {
    const lab = createLab(PREFIX, 3);
    let hosts: Host[] = [];
    try {
      hosts = await startHosts(lab, { Type: "vxlan" });
      runAll(hosts);
      const [h1, h2, h3] = hosts;
      const mac3 = (h3.network as VxlanNetwork).vtepMac;
      const times: Record<string, number> = {};

      nsRun(h2.ns, "ip", "link", "del", "flannel.1");
      times.device = await timeUntil(
        () =>
          has(h2.ns, "ip", "route", "show", "10.5.3.0/24", "dev", "flannel.1") &&
          has(h2.ns, "ip", "route", "show", "10.5.1.0/24", "dev", "flannel.1") &&
          has(h2.ns, "ip", "addr", "show", "dev", "flannel.1", "to", "10.5.2.0/32"),
        "flannel.1",
      );
      assert.match(
        nsRun(h2.ns, "ip", "link", "show", "flannel.1"),
        new RegExp((h2.network as VxlanNetwork).vtepMac),
      );
      assert.ok(ping(h1.ns, "10.5.2.0"), "h1 → h2 after flannel.1 was recreated");

      nsRun(h1.ns, "ip", "route", "del", "10.5.2.0/24");
      times.route = await timeUntil(
        () => has(h1.ns, "ip", "route", "show", "10.5.2.0/24"),
        "route",
      );

      nsRun(h1.ns, "ip", "neigh", "del", "10.5.3.0", "dev", "flannel.1");
      times.neighbour = await timeUntil(
        () => /PERMANENT/.test(nsRun(h1.ns, "ip", "neigh", "show", "10.5.3.0", "dev", "flannel.1")),
        "neighbour",
      );

      nsRun(h1.ns, "bridge", "fdb", "del", mac3, "dev", "flannel.1", "dst", "192.0.2.13", "self");
      times.fdb = await timeUntil(
        () =>
          nsRun(h1.ns, "bridge", "fdb", "show", "dev", "flannel.1").includes(
            `${mac3} dst 192.0.2.13`,
          ),
        "fdb",
      );

      nsRun(h3.ns, "ip", "link", "set", "flannel.1", "down");
      times.down = await timeUntil(
        () =>
          /UP/.test(nsRun(h3.ns, "ip", "link", "show", "flannel.1")) &&
          has(h3.ns, "ip", "route", "show", "10.5.1.0/24"),
        "link down",
      );

      console.log(
        `restore times (ms): ${
          JSON.stringify(
            Object.fromEntries(Object.entries(times).map(([k, v]) => [k, Math.round(v)])),
          )
        }`,
      );
      assert.ok(ping(h1.ns, "10.5.2.0") && ping(h1.ns, "10.5.3.0") && ping(h3.ns, "10.5.1.0"));
    } finally {
      await stopAll(hosts);
      lab.destroy();
    }
  },
});

Deno.test({
  name: "vxlan: restarting on a correct datapath changes nothing; a stale peer is then removed",
  ...opts,
  fn: async () => {
    const lab = createLab(PREFIX, 3);
    let hosts: Host[] = [];
    let watcher: NetlinkClient | undefined;
    try {
      hosts = await startHosts(lab, { Type: "vxlan" });
      const [h1, h2, h3] = hosts;
      const mac1 = (h1.network as VxlanNetwork).vtepMac;
      h1.dp.close();

      watcher = await openNetlinkClient({ netns: h1.ns });
      const changes = watcher.subscribe();

      const dp = await openNetlinkDatapath({ netns: h1.ns });
      h1.dp = dp;
      const ctx = await context(dp, h1.ns, h1.ip, "10.5.1.0/24", { Type: "vxlan" });
      const network = await vxlanBackend({ datapath: dp }).register(ctx) as VxlanNetwork;
      h1.network = network;
      await network.syncPeers([h2.lease, h3.lease]);
      // A marker from outside: every change before it came from the restart.
      nsRun(h1.ns, "ip", "link", "add", "wmark0", "type", "bridge");
      const seen: KernelEvent[] = [];
      await timeUntil(
        () => {
          seen.push(...changes.drain());
          return seen.some((e) => e.kind === "link" && e.link.name === "wmark0");
        },
        "the marker event",
      );
      const before = seen.slice(
        0,
        seen.findIndex((e) => e.kind === "link" && e.link.name === "wmark0"),
      );
      assert.equal(network.vtepMac, mac1);
      assert.deepEqual(before, [], "the restart made kernel changes");

      await network.syncPeers([h2.lease]);
      assert.equal(nsRun(h1.ns, "ip", "route", "show", "10.5.3.0/24"), "");
      assert.equal(nsRun(h1.ns, "ip", "neigh", "show", "10.5.3.0", "dev", "flannel.1"), "");
      assert.doesNotMatch(
        nsRun(h1.ns, "bridge", "fdb", "show", "dev", "flannel.1"),
        /192\.0\.2\.13/,
      );
      assert.ok(ping(h1.ns, "10.5.2.0"));
    } finally {
      watcher?.close();
      await stopAll(hosts);
      lab.destroy();
    }
  },
});

Deno.test({
  name: "vxlan: DirectRouting sends same-L2 peers over the underlay without encapsulation",
  ...opts,
  fn: async () => {
    const lab = createLab(PREFIX, 2);
    let hosts: Host[] = [];
    try {
      hosts = await startHosts(lab, { Type: "vxlan", DirectRouting: true });
      const [h1] = hosts;
      assert.equal(
        nsRun(h1.ns, "ip", "route", "show", "10.5.2.0/24"),
        "10.5.2.0/24 via 192.0.2.12 dev eth0",
      );
      assert.equal(nsRun(h1.ns, "ip", "neigh", "show", "dev", "flannel.1", "nud", "permanent"), "");
    } finally {
      await stopAll(hosts);
      lab.destroy();
    }
  },
});

Deno.test({
  name: "host-gw: peers route via PublicIP, and a deleted route is restored",
  ...opts,
  fn: async () => {
    const lab = createLab(PREFIX, 2);
    let hosts: Host[] = [];
    try {
      for (const [i, h] of lab.hosts.entries()) {
        nsRun(h.ns, "ip", "link", "add", "cni0", "type", "bridge");
        nsRun(h.ns, "ip", "addr", "add", `10.5.${i + 1}.1/24`, "dev", "cni0");
        nsRun(h.ns, "ip", "link", "set", "cni0", "up");
      }
      hosts = await startHosts(lab, { Type: "host-gw" });
      runAll(hosts);
      const [h1, h2] = hosts;
      assert.equal(
        nsRun(h1.ns, "ip", "route", "show", "10.5.2.0/24"),
        "10.5.2.0/24 via 192.0.2.12 dev eth0",
      );
      assert.ok(ping(h1.ns, "10.5.2.1"), "h1 → h2's cni0");
      nsRun(h2.ns, "ip", "route", "del", "10.5.1.0/24");
      const ms = await timeUntil(
        () => has(h2.ns, "ip", "route", "show", "10.5.1.0/24"),
        "host-gw route",
      );
      console.log(`host-gw route restored in ${ms.toFixed(0)} ms`);
      assert.ok(ping(h2.ns, "10.5.1.1"), "h2 → h1's cni0");
    } finally {
      await stopAll(hosts);
      lab.destroy();
    }
  },
});

Deno.test({
  name: "vxlan under Bun: register, sync and repair work the same",
  ...opts,
  fn: () => {
    const lab = createLab(PREFIX, 2);
    try {
      const script = new URL("../../testing/routing_netns_bun.ts", import.meta.url).pathname;
      const r = spawnSync(BUN, [script, lab.hosts[0].ns, lab.hosts[1].ns], {
        encoding: "utf8",
        timeout: 30_000,
      });
      assert.equal(r.status, 0, `bun script failed:\n${r.stdout}\n${r.stderr}`);
      const out = JSON.parse(r.stdout.trim().split("\n").at(-1)!);
      assert.equal(out.runtime, "bun");
      assert.notEqual(
        out.restoredMs,
        null,
        "the deleted route was not restored within 15 s under Bun",
      );
      console.log(`restored in ${out.restoredMs} ms under Bun`);
      assert.ok(
        nsOk(lab.hosts[0].ns, "ping", "-c", "1", "-W", "1", "-q", "10.5.2.0"),
        "h1 → h2 overlay set up by Bun",
      );
      assert.ok(
        nsOk(lab.hosts[1].ns, "ping", "-c", "1", "-W", "1", "-q", "10.5.1.0"),
        "h2 → h1 overlay set up by Bun",
      );
    } finally {
      lab.destroy();
    }
  },
});
