/**
 * Property, at the backend level: the vxlan backend over the netlink
 * datapath, driven only by lease events (`updatePeers`) and its own repair
 * loop (`run`), keeps the kernel exactly at what a full dump-and-diff from
 * scratch would produce, whatever happens in between:
 *
 * - peers added, changed (new VtepMAC or public IP), switched to a backend
 *   the vxlan backend skips and back, and removed, a few per batch;
 * - someone else deleting one of a peer's route, neighbour or fdb entry
 *   (repaired from the kernel's change notification);
 * - an overrun: a burst of unrelated kernel changes overflows the
 *   datapath's event socket (a small receive buffer here), and a peer's
 *   route deleted during the burst is never notified — only the full sync
 *   that lost events trigger can find it.
 *
 * Runs in a real network namespace; ≥ 1000 steps.
 *
 * @module
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { formatIPv4, parseIPv4 } from "../../core/ip.ts";
import { nullLogger } from "../../core/log.ts";
import { Registry } from "../../core/metrics.ts";
import { systemClock } from "../../core/clock.ts";
import { parseNetworkConfig } from "../../lease/config.ts";
import type { Lease } from "../../lease/types.ts";
import { openNetlinkClient } from "../../datapath/netlink/client.ts";
import { type NetlinkDatapath, openNetlinkDatapath } from "../../datapath/netlink/datapath.ts";
import type { Route } from "../../datapath/netlink/kernel.ts";
import { netlinkPoke } from "../../testing/netlink_poke.ts";
import { createNetns, deleteNetns, sweepNetns } from "../../testing/netns.ts";
import { waitFor } from "../../testing/wait.ts";
import type { PeerChange } from "../types.ts";
import { vxlanBackend } from "./vxlan.ts";

const PREFIX = "wri";
sweepNetns(PREFIX);

const PEERS = 24;
const hex = (n: number) => n.toString(16).padStart(2, "0");

/** A peer lease: vxlan with a VtepMAC version and a host, or a type vxlan skips. */
type Peer = {
  readonly kind: "vxlan" | "host-gw";
  readonly version: number;
  readonly host: number;
};
type Command =
  | { readonly op: "set"; readonly peers: readonly [number, Peer][] }
  | { readonly op: "remove"; readonly peers: readonly number[] }
  | { readonly op: "tamper"; readonly peer: number; readonly what: "route" | "neighbour" | "fdb" }
  | { readonly op: "overrun"; readonly peer: number };

const peerArb: fc.Arbitrary<Peer> = fc.record({
  kind: fc.constantFrom("vxlan" as const, "vxlan" as const, "host-gw" as const),
  version: fc.integer({ min: 0, max: 255 }),
  host: fc.integer({ min: 2, max: 9 }),
});
const indexArb = fc.integer({ min: 2, max: PEERS + 1 });
const commandArb: fc.Arbitrary<Command> = fc.oneof(
  {
    weight: 10,
    arbitrary: fc.record({
      op: fc.constant("set" as const),
      peers: fc.array(fc.tuple(indexArb, peerArb), { minLength: 1, maxLength: 3 }),
    }),
  },
  {
    weight: 6,
    arbitrary: fc.record({
      op: fc.constant("remove" as const),
      peers: fc.array(indexArb, { minLength: 1, maxLength: 3 }),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      op: fc.constant("tamper" as const),
      peer: indexArb,
      what: fc.constantFrom("route" as const, "neighbour" as const, "fdb" as const),
    }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("overrun" as const), peer: indexArb }) },
);

const OWN = parseIPv4("10.5.1.0");
const mac = (i: number, p: Peer) => `02:00:00:00:${hex(i)}:${hex(p.version)}`;

function lease(i: number, p: Peer): Lease {
  return {
    subnet: { ip: parseIPv4(`10.5.${i}.0`), prefixLen: 24 },
    attrs: {
      publicIP: `192.0.2.${p.host}`,
      backendType: p.kind,
      ...(p.kind === "vxlan" ? { backendData: { VNI: 1, VtepMAC: mac(i, p) } } : {}),
    },
    expiration: null,
  };
}

