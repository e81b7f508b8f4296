/**
 * An on-prem host must never load the AWS SDK: only files in
 * `backends/cloud/aws/` may name `@aws-sdk/…`, and they load it with
 * `await import(…)` (type-only imports are erased). Read from the source,
 * so a new file is checked as soon as it exists.
 */

import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "../../..");
const AWS_DIR = "backends/cloud/aws/";

function productFiles(dir = root, out: string[] = []): string[] {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    if (e.name === "node_modules" || e.name.startsWith(".") || e.name === "dist") continue;
    const p = path.join(dir, e.name);
    const rel = path.relative(root, p);
    if (e.isDirectory()) {
      if (rel !== "test" && rel !== "testing") productFiles(p, out);
    } else if (e.name.endsWith(".ts") && !e.name.endsWith("_test.ts")) out.push(rel);
  }
  return out;
}

/** Every way a file can name the SDK: static, re-export, side-effect, dynamic. */
export function sdkImports(text: string): { kind: "static" | "type" | "dynamic"; line: string }[] {
  const out: { kind: "static" | "type" | "dynamic"; line: string }[] = [];
  const re =
    /^\s*(import|export)\s+(type\s+)?[^"';]*?\s*from\s*["']@aws-sdk\/[^"']+["']|^\s*import\s*["']@aws-sdk\/[^"']+["']|import\(\s*["']@aws-sdk\/[^"']+["']\s*\)/gm;
  for (const m of text.matchAll(re)) {
    const kind = m[0].includes("import(") ? "dynamic" : m[2] ? "type" : "static";
    out.push({ kind, line: m[0].trim() });
  }
  return out;
}

Deno.test("sdkImports() tells static, type-only and dynamic imports of the SDK apart", () => {
  const text = [
    'import { EC2Client } from "@aws-sdk/client-ec2";',
    'import type * as Ec2 from "@aws-sdk/client-ec2";',
    'export { X } from "@aws-sdk/client-ec2";',
    'import "@aws-sdk/client-ec2";',
    'const sdk = await import("@aws-sdk/client-ec2");',
    'import { x } from "valibot";',
  ].join("\n");
  assert.deepEqual(sdkImports(text).map((i) => i.kind), [
    "static",
    "type",
    "static",
    "static",
    "dynamic",
  ]);
});

Deno.test("only backends/cloud/aws/ names the AWS SDK, and only through a dynamic import", () => {
  const bad: string[] = [];
  let dynamic = 0;
  for (const file of productFiles()) {
    const found = sdkImports(fs.readFileSync(path.join(root, file), "utf8"));
    for (const { kind, line } of found) {
      if (!file.startsWith(AWS_DIR)) bad.push(`${file}: ${line} (outside ${AWS_DIR})`);
      else if (kind === "static") bad.push(`${file}: ${line} (use await import())`);
      else if (kind === "dynamic") dynamic++;
    }
  }
  assert.deepEqual(bad, [], `the AWS SDK would load on every host:\n  ${bad.join("\n  ")}`);
  assert.ok(dynamic >= 1, "the provider loads the SDK somewhere: this test lost track of it");
});
