/**
 * Compute API failures → {@link RouteProviderError}s that say what the
 * reconcile loop should do (`kind`) and what a person should fix (the
 * message: the IAM permission and scope, the quota, the route in the way).
 * Pure functions over what the client library reports: `httpStatusCode`,
 * the `ErrorInfo` reason and metadata it decodes from `details`, the legacy
 * `errors[].reason` in the raw body (`rateLimitExceeded`, `alreadyExists`,
 * `resourceNotReady`), and for an operation that ended in error its
 * `error.errors[]` and `httpErrorStatusCode`.
 *
 * @module
 */

import { RouteProviderError } from "../provider.ts";
import type { IOperation } from "./sdk_types.d.ts";

/** The IAM permissions the gce provider needs, and what for. */
export const REQUIRED_PERMISSIONS = [
  "compute.routes.list",
  "compute.routes.get",
  "compute.routes.create",
  "compute.routes.delete",
  "compute.networks.updatePolicy",
  "compute.globalOperations.get",
] as const;

/** The OAuth scope the VM's service account token needs for route writes. */
export const COMPUTE_SCOPE = "https://www.googleapis.com/auth/compute";

/** What the failed call was doing, for the message. */
export interface CallContext {
  /** The API method, e.g. `routes.insert`. */
  readonly method: string;
  /** What it acted on, e.g. `route flannel-10-244-1-0-24 (10.244.1.0/24)`. */
  readonly subject: string;
  /** The project the call went to. */
  readonly project: string;
  /** The network selfLink (the seam's table), when there is one. */
  readonly table?: string;
  /** The permission this method needs (named when the API does not say). */
  readonly permission: string;
  /** The API endpoint, for "unreachable" messages. */
  readonly endpoint: string;
}

/** What the client library's errors carry (GoogleError and its transport errors). */
interface LibraryError {
  message?: string;
  code?: number;
  httpStatusCode?: number;
  reason?: string;
  errorInfoMetadata?: Record<string, string>;
}

const RAW_PAYLOAD = Symbol.for("google-gax.rawHttpResponsePayload");
const SCOPE_HINT = `the VM's access scopes must include ${COMPUTE_SCOPE} ` +
  "(or https://www.googleapis.com/auth/cloud-platform)";
const ROLE_HINT = `the gce backend needs ${REQUIRED_PERMISSIONS.join(", ")} ` +
  "(roles/compute.networkAdmin has them all, or grant a custom role with exactly these)";

/** The legacy `errors[0].reason` of a Google JSON error body, if there is one. */
export function legacyReason(e: unknown): string | undefined {
  if (e === null || typeof e !== "object") return undefined;
  let raw = (e as Record<symbol, unknown>)[RAW_PAYLOAD];
  if (typeof raw === "string") {
    try {
      raw = JSON.parse(raw);
    } catch {
      return undefined;
    }
  }
  const errors = (raw as { error?: { errors?: { reason?: unknown }[] } } | undefined)?.error
    ?.errors;
  const reason = Array.isArray(errors) ? errors[0]?.reason : undefined;
  return typeof reason === "string" ? reason : undefined;
}

/**
 * Classify a failed Compute API call.
 *
 * @param e What the client library threw.
 * @param ctx What the call was doing.
 * @returns The error to throw (its `cause` is `e`).
 */
