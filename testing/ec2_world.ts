/**
 * A small VPC world built through the real `@aws-sdk/client-ec2`, the same
 * way against any EC2 (the fake in `fake_ec2.ts`, moto), and the harness
 * that puts the aws-vpc route provider over it for the route-provider
 * contract suite.
 *
 * The world: VPC 10.0.0.0/16 with an internet gateway; subnet 10.0.1.0/24
 * associated with its own route table (local route + `0.0.0.0/0` → the
 * gateway: routes weft did not write); two network interfaces in the subnet
 * (this host's and a peer's); and a second VPC 10.1.0.0/16, whose main
 * table is "a route table of another VPC".
 *
 * @module
 */

import * as sdk from "@aws-sdk/client-ec2";
import { createImdsClient } from "../backends/cloud/aws/imds.ts";
import {
  type AwsVpcProviderOptions,
  createAwsVpcProvider,
} from "../backends/cloud/aws/provider.ts";
import { createFakeEc2, type FakeEc2, type FakeEc2Options } from "./fake_ec2.ts";
import { createFakeImds, type FakeImds, type ImdsInstance } from "./fake_imds.ts";
import type { ProviderFaults, ProviderGap, ProviderHarness } from "./route_provider_contract.ts";

/** Credentials the tests sign with (the fakes accept any; moto's IAM mode needs real ones). */
export const TEST_CREDENTIALS = {
  accessKeyId: "AKIAWEFTTESTKEY00001",
  secretAccessKey: "weft-test-secret-key-not-a-real-one0000",
} as const;

/** What {@link buildEc2World} made. */
export interface Ec2World {
  readonly region: string;
  readonly vpcId: string;
  readonly vpcCidr: string;
  readonly subnetId: string;
  /** The subnet's own route table. */
  readonly table: string;
  /** The VPC's main route table. */
  readonly mainTable: string;
  /** This host's interface, then a peer's. */
  readonly interfaces: readonly [{ id: string; mac: string }, { id: string; mac: string }];
  /** Destinations in `table` that weft did not write. */
  readonly foreignDestinations: readonly string[];
  /** A second VPC and its main table. */
  readonly otherVpc: { readonly vpcId: string; readonly mainTable: string };
}

/**
 * An EC2 client for tests, pointed at `endpoint`.
 *
 * @param endpoint The EC2 endpoint on loopback.
 * @param region The region to sign for.
 * @param credentials Defaults to {@link TEST_CREDENTIALS}.
 * @returns The client.
 */
export function testEc2Client(
  endpoint: string,
  region: string,
  credentials: { accessKeyId: string; secretAccessKey: string } = TEST_CREDENTIALS,
): sdk.EC2Client {
  return new sdk.EC2Client({ region, endpoint, credentials, maxAttempts: 1 });
}

/**
 * Build the world (10 calls).
 *
 * @param ec2 A client for the EC2 to build in.
 * @returns The ids.
 */
export async function buildEc2World(ec2: sdk.EC2Client): Promise<Ec2World> {
  const region = await ec2.config.region();
  const vpc = await ec2.send(new sdk.CreateVpcCommand({ CidrBlock: "10.0.0.0/16" }));
  const vpcId = vpc.Vpc!.VpcId!;
  const subnet = await ec2.send(
    new sdk.CreateSubnetCommand({ VpcId: vpcId, CidrBlock: "10.0.1.0/24" }),
  );
  const subnetId = subnet.Subnet!.SubnetId!;
  const eni = async () => {
    const r = await ec2.send(new sdk.CreateNetworkInterfaceCommand({ SubnetId: subnetId }));
    return { id: r.NetworkInterface!.NetworkInterfaceId!, mac: r.NetworkInterface!.MacAddress! };
  };
  const interfaces = [await eni(), await eni()] as const;
  const igw = await ec2.send(new sdk.CreateInternetGatewayCommand({}));
  const igwId = igw.InternetGateway!.InternetGatewayId!;
  await ec2.send(new sdk.AttachInternetGatewayCommand({ InternetGatewayId: igwId, VpcId: vpcId }));
  const rt = await ec2.send(new sdk.CreateRouteTableCommand({ VpcId: vpcId }));
  const table = rt.RouteTable!.RouteTableId!;
  await ec2.send(new sdk.AssociateRouteTableCommand({ RouteTableId: table, SubnetId: subnetId }));
  await ec2.send(
    new sdk.CreateRouteCommand({
      RouteTableId: table,
      DestinationCidrBlock: "0.0.0.0/0",
      GatewayId: igwId,
    }),
  );
  const mainOf = async (id: string) => {
    const pages = sdk.paginateDescribeRouteTables({ client: ec2 }, {
      Filters: [{ Name: "vpc-id", Values: [id] }, { Name: "association.main", Values: ["true"] }],
    });
    for await (const page of pages) {
      const found = page.RouteTables?.[0]?.RouteTableId;
      if (found) return found;
    }
    throw new Error(`buildEc2World: EC2 reports no main route table for ${id}`);
  };
  const other = await ec2.send(new sdk.CreateVpcCommand({ CidrBlock: "10.1.0.0/16" }));
  const otherVpcId = other.Vpc!.VpcId!;
  return {
    region,
    vpcId,
    vpcCidr: "10.0.0.0/16",
    subnetId,
    table,
    mainTable: await mainOf(vpcId),
    interfaces,
    foreignDestinations: ["10.0.0.0/16", "0.0.0.0/0"],
    otherVpc: { vpcId: otherVpcId, mainTable: await mainOf(otherVpcId) },
  };
}

