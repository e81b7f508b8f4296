/**
 * The aws-vpc route provider: weft's route mode on EC2. Each host's pod
 * subnet becomes a route in the VPC's route tables whose target is that
 * host's primary network interface (`NetworkInterfaceId`, never the
 * instance id: on a multi-interface instance EC2 refuses an instance
 * target). For the VPC router to deliver pod traffic to the host, the
 * interface's SourceDestCheck is turned off.
 *
 * What it reads and writes in EC2 (the whole IAM policy is
 * {@link AWS_IAM_ACTIONS}):
 * - `discover()`: this instance from IMDSv2 (instance, region, interface,
 *   subnet, VPC and its CIDRs), then ModifyNetworkInterfaceAttribute
 *   (SourceDestCheck=false; idempotent) and the tables: the configured
 *   `RouteTableID`s (checked to exist and to be in this VPC), else the
 *   table associated with this host's subnet, else the VPC's main table
 *   (1–2 DescribeRouteTables calls);
 * - `list()`: one DescribeRouteTables filtered by `route-table-id` only
 *   (routes are filtered here: moto answers route-level filters with HTTP
 *   500, and one read per table is the cheapest), following `NextToken`;
 * - `create()` / `replace()` / `remove()`: CreateRoute / ReplaceRoute /
 *   DeleteRoute, one call each.
 *
 * A route is `owned` when it targets a network interface or is a
 * blackhole: AWS routes carry no tags, and weft (and flannel) write only
 * interface routes. The reconcile loop removes owned routes only inside
 * `Network`.
 *
 * `@aws-sdk/client-ec2` is imported on first use (`await import`), so a
 * host that does not use this backend never loads it; nothing outside
 * `backends/cloud/aws/` may import it. The region comes from IMDS (the SDK
 * does not learn it itself); the endpoint and credentials from the standard
 * environment (`AWS_ENDPOINT_URL_EC2` / `AWS_ENDPOINT_URL`, the default
 * credential chain: environment, profile, instance role).
 *
 * @module
 */

import type * as Ec2Sdk from "@aws-sdk/client-ec2";
import * as v from "valibot";
import process from "node:process";
import { linkedController } from "../../../core/abort.ts";
import { type Clock, systemClock } from "../../../core/clock.ts";
import { formatIPv4Net, formatIPv6Net, parseIPv4Net, parseIPv6Net } from "../../../core/ip.ts";
import {
  type ProviderRoute,
  type ProviderSelf,
  ROUTE_PROVIDER_API_VERSION,
  type RouteProvider,
  RouteProviderError,
} from "../provider.ts";
import { type Ec2CallContext, toProviderError } from "./errors.ts";
import { createImdsClient, type ImdsClient, type InstanceIdentity } from "./imds.ts";

export { AWS_IAM_ACTIONS } from "./errors.ts";

/** The seam version this provider implements. */
export const API_VERSION = ROUTE_PROVIDER_API_VERSION;

/** Static AWS credentials (tests; production uses the default chain). */
export interface AwsCredentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly sessionToken?: string;
}

/** Options for {@link createAwsVpcProvider}. */
export interface AwsVpcProviderOptions {
  /**
   * flannel's `RouteTableID`: one id or a list (`rtb-…`). Unset: the table
   * of this host's subnet, else the VPC's main table.
   */
  readonly routeTableIds?: unknown;
  /** The clock timeouts run on (default the system clock). */
  readonly clock?: Clock;
  /** The metadata client (default: IMDSv2 at the environment's endpoint). */
  readonly imds?: ImdsClient;
  /** The environment (default `process.env`): metadata endpoint, EC2 endpoint for messages. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** The region (default: this instance's, from IMDS). */
  readonly region?: string;
  /** The EC2 endpoint (default: the SDK's, from `AWS_ENDPOINT_URL_EC2` / `AWS_ENDPOINT_URL` or the region). */
  readonly endpoint?: string;
  /** Credentials (default: the SDK's default chain). */
  readonly credentials?: AwsCredentials;
  /** Attempts per call, the SDK's own retries included (default 3, the SDK's). */
  readonly maxAttempts?: number;
  /** Time allowed for one call, retries included, in ms (default 20 000). */
  readonly callTimeoutMs?: number;
}

