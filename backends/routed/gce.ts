/**
 * The gce backend: weft's route mode on Google Compute Engine, flannel's
 * `gce` backend (deleted from flannel in 2022) done right. No encapsulation
 * and no per-peer kernel state: each host's pod subnet is a VPC route whose
 * next hop is that VM, and the VPC carries pod traffic between hosts.
 *
 * Config: flannel's, `{"Type":"gce"}`, plus weft's key `RouteResyncSeconds`
 * (how often each host lists the network's routes; default 120, jittered
 * ±25 %):
 * ```json
 * {"Network":"10.244.0.0/16","Backend":{"Type":"gce","RouteResyncSeconds":120}}
 * ```
 *
 * State it creates, and why:
 * - In GCE, in the network of the VM's first interface (in its project, or
 *   the host project of a shared VPC): a route named as flannel named them,
 *   `flannel-10-244-1-0-24`, `destRange` = the lease's subnet,
 *   `nextHopInstance` = this VM (its `instance/name` from the metadata
 *   server, not the hostname), priority 1000, description `weft pod-subnet
 *   route`. A route of that destination with another next hop is replaced
 *   (delete + insert: GCE cannot change a route); owned routes (weft's
 *   description, or flannel's name form with an instance next hop) inside
 *   `Network` whose lease is gone are deleted. Inserts and deletes are waited
 *   for until their operation is DONE. The VM needs `canIpForward`.
 * - In the kernel: nothing. Pod MTU = the external interface's MTU.
 *
 * The lease is flannel's gce lease: `{"PublicIP":"…","PublicIPv6":null}`
 * with no `BackendType` and no `BackendData` (flannel's gce backend
 * published only the public IP). IPv4 only: `EnableIPv6` is refused.
 *
 * The loop is the shared cloud target (`backends/cloud/target.ts`) on the
 * routed engine, as for aws-vpc (`registerCloudRouted`): joining costs this
 * host 6 metadata reads, a one-route list (discovery), a list, an insert and
 * one or more operation waits, and the others nothing; idle, one list per
 * `RouteResyncSeconds`. Calls wait at the process-wide throttle gate
 * (403 `rateLimitExceeded`, 429), and quota, permission and throttling
 * states show in /readyz and /metrics. The gce module and the Compute client
 * load only here (`backends/cloud/load.ts`).
 *
 * @module
 */

import type { Backend } from "../types.ts";
import { type CloudRoutedOptions, registerCloudRouted } from "./cloud.ts";

/** Options for {@link gceBackend}: provider settings (`gce`), gate, timings. */
export type GceBackendOptions = CloudRoutedOptions;

/**
 * The gce backend.
 *
 * @param options Provider settings (tests: metadata client, env), gate, timings.
 * @returns The backend, type `gce`.
 * @example
 * ```ts
 * const backend = gceBackend();
 * const network = await backend.register(ctx); // discovers, leases, writes its route
 * await network.syncPeers(peerLeases);
 * ```
 */
export function gceBackend(options: GceBackendOptions = {}): Backend {
  return { type: "gce", register: (ctx) => registerCloudRouted("gce", options, ctx) };
}
