/**
 * The cloud modules and how they are loaded: each cloud backend's code (the
 * provider for `aws-vpc`, for `gce`) is a split module (`core/split_module.ts`):
 * its SDK stays out of weft's main file, and the module is imported only when
 * such a backend is configured — from source, from `weft-<name>.js` beside
 * `dist/weft.js`, or from its entry point inside the binary.
 *
 * A cloud module is `backends/cloud/<name>/provider.ts`; it states the
 * version of `provider.ts` it implements as `API_VERSION` (or
 * `ROUTE_PROVIDER_API_VERSION`), which must be this weft's. In
 * `dist/weft.js` it carries its own copy of `provider.ts`: weft recognises
 * its errors with `isRouteProviderError`, never `instanceof
 * RouteProviderError` (inside the module, `instanceof` is fine).
 *
 * @module
 */

import { loadSplitModule, type SplitModule, SplitModuleError } from "../../core/split_module.ts";
import { ROUTE_PROVIDER_API_VERSION } from "./provider.ts";

/** The cloud modules; `scripts/build.ts` builds every one whose source exists. */
export const CLOUD_MODULES = {
  aws: { name: "aws", source: "backends/cloud/aws/provider.ts", file: "weft-aws.js" },
  gce: { name: "gce", source: "backends/cloud/gce/provider.ts", file: "weft-gce.js" },
} as const satisfies Record<string, SplitModule>;

/** The name of a cloud module in {@link CLOUD_MODULES}. */
export type CloudModuleName = keyof typeof CLOUD_MODULES;

/**
 * Import a cloud module and check that it implements this weft's route
 * provider seam.
 *
 * @param name `aws` or `gce`.
 * @returns The module's namespace.
 * @throws {SplitModuleError} When it cannot be loaded (its file is not
 *   beside weft.js), or states another API version (a `weft-<name>.js` from
 *   another release).
 * @example
 * ```ts
 * const aws = await loadCloudModule<typeof import("./aws/provider.ts")>("aws");
 * const provider = aws.createAwsVpcProvider({ routeTableIds: ["rtb-0a1b"] });
 * ```
 */
export async function loadCloudModule<T = Record<string, unknown>>(
  name: CloudModuleName,
): Promise<T> {
  const module = CLOUD_MODULES[name];
  const loaded = await loadSplitModule<T>(module);
  const stated = loaded as { API_VERSION?: unknown; ROUTE_PROVIDER_API_VERSION?: unknown };
  const version = stated.API_VERSION ?? stated.ROUTE_PROVIDER_API_VERSION;
  if (version !== undefined && version !== ROUTE_PROVIDER_API_VERSION) {
    throw new SplitModuleError(
      `weft's ${name} module implements route provider API ${
        JSON.stringify(version)
      }, this weft needs ${ROUTE_PROVIDER_API_VERSION}: use ${module.file} from the same release as weft`,
    );
  }
  return loaded;
}
