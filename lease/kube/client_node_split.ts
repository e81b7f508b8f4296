/**
 * The stand-in for `client_node.ts` inside `dist/weft.js`: the one-file
 * build (`scripts/build.ts`) swaps `client_node.ts` for this module and
 * ships `client_node.ts` with `@kubernetes/client-node` as `weft-kube.js`
 * beside weft.js, loaded only when a kubeconfig needs client-node (an exec
 * plugin or an auth-provider). client-node is most of the bundle: without
 * it weft.js is a fifth of the size and starts about twice as fast.
 *
 * The split file carries its own copy of `core/errors.ts`, so its
 * `ConfigError` is not this one: errors are re-made here as this file's
 * `ConfigError` (matched by name), which the store tells from outages.
 * Nothing imports this module from source; the binary needs no stand-in
 * (Bun's `--splitting` already loads client-node only when it is imported).
 *
 * @module
 */

import { ConfigError } from "../../core/errors.ts";
import { loadSplitModule, type SplitModule } from "../../core/split_module.ts";
import type { KubeConfigOptions, KubeConnection } from "./config.ts";

/** `client_node.ts` as a split module. */
export const KUBE_CLIENT_MODULE: SplitModule = {
  name: "kube",
  source: "lease/kube/client_node.ts",
  file: "weft-kube.js",
};

/** A ConfigError from the split file's copy of `core/errors.ts`, re-made as this copy's. */
function rebrand(e: unknown): unknown {
  if (e instanceof ConfigError || !(e instanceof Error) || e.name !== "ConfigError") return e;
  return new ConfigError(e.message, (e as { path?: string }).path, { cause: e });
}

/**
 * {@link import("./client_node.ts").loadKubeConfigWithClientNode}, loaded
 * from `weft-kube.js`.
 *
 * @param options As the original's.
 * @returns The connection; its `headers()` errors are re-made the same way.
 * @throws {ConfigError} As the original.
 * @throws {SplitModuleError} When `weft-kube.js` is not beside weft.js.
 */
export async function loadKubeConfigWithClientNode(
  options: KubeConfigOptions,
): Promise<KubeConnection> {
  const m = await loadSplitModule<typeof import("./client_node.ts")>(KUBE_CLIENT_MODULE);
  try {
    const conn = await m.loadKubeConfigWithClientNode(options);
    return {
      ...conn,
      headers: () => conn.headers().catch((e) => Promise.reject(rebrand(e))),
      refresh: () => conn.refresh(),
    };
  } catch (e) {
    throw rebrand(e);
  }
}
