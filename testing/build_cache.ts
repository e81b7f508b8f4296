/**
 * The built forms of weft for tests and benchmarks, built once per input:
 * the output of `scripts/build.ts` is kept under
 * `$TMPDIR/weft-build-cache/<hash>/<kind>/`, where the hash covers every
 * product source file, the build script, the dependency lock, the probe and
 * the runtimes. A test run (or several developers' runs of the same tree)
 * builds each kind once; a lock file keeps two processes from building the
 * same kind at once. Entries older than six hours of other trees are removed.
 *
 * @module
 */

import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import process from "node:process";
import { withLockFile } from "../core/files.ts";
import {
  buildBinary,
  buildJs,
  type BuildResult,
  BUN_BIN,
  DENO_BIN,
  presentCloudModules,
  ROOT,
} from "../scripts/build.ts";
import { PROBE_MODULE } from "./split_probe/main.ts";

/** What can be built. */
export type BuildKind = "js" | "binary" | "probe-js" | "probe-binary";

const PRODUCT_DIRS = ["core", "lease", "datapath", "backends", "agent", "api", "cli"];
const EXTRA_FILES = [
  "mod.ts",
  "deno.json",
  "package-lock.json",
  "scripts/build.ts",
  "scripts/bun_build.ts",
  "testing/build_cache.ts",
];
const MAX_AGE_MS = 6 * 3600_000;

function walk(dir: string, out: string[]): void {
  if (!fs.existsSync(dir)) return;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) walk(p, out);
    else if (e.name.endsWith(".ts") && !e.name.endsWith("_test.ts")) out.push(p);
  }
}

/**
 * The hash of everything a build reads.
 *
 * @param root Repository root.
 * @returns Hex digest (16 characters).
 */
export function buildInputHash(root: string = ROOT): string {
  const files: string[] = [];
  for (const d of [...PRODUCT_DIRS, "testing/split_probe"]) walk(path.join(root, d), files);
  for (const f of EXTRA_FILES) files.push(path.join(root, f));
  const h = createHash("sha256");
  for (const f of files.sort()) {
    h.update(path.relative(root, f));
    h.update("\0");
    h.update(fs.existsSync(f) ? fs.readFileSync(f) : "(missing)");
    h.update("\0");
  }
  for (const bin of [DENO_BIN, BUN_BIN]) {
    const st = fs.statSync(fs.realpathSync(bin));
    h.update(`${bin} ${st.size} ${st.mtimeMs}\0`);
  }
  return h.digest("hex").slice(0, 16);
}

/** Where the cache lives. */
export const CACHE_ROOT: string = path.join(os.tmpdir(), "weft-build-cache");

const memo = new Map<BuildKind, Promise<BuildResult>>();

function build(kind: BuildKind, outDir: string): Promise<BuildResult> {
  const probe = {
    entry: PROBE_MODULE.source.replace("cloud.ts", "main.ts"),
    splitModules: [PROBE_MODULE, ...presentCloudModules()],
  };
  switch (kind) {
    case "js":
      return buildJs({ outDir });
    case "binary":
      return buildBinary({ outDir });
    case "probe-js":
      return buildJs({ outDir, ...probe });
    case "probe-binary":
      return buildBinary({ outDir, ...probe });
  }
}

function sweepOld(current: string): void {
  if (!fs.existsSync(CACHE_ROOT)) return;
  for (const name of fs.readdirSync(CACHE_ROOT)) {
    if (name.startsWith(current)) continue;
    const p = path.join(CACHE_ROOT, name);
    try {
      if (Date.now() - fs.statSync(p).mtimeMs > MAX_AGE_MS) fs.rmSync(p, { recursive: true });
    } catch {
      // another process removed it
    }
  }
}

/**
 * A built form of the current tree, built now or taken from the cache.
 *
 * @param kind `js` (dist/weft.js and its split files), `binary` (the Bun
 *   binary), or the split-module probe in either form.
 * @returns The build's files (inside the cache; do not modify them).
 * @throws {BuildError} When the build fails.
 * @example
 * ```ts
 * const { main } = await built("js"); // …/weft-build-cache/<hash>/js/weft.js
 * ```
 */
export function built(kind: BuildKind): Promise<BuildResult> {
  let p = memo.get(kind);
  if (!p) {
    p = buildCached(kind);
    memo.set(kind, p);
    p.catch(() => memo.delete(kind));
  }
  return p;
}

async function buildCached(kind: BuildKind): Promise<BuildResult> {
  const hash = buildInputHash();
  const dir = path.join(CACHE_ROOT, hash, kind);
  const done = path.join(dir, "result.json");
  fs.mkdirSync(path.dirname(dir), { recursive: true });
  sweepOld(hash);
  return await withLockFile(`${dir}.lock`, async () => {
    if (fs.existsSync(done)) return JSON.parse(fs.readFileSync(done, "utf8")) as BuildResult;
    const tmp = `${dir}.${process.pid}.tmp`;
    fs.rmSync(tmp, { recursive: true, force: true });
    const r = await build(kind, tmp);
    const rel = (f: string) => path.join(dir, path.relative(tmp, f));
    const result: BuildResult = { main: rel(r.main), splitFiles: r.splitFiles.map(rel), ms: r.ms };
    fs.writeFileSync(path.join(tmp, "result.json"), JSON.stringify(result));
    fs.rmSync(dir, { recursive: true, force: true });
    fs.renameSync(tmp, dir);
    return result;
  }, { timeoutMs: 15 * 60_000, staleMs: 15 * 60_000 });
}
