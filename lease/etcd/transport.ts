/**
 * How weft's etcd client reaches etcd: POSTs of JSON to the gateway of one
 * of several endpoints, with plain `fetch` (no gRPC stack to load).
 *
 * - Endpoints: each request goes to the endpoint that last answered and
 *   fails over to the next on connection errors, timeouts and "unavailable"
 *   answers (HTTP 5xx other than 501). A refusal (4xx with a gRPC code) is
 *   etcd's answer, not a failure of the endpoint: it is not retried elsewhere.
 *   When every endpoint fails the error is `unreachable` if none answered at
 *   all (callers then retry within a second: see `retryDelay`).
 * - Timeouts: every attempt has `requestTimeoutMs` on the injected clock;
 *   for a stream, only until its headers are in.
 * - Auth: with user/password, a token from `/v3/auth/authenticate` rides in
 *   the `Authorization` header, shared by concurrent requests, and is
 *   fetched again when etcd calls it invalid (simple tokens expire after
 *   etcd's `--auth-token-ttl`, 5 min by default).
 *
 * @module
 */

import type * as v from "valibot";
import { isAbortError, linkedController, whenAborted } from "../../core/abort.ts";
import { type Clock, systemClock } from "../../core/clock.ts";
import type { Logger } from "../../core/log.ts";
import { nullLogger } from "../../core/log.ts";
import { createFetch, type TlsClientOptions } from "../../core/runtime.ts";
import { AuthReply, ErrorReply, EtcdError, GrpcCode, parseReply } from "./codec.ts";
import { clip } from "../../core/quote.ts";

/** Options of {@link EtcdTransport} (and of the client built on it). */
export interface EtcdTransportOptions {
  /** Client URLs, e.g. `["https://10.0.0.1:2379", "https://10.0.0.2:2379"]`. */
  readonly endpoints: readonly string[];
  /** User for etcd auth (with `password`). */
  readonly username?: string;
  readonly password?: string;
  /** CA and client certificate as PEM text (for `https://` endpoints). */
  readonly tls?: TlsClientOptions;
  /** Per-request timeout in ms (default 5000). Streams time out only while connecting. */
  readonly requestTimeoutMs?: number;
  /** A fetch to use instead of one built from `tls` (tests). */
  readonly fetch?: typeof fetch;
  readonly logger?: Logger;
  /** Times requests out (default: the real clock). */
  readonly clock?: Clock;
}

/** A failure that another endpoint may not have: try the next one. */
class EndpointFailure extends Error {
  constructor(message: string, readonly code?: number, options?: ErrorOptions) {
    super(message, options);
  }
}

/** An opened request: its response (headers in), who answered, and how to let it go. */
export interface OpenedRequest {
  readonly response: Response;
  readonly endpoint: string;
  /** Stop the request (and its body), its timer and listeners. Safe to call twice. */
  release(): void;
}

/**
 * Endpoints, fail-over, timeouts and the auth token of one etcd client.
 *
 * @example
 * ```ts
 * const t = new EtcdTransport({ endpoints: ["http://127.0.0.1:2379"] });
 * const r = await t.call("/v3/kv/range", { key: btoa("/k") }, RangeReply);
 * ```
 */
export class EtcdTransport {
  readonly endpoints: readonly string[];
  /** Per-attempt timeout, ms. */
  readonly requestTimeoutMs: number;
  readonly #fetch: typeof fetch;
  readonly #log: Logger;
  readonly #clock: Clock;
  readonly #username?: string;
  readonly #password?: string;
  #token?: Promise<string>;
  #current = 0;
  readonly #closed = new AbortController();

  /**
   * @param options Endpoints, credentials, TLS, timeout, clock.
   * @throws {TypeError} When no endpoint is given, or an endpoint is not an
   *   http(s) URL, or only one of username/password is given.
   */
  constructor(options: EtcdTransportOptions) {
    if (options.endpoints.length === 0) {
      throw new TypeError("Cannot create an etcd client: no endpoints given (--etcd-endpoints)");
    }
    this.endpoints = options.endpoints.map(checkEndpoint);
    if (!!options.username !== !!options.password) {
      throw new TypeError(
        "Cannot authenticate to etcd: give both --etcd-username and --etcd-password, or neither",
      );
    }
    this.#username = options.username;
    this.#password = options.password;
    this.#fetch = options.fetch ?? createFetch(options.tls);
    this.requestTimeoutMs = options.requestTimeoutMs ?? 5000;
    this.#log = options.logger ?? nullLogger;
    this.#clock = options.clock ?? systemClock;
  }

