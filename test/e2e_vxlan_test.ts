/**
 * weft's vxlan backend end to end: real agents (one under Bun) and a real
 * etcd in a lab. The scenarios are shared with the host-gw test; see
 * test/lab/scenarios.ts.
 */
import { joinAndLeave, killAndRestart, repairByHand } from "./lab/scenarios.ts";

Deno.test("vxlan e2e: three hosts ping pairwise, a fourth joins, a removed lease leaves every peer", () =>
  joinAndLeave("vxlan"));

Deno.test("vxlan e2e: kill -9 and restart of agents (Deno, Bun) loses no ping and keeps the subnet", () =>
  killAndRestart("vxlan"));

Deno.test("vxlan e2e: deleted flannel.1, route, neighbour and fdb entry are restored (times: bench repair)", async () => {
  const times = await repairByHand("vxlan");
  console.log("repair times (ms):", JSON.stringify(times));
});
