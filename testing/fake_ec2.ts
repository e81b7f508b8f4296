/**
 * A fake Amazon EC2 that speaks the EC2 Query API the way
 * `@aws-sdk/client-ec2` does, for the calls weft's aws-vpc route provider
 * makes and the calls a test needs to build a world. The real SDK is pointed
 * at it (`endpoint`), so requests and replies go through the SDK's own
 * serializer and parser.
 *
 * Wire format, as EC2 has it:
 * - requests: `POST /`, `application/x-www-form-urlencoded`, `Action`,
 *   `Version=2016-11-15`, lists as `Name.1`, structures as `Filter.1.Name` /
 *   `Filter.1.Value.1`, signed with SigV4 (the fake checks that a signature
 *   is present and scoped to its region, not the signature itself);
 * - replies: `text/xml`, `<ActionResponse xmlns=…><requestId>…` with lists as
 *   `<item>` elements; errors as `<Response><Errors><Error><Code>…<Message>…
 *   </Error></Errors><RequestID>…</RequestID></Response>` with EC2's status
 *   (400 client errors, 401 AuthFailure, 403 UnauthorizedOperation, 503
 *   RequestLimitExceeded).
 *
 * Actions: CreateVpc (with its main route table and local route),
 * CreateSubnet, CreateNetworkInterface, DeleteNetworkInterface (routes to it
 * turn `blackhole`, as in EC2), DescribeNetworkInterfaces,
 * ModifyNetworkInterfaceAttribute (SourceDestCheck), CreateInternetGateway,
 * AttachInternetGateway, CreateRouteTable, AssociateRouteTable,
 * DescribeRouteTables (ids; filters `route-table-id`, `vpc-id`,
 * `association.main`, `association.subnet-id`, `route.state`,
 * `route.destination-cidr-block`; paging with `MaxResults`/`NextToken`,
 * applied before the filters as EC2 does, so a page may be empty and still
 * carry a `NextToken`),
 * CreateRoute, ReplaceRoute, DeleteRoute with EC2's errors:
 * `RouteAlreadyExists`, `InvalidRoute.NotFound` (DeleteRoute), EC2's
 * `InvalidParameterValue` "There is no route defined for …" (ReplaceRoute on
 * a missing route — EC2 really answers that, not InvalidRoute.NotFound),
 * `RouteLimitExceeded` at a set number of routes per table,
 * `InvalidRouteTableID.NotFound`, `InvalidNetworkInterfaceID.NotFound`.
 *
 * Faults on demand: throttling (`RequestLimitExceeded`, HTTP 503) for the
 * next N calls, `UnauthorizedOperation` per action, route limits. Every call
 * is counted per action (for "EC2 calls per node join").
 *
 * @module
 */

import { formatIPv4Net, formatIPv6Net, parseIPv4Net, parseIPv6Net } from "../core/ip.ts";
import { type HttpServer, serveHttp } from "../core/runtime.ts";

/** The API version the SDK sends (and the fake requires). */
export const EC2_API_VERSION = "2016-11-15";
const XMLNS = `http://ec2.amazonaws.com/doc/${EC2_API_VERSION}/`;

/** One route as the fake stores it. */
export interface FakeRoute {
  readonly destination: string;
  readonly family: 4 | 6;
  /** `local` for the VPC's own route. */
  readonly gatewayId?: string;
  readonly networkInterfaceId?: string;
  readonly instanceId?: string;
  readonly state: "active" | "blackhole";
  readonly origin: "CreateRouteTable" | "CreateRoute";
}

/** One route table as the fake stores it. */
export interface FakeRouteTable {
  readonly id: string;
  readonly vpcId: string;
  readonly routes: readonly FakeRoute[];
  readonly associations: readonly { id: string; subnetId?: string; main: boolean }[];
}

/** One network interface as the fake stores it. */
export interface FakeNetworkInterface {
  readonly id: string;
  readonly subnetId: string;
  readonly vpcId: string;
  readonly mac: string;
  readonly privateIp: string;
  readonly sourceDestCheck: boolean;
  /** The instance it is attached to, if any (see {@link FakeEc2.attach}). */
  readonly instanceId?: string;
}

/** One call the fake answered. */
export interface CallRecord {
  readonly action: string;
  readonly status: number;
  /** The EC2 error code when the call failed. */
  readonly code?: string;
}

