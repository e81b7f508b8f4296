/**
 * The Kubernetes lease store (`--kube-subnet-mgr`): this host's subnet is its
 * Node's `spec.podCIDRs`, assigned by Kubernetes (kube-controller-manager
 * `--allocate-node-cidrs`), and the lease attributes are published as
 * flannel's node annotations through the `status` subresource, so weft can
 * replace flannel in a DaemonSet without touching the cluster's state.
 *
 * Differences from the etcd/file stores, and why:
 * - No TTL: a node's podCIDR is held for the node's life, so leases have
 *   `expiration: null`; `renew` only republishes changed annotations and
 *   checks the node and its podCIDR still exist (a deleted node or a changed
 *   podCIDR is a `LeaseConflictError`).
 * - No allocation: `acquire` waits (through a watch, not a poll) until the
 *   node has a podCIDR, reporting why in {@link KubeLeaseStore.status};
 *   with `exitOnMissingPodCidr` it fails at once, as flannel does.
 * - `release` withdraws the node from the overlay (removes the
 *   `kube-subnet-manager` and published annotations); the podCIDR itself
 *   belongs to Kubernetes and stays.
 *
 * The pieces: lease/kube/api.ts talks to the API server (credentials from
 * lease/kube/config.ts, typed errors, retries); lease/kube/list_watch.ts lists
 * and follows nodes (bookmarks, 410 → re-list, backoff); lease/kube/node.ts
 * turns a node into a lease and back; lease/kube/peers.ts keeps the peers'
 * leases (the last list, each watch's view). This file holds this node
 * ({@link OwnNode}: its name, the wait for its podCIDR, why it has no lease
 * yet, its annotations) and the LeaseStore over both.
 *
 * @module
 */

import { readFile } from "node:fs/promises";
import process from "node:process";
import { linkedController } from "../../core/abort.ts";
import { type Clock, systemClock } from "../../core/clock.ts";
import { ConfigError, LeaseConflictError, StoreUnavailableError } from "../../core/errors.ts";
import {
  equalIPv4Net,
  equalIPv6Net,
  formatIPv4Net,
  formatIPv6Net,
  formatSubnetPair,
  subnetPair,
} from "../../core/ip.ts";
import type { Logger } from "../../core/log.ts";
import { nullLogger } from "../../core/log.ts";
import type { Registry as Metrics } from "../../core/metrics.ts";
import { type NetworkConfig, parseNetworkConfig } from "../config.ts";
import type { Lease, LeaseAttrs, LeaseStore } from "../types.ts";
import { ApiCallError, createKubeApi } from "./api.ts";
import { followNodes } from "./list_watch.ts";
import { NodeDecoder, PeerView, type Shared } from "./peers.ts";
import {
  annotationKeys,
  annotationUpdate,
  checkPodCidrs,
  DEFAULT_ANNOTATION_PREFIX,
  type KubeNode,
  networkAvailablePatch,
  nodeToLease,
  parseKubeNode,
  podCidrsOf,
} from "./node.ts";

/** flannel's default network config path in kube mode. */
export const DEFAULT_NET_CONFIG_PATH = "/etc/kube-flannel/net-conf.json";

/** Options for {@link createKubeLeaseStore}. */
export interface KubeLeaseStoreOptions {
  /** `--kubeconfig-file`; without it and without `apiUrl`, the in-cluster service account. */
  kubeconfigFile?: string;
  /** `--kube-api-url`: overrides the server (with the kubeconfig or in-cluster credentials). */
  apiUrl?: string;
  /** This node's name; default `NODE_NAME`, else the pod's `spec.nodeName` via `POD_NAME`/`POD_NAMESPACE`. */
  nodeName?: string;
  /** Environment to read NODE_NAME, POD_NAME, POD_NAMESPACE, KUBERNETES_SERVICE_HOST from (default process.env). */
  env?: Readonly<Record<string, string | undefined>>;
  /** `--kube-annotation-prefix` (default `flannel.alpha.coreos.com`). */
  annotationPrefix?: string;
  /** `--net-config-path` (default `/etc/kube-flannel/net-conf.json`). */
  netConfigPath?: string;
  /** Fail `acquire` at once when the node has no podCIDR (flannel's behaviour). */
  exitOnMissingPodCidr?: boolean;
  /** Set `NetworkUnavailable=False` in {@link KubeLeaseStore.markNetworkAvailable} (default true). */
  setNodeCondition?: boolean;
  logger?: Logger;
  metrics?: Metrics;
  clock?: Clock;
  random?: () => number;
  /** Prefix of the service account files (tests); default "" = /var/run/secrets/…. */
  inClusterPathPrefix?: string;
  /** Nodes per list page (default 500, as client-go's reflector). */
  pageSize?: number;
  /** Server-side watch timeout, seconds (default random 300–600, as client-go). */
  watchTimeoutSeconds?: number;
  /** Attempts for a write that fails with a 5xx or a network error (default 6). */
  writeAttempts?: number;
  /**
   * How to load the address and credentials: `auto` (default) uses the
   * builtin loader and `@kubernetes/client-node` only for a kubeconfig user
   * with an exec plugin or auth-provider; `builtin` refuses such a user;
   * `client-node` always uses client-node.
   */
  loader?: "auto" | "builtin" | "client-node";
}

