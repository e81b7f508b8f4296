/**
 * Picking and building the lease store from the flags ({@link chooseStore}):
 * Kubernetes with `--kube-subnet-mgr`; etcd when `--etcd-endpoints` is given
 * (flag or `FLANNELD_ETCD_ENDPOINTS`); weft's embedded file store (one
 * machine only) when `--lease-file` is given or that file exists; else etcd
 * at flannel's default endpoints, as flanneld does — so a host switched from
 * flannel whose unit relies on the default (a local etcd member) joins its
 * cluster instead of becoming an island. Each store's module is imported
 * only when picked.
 *
 * @module
 */

import * as fs from "node:fs";
import { ConfigError } from "../core/errors.ts";
import type { Logger } from "../core/log.ts";
import type { Registry } from "../core/metrics.ts";
import type { Lease, LeaseStore } from "../lease/types.ts";
import { etcdEndpointUrls, type Flags } from "./flags.ts";

/** Which store the flags pick, and why (logged at start). */
export interface StoreChoice {
  readonly kind: "kube" | "etcd" | "file";
  readonly why: string;
}

/**
 * The store the flags pick (pure but for `exists`).
 *
 * @param flags Parsed flags.
 * @param exists Whether a file exists (default: the file system).
 * @returns The store kind and the reason.
 * @example
 * ```ts
 * chooseStore(parseFlags([], {}), () => false).kind; // "etcd" (flannel's default endpoints)
 * ```
 */
export function chooseStore(
  flags: Pick<Flags, "kubeSubnetMgr" | "explicit" | "leaseFile">,
  exists: (path: string) => boolean = fs.existsSync,
): StoreChoice {
  if (flags.kubeSubnetMgr) return { kind: "kube", why: "--kube-subnet-mgr" };
  if (flags.explicit.has("etcd-endpoints")) return { kind: "etcd", why: "--etcd-endpoints" };
  if (flags.explicit.has("lease-file")) return { kind: "file", why: "--lease-file" };
  if (exists(flags.leaseFile)) {
    return { kind: "file", why: `the lease file ${flags.leaseFile} exists` };
  }
  return {
    kind: "etcd",
    why:
      "neither --kube-subnet-mgr, --etcd-endpoints nor --lease-file is given: flannel's default endpoints",
  };
}

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
 * What weft makes of the two variables flannel's stock DaemonSet sets for
 * its Kubernetes subnet manager. `EVENT_QUEUE_DEPTH` sizes flannel's node
 * event channel (default 5000) and stops flanneld when it is not an
 * integer; weft has no fixed queue (events are coalesced per node), so it
 * only checks the value as flannel does. `CONT_WHEN_CACHE_NOT_READY=true`
 * lets flanneld go on after its 10-minute informer sync timeout; weft has no
 * such timeout (it waits for the API, watching), so it behaves as if the
 * variable were always true.
 *
 * @param env The environment.
 * @returns An error for a value flannel refuses, and notes for the log.
 * @example
 * ```ts
 * kubeEnvironment({ EVENT_QUEUE_DEPTH: "5000" }); // { notes: ["EVENT_QUEUE_DEPTH=5000 …"] }
 * ```
 */
export function kubeEnvironment(
  env: Record<string, string | undefined>,
): { error?: string; notes: string[] } {
  const notes: string[] = [];
  const depth = env.EVENT_QUEUE_DEPTH;
  if (depth !== undefined && depth !== "") {
    if (!/^[+-]?\d+$/.test(depth)) {
      return {
        error:
          `environment EVENT_QUEUE_DEPTH must be an integer (flanneld stops on it too): current value is ${
            JSON.stringify(depth)
          }; remove it or set e.g. 5000`,
        notes,
      };
    }
    notes.push(
      `EVENT_QUEUE_DEPTH=${depth} is not needed: weft keeps no fixed event queue (node events are coalesced per node)`,
    );
  }
  const cont = env.CONT_WHEN_CACHE_NOT_READY;
  if (cont !== undefined && cont !== "") {
    notes.push(
      `CONT_WHEN_CACHE_NOT_READY=${cont} is not needed: weft never gives up waiting for the node list (it has no sync timeout)`,
    );
  }
  return { notes };
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
  const choice = chooseStore(flags);
  logger.info("lease store", { store: choice.kind, why: choice.why });
  if (choice.kind === "kube") {
    const kubeEnv = kubeEnvironment(env);
    if (kubeEnv.error) throw new ConfigError(kubeEnv.error, "EVENT_QUEUE_DEPTH");
    for (const note of kubeEnv.notes) logger.info(note);
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
  if (choice.kind === "etcd") {
    const { createEtcdLeaseStore } = await import("../lease/etcd/store.ts");
    return {
      store: createEtcdLeaseStore({
        endpoints: etcdEndpointUrls(
          flags.etcdEndpoints,
          flags.etcdCertfile !== "" && flags.etcdKeyfile !== "",
        ),
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