/** Options for {@link createFakeEc2}. */
export interface FakeEc2Options {
  /** The region the fake plays; requests signed for another are refused (default `us-east-1`). */
  region?: string;
  /** The account that owns everything (default `123456789012`). */
  accountId?: string;
  /**
   * Answer Describe calls in pages of at most this many items even when the
   * caller gives no `MaxResults` (EC2 may page any reply); default: no limit.
   */
  pageSize?: number;
  /** Address to listen on (default 127.0.0.1). */
  hostname?: string;
}

/** A running fake EC2. */
export interface FakeEc2 {
  /** `http://127.0.0.1:<port>`: give it to the SDK as `endpoint`. */
  readonly endpoint: string;
  readonly region: string;
  /** Answer one request without a socket (for wire-format tests). */
  handle(request: Request): Promise<Response>;
  /** How many calls of `action` (all actions without it) were answered, failed ones included. */
  calls(action?: string): number;
  /** Every call in order. */
  readonly log: readonly CallRecord[];
  /** Forget the counts and the log. */
  resetCalls(): void;
  /** From now on `table` (every table without it) holds at most `limit` routes; null lifts it. */
  setRouteLimit(limit: number | null, table?: string): void;
  /** The next `calls` calls (any action) are refused with `RequestLimitExceeded` (503). */
  throttle(calls: number): void;
  /** Refuse `action` (e.g. `CreateRoute`) with `UnauthorizedOperation` until {@link FakeEc2.allow}. */
  deny(action: string): void;
  /** Stop refusing `action`. */
  allow(action: string): void;
  /** Attach an interface to an instance: routes to it then also name the instance, as in EC2. */
  attach(networkInterfaceId: string, instanceId: string): void;
  /** A copy of a route table, or undefined. */
  routeTable(id: string): FakeRouteTable | undefined;
  /** A copy of a network interface, or undefined. */
  networkInterface(id: string): FakeNetworkInterface | undefined;
  /** Stop the server. */
  close(): Promise<void>;
}

/** An EC2 error reply. */
class Ec2Fault extends Error {
  constructor(readonly code: string, message: string, readonly status = 400) {
    super(message);
  }
}

interface Vpc {
  id: string;
  cidrs: string[];
  mainTableId: string;
}
interface Subnet {
  id: string;
  vpcId: string;
  cidr: string;
}
interface Table {
  id: string;
  vpcId: string;
  routes: FakeRoute[];
  associations: { id: string; subnetId?: string; main: boolean }[];
}

const FILTERS = new Set([
  "route-table-id",
  "vpc-id",
  "association.main",
  "association.subnet-id",
  "route.state",
  "route.destination-cidr-block",
]);

/**
 * Start a fake EC2 on 127.0.0.1 (a free port).
 *
 * @param options Region, account, forced page size.
 * @returns The running fake.
 * @example
 * ```ts
 * const ec2 = await createFakeEc2();
 * const client = new EC2Client({ region: ec2.region, endpoint: ec2.endpoint, credentials });
 * await ec2.close();
 * ```
 */
