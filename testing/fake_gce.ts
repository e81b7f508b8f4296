/**
 * A fake Google Compute Engine for the gce route provider, faithful enough
 * that the real `@google-cloud/compute` client (REST transport) and any
 * metadata client can be pointed at it. HTTP servers on loopback (or a
 * given address), port 0, started and stopped by the test: a metadata server
 * per VM ({@link FakeGce.addVm} adds VMs) and one Compute API.
 *
 * **The metadata server** (`GCE_METADATA_HOST`, `fake_gce_metadata.ts`): `/computeMetadata/v1/…`
 * with `project/project-id`, `project/numeric-project-id`, `instance/zone`
 * (`projects/<number>/zones/<zone>`), `instance/name`, `instance/hostname`
 * (a custom hostname unlike the instance name, as on a real VM with one),
 * `instance/network-interfaces/0/network` (`projects/<number>/networks/<n>`),
 * `instance/service-accounts/default/{token,email,scopes}`. A request without
 * `Metadata-Flavor: Google`, or with `X-Forwarded-For`, is refused (403) as
 * the real server does; every reply carries `Metadata-Flavor: Google`
 * unless a test turns that off to play an impostor.
 *
 * **The Compute API** (`CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE`): under
 * `/compute/v1/projects/{project}/global/`: `routes` list (with `filter`,
 * `maxResults` ≤ 500, `pageToken`; sorted by name, as the API sorts), get,
 * insert, delete; `operations/{op}` get and `operations/{op}/wait`.
 * Insert and delete answer with an Operation that goes PENDING → RUNNING →
 * DONE after set delays (or stays RUNNING until the test completes it);
 * the change lands when it is DONE. `wait` answers when the operation is
 * DONE or after `waitTimeoutMs`, whichever is first — so it can return
 * RUNNING, as the real one does. Errors in Google's JSON shape: 401 for a
 * token the metadata server did not issue, 404 `notFound` (route, project,
 * referenced network or instance), 409 `alreadyExists`, 400 `invalid` /
 * `resourceNotReady`, 403 `rateLimitExceeded` (or 429) on demand, 403
 * `forbidden` per denied IAM permission (compute.routes.create needs
 * compute.networks.updatePolicy on the network too), 403 for a token without
 * a compute scope on writes, and `QUOTA_EXCEEDED` (quota `ROUTES`) inside a
 * DONE operation with `httpErrorStatusCode` 403. Links are accepted as full
 * URLs (any host) or partial paths and stored canonical; the project number
 * works as the project id. A deleted instance leaves its routes in place with
 * the warning `NEXT_HOP_INSTANCE_NOT_FOUND`, as GCE reports them.
 *
 * Every call is counted per method (`routes.insert`, `globalOperations.wait`,
 * `metadata.instance/name`, …) for the calls-per-join benchmark.
 *
 * @module
 */

import { type HttpServer, serveHttp } from "../core/runtime.ts";
import { formatIPv4Net, parseIPv4Net } from "../core/ip.ts";
import { evaluateFilter, parseFilter } from "./fake_gce_filter.ts";
import { type FakeVm, metadataHandler, type MetadataState } from "./fake_gce_metadata.ts";

const BASE = "https://www.googleapis.com/compute/v1/";
const NAME_RE = /^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$/;
const COMPUTE_SCOPES = [
  "https://www.googleapis.com/auth/compute",
  "https://www.googleapis.com/auth/cloud-platform",
];
const READ_SCOPES = [...COMPUTE_SCOPES, "https://www.googleapis.com/auth/compute.readonly"];

// deno-lint-ignore no-explicit-any
type Json = Record<string, any>;