/**
 * The metadata of an instance whose primary interface is `interfaces[which]`.
 *
 * @param world The world.
 * @param which Which interface (0 = this host).
 * @returns The instance for the fake IMDS.
 */
export function worldInstance(world: Ec2World, which: 0 | 1 = 0): ImdsInstance {
  const nic = world.interfaces[which];
  return {
    instanceId: `i-0${nic.id.slice(-16)}`,
    region: world.region,
    interfaces: [{
      mac: nic.mac,
      interfaceId: nic.id,
      subnetId: world.subnetId,
      vpcId: world.vpcId,
      vpcCidrs: [world.vpcCidr],
    }],
  };
}

/** What {@link makeAwsHarness} needs from the EC2 behind it. */
export interface AwsBackingApi {
  readonly endpoint: string;
  readonly region: string;
  /** Credentials the provider signs with (default {@link TEST_CREDENTIALS}). */
  readonly credentials?: { accessKeyId: string; secretAccessKey: string };
  readonly faults: (world: Ec2World) => Partial<ProviderFaults>;
  readonly missing: Partial<Record<ProviderGap, string>>;
  /** Called when the harness closes (undo faults, reset the emulator). */
  readonly close?: () => Promise<void>;
}

/** A provider harness with the world it runs in and the IMDS it discovers from. */
export interface AwsHarness extends ProviderHarness {
  readonly world: Ec2World;
  readonly imds: FakeImds;
  /** A provider over the same world with other options (same IMDS and endpoint). */
  withOptions(options: AwsVpcProviderOptions): ReturnType<typeof createAwsVpcProvider>;
  /** The options the harness's provider was made with (IMDS, endpoint, credentials, env). */
  readonly awsOptions: AwsVpcProviderOptions;
  /** The EC2 endpoint. */
  readonly endpoint: string;
}

/**
 * Build a world in `api` and put the aws-vpc provider over it, discovering
 * itself from a fake IMDS on loopback.
 *
 * @param api The EC2 to use and the faults it offers.
 * @param options Extra provider options (e.g. `maxAttempts`).
 * @returns The harness; `close()` stops the IMDS and calls `api.close`.
 */
export async function makeAwsHarness(
  api: AwsBackingApi,
  options: AwsVpcProviderOptions = {},
): Promise<AwsHarness> {
  const world = await buildEc2World(testEc2Client(api.endpoint, api.region));
  const imds = await createFakeImds({ instances: [worldInstance(world)] });
  const awsOptions: AwsVpcProviderOptions = {
    imds: createImdsClient({ endpoint: imds.endpoint }),
    endpoint: api.endpoint,
    credentials: api.credentials ?? TEST_CREDENTIALS,
    maxAttempts: 2,
    env: {},
    ...options,
  };
  const withOptions = (extra: AwsVpcProviderOptions) =>
    createAwsVpcProvider({ ...awsOptions, ...extra });
  return {
    provider: withOptions({}),
    withOptions,
    awsOptions,
    endpoint: api.endpoint,
    world,
    imds,
    table: world.table,
    targets: [world.interfaces[0].id, world.interfaces[1].id],
    foreignDestinations: world.foreignDestinations,
    faults: api.faults(world),
    missing: api.missing,
    async close() {
      await imds.close();
      await api.close?.();
    },
  };
}

/**
 * {@link makeAwsHarness} over a fresh fake EC2 (`fake_ec2.ts`) that offers
 * every fault; the fake is closed with the harness.
 *
 * @param region The region the fake plays.
 * @param options Extra provider options.
 * @param fakeOptions Options of the fake (e.g. `pageSize`).
 * @returns The harness and the fake (for call logs and more faults).
 */
export async function makeFakeAwsHarness(
  region: string,
  options: AwsVpcProviderOptions = {},
  fakeOptions: FakeEc2Options = {},
): Promise<AwsHarness & { ec2: FakeEc2 }> {
  const ec2 = await createFakeEc2({ region, ...fakeOptions });
  try {
    const h = await makeAwsHarness({
      endpoint: ec2.endpoint,
      region,
      faults: (world) => ({
        limit: (n) => ec2.setRouteLimit(n, world.table),
        throttle: (n) => ec2.throttle(n),
        denyWrites() {
          for (const a of ["CreateRoute", "ReplaceRoute", "DeleteRoute"]) ec2.deny(a);
          return "ec2:CreateRoute";
        },
        async removeTarget(target) {
          await testEc2Client(ec2.endpoint, region).send(
            new sdk.DeleteNetworkInterfaceCommand({ NetworkInterfaceId: target }),
          );
        },
      }),
      missing: {},
      close: () => ec2.close(),
    }, options);
    ec2.resetCalls();
    return Object.assign(h, { ec2 });
  } catch (e) {
    await ec2.close();
    throw e;
  }
}
