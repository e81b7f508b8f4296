/**
 * weft's builtin kubeconfig loader (lease/kube/config.ts) against
 * `@kubernetes/client-node`'s (lease/kube/client_node.ts, which the store
 * uses only for exec-plugin and auth-provider users): import time, the time
 * to load a kubeconfig (cluster CA, token user) and produce the first
 * request's headers, and RSS after each. Each run spawns one fresh child
 * process per loader (test/bench/kube_config_child.ts), alternating which
 * goes first; figures are medians over the runs.
 *
 * Run on its own: `deno run -A test/bench/kube_config_bench.ts [runs]` (or with `bun`).
 *
 * @module
 */

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { execPath, runtimeName } from "../../core/runtime.ts";
import { makeTestCerts } from "../../testing/fake_kube.ts";
import type { LoaderFigures } from "./kube_config_child.ts";
import { median } from "./stats.ts";

/** Medians over the runs for one loader. */
export type LoaderMedians = Omit<LoaderFigures, "loader"> & {
  readonly runs: number;
  /** What a store pays before its first request. */
  readonly importAndLoadMs: number;
};

/** Result of {@link benchKubeConfigLoaders}. */
export interface KubeConfigBenchResult {
  readonly runtime: string;
  readonly builtin: LoaderMedians;
  readonly clientNode: LoaderMedians;
}

const LOADERS = ["builtin", "client-node"] as const;

function runChild(args: string[]): Promise<LoaderFigures> {
  const child = fileURLToPath(new URL("./kube_config_child.ts", import.meta.url));
  const argv = runtimeName === "deno" ? ["run", "-A", child, ...args] : [child, ...args];
  return new Promise((resolve, reject) => {
    const p = spawn(execPath(), argv, { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    p.stdout.on("data", (d) => (stdout += d));
    p.stderr.on("data", (d) => (stderr += d));
    p.once("error", reject);
    p.once(
      "exit",
      (code) =>
        code === 0 ? resolve(JSON.parse(stdout.trim().split("\n").at(-1)!)) : reject(
          new Error(`kubeconfig child (${args[0]}) exited with ${code}: ${stderr.trim()}`),
        ),
    );
  });
}

/**
 * Both loaders on the same kubeconfig.
 *
 * @param options `runs` per loader (default 5).
 * @returns Medians per loader.
 * @throws {Error} When a child fails.
 */
export async function benchKubeConfigLoaders(
  options: { runs?: number } = {},
): Promise<KubeConfigBenchResult> {
  const runs = options.runs ?? 5;
  const dir = mkdtempSync(join(tmpdir(), "weft-kubeconfig-bench-"));
  try {
    const { ca } = makeTestCerts();
    const file = join(dir, "kubeconfig");
    // what a kubeadm node's kubeconfig looks like, with a token user
    writeFileSync(
      file,
      [
        "apiVersion: v1",
        "kind: Config",
        "clusters:",
        "- name: kubernetes",
        "  cluster:",
        "    server: https://10.96.0.1:443",
        `    certificate-authority-data: ${btoa(ca)}`,
        "users:",
        "- name: weft",
        "  user:",
        "    token: eyJhbGciOiJSUzI1NiIsImtpZCI6IiJ9.bench.token",
        "contexts:",
        "- name: weft@kubernetes",
        "  context:",
        "    cluster: kubernetes",
        "    user: weft",
        "current-context: weft@kubernetes",
        "",
      ].join("\n"),
    );
    const figures: Record<(typeof LOADERS)[number], LoaderFigures[]> = {
      builtin: [],
      "client-node": [],
    };
    for (let r = 0; r < runs; r++) {
      const order = r % 2 === 0 ? LOADERS : [...LOADERS].reverse();
      for (const l of order) figures[l].push(await runChild([l, file]));
    }
    const medians = (xs: LoaderFigures[]): LoaderMedians => {
      const m = (f: (x: LoaderFigures) => number) => median(xs.map(f));
      return {
        runs: xs.length,
        importMs: m((x) => x.importMs),
        loadMs: m((x) => x.loadMs),
        importAndLoadMs: m((x) => x.importMs + x.loadMs),
        rssBaseMB: m((x) => x.rssBaseMB),
        rssAfterImportMB: m((x) => x.rssAfterImportMB),
        rssAfterLoadMB: m((x) => x.rssAfterLoadMB),
      };
    };
    return {
      runtime: runtimeName,
      builtin: medians(figures.builtin),
      clientNode: medians(figures["client-node"]),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Report lines for {@link benchKubeConfigLoaders}, saying which loader wins each figure.
 *
 * @param r The result.
 * @returns Lines for the bench report.
 */
export function reportKubeConfigLoaders(r: KubeConfigBenchResult): string[] {
  const vs = (what: string, b: number, c: number, unit: string, d = 1) =>
    `${what}: builtin ${b.toFixed(d)} ${unit} vs client-node ${c.toFixed(d)} ${unit} (${
      b <= c ? "builtin" : "client-node"
    } wins, ${(Math.max(b, c) / Math.max(Math.min(b, c), 1e-9)).toFixed(2)}×)`;
  return [
    `kubeconfig loader, builtin vs @kubernetes/client-node, ${r.runtime}, median of ${r.builtin.runs} runs each:`,
    "  " +
    vs(
      "import + load + first headers",
      r.builtin.importAndLoadMs,
      r.clientNode.importAndLoadMs,
      "ms",
      0,
    ),
    "  " + vs("  of which import", r.builtin.importMs, r.clientNode.importMs, "ms", 0),
    // the first load pays the lazy start of node:fs and the YAML parser, which
    // client-node's import has already paid
    "  " + vs("  of which load + first headers", r.builtin.loadMs, r.clientNode.loadMs, "ms", 1),
    "  " + vs("RSS after import", r.builtin.rssAfterImportMB, r.clientNode.rssAfterImportMB, "MB"),
    "  " + vs("RSS after load", r.builtin.rssAfterLoadMB, r.clientNode.rssAfterLoadMB, "MB"),
  ];
}

if (import.meta.main) {
  const runs = Number(process.argv[2] ?? 5);
  const r = await benchKubeConfigLoaders({ runs });
  for (const line of reportKubeConfigLoaders(r)) console.log(line);
  console.log(JSON.stringify(r));
}
