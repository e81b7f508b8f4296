/**
 * The `alloc` backend: lease only, no datapath. It acquires a subnet and
 * publishes the host's public IP exactly as flannel's alloc backend does
 * (`{"PublicIP":…,"PublicIPv6":null}`, no BackendType), and keeps the set of
 * peers it was last given so tools and tests can read it. Use it when
 * something else programs the network, or to test the control plane alone.
 *
 * Kernel state created: none.
 *
 * @module
 */

import { whenAborted } from "../core/abort.ts";
import type { Lease } from "../lease/types.ts";
import type { Backend, Network } from "./types.ts";

/** Options for {@link allocBackend}. */
export interface AllocBackendOptions {
  /** Called after every peer sync with the full peer set (tests, benchmarks). */
  onPeers?: (peers: readonly Lease[]) => void;
}

/**
 * Create the alloc backend.
 *
 * @example
 * ```ts
 * const backend = allocBackend({ onPeers: (p) => console.log(p.length, "peers") });
 * ```
 */
export function allocBackend(options: AllocBackendOptions = {}): Backend {
  return {
    type: "alloc",
    async register(ctx): Promise<Network> {
      const lease = await ctx.acquire({ publicIP: ctx.extIface.extAddr }, ctx.signal);
      return {
        lease,
        mtu: ctx.extIface.mtu,
        syncPeers(peers) {
          options.onPeers?.(peers);
          return Promise.resolve();
        },
        run: (signal) => whenAborted(signal),
      };
    },
  };
}
