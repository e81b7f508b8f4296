import assert from "node:assert/strict";
import { FakeClock } from "./fake_clock.ts";
import { createFakeEc2, EC2_API_VERSION, type FakeEc2 } from "./fake_ec2.ts";
import { createFakeImds } from "./fake_imds.ts";

const REGION = "us-east-1";

async function withEc2(fn: (ec2: FakeEc2) => Promise<void>): Promise<void> {
  const ec2 = await createFakeEc2({ region: REGION });
  try {
    await fn(ec2);
  } finally {
    await ec2.close();
  }
}

/** A request as the SDK sends it: form-encoded POST with a SigV4 Authorization header. */
function query(
  params: Record<string, string>,
  options: { region?: string; signed?: boolean; version?: string } = {},
): Request {
  const headers: Record<string, string> = {
    "content-type": "application/x-www-form-urlencoded; charset=utf-8",
  };
  if (options.signed ?? true) {
    headers.authorization = `AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261130/${
      options.region ?? REGION
    }/ec2/aws4_request, SignedHeaders=host;x-amz-date, Signature=abc`;
  }
  return new Request("http://127.0.0.1/", {
    method: "POST",
    headers,
    body: new URLSearchParams({ Version: options.version ?? EC2_API_VERSION, ...params }),
  });
}

async function call(
  ec2: FakeEc2,
  params: Record<string, string>,
  options?: Parameters<typeof query>[1],
) {
  const r = await ec2.handle(query(params, options));
  return { status: r.status, type: r.headers.get("content-type"), body: await r.text() };
}

const tag = (body: string, name: string) =>
  new RegExp(`<${name}>([^<]+)</${name}>`).exec(body)?.[1];
const requestIdOf = (body: string) => tag(body, "requestId") ?? tag(body, "RequestID") ?? "";

/** VPC + subnet + ENI + subnet table, through the wire. */
async function world(ec2: FakeEc2) {
  const vpc = tag(
    (await call(ec2, { Action: "CreateVpc", CidrBlock: "10.0.0.0/16" })).body,
    "vpcId",
  )!;
  const subnet = tag(
    (await call(ec2, { Action: "CreateSubnet", VpcId: vpc, CidrBlock: "10.0.1.0/24" })).body,
    "subnetId",
  )!;
  const eniBody = (await call(ec2, { Action: "CreateNetworkInterface", SubnetId: subnet })).body;
  const eni = tag(eniBody, "networkInterfaceId")!;
  const table = tag(
    (await call(ec2, { Action: "CreateRouteTable", VpcId: vpc })).body,
    "routeTableId",
  )!;
  await call(ec2, { Action: "AssociateRouteTable", RouteTableId: table, SubnetId: subnet });
  return { vpc, subnet, eni, table, mac: tag(eniBody, "macAddress")! };
}