  /** The endpoint requests go to first. */
  get currentEndpoint(): string {
    return this.endpoints[this.#current];
  }

  /** Whether requests carry a user's token. */
  get authenticates(): boolean {
    return this.#username !== undefined;
  }

  /** Forget the token (etcd called it invalid): the next request fetches a new one. */
  dropToken(): void {
    this.#token = undefined;
  }

  /** Aborts when the client is closed (long-running calls end with it). */
  get closedSignal(): AbortSignal {
    return this.#closed.signal;
  }

  /** The client's logger (for the calls built on this transport). */
  get logger(): Logger {
    return this.#log;
  }

  /** The client's clock. */
  get clock(): Clock {
    return this.#clock;
  }

  /**
   * One unary call with fail-over, re-authentication and validation.
   *
   * @param path e.g. `/v3/kv/range`.
   * @param body The request (JSON-encoded here).
   * @param schema What the reply must match.
   * @param signal Cancels the call (rejected with the signal's reason, no fail-over).
   * @param options `firstMessage`: a streaming RPC whose first line is the answer
   *   (the keep-alive); the stream is closed after it.
   * @returns The validated reply.
   * @throws {EtcdError} When no endpoint answers (naming each and what failed),
   *   or etcd refuses the call (with its gRPC code).
   */
  async call<T extends v.GenericSchema>(
    path: string,
    body: unknown,
    schema: T,
    signal?: AbortSignal,
    options: { firstMessage?: boolean } = {},
  ): Promise<v.InferOutput<T>> {
    const payload = JSON.stringify(body);
    for (let attempt = 0;; attempt++) {
      const { response, endpoint, release } = await this.open(path, payload, signal, {
        timeoutWholeRequest: true,
      });
      let text: string;
      try {
        text = options.firstMessage ? await firstLine(response) : await response.text();
      } catch (e) {
        release();
        if (signal?.aborted) throw signal.reason;
        if (attempt < this.endpoints.length) {
          this.#current = (this.#current + 1) % this.endpoints.length;
          continue;
        }
        throw new EtcdError(
          `etcd at ${endpoint}: reading the answer to ${path} failed: ${
            isAbortError(e) ? "timed out" : e
          }`,
          endpoint,
          undefined,
          { cause: e, unreachable: true },
        );
      }
      release();
      if (!response.ok) {
        const err = parseReply(text, ErrorReply, endpoint, path);
        const message = clip(err.message ?? err.error ?? text);
        if (err.code === GrpcCode.Unauthenticated && this.#username && attempt === 0) {
          this.#log.info("etcd auth token expired, authenticating again", { endpoint });
          this.dropToken();
          continue;
        }
        throw new EtcdError(
          `etcd at ${endpoint} refused ${path}: ${message}${
            /user name is empty/.test(message)
              ? " (etcd has auth enabled: give --etcd-username and --etcd-password)"
              : ""
          }`,
          endpoint,
          err.code,
        );
      }
      return parseReply(text, schema, endpoint, path);
    }
  }

  /**
   * Send a POST to each endpoint in turn (starting with the current one)
   * until one answers; return once its headers are in.
   *
   * @param path e.g. `/v3/watch`.
   * @param body JSON text.
   * @param signal Cancels the request, its body included.
   * @param options `timeoutWholeRequest`: keep the timeout running until
   *   {@link OpenedRequest.release} (unary calls); otherwise it ends with the
   *   headers (streams).
   * @returns The response; always `release()` it.
   * @throws {EtcdError} When every endpoint fails, or authentication is refused.
   */
  async open(
    path: string,
    body: string,
    signal?: AbortSignal,
    options: { timeoutWholeRequest?: boolean } = {},
  ): Promise<OpenedRequest> {
    const failures: string[] = [];
    /** Whether some endpoint answered (with an error status) rather than not at all. */
    let answered = false;
    const n = this.endpoints.length;
    for (let i = 0; i < n; i++) {
      const idx = (this.#current + i) % n;
      const endpoint = this.endpoints[idx];
      const timer = linkedController({
        timeoutMs: this.requestTimeoutMs,
        clock: this.#clock,
        what: `etcd ${path}`,
      });
      const request = linkedController({ parents: [signal, this.#closed.signal, timer.signal] });
      const release = () => {
        timer.dispose();
        request.abort();
        request.dispose();
      };
      try {
        if (signal?.aborted) throw signal.reason;
        if (this.#closed.signal.aborted) throw this.#closed.signal.reason;
        const token = await this.#authToken(endpoint, request.signal);
        request.signal.throwIfAborted();
        const headers: Record<string, string> = { "content-type": "application/json" };
        if (token) headers.authorization = token;
        const response = await this.#fetch(`${endpoint}${path}`, {
          method: "POST",
          body,
          headers,
          signal: request.signal,
        });
        if (response.status >= 500 && response.status !== 501) {
          const text = await response.text().catch(() => "");
          throw new EndpointFailure(`HTTP ${response.status} ${text.slice(0, 200)}`.trim());
        }
        if (!options.timeoutWholeRequest) timer.dispose();
        if (i > 0) {
          this.#log.warn("etcd endpoint failed over", {
            from: this.endpoints[this.#current],
            to: endpoint,
            errors: failures.join("; "),
          });
        }
        this.#current = idx;
        return { response, endpoint, release };
      } catch (e) {
        release();
        if (signal?.aborted) throw signal.reason;
        if (this.#closed.signal.aborted) throw this.#closed.signal.reason;
        if (e instanceof EtcdError) throw e;
        if (e instanceof EndpointFailure) answered = true;
        const why = isAbortError(e)
          ? `no answer within ${this.requestTimeoutMs} ms`
          : (e as Error)?.message ?? String(e);
        failures.push(`${endpoint}: ${why}`);
      }
    }
    throw new EtcdError(
      `etcd unreachable: ${path} failed on every endpoint (${failures.join("; ")}); ` +
        `check that etcd runs and --etcd-endpoints (and TLS files) are right`,
      this.endpoints[(this.#current + n - 1) % n],
      undefined,
      { unreachable: !answered },
    );
  }

  /** Stop in-flight requests; later calls fail. */
  close(): void {
    this.#closed.abort(new EtcdError("etcd client closed", this.currentEndpoint));
  }

  /** The token for `endpoint`'s cluster, fetched once for all waiting requests. */
  async #authToken(endpoint: string, signal: AbortSignal): Promise<string | undefined> {
    if (!this.#username) return undefined;
    if (!this.#token) {
      const p = this.#authenticate(endpoint);
      this.#token = p;
      p.catch(() => {
        if (this.#token === p) this.#token = undefined;
      });
    }
    signal.throwIfAborted();
    // `signal` is one attempt's: it aborts when the attempt is released, so
    // this listener does not outlive the request
    const aborted = whenAborted(signal).then(() => Promise.reject(signal.reason));
    aborted.catch(() => {});
    return await Promise.race([this.#token, aborted]);
  }

  /**
   * Fetch a token. Shared by every request waiting for one, so one caller's
   * abort must not fail the others: it has its own timeout.
   */
  async #authenticate(endpoint: string): Promise<string> {
    const call = linkedController({
      parents: [this.#closed.signal],
      timeoutMs: this.requestTimeoutMs,
      clock: this.#clock,
      what: "etcd authentication",
    });
    let res: Response;
    let text: string;
    try {
      res = await this.#fetch(`${endpoint}/v3/auth/authenticate`, {
        method: "POST",
        body: JSON.stringify({ name: this.#username, password: this.#password }),
        signal: call.signal,
      });
      text = await res.text();
    } finally {
      call.dispose();
    }
    const path = "/v3/auth/authenticate";
    if (!res.ok) {
      const err = parseReply(text, ErrorReply, endpoint, path);
      if (res.status >= 500 || err.code === GrpcCode.Unavailable) {
        throw new EndpointFailure(err.message ?? text, err.code);
      }
      throw new EtcdError(
        `etcd at ${endpoint} refused user ${JSON.stringify(this.#username)}: ${
          err.message ?? text
        }; check --etcd-username and --etcd-password`,
        endpoint,
        err.code,
      );
    }
    const token = parseReply(text, AuthReply, endpoint, path).token;
    if (!token) {
      throw new EtcdError(
        `etcd at ${endpoint} gave no auth token: is auth enabled there (etcdctl auth enable)?`,
        endpoint,
      );
    }
    this.#log.debug("authenticated to etcd", { endpoint, user: this.#username });
    return token;
  }
}

/** The endpoint without trailing slashes, or a TypeError saying how to write it. */
function checkEndpoint(e: string): string {
  let url: URL;
  try {
    url = new URL(e);
  } catch {
    throw new TypeError(
      `Cannot use etcd endpoint ${
        JSON.stringify(e)
      }: not a URL; write it like http://127.0.0.1:2379`,
    );
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new TypeError(
      `Cannot use etcd endpoint ${JSON.stringify(e)}: scheme must be http or https`,
    );
  }
  return e.replace(/\/+$/, "");
}

/** The first line of a streaming reply; the stream is closed after it. */
async function firstLine(response: Response): Promise<string> {
  const reader = response.body!.getReader();
  const decoder = new TextDecoder();
  let text = "";
  try {
    while (!text.includes("\n")) {
      const c = await reader.read();
      if (c.done) break;
      text += decoder.decode(c.value, { stream: true });
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
  return text.split("\n")[0];
}
