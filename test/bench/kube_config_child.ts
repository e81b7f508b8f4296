/**
 * One kubeconfig loader in a fresh process, for
 * test/bench/kube_config_bench.ts: `builtin` (lease/kube/config.ts) or
 * `client-node` (lease/kube/client_node.ts over `@kubernetes/client-node`).
 * It imports the loader (timed), notes RSS, loads the kubeconfig and
 * produces the first request's headers (timed), notes RSS, and prints one
 * JSON line ({@link LoaderFigures}).
 *
 * Only node: modules are imported statically, so the import time and RSS
 * are the loader's own.
 *
 * Run: `deno run -A test/bench/kube_config_child.ts builtin|client-node <kubeconfig>`.
 *
 * @module
 */

import process from "node:process";

/** What one child measured (ms, MB = 10^6 bytes). */
export interface LoaderFigures {
  readonly loader: "builtin" | "client-node";
  readonly importMs: number;
  /** Loading the kubeconfig and producing the first headers. */
  readonly loadMs: number;
  readonly rssBaseMB: number;
  readonly rssAfterImportMB: number;
  readonly rssAfterLoadMB: number;
}

const mb = (bytes: number) => Math.round(bytes / 1e4) / 100;
const ms = (x: number) => Math.round(x * 100) / 100;

async function main(): Promise<void> {
  const [loader, kubeconfigFile] = process.argv.slice(2);
  const rssBase = process.memoryUsage().rss;
  const t0 = performance.now();
  let load: () => Promise<{ headers(): Promise<Record<string, string>> }>;
  if (loader === "builtin") {
    const { loadKubeConfig } = await import("../../lease/kube/config.ts");
    load = async () => {
      const loaded = await loadKubeConfig({ kubeconfigFile });
      if (loaded.kind !== "builtin") {
        throw new Error(`the builtin loader declined: ${loaded.reason}`);
      }
      return loaded.connection;
    };
  } else if (loader === "client-node") {
    const { loadKubeConfigWithClientNode } = await import("../../lease/kube/client_node.ts");
    load = () => loadKubeConfigWithClientNode({ kubeconfigFile });
  } else {
    throw new TypeError(
      `Cannot bench loader ${JSON.stringify(loader)}: use builtin or client-node`,
    );
  }
  const importMs = performance.now() - t0;
  const rssAfterImport = process.memoryUsage().rss;
  const t1 = performance.now();
  const conn = await load();
  const headers = await conn.headers();
  const loadMs = performance.now() - t1;
  if (!headers.Authorization && !headers.authorization) {
    throw new Error(`the ${loader} loader produced no Authorization header`);
  }
  const rssAfterLoad = process.memoryUsage().rss;
  console.log(JSON.stringify(
    {
      loader: loader as LoaderFigures["loader"],
      importMs: ms(importMs),
      loadMs: ms(loadMs),
      rssBaseMB: mb(rssBase),
      rssAfterImportMB: mb(rssAfterImport),
      rssAfterLoadMB: mb(rssAfterLoad),
    } satisfies LoaderFigures,
  ));
}

if (import.meta.main) {
  await main();
  process.exit(0);
}
