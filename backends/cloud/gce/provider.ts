/**
 * The GCE route provider: weft's route mode on Google Compute Engine, where
 * each host's pod subnet is a VPC route whose next hop is that VM.
 *
 * Cloud state it writes: one route per lease in the project, named as
 * flannel named them (`flannel-10-244-1-0-24`, so a cluster moving from
 * flannel keeps its routes), with `destRange` = the subnet, `network` = the
 * VM's network selfLink (the seam's "table"), `nextHopInstance` = the VM's
 * selfLink (the seam's "target"), priority 1000 and the description
 * {@link WEFT_ROUTE_DESCRIPTION}. GCE cannot change a route in place, so
 * `replace` is delete + insert. Owned routes (weft's description, or
 * flannel's name form with an instance next hop) are the only ones the
 * reconcile loop may touch.
 *
 * Discovery reads the metadata server (project, zone, `instance/name` — not
 * the hostname —, network) and makes no API call but one `routes.list` of a
 * single route, which proves the endpoint, token, project and
 * `compute.routes.list` before the agent goes on. Insert and delete return
 * an Operation; the provider waits with `globalOperations.wait` until it is
 * DONE (the call may return earlier, RUNNING: it waits again, pausing
 * `operationPollMs` when the answer came back quickly), and an error inside
 * the DONE operation (`QUOTA_EXCEEDED`) is the call's error. Calls per
 * action, with the operation answered within one wait: create 2 (insert,
 * wait), remove 3 (get, delete, wait), replace 5 (get, delete, wait,
 * insert, wait; 1 when the route already points at the target), list 1 per
 * 500 routes.
 *
 * The client library (`@google-cloud/compute`, REST) is loaded on the first
 * API call, from `sdk.ts`. The endpoint follows gcloud's
 * `CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE`; the token is the metadata
 * server's, sent as `Authorization: Bearer`. No call is retried here: one
 * provider call makes exactly the HTTP requests listed above, and the
 * reconcile loop retries with its own back-off.
 *
 * @module
 */

import process from "node:process";
import { linkedController } from "../../../core/abort.ts";
import { type Clock, systemClock } from "../../../core/clock.ts";
import {
  type ProviderRoute,
  type ProviderSelf,
  ROUTE_PROVIDER_API_VERSION,
  type RouteProvider,
  RouteProviderError,
} from "../provider.ts";
import { type CallContext, describeApiError, describeOperationError } from "./errors.ts";
import { createGceMetadata, type GceMetadata } from "./metadata.ts";
import {
  canonicalDestination,
  canonicalLink,
  instanceLink,
  isOwnedRoute,
  networkLink,
  parseNetworkLink,
  parseResourceLink,
  ROUTE_PRIORITY,
  routeName,
  WEFT_ROUTE_DESCRIPTION,
} from "./names.ts";
import type { CallOptions, ComputeClients, IOperation, IRoute } from "./sdk.ts";

/** The route provider seam this module implements (checked by `loadCloudModule`). */
export const API_VERSION = ROUTE_PROVIDER_API_VERSION;

/** Options of {@link createGceRouteProvider}. */
export interface GceProviderOptions {
  /** The metadata client (default: one made from `env` and `clock`). */
  readonly metadata?: GceMetadata;
  /** Environment: `CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE`, `GCE_METADATA_HOST` (default `process.env`). */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Clock for timeouts and operation pacing (default the system clock). */
  readonly clock?: Clock;
  /**
   * Project that holds the network (default: this VM's project; in a shared
   * VPC, the host project's number as the metadata server gives it).
   */
  readonly project?: string;
  /** Network name or selfLink (default: the network of the VM's first NIC). */
  readonly network?: string;
  /** Description written on weft's routes, and recognised as weft's mark. */
  readonly description?: string;
  /** Timeout of one API call (default 30 s). */
  readonly callTimeoutMs?: number;
  /** How long to wait for one operation to be DONE (default 5 min). */
  readonly operationTimeoutMs?: number;
  /** Pause before waiting again when a wait returned quickly, not DONE (default 1 s). */
  readonly operationPollMs?: number;
  /** Load only the protos of the two services weft calls (default true). */
  readonly leanProtos?: boolean;
}

