/**
 * Runs the Datapath contract (IPv4 and IPv6 cases) against the netlink datapath under Bun (or
 * whatever runtime runs this file), one fresh namespace per case; started
 * by `datapath/netlink/datapath_test.ts` as `bun testing/netlink_contract_bun.ts`.
 * Prints one JSON line `{ runtime, passed, failed: [{ name, error }] }`;
 * exits 1 on a failure.
 *
 * @module
 */

import process from "node:process";
import { datapathContract } from "./datapath_contract.ts";
import { datapathContractIPv6 } from "./datapath_contract_ipv6.ts";
import { withNetlinkHarness } from "./netlink_poke.ts";
import { createNetns, deleteNetns } from "./netns.ts";
import { runtimeName } from "../core/runtime.ts";

const prefix = process.argv[2] ?? "wdp";
const failed: { name: string; error: string }[] = [];
let passed = 0;
for (const c of [...datapathContract, ...datapathContractIPv6]) {
  const ns = createNetns(prefix, "b");
  try {
    await withNetlinkHarness(ns, c.fn);
    passed++;
  } catch (e) {
    failed.push({ name: c.name, error: String((e as Error)?.stack ?? e) });
  } finally {
    deleteNetns(ns);
  }
}
console.log(JSON.stringify({ runtime: runtimeName, passed, failed }));
process.exit(failed.length ? 1 : 0);
