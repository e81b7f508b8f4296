/**
 * The build: what `deno task build`, `deno task compile:bun` and
 * `deno task compile` run.
 *
 * - `js` (default): `dist/weft.js`, one JavaScript file that runs unchanged
 *   as `deno run -A dist/weft.js` and `bun dist/weft.js`, made by
 *   `deno bundle`. The udp packet engine's Worker rides inside it: the
 *   Worker is bundled first and its text replaces `embedded_worker.ts`
 *   through an import map, so `thread.ts` starts it from a Blob URL. Every
 *   cloud module (`CLOUD_MODULES` in `backends/cloud/loader.ts`) whose
 *   source exists becomes a file of its own beside it (`weft-aws.js`, …),
 *   loaded only when such a backend is configured; so does the kubeconfig
 *   fallback with `@kubernetes/client-node` (`weft-kube.js`, through the
 *   stand-in `lease/kube/client_node_split.ts`).
 * - `bun`: `dist/weft`, a self-contained binary (`bun build --compile`) with
 *   the Worker and the cloud modules as entry points of their own, built
 *   with `--splitting` so they share weft's modules instead of copying them.
 * - `deno`: `dist/weft` by `deno compile`, which downloads its `denort`
 *   runtime from Deno's server unless `DENORT_BIN` names one; where neither
 *   works it fails and says so.
 *
 * `deno run -A scripts/build.ts [js|bun|deno|all] [--out DIR]`
 *
 * @module
 */

import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import process from "node:process";
import { pathToFileURL } from "node:url";
import { CLOUD_MODULES } from "../backends/cloud/loader.ts";
import type { SplitModule } from "../core/split_module.ts";
import { KUBE_CLIENT_MODULE } from "../lease/kube/client_node_split.ts";
import { COMPUTE_SPECIFIERS } from "./bun_build.ts";

/** The repository root. */
export const ROOT: string = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");

/** The runtimes installed by npm. */
export const DENO_BIN: string = path.join(ROOT, "node_modules/.bin/deno");
export const BUN_BIN: string = path.join(ROOT, "node_modules/.bin/bun");

const WORKER_SOURCE = "backends/udp/worker.ts";
const BUN_BUILD = "scripts/bun_build.ts";

/**
 * Build the lean Compute client module (`scripts/bun_build.ts lean-compute`:
 * REST only, no gRPC, protos pruned to the two services) into `dir`.
 *
 * @param root Repository root.
 * @param dir Work directory.
 * @returns The module's path.
 */
async function buildLeanCompute(root: string, dir: string): Promise<string> {
  const out = path.join(dir, "compute_rest.js");
  await run(BUN_BIN, [BUN_BUILD, "lean-compute", out, root], root);
  return out;
}

/** Whether a split module is the gce one (whose SDK the build trims). */
const isGce = (m: SplitModule) => m.source === CLOUD_MODULES.gce.source;
const WORKER_EMBED = "backends/udp/embedded_worker.ts";

/**
 * A module the one-file build replaces with a stand-in that loads the
 * original from a file of its own (`weft.js` only: the binary's
 * `--splitting` already loads dynamically imported code lazily).
 */
export interface BundleSwap {
  /** The stand-in's source, relative to the root. */
  readonly standIn: string;
  /** The original, built as a split file. */
  readonly module: SplitModule;
}

/** `@kubernetes/client-node` (the kubeconfig fallback) is most of weft.js otherwise. */
export const BUNDLE_SWAPS: readonly BundleSwap[] = [
  { standIn: "lease/kube/client_node_split.ts", module: KUBE_CLIENT_MODULE },
];

/** A build step failed: the tool's command line and its output. */
export class BuildError extends Error {
  override name = "BuildError";
}

/** Options shared by the build functions. */
export interface BuildOptions {
  /** Output directory (default `<root>/dist`). */
  readonly outDir?: string;
  /** Repository root (default {@link ROOT}). */
  readonly root?: string;
  /** The program's entry, relative to the root (default `mod.ts`). */
  readonly entry?: string;
  /** Split modules to build as files of their own (default: the cloud modules whose source exists). */
  readonly splitModules?: readonly SplitModule[];
  /** Modules to swap for stand-ins in the one-file build (default {@link BUNDLE_SWAPS} for `mod.ts`, else none). */
  readonly swaps?: readonly BundleSwap[];
  /** Progress lines (default: none). */
  readonly log?: (line: string) => void;
}

