/**
 * EC2 failures as {@link RouteProviderError}s: which kind the reconcile loop
 * acts on, and a message that names the fix — the IAM action to grant, the
 * quota to raise, the table to check. Pure code over what the SDK throws
 * (`name` = the EC2 error code, `$metadata.httpStatusCode`, Node's `code`
 * for network errors), so it needs no SDK to test.
 *
 * @module
 */

import { RouteProviderError } from "../provider.ts";

/** The EC2 API actions the aws-vpc provider calls. */
export type Ec2Action =
  | "DescribeRouteTables"
  | "CreateRoute"
  | "ReplaceRoute"
  | "DeleteRoute"
  | "ModifyNetworkInterfaceAttribute";

/**
 * Exactly the IAM actions the aws-vpc provider needs (its instance role's
 * policy): reading route tables, writing routes, turning off
 * SourceDestCheck on this host's network interface.
 */
export const AWS_IAM_ACTIONS: readonly `ec2:${Ec2Action}`[] = [
  "ec2:DescribeRouteTables",
  "ec2:CreateRoute",
  "ec2:ReplaceRoute",
  "ec2:DeleteRoute",
  "ec2:ModifyNetworkInterfaceAttribute",
];

/** The "Routes per route table" quota, for messages. */
export const ROUTE_QUOTA = {
  name: "Routes per route table",
  service: "Amazon Virtual Private Cloud (Amazon VPC)",
  code: "L-93826ACB",
  defaultValue: 50,
  common: 500,
  max: 1000,
} as const;

/** What a failed call was doing. */
export interface Ec2CallContext {
  readonly action: Ec2Action;
  readonly region: string;
  /** Where requests go, for messages. */
  readonly endpoint: string;
  readonly table?: string;
  readonly destination?: string;
  readonly target?: string;
  /** Routes `table` holds (read after a RouteLimitExceeded), if known. */
  readonly routeCount?: number;
}

const NETWORK_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EPIPE",
  "ECONNABORTED",
  "UND_ERR_CONNECT_TIMEOUT",
  "UND_ERR_SOCKET",
]);
const THROTTLE_CODES = new Set([
  "RequestLimitExceeded",
  "Throttling",
  "ThrottlingException",
  "TooManyRequestsException",
]);
const DENIED_CODES = new Set(["UnauthorizedOperation", "AccessDenied", "AccessDeniedException"]);
const CREDENTIAL_CODES = new Set([
  "AuthFailure",
  "InvalidClientTokenId",
  "SignatureDoesNotMatch",
  "UnrecognizedClientException",
  "ExpiredToken",
  "RequestExpired",
  "InvalidAccessKeyId",
]);

/** The fields of an SDK error this module reads. */
interface SdkErrorShape {
  name?: unknown;
  message?: unknown;
  code?: unknown;
  cause?: { code?: unknown };
  $metadata?: { httpStatusCode?: number; attempts?: number };
}

/**
 * Translate what the SDK threw into a {@link RouteProviderError}.
 *
 * @param error What `client.send()` threw (not an abort: callers handle those first).
 * @param ctx The call, for the message.
 * @returns The error to throw.
 * @example
 * ```ts
 * try { await client.send(cmd); } catch (e) { throw toProviderError(e, { action: "CreateRoute", region, endpoint, table }); }
 * ```
 */
