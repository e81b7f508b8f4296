/**
 * The aws-vpc backend: weft's route mode on EC2, flannel's `aws-vpc` done
 * right. No encapsulation and no per-peer kernel state: each host's pod
 * subnet is a route in the VPC's route tables whose next hop is that host's
 * network interface, and the VPC router carries pod traffic between hosts
 * (a host reaches a peer's pods through its default route, the VPC router).
 *
 * State it creates, and why:
 * - In EC2, per route table (`Backend.RouteTableID`, a string or a list;
 *   else the table of this host's subnet, else the VPC's main table): a
 *   route `<lease subnet> → <this host's ENI>` (`NetworkInterfaceId`,
 *   never the instance id: multi-interface instances cannot be a route
 *   target); SourceDestCheck turned off on that ENI, so the VPC delivers
 *   packets addressed to pods. Stale routes inside `Network` (blackholes,
 *   leases gone) are removed; nothing outside `Network` is touched.
 * - In the kernel: nothing. Pod MTU = the external interface's MTU.
 *
 * The lease is flannel's aws-vpc lease: `{"PublicIP":"…","PublicIPv6":null}`
 * with no `BackendType` and no `BackendData` (flannel's backend published
 * only the public IP; peers need nothing else, since each host writes its
 * own route). With `EnableIPv6` and an `IPv6Network`, the lease's IPv6
 * subnet gets a route too (`DestinationIpv6CidrBlock`, same ENI).
 *
 * The reconcile loop is the cloud target of `backends/cloud/target.ts` on
 * the routed-peer engine: joining costs this host 2–3 discovery calls plus
 * one list and one create per table, and the other hosts nothing; idle,
 * each host lists each table once per `Backend.RouteResyncSeconds` (weft's
 * key, default 120, jittered ±25 %). Every EC2 call waits at one
 * process-wide throttle gate. The AWS module and SDK load only here, on
 * register (`backends/cloud/load.ts`).
 *
 * @module
 */

import type { Backend } from "../types.ts";
import { type CloudRoutedNetwork, type CloudRoutedOptions, registerCloudRouted } from "./cloud.ts";

/** Options of {@link awsVpcBackend}. */
export type AwsVpcBackendOptions = CloudRoutedOptions;

/** The aws-vpc Network: what discovery found (`self`) besides the routed network. */
export type AwsVpcNetwork = CloudRoutedNetwork;

/**
 * The aws-vpc backend.
 *
 * @param options Provider settings (tests), gate, timings.
 * @returns The backend, type `aws-vpc`.
 * @example
 * ```ts
 * const backend = awsVpcBackend();
 * const network = await backend.register(ctx); // discovers, leases, writes its route
 * await network.syncPeers(peerLeases);
 * ```
 */
export function awsVpcBackend(options: AwsVpcBackendOptions = {}): Backend {
  return { type: "aws-vpc", register: (ctx) => registerCloudRouted("aws-vpc", options, ctx) };
}