Deno.test("fake EC2: a hand-written DescribeRouteTables gets EC2's reply shape, field by field", async () => {
  await withEc2(async (ec2) => {
    const w = await world(ec2);
    const created = await call(ec2, {
      Action: "CreateRoute",
      RouteTableId: w.table,
      DestinationCidrBlock: "10.244.1.0/24",
      NetworkInterfaceId: w.eni,
    });
    assert.equal(created.status, 200);
    assert.equal(
      created.body,
      `<?xml version="1.0" encoding="UTF-8"?>\n<CreateRouteResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">` +
        `<requestId>${
          requestIdOf(created.body)
        }</requestId><return>true</return></CreateRouteResponse>`,
    );
    const r = await call(ec2, {
      Action: "DescribeRouteTables",
      "Filter.1.Name": "route-table-id",
      "Filter.1.Value.1": w.table,
    });
    assert.equal(r.status, 200);
    assert.equal(r.type, "text/xml;charset=UTF-8");
    const association = tag(r.body, "routeTableAssociationId");
    assert.match(association ?? "", /^rtbassoc-[0-9a-f]{17}$/);
    assert.match(requestIdOf(r.body), /^[0-9a-f-]{36}$/);
    assert.equal(
      r.body,
      [
        `<?xml version="1.0" encoding="UTF-8"?>\n`,
        `<DescribeRouteTablesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">`,
        `<requestId>${requestIdOf(r.body)}</requestId>`,
        `<routeTableSet><item>`,
        `<routeTableId>${w.table}</routeTableId><vpcId>${w.vpc}</vpcId><ownerId>123456789012</ownerId>`,
        `<routeSet>`,
        // the VPC's local route, written by EC2 with the table
        `<item><destinationCidrBlock>10.0.0.0/16</destinationCidrBlock><gatewayId>local</gatewayId>`,
        `<state>active</state><origin>CreateRouteTable</origin></item>`,
        // ours: a network interface target, no instance (the interface is not attached)
        `<item><destinationCidrBlock>10.244.1.0/24</destinationCidrBlock>`,
        `<networkInterfaceId>${w.eni}</networkInterfaceId><state>active</state><origin>CreateRoute</origin></item>`,
        `</routeSet>`,
        `<associationSet><item><routeTableAssociationId>${association}</routeTableAssociationId>`,
        `<routeTableId>${w.table}</routeTableId><subnetId>${w.subnet}</subnetId><main>false</main>`,
        `<associationState><state>associated</state></associationState></item></associationSet>`,
        `<propagatingVgwSet/><tagSet/>`,
        `</item></routeTableSet></DescribeRouteTablesResponse>`,
      ].join(""),
    );
  });
});

Deno.test("fake EC2: errors come in EC2's envelope with EC2's status codes", async () => {
  await withEc2(async (ec2) => {
    const w = await world(ec2);
    const unknown = await call(ec2, {
      Action: "CreateRoute",
      RouteTableId: "rtb-0000000000000dead",
      DestinationCidrBlock: "10.244.1.0/24",
      NetworkInterfaceId: w.eni,
    });
    assert.equal(unknown.status, 400);
    assert.equal(
      unknown.body,
      `<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>` +
        `<Code>InvalidRouteTableID.NotFound</Code>` +
        `<Message>The routeTable ID 'rtb-0000000000000dead' does not exist</Message>` +
        `</Error></Errors><RequestID>${requestIdOf(unknown.body)}</RequestID></Response>`,
    );
    const route = { RouteTableId: w.table, DestinationCidrBlock: "10.244.1.0/24" };
    const cases: [Record<string, string>, number, string, RegExp][] = [
      [{ Action: "CreateRoute", ...route, NetworkInterfaceId: w.eni }, 200, "", /<return>true/],
      [
        { Action: "CreateRoute", ...route, NetworkInterfaceId: w.eni },
        400,
        "RouteAlreadyExists",
        /The route identified by 10\.244\.1\.0\/24 already exists\./,
      ],
      [
        {
          Action: "ReplaceRoute",
          ...route,
          DestinationCidrBlock: "10.244.2.0/24",
          NetworkInterfaceId: w.eni,
        },
        400,
        "InvalidParameterValue",
        /There is no route defined for '10\.244\.2\.0\/24' in the route table\. Use CreateRoute instead\./,
      ],
      [
        { Action: "DeleteRoute", ...route, DestinationCidrBlock: "10.244.2.0/24" },
        400,
        "InvalidRoute.NotFound",
        /no route with destination-cidr-block 10\.244\.2\.0\/24 in route table rtb-/,
      ],
      [
        {
          Action: "CreateRoute",
          ...route,
          DestinationCidrBlock: "10.244.3.1/24",
          NetworkInterfaceId: w.eni,
        },
        400,
        "InvalidParameterValue",
        /Value \(10\.244\.3\.1\/24\) for parameter destinationCidrBlock is invalid/,
      ],
      [
        {
          Action: "CreateRoute",
          ...route,
          DestinationCidrBlock: "10.244.4.0/24",
          NetworkInterfaceId: "eni-0000000000000dead",
        },
        400,
        "InvalidNetworkInterfaceID.NotFound",
        /The networkInterface ID 'eni-0000000000000dead' does not exist/,
      ],
      [{ Action: "RunInstances" }, 400, "InvalidAction", /The action RunInstances is not valid/],
    ];
    for (const [params, status, code, message] of cases) {
      const r = await call(ec2, params);
      assert.equal(r.status, status, `${params.Action}: ${r.body}`);
      if (code) assert.equal(tag(r.body, "Code"), code);
      assert.match(r.body, message);
    }
  });
});

