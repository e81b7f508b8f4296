/**
 * `--ip-blackhole-route` (flannel's, for setups without the pod bridge such
 * as Canal): a `blackhole <own subnet>` route in the main table, so traffic
 * for an address of this host's subnet that no pod holds is dropped here
 * instead of leaving by the default route. As flannel's
 * `ip.AddBlackholeV4Route`: nothing is written when a blackhole route for
 * the subnet exists; otherwise it is added without replacing anything — where
 * another route for the same prefix exists (the pod bridge's connected
 * route), the kernel refuses (EEXIST) and the subnet is routed already. The
 * route is never removed (flannel's neither).
 *
 * @module
 */

import { equalIPv4Net, type IPv4Net } from "../core/ip.ts";
import type { NetlinkClient } from "./netlink/client.ts";
import { NetlinkError } from "./netlink/error.ts";
import { RT_SCOPE_UNIVERSE, RT_TABLE_MAIN, RTN_BLACKHOLE } from "./netlink/kernel.ts";

/**
 * What {@link ensureBlackholeRoute} found: `added`, `present` (a blackhole
 * route was there), or `routed` (another route for the prefix exists; the
 * kernel refused the blackhole next to it).
 */
export type BlackholeResult = "added" | "present" | "routed";

/**
 * Make sure a blackhole route for `subnet` exists, unless the subnet is
 * routed otherwise.
 *
 * @param client The rtnetlink client of this namespace.
 * @param subnet This host's subnet.
 * @returns What was found or done.
 * @throws {NetlinkError} When the kernel refuses for another reason.
 * @example
 * ```ts
 * await ensureBlackholeRoute(await openNetlinkClient(), parseIPv4Net("10.5.1.0/24")); // "added"
 * ```
 */
export async function ensureBlackholeRoute(
  client: Pick<NetlinkClient, "listRoutes" | "addRoutes">,
  subnet: IPv4Net,
): Promise<BlackholeResult> {
  const routes = await client.listRoutes({ table: RT_TABLE_MAIN });
  if (routes.some((r) => r.type === RTN_BLACKHOLE && equalIPv4Net(r.dst, subnet))) {
    return "present";
  }
  try {
    await client.addRoutes([{
      dst: subnet,
      type: RTN_BLACKHOLE,
      scope: RT_SCOPE_UNIVERSE,
      table: RT_TABLE_MAIN,
    }]);
    return "added";
  } catch (e) {
    if (e instanceof NetlinkError && e.code === "EEXIST") return "routed";
    throw e;
  }
}
