/**
 * The slice of `@google-cloud/compute` 7 and `google-gax` 6 (fallback/REST
 * build) that weft's gce provider uses, typed by hand. The packages' own
 * declarations pull in a 33 MB `protos.d.ts`, which would make every
 * `deno check` of the repository take ~15 s and ~900 MB; `sdk.ts` points
 * its imports here with `@ts-types` instead. Field shapes follow the
 * Compute v1 protos as the REST transport decodes them (`enums: String`,
 * `longs: String`, unset optional fields as null or absent).
 *
 * @module
 */

/** Per-call options of a gax method. */
export interface CallOptions {
  /**
   * Deadline of the call in ms. `Infinity` arms no timer (a finite one is an
   * `AbortSignal.timeout` that keeps a Deno process alive until it fires).
   */
  timeout?: number;
  /** `null`: never retry (weft's reconcile loop retries with its own back-off). */
  retry?: null;
  /** List calls: false returns one page and the next page's request. */
  autoPaginate?: boolean;
  /** Extra request headers. */
  otherArgs?: { headers?: Record<string, string> };
}

/** A warning on a listed resource. */
export interface IWarning {
  code?: string | null;
  message?: string | null;
}

/** A route as the REST transport decodes it. */
export interface IRoute {
  name?: string | null;
  description?: string | null;
  network?: string | null;
  destRange?: string | null;
  priority?: number | null;
  nextHopInstance?: string | null;
  nextHopIp?: string | null;
  nextHopGateway?: string | null;
  nextHopNetwork?: string | null;
  nextHopIlb?: string | null;
  nextHopVpnTunnel?: string | null;
  nextHopPeering?: string | null;
  selfLink?: string | null;
  routeType?: string | null;
  warnings?: IWarning[] | null;
}

/** Quota details of an operation error. */
export interface IQuotaExceededInfo {
  metricName?: string | null;
  limitName?: string | null;
  limit?: number | null;
}

/** One error inside an operation. */
export interface IOperationErrorEntry {
  code?: string | null;
  message?: string | null;
  errorDetails?: { quotaInfo?: IQuotaExceededInfo | null }[] | null;
}

/** A Compute operation. */
export interface IOperation {
  name?: string | null;
  status?: string | null;
  operationType?: string | null;
  targetLink?: string | null;
  error?: { errors?: IOperationErrorEntry[] | null } | null;
  httpErrorStatusCode?: number | null;
  httpErrorMessage?: string | null;
}

/** What `insert`/`delete` resolve to: the operation wrapped as gax's LRO shape. */
export interface OperationHandle {
  latestResponse: IOperation;
  name: string;
}

/** One page of `routes.list`. */
export interface IRouteList {
  items?: IRoute[] | null;
  nextPageToken?: string | null;
}

/** Constructor options of both clients. */
export interface ClientOptions {
  apiEndpoint?: string;
  port?: number;
  protocol?: "http" | "https";
  fallback?: boolean;
  authClient?: unknown;
}

/** `google.cloud.compute.v1.RoutesClient`. */
export declare class RoutesClient {
  constructor(opts?: ClientOptions, gaxInstance?: unknown);
  list(
    request: {
      project: string;
      filter?: string;
      maxResults?: number;
      pageToken?: string;
    },
    options?: CallOptions,
  ): Promise<[IRoute[], { pageToken?: string } | null, IRouteList]>;
  get(request: { project: string; route: string }, options?: CallOptions): Promise<[IRoute]>;
  insert(
    request: { project: string; routeResource: IRoute; requestId?: string },
    options?: CallOptions,
  ): Promise<[OperationHandle]>;
  delete(
    request: { project: string; route: string; requestId?: string },
    options?: CallOptions,
  ): Promise<[OperationHandle]>;
  close(): Promise<void>;
}

/** `google.cloud.compute.v1.GlobalOperationsClient`. */
export declare class GlobalOperationsClient {
  constructor(opts?: ClientOptions, gaxInstance?: unknown);
  wait(
    request: { project: string; operation: string },
    options?: CallOptions,
  ): Promise<[IOperation]>;
  get(
    request: { project: string; operation: string },
    options?: CallOptions,
  ): Promise<[IOperation]>;
  close(): Promise<void>;
}

/** A protobufjs root, opaque here. */
export interface ProtoRoot {
  lookupService(name: string): unknown;
}

/** The gRPC-fallback client class of google-gax. */
export declare class GrpcClient {
  constructor(options?: Record<string, unknown>);
  loadProtoJSON(json: unknown, ignoreCache?: boolean): ProtoRoot;
}

/** `google-gax/fallback`: the REST build of gax. */
export interface GaxFallback {
  GrpcClient: typeof GrpcClient;
  protobuf: { Root: { fromJSON(json: unknown): ProtoRoot } };
}

declare const fallback: GaxFallback;
export default fallback;