/** The provider, with a way to release the API clients. */
export interface GceRouteProvider extends RouteProvider {
  /** Close the API clients (if they were loaded). */
  close(): Promise<void>;
}

/** Where the client library connects. */
export interface ComputeEndpoint {
  readonly apiEndpoint: string;
  readonly port: number;
  readonly protocol: "http" | "https";
  /** As text, for messages. */
  readonly url: string;
}

/**
 * The Compute endpoint from gcloud's override variable, mapped onto the
 * client's `apiEndpoint`/`port`/`protocol`.
 *
 * @param env The environment.
 * @returns The endpoint (default `https://compute.googleapis.com/compute/v1/`).
 * @throws {RouteProviderError} `invalid` when the override is no URL, or its
 *   path is not `/compute/v1/` (the client always appends that path).
 */
export function computeEndpoint(
  env: Readonly<Record<string, string | undefined>> = process.env,
): ComputeEndpoint {
  const raw = env.CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE?.trim();
  if (!raw) {
    return {
      apiEndpoint: "compute.googleapis.com",
      port: 443,
      protocol: "https",
      url: "https://compute.googleapis.com/compute/v1/",
    };
  }
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new RouteProviderError(
      "invalid",
      `Cannot use CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE=${raw}: it is not a URL; ` +
        "expected e.g. https://compute.googleapis.com/compute/v1/",
    );
  }
  const path = url.pathname.replace(/\/+$/, "");
  if (
    (url.protocol !== "http:" && url.protocol !== "https:") ||
    (path !== "" && path !== "/compute/v1") || url.search !== ""
  ) {
    throw new RouteProviderError(
      "invalid",
      `Cannot use CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE=${raw}: weft speaks Compute v1 over ` +
        "http(s) at the path /compute/v1/ only; expected e.g. https://compute.googleapis.com/compute/v1/",
    );
  }
  const protocol = url.protocol === "http:" ? "http" : "https";
  return {
    apiEndpoint: url.hostname.replace(/^\[(.*)\]$/, "$1"),
    port: url.port ? Number(url.port) : protocol === "http" ? 80 : 443,
    protocol,
    url: `${url.protocol}//${url.host}/compute/v1/`,
  };
}

const CALL_HEADER = "x-weft-call";

/** What gax hands the auth client's `fetch` (a gaxios-style request). */
interface GaxFetchInit {
  method?: string;
  headers?: HeadersInit;
  body?: BodyInit | null;
  signal?: AbortSignal;
  validateStatus?: (status: number) => boolean;
}

/**
 * Make the GCE route provider.
 *
 * @param options Metadata client, environment, overrides and timeouts.
 * @returns The provider; `close()` it when done.
 * @throws {RouteProviderError} `invalid` for a bad endpoint override.
 * @example
 * ```ts
 * const gce = createGceRouteProvider();
 * const self = await gce.discover();
 * await gce.create(self.tables[0], "10.244.1.0/24", self.target);
 * await gce.close();
 * ```
 */
