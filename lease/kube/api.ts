/**
 * The Kubernetes API client of the kube store: plain `fetch` + JSON with the
 * credentials of lease/kube/config.ts (or, for exec plugins and
 * auth-providers, lease/kube/client_node.ts, loaded only then), failures
 * mapped to {@link ApiCallError} with a message that says what to do, and
 * writes retried with backoff.
 *
 * Why not `@kubernetes/client-node` for the requests: importing it alone
 * costs ~120 MB and 0.5–0.7 s under Deno, more than the whole store listing
 * 5000 nodes; raw JSON halves the time and memory of a 5000-node list
 * compared with its typed models; and its undici transport ignores the CA
 * under Bun and crashes Deno on HTTP/2 shutdown. `deno task bench kube-config`
 * measures the builtin loader against client-node's.
 *
 * @module
 */

import { isAbortError, sleepQuietly } from "../../core/abort.ts";
import { backoff, type Clock, systemClock } from "../../core/clock.ts";
import {
  ConfigError,
  StoreUnavailableError,
  type StoreUnavailableOptions,
} from "../../core/errors.ts";
import type { Logger } from "../../core/log.ts";
import type { Counter } from "../../core/metrics.ts";
import { createFetch } from "../../core/runtime.ts";
import { type KubeConfigOptions, type KubeConnection, loadKubeConfig } from "./config.ts";

/** A failed API call with its HTTP status (0 = no answer: `unreachable` unless told otherwise). */
export class ApiCallError extends StoreUnavailableError {
  override name = "ApiCallError";
  constructor(message: string, readonly code: number, options?: StoreUnavailableOptions) {
    super(message, { ...options, unreachable: options?.unreachable ?? code === 0 });
  }
}

/** The API server, its credentials, and the fetch that reaches it. */
export interface KubeClient {
  readonly server: string;
  readonly conn: KubeConnection;
  readonly fetch: typeof fetch;
}

/** Options of {@link createKubeApi}. */
export interface KubeApiOptions {
  /** `--kubeconfig-file`; without it and without `apiUrl`, the in-cluster service account. */
  readonly kubeconfigFile?: string;
  /** `--kube-api-url`. */
  readonly apiUrl?: string;
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Prefix of the service account files (tests). */
  readonly inClusterPathPrefix?: string;
  /** `auto` (default), `builtin` or `client-node`: see the store's option. */
  readonly loader?: "auto" | "builtin" | "client-node";
  /** Attempts for a call that fails with a network error, 429 or 5xx (default 6). */
  readonly writeAttempts?: number;
  readonly logger: Logger;
  /** Counts failed requests (404, 409 and 410 are answers, not failures). */
  readonly errors?: Counter;
  readonly clock?: Clock;
  readonly random?: () => number;
}

/** The API as the store uses it. */
export interface KubeApi {
  /** The connected client (loaded on first use; a failed load is retried on the next call). */
  client(): Promise<KubeClient>;
  /**
   * One request with the current credentials; after a 401 whose token file
   * has changed since (a rotated service account token), once more.
   *
   * @throws {ApiCallError} When the credentials cannot be produced.
   */
  send(c: KubeClient, url: string | URL, init?: RequestInit): Promise<Response>;
  /**
   * One JSON request.
   *
   * @param what Names the call in errors, e.g. `reading node n1`.
   * @returns The decoded reply.
   * @throws {ApiCallError} On an HTTP error (with its status) or no answer (0).
   */
  request(
    c: KubeClient,
    method: string,
    path: string,
    what: string,
    options?: { signal?: AbortSignal; patch?: unknown },
  ): Promise<unknown>;
  /**
   * A failure as an {@link ApiCallError} that says what to do (aborts and
   * ConfigErrors pass through unchanged).
   *
   * @param failure A fetch error, an ApiCallError, or `{ code, body }` of an HTTP error.
   */
  error(c: KubeClient | undefined, what: string, failure: unknown): Error;
  /** Run `fn`, retrying network errors, 429 and 5xx with backoff (up to `writeAttempts`). */
  retrying<T>(what: string, fn: (c: KubeClient) => Promise<T>, signal?: AbortSignal): Promise<T>;
}

/**
 * The API client. Nothing is loaded or contacted until the first call.
 *
 * @param options Where the API server is, credentials, retry bound, logger.
 * @returns The client.
 * @example
 * ```ts
 * const api = createKubeApi({ kubeconfigFile: "/etc/kubernetes/kubelet.conf", env: {}, logger });
 * const c = await api.client();
 * const node = await api.request(c, "GET", "/api/v1/nodes/n1", "reading node n1");
 * ```
 */