/** A route table id as EC2 writes them. */
const RouteTableIdSchema = v.pipe(
  v.string(),
  v.regex(/^rtb-([0-9a-f]{8}|[0-9a-f]{17})$/, "expected a route table id (rtb-…)"),
);
const RouteTableIdsSchema = v.union([
  RouteTableIdSchema,
  v.pipe(v.array(RouteTableIdSchema), v.minLength(1, "expected at least one route table id")),
]);

/**
 * Read flannel's `RouteTableID` option: a string or a list of strings.
 *
 * @param value The option as configured (undefined/null = not set).
 * @returns The ids, or an empty list when not set.
 * @throws {RouteProviderError} `invalid` naming the value and the expected form.
 * @example
 * ```ts
 * parseRouteTableIds("rtb-0123456789abcdef0"); // ["rtb-0123456789abcdef0"]
 * parseRouteTableIds(["rtb-01234567", "rtb-89abcdef"]);
 * ```
 */
export function parseRouteTableIds(value: unknown): string[] {
  if (value === undefined || value === null) return [];
  const parsed = v.safeParse(RouteTableIdsSchema, value);
  if (!parsed.success) {
    throw new RouteProviderError(
      "invalid",
      `Cannot use Backend.RouteTableID: expected a route table id (rtb- and 8 or 17 hex digits) ` +
        `or a list of them, current value is ${JSON.stringify(value)}`,
    );
  }
  return [...new Set(typeof parsed.output === "string" ? [parsed.output] : parsed.output)];
}

/** A route as DescribeRouteTables reports it (the fields weft reads). */
const RouteSchema = v.object({
  DestinationCidrBlock: v.optional(v.string()),
  DestinationIpv6CidrBlock: v.optional(v.string()),
  NetworkInterfaceId: v.optional(v.string()),
  State: v.optional(v.string()),
});
const TableSchema = v.object({
  RouteTableId: v.string(),
  VpcId: v.string(),
  Routes: v.optional(v.array(RouteSchema), []),
});
type Table = v.InferOutput<typeof TableSchema>;

type Sdk = typeof Ec2Sdk;
/** `EC2Client.send` without its per-command overloads (the commands are made in one place). */
interface Ec2Sender {
  send(command: object, options: { abortSignal: AbortSignal }): Promise<unknown>;
}
interface Ec2 {
  readonly sdk: Sdk;
  readonly client: Ec2Sender;
  readonly region: string;
}

/** Pages one DescribeRouteTables may take before weft suspects a loop. */
const MAX_PAGES = 1000;

/**
 * Make the aws-vpc route provider.
 *
 * @param options Tables, clock, metadata client, and SDK settings.
 * @returns The provider; nothing is fetched or imported until the first call.
 * @throws {RouteProviderError} `invalid` for a malformed `routeTableIds`.
 * @example
 * ```ts
 * const provider = createAwsVpcProvider({ routeTableIds: "rtb-0123456789abcdef0" });
 * const self = await provider.discover(); // { target: "eni-…", tables: ["rtb-…"], location: "vpc-…" }
 * await provider.create(self.tables[0], "10.244.3.0/24", self.target);
 * ```
 */