export function createGceRouteProvider(options: GceProviderOptions = {}): GceRouteProvider {
  const env = options.env ?? process.env;
  const clock = options.clock ?? systemClock;
  const md = options.metadata ?? createGceMetadata({ env, clock });
  const endpoint = computeEndpoint(env);
  const description = options.description ?? WEFT_ROUTE_DESCRIPTION;
  const callTimeoutMs = options.callTimeoutMs ?? 30_000;
  const operationTimeoutMs = options.operationTimeoutMs ?? 5 * 60_000;
  const operationPollMs = options.operationPollMs ?? 1000;

  const callSignals = new Map<string, AbortSignal>();
  let callSeq = 0;

  /** The auth client gax calls: adds the metadata token, honours our per-call signal. */
  const authClient = {
    async getRequestHeaders() {
      return new Headers({ authorization: `Bearer ${await md.token()}` });
    },
    async fetch(url: string, init: GaxFetchInit = {}): Promise<Response> {
      const headers = new Headers(init.headers);
      const id = headers.get(CALL_HEADER);
      headers.delete(CALL_HEADER);
      const call = linkedController({
        parents: [init.signal, id ? callSignals.get(id) : undefined],
        timeoutMs: callTimeoutMs,
        clock,
        what: `Compute API request ${init.method ?? "GET"} ${url}`,
      });
      try {
        headers.set("authorization", `Bearer ${await md.token(call.signal)}`);
        const res = await fetch(url, {
          method: init.method,
          headers,
          body: init.body,
          signal: call.signal,
        });
        if (res.status === 401) md.invalidateToken();
        if (init.validateStatus && !init.validateStatus(res.status)) {
          const data = await res.text();
          throw Object.assign(new Error(data), {
            status: res.status,
            response: { status: res.status, data },
          });
        }
        return res;
      } finally {
        call.dispose();
      }
    },
  };

  let clients: Promise<ComputeClients> | null = null;
  const load = () =>
    clients ??= import("./sdk.ts").then(
      (sdk) =>
        sdk.createComputeClients({
          apiEndpoint: endpoint.apiEndpoint,
          port: endpoint.port,
          protocol: endpoint.protocol,
          authClient,
        }, options.leanProtos ?? true),
      (e) => {
        clients = null;
        throw new RouteProviderError(
          "invalid",
          `Cannot load the Compute client library (@google-cloud/compute 7): ${
            (e as Error).message
          }. Install weft's dependencies (npm ci), or run a build that includes the gce backend`,
          { cause: e },
        );
      },
    );

  /** Run one API call with our options; classify its failure. */
  async function api<T>(
    ctx: CallContext,
    signal: AbortSignal | undefined,
    fn: (c: ComputeClients, opts: CallOptions) => Promise<T>,
  ): Promise<T> {
    signal?.throwIfAborted();
    const c = await load();
    const id = String(++callSeq);
    if (signal) callSignals.set(id, signal);
    try {
      return await fn(c, {
        // gax turns a finite timeout into an AbortSignal.timeout with a listener, which keeps
        // a Deno process alive until it fires (30 s after the last call, at agent shutdown);
        // an infinite one arms nothing. The auth client's fetch enforces callTimeoutMs on the
        // injected clock instead.
        timeout: Number.POSITIVE_INFINITY,
        retry: null,
        otherArgs: { headers: { [CALL_HEADER]: id } },
      });
    } catch (e) {
      if (signal?.aborted) throw signal.reason;
      if (e instanceof RouteProviderError) throw e;
      throw describeApiError(e, ctx);
    } finally {
      callSignals.delete(id);
    }
  }

  function context(method: string, subject: string, table: string, permission: string) {
    const { project } = parseTable(table);
    return { method, subject, project, table, permission, endpoint: endpoint.url };
  }

  function parseTable(table: string) {
    try {
      return parseNetworkLink(table);
    } catch (e) {
      throw new RouteProviderError("invalid", (e as Error).message, { cause: e });
    }
  }

  function nameOf(destination: string): string {
    try {
      return routeName(destination);
    } catch (e) {
      throw new RouteProviderError(
        "invalid",
        `Cannot route ${destination} on GCE: ${(e as Error).message} (weft's gce routes are IPv4)`,
        { cause: e },
      );
    }
  }

  async function listAll(
    project: string,
    filter: string,
    ctx: CallContext,
    signal?: AbortSignal,
  ): Promise<IRoute[]> {
    const out: IRoute[] = [];
    let pageToken: string | undefined;
    do {
      const [items, , raw] = await api(
        ctx,
        signal,
        (c, opts) =>
          c.routes.list({ project, filter, maxResults: 500, pageToken }, {
            ...opts,
            autoPaginate: false,
          }),
      );
      out.push(...items);
      pageToken = raw?.nextPageToken || undefined;
    } while (pageToken);
    return out;
  }

  const filterFor = (network: string) => `network eq ".*/global/networks/${network}"`;

  async function getRoute(name: string, ctx: CallContext, signal?: AbortSignal) {
    try {
      const [r] = await api(
        ctx,
        signal,
        (c, opts) => c.routes.get({ project: ctx.project, route: name }, opts),
      );
      return r;
    } catch (e) {
      if (e instanceof RouteProviderError && e.kind === "not-found") return null;
      throw e;
    }
  }

  /** Wait until an operation is DONE; its error becomes ours. */
  async function settle(op: IOperation, ctx: CallContext, signal?: AbortSignal): Promise<void> {
    const deadline = clock.now() + operationTimeoutMs;
    let cur = op;
    const waitCtx = {
      ...ctx,
      method: "globalOperations.wait",
      permission: "compute.globalOperations.get",
    };
    while (cur.status !== "DONE") {
      if (clock.now() >= deadline) {
        throw new RouteProviderError(
          "unavailable",
          `${ctx.method} on ${ctx.subject}: operation ${cur.name} is still ${cur.status} after ` +
            `${operationTimeoutMs / 1000} s; weft checks again on its next resync`,
        );
      }
      const started = clock.now();
      [cur] = await api(
        waitCtx,
        signal,
        (c, opts) => c.operations.wait({ project: ctx.project, operation: String(op.name) }, opts),
      );
      const quick = operationPollMs - (clock.now() - started);
      if (cur.status !== "DONE" && quick > 0) await clock.sleep(quick, signal);
    }
    if (cur.error?.errors?.length) {
      let held: number | undefined;
      if (cur.error.errors.some((x) => x.code === "QUOTA_EXCEEDED")) {
        held = await listAll(ctx.project, "", { ...ctx, method: "routes.list" }, signal)
          .then((all) => all.length, () => undefined);
      }
      throw describeOperationError(cur, ctx, held);
    }
  }

  function sameNetwork(link: string | null | undefined, table: string): boolean {
    const a = link ? parseResourceLink(link)?.rest : undefined;
    return a !== undefined && a === parseResourceLink(table)?.rest;
  }

  const describeRoute = (r: IRoute) =>
    `${r.name} (${r.destRange}) via ${
      r.nextHopInstance ?? r.nextHopIp ?? r.nextHopGateway ?? r.nextHopNetwork ?? "no next hop"
    } in network ${r.network}`;

  async function insert(table: string, destination: string, target: string, signal?: AbortSignal) {
    const name = nameOf(destination);
    const dest = canonicalDestination(destination)!;
    const ctx = context("routes.insert", `route ${name} (${dest})`, table, "compute.routes.create");
    const routeResource: IRoute = {
      name,
      destRange: dest,
      network: canonicalLink(table),
      nextHopInstance: canonicalLink(target),
      priority: ROUTE_PRIORITY,
      description,
    };
    let op: IOperation;
    try {
      [{ latestResponse: op }] = await api(
        ctx,
        signal,
        (c, opts) => c.routes.insert({ project: ctx.project, routeResource }, opts),
      );
    } catch (e) {
      if (!(e instanceof RouteProviderError) || e.kind !== "exists") throw e;
      const there = await getRoute(name, { ...ctx, method: "routes.get" }, signal).catch(() =>
        null
      );
      const where = there ? `it exists already: ${describeRoute(there)}` : "it exists already";
      let fix = "";
      if (there && !sameNetwork(there.network, table)) {
        fix = `. It belongs to another network: another cluster in project ${ctx.project} uses ` +
          "the same pod network; give the clusters distinct Network ranges";
      } else if (
        there?.nextHopInstance && canonicalLink(there.nextHopInstance) === canonicalLink(target)
      ) {
        fix = ", already to this target: nothing to change";
      } else if (there) {
        fix = isOwnedRoute(there, description)
          ? ". It is weft's or flannel's: replace() points it at the new target"
          : ". It is not weft's (no weft description, not flannel's name form with an instance " +
            "next hop): delete it by hand if this subnet is weft's";
      }
      throw new RouteProviderError(
        "exists",
        `Cannot create route ${name} for ${dest} via ${target} in ${table}: ${where}${fix}`,
        { cause: e },
      );
    }
    await settle(op, ctx, signal);
  }

  async function deleteRoute(name: string, ctx: CallContext, signal?: AbortSignal) {
    const [{ latestResponse: op }] = await api(
      ctx,
      signal,
      (c, opts) => c.routes.delete({ project: ctx.project, route: name }, opts),
    );
    await settle(op, ctx, signal);
  }

  return {
    name: "gce",

    async discover(signal) {
      const me = await md.instance(signal);
      const sharedVpc = me.network.projectNumber !== me.projectNumber;
      let table: string;
      if (options.network && parseResourceLink(options.network)) {
        table = canonicalLink(options.network);
      } else {
        const project = options.project ?? (sharedVpc ? me.network.projectNumber : me.projectId);
        table = networkLink(project, options.network ?? me.network.name);
      }
      const { project, network } = parseTable(table);
      const ctx = context(
        "routes.list",
        `the routes of network ${network}`,
        table,
        "compute.routes.list",
      );
      await api(
        ctx,
        signal,
        (c, opts) =>
          c.routes.list({ project, filter: filterFor(network), maxResults: 1 }, {
            ...opts,
            autoPaginate: false,
          }),
      );
      const self: ProviderSelf = {
        target: instanceLink(me.projectId, me.zone, me.name),
        tables: [table],
        location: table,
      };
      return self;
    },

    async list(table, signal) {
      const { project, network } = parseTable(table);
      const ctx = context(
        "routes.list",
        `the routes of network ${network}`,
        table,
        "compute.routes.list",
      );
      const routes = await listAll(project, filterFor(network), ctx, signal);
      const out: ProviderRoute[] = [];
      for (const r of routes) {
        if (!sameNetwork(r.network, table)) continue;
        const gone = (r.warnings ?? []).some((w) => w.code === "NEXT_HOP_INSTANCE_NOT_FOUND");
        out.push({
          table,
          destination: canonicalDestination(r.destRange ?? "") ?? String(r.destRange),
          target: r.nextHopInstance && !gone ? canonicalLink(r.nextHopInstance) : null,
          owned: isOwnedRoute(r, description),
          name: r.name ?? undefined,
        });
      }
      return out;
    },

    create: insert,

    async replace(table, destination, target, signal) {
      const name = nameOf(destination);
      const ctx = context(
        "routes.get",
        `route ${name} (${destination})`,
        table,
        "compute.routes.get",
      );
      const there = await getRoute(name, ctx, signal);
      if (!there) {
        throw new RouteProviderError(
          "not-found",
          `Cannot replace route ${name} for ${destination} in ${table}: there is no such route`,
        );
      }
      if (!sameNetwork(there.network, table)) {
        throw new RouteProviderError(
          "invalid",
          `Cannot replace route ${name}: the route of that name is ${describeRoute(there)}, ` +
            `not in ${table}; another cluster in project ${ctx.project} uses the same pod network`,
        );
      }
      if (
        there.nextHopInstance && canonicalLink(there.nextHopInstance) === canonicalLink(target) &&
        canonicalDestination(there.destRange ?? "") === canonicalDestination(destination)
      ) return;
      await deleteRoute(name, {
        ...ctx,
        method: "routes.delete",
        permission: "compute.routes.delete",
      }, signal);
      try {
        await insert(table, destination, target, signal);
      } catch (e) {
        if (!(e instanceof RouteProviderError)) throw e;
        throw new RouteProviderError(
          e.kind === "exists" ? "unavailable" : e.kind,
          `Replacing route ${name}: the old route is deleted but the new one is not in place: ${e.message}`,
          { cause: e, retryAfterMs: e.retryAfterMs },
        );
      }
    },

    async remove(table, destination, signal) {
      const name = nameOf(destination);
      const ctx = context(
        "routes.get",
        `route ${name} (${destination})`,
        table,
        "compute.routes.get",
      );
      const there = await getRoute(name, ctx, signal);
      if (!there || !sameNetwork(there.network, table)) return;
      try {
        await deleteRoute(name, {
          ...ctx,
          method: "routes.delete",
          permission: "compute.routes.delete",
        }, signal);
      } catch (e) {
        if (e instanceof RouteProviderError && e.kind === "not-found") return;
        throw e;
      }
    },

    async close() {
      const c = clients;
      clients = null;
      if (c) await (await c).close();
    },
  };
}
