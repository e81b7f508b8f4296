/**
 * Property: after any sequence of peer additions, changes, removals and
 * outside deletions repaired by an update, the kernel state the netlink
 * datapath maintained incrementally (updates only, no dumps) is exactly the
 * desired state, and a full dump-and-diff by a second, fresh datapath finds
 * nothing to write. Runs against a real network namespace.
 *
 * @module
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { parseIPv4, parseIPv4Net } from "../../core/ip.ts";
import { SCOPE, VXLAN } from "../../testing/datapath_contract.ts";
import { netlinkPoke } from "../../testing/netlink_poke.ts";
import { createNetns, deleteNetns, sweepNetns } from "../../testing/netns.ts";
import type { PeerEntries } from "../types.ts";
import { openNetlinkClient } from "./client.ts";
import { type NetlinkDatapath, openNetlinkDatapath } from "./datapath.ts";

const PREFIX = "wdi";
sweepNetns(PREFIX);

const PEERS = 24;
const hex = (n: number) => n.toString(16).padStart(2, "0");

type Peer = { readonly kind: "vxlan" | "direct"; readonly version: number; readonly host: number };
type Command =
  | { readonly op: "set"; readonly peers: readonly [number, Peer][] }
  | { readonly op: "remove"; readonly peers: readonly number[] }
  | { readonly op: "tamper"; readonly peer: number; readonly what: "route" | "neighbour" | "fdb" };

const peerArb: fc.Arbitrary<Peer> = fc.record({
  kind: fc.constantFrom("vxlan" as const, "direct" as const),
  version: fc.integer({ min: 0, max: 255 }),
  host: fc.integer({ min: 2, max: 9 }),
});
const indexArb = fc.integer({ min: 2, max: PEERS + 1 });
const commandArb: fc.Arbitrary<Command> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      op: fc.constant("set" as const),
      peers: fc.array(fc.tuple(indexArb, peerArb), { minLength: 1, maxLength: 3 }),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      op: fc.constant("remove" as const),
      peers: fc.array(indexArb, { minLength: 1, maxLength: 3 }),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant("tamper" as const),
      peer: indexArb,
      what: fc.constantFrom("route" as const, "neighbour" as const, "fdb" as const),
    }),
  },
);

const key = (i: number) => `10.5.${i}.0/24`;
const mac = (i: number, p: Peer) => `02:00:00:00:${hex(i)}:${hex(p.version)}`;

function entries(i: number, p: Peer): PeerEntries {
  const subnet = parseIPv4(`10.5.${i}.0`);
  const publicIP = parseIPv4(`192.0.2.${p.host}`);
  if (p.kind === "direct") {
    return { routes: [{ dst: { ip: subnet, prefixLen: 24 }, gateway: publicIP, device: "ext0" }] };
  }
  return {
    neighbours: [{ device: "flannel.1", ip: subnet, mac: mac(i, p) }],
    fdb: [{ device: "flannel.1", mac: mac(i, p), dst: publicIP }],
    routes: [{
      dst: { ip: subnet, prefixLen: 24 },
      gateway: subnet,
      device: "flannel.1",
      onlink: true,
    }],
  };
}

/** The kernel state a peer set must give, as the snapshot prints it (an oracle apart from plan.ts). */
function expected(model: ReadonlyMap<number, Peer>) {
  const routes: string[] = [], neighbours: string[] = [], fdb: string[] = [];
  for (const [i, p] of model) {
    if (p.kind === "direct") {
      routes.push(`10.5.${i}.0/24 via 192.0.2.${p.host} dev ext0`);
      continue;
    }
    routes.push(`10.5.${i}.0/24 via 10.5.${i}.0 dev flannel.1 onlink`);
    neighbours.push(`10.5.${i}.0 lladdr ${mac(i, p)} dev flannel.1`);
    fdb.push(`${mac(i, p)} dev flannel.1 dst 192.0.2.${p.host}`);
  }
  return { routes: routes.sort(), neighbours: neighbours.sort(), fdb: fdb.sort() };
}

Deno.test({
  name: "incremental updates leave the kernel exactly as a full dump-and-diff would (≥ 1000 steps)",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const ns = createNetns(PREFIX, "p");
    const client = await openNetlinkClient({ netns: ns });
    let steps = 0;
    try {
      const ext = await client.createBridge({ name: "ext0", mtu: 1500, up: true });
      await client.addAddresses([{ index: ext.index, ip: parseIPv4("192.0.2.1"), prefixLen: 24 }]);
      const kernel = netlinkPoke(client);
      await fc.assert(
        fc.asyncProperty(fc.array(commandArb, { minLength: 60, maxLength: 140 }), async (cmds) => {
          const dp = await openNetlinkDatapath({ netns: ns });
          try {
            await dp.ensureDevice(VXLAN);
            const table = dp.entries(SCOPE);
            await table.sync(new Map()); // start empty
            const dumps = dp.stats().dumps;
            const model = new Map<number, Peer>();
            for (const c of cmds) {
              const changes = new Map<string, PeerEntries | null>();
              if (c.op === "set") {
                for (const [i, p] of c.peers) {
                  model.set(i, p);
                  changes.set(key(i), entries(i, p));
                }
              } else if (c.op === "remove") {
                for (const i of c.peers) {
                  model.delete(i);
                  changes.set(key(i), null);
                }
              } else {
                const p = model.get(c.peer);
                if (!p) continue;
                const e = entries(c.peer, p);
                if (c.what === "route") await kernel.deleteRoute({ dst: e.routes![0].dst });
                else if (c.what === "neighbour" && e.neighbours) {
                  await kernel.deleteNeighbour(e.neighbours[0]);
                } else if (c.what === "fdb" && e.fdb) await kernel.deleteFdb(e.fdb[0]);
                changes.set(key(c.peer), e); // the repair: the same entries again
              }
              const r = await table.update(changes);
              steps++;
              assert.deepEqual(r.failures, []);
              const s = await kernel.snapshot();
              assert.deepEqual(
                { routes: s.routes, neighbours: s.neighbours, fdb: s.fdb },
                expected(model),
              );
            }
            assert.equal(dp.stats().dumps, dumps, "updates never dumped");
            // A full dump-and-diff from a fresh datapath finds nothing to do.
            const fresh = await openNetlinkDatapath({ netns: ns });
            try {
              const all = new Map([...model].map(([i, p]) => [key(i), entries(i, p)]));
              assert.deepEqual(await fresh.entries(SCOPE).sync(all), {
                written: 0,
                deleted: 0,
                failures: [],
              });
            } finally {
              fresh.close();
            }
          } finally {
            (dp as NetlinkDatapath).close();
          }
        }),
        { numRuns: 20 },
      );
      assert.ok(steps >= 1000, `only ${steps} steps ran`);
      console.log(`incremental property: ${steps} steps`);
    } finally {
      client.close();
      deleteNetns(ns);
    }
  },
});

Deno.test("the incremental property's oracle agrees with the contract's peer shapes", () => {
  const e = entries(3, { kind: "vxlan", version: 1, host: 4 });
  assert.equal(e.routes![0].dst.ip, parseIPv4Net("10.5.3.0/24").ip);
  assert.deepEqual(expected(new Map([[3, { kind: "vxlan", version: 1, host: 4 }]])).fdb, [
    "02:00:00:00:03:01 dev flannel.1 dst 192.0.2.4",
  ]);
});
