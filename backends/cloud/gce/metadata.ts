/**
 * A small client of the GCE metadata server: who this VM is (project,
 * zone, instance name, network) and the access token of its service
 * account, which the Compute API calls carry as `Authorization: Bearer`.
 *
 * Every request sends `Metadata-Flavor: Google`, and every reply must carry
 * it back: a server that answers without it (a captive portal, a proxy,
 * another service on that address) is not a metadata server, and nothing
 * it says is used. The host is `GCE_METADATA_HOST` (or `GCE_METADATA_IP`,
 * as Google's client libraries read them) when set, else
 * `metadata.google.internal`. The instance name comes from `instance/name`,
 * never from the hostname (flannel's bug: a VM with a custom hostname got
 * routes to an instance that does not exist).
 *
 * The token is cached and fetched again before it expires: at
 * `tokenRefreshMarginMs` (5 min) before its end, or at half its life when it
 * came with less than twice that margin (the metadata server hands out the
 * same token until shortly before expiry, so a short-lived reply must not
 * make every call fetch again), with one request in flight however many
 * callers ask.
 *
 * @module
 */

import process from "node:process";
import * as v from "valibot";
import { linkedController } from "../../../core/abort.ts";
import { type Clock, systemClock } from "../../../core/clock.ts";
import { RouteProviderError } from "../provider.ts";

/** The metadata server's name on every GCE VM. */
export const DEFAULT_METADATA_HOST = "metadata.google.internal";

/** Who this VM is, as the metadata server says. */
export interface GceInstance {
  /** Project id, e.g. `my-project` (`project/project-id`). */
  readonly projectId: string;
  /** Project number, e.g. `123456789012` (`project/numeric-project-id`). */
  readonly projectNumber: string;
  /** Zone name, e.g. `europe-west1-b` (from `instance/zone`). */
  readonly zone: string;
  /** Instance name (`instance/name`), not the hostname. */
  readonly name: string;
  /**
   * The first NIC's network (`instance/network-interfaces/0/network`): its
   * project *number* (differs from {@link projectNumber} in a shared VPC)
   * and name.
   */
  readonly network: { readonly projectNumber: string; readonly name: string };
}

/** Options of {@link createGceMetadata}. */
export interface GceMetadataOptions {
  /** `host[:port]` of the metadata server; default from the environment, else `metadata.google.internal`. */
  readonly host?: string;
  /** Where `GCE_METADATA_HOST` is read (default `process.env`). */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Clock for timeouts and token expiry (default the system clock). */
  readonly clock?: Clock;
  /** Timeout of one request (default 3000 ms). */
  readonly timeoutMs?: number;
  /** Fetch the token again this long before it expires (default 5 min). */
  readonly tokenRefreshMarginMs?: number;
  /** The fetch to use (default the global one). */
  readonly fetch?: typeof fetch;
}

/** A metadata client, see {@link createGceMetadata}. */
export interface GceMetadata {
  /** `http://<host>/computeMetadata/v1/`. */
  readonly base: string;
  /**
   * Read one value as text.
   * @throws {RouteProviderError} `unavailable` (no metadata server, or a
   *   reply without `Metadata-Flavor: Google`), `invalid` (no such key).
   */
  get(path: string, signal?: AbortSignal): Promise<string>;
  /** Project, zone, instance name and network, read in parallel and checked. */
  instance(signal?: AbortSignal): Promise<GceInstance>;
  /**
   * The service account's access token, from the cache while it is fresh.
   * @throws {RouteProviderError} `denied` when the VM has no service account.
   */
  token(signal?: AbortSignal): Promise<string>;
  /** Forget the cached token (the API refused it); the next call fetches one. */
  invalidateToken(): void;
  /** The access scopes of the service account's token. */
  scopes(signal?: AbortSignal): Promise<string[]>;
}

const TokenReply = v.object({
  access_token: v.pipe(v.string(), v.minLength(1)),
  expires_in: v.pipe(v.number(), v.integer(), v.minValue(1)),
  token_type: v.string(),
});

