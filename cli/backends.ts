/**
 * The backends the command line offers, by `Backend.Type`. Each backend's
 * module, and the rtnetlink datapath the kernel backends share, load only
 * when the config picks them; `close()` releases the datapath if one was
 * opened.
 *
 * @module
 */

import { allocBackend } from "../backends/alloc.ts";
import type { Backend } from "../backends/types.ts";
import type { Datapath } from "../datapath/types.ts";

/** Backend factories and the datapath they share. */
export interface BackendTable {
  /** Factories by type name: `alloc`, `vxlan`, `host-gw`, `udp`, `wireguard`, `extension`, `aws-vpc`, `gce`, `module`. */
  readonly backends: Readonly<Record<string, () => Promise<Backend>>>;
  /** Close the datapath, if a backend opened it. */
  close(): Promise<void>;
}

/**
 * The backends of weft's command line.
 *
 * @returns The factories; `close()` when the agent has stopped.
 * @example
 * ```ts
 * const table = backendTable();
 * const backend = await table.backends["vxlan"]();
 * await table.close();
 * ```
 */
export function backendTable(): BackendTable {
  let datapath: Promise<Datapath> | undefined;
  const openDatapath = () =>
    datapath ??= import("../datapath/netlink/datapath.ts").then((m) => m.openNetlinkDatapath());
  return {
    backends: {
      alloc: () => Promise.resolve(allocBackend()),
      vxlan: async () =>
        (await import("../backends/routed/vxlan.ts")).vxlanBackend({
          datapath: await openDatapath(),
        }),
      "host-gw": async () =>
        (await import("../backends/routed/host_gw.ts")).hostGwBackend({
          datapath: await openDatapath(),
        }),
      udp: async () =>
        (await import("../backends/udp/backend.ts")).udpBackend({ datapath: await openDatapath() }),
      extension: async () => (await import("../backends/extension/backend.ts")).extensionBackend(),
      wireguard: async () =>
        (await import("../backends/wireguard/backend.ts")).wireguardBackend({
          datapath: await openDatapath(),
        }),
      "aws-vpc": async () => (await import("../backends/routed/aws_vpc.ts")).awsVpcBackend(),
      gce: async () => (await import("../backends/routed/gce.ts")).gceBackend(),
      module: async () => (await import("../backends/module/backend.ts")).moduleBackend(),
    },
    async close() {
      (await datapath?.catch(() => undefined))?.close();
    },
  };
}
