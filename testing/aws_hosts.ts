/**
 * Simulated EC2 hosts in an {@link AwsHarness}'s world, for the aws-vpc and
 * hybrid backend tests and the benchmark: each host gets its own network
 * interface (made through the real SDK) and its own instance in the fake
 * metadata service, and a backend context whose `acquire` hands out its
 * subnet. Many hosts share one EC2 and one metadata server.
 *
 * @module
 */

import * as sdk from "@aws-sdk/client-ec2";
import { createImdsClient } from "../backends/cloud/aws/imds.ts";
import type { AwsVpcProviderOptions } from "../backends/cloud/aws/provider.ts";
import type { Clock } from "../core/clock.ts";
import { testEc2Client } from "./ec2_world.ts";
import type { AwsHarness } from "./ec2_world.ts";
import { type TestContext, testContext } from "./routing.ts";

/** One simulated instance. */
export interface SimInstance {
  readonly instanceId: string;
  /** Its primary network interface (the route target). */
  readonly eni: string;
  /** Its metadata endpoint (the fake, under `/<instance-id>`). */
  readonly imdsEndpoint: string;
  /** Provider options that discover this instance. */
  readonly aws: Omit<AwsVpcProviderOptions, "routeTableIds" | "clock">;
}

/**
 * Add an instance to the world: host 0 is the harness's own interface, the
 * others get a new interface in the world's subnet.
 *
 * @param h The harness.
 * @param index Host number (0 = the harness's own).
 * @returns The instance.
 */
export async function addInstance(h: AwsHarness, index: number): Promise<SimInstance> {
  let nic: { id: string; mac: string } = h.world.interfaces[0];
  if (index > 0) {
    const r = await testEc2Client(h.endpoint, h.world.region, h.awsOptions.credentials).send(
      new sdk.CreateNetworkInterfaceCommand({ SubnetId: h.world.subnetId }),
    );
    nic = { id: r.NetworkInterface!.NetworkInterfaceId!, mac: r.NetworkInterface!.MacAddress! };
  }
  const instanceId = `i-${index.toString(16).padStart(17, "0")}`;
  h.imds.addInstance({
    instanceId,
    region: h.world.region,
    interfaces: [{
      mac: nic.mac,
      interfaceId: nic.id,
      subnetId: h.world.subnetId,
      vpcId: h.world.vpcId,
      vpcCidrs: [h.world.vpcCidr],
    }],
  });
  const imdsEndpoint = h.imds.endpointFor(instanceId);
  return {
    instanceId,
    eni: nic.id,
    imdsEndpoint,
    aws: { ...h.awsOptions, imds: createImdsClient({ endpoint: imdsEndpoint }) },
  };
}

/**
 * A backend context for host `index` (public IP `192.0.2.<10+index>`,
 * subnet `10.5.<index+1>.0/24` unless given).
 *
 * @param options The `Backend` object, host number, subnet, clock.
 * @returns The context.
 */
export function hostContext(options: {
  backend: Record<string, unknown>;
  index: number;
  subnet?: string;
  clock?: Clock;
  signal?: AbortSignal;
}): TestContext {
  const ip = `192.0.2.${10 + options.index}`;
  return testContext({
    backend: options.backend,
    ext: { name: "eth0", index: 2, mtu: 9001, ifaceAddr: ip, extAddr: ip },
    subnet: options.subnet ?? `10.5.${options.index + 1}.0/24`,
    clock: options.clock,
    signal: options.signal,
  });
}