export function describeApiError(e: unknown, ctx: CallContext): RouteProviderError {
  const err = (e ?? {}) as LibraryError;
  const status = err.httpStatusCode;
  const text = String(err.message ?? e).replace(/\s+$/, "");
  const legacy = legacyReason(e);
  const info = err.reason;
  const what = `${ctx.method} on ${ctx.subject}`;
  const opts = { cause: e };
  if (status === undefined) {
    return new RouteProviderError(
      "unavailable",
      `Cannot reach the Compute API at ${ctx.endpoint} (${what}): ${text}. ` +
        "Check the VM's route to compute.googleapis.com (Private Google Access without an " +
        "external IP) or CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE",
      opts,
    );
  }
  if (
    status === 429 || legacy === "rateLimitExceeded" || legacy === "userRateLimitExceeded" ||
    info === "RATE_LIMIT_EXCEEDED"
  ) {
    return new RouteProviderError(
      "throttled",
      `The Compute API throttled ${what} (HTTP ${status} ${legacy ?? info ?? ""}: ${text}). ` +
        `weft backs off; if this persists, raise the API rate quota of compute.googleapis.com ` +
        `for project ${ctx.project} or resync less often`,
      opts,
    );
  }
  if (status === 401) {
    return new RouteProviderError(
      "denied",
      `The Compute API refused the VM's access token for ${what} (HTTP 401: ${text}). ` +
        "The token comes from the metadata server: check that the VM's service account exists " +
        "and is enabled",
      opts,
    );
  }
  if (status === 403) {
    if (legacy === "insufficientPermissions" || info === "ACCESS_TOKEN_SCOPE_INSUFFICIENT") {
      return new RouteProviderError(
        "denied",
        `The VM's access token lacks a Compute scope for ${what} (HTTP 403: ${text}): ` +
          `${SCOPE_HINT}; set them with 'gcloud compute instances set-service-account <vm> ` +
          "--scopes=compute-rw' while the VM is stopped",
        opts,
      );
    }
    const m = /Required '([^']+)' permission for '([^']+)'/.exec(text);
    const permission = err.errorInfoMetadata?.permission ?? m?.[1] ?? ctx.permission;
    const resource = err.errorInfoMetadata?.resource ?? m?.[2] ?? `projects/${ctx.project}`;
    return new RouteProviderError(
      "denied",
      `Permission ${permission} is missing on ${resource} for ${what} (HTTP 403: ${text}). ` +
        `Grant it to the VM's service account in project ${ctx.project}: ${ROLE_HINT}; ` +
        `and ${SCOPE_HINT}`,
      opts,
    );
  }
  if (status === 404) {
    if (/^The resource 'projects\/[^/']+' was not found/.test(text)) {
      return new RouteProviderError(
        "invalid",
        `Project ${ctx.project} does not exist or the Compute API is not enabled in it ` +
          `(${what}: HTTP 404 ${text}). The table ${ctx.table ?? "(none)"} names it: check the ` +
          "project id (metadata project/project-id, or the configured project)",
        opts,
      );
    }
    if (ctx.method === "routes.insert") {
      return new RouteProviderError(
        "invalid",
        `${what} refers to something that does not exist (HTTP 404: ${text}): check the ` +
          `network ${ctx.table ?? ""} and the next-hop instance`,
        opts,
      );
    }
    return new RouteProviderError("not-found", `${what}: HTTP 404 ${text}`, opts);
  }
  if (status === 409 || legacy === "alreadyExists") {
    return new RouteProviderError("exists", `${what}: HTTP ${status} ${text}`, opts);
  }
  if (status === 400 && legacy === "resourceNotReady") {
    return new RouteProviderError(
      "unavailable",
      `${what}: the route is busy with another operation (HTTP 400 resourceNotReady: ${text}); retry later`,
      opts,
    );
  }
  if (status >= 400 && status < 500) {
    return new RouteProviderError(
      "invalid",
      `The Compute API rejected ${what} (HTTP ${status} ${legacy ?? ""}: ${text})`,
      opts,
    );
  }
  return new RouteProviderError(
    "unavailable",
    `The Compute API failed ${what} (HTTP ${status}: ${text}); retrying later`,
    opts,
  );
}

/**
 * Classify an operation that finished (DONE) with an error.
 *
 * @param op The operation.
 * @param ctx What it was doing.
 * @param routesHeld How many routes the project holds, when known (named on a quota error).
 * @returns The error to throw.
 */
export function describeOperationError(
  op: IOperation,
  ctx: CallContext,
  routesHeld?: number,
): RouteProviderError {
  const errors = op.error?.errors ?? [];
  const first = errors[0] ?? {};
  const code = first.code ?? "";
  const text = errors.map((x) => `${x.code}: ${x.message}`).join("; ");
  const status = op.httpErrorStatusCode ?? 0;
  const what = `${ctx.method} on ${ctx.subject} (operation ${op.name})`;
  if (code === "QUOTA_EXCEEDED" || /quota/i.test(text)) {
    const quota = first.errorDetails?.find((d) => d.quotaInfo)?.quotaInfo;
    const limit = quota?.limit ?? /Limit: ([\d.]+)/.exec(text)?.[1];
    const metric = quota?.metricName ?? "compute.googleapis.com/routes";
    const held = routesHeld === undefined
      ? ""
      : `; the project holds ${routesHeld} route${routesHeld === 1 ? "" : "s"}`;
    return new RouteProviderError(
      "limit",
      `Cannot add ${ctx.subject} to network ${ctx.table ?? "(unknown)"}: project ${ctx.project} ` +
        `is out of quota ${quota?.limitName ?? "ROUTES"} (limit ${limit ?? "unknown"}${held}; ` +
        `${text}). Delete routes nobody uses ('gcloud compute routes list --project ` +
        `${ctx.project}') or request a higher quota for ${metric} (IAM & Admin → Quotas)`,
    );
  }
  const fake = {
    message: text,
    httpStatusCode: status || undefined,
    [RAW_PAYLOAD]: {
      error: { errors: errors.map((x) => ({ reason: reasonOf(x.code ?? "") })) },
    },
  };
  if (status === 0) {
    return new RouteProviderError("unavailable", `${what} failed: ${text}; retrying later`);
  }
  return describeApiError(fake, { ...ctx, subject: `${ctx.subject} (operation ${op.name})` });
}

/** The legacy reason an operation error code corresponds to. */
function reasonOf(code: string): string {
  switch (code) {
    case "RESOURCE_ALREADY_EXISTS":
    case "ALREADY_EXISTS":
      return "alreadyExists";
    case "RESOURCE_NOT_READY":
      return "resourceNotReady";
    case "RATE_LIMIT_EXCEEDED":
      return "rateLimitExceeded";
    default:
      return code;
  }
}
