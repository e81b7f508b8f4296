/**
 * Picking and building the lease store from the flags, as flannel does:
 * Kubernetes with `--kube-subnet-mgr`, etcd when `--etcd-endpoints` is given
 * (flag or `FLANNELD_ETCD_ENDPOINTS`), else weft's embedded file store (one
 * machine only). Each store's module is imported only when picked.
 *
 * @module
 */

import type { Logger } from "../core/log.ts";
import type { Registry } from "../core/metrics.ts";
import type { Lease, LeaseStore } from "../lease/types.ts";
import type { Flags } from "./flags.ts";

/** The store and what the agent needs from it beyond the LeaseStore seam. */
export interface OpenedStore {
  readonly store: LeaseStore;
  /** Called each time the agent becomes ready (Kubernetes: the node condition). */
  readonly onReady?: (signal: AbortSignal) => Promise<void>;
  /** This host's lease as the store knows it (Kubernetes: the node's annotations). */
  readonly previousLease?: (signal: AbortSignal) => Promise<Lease | undefined>;
  /** The public IP the store says this host has (Kubernetes: `public-ip-overwrite`). */
  readonly publicIP?: string;
  /** The public IPv6 address the store says this host has (Kubernetes: `public-ipv6-overwrite`). */
  readonly publicIPv6?: string;
}

/**
 * Build the store the flags pick.
 *
 * @param flags Parsed flags.
 * @param env Environment (`NODE_NAME`, `POD_NAME`, … for Kubernetes).
 * @param logger Logger for the store.
 * @param metrics Registry for the store's metrics.
 * @param signal Ends the first look at the store (Kubernetes: the node's annotations) early.
 * @returns The store, and its hooks; `close()` the store when done.
 * @throws {ConfigError} When a TLS file, kubeconfig or token cannot be read.
 * @example
 * ```ts
 * const { store } = await openStore(parseFlags([], {}), {}, logger, metrics, signal);
 * ```
 */
export async function openStore(
  flags: Flags,
  env: Record<string, string | undefined>,
  logger: Logger,
  metrics: Registry,
  signal: AbortSignal,
): Promise<OpenedStore> {
  if (flags.kubeSubnetMgr) {
    const { createKubeLeaseStore } = await import("../lease/kube/store.ts");
    const store = createKubeLeaseStore({
      kubeconfigFile: flags.kubeconfigFile || undefined,
      apiUrl: flags.kubeApiUrl || undefined,
      env,
      annotationPrefix: flags.kubeAnnotationPrefix,
      netConfigPath: flags.netConfigPath,
      exitOnMissingPodCidr: flags.exitOnMissingPodcidr,
      setNodeCondition: flags.setNodeNetworkUnavailable,
      logger,
      metrics,
    });
    let hints: Awaited<ReturnType<typeof store.nodeHints>> | undefined;
    const getHints = async (s: AbortSignal) => (hints ??= await store.nodeHints(s));
    let publicIP: string | undefined;
    let publicIPv6: string | undefined;
    try {
      ({ publicIP, publicIPv6 } = await getHints(signal));
    } catch (e) {
      if (!signal.aborted) {
        logger.warn("cannot read this node's annotations yet; will retry while registering", {
          error: e as Error,
        });
      }
    }
    return {
      store,
      publicIP,
      publicIPv6,
      previousLease: async (s) => (await getHints(s)).previousLease,
      onReady: (s) => store.markNetworkAvailable(s),
    };
  }
  if (flags.explicit.has("etcd-endpoints")) {
    const { createEtcdLeaseStore } = await import("../lease/etcd/store.ts");
    return {
      store: createEtcdLeaseStore({
        endpoints: flags.etcdEndpoints.split(",").map((s) => s.trim()).filter(Boolean),
        prefix: flags.etcdPrefix,
        ttlMs: flags.leaseTtl,
        username: flags.etcdUsername || undefined,
        password: flags.etcdPassword || undefined,
        caFile: flags.etcdCafile || undefined,
        certFile: flags.etcdCertfile || undefined,
        keyFile: flags.etcdKeyfile || undefined,
        logger,
        metrics,
      }),
    };
  }
  const { createFileLeaseStore } = await import("../lease/file_store.ts");
  logger.info(
    "using the embedded file store (one machine only); give --etcd-endpoints for a cluster",
    { leaseFile: flags.leaseFile, config: flags.netConfigPath },
  );
  return {
    store: createFileLeaseStore({
      path: flags.leaseFile,
      configPath: flags.netConfigPath,
      ttlMs: flags.leaseTtl,
      logger,
      metrics,
    }),
  };
}
