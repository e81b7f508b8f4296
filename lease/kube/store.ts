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
 * The API server's address and credentials come from lease/kube/config.ts
 * (in-cluster service account with token rotation, kubeconfig with token,
 * token file, client certificates or basic auth, `--kube-api-url`), without
 * `@kubernetes/client-node`: importing it alone costs ~120 MB and 0.5–0.7 s
 * under Deno, more than the whole store listing 5000 nodes. Only a kubeconfig
 * user with an `exec` plugin or an `auth-provider` loads it, on first use
 * (lease/kube_client_node.ts). Either way every request is a plain fetch +
 * JSON through the runtime's own fetch (Deno's and Bun's, with the cluster
 * CA): raw JSON halves the time and memory of a 5000-node list compared with
 * client-node's typed models, and its undici transport ignores the CA under
 * Bun and crashes Deno on HTTP/2 shutdown.
 *
 * @module
 */

import { readFile } from "node:fs/promises";
import process from "node:process";
import type { Logger } from "../../core/log.ts";
import { nullLogger } from "../../core/log.ts";
import type { Registry as Metrics } from "../../core/metrics.ts";
import { createFetch } from "../../core/runtime.ts";
import { backoff, type Clock, systemClock } from "../../core/clock.ts";
import { type NetworkConfig, parseNetworkConfig } from "../config.ts";
import {
  equalIPv4Net,
  equalIPv6Net,
  formatIPv4Net,
  formatIPv6Net,
  formatSubnetPair,
  subnetKey,
  subnetPair,
} from "../../core/ip.ts";
import { type KubeConfigOptions, type KubeConnection, loadKubeConfig } from "./config.ts";
import {
  annotationKeys,
  annotationUpdate,
  checkPodCidrs,
  DEFAULT_ANNOTATION_PREFIX,
  type KubeAnnotationKeys,
  type KubeNode,
  networkAvailablePatch,
  nodeToLease,
  parseKubeNode,
  podCidrsOf,
} from "./node.ts";
import {
  encodeLeaseAttrs,
  type Lease,
  type LeaseAttrs,
  type LeaseEvent,
  type LeaseSnapshot,
  type LeaseStore,
} from "../types.ts";
import { ConfigError, LeaseConflictError, StoreUnavailableError } from "../../core/errors.ts";

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

interface Client {
  readonly server: string;
  readonly conn: KubeConnection;
  readonly fetch: typeof fetch;
}

/** A failed API call with its HTTP status (0 = no answer). */
class ApiCallError extends StoreUnavailableError {
  constructor(message: string, readonly code: number, options?: ErrorOptions) {
    super(message, options);
  }
}

