/**
 * The vxlan backend's basic path, run by `routing_netns_test.ts` under Bun:
 * `bun testing/routing_netns_bun.ts <ns1> <ns2>` registers flannel.1 in two
 * namespaces (each with `eth0` at 192.0.2.11 / .12), syncs the peers, deletes
 * a route in the first and times its repair. Prints one JSON line. Leaves
 * the datapath in place so the caller can ping across.
 *
 * @module
 */

import { spawnSync } from "node:child_process";
import process from "node:process";
import { nullLogger } from "../core/log.ts";
import { Registry } from "../core/metrics.ts";
import { systemClock } from "../core/clock.ts";
import { parseNetworkConfig } from "../lease/config.ts";
import { parseIPv4Net } from "../core/ip.ts";
import { openNetlinkDatapath } from "../datapath/netlink/datapath.ts";
import { runtimeName } from "../core/runtime.ts";
import { vxlanBackend } from "../backends/routed/vxlan.ts";

const [ns1, ns2] = process.argv.slice(2);
if (!ns1 || !ns2) {
  console.error("usage: routing_netns_bun.ts <ns1> <ns2>");
  process.exit(2);
}
const config = parseNetworkConfig('{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}');
const hosts = [];
for (const [i, ns] of [ns1, ns2].entries()) {
  const dp = await openNetlinkDatapath({ netns: ns });
  const eth0 = await dp.link("eth0");
  if (!eth0) throw new Error(`${ns} has no eth0`);
  const ip = `192.0.2.${11 + i}`;
  const network = await vxlanBackend({ datapath: dp }).register({
    config,
    extIface: { name: "eth0", index: eth0.index, mtu: eth0.mtu, ifaceAddr: ip, extAddr: ip },
    acquire: (attrs) =>
      Promise.resolve({ subnet: parseIPv4Net(`10.5.${i + 1}.0/24`), attrs, expiration: null }),
    logger: nullLogger,
    metrics: new Registry(),
    clock: systemClock,
    signal: new AbortController().signal,
  });
  hosts.push({ ns, dp, network });
}
await hosts[0].network.syncPeers([hosts[1].network.lease]);
await hosts[1].network.syncPeers([hosts[0].network.lease]);

const ac = new AbortController();
// run() watches for drift from its first step: no wait needed before the deletion.
const running = hosts[0].network.run(ac.signal);
spawnSync("ip", ["-n", ns1, "route", "del", "10.5.2.0/24"]);
const t0 = performance.now();
let restoredMs = -1;
while (performance.now() - t0 < 15_000) {
  const out = spawnSync("ip", ["-n", ns1, "route", "show", "10.5.2.0/24"], { encoding: "utf8" });
  if (out.stdout.includes("10.5.2.0/24 via 10.5.2.0 dev flannel.1 onlink")) {
    restoredMs = Math.round(performance.now() - t0);
    break;
  }
  await new Promise((r) => setTimeout(r, 10));
}
ac.abort();
await running;
for (const h of hosts) h.dp.close();
console.log(
  JSON.stringify({ runtime: runtimeName, restoredMs: restoredMs < 0 ? null : restoredMs }),
);
