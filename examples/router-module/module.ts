/**
 * An example weft backend module: a route provider for a Linux router with
 * an HTTP API (./router.ts). Each host's pod subnet becomes a route on the
 * router (`<subnet> via <host>`), so the router carries pod traffic between
 * hosts with no encapsulation — the same job aws-vpc does with a VPC route
 * table. weft's shared cloud route loop does the rest (which routes to
 * write or remove, retries, metrics, readiness).
 *
 * ```json
 * {"Network": "10.5.0.0/16",
 *  "Backend": {"Type": "module", "Module": "/etc/weft/router-module.js",
 *              "RouterURL": "http://192.0.2.1:8087", "Token": "s3cret"}}
 * ```
 *
 * Options (validated by {@link RouterOptions}): `RouterURL` (required),
 * `Token`, `Table` (default `main`), `NextHop` (this host's address as the
 * router sees it; default the address weft uses, `--iface`/`--public-ip`).
 *
 * The module is self-contained (it only imports weft's types, and valibot,
 * which `bun build module.ts --outfile router-module.js --target node`
 * bundles into the one file weft's binary and weft.js can load).
 *
 * @module
 */

import * as v from "valibot";
import type {
  ModuleContext,
  ProviderRoute,
  RouteProvider,
  RouteProviderErrorKind,
  RouteProviderModule,
} from "../../mod.ts";

/**
 * weft recognises provider errors by name and `kind`, never by class (its
 * own copy of the class is not this one), so a module defines its own.
 */
export class RouterError extends Error {
  override name = "RouteProviderError";
  constructor(
    readonly kind: RouteProviderErrorKind,
    message: string,
    options?: ErrorOptions & { retryAfterMs?: number },
  ) {
    super(message, options);
    this.retryAfterMs = options?.retryAfterMs;
  }
  readonly retryAfterMs?: number;
}

/** The module's options. */
export const RouterOptions = v.object({
  RouterURL: v.pipe(v.string(), v.url("must be a URL such as http://192.0.2.1:8087")),
  Token: v.optional(v.string()),
  Table: v.optional(v.pipe(v.string(), v.regex(/^[A-Za-z0-9_-]+$/)), "main"),
  NextHop: v.optional(v.pipe(v.string(), v.ip("must be an IP address"))),
});

/** Validated options. */
export type RouterOptions = v.InferOutput<typeof RouterOptions>;

/** A route as the router API reports it. */
interface ApiRoute {
  readonly destination: string;
  readonly via: string | null;
  readonly owner: "api" | "system";
}

const KINDS: Record<number, RouteProviderErrorKind> = {
  400: "invalid",
  401: "denied",
  403: "denied",
  404: "not-found",
  409: "exists",
  429: "throttled",
  507: "limit",
};

/**
 * The provider over one router.
 *
 * @param options Validated options.
 * @param nextHop This host's address on the router's side.
 * @returns The provider.
 */
export function createRouterProvider(options: RouterOptions, nextHop: string): RouteProvider {
  const base = options.RouterURL.replace(/\/+$/, "");
  const call = async <T>(
    method: string,
    path: string,
    body: unknown,
    signal: AbortSignal | undefined,
  ): Promise<T> => {
    let res: Response;
    try {
      res = await fetch(`${base}${path}`, {
        method,
        signal,
        headers: {
          "content-type": "application/json",
          ...(options.Token ? { authorization: `Bearer ${options.Token}` } : {}),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      if (signal?.aborted) throw e;
      throw new RouterError(
        "unavailable",
        `the router at ${base} cannot be reached (${
          (e as Error).message
        }): check RouterURL and that the router API runs`,
        { cause: e },
      );
    }
    const text = await res.text();
    if (res.ok) return (text ? JSON.parse(text) : undefined) as T;
    let error = text;
    try {
      error = (JSON.parse(text) as { error?: string }).error ?? text;
    } catch { /* not JSON */ }
    const kind = KINDS[res.status] ?? "unavailable";
    const fix = kind === "denied"
      ? "; give weft a Token with the permission routes:write (or leave maintenance mode)"
      : kind === "limit"
      ? `; raise maxRoutes of table ${options.Table} on the router`
      : "";
    const retry = Number(res.headers.get("retry-after"));
    throw new RouterError(
      kind,
      `the router said ${res.status} to ${method} ${path}: ${error}${fix}`,
      {
        retryAfterMs: retry > 0 ? retry * 1000 : undefined,
      },
    );
  };
  const routes = (table: string) => `/v1/tables/${encodeURIComponent(table)}/routes`;

  return {
    name: "router",
    async discover(signal) {
      const info = await call<{ name: string; tables: string[] }>(
        "GET",
        "/v1/info",
        undefined,
        signal,
      );
      if (!info.tables.includes(options.Table)) {
        throw new RouterError(
          "invalid",
          `the router ${info.name} has no table ${options.Table}: it serves ${
            info.tables.join(", ")
          }; set "Backend.Table" to one of them`,
        );
      }
      return { target: nextHop, tables: [options.Table], location: info.name };
    },
    async list(table, signal) {
      const got = await call<ApiRoute[]>("GET", routes(table), undefined, signal);
      return got.map((r): ProviderRoute => ({
        table,
        destination: r.destination,
        target: r.via,
        owned: r.owner === "api",
      }));
    },
    async create(table, destination, target, signal) {
      await call("POST", routes(table), { destination, via: target }, signal);
    },
    async replace(table, destination, target, signal) {
      await call(
        "PUT",
        `${routes(table)}/${encodeURIComponent(destination)}`,
        { via: target },
        signal,
      );
    },
    async remove(table, destination, signal) {
      await call(
        "DELETE",
        `${routes(table)}/${encodeURIComponent(destination)}`,
        undefined,
        signal,
      );
    },
  };
}

/** The module weft loads. */
const routerModule: RouteProviderModule<RouterOptions> = {
  apiVersion: 1,
  kind: "route-provider",
  name: "router",
  options: RouterOptions,
  createProvider: (options: RouterOptions, ctx: ModuleContext) =>
    createRouterProvider(options, options.NextHop ?? ctx.extIface.extAddr),
};

export default routerModule;
