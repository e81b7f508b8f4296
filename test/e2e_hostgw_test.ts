/**
 * weft's host-gw backend end to end: real agents (one under Bun) and a
 * real etcd in a lab. The scenarios are shared with the vxlan test; see
 * test/lab/scenarios.ts.
 */
import { joinAndLeave, killAndRestart, repairByHand } from "./lab/scenarios.ts";

Deno.test("host-gw e2e: three hosts ping pairwise, a fourth joins, a removed lease leaves every peer", () =>
  joinAndLeave("host-gw"));

Deno.test("host-gw e2e: kill -9 and restart of agents (Deno, Bun) loses no ping and keeps the subnet", () =>
  killAndRestart("host-gw"));

Deno.test("host-gw e2e: deleted peer routes are restored (times: bench repair)", async () => {
  const times = await repairByHand("host-gw");
  console.log("repair times (ms):", JSON.stringify(times));
});