/** What the node says about this host before it acquires. */
export interface KubeNodeHints {
  /** The lease the node's annotations describe (its backend data keeps the VtepMAC). */
  readonly previousLease?: Lease;
  /** `node-public-ip`: the operator's choice of public IP (flannel prefers it to --public-ip). */
  readonly publicIP?: string;
  /** `node-public-ipv6`. */
  readonly publicIPv6?: string;
}

/** The Kubernetes LeaseStore, with its extras for the agent. */
export interface KubeLeaseStore extends LeaseStore {
  /** Why this host has no lease yet (e.g. no podCIDR), or `null`. */
  status(): string | null;
  /**
   * Set the node's `NetworkUnavailable=False` condition (reason FlannelIsUp);
   * call once the datapath is ready. A no-op when `setNodeCondition` is false.
   *
   * @throws {StoreUnavailableError} When the API server refuses or cannot be reached.
   */
  markNetworkAvailable(signal?: AbortSignal): Promise<void>;
  /** This node's name (resolved from the environment or the pod on first use). */
  nodeName(signal?: AbortSignal): Promise<string>;
  /** What the node's annotations say about this host (stored MAC, operator-set public IP). */
  nodeHints(signal?: AbortSignal): Promise<KubeNodeHints>;
}

const hasPodCidr = (n: KubeNode) => Boolean(n.spec?.podCIDRs?.length || n.spec?.podCIDR);

/** This host's node: its name, the wait for its podCIDR, its annotations and condition. */
class OwnNode {
  readonly #shared: Shared;
  readonly #options: KubeLeaseStoreOptions;
  readonly #env: Readonly<Record<string, string | undefined>>;
  #name?: Promise<string>;
  /** Why this host has no lease yet, for `/readyz`. */
  #notReady: string | null = null;

  constructor(shared: Shared, options: KubeLeaseStoreOptions) {
    this.#shared = shared;
    this.#options = options;
    this.#env = options.env ?? process.env;
  }

  get status(): string | null {
    return this.#notReady;
  }

  ready(): void {
    this.#notReady = null;
  }

