/**
 * The netlink Datapath against the real kernel, each case in a throwaway
 * network namespace: the shared contract under Deno and under Bun, lost
 * events, and the cost of an update at scale (no dump, only the peer's
 * writes).
 *
 * @module
 */

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { parseIPv4Net } from "../../core/ip.ts";
import {
  datapathContract,
  hostGwPeer,
  key,
  SCOPE,
  VXLAN,
  vxlanPeer,
  waitForDrift,
} from "../../testing/datapath_contract.ts";
import { datapathContractIPv6 } from "../../testing/datapath_contract_ipv6.ts";
import { withNetlinkHarness } from "../../testing/netlink_poke.ts";
import { createNetns, deleteNetns, sweepNetns } from "../../testing/netns.ts";
import type { PeerEntries } from "../types.ts";
import { type NetlinkDatapath, openNetlinkDatapath } from "./datapath.ts";
import { openNetlinkClient } from "./client.ts";

/** Bun as installed by `npm ci` (test/setup.sh); the test must not skip silently without it. */
const BUN = new URL("../../node_modules/.bin/bun", import.meta.url).pathname;

const PREFIX = "wdp";
sweepNetns(PREFIX);

const opts = { sanitizeResources: false, sanitizeOps: false };

async function inNamespace(fn: (ns: string) => Promise<void>): Promise<void> {
  const ns = createNetns(PREFIX, "c");
  try {
    await fn(ns);
  } finally {
    deleteNetns(ns);
  }
}

for (const c of [...datapathContract, ...datapathContractIPv6]) {
  Deno.test({
    name: `NetlinkDatapath contract: ${c.name}`,
    ...opts,
    fn: () => inNamespace((ns) => withNetlinkHarness(ns, c.fn)),
  });
}

Deno.test({
  name: "NetlinkDatapath passes the same contract under Bun",
  ...opts,
  fn: () => {
    const script = new URL("../../testing/netlink_contract_bun.ts", import.meta.url).pathname;
    const r = spawnSync(BUN, [script, PREFIX], { encoding: "utf8", timeout: 120_000 });
    const last = r.stdout.trim().split("\n").at(-1) ?? "";
    assert.equal(r.status, 0, `bun contract run failed:\n${r.stdout}\n${r.stderr}`);
    const out = JSON.parse(last);
    assert.equal(out.runtime, "bun");
    assert.equal(out.passed, datapathContract.length + datapathContractIPv6.length);
  },
});

Deno.test({
  name: "openNetlinkDatapath names the missing namespace and how to create it",
  ...opts,
  fn: async () => {
    await assert.rejects(
      openNetlinkDatapath({ netns: `${PREFIX}-does-not-exist` }),
      /ip netns add wdp-does-not-exist/,
    );
  },
});

Deno.test({
  name: "NetlinkDatapath reports lost events when its buffer overflows, and then syncs on update",
  ...opts,
  fn: () =>
    inNamespace((ns) =>
      withNetlinkHarness(ns, async ({ dp, kernel }) => {
        const table = dp.entries(SCOPE);
        await table.sync(new Map([[key(2), hostGwPeer(2)]]));
        const ac = new AbortController();
        const it = dp.drift(ac.signal)[Symbol.asyncIterator]();
        try {
          // 3000 outside route changes overflow a small receive buffer.
          const c = await openNetlinkClient({ netns: ns });
          try {
            const ext = (await c.getLink("ext0"))!;
            const routes = Array.from({ length: 3000 }, (_, i) => ({
              dst: { ip: (0x0a400000 + i * 256) >>> 0, prefixLen: 24 },
              gateway: 0xc0000202,
              index: ext.index,
            }));
            await c.replaceRoutes(routes);
            await c.deleteRoutes(routes);
          } finally {
            c.close();
          }
          await waitForDrift(it, (d) => d.kind === "lost");
          // The view can no longer be trusted: the next update reads the kernel again.
          await kernel.deleteRoute({ dst: parseIPv4Net("10.5.2.0/24") });
          const before = (dp as NetlinkDatapath).stats().dumps;
          const r = await table.update(new Map([[key(3), hostGwPeer(3)]]));
          assert.deepEqual([r.written, r.failures], [2, []]);
          assert.ok((dp as NetlinkDatapath).stats().dumps > before, "the update dumped");
        } finally {
          ac.abort();
          await it.return?.();
        }
      }, { eventBufferBytes: 64 * 1024 })
    ),
});

