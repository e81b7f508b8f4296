/**
 * The program that proves the split-module mechanism
 * (`core/split_module.ts`) in every form weft ships in: built with the
 * same functions as weft (`scripts/build.ts`) into `split_probe.js` +
 * `weft-probe.js`, and into a Bun binary with `cloud.ts` as an entry point.
 * It prints one JSON line: the form, RSS before and after, with `--load`
 * what the loaded stand-in answered, and with `--cloud` the functions of
 * the real cloud modules (built as split modules beside it, too).
 *
 * @module
 */

import process from "node:process";
import { buildForm, loadSplitModule, type SplitModule } from "../../core/split_module.ts";
import {
  CLOUD_MODULES,
  type CloudModuleName,
  loadCloudModule,
} from "../../backends/cloud/loader.ts";
import { isRouteProviderError, RouteProviderError } from "../../backends/cloud/provider.ts";
import { rssBytes } from "../../core/runtime.ts";

/** The stand-in module, as a cloud module is listed in CLOUD_MODULES. */
export const PROBE_MODULE: SplitModule = {
  name: "probe",
  source: "testing/split_probe/cloud.ts",
  file: "weft-probe.js",
};

/** What the probe prints. */
export interface ProbeReport {
  readonly form: string;
  readonly rssMB: number;
  readonly loaded?: {
    readonly serviceId: string;
    readonly apiVersion: unknown;
    readonly loadMs: number;
    readonly rssMB: number;
    /** `instanceof RouteProviderError` across the split (false in the one-file bundle). */
    readonly sameClass: boolean;
    /** `isRouteProviderError()` across the split (must be true everywhere). */
    readonly recognized: boolean;
    readonly kind: string;
  };
  /** With `--cloud`: the exported functions of each real cloud module, loaded with `loadCloudModule`. */
  readonly cloud?: Readonly<Record<string, readonly string[]>>;
}

if (import.meta.main) {
  const report: { -readonly [K in keyof ProbeReport]: ProbeReport[K] } = {
    form: buildForm(),
    rssMB: rssBytes() / 1e6,
  };
  if (process.argv.includes("--load")) {
    const t0 = performance.now();
    const m = await loadSplitModule<typeof import("./cloud.ts")>(PROBE_MODULE);
    const loadMs = performance.now() - t0;
    let caught: unknown;
    try {
      m.failDenied();
    } catch (e) {
      caught = e;
    }
    report.loaded = {
      serviceId: m.serviceId(),
      apiVersion: m.ROUTE_PROVIDER_API_VERSION,
      loadMs,
      rssMB: rssBytes() / 1e6,
      sameClass: caught instanceof RouteProviderError,
      recognized: isRouteProviderError(caught),
      kind: isRouteProviderError(caught) ? caught.kind : "",
    };
  }
  if (process.argv.includes("--cloud")) {
    const cloud: Record<string, string[]> = {};
    for (const name of Object.keys(CLOUD_MODULES) as CloudModuleName[]) {
      const m = await loadCloudModule(name);
      cloud[name] = Object.keys(m).filter((k) => typeof m[k] === "function").sort();
    }
    report.cloud = cloud;
  }
  console.log(JSON.stringify(report));
}
