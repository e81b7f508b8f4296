/**
 * Loading a backend module (`"Backend": {"Type": "module", "Module": …}`):
 * import it from an absolute path or file URL — from source under Deno and
 * Bun, from `dist/weft.js` and from the binary alike (all import a file
 * outside weft) — check what it exports against the module contract
 * (./types.ts) and validate its options with the schema it exports.
 *
 * @module
 */

import { ConfigError } from "../../core/errors.ts";
import { foldKeys } from "../../lease/config.ts";
import {
  BACKEND_MODULE_API_VERSION,
  type StandardResult,
  type StandardSchema,
  type WeftModule,
} from "./types.ts";

/** The keys of `Backend` that are weft's, not the module's. */
export const WEFT_MODULE_KEYS = ["Type", "Module", "CallTimeoutSeconds", "RouteResyncSeconds"];

/**
 * The URL of `Module` as written: an absolute path or a `file:` URL.
 *
 * @param spec `Backend.Module`.
 * @returns A `file:` URL.
 * @throws {ConfigError} When it is not a string, relative, or another scheme.
 */
export function moduleUrl(spec: unknown): string {
  const fix =
    'give the module\'s absolute path or file URL, e.g. "Module": "/etc/weft/acme-router.js"';
  if (typeof spec !== "string" || spec.length === 0) {
    throw new ConfigError(
      `the network config: "Backend.Module" must name the module to load: current value is ${
        JSON.stringify(spec)
      }; ${fix}`,
      "Backend.Module",
    );
  }
  if (spec.startsWith("/")) return new URL(`file://${encodeURI(spec)}`).href;
  if (spec.startsWith("file:")) {
    try {
      const url = new URL(spec);
      if (url.pathname.startsWith("/")) return url.href;
    } catch { /* reported below */ }
  }
  throw new ConfigError(
    `the network config: "Backend.Module" must be an absolute path or a file: URL (weft loads no ` +
      `relative or remote module): current value is ${JSON.stringify(spec)}; ${fix}`,
    "Backend.Module",
  );
}

const isSchema = (x: unknown): x is StandardSchema =>
  typeof x === "object" && x !== null && "~standard" in x &&
  typeof (x as StandardSchema)["~standard"]?.validate === "function";

/**
 * Check that a module namespace exports a module of this contract.
 *
 * @param ns The module namespace.
 * @param url Where it came from, for messages.
 * @returns Its module object.
 * @throws {ConfigError} Naming what is missing or wrong and how to fix it.
 */
export function checkModule(ns: Record<string, unknown>, url: string): WeftModule {
  const m = (ns.default ?? ns.weftModule) as Record<string, unknown> | undefined;
  const bad = (what: string, value: unknown, fix: string) =>
    new ConfigError(
      `the backend module ${url}: ${what}: current value is ${
        JSON.stringify(value) ?? String(value)
      }; ${fix}`,
      "Backend.Module",
    );
  if (typeof m !== "object" || m === null) {
    throw bad(
      "exports no module (neither a default export nor `weftModule`)",
      Object.keys(ns),
      'export default { apiVersion: 1, kind: "route-provider", name, options, createProvider }',
    );
  }
  if (m.apiVersion !== BACKEND_MODULE_API_VERSION) {
    throw bad(
      `implements module API ${
        JSON.stringify(m.apiVersion)
      }, this weft implements ${BACKEND_MODULE_API_VERSION}`,
      m.apiVersion,
      `use a version of the module made for module API ${BACKEND_MODULE_API_VERSION}`,
    );
  }
  if (typeof m.name !== "string" || !/^[a-z0-9][a-z0-9._-]{0,62}$/.test(m.name)) {
    throw bad(
      "`name` must be a short name (lowercase letters, digits, . _ -)",
      m.name,
      'set name, e.g. "acme-router"',
    );
  }
  const factory = m.kind === "route-provider"
    ? "createProvider"
    : m.kind === "backend"
    ? "createBackend"
    : undefined;
  if (!factory) {
    throw bad('`kind` must be "route-provider" or "backend"', m.kind, "set kind");
  }
  if (typeof m[factory] !== "function") {
    throw bad(
      `a ${m.kind} module must export a function \`${factory}\``,
      typeof m[factory],
      `add ${factory}(options, ctx)`,
    );
  }
  if (m.options !== undefined && !isSchema(m.options)) {
    throw bad(
      "`options` must be a Standard Schema (valibot, zod, arktype)",
      typeof m.options,
      "export options: v.object({ … }) or leave it out",
    );
  }
  return m as unknown as WeftModule;
}

/**
 * Import a backend module and check it.
 *
 * @param spec `Backend.Module` as written.
 * @returns The module and the URL it was loaded from.
 * @throws {ConfigError} For a bad `Module`, a file that cannot be loaded,
 *   or exports that break the contract.
 */
export async function loadBackendModule(
  spec: unknown,
): Promise<{ module: WeftModule; url: string }> {
  const url = moduleUrl(spec);
  let ns: Record<string, unknown>;
  try {
    ns = await import(url);
  } catch (e) {
    throw new ConfigError(
      `the network config: cannot load "Backend.Module" ${url}: ${
        (e as Error).message.replace(/\.$/, "")
      }; check the file exists and is readable; for dist/weft.js and the binary, ship the ` +
        `module as one self-contained file (bun build module.ts --outfile module.js --target node)`,
      "Backend.Module",
      { cause: e },
    );
  }
  return { module: checkModule(ns, url), url };
}

/**
 * The module's own options: `Backend` without weft's keys, as written.
 *
 * @param backend `Backend` of the network config.
 * @returns The rest.
 */
export function moduleOptionsOf(
  backend: Readonly<Record<string, unknown>>,
): Record<string, unknown> {
  const { unknown } = foldKeys(backend as Record<string, unknown>, WEFT_MODULE_KEYS);
  return Object.fromEntries(unknown.map((k) => [k, backend[k]]));
}

/**
 * Validate the module's options with its schema.
 *
 * @param module The module.
 * @param options Its options (see {@link moduleOptionsOf}).
 * @returns The validated (and possibly transformed) options.
 * @throws {ConfigError} Naming the field (`Backend.<key>`), its value and the
 *   schema's message; or, without a schema, the keys it cannot take.
 */
export async function validateModuleOptions(
  module: WeftModule,
  options: Record<string, unknown>,
): Promise<unknown> {
  if (!module.options) {
    const keys = Object.keys(options);
    if (keys.length === 0) return {};
    throw new ConfigError(
      `the network config: the backend module ${module.name} takes no options: current keys are ${
        JSON.stringify(keys)
      }; remove them from "Backend"`,
      `Backend.${keys[0]}`,
    );
  }
  let result: StandardResult<unknown>;
  try {
    result = await module.options["~standard"].validate(options);
  } catch (e) {
    throw new ConfigError(
      `the network config: the backend module ${module.name}'s option schema threw: ${
        (e as Error).message
      }; fix the module`,
      "Backend",
      { cause: e },
    );
  }
  if (result.issues) {
    const issue = result.issues[0];
    const keys = (issue.path ?? []).map((p) =>
      typeof p === "object" && p !== null ? String(p.key) : String(p)
    );
    let value: unknown = options;
    for (const k of keys) value = (value as Record<string, unknown> | undefined)?.[k];
    const field = ["Backend", ...keys].join(".");
    throw new ConfigError(
      `the network config: "${field}" is invalid for the backend module ${module.name} (${issue.message}): ` +
        `current value is ${
          JSON.stringify(value) ?? "missing"
        }; fix "${field}" as the module's documentation says`,
      field,
    );
  }
  return result.value;
}