const isAbort = (e: unknown) =>
  e instanceof DOMException && (e.name === "AbortError" || e.name === "TimeoutError");

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
  const env = options.env ?? process.env;
  const keys: KubeAnnotationKeys = annotationKeys(
    options.annotationPrefix ?? DEFAULT_ANNOTATION_PREFIX,
  );
  const netConfigPath = options.netConfigPath ?? DEFAULT_NET_CONFIG_PATH;
  const pageSize = options.pageSize ?? 500;
  const writeAttempts = options.writeAttempts ?? 6;
  const setCondition = options.setNodeCondition ?? true;
  const malformed = options.metrics?.counter(
    "weft_store_malformed_records_total",
    "Lease records skipped because they could not be decoded",
  );
  const storeErrors = options.metrics?.counter(
    "weft_store_errors_total",
    "Failed requests to the lease store",
  );
  const closer = new AbortController();

  let client: Promise<Client> | undefined;
  let nodeNamePromise: Promise<string> | undefined;
  let config: NetworkConfig | undefined;
  let notReady: string | null = null;
  let lastList: { revision: string; known: Map<string, Known> } | undefined;
  const warned = new Map<string, string>();

  interface Known {
    readonly lease: Lease;
    readonly fp: string;
  }

  const fingerprint = (l: Lease) => subnetKey(l.subnet, l.ipv6Subnet) + encodeLeaseAttrs(l.attrs);

  // ---- client -----------------------------------------------------------

  const connect = async (): Promise<Client> => {
    const loadOptions: KubeConfigOptions = {
      kubeconfigFile: options.kubeconfigFile,
      apiUrl: options.apiUrl,
      env,
      inClusterPathPrefix: options.inClusterPathPrefix,
      clock,
      onWarning: (m) => log.warn(m),
    };
    const loader = options.loader ?? "auto";
    const loaded = loader === "client-node"
      ? { kind: "client-node" as const, reason: "the client-node loader was chosen" }
      : await loadKubeConfig(loadOptions);
    let conn: KubeConnection;
    if (loaded.kind === "builtin") {
      conn = loaded.connection;
    } else if (loader === "builtin") {
      throw new ConfigError(
        `--kubeconfig-file ${options.kubeconfigFile}: ${loaded.reason}, which needs the client-node loader; use the default loader`,
        "kubeconfig-file",
      );
    } else {
      const t0 = performance.now();
      const { loadKubeConfigWithClientNode } = await import("./client_node.ts");
      log.info("loaded @kubernetes/client-node for the Kubernetes credentials", {
        reason: loaded.reason,
        ms: Math.round(performance.now() - t0),
      });
      conn = await loadKubeConfigWithClientNode(loadOptions);
    }
    const server = conn.server;
    const doFetch = server.startsWith("https:") ? createFetch(conn.tls) : fetch;
    log.info("using the Kubernetes API", { server, source: conn.source, loader: conn.loader });
    return { server, conn, fetch: doFetch };
  };

  const getClient = (): Promise<Client> => {
    client ??= connect().catch((e) => {
      client = undefined;
      throw e;
    });
    return client;
  };

  /**
   * Send one request with the current credentials; after a 401 whose token
   * file has changed since (a rotated service account token), send it once more.
   */
  const send = async (c: Client, url: string | URL, init: RequestInit = {}): Promise<Response> => {
    for (let again = false;; again = true) {
      let auth: Record<string, string>;
      try {
        auth = await c.conn.headers();
      } catch (e) {
        throw new ApiCallError(
          `cannot produce the Kubernetes credentials for ${c.server}: ${(e as Error).message}`,
          0,
          { cause: e },
        );
      }
      const headers = new Headers(init.headers);
      for (const [k, val] of Object.entries(auth)) headers.set(k, val);
      if (!headers.has("accept")) headers.set("Accept", "application/json");
      const res = await c.fetch(url, { ...init, headers });
      if (res.status !== 401 || again || !(await c.conn.refresh())) return res;
      await res.body?.cancel();
      log.info("the API server rejected the token; retrying with the rotated one", {
        server: c.server,
      });
    }
  };

  /** One JSON request: the decoded reply, or a `{code, body}` failure for {@link apiError}. */
  const call = async (
    c: Client,
    method: string,
    path: string,
    signal?: AbortSignal,
    patch?: unknown,
  ): Promise<unknown> => {
    const res = await send(c, c.server + path, {
      method,
      signal,
      ...(patch === undefined ? {} : {
        body: JSON.stringify(patch),
        headers: { "Content-Type": "application/strategic-merge-patch+json" },
      }),
    });
    const text = await res.text();
    if (!res.ok) {
      throw Object.assign(new Error(`HTTP ${res.status}`), { code: res.status, body: text });
    }
    return JSON.parse(text);
  };

  /** Turn a fetch failure or an HTTP error into a StoreUnavailableError that says what to do. */
  const apiError = (c: Client | undefined, what: string, e: unknown): Error => {
    if (isAbort(e) || e instanceof ConfigError || e instanceof ApiCallError) return e as Error;
    const server = c?.server ?? "the Kubernetes API";
    const code = typeof (e as { code?: unknown })?.code === "number"
      ? (e as { code: number }).code
      : 0;
    if (code === 0) {
      storeErrors?.inc({ store: "kube" });
      return new ApiCallError(
        `${what}: cannot reach the Kubernetes API at ${server}: ${
          (e as Error)?.message ?? String(e)
        }`,
        0,
        { cause: e },
      );
    }
    let message = "";
    let reason = "";
    const body = (e as { body?: unknown }).body;
    try {
      const s = typeof body === "string" ? JSON.parse(body) : body;
      message = s?.message ?? "";
      reason = s?.reason ?? "";
    } catch {
      message = String(body).slice(0, 200);
    }
    const hint = code === 401
      ? ": the API server rejected the credentials; check the service account token or the kubeconfig user"
      : code === 403
      ? ": grant weft's service account the ClusterRole in examples/kube-weft.yml (pods get; nodes get, list, watch; nodes/status patch)"
      : "";
    if (code !== 404 && code !== 409 && code !== 410) storeErrors?.inc({ store: "kube" });
    return new ApiCallError(
      `${what}: ${code}${reason ? " " + reason : ""}${message ? ": " + message : ""}${hint}`,
      code,
      // a raw {code, body} from a streamed request is already in the message
      e instanceof Error ? { cause: e } : undefined,
    );
  };

  /** Run a write, retrying network errors, 429 and 5xx with backoff. */
  const retrying = async <T>(
    what: string,
    fn: (c: Client) => Promise<T>,
    signal?: AbortSignal,
  ): Promise<T> => {
    const c = await getClient();
    for (let attempt = 0;; attempt++) {
      try {
        return await fn(c);
      } catch (raw) {
        const e = apiError(c, what, raw);
        const code = e instanceof ApiCallError ? e.code : -1;
        const transient = code === 0 || code === 429 || code >= 500;
        if (!transient || attempt + 1 >= writeAttempts || signal?.aborted) throw e;
        const delay = backoff(attempt, { random, base: 500, max: 8_000 });
        log.warn("Kubernetes API call failed, retrying", { what, error: e, retryInMs: delay });
        await clock.sleep(delay, signal);
      }
    }
  };

  // ---- node name --------------------------------------------------------

  const resolveNodeName = async (signal?: AbortSignal): Promise<string> => {
    if (options.nodeName) return options.nodeName;
    if (env.NODE_NAME) return env.NODE_NAME;
    const pod = env.POD_NAME;
    // the service account's namespace is the pod's, as client-go assumes
    const ns = env.POD_NAMESPACE || (pod ? (await getClient()).conn.namespace : undefined);
    if (!pod || !ns) {
      throw new ConfigError(
        "cannot tell which node this is: set NODE_NAME (downward API spec.nodeName), or POD_NAME and POD_NAMESPACE (metadata.name and metadata.namespace); see examples/kube-weft.yml",
        "NODE_NAME",
      );
    }
    const p = await retrying(
      `reading pod ${ns}/${pod}`,
      (c) =>
        call(
          c,
          "GET",
          `/api/v1/namespaces/${encodeURIComponent(ns)}/pods/${encodeURIComponent(pod)}`,
          signal,
        ),
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
  };

  const nodeName = (signal?: AbortSignal): Promise<string> => {
    nodeNamePromise ??= resolveNodeName(signal).catch((e) => {
      nodeNamePromise = undefined;
      throw e;
    });
    return nodeNamePromise;
  };

  // ---- decoding ---------------------------------------------------------

  /** Warn once per node and reason, and count it. */
  const skip = (name: string, reason: string) => {
    if (warned.get(name) === reason) return;
    warned.set(name, reason);
    malformed?.inc({ store: "kube" });
    log.warn("skipping node with malformed flannel data", { node: name, reason });
  };

  /** A node object (from a list or an event) as a lease, or null (skipped/not managed). */
  /**
   * A node object (from a list or an event) as a lease: `lease` null when the
   * node is not managed by flannel/weft, `null` altogether when it is
   * malformed (warned about and counted).
   */
  const decode = (obj: unknown): { name: string; lease: Lease | null } | null => {
    const node = parseKubeNode(obj);
    if (typeof node === "string") {
      const name = String((obj as { metadata?: { name?: unknown } })?.metadata?.name ?? "?");
      skip(name, node);
      return null;
    }
    const name = node.metadata.name;
    const lease = nodeToLease(node, keys, config, netConfigPath);
    if (typeof lease === "string") {
      skip(name, lease);
      return null;
    }
    warned.delete(name);
    return { name, lease };
  };

  // ---- list -------------------------------------------------------------

  /**
   * List nodes page by page; `onItem` sees each raw node once, `onRestart`
   * is called when an expired continue token makes the list start over.
   */
  const listNodes = async (
    c: Client,
    onItem: (node: unknown) => void,
    onRestart: () => void,
    signal?: AbortSignal,
    fieldSelector?: string,
  ): Promise<string> => {
    type Page = { items?: unknown[]; metadata?: { resourceVersion?: string; continue?: string } };
    const fetchPage = async (cont?: string): Promise<Page> => {
      const url = new URL(c.server + "/api/v1/nodes");
      url.searchParams.set("limit", String(pageSize));
      if (cont) url.searchParams.set("continue", cont);
      if (fieldSelector) url.searchParams.set("fieldSelector", fieldSelector);
      const res = await send(c, url, { signal });
      const text = await res.text();
      if (!res.ok) {
        throw Object.assign(new Error(`HTTP ${res.status}`), { code: res.status, body: text });
      }
      return JSON.parse(text);
    };
    for (let restart = 0;; restart++) {
      let cont: string | undefined;
      try {
        // Raw JSON rather than CoreV1Api.listNode (client-node's model
        // deserialisation doubled the time and memory of a 5000-node list);
        // the next page is fetched while this one is decoded.
        let page = await fetchPage();
        for (;;) {
          cont = page.metadata?.continue || undefined;
          const next = cont ? fetchPage(cont) : undefined;
          next?.catch(() => {}); // awaited below; keep an early failure from going unhandled
          for (const item of page.items ?? []) onItem(item);
          if (!next) return page.metadata?.resourceVersion ?? "";
          page = await next;
        }
      } catch (raw) {
        const e = apiError(c, "listing nodes", raw);
        // an expired continue token: start the list over (as client-go does)
        if (e instanceof ApiCallError && e.code === 410 && cont !== undefined && restart < 3) {
          log.info("node list was compacted while paging, starting over");
          onRestart();
          continue;
        }
        throw e;
      }
    }
  };

  const listKnown = async (signal?: AbortSignal) => {
    const c = await getClient();
    const known = new Map<string, Known>();
    const revision = await listNodes(
      c,
      (item) => {
        const d = decode(item);
        if (d?.lease) known.set(d.name, { lease: d.lease, fp: fingerprint(d.lease) });
      },
      () => known.clear(),
      signal,
    );
    lastList = { revision, known };
    return { revision, known };
  };

  const list = async (signal?: AbortSignal): Promise<LeaseSnapshot> => {
    const { revision, known } = await listKnown(signal);
    return { leases: [...known.values()].map((k) => k.lease), revision };
  };

  // ---- watch ------------------------------------------------------------

  interface RawEvent {
    type: string;
    // deno-lint-ignore no-explicit-any
    object: any;
  }

  /** Thrown when the server says the resourceVersion is too old. */
  class Gone extends Error {}

  /**
   * One watch request: batches of events as they arrive. Ends when the
   * server ends the stream; throws on errors (a 410 as {@link Gone}).
   */
  async function* watchStream(
    c: Client,
    query: Record<string, string>,
    signal: AbortSignal,
  ): AsyncGenerator<RawEvent[]> {
    const url = new URL(c.server + "/api/v1/nodes");
    url.searchParams.set("watch", "true");
    for (const [k, val] of Object.entries(query)) url.searchParams.set(k, val);
    const ac = new AbortController();
    const onAbort = () => ac.abort(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    const timeoutMs = (Number(query.timeoutSeconds ?? 300) + 30) * 1000;
    let lastData = clock.now();
    const watchdog = (async () => {
      while (!ac.signal.aborted) {
        await clock.sleep(timeoutMs, ac.signal);
        if (clock.now() - lastData >= timeoutMs) {
          ac.abort(new DOMException("watch was silent too long", "TimeoutError"));
        }
      }
    })().catch(() => {});
    try {
      const res = await send(c, url, { signal: ac.signal });
      if (res.status === 410) {
        await res.body?.cancel();
        throw new Gone(`watch from resourceVersion ${query.resourceVersion} is too old`);
      }
      if (!res.ok || !res.body) {
        const text = await res.text();
        throw apiError(c, "watching nodes", { code: res.status, body: text });
      }
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) return;
          lastData = clock.now();
          buf += value;
          const lines = buf.split("\n");
          buf = lines.pop() ?? "";
          const batch: RawEvent[] = [];
          for (const line of lines) {
            if (!line.trim()) continue;
            try {
              batch.push(JSON.parse(line));
            } catch {
              log.warn("ignoring an unreadable watch event", { line: line.slice(0, 120) });
            }
          }
          if (batch.length) yield batch;
        }
      } finally {
        await reader.cancel().catch(() => {});
      }
    } catch (e) {
      if (e instanceof Gone || e instanceof ApiCallError || signal.aborted) throw e;
      throw apiError(c, "watching nodes", e);
    } finally {
      signal.removeEventListener("abort", onAbort);
      ac.abort();
      await watchdog;
    }
  }

  const watchTimeout = () =>
    String(options.watchTimeoutSeconds ?? Math.round(300 * (1 + random())));

  async function* watch(revision: string, signal: AbortSignal): AsyncGenerator<LeaseEvent[]> {
    const both = AbortSignal.any([signal, closer.signal]);
    let rv = revision;
    const known = new Map<string, Known>(
      lastList?.revision === revision ? lastList.known : undefined,
    );
    let attempt = 0;
    const relist = async (): Promise<LeaseEvent[]> => {
      const snap = await listKnown(both);
      known.clear();
      for (const [k, val] of snap.known) known.set(k, val);
      rv = snap.revision;
      return [{ type: "snapshot", leases: [...known.values()].map((k) => k.lease) }];
    };
    while (!both.aborted) {
      try {
        const c = await getClient();
        const query = {
          resourceVersion: rv,
          allowWatchBookmarks: "true",
          timeoutSeconds: watchTimeout(),
        };
        let gone = false;
        for await (const batch of watchStream(c, query, both)) {
          attempt = 0;
          const out: LeaseEvent[] = [];
          for (const ev of batch) {
            const objRv = ev.object?.metadata?.resourceVersion;
            if (ev.type === "BOOKMARK") {
              if (objRv) rv = objRv;
              continue;
            }
            if (ev.type === "ERROR") {
              if (ev.object?.code === 410) {
                gone = true;
                break;
              }
              throw apiError(c, "watching nodes", {
                code: ev.object?.code ?? 500,
                body: ev.object,
              });
            }
            if (objRv) rv = objRv;
            const d = decode(ev.object);
            const name = ev.object?.metadata?.name;
            if (!d) {
              // Malformed: a deleted node is gone all the same; a bad update
              // keeps the last good lease, as flannel ignores it.
              const prev = ev.type === "DELETED" ? known.get(name) : undefined;
              if (prev) {
                known.delete(name);
                out.push({ type: "removed", lease: prev.lease });
              }
              continue;
            }
            const prev = known.get(d.name);
            if (ev.type === "DELETED" || !d.lease) {
              const gone = prev?.lease ?? (ev.type === "DELETED" ? d.lease : null);
              known.delete(d.name);
              if (gone) out.push({ type: "removed", lease: gone });
              continue;
            }
            const fp = fingerprint(d.lease);
            if (prev?.fp === fp) continue; // a heartbeat or an unrelated field
            if (
              prev &&
              subnetKey(prev.lease.subnet, prev.lease.ipv6Subnet) !==
                subnetKey(d.lease.subnet, d.lease.ipv6Subnet)
            ) {
              out.push({ type: "removed", lease: prev.lease });
            }
            known.set(d.name, { lease: d.lease, fp });
            out.push({ type: "added", lease: d.lease });
          }
          if (gone) break;
          if (out.length) yield out;
        }
        if (gone) throw new Gone("too old resource version");
        // a clean end (server timeout): resume from the last resourceVersion
      } catch (caught) {
        if (both.aborted) return;
        let e = caught;
        if (e instanceof Gone) {
          log.warn("node watch fell behind the API server's history, re-listing", { from: rv });
          try {
            yield await relist();
            continue;
          } catch (le) {
            if (both.aborted) return;
            e = le;
          }
        }
        const delay = backoff(attempt++, { random });
        log.warn("node watch failed, reconnecting", { error: e as Error, retryInMs: delay });
        try {
          await clock.sleep(delay, both);
        } catch {
          return;
        }
      }
    }
  }

  // ---- this node --------------------------------------------------------

  const hasPodCidr = (n: KubeNode) => Boolean(n.spec?.podCIDRs?.length || n.spec?.podCIDR);

  const setNotReady = (reason: string | null, level: "warn" | "info" = "warn") => {
    if (reason !== null && reason !== notReady) log[level](reason);
    notReady = reason;
  };

  /** Wait until this node exists and has a podCIDR, watching it (no polling). */
  const waitForOwnNode = async (name: string, signal?: AbortSignal): Promise<KubeNode> => {
    const both = signal ? AbortSignal.any([signal, closer.signal]) : closer.signal;
    let attempt = 0;
    for (;;) {
      both.throwIfAborted();
      try {
        const c = await getClient();
        let found: KubeNode | undefined;
        let bad: string | undefined;
        const rv = await listNodes(
          c,
          (item) => {
            const n = parseKubeNode(item);
            if (typeof n === "string") bad = n;
            else found = n;
          },
          () => (found = bad = undefined),
          both,
          `metadata.name=${name}`,
        );
        if (bad) throw new ApiCallError(`node ${name} from the API server is ${bad}`, 500);
        if (found && hasPodCidr(found)) return found;
        if (!found) {
          setNotReady(
            `node ${name} is not registered with the API server yet: waiting for it (is NODE_NAME the node's name as in kubectl get nodes?)`,
          );
        } else {
          const msg = `node ${name} has no podCIDR yet (flannel: "pod cidr not assigned"): ` +
            `podCIDRs are assigned by kube-controller-manager with --allocate-node-cidrs=true and --cluster-cidr ` +
            `(kubeadm init --pod-network-cidr=<Network>), or set spec.podCIDR on the node yourself`;
          if (options.exitOnMissingPodCidr) {
            notReady = msg;
            throw new ConfigError(`${msg}; not waiting because --exit-on-missing-podcidr is set`);
          }
          setNotReady(`${msg}; waiting for it`);
        }
        const query = {
          resourceVersion: rv,
          fieldSelector: `metadata.name=${name}`,
          timeoutSeconds: watchTimeout(),
        };
        watching: for await (const batch of watchStream(c, query, both)) {
          attempt = 0;
          for (const ev of batch) {
            if (ev.type === "ERROR") break watching;
            if (ev.type !== "ADDED" && ev.type !== "MODIFIED") continue;
            const n = parseKubeNode(ev.object);
            if (typeof n !== "string" && n.metadata.name === name && hasPodCidr(n)) {
              log.info("node got its podCIDR", { node: name, podCIDRs: n.spec?.podCIDRs ?? [] });
              return n;
            }
          }
        }
      } catch (e) {
        if (both.aborted || e instanceof ConfigError) throw e;
        if (!(e instanceof Gone)) {
          setNotReady(`waiting for node ${name}: ${(e as Error).message}`);
          await clock.sleep(backoff(attempt++, { random }), both);
        }
      }
    }
  };

  const readOwnNode = async (signal?: AbortSignal): Promise<KubeNode | null> => {
    const name = await nodeName(signal);
    try {
      const raw = await retrying(
        `reading node ${name}`,
        (c) => call(c, "GET", `/api/v1/nodes/${encodeURIComponent(name)}`, signal),
        signal,
      );
      const n = parseKubeNode(raw);
      if (typeof n === "string") throw new StoreUnavailableError(`node ${name} is ${n}`);
      return n;
    } catch (e) {
      if (e instanceof ApiCallError && e.code === 404) return null;
      throw e;
    }
  };

  const patchStatus = (name: string, body: unknown, what: string, signal?: AbortSignal) =>
    retrying(
      what,
      (c) => call(c, "PATCH", `/api/v1/nodes/${encodeURIComponent(name)}/status`, signal, body),
      signal,
    );

  /** Publish `attrs` on the node when its annotations differ; returns what peers see. */
  const publish = async (
    name: string,
    node: KubeNode,
    attrs: LeaseAttrs,
    signal?: AbortSignal,
  ): Promise<LeaseAttrs> => {
    const { changes, published } = annotationUpdate(node.metadata.annotations ?? {}, attrs, keys);
    const changed = Object.keys(changes);
    if (changed.length) {
      if (changes[keys.publicIP] && changes[keys.publicIP] !== attrs.publicIP) {
        log.info("publishing the public IP from the node's overwrite annotation", {
          publicIP: changes[keys.publicIP],
          annotation: keys.publicIPOverwrite,
        });
      }
      await patchStatus(
        name,
        { metadata: { annotations: changes } },
        `patching node ${name}'s annotations`,
        signal,
      );
      log.debug("node annotations updated", { node: name, keys: changed });
    }
    return published;
  };

  const leaseOf = (name: string, node: KubeNode, cfg: NetworkConfig, attrs: LeaseAttrs): Lease => {
    const cidrs = podCidrsOf(node);
    if (typeof cidrs === "string") throw new ConfigError(cidrs, "spec.podCIDRs");
    const bad = checkPodCidrs(name, cidrs, cfg, netConfigPath);
    if (bad) throw new ConfigError(bad, "Network");
    // checkPodCidrs made sure each enabled family has its CIDR
    const v6 = cfg.enableIPv6 ? cidrs.v6 : undefined;
    const pair = subnetPair(cfg.enableIPv4 ? cidrs.v4 : undefined, v6);
    if (!pair) throw new ConfigError(`node ${name} has no podCIDR`, "spec.podCIDRs");
    return { ...pair, attrs, expiration: null };
  };

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
      config = parseNetworkConfig(text, {
        source: netConfigPath,
        onWarning: (m) => log.warn(m),
      });
      return config;
    },

    async acquire(cfg, req, signal) {
      config = cfg;
      const name = await nodeName(signal);
      const node = await waitForOwnNode(name, signal);
      const draft = leaseOf(name, node, cfg, req.attrs);
      const attrs = await publish(name, node, req.attrs, signal);
      notReady = null;
      log.info("lease acquired from the node's podCIDR", {
        node: name,
        ...(draft.subnet ? { subnet: formatIPv4Net(draft.subnet) } : {}),
        ...(draft.ipv6Subnet ? { ipv6Subnet: formatIPv6Net(draft.ipv6Subnet) } : {}),
        publicIP: attrs.publicIP || attrs.publicIPv6 || "",
      });
      return { ...draft, attrs };
    },

    async renew(lease, signal) {
      const name = await nodeName(signal);
      const node = await readOwnNode(signal);
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
      const attrs = await publish(name, node, lease.attrs, signal);
      return { ...lease, attrs, expiration: null };
    },

    async release(_lease, signal) {
      const name = await nodeName(signal);
      const node = await readOwnNode(signal);
      if (!node) return;
      const ann = node.metadata.annotations ?? {};
      const drop: Record<string, null> = {};
      for (
        const k of [
          keys.subnetKubeManaged,
          keys.backendType,
          keys.backendData,
          keys.backendV6Data,
          keys.publicIP,
          keys.publicIPv6,
        ]
      ) if (k in ann) drop[k] = null;
      if (Object.keys(drop).length === 0) return;
      await patchStatus(
        name,
        { metadata: { annotations: drop } },
        `removing node ${name}'s flannel annotations`,
        signal,
      );
      log.info("withdrew this node from the overlay", { node: name });
    },

    list,

    watch,

    status() {
      return notReady ?? null;
    },

    async markNetworkAvailable(signal) {
      if (!setCondition) return;
      const name = await nodeName(signal);
      await patchStatus(
        name,
        networkAvailablePatch(clock.now()),
        `setting node ${name}'s NetworkUnavailable condition`,
        signal,
      );
      log.info("node condition NetworkUnavailable=False set", { node: name });
    },

    nodeName,

    async nodeHints(signal) {
      const node = await readOwnNode(signal);
      if (!node) return {};
      const ann = node.metadata.annotations ?? {};
      const lease = nodeToLease(node, keys, config, netConfigPath);
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