export async function createFakeEc2(options: FakeEc2Options = {}): Promise<FakeEc2> {
  const region = options.region ?? "us-east-1";
  const accountId = options.accountId ?? "123456789012";
  const hostname = options.hostname ?? "127.0.0.1";
  const vpcs = new Map<string, Vpc>();
  const subnets = new Map<string, Subnet>();
  const enis = new Map<string, FakeNetworkInterface>();
  const igws = new Map<string, { id: string; vpcId?: string }>();
  const tables = new Map<string, Table>();
  const denied = new Set<string>();
  const limits = new Map<string, number>();
  let globalLimit: number | null = null;
  let throttled = 0;
  let log: CallRecord[] = [];

  const newId = (prefix: string) => {
    let hex = "";
    for (let i = 0; i < 17; i++) hex += Math.floor(Math.random() * 16).toString(16);
    return `${prefix}-${hex}`;
  };
  const mustTable = (id: string | undefined): Table => {
    if (!id) throw missingParameter("routeTableId");
    const t = tables.get(id);
    if (!t) {
      throw new Ec2Fault(
        "InvalidRouteTableID.NotFound",
        `The routeTable ID '${id}' does not exist`,
      );
    }
    return t;
  };
  const mustVpc = (id: string | undefined): Vpc => {
    if (!id) throw missingParameter("vpcId");
    const vpc = vpcs.get(id);
    if (!vpc) throw new Ec2Fault("InvalidVpcID.NotFound", `The vpc ID '${id}' does not exist`);
    return vpc;
  };
  const mustSubnet = (id: string | undefined): Subnet => {
    if (!id) throw missingParameter("subnetId");
    const s = subnets.get(id);
    if (!s) throw new Ec2Fault("InvalidSubnetID.NotFound", `The subnet ID '${id}' does not exist`);
    return s;
  };
  const mustEni = (id: string | undefined): FakeNetworkInterface => {
    if (!id) throw missingParameter("networkInterfaceId");
    const e = enis.get(id);
    if (!e) {
      throw new Ec2Fault(
        "InvalidNetworkInterfaceID.NotFound",
        `The networkInterface ID '${id}' does not exist`,
      );
    }
    return e;
  };

  /** The route destination of a request, canonical, and its family. */
  const destinationOf = (p: URLSearchParams): { destination: string; family: 4 | 6 } => {
    const v4 = p.get("DestinationCidrBlock");
    const v6 = p.get("DestinationIpv6CidrBlock");
    if (v4 === null && v6 === null) throw missingParameter("destinationCidrBlock");
    try {
      if (v4 !== null) {
        const net = formatIPv4Net(parseIPv4Net(v4));
        if (net !== v4) throw new SyntaxError("host bits set");
        return { destination: net, family: 4 };
      }
      return { destination: formatIPv6Net(parseIPv6Net(v6!)), family: 6 };
    } catch {
      const name = v4 !== null ? "destinationCidrBlock" : "destinationIpv6CidrBlock";
      throw new Ec2Fault(
        "InvalidParameterValue",
        `Value (${v4 ?? v6}) for parameter ${name} is invalid. This is not a valid CIDR block.`,
      );
    }
  };

  /** The target of a CreateRoute/ReplaceRoute. */
  const targetOf = (p: URLSearchParams, table: Table): Partial<FakeRoute> => {
    const eniId = p.get("NetworkInterfaceId");
    const gatewayId = p.get("GatewayId");
    if ((eniId === null) === (gatewayId === null)) {
      throw new Ec2Fault(
        "InvalidParameterCombination",
        "The request must contain exactly one of gatewayId, natGatewayId, networkInterfaceId, " +
          "vpcPeeringConnectionId, transitGatewayId, egressOnlyInternetGatewayId or instanceId",
      );
    }
    if (eniId !== null) {
      const eni = mustEni(eniId);
      if (eni.vpcId !== table.vpcId) {
        throw new Ec2Fault(
          "InvalidParameterValue",
          `route table ${table.id} and network interface ${eni.id} belong to different networks`,
        );
      }
      return { networkInterfaceId: eni.id, instanceId: eni.instanceId };
    }
    const igw = igws.get(gatewayId!);
    if (!igw) {
      throw new Ec2Fault(
        "InvalidGatewayID.NotFound",
        `The gateway ID '${gatewayId}' does not exist`,
      );
    }
    if (igw.vpcId !== table.vpcId) {
      throw new Ec2Fault(
        "InvalidParameterValue",
        `route table ${table.id} and network gateway ${igw.id} belong to different networks`,
      );
    }
    return { gatewayId: igw.id };
  };

  const limitOf = (table: Table) => limits.get(table.id) ?? globalLimit;

  const actions: Record<string, (p: URLSearchParams) => string> = {
    CreateVpc(p) {
      const cidr = p.get("CidrBlock");
      if (!cidr) throw missingParameter("cidrBlock");
      const vpc: Vpc = { id: newId("vpc"), cidrs: [cidr], mainTableId: newId("rtb") };
      vpcs.set(vpc.id, vpc);
      tables.set(vpc.mainTableId, {
        id: vpc.mainTableId,
        vpcId: vpc.id,
        routes: [localRoute(cidr)],
        associations: [{ id: newId("rtbassoc"), main: true }],
      });
      return el("vpc", vpcXml(vpc, accountId));
    },
    CreateSubnet(p) {
      const vpc = mustVpc(p.get("VpcId") ?? undefined);
      const cidr = p.get("CidrBlock");
      if (!cidr) throw missingParameter("cidrBlock");
      const s: Subnet = { id: newId("subnet"), vpcId: vpc.id, cidr };
      subnets.set(s.id, s);
      return el(
        "subnet",
        el("subnetId", s.id) + el("vpcId", s.vpcId) + el("cidrBlock", s.cidr) +
          el("state", "available") + el("availabilityZone", `${region}a`) +
          el("ownerId", accountId),
      );
    },
    CreateNetworkInterface(p) {
      const s = mustSubnet(p.get("SubnetId") ?? undefined);
      const n = enis.size + 10;
      const base = parseIPv4Net(s.cidr).ip;
      const privateIp = [24, 16, 8, 0].map((sh) => ((base + n) >>> sh) & 255).join(".");
      const mac = "02:" +
        Array.from(
          { length: 5 },
          () => Math.floor(Math.random() * 256).toString(16).padStart(2, "0"),
        )
          .join(":");
      const eni: FakeNetworkInterface = {
        id: newId("eni"),
        subnetId: s.id,
        vpcId: s.vpcId,
        mac,
        privateIp,
        sourceDestCheck: true,
      };
      enis.set(eni.id, eni);
      return el("networkInterface", eniXml(eni, region, accountId));
    },
    DeleteNetworkInterface(p) {
      const eni = mustEni(p.get("NetworkInterfaceId") ?? undefined);
      enis.delete(eni.id);
      for (const t of tables.values()) {
        t.routes = t.routes.map((r) =>
          r.networkInterfaceId === eni.id ? { ...r, state: "blackhole", instanceId: undefined } : r
        );
      }
      return el("return", "true");
    },
    DescribeNetworkInterfaces(p) {
      const ids = listParam(p, "NetworkInterfaceId");
      for (const id of ids) mustEni(id);
      const found = [...enis.values()].filter((e) => ids.length === 0 || ids.includes(e.id));
      return items("networkInterfaceSet", found, (e) => eniXml(e, region, accountId));
    },
    ModifyNetworkInterfaceAttribute(p) {
      const eni = mustEni(p.get("NetworkInterfaceId") ?? undefined);
      const v = p.get("SourceDestCheck.Value");
      if (v !== null) {
        if (v !== "true" && v !== "false") {
          throw new Ec2Fault(
            "InvalidParameterValue",
            `Value (${v}) for parameter sourceDestCheck is invalid. Expected a boolean.`,
          );
        }
        enis.set(eni.id, { ...eni, sourceDestCheck: v === "true" });
      }
      return el("return", "true");
    },
    CreateInternetGateway() {
      const igw = { id: newId("igw") };
      igws.set(igw.id, igw);
      return el(
        "internetGateway",
        el("internetGatewayId", igw.id) + el("ownerId", accountId) + el("attachmentSet", "") +
          el("tagSet", ""),
      );
    },
    AttachInternetGateway(p) {
      const id = p.get("InternetGatewayId") ?? "";
      const igw = igws.get(id);
      if (!igw) {
        throw new Ec2Fault(
          "InvalidInternetGatewayID.NotFound",
          `The internetGateway ID '${id}' does not exist`,
        );
      }
      igw.vpcId = mustVpc(p.get("VpcId") ?? undefined).id;
      return el("return", "true");
    },
    CreateRouteTable(p) {
      const vpc = mustVpc(p.get("VpcId") ?? undefined);
      const t: Table = {
        id: newId("rtb"),
        vpcId: vpc.id,
        routes: vpc.cidrs.map(localRoute),
        associations: [],
      };
      tables.set(t.id, t);
      return el("routeTable", tableXml(t, accountId));
    },
    AssociateRouteTable(p) {
      const t = mustTable(p.get("RouteTableId") ?? undefined);
      const s = mustSubnet(p.get("SubnetId") ?? undefined);
      if (s.vpcId !== t.vpcId) {
        throw new Ec2Fault(
          "InvalidParameterValue",
          `Route table ${t.id} and subnet ${s.id} belong to different networks`,
        );
      }
      for (const other of tables.values()) {
        if (other.associations.some((a) => a.subnetId === s.id)) {
          throw new Ec2Fault(
            "Resource.AlreadyAssociated",
            `the specified association for route table ${other.id} conflicts with an existing association`,
          );
        }
      }
      const association = { id: newId("rtbassoc"), subnetId: s.id, main: false };
      t.associations.push(association);
      return el("associationId", association.id) +
        el("associationState", el("state", "associated"));
    },
    DescribeRouteTables(p) {
      const ids = listParam(p, "RouteTableId");
      for (const id of ids) mustTable(id);
      const filters = filtersOf(p);
      // EC2 pages before it filters: a page may hold fewer items than asked, even
      // none, and still carry a NextToken
      const page = paginate(
        [...tables.values()].filter((t) => ids.length === 0 || ids.includes(t.id)),
        p,
        options.pageSize,
      );
      const found = page.items.filter((t) => filters.every((f) => matches(t, f)));
      return items("routeTableSet", found, (t) => tableXml(t, accountId)) +
        (page.nextToken ? el("nextToken", page.nextToken) : "");
    },
    CreateRoute(p) {
      const t = mustTable(p.get("RouteTableId") ?? undefined);
      const { destination, family } = destinationOf(p);
      const target = targetOf(p, t);
      if (t.routes.some((r) => r.destination === destination)) {
        throw new Ec2Fault(
          "RouteAlreadyExists",
          `The route identified by ${destination} already exists.`,
        );
      }
      const limit = limitOf(t);
      if (limit !== null && t.routes.length >= limit) {
        throw new Ec2Fault("RouteLimitExceeded", "The maximum number of routes has been reached.");
      }
      t.routes.push({ destination, family, ...target, state: "active", origin: "CreateRoute" });
      return el("return", "true");
    },
    ReplaceRoute(p) {
      const t = mustTable(p.get("RouteTableId") ?? undefined);
      const { destination, family } = destinationOf(p);
      const i = t.routes.findIndex((r) => r.destination === destination);
      if (i < 0) {
        throw new Ec2Fault(
          "InvalidParameterValue",
          `There is no route defined for '${destination}' in the route table. Use CreateRoute instead.`,
        );
      }
      if (t.routes[i].gatewayId === "local") {
        throw new Ec2Fault(
          "InvalidParameterValue",
          `cannot replace local route ${destination} in route table ${t.id}`,
        );
      }
      const target = targetOf(p, t);
      t.routes[i] = { destination, family, ...target, state: "active", origin: "CreateRoute" };
      return el("return", "true");
    },
    DeleteRoute(p) {
      const t = mustTable(p.get("RouteTableId") ?? undefined);
      const { destination } = destinationOf(p);
      const i = t.routes.findIndex((r) => r.destination === destination);
      if (i < 0) {
        throw new Ec2Fault(
          "InvalidRoute.NotFound",
          `no route with destination-cidr-block ${destination} in route table ${t.id}`,
        );
      }
      if (t.routes[i].gatewayId === "local") {
        throw new Ec2Fault(
          "InvalidParameterValue",
          `cannot remove local route ${destination} in route table ${t.id}`,
        );
      }
      t.routes.splice(i, 1);
      return el("return", "true");
    },
  };

  const handle = async (request: Request): Promise<Response> => {
    const requestId = crypto.randomUUID();
    let action = "(none)";
    try {
      if (request.method !== "POST") {
        throw new Ec2Fault("InvalidAction", "EC2 accepts only POST requests here (Query API)");
      }
      const p = new URLSearchParams(await request.text());
      action = p.get("Action") ?? "(none)";
      checkSignature(request.headers.get("authorization"), region);
      if (throttled > 0) {
        throttled--;
        throw new Ec2Fault("RequestLimitExceeded", "Request limit exceeded.", 503);
      }
      const run = actions[action];
      if (!run) {
        throw new Ec2Fault(
          "InvalidAction",
          `The action ${action} is not valid for this web service.`,
        );
      }
      if (p.get("Version") !== EC2_API_VERSION) {
        throw new Ec2Fault(
          "InvalidParameterValue",
          `Version ${p.get("Version")} is not supported by this fake: send ${EC2_API_VERSION}`,
        );
      }
      if (denied.has(action)) {
        throw new Ec2Fault(
          "UnauthorizedOperation",
          `You are not authorized to perform this operation. User: arn:aws:iam::${accountId}:user/weft ` +
            `is not authorized to perform: ec2:${action} because no identity-based policy allows ` +
            `the ec2:${action} action. Encoded authorization failure message: ${
              btoa(`denied ec2:${action}`)
            }`,
          403,
        );
      }
      const body = run(p);
      log.push({ action, status: 200 });
      return xml(
        200,
        `<${action}Response xmlns="${XMLNS}">${
          el("requestId", requestId)
        }${body}</${action}Response>`,
      );
    } catch (e) {
      if (!(e instanceof Ec2Fault)) throw e;
      log.push({ action, status: e.status, code: e.code });
      return xml(
        e.status,
        `<Response><Errors><Error>${el("Code", escapeXml(e.code))}${
          el("Message", escapeXml(e.message))
        }</Error></Errors>` +
          `${el("RequestID", requestId)}</Response>`,
      );
    }
  };

  const server: HttpServer = await serveHttp({ hostname, port: 0, fetch: handle });

  return {
    endpoint: `http://${hostname}:${server.port}`,
    region,
    handle,
    calls: (action) =>
      action === undefined ? log.length : log.filter((c) => c.action === action).length,
    get log() {
      return log;
    },
    resetCalls() {
      log = [];
    },
    setRouteLimit(limit, table) {
      if (table === undefined) globalLimit = limit;
      else if (limit === null) limits.delete(table);
      else limits.set(table, limit);
    },
    throttle(calls) {
      throttled = calls;
    },
    deny: (action) => void denied.add(action),
    allow: (action) => void denied.delete(action),
    attach(networkInterfaceId, instanceId) {
      const eni = enis.get(networkInterfaceId);
      if (!eni) throw new Error(`attach: no network interface ${networkInterfaceId} in the fake`);
      enis.set(eni.id, { ...eni, instanceId });
    },
    routeTable(id) {
      const t = tables.get(id);
      return t && structuredClone(t);
    },
    networkInterface(id) {
      const e = enis.get(id);
      return e && { ...e };
    },
    close: () => server.shutdown(),
  };
}