export function createAwsVpcProvider(options: AwsVpcProviderOptions = {}): RouteProvider {
  const configured = parseRouteTableIds(options.routeTableIds);
  const env = options.env ?? process.env;
  const clock = options.clock ?? systemClock;
  const callTimeoutMs = options.callTimeoutMs ?? 20_000;
  const imds = options.imds ?? createImdsClient({ env, clock });
  let identity: Promise<InstanceIdentity> | undefined;
  let ec2: Promise<Ec2> | undefined;

  const endpointFor = (region: string) =>
    options.endpoint ?? env.AWS_ENDPOINT_URL_EC2 ?? env.AWS_ENDPOINT_URL ??
      `https://ec2.${region}.amazonaws.com`;

  /** This instance, read once (a failure is retried on the next call). */
  const whoAmI = (signal?: AbortSignal) =>
    identity ??= imds.identity(signal).catch((e) => {
      identity = undefined;
      throw e;
    });

  const client = (signal?: AbortSignal) =>
    ec2 ??= (async (): Promise<Ec2> => {
      const region = options.region ?? (await whoAmI(signal)).region;
      const sdk: Sdk = await import("@aws-sdk/client-ec2");
      const made = new sdk.EC2Client({
        region,
        ...(options.endpoint ? { endpoint: options.endpoint } : {}),
        ...(options.credentials ? { credentials: options.credentials } : {}),
        ...(options.maxAttempts ? { maxAttempts: options.maxAttempts } : {}),
      });
      return { sdk, client: made as unknown as Ec2Sender, region };
    })().catch((e) => {
      ec2 = undefined;
      throw e;
    });

  /** Send one command with a timeout on the clock; failures as RouteProviderErrors. */
  const send = async <T>(
    ctx: Omit<Ec2CallContext, "region" | "endpoint">,
    command: (sdk: Sdk) => object,
    signal?: AbortSignal,
  ): Promise<T> => {
    const { sdk, client: c, region } = await client(signal);
    const call = linkedController({
      parents: [signal],
      timeoutMs: callTimeoutMs,
      clock,
      what: `ec2:${ctx.action}`,
    });
    try {
      return await c.send(command(sdk), { abortSignal: call.signal }) as T;
    } catch (e) {
      if (signal?.aborted) throw signal.reason;
      const full: Ec2CallContext = { ...ctx, region, endpoint: endpointFor(region) };
      if (call.signal.aborted) {
        throw new RouteProviderError(
          "unavailable",
          `EC2 at ${full.endpoint} did not answer ec2:${ctx.action}${
            ctx.table ? ` on ${ctx.table}` : ""
          } within ${callTimeoutMs} ms: check the route to the endpoint`,
          { cause: e },
        );
      }
      throw toProviderError(e, full);
    } finally {
      call.dispose();
    }
  };

  /** DescribeRouteTables with `filters`, every page. */
  const describe = async (
    filters: { Name: string; Values: string[] }[],
    signal?: AbortSignal,
    table?: string,
  ): Promise<Table[]> => {
    const out: Table[] = [];
    let token: string | undefined;
    for (let page = 0; page < MAX_PAGES; page++) {
      const r = await send<Ec2Sdk.DescribeRouteTablesCommandOutput>(
        { action: "DescribeRouteTables", table },
        (sdk) => new sdk.DescribeRouteTablesCommand({ Filters: filters, NextToken: token }),
        signal,
      );
      for (const raw of r.RouteTables ?? []) {
        const parsed = v.safeParse(TableSchema, raw);
        if (!parsed.success) {
          throw new RouteProviderError(
            "unavailable",
            `EC2 answered DescribeRouteTables with a table weft cannot read (${
              parsed.issues[0].message
            } at ${v.getDotPath(parsed.issues[0])}): ${JSON.stringify(raw).slice(0, 200)}`,
          );
        }
        out.push(parsed.output);
      }
      if (!r.NextToken || r.NextToken === token) return out;
      token = r.NextToken;
    }
    throw new RouteProviderError(
      "unavailable",
      `EC2 kept answering DescribeRouteTables with a NextToken after ${MAX_PAGES} pages`,
    );
  };

  const findTables = async (me: InstanceIdentity, signal?: AbortSignal): Promise<string[]> => {
    if (configured.length > 0) {
      const found = await describe([{ Name: "route-table-id", Values: configured }], signal);
      for (const id of configured) {
        const t = found.find((x) => x.RouteTableId === id);
        if (!t) {
          throw new RouteProviderError(
            "invalid",
            `Route table ${id} (Backend.RouteTableID) does not exist in ${me.region}, or these ` +
              `credentials cannot see it: configure a table of VPC ${me.vpcId}`,
          );
        }
        if (t.VpcId !== me.vpcId) {
          throw new RouteProviderError(
            "invalid",
            `Route table ${id} (Backend.RouteTableID) belongs to VPC ${t.VpcId}, but this host's ` +
              `network interface ${me.interfaceId} is in VPC ${me.vpcId}: configure tables of ` +
              `VPC ${me.vpcId} (a route in another VPC's table cannot reach this host)`,
          );
        }
      }
      return configured;
    }
    const bySubnet = await describe(
      [{ Name: "association.subnet-id", Values: [me.subnetId] }],
      signal,
    );
    if (bySubnet.length > 0) return [bySubnet[0].RouteTableId];
    const main = await describe([
      { Name: "vpc-id", Values: [me.vpcId] },
      { Name: "association.main", Values: ["true"] },
    ], signal);
    if (main.length > 0) return [main[0].RouteTableId];
    throw new RouteProviderError(
      "invalid",
      `Found no route table for subnet ${me.subnetId} and no main table in VPC ${me.vpcId} ` +
        `(${me.region}): set Backend.RouteTableID`,
    );
  };

  const list = async (table: string, signal?: AbortSignal): Promise<ProviderRoute[]> => {
    const found = await describe([{ Name: "route-table-id", Values: [table] }], signal, table);
    const t = found.find((x) => x.RouteTableId === table);
    if (!t) {
      const region = (await client(signal)).region;
      throw new RouteProviderError(
        "invalid",
        `Route table ${table} does not exist in ${region}, or these credentials cannot see it: ` +
          `check Backend.RouteTableID`,
      );
    }
    const routes: ProviderRoute[] = [];
    for (const r of t.Routes) {
      const destination = canonical(r.DestinationCidrBlock ?? r.DestinationIpv6CidrBlock);
      if (destination === null) continue; // prefix-list routes: never weft's
      const blackhole = r.State === "blackhole";
      const eni = r.NetworkInterfaceId;
      routes.push({
        table,
        destination,
        target: !blackhole && eni ? eni : null,
        owned: blackhole || eni !== undefined,
      });
    }
    return routes;
  };

  const destinationParam = (destination: string) => {
    const family = checkDestination(destination);
    return family === 4
      ? { DestinationCidrBlock: destination }
      : { DestinationIpv6CidrBlock: destination };
  };

  return {
    name: "aws-vpc",

    async discover(signal) {
      const me = await whoAmI(signal);
      await send(
        { action: "ModifyNetworkInterfaceAttribute", target: me.interfaceId },
        (sdk) =>
          new sdk.ModifyNetworkInterfaceAttributeCommand({
            NetworkInterfaceId: me.interfaceId,
            SourceDestCheck: { Value: false },
          }),
        signal,
      );
      const tables = await findTables(me, signal);
      const self: ProviderSelf = {
        target: me.interfaceId,
        tables,
        location: me.vpcId,
        locationCidrs: me.vpcCidrs,
      };
      return self;
    },

    list,

    async create(table, destination, target, signal) {
      const ctx = { action: "CreateRoute" as const, table, destination, target };
      try {
        await send(
          ctx,
          (sdk) =>
            new sdk.CreateRouteCommand({
              RouteTableId: table,
              ...destinationParam(destination),
              NetworkInterfaceId: target,
            }),
          signal,
        );
      } catch (e) {
        if (!(e instanceof RouteProviderError) || e.kind !== "limit") throw e;
        // say how full the table is: one more read, only on this rare path
        const routeCount = await list(table, signal).then((r) => r.length, () => undefined);
        const { region } = await client(signal);
        throw toProviderError(e.cause, {
          ...ctx,
          region,
          endpoint: endpointFor(region),
          routeCount,
        });
      }
    },

    async replace(table, destination, target, signal) {
      await send(
        { action: "ReplaceRoute", table, destination, target },
        (sdk) =>
          new sdk.ReplaceRouteCommand({
            RouteTableId: table,
            ...destinationParam(destination),
            NetworkInterfaceId: target,
          }),
        signal,
      );
    },

    async remove(table, destination, signal) {
      try {
        await send(
          { action: "DeleteRoute", table, destination },
          (sdk) =>
            new sdk.DeleteRouteCommand({ RouteTableId: table, ...destinationParam(destination) }),
          signal,
        );
      } catch (e) {
        if (e instanceof RouteProviderError && e.kind === "not-found") return;
        throw e;
      }
    },
  };
}

/** The family of a destination; `invalid` when it is not canonical CIDR text. */
function checkDestination(destination: string): 4 | 6 {
  const family = destination.includes(":") ? 6 : 4;
  if (canonical(destination) !== destination) {
    throw new RouteProviderError(
      "invalid",
      `Cannot write a route to ${JSON.stringify(destination)}: expected a network in canonical ` +
        `CIDR form (e.g. 10.244.3.0/24)`,
    );
  }
  return family;
}

/** Canonical CIDR text, or null for none or garbage. */
function canonical(cidr: string | undefined): string | null {
  if (cidr === undefined) return null;
  try {
    return cidr.includes(":")
      ? formatIPv6Net(parseIPv6Net(cidr))
      : formatIPv4Net(parseIPv4Net(cidr));
  } catch {
    return null;
  }
}
