/**
 * A GCE world for tests and benchmarks: the GCE fake with the routes a real
 * project holds besides weft's (the default route to the internet gateway
 * and a subnet route), a provider harness for the route-provider and cloud
 * target contracts, and simulated VMs with backend contexts for the gce and
 * hybrid backend tests. Every client is the real one (`@google-cloud/compute`
 * REST, weft's metadata client).
 *
 * @module
 */

import { createGceMetadata } from "../backends/cloud/gce/metadata.ts";
import { createGceRouteProvider, type GceProviderOptions } from "../backends/cloud/gce/provider.ts";
import type { Clock } from "../core/clock.ts";
import { type FakeGce, type FakeGceOptions, startFakeGce } from "./fake_gce.ts";
import type { ProviderHarness } from "./route_provider_contract.ts";
import { type TestContext, testContext } from "./routing.ts";

/** Destinations of the foreign routes {@link addForeignRoutes} puts in place. */
export const FOREIGN_DESTINATIONS = ["0.0.0.0/0", "10.132.0.0/20"] as const;

/**
 * Put GCE's own routes of a `default`-like network in place: the default
 * route to the internet gateway and the subnet route of 10.132.0.0/20.
 *
 * @param fake The fake.
 */
export function addForeignRoutes(fake: FakeGce): void {
  fake.addRoute({
    name: "default-route-4a5b6c7d8e9f0a1b",
    description: "Default route to the Internet.",
    network: fake.networkLink,
    destRange: "0.0.0.0/0",
    priority: 1000,
    nextHopGateway:
      `https://www.googleapis.com/compute/v1/projects/${fake.projectId}/global/gateways/default-internet-gateway`,
  });
  fake.addRoute({
    name: "default-route-1a2b3c4d5e6f7a8b",
    description: "Default local route to the subnetwork 10.132.0.0/20.",
    network: fake.networkLink,
    destRange: "10.132.0.0/20",
    priority: 0,
    nextHopNetwork: fake.networkLink,
    routeType: "SUBNET",
  });
}

/** A started fake with foreign routes, a provider for its VM and a second instance. */
export interface GceSetup {
  readonly fake: FakeGce;
  readonly provider: ReturnType<typeof createGceRouteProvider>;
  /** selfLink of a second instance (no metadata server of its own). */
  readonly second: string;
  close(): Promise<void>;
}

/**
 * Start the fake with foreign routes and make a provider for its VM.
 *
 * @param fakeOptions Options of the fake.
 * @param providerOptions Options of the provider (operation polling is 1 ms unless given).
 * @returns The setup; `close()` it.
 */
export async function setupGce(
  fakeOptions: FakeGceOptions = {},
  providerOptions: GceProviderOptions = {},
): Promise<GceSetup> {
  const fake = await startFakeGce(fakeOptions);
  addForeignRoutes(fake);
  const second = fake.addInstance("europe-west1-c", "node-2");
  const provider = createGceRouteProvider({
    env: fake.env,
    metadata: createGceMetadata({ env: fake.env }),
    operationPollMs: 1,
    ...providerOptions,
  });
  return {
    fake,
    provider,
    second,
    async close() {
      await provider.close();
      await fake.close();
    },
  };
}

/**
 * A provider harness over the GCE fake, for the route-provider and the cloud
 * target contracts: every fault is available.
 *
 * @param fakeOptions Options of the fake.
 * @returns The harness.
 */
export async function makeFakeGceHarness(fakeOptions: FakeGceOptions = {}): Promise<
  ProviderHarness & { fake: FakeGce }
> {
  const { fake, provider, second, close } = await setupGce(fakeOptions);
  return {
    fake,
    provider,
    table: fake.networkLink,
    targets: [fake.instanceLink, second],
    foreignDestinations: FOREIGN_DESTINATIONS,
    faults: {
      limit: (n) => fake.setRoutesQuota(n),
      throttle: (calls) => fake.throttle(calls),
      denyWrites: () => {
        fake.deny("compute.routes.create");
        return "compute.routes.create";
      },
      removeTarget: (target) => fake.deleteInstance(target),
    },
    missing: {},
    close,
  };
}

/** One simulated VM of the world. */
export interface SimVm {
  /** Its selfLink (the route's next hop). */
  readonly instanceLink: string;
  /** Provider options that discover this VM (its metadata server, the shared API). */
  readonly gce: Omit<GceProviderOptions, "clock">;
}

/**
 * Add a VM with its own metadata server: `index` 0 is the fake's own VM,
 * the others `node-<index>` in europe-west1-b.
 *
 * @param fake The fake.
 * @param index Host number.
 * @param options Provider options to add (timeouts, overrides).
 * @returns The VM.
 */
export async function addVm(
  fake: FakeGce,
  index: number,
  options: Omit<GceProviderOptions, "clock" | "env" | "metadata"> = {},
): Promise<SimVm> {
  let env: Readonly<Record<string, string>> = fake.env;
  let instanceLink = fake.instanceLink;
  if (index > 0) {
    const vm = await fake.addVm({
      zone: "europe-west1-b",
      name: `node-${index}`,
      ip: `192.0.2.${10 + index}`,
    });
    env = vm.env;
    instanceLink = vm.instanceLink;
  }
  return {
    instanceLink,
    gce: {
      env,
      metadata: createGceMetadata({ env }),
      // never pause between waits: the backends run on a FakeClock nobody advances during a
      // join, and the fake's wait blocks until the operation moves on anyway
      operationPollMs: 0,
      ...options,
    },
  };
}

/**
 * A backend context for host `index` (public IP `192.0.2.<10+index>`,
 * subnet `10.5.<index+1>.0/24` unless given, MTU 1460 as on GCE).
 *
 * @param options The `Backend` object, host number, subnet, clock, signal.
 * @returns The context.
 */
export function gceHostContext(options: {
  backend: Record<string, unknown>;
  index: number;
  subnet?: string;
  clock?: Clock;
  signal?: AbortSignal;
}): TestContext {
  const ip = `192.0.2.${10 + options.index}`;
  return testContext({
    backend: options.backend,
    ext: { name: "eth0", index: 2, mtu: 1460, ifaceAddr: ip, extAddr: ip },
    subnet: options.subnet ?? `10.5.${options.index + 1}.0/24`,
    clock: options.clock,
    signal: options.signal,
  });
}