const ProjectId = v.pipe(v.string(), v.regex(/^[a-z][-a-z0-9.:]{4,61}[a-z0-9]$/));
const Digits = v.pipe(v.string(), v.regex(/^\d+$/));
const Name = v.pipe(v.string(), v.regex(/^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$/));
const ZonePath = v.pipe(v.string(), v.regex(/^projects\/\d+\/zones\/[a-z][-a-z0-9]*$/));
const NetworkPath = v.pipe(
  v.string(),
  v.regex(/^projects\/[^/]+\/networks\/[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$/),
);

/**
 * The metadata host from the environment: `GCE_METADATA_HOST`, else
 * `GCE_METADATA_IP`, else `metadata.google.internal`. A scheme, if given,
 * is dropped (the server speaks plain HTTP).
 *
 * @param env The environment.
 * @returns `host[:port]`.
 */
export function metadataHostFromEnv(
  env: Readonly<Record<string, string | undefined>> = process.env,
): string {
  const raw = env.GCE_METADATA_HOST || env.GCE_METADATA_IP || DEFAULT_METADATA_HOST;
  return raw.trim().replace(/^https?:\/\//, "").replace(/\/+$/, "");
}

/**
 * Make a metadata client.
 *
 * @param options Host, clock, timeouts.
 * @returns The client; it holds no connection, so there is nothing to close.
 * @example
 * ```ts
 * const md = createGceMetadata({ env: { GCE_METADATA_HOST: "127.0.0.1:8080" } });
 * const me = await md.instance();
 * console.log(me.projectId, me.zone, me.name);
 * ```
 */
export function createGceMetadata(options: GceMetadataOptions = {}): GceMetadata {
  const host = options.host ?? metadataHostFromEnv(options.env);
  const base = `http://${host}/computeMetadata/v1/`;
  const clock = options.clock ?? systemClock;
  const timeoutMs = options.timeoutMs ?? 3000;
  const margin = options.tokenRefreshMarginMs ?? 5 * 60_000;
  const doFetch = options.fetch ?? fetch;
  const hint =
    "weft's gce backend runs on a Compute Engine VM; elsewhere set GCE_METADATA_HOST to a metadata server";

  async function get(path: string, signal?: AbortSignal): Promise<string> {
    const url = base + path;
    const call = linkedController({
      parents: [signal],
      timeoutMs,
      clock,
      what: `GCE metadata request ${url}`,
    });
    let res: Response;
    let body: string;
    try {
      res = await doFetch(url, {
        headers: { "Metadata-Flavor": "Google" },
        signal: call.signal,
        redirect: "error",
      });
      body = await res.text();
    } catch (e) {
      if (signal?.aborted) throw signal.reason;
      const why = e instanceof Error ? e.message : String(e);
      throw new RouteProviderError(
        "unavailable",
        `Cannot reach the GCE metadata server at ${url}: ${why}. ${hint}`,
        { cause: e },
      );
    } finally {
      call.dispose();
    }
    if (res.headers.get("metadata-flavor") !== "Google") {
      throw new RouteProviderError(
        "unavailable",
        `The server at ${url} answered (HTTP ${res.status}) without the header ` +
          `'Metadata-Flavor: Google', so it is not a GCE metadata server and its reply is ignored. ${hint}`,
      );
    }
    if (res.status === 404) {
      throw new RouteProviderError(
        "invalid",
        `The GCE metadata server has no ${path} (HTTP 404 from ${url})`,
      );
    }
    if (!res.ok) {
      throw new RouteProviderError(
        "unavailable",
        `The GCE metadata server answered HTTP ${res.status} for ${url}: ${body.slice(0, 200)}`,
      );
    }
    return body.trim();
  }

  function check<T extends v.GenericSchema>(schema: T, value: unknown, path: string) {
    const r = v.safeParse(schema, value);
    if (r.success) return r.output as v.InferOutput<T>;
    throw new RouteProviderError(
      "unavailable",
      `The GCE metadata server sent an unexpected ${path}: ${JSON.stringify(value)} (${
        r.issues[0].message
      })`,
    );
  }

  async function instance(signal?: AbortSignal): Promise<GceInstance> {
    const [projectId, projectNumber, zonePath, name, networkPath] = await Promise.all([
      get("project/project-id", signal),
      get("project/numeric-project-id", signal),
      get("instance/zone", signal),
      get("instance/name", signal),
      get("instance/network-interfaces/0/network", signal),
    ]);
    const zone = check(ZonePath, zonePath, "instance/zone").split("/")[3];
    const [, netProject, , netName] = check(
      NetworkPath,
      networkPath,
      "instance/network-interfaces/0/network",
    ).split("/");
    return {
      projectId: check(ProjectId, projectId, "project/project-id"),
      projectNumber: check(Digits, projectNumber, "project/numeric-project-id"),
      zone,
      name: check(Name, name, "instance/name"),
      network: { projectNumber: netProject, name: netName },
    };
  }

  let cached: { value: string; refreshAt: number } | null = null;
  let inflight: Promise<string> | null = null;

  async function fetchToken(): Promise<string> {
    const path = "instance/service-accounts/default/token";
    let text: string;
    try {
      text = await get(path);
    } catch (e) {
      if (e instanceof RouteProviderError && e.kind === "invalid") {
        throw new RouteProviderError(
          "denied",
          `This VM has no service account (the metadata server has no ${path}): ` +
            "attach a service account with the route permissions (compute.routes.list, " +
            "compute.routes.get, compute.routes.create, compute.routes.delete, " +
            "compute.networks.updatePolicy, compute.globalOperations.get) and the " +
            "https://www.googleapis.com/auth/compute scope",
          { cause: e },
        );
      }
      throw e;
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = text;
    }
    const token = check(TokenReply, json, path);
    const life = token.expires_in * 1000;
    cached = {
      value: token.access_token,
      refreshAt: clock.now() + Math.max(life - margin, life / 2),
    };
    return token.access_token;
  }

  return {
    base,
    get,
    instance,
    async token(signal) {
      signal?.throwIfAborted();
      if (cached && clock.now() < cached.refreshAt) return cached.value;
      if (!inflight) {
        inflight = fetchToken().finally(() => (inflight = null));
        // a caller that gave up must not leave the shared request's failure unhandled
        inflight.catch(() => {});
      }
      if (!signal) return await inflight;
      let onAbort = () => {};
      try {
        return await Promise.race([
          inflight,
          new Promise<never>((_, reject) => {
            onAbort = () => reject(signal.reason);
            signal.addEventListener("abort", onAbort, { once: true });
          }),
        ]);
      } finally {
        signal.removeEventListener("abort", onAbort);
      }
    },
    invalidateToken() {
      cached = null;
    },
    async scopes(signal) {
      const text = await get("instance/service-accounts/default/scopes", signal);
      return text.split(/\s+/).filter((s) => s.length > 0);
    },
  };
}