function missingParameter(name: string): Ec2Fault {
  return new Ec2Fault("MissingParameter", `The request must contain the parameter ${name}`);
}

/**
 * Check the SigV4 `Authorization` header's shape and credential scope
 * (`AKID/date/region/ec2/aws4_request`); the signature is not verified.
 */
function checkSignature(header: string | null, region: string): void {
  const scope = header?.match(
    /^AWS4-HMAC-SHA256 Credential=[^/]+\/\d{8}\/([^/]+)\/ec2\/aws4_request,/,
  );
  if (!scope) {
    throw new Ec2Fault(
      "AuthFailure",
      "AWS was not able to validate the provided access credentials",
      401,
    );
  }
  if (scope[1] !== region) {
    throw new Ec2Fault(
      "AuthFailure",
      `Credential should be scoped to a valid region, not '${
        scope[1]
      }' (this endpoint is ${region}).`,
      401,
    );
  }
}

/** `Name.1`, `Name.2`, … in order. */
function listParam(p: URLSearchParams, name: string): string[] {
  const out: string[] = [];
  for (let i = 1; p.has(`${name}.${i}`); i++) out.push(p.get(`${name}.${i}`)!);
  return out;
}

interface Filter {
  readonly name: string;
  readonly values: readonly string[];
}

function filtersOf(p: URLSearchParams): Filter[] {
  const out: Filter[] = [];
  for (let i = 1; p.has(`Filter.${i}.Name`); i++) {
    const name = p.get(`Filter.${i}.Name`)!;
    if (!FILTERS.has(name)) {
      throw new Ec2Fault("InvalidParameterValue", `The filter '${name}' is invalid`);
    }
    out.push({ name, values: listParam(p, `Filter.${i}.Value`) });
  }
  return out;
}