/** What a build wrote. */
export interface BuildResult {
  /** The main output (`weft.js` or the binary). */
  readonly main: string;
  /** The split modules' files (`weft.js` form only; the binary holds them). */
  readonly splitFiles: readonly string[];
  /** Milliseconds the build took. */
  readonly ms: number;
}

function run(cmd: string, args: readonly string[], cwd: string, env?: Record<string, string>) {
  return new Promise<void>((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd,
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, NO_COLOR: "1", ...env },
    });
    let output = "";
    const keep = (c: Uint8Array) => (output = (output + new TextDecoder().decode(c)).slice(-8000));
    child.stdout.on("data", keep);
    child.stderr.on("data", keep);
    child.on("error", (e) => reject(new BuildError(`cannot run ${cmd}: ${e.message}`)));
    child.on("close", (code) => {
      if (code === 0) resolve();
      else {
        reject(
          new BuildError(
            `${path.basename(cmd)} ${args.join(" ")} exited with ${code}:\n${output.trim()}`,
          ),
        );
      }
    });
  });
}

/**
 * Optional packages that bundled npm code `require()`s inside try/catch
 * (`ws`: bufferutil, utf-8-validate; `debug`: supports-color). `deno bundle`
 * leaves such a require in place when the package is not installed. Deno
 * fails it and the code falls back, but Bun, finding no node_modules beside
 * the file, auto-installs it from the npm registry: on a host without DNS
 * the agent hangs there. The build turns these calls into a throw.
 */
export const OPTIONAL_REQUIRES: readonly string[] = [
  "bufferutil",
  "utf-8-validate",
  "supports-color",
];

/**
 * Replace `require("<optional package>")` calls of a `deno bundle` output
 * with an immediate throw (what the require does where the package is
 * absent), and list any other package a `require()` still names.
 *
 * @param js The bundle's text.
 * @param optional Package names to replace (default {@link OPTIONAL_REQUIRES}).
 * @returns The new text, the packages replaced, and bare requires left.
 * @example
 * ```ts
 * const r = neutralizeOptionalRequires('var w=__deno_internal_createRequire(import.meta.url);try{w("bufferutil")}catch{}');
 * // r.replaced: ["bufferutil"]
 * ```
 */
export function neutralizeOptionalRequires(
  js: string,
  optional: readonly string[] = OPTIONAL_REQUIRES,
): { text: string; replaced: string[]; remaining: string[] } {
  const m = /var ([A-Za-z_$][\w$]*)=__deno_internal_createRequire\(import\.meta\.url\)/.exec(js);
  if (!m) return { text: js, replaced: [], remaining: [] };
  const fn = m[1].replace(/\$/g, "\\$");
  const replaced = new Set<string>();
  const remaining = new Set<string>();
  const call = new RegExp(`(?<![\\w$.])${fn}\\("([^"]+)"\\)`, "g");
  const text = js.replace(call, (whole, spec: string) => {
    if (optional.includes(spec)) {
      replaced.add(spec);
      return `(()=>{throw Object.assign(new Error("Cannot find module '${spec}': not bundled"),{code:"MODULE_NOT_FOUND"})})()`;
    }
    if (!spec.startsWith("node:") && /^(@[a-z0-9-]+\/)?[a-z0-9][a-z0-9._-]*(\/.*)?$/.test(spec)) {
      remaining.add(spec);
    }
    return whole;
  });
  return { text, replaced: [...replaced], remaining: [...remaining] };
}

function finishBundle(file: string, log: (line: string) => void): void {
  const r = neutralizeOptionalRequires(fs.readFileSync(file, "utf8"));
  if (r.replaced.length) fs.writeFileSync(file, r.text);
  if (r.remaining.length) {
    log(
      `warning: ${path.basename(file)} still require()s ${
        r.remaining.join(", ")
      }: Bun would try to install it at run time; add it to OPTIONAL_REQUIRES if the code tolerates its absence`,
    );
  }
}