Deno.test("fake EC2: signatures must be present and scoped to its region", async () => {
  await withEc2(async (ec2) => {
    const unsigned = await call(ec2, { Action: "DescribeRouteTables" }, { signed: false });
    assert.equal(unsigned.status, 401);
    assert.equal(tag(unsigned.body, "Code"), "AuthFailure");
    const elsewhere = await call(ec2, { Action: "DescribeRouteTables" }, { region: "eu-west-1" });
    assert.equal(elsewhere.status, 401);
    assert.match(elsewhere.body, /Credential should be scoped to a valid region, not 'eu-west-1'/);
    const old = await call(ec2, { Action: "DescribeRouteTables" }, { version: "2014-01-01" });
    assert.equal(old.status, 400);
  });
});

Deno.test("fake EC2: throttling (503) and per-action denial (403) on demand; calls counted", async () => {
  await withEc2(async (ec2) => {
    ec2.throttle(2);
    for (let i = 0; i < 2; i++) {
      const r = await call(ec2, { Action: "DescribeRouteTables" });
      assert.equal(r.status, 503);
      assert.equal(tag(r.body, "Code"), "RequestLimitExceeded");
      assert.equal(tag(r.body, "Message"), "Request limit exceeded.");
    }
    assert.equal((await call(ec2, { Action: "DescribeRouteTables" })).status, 200);
    ec2.deny("CreateRoute");
    const denied = await call(ec2, { Action: "CreateRoute" });
    assert.equal(denied.status, 403);
    assert.equal(tag(denied.body, "Code"), "UnauthorizedOperation");
    assert.match(denied.body, /is not authorized to perform: ec2:CreateRoute/);
    assert.equal((await call(ec2, { Action: "DescribeRouteTables" })).status, 200, "others pass");
    assert.equal(ec2.calls("DescribeRouteTables"), 4);
    assert.equal(ec2.calls("CreateRoute"), 1);
    assert.equal(ec2.calls(), 5);
    assert.deepEqual(ec2.log.map((c) => c.code ?? c.status), [
      "RequestLimitExceeded",
      "RequestLimitExceeded",
      200,
      "UnauthorizedOperation",
      200,
    ]);
  });
});

Deno.test("fake EC2: filters (ANDed, values ORed), paging, and the route limit", async () => {
  await withEc2(async (ec2) => {
    const w = await world(ec2);
    const ids = async (params: Record<string, string>) => {
      const r = await call(ec2, { Action: "DescribeRouteTables", ...params });
      assert.equal(r.status, 200, r.body);
      return {
        ids: [...r.body.matchAll(/<item><routeTableId>([^<]+)</g)].map((m) => m[1]),
        next: tag(r.body, "nextToken"),
      };
    };
    const main =
      (await ids({ "Filter.1.Name": "association.main", "Filter.1.Value.1": "true" })).ids;
    assert.equal(main.length, 1);
    assert.deepEqual(
      (await ids({ "Filter.1.Name": "association.subnet-id", "Filter.1.Value.1": w.subnet })).ids,
      [w.table],
    );
    assert.deepEqual(
      (await ids({
        "Filter.1.Name": "vpc-id",
        "Filter.1.Value.1": w.vpc,
        "Filter.2.Name": "association.main",
        "Filter.2.Value.1": "false",
      })).ids,
      [w.table],
    );
    assert.deepEqual(
      (await ids({
        "Filter.1.Name": "route-table-id",
        "Filter.1.Value.1": w.table,
        "Filter.1.Value.2": main[0],
      }))
        .ids.sort(),
      [w.table, main[0]].sort(),
    );
    for (let i = 0; i < 5; i++) await call(ec2, { Action: "CreateRouteTable", VpcId: w.vpc });
    const first = await ids({ MaxResults: "5" });
    assert.equal(first.ids.length, 5);
    assert.ok(first.next);
    const second = await ids({ MaxResults: "5", NextToken: first.next });
    assert.equal(second.ids.length, 2);
    assert.equal(second.next, undefined);
    const small = await call(ec2, { Action: "DescribeRouteTables", MaxResults: "3" });
    assert.equal(small.status, 400);
    const badFilter = await call(ec2, {
      Action: "DescribeRouteTables",
      "Filter.1.Name": "route.gateway-id",
      "Filter.1.Value.1": "local",
    });
    assert.match(badFilter.body, /The filter 'route\.gateway-id' is invalid/);

    ec2.setRouteLimit(2, w.table); // the local route + one
    const add = (n: number) =>
      call(ec2, {
        Action: "CreateRoute",
        RouteTableId: w.table,
        DestinationCidrBlock: `10.244.${n}.0/24`,
        NetworkInterfaceId: w.eni,
      });
    assert.equal((await add(1)).status, 200);
    const full = await add(2);
    assert.equal(tag(full.body, "Code"), "RouteLimitExceeded");
    ec2.setRouteLimit(null, w.table);
    assert.equal((await add(2)).status, 200);
  });
});

