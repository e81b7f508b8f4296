/**
 * A small IMDSv2 client: what this EC2 instance is, from the instance
 * metadata service, for the aws-vpc route provider.
 *
 * IMDSv2 is a session protocol: `PUT /latest/api/token` with
 * `X-aws-ec2-metadata-token-ttl-seconds` answers a token, and every `GET`
 * carries it in `X-aws-ec2-metadata-token`. The token is kept until shortly
 * before its TTL ends (on the injected clock); a 401 (expired, or the service
 * restarted) fetches a new one and retries once.
 *
 * The endpoint follows the AWS SDKs: `AWS_EC2_METADATA_SERVICE_ENDPOINT`,
 * else `AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6` → `http://[fd00:ec2::254]`,
 * else `http://169.254.169.254`; `AWS_EC2_METADATA_DISABLED=true` turns it
 * off. An endpoint may carry a path prefix (the fake serves many instances
 * that way).
 *
 * Every failure is a {@link RouteProviderError} of kind `unavailable` (the
 * caller retries with back-off): not on EC2 (refused, no answer in time), a
 * 4xx/5xx, or a reply that is not what the metadata service sends (every
 * value is validated).
 *
 * @module
 */

import * as v from "valibot";
import process from "node:process";
import { linkedController } from "../../../core/abort.ts";
import { type Clock, systemClock } from "../../../core/clock.ts";
import { RouteProviderError } from "../provider.ts";

/** What the aws-vpc provider needs to know about this instance. */
export interface InstanceIdentity {
  readonly instanceId: string;
  readonly region: string;
  /** MAC of the primary interface. */
  readonly mac: string;
  /** The primary interface (ENI), the next hop of this host's routes. */
  readonly interfaceId: string;
  readonly subnetId: string;
  readonly vpcId: string;
  /** Every IPv4 CIDR of the VPC, primary first. */
  readonly vpcCidrs: readonly string[];
}

/** A metadata client. */
export interface ImdsClient {
  /** The endpoint in use, for messages. */
  readonly endpoint: string;
  /**
   * Read one metadata path (relative to `/latest/meta-data/`).
   * @throws {RouteProviderError} `unavailable` on any failure.
   */
  get(path: string, signal?: AbortSignal): Promise<string>;
  /**
   * Read and validate this instance's identity: one token PUT (when none is
   * held) and 7 GETs in two parallel rounds.
   * @throws {RouteProviderError} `unavailable` on any failure or invalid value.
   */
  identity(signal?: AbortSignal): Promise<InstanceIdentity>;
}

/** Options for {@link createImdsClient}. */
export interface ImdsOptions {
  /** Endpoint; default from the environment (see the module doc). */
  readonly endpoint?: string;
  /** The environment to read (default `process.env`). */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** The clock timeouts and token lifetimes run on. */
  readonly clock?: Clock;
  /** Per-request timeout in ms (default 1000, as the AWS SDKs). */
  readonly timeoutMs?: number;
  /** Token lifetime asked for, in seconds (default 21600 = 6 h, the maximum). */
  readonly tokenTtlSeconds?: number;
  /** The fetch to use (default the global one). */
  readonly fetch?: typeof fetch;
}

/** The endpoint when nothing overrides it. */
export const DEFAULT_IMDS_ENDPOINT = "http://169.254.169.254";
const IPV6_IMDS_ENDPOINT = "http://[fd00:ec2::254]";

/**
 * The metadata endpoint the AWS SDKs would use for `env`.
 *
 * @param env Environment variables.
 * @returns The endpoint without a trailing slash, or null when metadata is disabled.
 * @throws {RouteProviderError} `invalid` when the endpoint is not an http(s) URL.
 * @example
 * ```ts
 * imdsEndpoint({ AWS_EC2_METADATA_SERVICE_ENDPOINT: "http://127.0.0.1:8111/" }); // "http://127.0.0.1:8111"
 * ```
 */
export function imdsEndpoint(env: Readonly<Record<string, string | undefined>>): string | null {
  if (env.AWS_EC2_METADATA_DISABLED?.toLowerCase() === "true") return null;
  const given = env.AWS_EC2_METADATA_SERVICE_ENDPOINT;
  if (given) {
    let url: URL | undefined;
    try {
      url = new URL(given);
    } catch { /* reported below */ }
    if (!url || (url.protocol !== "http:" && url.protocol !== "https:")) {
      throw new RouteProviderError(
        "invalid",
        `Cannot use AWS_EC2_METADATA_SERVICE_ENDPOINT: expected an http(s) URL, current value is ${
          JSON.stringify(given)
        }`,
      );
    }
    return given.replace(/\/+$/, "");
  }
  if (env.AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE?.toLowerCase() === "ipv6") {
    return IPV6_IMDS_ENDPOINT;
  }
  return DEFAULT_IMDS_ENDPOINT;
}