/** The kernel state a peer set must give, as the snapshot prints it (an oracle apart from the backend). */
function expected(model: ReadonlyMap<number, Peer>) {
  const routes: string[] = [], neighbours: string[] = [], fdb: string[] = [];
  for (const [i, p] of model) {
    if (p.kind !== "vxlan") continue;
    routes.push(`10.5.${i}.0/24 via 10.5.${i}.0 dev flannel.1 onlink`);
    neighbours.push(`10.5.${i}.0 lladdr ${mac(i, p)} dev flannel.1`);
    fdb.push(`${mac(i, p)} dev flannel.1 dst 192.0.2.${p.host}`);
  }
  return { routes: routes.sort(), neighbours: neighbours.sort(), fdb: fdb.sort() };
}

/** Routes outside the network, written and deleted by "someone else" to flood the event socket. */
const BURST: Route[] = Array.from({ length: 600 }, (_, k) => ({
  dst: { ip: (parseIPv4("172.16.0.0") + k * 256) >>> 0, prefixLen: 24 },
  gateway: parseIPv4("192.0.2.254"),
  index: 0, // set once ext0 exists
}));

Deno.test({
  name:
    "the vxlan backend's lease events and repairs leave the kernel as a full dump-and-diff would, across outside deletions and lost events (≥ 1000 steps)",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const ns = createNetns(PREFIX, "p");
    const client = await openNetlinkClient({ netns: ns });
    let steps = 0;
    let overruns = 0;
    try {
      const ext = await client.createBridge({ name: "ext0", mtu: 1500, up: true });
      await client.addAddresses([{ index: ext.index, ip: parseIPv4("192.0.2.1"), prefixLen: 24 }]);
      const burst = BURST.map((r) => ({ ...r, index: ext.index }));
      const kernel = netlinkPoke(client);
      const now = async () => {
        const s = await kernel.snapshot();
        return { routes: s.routes, neighbours: s.neighbours, fdb: s.fdb };
      };
      await fc.assert(
        fc.asyncProperty(fc.array(commandArb, { minLength: 50, maxLength: 90 }), async (cmds) => {
          // a small event buffer, so a burst of 1200 notifications overflows it; small
          // write slices, so the backend's own echoes never do
          const dp = await openNetlinkDatapath({
            netns: ns,
            eventBufferBytes: 16 * 1024,
            chunkSize: 8,
            pollMs: 5,
          });
          const repaired: string[] = [];
          const network = await vxlanBackend({
            datapath: dp,
            repairDebounceMs: 1,
            resyncIntervalMs: 0,
            onRepaired: (reason) => repaired.push(reason),
          }).register({
            config: parseNetworkConfig(
              '{"Network":"10.5.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan"}}',
            ),
            extIface: {
              name: "ext0",
              index: ext.index,
              mtu: 1500,
              ifaceAddr: "192.0.2.1",
              extAddr: "192.0.2.1",
            },
            acquire: (attrs) =>
              Promise.resolve({ subnet: { ip: OWN, prefixLen: 24 }, attrs, expiration: null }),
            logger: nullLogger,
            metrics: new Registry(),
            clock: systemClock,
            signal: new AbortController().signal,
          });
          const stop = new AbortController();
          const running = network.run(stop.signal);
          try {
            await network.syncPeers([]); // whatever the last run left goes
            const model = new Map<number, Peer>();
            const converged = (what: string) =>
              waitFor(
                what,
                async () => {
                  const got = await now();
                  const want = expected(model);
                  return JSON.stringify(got) === JSON.stringify(want)
                    ? null
                    : `kernel ${JSON.stringify(got)}, want ${JSON.stringify(want)}`;
                },
                10_000,
                5,
              );
            for (const c of cmds) {
              const present = (i: number) =>
                model.get(i)?.kind === "vxlan" ? model.get(i) : undefined;
              if (c.op === "set" || c.op === "remove") {
                const changes: PeerChange[] = [];
                if (c.op === "set") {
                  for (const [i, p] of c.peers) {
                    model.set(i, p);
                    changes.push({ type: "added", lease: lease(i, p) });
                  }
                } else {
                  for (const i of c.peers) {
                    const p = model.get(i);
                    model.delete(i);
                    if (p) changes.push({ type: "removed", lease: lease(i, p) });
                  }
                }
                await network.updatePeers!(changes);
                assert.deepEqual(await now(), expected(model), `after ${JSON.stringify(c)}`);
              } else if (c.op === "tamper") {
                const p = present(c.peer);
                if (!p) continue;
                const subnet = parseIPv4(`10.5.${c.peer}.0`);
                if (c.what === "route") {
                  await kernel.deleteRoute({ dst: { ip: subnet, prefixLen: 24 } });
                } else if (c.what === "neighbour") {
                  await kernel.deleteNeighbour({ device: "flannel.1", ip: subnet });
                } else {
                  await kernel.deleteFdb({
                    device: "flannel.1",
                    mac: mac(c.peer, p),
                    dst: parseIPv4(`192.0.2.${p.host}`),
                  });
                }
                await converged(`repair of a deleted ${c.what} of 10.5.${c.peer}.0/24`);
              } else {
                // flood the event socket, and delete a route while it is full: that
                // deletion is never notified, only the full sync after the overrun sees it
                const before = repaired.length;
                await client.settle("replaceRoutes", burst);
                const p = present(c.peer);
                if (p) {
                  await kernel.deleteRoute({
                    dst: { ip: parseIPv4(`10.5.${c.peer}.0`), prefixLen: 24 },
                  });
                }
                await client.settle("deleteRoutes", burst);
                await converged(
                  `repair after lost events (${p ? "a route deleted unseen" : "nothing lost"})`,
                );
                await waitFor(
                  "a repair for the lost events",
                  () =>
                    repaired.slice(before).some((r) => r.includes("lost"))
                      ? null
                      : `repairs: ${repaired.slice(before)}`,
                  10_000,
                  5,
                );
                overruns++;
              }
              steps++;
            }
            // a fresh datapath's full dump-and-diff finds nothing to do
            const fresh = await openNetlinkDatapath({ netns: ns });
            try {
              const entries = new Map(
                [...model].filter(([, p]) => p.kind === "vxlan").map(([i, p]) => {
                  const subnet = parseIPv4(`10.5.${i}.0`);
                  return [`10.5.${i}.0/24`, {
                    neighbours: [{ device: "flannel.1", ip: subnet, mac: mac(i, p) }],
                    fdb: [{
                      device: "flannel.1",
                      mac: mac(i, p),
                      dst: parseIPv4(`192.0.2.${p.host}`),
                    }],
                    routes: [{
                      dst: { ip: subnet, prefixLen: 24 },
                      gateway: subnet,
                      device: "flannel.1",
                      onlink: true,
                    }],
                  }];
                }),
              );
              const table = fresh.entries({
                name: "vxlan",
                network: { ip: parseIPv4("10.5.0.0"), prefixLen: 16 },
                except: [{ ip: OWN, prefixLen: 24 }],
                routeDevices: ["flannel.1"],
                gatewayDevices: ["ext0"],
                neighbourDevices: ["flannel.1"],
              });
              assert.deepEqual(await table.sync(entries), { written: 0, deleted: 0, failures: [] });
            } finally {
              fresh.close();
            }
          } finally {
            stop.abort();
            await running;
            (dp as NetlinkDatapath).close();
          }
        }),
        { numRuns: 24, endOnFailure: true }, // no shrinking: each failing step waits for a repair
      );
      assert.ok(steps >= 1000, `only ${steps} steps ran`);
      assert.ok(overruns > 0, "no overrun was exercised");
      console.log(`backend incremental property: ${steps} steps, ${overruns} overruns`);
    } finally {
      client.close();
      deleteNetns(ns);
    }
  },
});

Deno.test("the backend property's oracle agrees with the vxlan entries of a lease", () => {
  const p: Peer = { kind: "vxlan", version: 1, host: 4 };
  assert.equal(lease(3, p).attrs.publicIP, "192.0.2.4");
  assert.deepEqual(expected(new Map([[3, p]])), {
    routes: ["10.5.3.0/24 via 10.5.3.0 dev flannel.1 onlink"],
    neighbours: ["10.5.3.0 lladdr 02:00:00:00:03:01 dev flannel.1"],
    fdb: ["02:00:00:00:03:01 dev flannel.1 dst 192.0.2.4"],
  });
  assert.deepEqual(expected(new Map([[3, { ...p, kind: "host-gw" }]])).routes, []);
  assert.equal(formatIPv4(OWN), "10.5.1.0");
});