/** The cloud modules whose source exists under `root`. */
export function presentCloudModules(root: string = ROOT): SplitModule[] {
  return Object.values(CLOUD_MODULES).filter((m) => fs.existsSync(path.join(root, m.source)));
}

function bundleArgs(entry: string, outFile: string, importMap?: string): string[] {
  return [
    "bundle",
    "--quiet",
    "--platform",
    "deno",
    "--minify",
    ...(importMap ? ["--import-map", importMap] : []),
    "-o",
    outFile,
    entry,
  ];
}

/**
 * Build `weft.js` (or another entry's one file) and its split modules' files.
 *
 * @param options Output directory, entry, split modules.
 * @returns The files written.
 * @throws {BuildError} When `deno bundle` fails.
 * @example
 * ```ts
 * const { main } = await buildJs({ outDir: "dist" }); // dist/weft.js
 * ```
 */
export async function buildJs(options: BuildOptions = {}): Promise<BuildResult> {
  const t0 = performance.now();
  const root = options.root ?? ROOT;
  const outDir = path.resolve(options.outDir ?? path.join(root, "dist"));
  const entry = options.entry ?? "mod.ts";
  const mainName = entry === "mod.ts" ? "weft.js" : `${path.basename(entry, ".ts")}.js`;
  const splitModules = options.splitModules ?? presentCloudModules(root);
  const swaps = options.swaps ?? (entry === "mod.ts" ? BUNDLE_SWAPS : []);
  const log = options.log ?? (() => {});
  fs.mkdirSync(outDir, { recursive: true });
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "weft-build-"));
  try {
    log(`bundling the udp Worker (${WORKER_SOURCE})`);
    const workerJs = path.join(work, "worker.js");
    await run(DENO_BIN, bundleArgs(WORKER_SOURCE, workerJs), root);
    const embed = path.join(work, "embedded_worker.ts");
    fs.writeFileSync(
      embed,
      `export const EMBEDDED_WORKER_SOURCE: string | undefined = ${
        JSON.stringify(fs.readFileSync(workerJs, "utf8"))
      };\n`,
    );
    const url = (p: string) => pathToFileURL(path.resolve(root, p)).href;
    const imports: Record<string, string> = { [url(WORKER_EMBED)]: pathToFileURL(embed).href };
    for (const swap of swaps) imports[url(swap.module.source)] = url(swap.standIn);
    const importMap = path.join(work, "import_map.json");
    fs.writeFileSync(importMap, JSON.stringify({ imports }));
    const main = path.join(outDir, mainName);
    log(`bundling ${entry} → ${main}`);
    await run(DENO_BIN, bundleArgs(entry, main, importMap), root);
    finishBundle(main, log);
    const splitFiles: string[] = [];
    for (const m of [...splitModules, ...swaps.map((s) => s.module)]) {
      const file = path.join(outDir, m.file);
      let map: string | undefined;
      if (isGce(m)) {
        log("building the lean Compute client (REST, pruned protos)");
        const lean = pathToFileURL(await buildLeanCompute(root, work)).href;
        map = path.join(work, "gce_import_map.json");
        fs.writeFileSync(
          map,
          JSON.stringify({ imports: Object.fromEntries(COMPUTE_SPECIFIERS.map((s) => [s, lean])) }),
        );
      }
      log(`bundling ${m.source} → ${file}`);
      await run(DENO_BIN, bundleArgs(m.source, file, map), root);
      finishBundle(file, log);
      splitFiles.push(file);
    }
    return { main, splitFiles, ms: performance.now() - t0 };
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

/**
 * Build the self-contained binary with `bun build --compile`.
 *
 * Flags: `--minify --format=esm` (fastest start that keeps top-level
 * await), `--splitting` (the Worker and split modules share weft's modules),
 * `--root` (entry points keep their paths from the repository root, where
 * `thread.ts` and `loader.ts` look for them), and no autoloading of `.env`
 * or `bunfig.toml` from the working directory of a system service, and
 * Bun's `--smol` (a smaller heap collected more often: with it, and
 * `BUN_JSC_useDFGJIT=0` in its environment, an agent of 5000 peers stays
 * under 100 MB; see the README's Scale section). Run
 * through Bun's API (`scripts/bun_build.ts compile`) so that the gce entry
 * point gets the lean Compute client (no gRPC, pruned protos).
 *
 * @param options Output directory, entry, split modules.
 * @returns The binary's path.
 * @throws {BuildError} When `bun build` fails.
 */
export async function buildBinary(options: BuildOptions = {}): Promise<BuildResult> {
  const t0 = performance.now();
  const root = options.root ?? ROOT;
  const outDir = path.resolve(options.outDir ?? path.join(root, "dist"));
  const entry = options.entry ?? "mod.ts";
  const main = path.join(outDir, entry === "mod.ts" ? "weft" : path.basename(entry, ".ts"));
  const splitModules = options.splitModules ?? presentCloudModules(root);
  fs.mkdirSync(outDir, { recursive: true });
  const log = options.log ?? (() => {});
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "weft-build-"));
  try {
    let leanCompute: string | undefined;
    if (splitModules.some(isGce)) {
      log("building the lean Compute client (REST, pruned protos)");
      leanCompute = await buildLeanCompute(root, work);
    }
    log(`compiling ${entry} → ${main} (bun)`);
    // the API form of `bun build --compile --minify --format=esm --splitting --root .
    // --no-compile-autoload-dotenv --no-compile-autoload-bunfig --compile-exec-argv=--smol`,
    // plus the lean Compute client
    await run(BUN_BIN, [
      BUN_BUILD,
      "compile",
      JSON.stringify({
        root,
        entrypoints: [entry, WORKER_SOURCE, ...splitModules.map((m) => m.source)],
        outfile: main,
        leanCompute,
      }),
    ], root);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
  return { main, splitFiles: [], ms: performance.now() - t0 };
}

