/**
 * The vxlan and host-gw backends over IPv6 against the real kernel: hosts
 * are network namespaces on a veth/bridge underlay with IPv4 and an
 * `fd00::/64` ULA, each driven in-process through its own rtnetlink
 * datapath. Checks the kernel state flannel's IPv6 forms promise
 * (`ip -6 …`, `bridge fdb`), overlay ping6, restarts that change nothing,
 * and repairs of deleted IPv6 state within 1 s.
 *
 * @module
 */

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { memoryLogger } from "../../testing/memory_logger.ts";
import { Registry } from "../../core/metrics.ts";
import { systemClock } from "../../core/clock.ts";
import { parseNetworkConfig } from "../../lease/config.ts";
import { parseIPv4Net, parseIPv6Net, subnetPair } from "../../core/ip.ts";
import type { Lease } from "../../lease/types.ts";
import { openNetlinkDatapath } from "../../datapath/netlink/datapath.ts";
import { createLab, type NetnsLab, nsRun, run, sweepNetns } from "../../testing/netns.ts";
import type { Datapath } from "../../datapath/types.ts";
import type { BackendContext, Network } from "../types.ts";
import { vxlanBackend, type VxlanNetwork } from "./vxlan.ts";
import { hostGwBackend } from "./host_gw.ts";

const PREFIX = "wd6";
sweepNetns(PREFIX);
const opts = { sanitizeResources: false, sanitizeOps: false };

interface Host {
  ns: string;
  ip: string;
  ip6: string;
  dp: Datapath;
  network: Network;
  stop: AbortController;
  running?: Promise<void>;
}

/** A lab whose hosts also hold `fd00::<11+i>/64` on eth0. */
function dualStackLab(count: number): NetnsLab & { ip6: string[] } {
  const lab = createLab(PREFIX, count);
  const ip6 = lab.hosts.map((_, i) => `fd00::${11 + i}`);
  lab.hosts.forEach((h, i) =>
    run("ip", ["-n", h.ns, "addr", "add", `${ip6[i]}/64`, "dev", "eth0", "nodad"])
  );
  return Object.assign(lab, { ip6 });
}