/** A filter matches when any of its values matches (values are ORed, filters ANDed). */
function matches(t: Table, f: Filter): boolean {
  const has = (candidates: readonly (string | undefined)[]) =>
    candidates.some((c) => c !== undefined && f.values.includes(c));
  switch (f.name) {
    case "route-table-id":
      return has([t.id]);
    case "vpc-id":
      return has([t.vpcId]);
    case "association.main":
      return has([String(t.associations.some((a) => a.main))]);
    case "association.subnet-id":
      return has(t.associations.map((a) => a.subnetId));
    case "route.state":
      return has(t.routes.map((r) => r.state));
    case "route.destination-cidr-block":
      return has(t.routes.map((r) => r.destination));
  }
  return false;
}

/** Page `all` by `MaxResults` (5..100) or the forced page size; tokens are offsets. */
function paginate<T>(
  all: readonly T[],
  p: URLSearchParams,
  forced: number | undefined,
): { items: readonly T[]; nextToken?: string } {
  const maxText = p.get("MaxResults");
  let size = forced ?? Infinity;
  if (maxText !== null) {
    const max = Number(maxText);
    if (!Number.isInteger(max) || max < 5 || max > 100) {
      throw new Ec2Fault(
        "InvalidParameterValue",
        `Value ( ${maxText} ) for parameter maxResults is invalid. Expecting a value between 5 and 100.`,
      );
    }
    size = Math.min(size, max);
  }
  const token = p.get("NextToken");
  let start = 0;
  if (token !== null) {
    const m = /^fake-page:(\d+)$/.exec(atobSafe(token));
    if (!m) throw new Ec2Fault("InvalidParameterValue", `Invalid value '${token}' for nextToken`);
    start = Number(m[1]);
  }
  const end = Math.min(all.length, start + size);
  return {
    items: all.slice(start, end),
    nextToken: end < all.length ? btoa(`fake-page:${end}`) : undefined,
  };
}