Deno.test({
  name: "NetlinkDatapath: an update at 2000 peers dumps nothing and writes only the peer's objects",
  ...opts,
  fn: () =>
    inNamespace((ns) =>
      withNetlinkHarness(ns, async ({ dp }) => {
        const ndp = dp as NetlinkDatapath;
        await dp.ensureDevice(VXLAN);
        const table = dp.entries({ ...SCOPE, network: parseIPv4Net("10.0.0.0/8"), except: [] });
        const peer = (i: number): PeerEntries => {
          const p = vxlanPeer(2);
          const subnet = (0x0a400000 + i * 256) >>> 0;
          const mac = `02:00:00:00:${((i >> 8) & 0xff).toString(16).padStart(2, "0")}:${
            (i & 0xff).toString(16).padStart(2, "0")
          }`;
          return {
            neighbours: [{ ...p.neighbours![0], ip: subnet, mac }],
            fdb: [{ ...p.fdb![0], mac }],
            routes: [{ ...p.routes![0], dst: { ip: subnet, prefixLen: 24 }, gateway: subnet }],
          };
        };
        const all = new Map<string, PeerEntries>();
        for (let i = 0; i < 2000; i++) all.set(`p${i}`, peer(i));
        const full = await table.sync(all);
        assert.deepEqual([full.written, full.failures], [6000, []]);
        const before = ndp.stats();
        const added = await table.update(new Map([["p2000", peer(2000)]]));
        const removed = await table.update(new Map([["p7", null]]));
        const after = ndp.stats();
        assert.deepEqual([added.written, removed.deleted], [3, 3]);
        assert.equal(after.dumps, before.dumps, "no dump");
        assert.equal(after.writes - before.writes, 6, "three objects in, three out");
      })
    ),
});

Deno.test({
  name:
    "NetlinkDatapath: the notifications a full sync reads between its writes reach every table's view",
  ...opts,
  fn: () =>
    inNamespace((ns) =>
      withNetlinkHarness(ns, async ({ dp, kernel }) => {
        await dp.ensureDevice(VXLAN);
        // two tables that both own flannel.1's fdb: b points MAC X at 192.0.2.50, then a
        // full sync of a (200 peers, chunks of 16) points it at 192.0.2.60
        const x = "02:00:00:00:aa:01";
        const b = dp.entries({ ...SCOPE, name: "b" });
        const bPeer: PeerEntries = {
          fdb: [{ device: "flannel.1", mac: x, dst: parseIPv4Net("192.0.2.50/32").ip }],
        };
        await b.sync(new Map([["x", bPeer]]));
        const a = dp.entries({ ...SCOPE, name: "a", network: parseIPv4Net("10.0.0.0/8") });
        const peers = new Map<string, PeerEntries>();
        for (let i = 0; i < 200; i++) {
          const p = vxlanPeer(2);
          const subnet = (0x0a400000 + i * 256) >>> 0;
          const mac = i === 0
            ? x
            : `02:00:00:00:${(i >> 8).toString(16).padStart(2, "0")}:${
              (i & 0xff).toString(16).padStart(2, "0")
            }`;
          peers.set(`p${i}`, {
            neighbours: [{ ...p.neighbours![0], ip: subnet, mac }],
            fdb: [{ ...p.fdb![0], mac, dst: parseIPv4Net("192.0.2.60/32").ip }],
            routes: [{ ...p.routes![0], dst: { ip: subnet, prefixLen: 24 }, gateway: subnet }],
          });
        }
        const full = await a.sync(peers);
        assert.deepEqual([full.written, full.failures], [600, []]);
        // b learnt from the echo of a's write that X moved, so asking again writes it back
        const again = await b.update(new Map([["x", bPeer]]));
        assert.deepEqual([again.written, again.failures], [1, []]);
        const fdb = (await kernel.snapshot()).fdb.filter((f) => f.startsWith(x));
        assert.deepEqual(fdb, [`${x} dev flannel.1 dst 192.0.2.50`]);
      }, { chunkSize: 16 })
    ),
});