  /** The node's name, resolved once (a failure is retried on the next call). */
  name(signal?: AbortSignal): Promise<string> {
    this.#name ??= this.#resolveName(signal).catch((e) => {
      this.#name = undefined;
      throw e;
    });
    return this.#name;
  }

  /** Wait until the node exists and has a podCIDR, following it (no polling). */
  async waitForPodCidr(signal?: AbortSignal): Promise<KubeNode> {
    const name = await this.name(signal);
    const life = linkedController({ parents: [signal, this.#shared.closed] });
    const { log } = this.#shared;
    try {
      const changes = followNodes(this.#shared.api, {
        fieldSelector: `metadata.name=${name}`,
        timeoutSeconds: () => this.#shared.watchTimeoutSeconds(),
        pageSize: this.#shared.pageSize,
        signal: life.signal,
        clock: this.#shared.clock,
        random: this.#shared.random,
        logger: log,
        isFatal: (e) => e instanceof ConfigError,
        onRetry: (error) =>
          this.#setNotReady(`waiting for node ${name}: ${(error as Error).message}`),
      });
      for await (const batch of changes) {
        for (const change of batch) {
          const objects = change.type === "LISTED"
            ? [change.items[0]] // the field selector leaves this node, or nothing
            : change.type === "DELETED"
            ? [undefined]
            : [change.object];
          for (const obj of objects) {
            const node = this.#judge(name, obj);
            if (node) {
              if (change.type !== "LISTED") {
                log.info("node got its podCIDR", {
                  node: name,
                  podCIDRs: node.spec?.podCIDRs ?? [],
                });
              }
              return node;
            }
          }
        }
      }
      life.signal.throwIfAborted();
      throw new StoreUnavailableError(`stopped waiting for node ${name}`);
    } finally {
      life.dispose();
    }
  }

  /**
   * The node when it has a podCIDR; otherwise say why not (once per reason)
   * and return undefined.
   *
   * @throws {ConfigError} When it has none and `exitOnMissingPodCidr` is set.
   */
  #judge(name: string, obj: unknown): KubeNode | undefined {
    if (obj === undefined) {
      this.#setNotReady(
        `node ${name} is not registered with the API server yet: waiting for it (is NODE_NAME the node's name as in kubectl get nodes?)`,
      );
      return undefined;
    }
    const node = parseKubeNode(obj);
    if (typeof node === "string") {
      this.#setNotReady(`node ${name} from the API server is ${node}; waiting for a readable one`);
      return undefined;
    }
    if (hasPodCidr(node)) return node;
    const msg = `node ${name} has no podCIDR yet (flannel: "pod cidr not assigned"): ` +
      `podCIDRs are assigned by kube-controller-manager with --allocate-node-cidrs=true and --cluster-cidr ` +
      `(kubeadm init --pod-network-cidr=<Network>), or set spec.podCIDR on the node yourself`;
    if (this.#options.exitOnMissingPodCidr) {
      this.#notReady = msg;
      throw new ConfigError(`${msg}; not waiting because --exit-on-missing-podcidr is set`);
    }
    this.#setNotReady(`${msg}; waiting for it`);
    return undefined;
  }

  #setNotReady(reason: string): void {
    if (reason !== this.#notReady) this.#shared.log.warn(reason);
    this.#notReady = reason;
  }

  /** The node now, or null when it does not exist. */
  async read(signal?: AbortSignal): Promise<KubeNode | null> {
    const name = await this.name(signal);
    const { api } = this.#shared;
    const what = `reading node ${name}`;
    try {
      const raw = await api.retrying(
        what,
        (c) => api.request(c, "GET", `/api/v1/nodes/${encodeURIComponent(name)}`, what, { signal }),
        signal,
      );
      const n = parseKubeNode(raw);
      if (typeof n === "string") throw new StoreUnavailableError(`node ${name} is ${n}`);
      return n;
    } catch (e) {
      if (e instanceof ApiCallError && e.code === 404) return null;
      throw e;
    }
  }

  /** Patch the node through its `status` subresource (where flannel writes). */
  async patchStatus(body: unknown, what: string, signal?: AbortSignal): Promise<void> {
    const name = await this.name(signal);
    const { api } = this.#shared;
    const path = `/api/v1/nodes/${encodeURIComponent(name)}/status`;
    await api.retrying(
      what,
      (c) => api.request(c, "PATCH", path, what, { signal, patch: body }),
      signal,
    );
  }

  /** Publish `attrs` on the node when its annotations differ; returns what peers see. */
  async publish(node: KubeNode, attrs: LeaseAttrs, signal?: AbortSignal): Promise<LeaseAttrs> {
    const { keys, log } = this.#shared;
    const name = node.metadata.name;
    const { changes, published } = annotationUpdate(node.metadata.annotations ?? {}, attrs, keys);
    const changed = Object.keys(changes);
    if (changed.length) {
      if (changes[keys.publicIP] && changes[keys.publicIP] !== attrs.publicIP) {
        log.info("publishing the public IP from the node's overwrite annotation", {
          publicIP: changes[keys.publicIP],
          annotation: keys.publicIPOverwrite,
        });
      }
      await this.patchStatus(
        { metadata: { annotations: changes } },
        `patching node ${name}'s annotations`,
        signal,
      );
      log.debug("node annotations updated", { node: name, keys: changed });
    }
    return published;
  }

  /** The lease the node's podCIDRs make under `cfg`. */
  leaseOf(node: KubeNode, cfg: NetworkConfig, attrs: LeaseAttrs): Lease {
    const name = node.metadata.name;
    const cidrs = podCidrsOf(node);
    if (typeof cidrs === "string") throw new ConfigError(cidrs, "spec.podCIDRs");
    const bad = checkPodCidrs(name, cidrs, cfg, this.#shared.netConfigPath);
    if (bad) throw new ConfigError(bad, "Network");
    // checkPodCidrs made sure each enabled family has its CIDR
    const pair = subnetPair(
      cfg.enableIPv4 ? cidrs.v4 : undefined,
      cfg.enableIPv6 ? cidrs.v6 : undefined,
    );
    if (!pair) throw new ConfigError(`node ${name} has no podCIDR`, "spec.podCIDRs");
    return { ...pair, attrs, expiration: null };
  }

  async #resolveName(signal?: AbortSignal): Promise<string> {
    if (this.#options.nodeName) return this.#options.nodeName;
    const env = this.#env;
    if (env.NODE_NAME) return env.NODE_NAME;
    const pod = env.POD_NAME;
    const { api } = this.#shared;
    // the service account's namespace is the pod's, as client-go assumes
    const ns = env.POD_NAMESPACE || (pod ? (await api.client()).conn.namespace : undefined);
    if (!pod || !ns) {
      throw new ConfigError(
        "cannot tell which node this is: set NODE_NAME (downward API spec.nodeName), or POD_NAME and POD_NAMESPACE (metadata.name and metadata.namespace); see examples/kube-weft.yml",
        "NODE_NAME",
      );
    }
    const what = `reading pod ${ns}/${pod}`;
    const path = `/api/v1/namespaces/${encodeURIComponent(ns)}/pods/${encodeURIComponent(pod)}`;
    const p = await api.retrying(
      what,
      (c) => api.request(c, "GET", path, what, { signal }),
      signal,
    );
    const name = (p as { spec?: { nodeName?: string } })?.spec?.nodeName;
    if (!name) {
      throw new ConfigError(
        `pod ${ns}/${pod} has no spec.nodeName yet: it is not scheduled; set NODE_NAME instead`,
        "NODE_NAME",
      );
    }
    return name;
  }
}