export function createKubeApi(options: KubeApiOptions): KubeApi {
  const log = options.logger;
  const clock = options.clock ?? systemClock;
  const random = options.random ?? Math.random;
  const writeAttempts = options.writeAttempts ?? 6;
  let connected: Promise<KubeClient> | undefined;

  const connect = async (): Promise<KubeClient> => {
    const loadOptions: KubeConfigOptions = {
      kubeconfigFile: options.kubeconfigFile,
      apiUrl: options.apiUrl,
      env: options.env,
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
    // HTTP/1.1: over HTTP/2 Deno's fetch stalls 40 ms on every few pages of a
    // list (Nagle holds the next request behind a WINDOW_UPDATE; measured
    // against a TCP_NODELAY server: 10 pages of 300 kB in 107–161 ms, 14–20 ms
    // over HTTP/1.1). A watch takes a connection of its own.
    const doFetch = server.startsWith("https:")
      ? createFetch(conn.tls, { http1Only: true })
      : fetch;
    log.info("using the Kubernetes API", { server, source: conn.source, loader: conn.loader });
    return { server, conn, fetch: doFetch };
  };

  const client = (): Promise<KubeClient> => {
    connected ??= connect().catch((e) => {
      connected = undefined;
      throw e;
    });
    return connected;
  };

  const send = async (c: KubeClient, url: string | URL, init: RequestInit = {}) => {
    for (let again = false;; again = true) {
      let auth: Record<string, string>;
      try {
        auth = await c.conn.headers();
      } catch (e) {
        throw new ApiCallError(
          `cannot produce the Kubernetes credentials for ${c.server}: ${(e as Error).message}`,
          0,
          { cause: e, unreachable: false },
        );
      }
      const headers = new Headers(init.headers);
      for (const [k, val] of Object.entries(auth)) headers.set(k, val);
      if (!headers.has("accept")) headers.set("Accept", "application/json");
      const res = await c.fetch(url, { ...init, headers });
      if (res.status !== 401 || again || !(await c.conn.refresh())) return res;
      // read the short refusal to its end: the connection stays usable for the retry
      await res.arrayBuffer().catch(() => {});
      log.info("the API server rejected the token; retrying with the rotated one", {
        server: c.server,
      });
    }
  };

  const error = (c: KubeClient | undefined, what: string, failure: unknown): Error => {
    if (
      isAbortError(failure) || failure instanceof ConfigError || failure instanceof ApiCallError
    ) {
      return failure as Error;
    }
    const server = c?.server ?? "the Kubernetes API";
    const code = typeof (failure as { code?: unknown })?.code === "number"
      ? (failure as { code: number }).code
      : 0;
    if (code === 0) {
      options.errors?.inc({ store: "kube" });
      return new ApiCallError(
        `${what}: cannot reach the Kubernetes API at ${server}: ${
          (failure as Error)?.message ?? String(failure)
        }`,
        0,
        { cause: failure },
      );
    }
    let message = "";
    let reason = "";
    const body = (failure as { body?: unknown }).body;
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
    if (code !== 404 && code !== 409 && code !== 410) options.errors?.inc({ store: "kube" });
    return new ApiCallError(
      `${what}: ${code}${reason ? " " + reason : ""}${message ? ": " + message : ""}${hint}`,
      code,
      // a raw {code, body} of an HTTP error is already in the message
      failure instanceof Error ? { cause: failure } : undefined,
    );
  };

  const request = async (
    c: KubeClient,
    method: string,
    path: string,
    what: string,
    o: { signal?: AbortSignal; patch?: unknown } = {},
  ): Promise<unknown> => {
    let res: Response;
    let text: string;
    try {
      res = await send(c, c.server + path, {
        method,
        signal: o.signal,
        ...(o.patch === undefined ? {} : {
          body: JSON.stringify(o.patch),
          headers: { "Content-Type": "application/strategic-merge-patch+json" },
        }),
      });
      text = await res.text();
    } catch (e) {
      throw error(c, what, e);
    }
    if (!res.ok) throw error(c, what, { code: res.status, body: text });
    try {
      return JSON.parse(text);
    } catch (e) {
      throw new ApiCallError(
        `${what}: the API server at ${c.server} answered with something that is not JSON: ${
          JSON.stringify(text.slice(0, 120))
        }; is --kube-api-url the API server?`,
        res.status,
        { cause: e },
      );
    }
  };

  const retrying = async <T>(
    what: string,
    fn: (c: KubeClient) => Promise<T>,
    signal?: AbortSignal,
  ): Promise<T> => {
    const c = await client();
    for (let attempt = 0;; attempt++) {
      try {
        return await fn(c);
      } catch (raw) {
        const e = error(c, what, raw);
        const code = e instanceof ApiCallError ? e.code : -1;
        const transient = code === 0 || code === 429 || code >= 500;
        if (!transient || attempt + 1 >= writeAttempts || signal?.aborted) throw e;
        const delay = backoff(attempt, { random, base: 500, max: 8_000 });
        log.warn("Kubernetes API call failed, retrying", { what, error: e, retryInMs: delay });
        if (!(await sleepQuietly(clock, delay, signal))) throw signal!.reason;
      }
    }
  };

  return { client, send, request, error, retrying };
}
