/**
 * weft's test helpers for third parties (`weft/testing`): the contract
 * suite every route provider passes — aws-vpc, gce, and yours. Run it with
 * `deno test` against your provider over its real API or an emulator:
 *
 * @example
 * ```ts
 * import { routeProviderContract } from "/opt/weft/testing/mod.ts";
 * import { createMyProvider } from "./my_module.ts";
 *
 * routeProviderContract("my-router", async () => ({
 *   provider: createMyProvider({ url: "http://127.0.0.1:8087" }, "10.98.0.2"),
 *   table: "main",
 *   targets: ["10.98.0.2", "10.98.0.3"],
 *   foreignDestinations: ["0.0.0.0/0"],
 *   faults: {},
 *   missing: { limit: "…", throttle: "…", denyWrites: "…", removeTarget: "…" },
 *   close: async () => {},
 * }));
 * ```
 *
 * @module
 */

export {
  type ProviderFaults,
  type ProviderGap,
  type ProviderHarness,
  routeProviderContract,
  runRouteProviderContract,
} from "./route_provider_contract.ts";
export { IGNORED_MARK, stepUnless, testUnless } from "./ignorable.ts";
