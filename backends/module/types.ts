/**
 * The backend-module contract: what a third party's module exports so that
 * weft loads it at run time with
 * `"Backend": {"Type": "module", "Module": "/abs/path/or/file:///url", …its options}`.
 *
 * A module's default export (or its export named `weftModule`) is one of:
 *
 * - a {@link RouteProviderModule} — the common case, a router or cloud with
 *   an API: the module translates four calls (list, create, replace, remove)
 *   plus discovery onto that API, and weft's shared cloud reconcile loop
 *   (the one aws-vpc uses) decides what to write, retries with back-off and
 *   removes stale routes;
 * - a {@link BackendModule} — a full {@link Backend}: it registers, acquires
 *   the lease and programs whatever it likes, like weft's own backends.
 *
 * It states the version of this contract it implements
 * ({@link BACKEND_MODULE_API_VERSION}); weft refuses another. Its options
 * (every key of `Backend` but weft's own: `Type`, `Module`,
 * `CallTimeoutSeconds`, `RouteResyncSeconds`) are validated by the
 * {@link StandardSchema} it exports (a valibot, zod or arktype schema is
 * one), and the validated value is what its factory gets.
 *
 * The module must not rely on `instanceof` across the seam (weft's classes
 * are other copies than the module's): a route provider's errors are
 * recognised by `name === "RouteProviderError"` and a string `kind`.
 * Import weft's types with `import type` only; in `dist/weft.js` and the
 * binary a module is a file on its own, so ship it as one self-contained
 * file (`bun build module.ts --outfile module.js --target node`, or
 * relative imports only): a bare `import "pkg"` resolves only when weft runs
 * from source and the package is installed beside the module.
 *
 * @module
 */

import type { Clock } from "../../core/clock.ts";
import type { Logger } from "../../core/log.ts";
import type { NetworkConfig } from "../../lease/config.ts";
import type { ExternalInterface } from "../../datapath/iface.ts";
import type { RouteProvider } from "../cloud/provider.ts";
import type { Backend } from "../types.ts";

/** Version of the module contract (this file and the seams it names). */
export const BACKEND_MODULE_API_VERSION = 1;

/**
 * The validation half of Standard Schema v1 (https://standardschema.dev),
 * which valibot ≥ 1, zod ≥ 3.24 and arktype implement.
 */
export interface StandardSchema<Output = unknown> {
  readonly "~standard": {
    readonly version: 1;
    readonly vendor: string;
    validate(value: unknown):
      | StandardResult<Output>
      | Promise<StandardResult<Output>>;
  };
}

/** What a {@link StandardSchema} returns. */
export type StandardResult<Output> =
  | { readonly value: Output; readonly issues?: undefined }
  | {
    readonly issues: readonly {
      readonly message: string;
      readonly path?: readonly (PropertyKey | { readonly key: PropertyKey })[];
    }[];
  };

/** What weft tells a module's factory about this host. */
export interface ModuleContext {
  /** The network config (`Network`, `SubnetLen`, `Backend`, …). */
  readonly config: NetworkConfig;
  /** The interface weft uses: its address (`extAddr`) is this host's next hop on the underlay. */
  readonly extIface: ExternalInterface;
  readonly logger: Logger;
  readonly clock: Clock;
  /** Aborts when the agent stops. */
  readonly signal: AbortSignal;
}

/** A module that offers a route provider (weft runs it through its cloud route loop). */
export interface RouteProviderModule<Options = unknown> {
  readonly apiVersion: typeof BACKEND_MODULE_API_VERSION;
  readonly kind: "route-provider";
  /** Short name for logs and metrics, e.g. `acme-router`. */
  readonly name: string;
  /** Schema of its options; without one, options must be empty. */
  readonly options?: StandardSchema<Options>;
  /** Make the provider (no API call needed yet: `discover()` comes next). */
  createProvider(options: Options, ctx: ModuleContext): RouteProvider | Promise<RouteProvider>;
}

/** A module that offers a full backend. */
export interface BackendModule<Options = unknown> {
  readonly apiVersion: typeof BACKEND_MODULE_API_VERSION;
  readonly kind: "backend";
  readonly name: string;
  readonly options?: StandardSchema<Options>;
  /** Make the backend; weft calls its `register` with the usual context. */
  createBackend(options: Options, ctx: ModuleContext): Backend | Promise<Backend>;
}

/** What a backend module exports (as `default` or `weftModule`). */
export type WeftModule<Options = unknown> =
  | RouteProviderModule<Options>
  | BackendModule<Options>;