async function startHosts(
  lab: NetnsLab & { ip6: string[] },
  net: Record<string, unknown>,
  backend: Record<string, unknown>,
): Promise<Host[]> {
  const v4 = net.EnableIPv4 !== false;
  const hosts: Host[] = [];
  for (const [i, h] of lab.hosts.entries()) {
    const dp = await openNetlinkDatapath({ netns: h.ns });
    const eth0 = (await dp.link("eth0"))!;
    const subnets = subnetPair(
      v4 ? parseIPv4Net(`10.5.${i + 1}.0/24`) : undefined,
      parseIPv6Net(`fd00:5:0:${i + 1}::/64`),
    )!;
    const ctx: BackendContext = {
      config: parseNetworkConfig(JSON.stringify({ ...net, Backend: backend })),
      extIface: {
        name: "eth0",
        index: eth0.index,
        mtu: eth0.mtu,
        ifaceAddr: v4 ? h.ip : "",
        extAddr: v4 ? h.ip : "",
        ifaceV6Addr: lab.ip6[i],
        extV6Addr: lab.ip6[i],
      },
      acquire: (attrs) => Promise.resolve({ ...subnets, attrs, expiration: null }),
      logger: memoryLogger().with({ ns: h.ns }),
      metrics: new Registry(),
      clock: systemClock,
      signal: new AbortController().signal,
    };
    const make = backend.Type === "host-gw" ? hostGwBackend : vxlanBackend;
    const network = await make({ datapath: dp }).register(ctx);
    hosts.push({ ...h, ip6: lab.ip6[i], dp, network, stop: new AbortController() });
  }
  const leases: Lease[] = hosts.map((h) => h.network.lease);
  for (const h of hosts) {
    await h.network.syncPeers(leases.filter((l) => l !== h.network.lease));
    h.running = h.network.run(h.stop.signal);
  }
  return hosts;
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

async function timeUntil(check: () => boolean, limitMs: number, what: string): Promise<number> {
  const t0 = performance.now();
  for (;;) {
    if (check()) return performance.now() - t0;
    if (performance.now() - t0 > limitMs) assert.fail(`${what}: not restored within ${limitMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const DUAL = { Network: "10.5.0.0/16", EnableIPv6: true, IPv6Network: "fd00:5::/56" };
const V6ONLY = { EnableIPv4: false, EnableIPv6: true, IPv6Network: "fd00:5::/56" };

Deno.test({
  name:
    "vxlan dual-stack: flannel-v6.1 over the IPv6 underlay; hosts reach each other over both families",
  ...opts,
  fn: async () => {
    const lab = dualStackLab(3);
    let hosts: Host[] = [];
    try {
      hosts = await startHosts(lab, DUAL, { Type: "vxlan" });
      const [h1, h2, h3] = hosts;
      assert.match(
        nsRun(h1.ns, "ip", "-d", "link", "show", "flannel-v6.1"),
        /mtu 1430 .*vxlan id 1 local fd00::11 dev eth0 .*dstport 8472 nolearning/s,
      );
      assert.match(
        nsRun(h1.ns, "ip", "-6", "addr", "show", "dev", "flannel-v6.1"),
        /inet6 fd00:5:0:1::\/128 scope global/,
      );
      assert.equal(
        nsRun(h1.ns, "ip", "-6", "route", "show", "fd00:5:0:2::/64"),
        "fd00:5:0:2::/64 via fd00:5:0:2:: dev flannel-v6.1 metric 1024 onlink pref medium",
      );
      const mac2 = (h2.network as VxlanNetwork).v6VtepMac!;
      assert.notEqual(
        mac2,
        (h2.network as VxlanNetwork).vtepMac,
        "each device has its own VtepMAC",
      );
      assert.match(
        nsRun(h1.ns, "ip", "-6", "neigh", "show", "fd00:5:0:2::", "dev", "flannel-v6.1"),
        new RegExp(`lladdr ${mac2} PERMANENT`),
      );
      assert.match(
        nsRun(h1.ns, "bridge", "fdb", "show", "dev", "flannel-v6.1"),
        new RegExp(`${mac2} dst fd00::12 self permanent`),
      );
      for (
        const [from, to] of [[h1, "fd00:5:0:2::"], [h1, "fd00:5:0:3::"], [
          h3,
          "fd00:5:0:2::",
        ]] as const
      ) {
        assert.ok(ping(from.ns, to), `${from.ns} → ${to}`);
      }
      assert.ok(ping(h1.ns, "10.5.2.0") && ping(h3.ns, "10.5.1.0"), "IPv4 still flows");
    } finally {
      await stopAll(hosts);
      lab.destroy();
    }
  },
});

Deno.test({
  name:
    "vxlan IPv6-only: no flannel.1; a deleted IPv6 route, neighbour, fdb entry and flannel-v6.1 are restored within 1 s",
  ...opts,
  fn: async () => {
    const lab = dualStackLab(3);
    let hosts: Host[] = [];
    try {
      hosts = await startHosts(lab, V6ONLY, { Type: "vxlan" });
      const [h1, h2, h3] = hosts;
      assert.equal(spawnSync("ip", ["-n", h1.ns, "link", "show", "flannel.1"]).status !== 0, true);
      const mac3 = (h3.network as VxlanNetwork).v6VtepMac!;
      const has = (ns: string, ...args: string[]) => {
        try {
          return nsRun(ns, ...(args as [string, ...string[]])) !== "";
        } catch {
          return false;
        }
      };
      const times: Record<string, number> = {};
      nsRun(h1.ns, "ip", "-6", "route", "del", "fd00:5:0:2::/64");
      times.route = await timeUntil(
        () => has(h1.ns, "ip", "-6", "route", "show", "fd00:5:0:2::/64"),
        1000,
        "route",
      );
      nsRun(h1.ns, "ip", "-6", "neigh", "del", "fd00:5:0:3::", "dev", "flannel-v6.1");
      times.neighbour = await timeUntil(
        () =>
          /PERMANENT/.test(
            nsRun(h1.ns, "ip", "-6", "neigh", "show", "fd00:5:0:3::", "dev", "flannel-v6.1"),
          ),
        1000,
        "neighbour",
      );
      nsRun(h1.ns, "bridge", "fdb", "del", mac3, "dev", "flannel-v6.1", "dst", "fd00::13", "self");
      times.fdb = await timeUntil(
        () =>
          nsRun(h1.ns, "bridge", "fdb", "show", "dev", "flannel-v6.1").includes(
            `${mac3} dst fd00::13`,
          ),
        1000,
        "fdb",
      );
      nsRun(h2.ns, "ip", "link", "del", "flannel-v6.1");
      times.device = await timeUntil(
        () =>
          has(h2.ns, "ip", "-6", "route", "show", "fd00:5:0:3::/64", "dev", "flannel-v6.1") &&
          has(h2.ns, "ip", "-6", "addr", "show", "dev", "flannel-v6.1", "to", "fd00:5:0:2::/128"),
        1000,
        "flannel-v6.1",
      );
      console.log(
        `IPv6 restore times (ms): ${
          JSON.stringify(
            Object.fromEntries(Object.entries(times).map(([k, v]) => [k, Math.round(v)])),
          )
        }`,
      );
      assert.ok(
        ping(h1.ns, "fd00:5:0:2::") && ping(h1.ns, "fd00:5:0:3::") && ping(h2.ns, "fd00:5:0:3::"),
      );
    } finally {
      await stopAll(hosts);
      lab.destroy();
    }
  },
});

Deno.test({
  name:
    "host-gw dual-stack: IPv6 routes via the peers' public IPv6 on eth0; a deleted one is restored",
  ...opts,
  fn: async () => {
    const lab = dualStackLab(2);
    let hosts: Host[] = [];
    try {
      hosts = await startHosts(lab, DUAL, { Type: "host-gw" });
      const [h1] = hosts;
      assert.equal(
        nsRun(h1.ns, "ip", "-6", "route", "show", "fd00:5:0:2::/64"),
        "fd00:5:0:2::/64 via fd00::12 dev eth0 metric 1024 pref medium",
      );
      assert.equal(
        nsRun(h1.ns, "ip", "route", "show", "10.5.2.0/24"),
        "10.5.2.0/24 via 192.0.2.12 dev eth0",
      );
      nsRun(h1.ns, "ip", "-6", "route", "del", "fd00:5:0:2::/64");
      await timeUntil(
        () => nsRun(h1.ns, "ip", "-6", "route", "show", "fd00:5:0:2::/64") !== "",
        1000,
        "host-gw IPv6 route",
      );
    } finally {
      await stopAll(hosts);
      lab.destroy();
    }
  },
});
