/**
 * The route-provider seam: what a cloud — or any router with an API — must
 * offer for weft's route mode, where each host's pod subnet is a route in a
 * VPC route table whose next hop is that host (aws-vpc, gce, a module).
 *
 * A provider is a thin, stateless translation of four calls onto one API
 * (list, create, replace, remove) plus discovery of this host. Everything
 * else — which routes to write, which to remove, retries, back-off, metrics —
 * is weft's shared reconcile loop, the same for every provider. Providers
 * report failures as {@link RouteProviderError} with a `kind` the loop acts
 * on and a message that names the fix (the IAM action, the quota, the table).
 *
 * Every provider passes the contract suite in `testing/route_provider_contract.ts`.
 *
 * @module
 */

/** Version of this seam; a provider module states the version it implements. */
export const ROUTE_PROVIDER_API_VERSION = 1;

/** One route as the provider's API reports it. */
export interface ProviderRoute {
  /** The table it lives in (AWS: `rtb-…`; GCE: the network's selfLink). */
  readonly table: string;
  /** Destination prefix, canonical text: `10.244.3.0/24`. */
  readonly destination: string;
  /**
   * The next hop (AWS: an ENI id `eni-…`; GCE: an instance selfLink), or
   * null when the route has no usable next hop (a blackhole: the ENI or
   * instance is gone, or a gateway/NAT target weft never writes).
   */
  readonly target: string | null;
  /**
   * True when the route can only have been written by weft or flannel
   * (GCE: weft's description or flannel's name form; AWS: a route to an
   * ENI or a blackhole — AWS routes carry no tags). The reconcile loop
   * removes only owned routes, and only inside `Network`.
   */
  readonly owned: boolean;
  /** Provider-specific name of the route (GCE), if it has one. */
  readonly name?: string;
}

/** What discovery found about this host. */
export interface ProviderSelf {
  /** This host as a next hop (AWS: its ENI id; GCE: its instance selfLink). */
  readonly target: string;
  /** The tables this host must program (configured, else discovered). */
  readonly tables: readonly string[];
  /** Where this host is, for logs and the lease (AWS: VPC id; GCE: network). */
  readonly location: string;
  /** Prefixes of that location (VPC CIDRs), when the API tells them. */
  readonly locationCidrs?: readonly string[];
}

/**
 * What a route provider does. Calls are independent and may be retried by
 * the caller; none retries a throttled call itself beyond the SDK's own
 * retries.
 */
export interface RouteProvider {
  /** Short name for logs and metrics, e.g. `aws-vpc`. */
  readonly name: string;
  /**
   * Find this host and its tables (instance metadata, then the API).
   * @throws {RouteProviderError} `unavailable` when not on this cloud (no
   *   metadata service), `denied`, `invalid` (a configured table of another VPC).
   */
  discover(signal?: AbortSignal): Promise<ProviderSelf>;
  /** Every route of `table`, read once (no server-side route filters). */
  list(table: string, signal?: AbortSignal): Promise<ProviderRoute[]>;
  /**
   * Add a route.
   * @throws {RouteProviderError} `exists` when the destination has a route
   *   already (any target), `limit` when the table is full.
   */
  create(table: string, destination: string, target: string, signal?: AbortSignal): Promise<void>;
  /**
   * Point an existing route at another target.
   * @throws {RouteProviderError} `not-found` when there is no such route.
   */
  replace(table: string, destination: string, target: string, signal?: AbortSignal): Promise<void>;
  /** Remove a route; a route that is already gone is not an error. */
  remove(table: string, destination: string, signal?: AbortSignal): Promise<void>;
}

/** Why a provider call failed, as the reconcile loop needs to know it. */
export type RouteProviderErrorKind =
  /** The destination has a route already. */
  | "exists"
  /** No such route (replace). */
  | "not-found"
  /** The table or project is full: a quota must be raised. Retry slowly. */
  | "limit"
  /** The API throttled us: back off (process-wide) and retry. */
  | "throttled"
  /** Missing permission: the message names the IAM action. Retry slowly. */
  | "denied"
  /** The API or metadata service cannot be reached. Retry with back-off. */
  | "unavailable"
  /** The configuration is wrong (unknown table, another VPC's table). */
  | "invalid";

/** A provider call failed; `kind` says what the caller should do. */
export class RouteProviderError extends Error {
  override name = "RouteProviderError";

  /**
   * @param kind What kind of failure.
   * @param message What failed, the current value, and how to fix it.
   * @param options `cause`; `retryAfterMs` when the API said how long to wait.
   */
  constructor(
    readonly kind: RouteProviderErrorKind,
    message: string,
    options?: ErrorOptions & { retryAfterMs?: number },
  ) {
    super(message, options);
    this.retryAfterMs = options?.retryAfterMs;
  }

  /** How long the API asked us to wait, if it said. */
  readonly retryAfterMs?: number;
}

/**
 * Whether `e` is a {@link RouteProviderError}, also when it was thrown by a
 * cloud module loaded from its own file (`weft-aws.js` beside `weft.js`
 * carries its own copy of this class, so `instanceof` is false there): by
 * `name` and a string `kind`.
 *
 * @param e Anything caught.
 * @returns True for a route provider error from any copy of this module.
 * @example
 * ```ts
 * try { await provider.create(table, dst, target); } catch (e) {
 *   if (isRouteProviderError(e) && e.kind === "exists") { … }
 * }
 * ```
 */
export function isRouteProviderError(e: unknown): e is RouteProviderError {
  return e instanceof RouteProviderError ||
    (e instanceof Error && e.name === "RouteProviderError" &&
      typeof (e as { kind?: unknown }).kind === "string");
}