/**
 * Build the binary with `deno compile`. It needs Deno's `denort` runtime:
 * downloaded from dl.deno.land, or the file `DENORT_BIN` names (a denort of
 * the same Deno version). Machines without either cannot run this.
 *
 * @param options Output directory, entry, split modules.
 * @returns The binary's path.
 * @throws {BuildError} When `deno compile` fails, with the hint above.
 */
export async function compileDeno(options: BuildOptions = {}): Promise<BuildResult> {
  const t0 = performance.now();
  const root = options.root ?? ROOT;
  const outDir = path.resolve(options.outDir ?? path.join(root, "dist"));
  const main = path.join(outDir, "weft");
  const splitModules = options.splitModules ?? presentCloudModules(root);
  fs.mkdirSync(outDir, { recursive: true });
  try {
    await run(DENO_BIN, [
      "compile",
      "-A",
      "--include",
      WORKER_SOURCE,
      ...splitModules.flatMap((m) => ["--include", m.source]),
      "-o",
      main,
      options.entry ?? "mod.ts",
    ], root);
  } catch (e) {
    throw new BuildError(
      `${
        (e as Error).message
      }\ndeno compile needs Deno's denort runtime: it downloads it from dl.deno.land, or set DENORT_BIN=/path/to/denort (the same version as ${DENO_BIN}); without either, build the binary with Bun: deno task compile:bun`,
      { cause: e },
    );
  }
  return { main, splitFiles: [], ms: performance.now() - t0 };
}

if (import.meta.main) {
  const args = process.argv.slice(2);
  const outIndex = args.indexOf("--out");
  const outDir = outIndex >= 0 ? args.splice(outIndex, 2)[1] : undefined;
  const what = args[0] ?? "js";
  const log = (l: string) => console.error(`build: ${l}`);
  const steps: Record<string, () => Promise<BuildResult>> = {
    js: () => buildJs({ outDir, log }),
    bun: () => buildBinary({ outDir, log }),
    deno: () => compileDeno({ outDir, log }),
  };
  const chosen = what === "all" ? ["js", "bun"] : [what];
  for (const name of chosen) {
    if (!steps[name]) {
      console.error(`build: unknown target ${JSON.stringify(name)}: use js, bun, deno or all`);
      process.exit(2);
    }
    try {
      const r = await steps[name]();
      for (const f of [r.main, ...r.splitFiles]) {
        console.log(`${f} ${(fs.statSync(f).size / 1e6).toFixed(1)} MB`);
      }
      log(`${name} done in ${(r.ms / 1000).toFixed(1)} s`);
    } catch (e) {
      console.error(`build: ${(e as Error).message}`);
      process.exit(1);
    }
  }
}