/** Options of {@link startFakeGce}. */
export interface FakeGceOptions {
  readonly projectId?: string;
  readonly projectNumber?: string;
  /** This VM's zone and name (the metadata server's instance). */
  readonly zone?: string;
  readonly instanceName?: string;
  /** The hostname the VM reports: deliberately not the instance name. */
  readonly hostname?: string;
  /** The VM's address (`instance/network-interfaces/0/ip`), if any. */
  readonly ip?: string;
  /** Address both servers listen on (default 127.0.0.1; a lab's underlay address). */
  readonly listen?: string;
  /** Network of the VM's first NIC. */
  readonly network?: string;
  /** Lifetime of issued tokens in seconds (default 3599, as GCE). */
  readonly tokenLifetimeS?: number;
  /** Scopes of issued tokens (default cloud-platform). */
  readonly scopes?: readonly string[];
  /** PENDING for this long, then RUNNING for `runningMs` (defaults 2 ms and 5 ms). */
  readonly pendingMs?: number;
  readonly runningMs?: number;
  /** How long `wait` waits before answering a not yet DONE operation (default 2000 ms). */
  readonly waitTimeoutMs?: number;
  /** The project's `ROUTES` quota (default 250). */
  readonly routesQuota?: number;
}

/** An error as the Compute API sends it. */
export interface ApiErrorBody {
  readonly status: number;
  readonly body: Json;
}

interface Operation {
  json: Json;
  /** Applied when the operation becomes DONE; returns an error to record, if any. */
  effect: () => Json | null;
  waiters: (() => void)[];
  manual: boolean;
}

interface Route {
  json: Json;
}

/** A VM with its own metadata server, see {@link FakeGce.addVm}. */
export interface FakeVmHandle {
  readonly metadataHost: string;
  readonly instanceLink: string;
  /** `GCE_METADATA_HOST` of this VM and the shared Compute endpoint. */
  readonly env: Readonly<Record<string, string>>;
}

/** The running fake, see the module doc. */
export interface FakeGce {
  /** `host:port` for `GCE_METADATA_HOST`. */
  readonly metadataHost: string;
  /** `http://127.0.0.1:<port>/compute/v1/` for `CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE`. */
  readonly computeEndpoint: string;
  /** Environment pointing a client at this fake. */
  readonly env: Readonly<Record<string, string>>;
  readonly projectId: string;
  readonly projectNumber: string;
  /** Canonical selfLinks of the VM's network and of the VM itself. */
  readonly networkLink: string;
  readonly instanceLink: string;
  /** Calls per method so far. */
  readonly calls: Readonly<Record<string, number>>;
  /** Every access token the metadata servers issued (for tests that look for leaks). */
  readonly issuedTokens: readonly string[];
  resetCalls(): void;
  /** Resolves once `method` has been called `n` times in all. */
  waitForCalls(method: string, n: number): Promise<void>;
  addNetwork(name: string): string;
  /** An instance without a metadata server of its own (a peer VM); returns its selfLink. */
  addInstance(zone: string, name: string, ip?: string): string;
  /**
   * Another VM of the project, with its own metadata server (sharing tokens,
   * routes and faults): for tests and labs with several agents.
   */
  addVm(vm: { zone: string; name: string; ip?: string; hostname?: string }): Promise<FakeVmHandle>;
  /** The address given to an instance (`addInstance`, `addVm`, the `ip` option). */
  instanceIP(link: string): string | undefined;
  /** Delete an instance (by selfLink or `zone/name`); its routes stay, with a warning. */
  deleteInstance(link: string): void;
  /** Put a route in place directly (a route another tool or GCE wrote). */
  addRoute(route: Json): void;
  /** The project's routes as the API would list them. */
  routes(): Json[];
  /** The project's `ROUTES` quota. */
  setRoutesQuota(n: number): void;
  /** The next `calls` API calls fail with 403 `rateLimitExceeded` (or 429). */
  throttle(calls: number, status?: 403 | 429): void;
  /** Deny (or allow again) an IAM permission, e.g. `compute.routes.create`. */
  deny(permission: string): void;
  allow(permission: string): void;
  /** Scopes of tokens issued from now on. */
  setScopes(scopes: readonly string[]): void;
  /** Operations stay RUNNING until {@link completeOperations} (true) or run on their own. */
  holdOperations(hold: boolean): void;
  /** Finish every held operation now. */
  completeOperations(): void;
  /** The metadata server stops (false) or resumes (true) sending `Metadata-Flavor: Google`. */
  setMetadataFlavor(send: boolean): void;
  /** The VM has no service account from now on (token and scopes answer 404). */
  removeServiceAccount(): void;
  /** The next API call answers with this error instead. */
  failNext(error: ApiErrorBody): void;
  close(): Promise<void>;
}