function atobSafe(text: string): string {
  try {
    return atob(text);
  } catch {
    return "";
  }
}

function localRoute(cidr: string): FakeRoute {
  return {
    destination: cidr,
    family: 4,
    gatewayId: "local",
    state: "active",
    origin: "CreateRouteTable",
  };
}

function vpcXml(vpc: Vpc, accountId: string): string {
  return el("vpcId", vpc.id) + el("ownerId", accountId) + el("state", "available") +
    el("cidrBlock", vpc.cidrs[0]) +
    items(
      "cidrBlockAssociationSet",
      vpc.cidrs,
      (c, i) =>
        el("cidrBlock", c) + el("associationId", `vpc-cidr-assoc-${i}`) +
        el("cidrBlockState", el("state", "associated")),
    ) +
    el("dhcpOptionsId", "default") + el("instanceTenancy", "default") +
    el("isDefault", "false");
}

function eniXml(e: FakeNetworkInterface, region: string, accountId: string): string {
  return el("networkInterfaceId", e.id) + el("subnetId", e.subnetId) + el("vpcId", e.vpcId) +
    el("availabilityZone", `${region}a`) + el("ownerId", accountId) +
    el("status", e.instanceId ? "in-use" : "available") + el("macAddress", e.mac) +
    el("privateIpAddress", e.privateIp) + el("sourceDestCheck", String(e.sourceDestCheck)) +
    el("interfaceType", "interface") +
    (e.instanceId
      ? el("attachment", el("instanceId", e.instanceId) + el("status", "attached"))
      : "") +
    items(
      "privateIpAddressesSet",
      [e.privateIp],
      (ip) => el("privateIpAddress", ip) + el("primary", "true"),
    ) +
    el("groupSet", "") + el("tagSet", "");
}