const id = (prefix: string, what: string) =>
  v.pipe(
    v.string(),
    v.regex(new RegExp(`^${prefix}-[0-9a-f]{8,17}$`), `is not ${what} (${prefix}-…)`),
  );
const cidr = v.pipe(
  v.string(),
  v.regex(
    /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}\/(3[0-2]|[12]?\d)$/,
    "is not an IPv4 CIDR",
  ),
);

/** The metadata values the provider relies on, each validated. */
const IdentitySchema = v.object({
  instanceId: id("i", "an instance id"),
  region: v.pipe(v.string(), v.regex(/^[a-z]{2}(-[a-z]+)+-\d+$/, "is not a region name")),
  mac: v.pipe(v.string(), v.regex(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/, "is not a MAC address")),
  interfaceId: id("eni", "a network interface id"),
  subnetId: id("subnet", "a subnet id"),
  vpcId: id("vpc", "a VPC id"),
  vpcCidrs: v.pipe(v.array(cidr), v.minLength(1, "lists no CIDR")),
});

/** Where each identity field comes from, for messages. */
const FIELD_PATHS: Record<keyof InstanceIdentity, string> = {
  instanceId: "instance-id",
  region: "placement/region",
  mac: "mac",
  interfaceId: "network/interfaces/macs/<mac>/interface-id",
  subnetId: "network/interfaces/macs/<mac>/subnet-id",
  vpcId: "network/interfaces/macs/<mac>/vpc-id",
  vpcCidrs: "network/interfaces/macs/<mac>/vpc-ipv4-cidr-blocks",
};

/**
 * Make an IMDSv2 client.
 *
 * @param options Endpoint, environment, clock, timeout, token TTL.
 * @returns The client.
 * @throws {RouteProviderError} `invalid` for a malformed endpoint in the environment.
 * @example
 * ```ts
 * const imds = createImdsClient({ clock: systemClock });
 * const me = await imds.identity(); // { instanceId: "i-…", interfaceId: "eni-…", … }
 * ```
 */