/**
 * Create the Kubernetes lease store. Nothing is loaded or contacted until
 * the first call.
 *
 * @param options Where the API server and this node are, annotation prefix,
 *   net-conf path, behaviour flags, and the injected logger/metrics/clock.
 * @returns The store.
 * @throws {ConfigError} When the annotation prefix is invalid.
 * @example
 * ```ts
 * const store = createKubeLeaseStore({ kubeconfigFile: "/etc/kubernetes/kubelet.conf" });
 * const config = await store.getNetworkConfig();
 * const lease = await store.acquire(config, { attrs: { publicIP: "192.0.2.7" } });
 * ```
 */
export function createKubeLeaseStore(options: KubeLeaseStoreOptions = {}): KubeLeaseStore {
  const log = (options.logger ?? nullLogger).with({ store: "kube" });
  const clock = options.clock ?? systemClock;
  const random = options.random ?? Math.random;
  const closer = new AbortController();
  const shared: Shared = {
    api: createKubeApi({
      kubeconfigFile: options.kubeconfigFile,
      apiUrl: options.apiUrl,
      env: options.env ?? process.env,
      inClusterPathPrefix: options.inClusterPathPrefix,
      loader: options.loader,
      writeAttempts: options.writeAttempts,
      logger: log,
      errors: options.metrics?.counter(
        "weft_store_errors_total",
        "Failed requests to the lease store",
      ),
      clock,
      random,
    }),
    log,
    clock,
    random,
    keys: annotationKeys(options.annotationPrefix ?? DEFAULT_ANNOTATION_PREFIX),
    netConfigPath: options.netConfigPath ?? DEFAULT_NET_CONFIG_PATH,
    pageSize: options.pageSize ?? 500,
    closed: closer.signal,
    watchTimeoutSeconds: () => options.watchTimeoutSeconds ?? Math.round(300 * (1 + random())),
  };
  const peers = new PeerView(shared, new NodeDecoder(shared, options.metrics));
  const own = new OwnNode(shared, options);
  const { keys, netConfigPath } = shared;

  return {
    name: "kube",

    async getNetworkConfig() {
      let text: string;
      try {
        text = await readFile(netConfigPath, "utf8");
      } catch (e) {
        throw new ConfigError(
          `cannot read the network config ${netConfigPath}: ${
            (e as Error).message
          }; mount the net-conf.json ConfigMap there (see examples/kube-weft.yml) or pass --net-config-path`,
          "net-config-path",
          { cause: e },
        );
      }
      shared.config = parseNetworkConfig(text, {
        source: netConfigPath,
        onWarning: (m) => log.warn(m),
      });
      return shared.config;
    },

    async acquire(cfg, req, signal) {
      shared.config = cfg;
      const node = await own.waitForPodCidr(signal);
      const draft = own.leaseOf(node, cfg, req.attrs);
      const attrs = await own.publish(node, req.attrs, signal);
      own.ready();
      log.info("lease acquired from the node's podCIDR", {
        node: node.metadata.name,
        ...(draft.subnet ? { subnet: formatIPv4Net(draft.subnet) } : {}),
        ...(draft.ipv6Subnet ? { ipv6Subnet: formatIPv6Net(draft.ipv6Subnet) } : {}),
        publicIP: attrs.publicIP || attrs.publicIPv6 || "",
      });
      return { ...draft, attrs };
    },

    async renew(lease, signal) {
      const name = await own.name(signal);
      const node = await own.read(signal);
      if (!node) {
        throw new LeaseConflictError(
          `node ${name} no longer exists in the API server: its podCIDR ${
            formatSubnetPair(lease)
          } is gone; acquire again once the node is re-registered`,
        );
      }
      const cidrs = podCidrsOf(node);
      const same = typeof cidrs !== "string" &&
        (lease.subnet === undefined ||
          (cidrs.v4 !== undefined && equalIPv4Net(cidrs.v4, lease.subnet))) &&
        (lease.ipv6Subnet === undefined || equalIPv6Net(cidrs.v6, lease.ipv6Subnet));
      if (!same) {
        throw new LeaseConflictError(
          `node ${name}'s podCIDR changed from ${formatSubnetPair(lease)} to ${
            typeof cidrs === "string" ? cidrs : JSON.stringify(cidrs.text)
          }: acquire again`,
        );
      }
      const attrs = await own.publish(node, lease.attrs, signal);
      return { ...lease, attrs, expiration: null };
    },

    async release(_lease, signal) {
      const node = await own.read(signal);
      if (!node) return;
      const name = node.metadata.name;
      const ann = node.metadata.annotations ?? {};
      const drop: Record<string, null> = {};
      const published = [
        keys.subnetKubeManaged,
        keys.backendType,
        keys.backendData,
        keys.backendV6Data,
        keys.publicIP,
        keys.publicIPv6,
      ];
      for (const k of published) if (k in ann) drop[k] = null;
      if (Object.keys(drop).length === 0) return;
      await own.patchStatus(
        { metadata: { annotations: drop } },
        `removing node ${name}'s flannel annotations`,
        signal,
      );
      log.info("withdrew this node from the overlay", { node: name });
    },

    list: (signal) => peers.list(signal),

    watch: (revision, signal) => peers.watch(revision, signal),

    status: () => own.status,

    async markNetworkAvailable(signal) {
      if (!(options.setNodeCondition ?? true)) return;
      const name = await own.name(signal);
      await own.patchStatus(
        networkAvailablePatch(clock.now()),
        `setting node ${name}'s NetworkUnavailable condition`,
        signal,
      );
      log.info("node condition NetworkUnavailable=False set", { node: name });
    },

    nodeName: (signal) => own.name(signal),

    async nodeHints(signal) {
      const node = await own.read(signal);
      if (!node) return {};
      const ann = node.metadata.annotations ?? {};
      const lease = nodeToLease(node, keys, shared.config, netConfigPath);
      return {
        ...(lease && typeof lease !== "string" ? { previousLease: lease } : {}),
        ...(ann[keys.nodePublicIP] ? { publicIP: ann[keys.nodePublicIP] } : {}),
        ...(ann[keys.nodePublicIPv6] ? { publicIPv6: ann[keys.nodePublicIPv6] } : {}),
      };
    },

    close() {
      closer.abort();
      return Promise.resolve();
    },
  };
}