/**
 * A Compute API error body.
 *
 * @param status HTTP status.
 * @param reason Legacy `errors[0].reason`, e.g. `notFound`.
 * @param message The message.
 * @param extra More fields of `error` (`status`, `details`).
 * @returns Status and body.
 */
export function apiError(status: number, reason: string, message: string, extra: Json = {}) {
  return {
    status,
    body: {
      error: {
        code: status,
        message,
        errors: [{
          message,
          domain: reason === "rateLimitExceeded" ? "usageLimits" : "global",
          reason,
        }],
        ...extra,
      },
    },
  };
}

/** Parse a full or partial Compute link into `projects/<p>/<rest>` parts. */
function splitLink(link: string): { project?: string; rest: string } {
  const m = /^(?:https?:\/\/[^/]+\/compute\/v1\/)?(?:projects\/([^/]+)\/)?(.+?)\/*$/.exec(link);
  return m ? { project: m[1], rest: m[2] } : { rest: link };
}

/**
 * Start the fake.
 *
 * @param options Identity of the project and VM, timings, quota.
 * @returns The running fake; close it in `finally`.
 */
export async function startFakeGce(options: FakeGceOptions = {}): Promise<FakeGce> {
  const projectId = options.projectId ?? "weft-test";
  const projectNumber = options.projectNumber ?? "123456789012";
  const zone = options.zone ?? "europe-west1-b";
  const instanceName = options.instanceName ?? "node-1";
  const networkName = options.network ?? "default";
  const tokenLifetimeS = options.tokenLifetimeS ?? 3599;
  const pendingMs = options.pendingMs ?? 2;
  const runningMs = options.runningMs ?? 5;
  const waitTimeoutMs = options.waitTimeoutMs ?? 2000;
  let routesQuota = options.routesQuota ?? 250;

  const calls: Record<string, number> = {};
  const callWaiters: { method: string; n: number; resolve: () => void }[] = [];
  const count = (method: string) => {
    calls[method] = (calls[method] ?? 0) + 1;
    for (const w of [...callWaiters]) {
      if ((calls[w.method] ?? 0) >= w.n) {
        callWaiters.splice(callWaiters.indexOf(w), 1);
        w.resolve();
      }
    }
  };

  const networks = new Set<string>([networkName]);
  const instances = new Map<string, { ip?: string }>([[`${zone}/${instanceName}`, {
    ip: options.ip,
  }]]);
  const routes = new Map<string, Route>();
  const pendingInserts = new Set<string>();
  const pendingDeletes = new Set<string>();
  const operations = new Map<string, Operation>();
  const tokens = new Map<string, { expiresAt: number; scopes: string[] }>();
  const denied = new Set<string>();
  const timers = new Set<ReturnType<typeof setTimeout>>();
  let throttled: { left: number; status: 403 | 429 } = { left: 0, status: 403 };
  let failNext: ApiErrorBody | null = null;
  let holdOps = false;
  let idSeq = 1_000_000;
  let tokenSeq = 0;

  const netLink = (name: string) => `${BASE}projects/${projectId}/global/networks/${name}`;
  const instLink = (z: string, name: string) =>
    `${BASE}projects/${projectId}/zones/${z}/instances/${name}`;
  const routeLink = (name: string) => `${BASE}projects/${projectId}/global/routes/${name}`;
  const nextId = () => String(idSeq++) + "4242";
  const later = (ms: number, fn: () => void) => {
    const t = setTimeout(() => {
      timers.delete(t);
      fn();
    }, ms);
    timers.add(t);
  };

  /** Canonical link of a network or instance reference, or null when it names another project. */
  function normalise(kind: "network" | "instance", link: string): string | null {
    const { project, rest } = splitLink(link);
    if (project !== undefined && project !== projectId && project !== projectNumber) return null;
    if (kind === "network") {
      const m = /^(?:global\/networks\/)?([a-z][-a-z0-9]*)$/.exec(rest);
      return m ? netLink(m[1]) : null;
    }
    const m = /^zones\/([a-z][-a-z0-9]*)\/instances\/([a-z][-a-z0-9]*)$/.exec(rest);
    return m ? instLink(m[1], m[2]) : null;
  }

  function instanceKey(link: string): string | null {
    const m = /\/zones\/([^/]+)\/instances\/([^/]+)$/.exec(link);
    return m ? `${m[1]}/${m[2]}` : null;
  }

  function view(route: Route): Json {
    const json = { ...route.json };
    const key = json.nextHopInstance ? instanceKey(json.nextHopInstance) : null;
    if (key && !instances.has(key)) {
      json.warnings = [{
        code: "NEXT_HOP_INSTANCE_NOT_FOUND",
        message: `Next hop instance '${json.nextHopInstance}' does not exist.`,
        data: [{ key: "instance", value: json.nextHopInstance }],
      }];
    }
    return json;
  }

  // --- the Compute API -----------------------------------------------------
  const reply = (e: ApiErrorBody) => Response.json(e.body, { status: e.status });
  const notFound = (what: string) =>
    apiError(404, "notFound", `The resource '${what}' was not found`);
  const invalid = (field: string, value: unknown, why: string) =>
    apiError(400, "invalid", `Invalid value for field '${field}': '${value ?? ""}'. ${why}`);

  function permissionError(permission: string, resource: string): ApiErrorBody | null {
    if (!denied.has(permission)) return null;
    return apiError(403, "forbidden", `Required '${permission}' permission for '${resource}'`, {
      details: [{
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        reason: "IAM_PERMISSION_DENIED",
        domain: "iam.googleapis.com",
        metadata: { permission, resource },
      }],
    });
  }

  function newOperation(type: string, target: string, effect: () => Json | null): Operation {
    const name = `operation-${Date.now()}-${crypto.randomUUID().slice(0, 13)}`;
    const op: Operation = {
      json: {
        kind: "compute#operation",
        id: nextId(),
        name,
        operationType: type,
        targetLink: target,
        targetId: nextId(),
        status: "PENDING",
        user: `weft@${projectId}.iam.gserviceaccount.com`,
        progress: 0,
        insertTime: new Date().toISOString(),
        selfLink: `${BASE}projects/${projectId}/global/operations/${name}`,
      },
      effect,
      waiters: [],
      manual: holdOps,
    };
    operations.set(name, op);
    later(pendingMs, () => {
      op.json.status = "RUNNING";
      op.json.startTime = new Date().toISOString();
      if (!op.manual) later(runningMs, () => finish(op));
    });
    return op;
  }

  function finish(op: Operation): void {
    if (op.json.status === "DONE") return;
    const error = op.effect();
    op.json.status = "DONE";
    op.json.progress = 100;
    op.json.endTime = new Date().toISOString();
    op.json.startTime ??= op.json.endTime;
    if (error) Object.assign(op.json, error);
    for (const w of op.waiters.splice(0)) w();
  }

  function insertRoute(body: Json): ApiErrorBody | Json {
    const name = body.name;
    if (typeof name !== "string" || !NAME_RE.test(name)) {
      return invalid(
        "resource.name",
        name,
        "Must be a match of regex '(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'",
      );
    }
    const selfLink = routeLink(name);
    const perm = permissionError(
      "compute.routes.create",
      `projects/${projectId}/global/routes/${name}`,
    );
    if (perm) return perm;
    if (typeof body.network !== "string") {
      return invalid("resource.network", body.network, "Required");
    }
    const network = normalise("network", body.network);
    if (!network) return notFound(body.network);
    const netName = network.slice(network.lastIndexOf("/") + 1);
    if (!networks.has(netName)) return notFound(`projects/${projectId}/global/networks/${netName}`);
    const netPerm = permissionError(
      "compute.networks.updatePolicy",
      `projects/${projectId}/global/networks/${netName}`,
    );
    if (netPerm) return netPerm;
    let destRange: string;
    try {
      destRange = formatIPv4Net(parseIPv4Net(String(body.destRange)));
      if (destRange !== body.destRange) throw new SyntaxError("host bits");
    } catch {
      return invalid(
        "resource.destRange",
        body.destRange,
        "Must be a valid IPv4 CIDR address range.",
      );
    }
    const hops = [
      "nextHopInstance",
      "nextHopIp",
      "nextHopGateway",
      "nextHopIlb",
      "nextHopVpnTunnel",
    ]
      .filter((k) => body[k] !== undefined && body[k] !== "");
    if (hops.length !== 1) {
      return invalid(
        "resource",
        "",
        "Exactly one of nextHopGateway, nextHopIlb, nextHopInstance, nextHopIp, nextHopVpnTunnel must be specified.",
      );
    }
    const json: Json = {
      kind: "compute#route",
      id: nextId(),
      creationTimestamp: new Date().toISOString(),
      name,
      network,
      destRange,
      priority: body.priority ?? 1000,
      selfLink,
      routeType: "STATIC",
    };
    if (body.description) json.description = String(body.description);
    if (body.nextHopInstance !== undefined) {
      const inst = normalise("instance", String(body.nextHopInstance));
      if (!inst) return notFound(String(body.nextHopInstance));
      const key = instanceKey(inst)!;
      if (!instances.has(key)) return notFound(inst.slice(BASE.length));
      json.nextHopInstance = inst;
    } else {
      for (const k of hops) json[k] = body[k];
    }
    if (routes.has(name) || pendingInserts.has(name)) {
      return apiError(
        409,
        "alreadyExists",
        `The resource '${selfLink.slice(BASE.length)}' already exists`,
      );
    }
    pendingInserts.add(name);
    return newOperation("insert", selfLink, () => {
      pendingInserts.delete(name);
      if (routes.size >= routesQuota) {
        return {
          error: {
            errors: [{
              code: "QUOTA_EXCEEDED",
              message: `Quota 'ROUTES' exceeded.  Limit: ${routesQuota.toFixed(1)} globally.`,
              errorDetails: [{
                quotaInfo: {
                  metricName: "compute.googleapis.com/routes",
                  limitName: "ROUTES-per-project",
                  dimensions: { global: "global" },
                  limit: routesQuota,
                },
              }],
            }],
          },
          httpErrorStatusCode: 403,
          httpErrorMessage: "FORBIDDEN",
        };
      }
      routes.set(name, { json });
      return null;
    }).json;
  }

  function deleteRoute(name: string): ApiErrorBody | Json {
    const path = `projects/${projectId}/global/routes/${name}`;
    const perm = permissionError("compute.routes.delete", path);
    if (perm) return perm;
    if (!routes.has(name)) return notFound(path);
    if (pendingDeletes.has(name)) {
      return apiError(400, "resourceNotReady", `The resource '${path}' is not ready`);
    }
    pendingDeletes.add(name);
    return newOperation("delete", routeLink(name), () => {
      pendingDeletes.delete(name);
      routes.delete(name);
      return null;
    }).json;
  }

  function listRoutes(url: URL): ApiErrorBody | Json {
    const perm = permissionError("compute.routes.list", `projects/${projectId}`);
    if (perm) return perm;
    const maxText = url.searchParams.get("maxResults");
    const max = maxText === null ? 500 : Number(maxText);
    if (!Number.isInteger(max) || max < 0 || max > 500) {
      return invalid("maxResults", maxText, "Must be less than or equal to 500");
    }
    const filterText = url.searchParams.get("filter") ?? "";
    let filter;
    try {
      filter = parseFilter(filterText);
    } catch {
      return invalid("filter", filterText, "Invalid list filter expression.");
    }
    let after = "";
    const token = url.searchParams.get("pageToken");
    if (token) {
      try {
        const t = JSON.parse(atob(token));
        if (t.f !== filterText || typeof t.a !== "string") throw new Error("mismatch");
        after = t.a;
      } catch {
        return invalid(
          "pageToken",
          token,
          "The page token is invalid or does not match the request.",
        );
      }
    }
    const all = [...routes.keys()].sort().filter((n) => n > after)
      .map((n) => view(routes.get(n)!))
      .filter((r) => evaluateFilter(filter, r));
    const page = all.slice(0, max === 0 ? 500 : max);
    const out: Json = {
      kind: "compute#routeList",
      id: `projects/${projectId}/global/routes`,
      items: page,
      selfLink: `${BASE}projects/${projectId}/global/routes`,
    };
    if (all.length > page.length && page.length > 0) {
      out.nextPageToken = btoa(JSON.stringify({ a: page[page.length - 1].name, f: filterText }));
    }
    if (page.length === 0) delete out.items;
    return out;
  }

  async function compute(req: Request): Promise<Response> {
    const url = new URL(req.url);
    const m =
      /^\/compute\/v1\/projects\/([^/]+)\/global\/(routes|operations)(?:\/([^/]+))?(\/wait)?$/
        .exec(url.pathname);
    const method = !m
      ? "unknown"
      : m[2] === "routes"
      ? `routes.${
        m[3]
          ? (req.method === "GET" ? "get" : "delete")
          : (req.method === "GET" ? "list" : "insert")
      }`
      : `globalOperations.${m[4] ? "wait" : "get"}`;
    count(method);
    if (!m) return reply(notFound(url.pathname));
    const auth = /^Bearer (.+)$/.exec(req.headers.get("authorization") ?? "");
    const tok = auth ? tokens.get(auth[1]) : undefined;
    if (!tok || tok.expiresAt < Date.now()) {
      return reply(apiError(
        401,
        "authError",
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
        { status: "UNAUTHENTICATED" },
      ));
    }
    if (m[1] !== projectId && m[1] !== projectNumber) return reply(notFound(`projects/${m[1]}`));
    if (failNext) {
      const e = failNext;
      failNext = null;
      return reply(e);
    }
    if (throttled.left > 0) {
      throttled.left--;
      const message =
        `Quota exceeded for quota metric 'Queries' and limit 'Queries per minute' of service 'compute.googleapis.com' for consumer 'project_number:${projectNumber}'.`;
      return reply(apiError(throttled.status, "rateLimitExceeded", message, {
        status: throttled.status === 429 ? "RESOURCE_EXHAUSTED" : "PERMISSION_DENIED",
        details: [{
          "@type": "type.googleapis.com/google.rpc.ErrorInfo",
          reason: "RATE_LIMIT_EXCEEDED",
          domain: "googleapis.com",
          metadata: { service: "compute.googleapis.com", consumer: `projects/${projectNumber}` },
        }],
      }));
    }
    const write = method === "routes.insert" || method === "routes.delete";
    const okScopes = write ? COMPUTE_SCOPES : READ_SCOPES;
    if (!tok.scopes.some((s) => okScopes.includes(s))) {
      return reply(
        apiError(
          403,
          "insufficientPermissions",
          "Request had insufficient authentication scopes.",
          {
            status: "PERMISSION_DENIED",
            details: [{
              "@type": "type.googleapis.com/google.rpc.ErrorInfo",
              reason: "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
              domain: "googleapis.com",
              metadata: { service: "compute.googleapis.com" },
            }],
          },
        ),
      );
    }
    let out: ApiErrorBody | Json;
    const name = m[3];
    switch (method) {
      case "routes.list":
        out = listRoutes(url);
        break;
      case "routes.get": {
        const path = `projects/${projectId}/global/routes/${name}`;
        out = permissionError("compute.routes.get", path) ??
          (routes.has(name) ? view(routes.get(name)!) : notFound(path));
        break;
      }
      case "routes.insert":
        out = insertRoute(await req.json().catch(() => ({})));
        break;
      case "routes.delete":
        out = deleteRoute(name);
        break;
      default: {
        const path = `projects/${projectId}/global/operations/${name}`;
        const op = operations.get(name);
        out = permissionError("compute.globalOperations.get", path) ??
          (op ? op.json : notFound(path));
        if (op && method === "globalOperations.wait" && op.json.status !== "DONE") {
          await new Promise<void>((resolve) => {
            const t = setTimeout(() => {
              timers.delete(t);
              resolve();
            }, waitTimeoutMs);
            timers.add(t);
            op.waiters.push(() => {
              clearTimeout(t);
              timers.delete(t);
              resolve();
            });
          });
        }
      }
    }
    if ("status" in out && "body" in out && typeof out.status === "number") {
      return reply(out as ApiErrorBody);
    }
    return Response.json(out);
  }

  const listen = options.listen ?? "127.0.0.1";
  const meta: MetadataState = {
    flavor: true,
    serviceAccount: true,
    scopes: [...(options.scopes ?? ["https://www.googleapis.com/auth/cloud-platform"])],
    issueToken() {
      const token = `ya29.fake-${++tokenSeq}-${crypto.randomUUID().slice(0, 8)}`;
      tokens.set(token, {
        expiresAt: Date.now() + tokenLifetimeS * 1000,
        scopes: [...meta.scopes],
      });
      return { access_token: token, expires_in: tokenLifetimeS, token_type: "Bearer" };
    },
    count,
  };
  const servers: HttpServer[] = [];
  const vmServer = async (vm: FakeVm) => {
    const server = await serveHttp({ hostname: listen, port: 0, fetch: metadataHandler(vm, meta) });
    servers.push(server);
    return `${listen}:${server.port}`;
  };
  const vmOf = (z: string, name: string, ip?: string, hostname?: string): FakeVm => ({
    projectId,
    projectNumber,
    zone: z,
    name,
    hostname: hostname ?? `${name}-custom.example.internal`,
    network: networkName,
    ip,
  });
  const metadataHost = await vmServer(vmOf(zone, instanceName, options.ip, options.hostname));
  const computeServer: HttpServer = await serveHttp({ hostname: listen, port: 0, fetch: compute });
  servers.push(computeServer);
  const computeEndpoint = `http://${listen}:${computeServer.port}/compute/v1/`;

  return {
    metadataHost,
    computeEndpoint,
    env: {
      GCE_METADATA_HOST: metadataHost,
      CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE: computeEndpoint,
    },
    projectId,
    projectNumber,
    networkLink: netLink(networkName),
    instanceLink: instLink(zone, instanceName),
    calls,
    get issuedTokens() {
      return [...tokens.keys()];
    },
    resetCalls() {
      for (const k of Object.keys(calls)) delete calls[k];
    },
    waitForCalls(method, n) {
      if ((calls[method] ?? 0) >= n) return Promise.resolve();
      return new Promise((resolve) => callWaiters.push({ method, n, resolve }));
    },
    addNetwork(name) {
      networks.add(name);
      return netLink(name);
    },
    addInstance(z, name, ip) {
      instances.set(`${z}/${name}`, { ip });
      return instLink(z, name);
    },
    async addVm(vm) {
      instances.set(`${vm.zone}/${vm.name}`, { ip: vm.ip });
      const host = await vmServer(vmOf(vm.zone, vm.name, vm.ip, vm.hostname));
      return {
        metadataHost: host,
        instanceLink: instLink(vm.zone, vm.name),
        env: { GCE_METADATA_HOST: host, CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE: computeEndpoint },
      };
    },
    instanceIP(link) {
      return instances.get(instanceKey(link) ?? link)?.ip;
    },
    deleteInstance(link) {
      instances.delete(instanceKey(link) ?? link);
    },
    addRoute(route) {
      const json: Json = { kind: "compute#route", id: nextId(), routeType: "STATIC", ...route };
      json.network = normalise("network", String(route.network)) ?? route.network;
      json.selfLink = routeLink(json.name);
      routes.set(json.name, { json });
    },
    routes: () => [...routes.keys()].sort().map((n) => view(routes.get(n)!)),
    setRoutesQuota(n) {
      routesQuota = n;
    },
    throttle(n, status = 403) {
      throttled = { left: n, status };
    },
    deny: (p) => void denied.add(p),
    allow: (p) => void denied.delete(p),
    setScopes(s) {
      meta.scopes = [...s];
    },
    holdOperations(hold) {
      holdOps = hold;
    },
    completeOperations() {
      for (const op of operations.values()) {
        if (op.manual && op.json.status !== "DONE") finish(op);
      }
    },
    setMetadataFlavor(send) {
      meta.flavor = send;
    },
    removeServiceAccount() {
      meta.serviceAccount = false;
    },
    failNext(error) {
      failNext = error;
    },
    async close() {
      for (const t of timers) clearTimeout(t);
      timers.clear();
      for (const op of operations.values()) for (const w of op.waiters.splice(0)) w();
      await Promise.all(servers.map((server) => server.shutdown()));
    },
  };
}