export function toProviderError(error: unknown, ctx: Ec2CallContext): RouteProviderError {
  const e = (error ?? {}) as SdkErrorShape;
  const code = typeof e.name === "string" ? e.name : "Error";
  const text = typeof e.message === "string" ? e.message : String(error);
  const status = e.$metadata?.httpStatusCode;
  const attempts = e.$metadata?.attempts;
  const call = `ec2:${ctx.action}${ctx.table ? ` on ${ctx.table}` : ""}`;
  const make = (kind: RouteProviderError["kind"], message: string) =>
    new RouteProviderError(kind, message, { cause: error });

  if (code === "RouteAlreadyExists") {
    return make(
      "exists",
      `Cannot create the route ${ctx.destination} in ${ctx.table}: the table has a route for ` +
        `${ctx.destination} already (RouteAlreadyExists); replace it instead`,
    );
  }
  if (
    code === "InvalidRoute.NotFound" ||
    (code === "InvalidParameterValue" && /no route defined/i.test(text))
  ) {
    return make(
      "not-found",
      `${call}: route table ${ctx.table} has no route for ${ctx.destination} (${code}); create it instead`,
    );
  }
  if (code === "RouteLimitExceeded") {
    const holds = ctx.routeCount === undefined
      ? "is full"
      : `is full: it holds ${ctx.routeCount} routes`;
    return make(
      "limit",
      `Cannot add the route ${ctx.destination} to ${ctx.table}: the table ${holds} ` +
        `(RouteLimitExceeded). Raise the quota "${ROUTE_QUOTA.name}" (default ` +
        `${ROUTE_QUOTA.defaultValue}, often ${ROUTE_QUOTA.common}, at most ${ROUTE_QUOTA.max}) in ` +
        `Service Quotas → ${ROUTE_QUOTA.service}, quota code ${ROUTE_QUOTA.code}, region ` +
        `${ctx.region}; or spread the cluster over more route tables (RouteTableID)`,
    );
  }
  if (THROTTLE_CODES.has(code) || status === 503) {
    return make(
      "throttled",
      `EC2 throttled ${call} (${code}, HTTP ${status ?? "?"}) after ${attempts ?? "?"} ` +
        `attempt(s); weft backs off and retries. If it persists, other clients in this account ` +
        `and region (${ctx.region}) are using up the EC2 API request rate: CloudTrail names them`,
    );
  }
  if (DENIED_CODES.has(code) || code.startsWith("UnauthorizedOperation")) {
    return make(
      "denied",
      `ec2:${ctx.action} was denied${ctx.table ? ` on ${ctx.table}` : ""} (${code}): allow the ` +
        `IAM action ec2:${ctx.action} in the policy of this instance's role (weft's aws-vpc ` +
        `backend needs ${AWS_IAM_ACTIONS.join(", ")})`,
    );
  }
  if (CREDENTIAL_CODES.has(code)) {
    return make(
      "denied",
      `EC2 refused the credentials for ${call} (${code}: ${firstSentence(text)}): check the ` +
        `instance profile or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY` +
        (code === "RequestExpired" || code === "SignatureDoesNotMatch"
          ? ", and that this host's clock is right (SigV4 allows 5 minutes of skew)"
          : ""),
    );
  }
  if (code === "CredentialsProviderError") {
    return make(
      "denied",
      `No AWS credentials for ${call} (${firstSentence(text)}): attach an instance profile ` +
        `(IAM role) to this instance, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY`,
    );
  }
  const netCode = [e.code, e.cause?.code].find((c) =>
    typeof c === "string" && NETWORK_CODES.has(c)
  );
  if (netCode || (status === undefined && (code === "TypeError" || code === "TimeoutError"))) {
    return make(
      "unavailable",
      `Cannot reach EC2 at ${ctx.endpoint} for ${call} (${netCode ?? firstSentence(text)}): ` +
        `check the route to the endpoint (a NAT gateway or an EC2 VPC endpoint for private ` +
        `subnets) and AWS_ENDPOINT_URL_EC2 / AWS_ENDPOINT_URL if set`,
    );
  }
  if (status !== undefined && status >= 500) {
    return make(
      "unavailable",
      `EC2 at ${ctx.endpoint} failed ${call} (${code}, HTTP ${status}): ${firstSentence(text)}`,
    );
  }
  if (code.startsWith("InvalidRouteTableID")) {
    return make(
      "invalid",
      `Route table ${ctx.table} does not exist in ${ctx.region}, or these credentials cannot see ` +
        `it (${code}): check RouteTableID in the network config`,
    );
  }
  if (code.startsWith("InvalidNetworkInterfaceID")) {
    return make(
      "invalid",
      `Network interface ${ctx.target ?? "(unknown)"} does not exist in ${ctx.region} (${code}) ` +
        `for ${call}: was it deleted or detached? weft routes to this host's primary interface`,
    );
  }
  return make(
    "invalid",
    `EC2 rejected ${call}${ctx.destination ? ` for ${ctx.destination}` : ""} (${code}` +
      `${status ? `, HTTP ${status}` : ""}): ${firstSentence(text)}`,
  );
}

/** The first sentence of an AWS message (UnauthorizedOperation's carry a long encoded blob). */
function firstSentence(text: string): string {
  const m = /^(.{1,300}?[.!?])(\s|$)/s.exec(text);
  return (m ? m[1] : text.slice(0, 300)).trim();
}
