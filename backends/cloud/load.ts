/**
 * The one place that loads a cloud's route provider, on first use: a host
 * that configures no cloud backend never loads the provider's module nor
 * its SDK. Each cloud's module is a split module (`loader.ts`): from source,
 * from `weft-<name>.js` beside `dist/weft.js`, or from its entry point in
 * the binary.
 *
 * @module
 */

import type { AwsVpcProviderOptions } from "./aws/provider.ts";
import type { GceProviderOptions, GceRouteProvider } from "./gce/provider.ts";
import { loadCloudModule } from "./loader.ts";
import type { RouteProvider } from "./provider.ts";

/** The route clouds weft knows, by `Backend.Type` / `CloudRoutes.Type`. */
export const CLOUD_ROUTE_TYPES = ["aws-vpc", "gce"] as const;

/** One of {@link CLOUD_ROUTE_TYPES}. */
export type CloudRouteType = typeof CLOUD_ROUTE_TYPES[number];

/** What a loaded AWS module offers. */
export interface AwsModule {
  createAwsVpcProvider(options: AwsVpcProviderOptions): RouteProvider;
  parseRouteTableIds(value: unknown): string[];
}

/**
 * Load the aws-vpc provider module (and with it, on its first call, the
 * AWS SDK).
 *
 * @returns The module's factory and its option parser.
 * @example
 * ```ts
 * const aws = await loadAws();
 * const provider = aws.createAwsVpcProvider({ routeTableIds: aws.parseRouteTableIds(value) });
 * ```
 */
export async function loadAws(): Promise<AwsModule> {
  return await loadCloudModule<AwsModule>("aws");
}

/** What a loaded GCE module offers. */
export interface GceModule {
  createGceRouteProvider(options: GceProviderOptions): GceRouteProvider;
}

/**
 * Load the gce provider module (the Compute client library loads on its
 * first API call).
 *
 * @returns The module's factory.
 * @example
 * ```ts
 * const gce = await loadGce();
 * const provider = gce.createGceRouteProvider({});
 * ```
 */
export async function loadGce(): Promise<GceModule> {
  return await loadCloudModule<GceModule>("gce");
}
