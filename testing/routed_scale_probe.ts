/**
 * A quick probe (not a benchmark): the vxlan backend over the netlink
 * datapath in a throwaway namespace, at 10 and 5000 peers: a full
 * `syncPeers`, a second one with nothing to change (dump and diff), and
 * 300 single-lease `updatePeers` adds and removes with drift watching on.
 * Prints one JSON line per peer count.
 *
 * Run: `deno run -A testing/routed_scale_probe.ts` (or `bun testing/routed_scale_probe.ts`).
 *
 * @module
 */
import { createNetns, deleteNetns, sweepNetns } from "./netns.ts";
import { openNetlinkClient } from "../datapath/netlink/client.ts";
import { openNetlinkDatapath } from "../datapath/netlink/datapath.ts";
import { vxlanBackend } from "../backends/routed/vxlan.ts";
import { parseNetworkConfig } from "../lease/config.ts";
import { nullLogger } from "../core/log.ts";
import { Registry } from "../core/metrics.ts";
import { systemClock } from "../core/clock.ts";
import type { Lease } from "../lease/types.ts";
const hex = (n: number) => n.toString(16).padStart(2, "0");
const lease = (i: number): Lease => ({
  subnet: { ip: (0x0a400000 + (i + 2) * 256) >>> 0, prefixLen: 24 },
  attrs: {
    publicIP: `192.0.2.${2 + (i % 200)}`,
    backendType: "vxlan",
    backendData: { VNI: 1, VtepMAC: `02:00:00:00:${hex((i >> 8) & 0xff)}:${hex(i & 0xff)}` },
  },
  expiration: null,
});
const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return +s[Math.min(s.length - 1, Math.floor(p * s.length))].toFixed(2);
};
sweepNetns("wms");
for (const n of [10, 5000]) {
  // One namespace per size, with eth0 (a bridge) at 192.0.2.1/24.
  const ns = createNetns("wms", "m");
  const c = await openNetlinkClient({ netns: ns });
  try {
    const ext = await c.createBridge({ name: "eth0", mtu: 1500, up: true });
    await c.addAddresses([{ index: ext.index, ip: 0xc0000201, prefixLen: 24 }]);
    const dp = await openNetlinkDatapath({ netns: ns });
    const network = await vxlanBackend({ datapath: dp }).register({
      config: parseNetworkConfig(
        '{"Network":"10.0.0.0/8","SubnetLen":24,"Backend":{"Type":"vxlan"}}',
      ),
      extIface: {
        name: "eth0",
        index: ext.index,
        mtu: 1500,
        ifaceAddr: "192.0.2.1",
        extAddr: "192.0.2.1",
      },
      acquire: (attrs) =>
        Promise.resolve({ subnet: { ip: 0x0a010000, prefixLen: 24 }, attrs, expiration: null }),
      logger: nullLogger,
      metrics: new Registry(),
      clock: systemClock,
      signal: new AbortController().signal,
    });
    const peers = Array.from({ length: n }, (_, i) => lease(i));
    let t = performance.now();
    await network.syncPeers(peers);
    const syncMs = performance.now() - t;
    t = performance.now();
    await network.syncPeers(peers);
    const resyncMs = performance.now() - t;
    const ac = new AbortController();
    const running = network.run(ac.signal); // drift watching on, as in the agent
    const adds: number[] = [], dels: number[] = [];
    for (let k = 0; k < 300; k++) {
      const l = lease(n + k);
      t = performance.now();
      await network.updatePeers!([{ type: "added", lease: l }]);
      adds.push(performance.now() - t);
      t = performance.now();
      await network.updatePeers!([{ type: "removed", lease: l }]);
      dels.push(performance.now() - t);
    }
    ac.abort();
    await running;
    console.log(
      JSON.stringify({
        peers: n,
        syncPeersMs: Math.round(syncMs),
        resyncNoChangeMs: Math.round(resyncMs),
        addP50: pct(adds, 0.5),
        addP90: pct(adds, 0.9),
        addP99: pct(adds, 0.99),
        removeP50: pct(dels, 0.5),
        removeP99: pct(dels, 0.99),
      }),
    );
    dp.close();
  } finally {
    c.close();
    deleteNetns(ns);
  }
}