export function createImdsClient(options: ImdsOptions = {}): ImdsClient {
  const env = options.env ?? process.env;
  const endpoint = options.endpoint?.replace(/\/+$/, "") ?? imdsEndpoint(env);
  const clock = options.clock ?? systemClock;
  const timeoutMs = options.timeoutMs ?? 1000;
  const ttl = options.tokenTtlSeconds ?? 21600;
  const doFetch = options.fetch ?? fetch;
  let token: { value: string; until: number } | undefined;
  /** The token request in flight, shared by concurrent GETs. */
  let pending: Promise<string> | undefined;

  const unavailable = (message: string, cause?: unknown) =>
    new RouteProviderError("unavailable", message, { cause });

  /** One HTTP exchange with a timeout on the clock; the body as text. */
  const exchange = async (
    method: "GET" | "PUT",
    path: string,
    headers: Record<string, string>,
    signal: AbortSignal | undefined,
  ): Promise<{ status: number; body: string }> => {
    if (endpoint === null) {
      throw unavailable(
        "Cannot read instance metadata: AWS_EC2_METADATA_DISABLED=true. The aws-vpc backend " +
          "discovers this host through it: unset AWS_EC2_METADATA_DISABLED",
      );
    }
    const url = `${endpoint}${path}`;
    const call = linkedController({
      parents: [signal],
      timeoutMs,
      clock,
      what: `instance metadata ${method} ${url}`,
    });
    try {
      const response = await doFetch(url, { method, headers, signal: call.signal });
      return { status: response.status, body: await response.text() };
    } catch (e) {
      if (signal?.aborted) throw signal.reason;
      if (call.signal.aborted) {
        throw unavailable(
          `No answer from the instance metadata service at ${url} within ${timeoutMs} ms: ` +
            `this host does not look like an EC2 instance (the aws-vpc backend runs only on EC2), ` +
            `or IMDSv2's hop limit is 1 and weft runs in a container without host networking ` +
            `(raise HttpPutResponseHopLimit to 2), or a firewall drops the packets`,
          e,
        );
      }
      throw unavailable(
        `Cannot reach the instance metadata service at ${url} (${describe(e)}): this host does ` +
          `not look like an EC2 instance (the aws-vpc backend runs only on EC2); off EC2, point ` +
          `AWS_EC2_METADATA_SERVICE_ENDPOINT at a metadata service`,
        e,
      );
    } finally {
      call.dispose();
    }
  };

  const newToken = async (signal?: AbortSignal): Promise<string> => {
    const r = await exchange(
      "PUT",
      "/latest/api/token",
      { "x-aws-ec2-metadata-token-ttl-seconds": String(ttl) },
      signal,
    );
    if (r.status !== 200 || !/^[\x21-\x7e]{1,512}$/.test(r.body)) {
      throw unavailable(
        `The instance metadata service at ${endpoint} refused an IMDSv2 token ` +
          `(PUT /latest/api/token answered ${r.status} ${excerpt(r.body)}): ` +
          (r.status === 403
            ? "the instance metadata service is turned off for this instance (HttpEndpoint=disabled): enable it"
            : "is AWS_EC2_METADATA_SERVICE_ENDPOINT pointing at an EC2 metadata service?"),
      );
    }
    // keep a tenth of the lifetime (at most a minute) as margin against clock drift
    token = { value: r.body, until: clock.now() + ttl * 1000 - Math.min(60_000, ttl * 100) };
    return r.body;
  };

  const currentToken = (signal?: AbortSignal): Promise<string> => {
    if (token && token.until > clock.now()) return Promise.resolve(token.value);
    pending ??= newToken(signal).finally(() => (pending = undefined));
    return pending;
  };

  const get = async (path: string, signal?: AbortSignal): Promise<string> => {
    for (let attempt = 0;; attempt++) {
      const value = await currentToken(signal);
      const r = await exchange(
        "GET",
        `/latest/meta-data/${path}`,
        { "x-aws-ec2-metadata-token": value },
        signal,
      );
      if (r.status === 200) return r.body.trim();
      if (r.status === 401 && attempt === 0) {
        token = undefined;
        continue;
      }
      throw unavailable(
        `The instance metadata service at ${endpoint} answered ${r.status} for ` +
          `/latest/meta-data/${path} ${excerpt(r.body)}` +
          (r.status === 404
            ? ": this instance has no such metadata (a network interface detached?)"
            : r.status === 401
            ? ": it refused a fresh IMDSv2 token"
            : ""),
      );
    }
  };

  return {
    endpoint: endpoint ?? "(disabled)",
    get,
    async identity(signal) {
      const [instanceId, mac, region] = await Promise.all(
        ["instance-id", "mac", "placement/region"].map((p) => get(p, signal)),
      );
      // the MAC goes into the next paths: check it before using it
      const macCheck = v.safeParse(IdentitySchema.entries.mac, mac);
      if (!macCheck.success) throw invalidValue(endpoint, "mac", mac, macCheck.issues[0].message);
      const base = `network/interfaces/macs/${mac}/`;
      const [interfaceId, subnetId, vpcId, cidrs] = await Promise.all(
        ["interface-id", "subnet-id", "vpc-id", "vpc-ipv4-cidr-blocks"].map((p) =>
          get(base + p, signal)
        ),
      );
      const raw = {
        instanceId,
        region,
        mac,
        interfaceId,
        subnetId,
        vpcId,
        vpcCidrs: cidrs.split("\n").map((c) => c.trim()).filter((c) => c !== ""),
      };
      const parsed = v.safeParse(IdentitySchema, raw);
      if (parsed.success) return parsed.output;
      const issue = parsed.issues[0];
      const field = (issue.path?.[0]?.key ?? "instanceId") as keyof InstanceIdentity;
      throw invalidValue(endpoint, field, raw[field], issue.message);
    },
  };
}

function invalidValue(
  endpoint: string | null,
  field: keyof InstanceIdentity,
  value: unknown,
  problem: string,
): RouteProviderError {
  return new RouteProviderError(
    "unavailable",
    `The instance metadata service at ${endpoint} answered ${FIELD_PATHS[field]} with ${
      excerpt(Array.isArray(value) ? value.join("\n") : String(value))
    }, which ${problem}: is AWS_EC2_METADATA_SERVICE_ENDPOINT pointing at an EC2 metadata service?`,
  );
}

/** A short, quoted excerpt of a reply body for a message. */
function excerpt(body: string): string {
  const flat = body.replace(/\s+/g, " ").trim();
  return JSON.stringify(flat.length > 80 ? `${flat.slice(0, 80)}…` : flat);
}

/** The useful part of a fetch failure (`ECONNREFUSED`, `connection refused`). */
function describe(e: unknown): string {
  const err = e as { code?: unknown; message?: unknown; cause?: { code?: unknown } };
  const code = err?.code ?? err?.cause?.code;
  return typeof code === "string" ? code : String(err?.message ?? e);
}