function tableXml(t: Table, accountId: string): string {
  return el("routeTableId", t.id) + el("vpcId", t.vpcId) + el("ownerId", accountId) +
    items(
      "routeSet",
      t.routes,
      (r) =>
        (r.family === 4
          ? el("destinationCidrBlock", r.destination)
          : el("destinationIpv6CidrBlock", r.destination)) +
        (r.gatewayId ? el("gatewayId", r.gatewayId) : "") +
        (r.instanceId ? el("instanceId", r.instanceId) + el("instanceOwnerId", accountId) : "") +
        (r.networkInterfaceId ? el("networkInterfaceId", r.networkInterfaceId) : "") +
        el("state", r.state) + el("origin", r.origin),
    ) +
    items(
      "associationSet",
      t.associations,
      (a) =>
        el("routeTableAssociationId", a.id) + el("routeTableId", t.id) +
        (a.subnetId ? el("subnetId", a.subnetId) : "") + el("main", String(a.main)) +
        el("associationState", el("state", "associated")),
    ) +
    el("propagatingVgwSet", "") + el("tagSet", "");
}

function xml(status: number, body: string): Response {
  return new Response(`<?xml version="1.0" encoding="UTF-8"?>\n${body}`, {
    status,
    headers: { "content-type": "text/xml;charset=UTF-8" },
  });
}

/** An element around `content`, which is XML already (leaf values are ids and CIDRs). */
function el(name: string, content: string): string {
  return content === "" ? `<${name}/>` : `<${name}>${content}</${name}>`;
}

function items<T>(name: string, list: readonly T[], fn: (x: T, i: number) => string): string {
  return el(name, list.map((x, i) => `<item>${fn(x, i)}</item>`).join(""));
}

/** Escape text for XML element content. */
export function escapeXml(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}