Deno.test("fake EC2: deleting a network interface turns its routes into blackholes", async () => {
  await withEc2(async (ec2) => {
    const w = await world(ec2);
    await call(ec2, {
      Action: "CreateRoute",
      RouteTableId: w.table,
      DestinationCidrBlock: "10.244.1.0/24",
      NetworkInterfaceId: w.eni,
    });
    assert.equal(
      (await call(ec2, { Action: "DeleteNetworkInterface", NetworkInterfaceId: w.eni })).status,
      200,
    );
    const r = await call(ec2, {
      Action: "DescribeRouteTables",
      "Filter.1.Name": "route.state",
      "Filter.1.Value.1": "blackhole",
    });
    assert.match(
      r.body,
      new RegExp(
        `<item><destinationCidrBlock>10\\.244\\.1\\.0/24</destinationCidrBlock><networkInterfaceId>${w.eni}</networkInterfaceId><state>blackhole</state>`,
      ),
    );
    assert.equal(ec2.routeTable(w.table)?.routes[1].state, "blackhole");
  });
});

Deno.test("fake IMDS: 401 without a token, 400 without a TTL, tokens expire on the clock", async () => {
  const clock = new FakeClock();
  const imds = await createFakeImds({
    clock,
    instances: [{
      instanceId: "i-0123456789abcdef0",
      region: REGION,
      interfaces: [{
        mac: "02:00:00:00:00:01",
        interfaceId: "eni-0123456789abcdef0",
        subnetId: "subnet-0123456789abcdef0",
        vpcId: "vpc-0123456789abcdef0",
        vpcCidrs: ["10.0.0.0/16"],
      }],
    }],
  });
  try {
    const get = (path: string, token?: string) =>
      imds.handle(
        new Request(`http://169.254.169.254/latest/meta-data/${path}`, {
          headers: token ? { "x-aws-ec2-metadata-token": token } : {},
        }),
      );
    assert.equal((await get("instance-id")).status, 401, "IMDSv1 is refused");
    const noTtl = await imds.handle(
      new Request("http://169.254.169.254/latest/api/token", { method: "PUT" }),
    );
    assert.equal(noTtl.status, 400);
    const put = await imds.handle(
      new Request("http://169.254.169.254/latest/api/token", {
        method: "PUT",
        headers: { "x-aws-ec2-metadata-token-ttl-seconds": "60" },
      }),
    );
    const token = await put.text();
    const ok = await get("instance-id", token);
    assert.equal(await ok.text(), "i-0123456789abcdef0");
    assert.equal(await (await get("network/interfaces/macs/", token)).text(), "02:00:00:00:00:01/");
    const missing = await get("nope", token);
    assert.equal(missing.status, 404);
    assert.match(await missing.text(), /404 - Not Found/);
    await clock.advance(60_000);
    assert.equal((await get("instance-id", token)).status, 401, "expired after its TTL");
  } finally {
    await imds.close();
  }
});
