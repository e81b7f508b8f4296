/**
 * The aws-vpc backend at cluster scale, against the EC2 fake through the
 * real SDK: `nodes` in-process aws-vpc backends (each its own instance in
 * the metadata fake, its own network interface, its own throttle gate, all
 * on one FakeClock) join one after another, learn of each other through
 * `updatePeers` (as the agent hands lease events), idle, and see one lease
 * go. Counted at the fake: EC2 calls per join (the joining node's and the
 * others'), per idle minute per node, and the DeleteRoute calls one gone
 * lease costs the whole cluster; timed: lease acquired → its route in the
 * table.
 *
 * What is simulated: time (the listing schedule runs on the FakeClock, so
 * ten idle minutes take seconds) and the store (each node's `acquire` hands
 * out its subnet). What is real: the SDK, its HTTP, the fake's XML, every
 * call of discovery, listing and writing.
 *
 * @module
 */

import { percentile, roundTo } from "./stats.ts";
import { awsVpcBackend } from "../../backends/routed/aws_vpc.ts";
import { ThrottleGate } from "../../backends/cloud/throttle.ts";
import type { RoutedNetwork } from "../../backends/routed/engine.ts";
import type { Lease } from "../../lease/types.ts";
import { addInstance, hostContext } from "../../testing/aws_hosts.ts";
import { makeFakeAwsHarness } from "../../testing/ec2_world.ts";
import { FakeClock } from "../../testing/fake_clock.ts";
import { waitFor } from "../../testing/wait.ts";

/** What {@link benchAwsVpc} measured. */
export interface AwsVpcBenchResult {
  readonly nodes: number;
  /** EC2 calls the joining node made, per join: mean and max. */
  readonly joinCallsMean: number;
  readonly joinCallsMax: number;
  /** EC2 calls all other nodes made because of a join, in total over all joins. */
  readonly othersCallsPerJoinTotal: number;
  /** Lease acquired → route in the table, ms. */
  readonly leaseToRouteP50Ms: number;
  readonly leaseToRouteP99Ms: number;
  readonly idleMinutes: number;
  /** DescribeRouteTables (and any other call) per node per idle minute. */
  readonly idleCallsPerNodeMinute: number;
  /** Writes during the idle time (should be 0). */
  readonly idleWrites: number;
  /** DeleteRoute calls the cluster made for one gone lease, and when it was gone (simulated s). */
  readonly removalDeletes: number;
  readonly removalSeconds: number;
}

/**
 * Run the simulation.
 *
 * @param options Cluster size and idle time.
 * @returns The figures.
 */
export async function benchAwsVpc(
  options: { nodes?: number; idleMinutes?: number } = {},
): Promise<AwsVpcBenchResult> {
  const nodes = options.nodes ?? 200;
  const idleMinutes = options.idleMinutes ?? 10;
  const h = await makeFakeAwsHarness("eu-west-3", { maxAttempts: 1 });
  const clock = new FakeClock();
  const stop = new AbortController();
  const running: Promise<void>[] = [];
  try {
    const instances = [];
    for (let i = 0; i < nodes; i++) instances.push(await addInstance(h, i));
    h.ec2.resetCalls();

    const joined: { network: RoutedNetwork; lease: Lease }[] = [];
    const joinCalls: number[] = [];
    const latencies: number[] = [];
    let othersCalls = 0;
    for (let i = 0; i < nodes; i++) {
      const ctx = hostContext({
        backend: { Type: "aws-vpc" },
        index: i,
        subnet: subnetOf(i),
        clock,
      });
      let leased = 0;
      const acquire = ctx.acquire;
      const before = h.ec2.calls();
      const network = await awsVpcBackend({
        aws: instances[i].aws,
        gate: new ThrottleGate({ clock }),
      }).register({
        ...ctx,
        acquire: async (attrs, signal) => {
          const lease = await acquire(attrs, signal);
          leased = performance.now();
          return lease;
        },
      }) as RoutedNetwork;
      latencies.push(performance.now() - leased);
      joinCalls.push(h.ec2.calls() - before);
      const route = h.ec2.routeTable(h.world.table)!.routes.find((r) =>
        r.destination === subnetOf(i)
      );
      if (route?.networkInterfaceId !== instances[i].eni) {
        throw new Error(`node ${i}'s route is not in the table after register`);
      }
      const lease = network.lease;
      const othersBefore = h.ec2.calls();
      for (const other of joined) await other.network.updatePeers!([{ type: "added", lease }]);
      await network.syncPeers(joined.map((j) => j.lease));
      othersCalls += h.ec2.calls() - othersBefore;
      joined.push({ network, lease });
    }

    // idle: every node runs its periodic sync on the shared fake clock
    for (const j of joined) running.push(j.network.run(stop.signal));
    h.ec2.resetCalls();
    const idleMs = idleMinutes * 60_000;
    for (let t = 0; t < idleMs; t += 5_000) await clock.advance(5_000);
    const idleCalls = h.ec2.calls();
    const idleWrites = h.ec2.calls("CreateRoute") + h.ec2.calls("ReplaceRoute") +
      h.ec2.calls("DeleteRoute");

    // one lease goes: every node hears of it; whoever lists first removes its route
    const gone = joined[nodes - 1];
    joined.pop();
    for (const j of joined) {
      await j.network.updatePeers!([{ type: "removed", lease: gone.lease }]);
    }
    h.ec2.resetCalls();
    const goneSubnet = subnetOf(nodes - 1);
    // small steps, each until the EC2 fake is quiet: no two nodes' calls overlap
    // more in simulated time than they would in real time
    const quiet = async () => {
      let last = -1;
      await waitFor(
        "the EC2 fake is quiet (no new call for 15 ms)",
        () => {
          const n = h.ec2.calls();
          if (n === last) return null;
          last = n;
          return `${n} calls so far`;
        },
        60_000,
        15,
      );
    };
    let removalMs = -1;
    for (let t = 0; t < 5 * 60_000 && removalMs < 0; t += 100) {
      await clock.advance(100);
      await quiet();
      const present = h.ec2.routeTable(h.world.table)!.routes.some((r) =>
        r.destination === goneSubnet
      );
      if (!present) removalMs = t + 100;
    }
    await quiet();
    return {
      nodes,
      joinCallsMean: roundTo(joinCalls.reduce((a, b) => a + b, 0) / nodes, 2),
      joinCallsMax: Math.max(...joinCalls),
      othersCallsPerJoinTotal: othersCalls,
      leaseToRouteP50Ms: roundTo(percentile(latencies, 0.5), 1),
      leaseToRouteP99Ms: roundTo(percentile(latencies, 0.99), 1),
      idleMinutes,
      idleCallsPerNodeMinute: roundTo(idleCalls / nodes / idleMinutes, 3),
      idleWrites,
      removalDeletes: h.ec2.calls("DeleteRoute"),
      removalSeconds: removalMs / 1000,
    };
  } finally {
    stop.abort();
    await Promise.all(running);
    await h.close();
  }
}

/** Node i's subnet: 10.5.0.0/16 in /24s from 10.5.1.0. */
function subnetOf(i: number): string {
  return `10.5.${i + 1}.0/24`;
}

if (import.meta.main) console.log(await benchAwsVpc({ nodes: 20, idleMinutes: 4 }));
