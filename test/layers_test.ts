/**
 * The shape of the house (DESIGN.md "Layout"): every folder of product code
 * imports only folders below it, `lease/` and `datapath/` never import each
 * other, nothing imports test code, and only the runtime shim names the
 * runtime. Read from the source text, so a new file is checked as soon as it
 * exists.
 *
 * @module
 */

import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");

/** Rank of each top-level folder of product code; a file may import lower ranks only. */
const RANK: Record<string, number> = {
  core: 0,
  lease: 1,
  datapath: 1,
  backends: 2,
  agent: 3,
  api: 4,
  cli: 5,
  "mod.ts": 6,
  // examples of third-party code (backend modules): above everything, imported by nothing
  examples: 7,
};
/** Test code and tooling (scripts/: the build): never imported by product code. */
const TEST_FOLDERS = new Set(["test", "testing", "scripts"]);

function walk(dir: string, out: string[] = []): string[] {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    if (e.name === "node_modules" || e.name.startsWith(".") || e.name === "dist") continue;
    const p = path.join(dir, e.name);
    if (e.isDirectory()) walk(p, out);
    else if (e.name.endsWith(".ts")) out.push(path.relative(root, p));
  }
  return out;
}

const isTestFile = (file: string) =>
  file.endsWith("_test.ts") || TEST_FOLDERS.has(file.split("/")[0]);
const topOf = (file: string) => file.split("/")[0];

/** Relative import specifiers of a file: static, re-exports, dynamic, worker URLs. */
export function importsOf(text: string): string[] {
  const out: string[] = [];
  const re =
    /(?:^|[\s;])(?:import|export)\s[^"';]*?from\s*["'](\.[^"']+)["']|import\(\s*["'](\.[^"']+)["']\s*\)|new URL\(\s*["'](\.[^"']+\.ts)["']\s*,\s*import\.meta\.url/gm;
  for (const m of text.matchAll(re)) out.push(m[1] ?? m[2] ?? m[3]);
  return out;
}

interface Edge {
  readonly from: string;
  readonly to: string;
}

function productEdges(): Edge[] {
  const edges: Edge[] = [];
  for (const file of walk(root)) {
    if (isTestFile(file)) continue;
    const text = fs.readFileSync(path.join(root, file), "utf8");
    for (const spec of importsOf(text)) {
      const to = path.normalize(path.join(path.dirname(file), spec));
      edges.push({ from: file, to });
    }
  }
  return edges;
}

Deno.test("importsOf() finds static, type-only, re-export, dynamic and worker-URL imports", () => {
  const text = [
    'import { a } from "../core/ip.ts";',
    'import type { B } from "./b.ts";',
    'export { c } from "./c.ts";',
    'const m = await import("../datapath/tun.ts");',
    'new URL("./worker.ts", import.meta.url)',
    'import * as fs from "node:fs";',
  ].join("\n");
  assert.deepEqual(importsOf(text), [
    "../core/ip.ts",
    "./b.ts",
    "./c.ts",
    "../datapath/tun.ts",
    "./worker.ts",
  ]);
});

Deno.test("no product file imports a folder above its own layer", () => {
  const bad: string[] = [];
  for (const { from, to } of productEdges()) {
    const a = topOf(from), b = topOf(to);
    if (a === b) continue;
    const ra = RANK[a], rb = RANK[b];
    if (ra === undefined) {
      bad.push(`${from}: folder ${a}/ has no layer; add it to DESIGN.md and RANK`);
    } else if (rb === undefined) {
      if (!TEST_FOLDERS.has(b)) bad.push(`${from} imports ${to}, which is in no layer`);
    } else if (rb >= ra) {
      bad.push(`${from} (layer ${ra}) imports ${to} (layer ${rb})`);
    }
  }
  assert.deepEqual(bad, [], `imports that run up (or across) the layers:\n  ${bad.join("\n  ")}`);
});

Deno.test("product code imports no test code or tooling (test/, testing/, scripts/, *_test.ts)", () => {
  const bad = productEdges()
    .filter(({ to }) => isTestFile(to))
    .map(({ from, to }) => `${from} imports ${to}`);
  assert.deepEqual(bad, [], bad.join("\n"));
});

Deno.test("no cycle between folders (sub-folders included)", () => {
  const graph = new Map<string, Set<string>>();
  for (const { from, to } of productEdges()) {
    const a = path.dirname(from), b = path.dirname(to);
    if (a === b) continue;
    // a folder may use its own sub-folders and its parent's files: that is one unit
    if (b.startsWith(a + "/")) continue;
    if (!graph.has(a)) graph.set(a, new Set());
    graph.get(a)!.add(b);
  }
  const cycles: string[] = [];
  const state = new Map<string, "open" | "done">();
  const stack: string[] = [];
  const visit = (n: string) => {
    state.set(n, "open");
    stack.push(n);
    for (const m of graph.get(n) ?? []) {
      if (state.get(m) === "open") cycles.push([...stack.slice(stack.indexOf(m)), m].join(" → "));
      else if (!state.has(m)) visit(m);
    }
    stack.pop();
    state.set(n, "done");
  };
  for (const n of graph.keys()) if (!state.has(n)) visit(n);
  assert.deepEqual(cycles, [], `folder cycles:\n  ${cycles.join("\n  ")}`);
});

Deno.test("only the runtime shim names Deno or Bun APIs", () => {
  const bad: string[] = [];
  for (const file of walk(root)) {
    if (isTestFile(file) || file === "core/runtime.ts") continue;
    const code = fs.readFileSync(path.join(root, file), "utf8")
      .replace(/\/\*[\s\S]*?\*\//g, "")
      .replace(/\/\/.*$/gm, "");
    if (/\b(Deno|Bun)\.[a-zA-Z]/.test(code) || /globalThis as any/.test(code)) bad.push(file);
  }
  assert.deepEqual(bad, [], `runtime APIs outside core/runtime.ts: ${bad.join(", ")}`);
});
