import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "../../..");

function productFiles(dir: string, out: string[] = []): string[] {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    if (e.name === "node_modules" || e.name.startsWith(".") || e.name === "dist") continue;
    const p = path.join(dir, e.name);
    if (e.isDirectory()) productFiles(p, out);
    else if (e.name.endsWith(".ts") && !e.name.endsWith("_test.ts")) {
      out.push(path.relative(root, p));
    }
  }
  return out;
}

Deno.test("only backends/cloud/gce/sdk.ts imports @google-cloud/compute, and never its root", () => {
  const importers: string[] = [];
  for (const file of productFiles(root)) {
    if (file.startsWith("testing/") || file.startsWith("test/")) continue;
    const text = fs.readFileSync(path.join(root, file), "utf8");
    for (const m of text.matchAll(/(?:from|import\()\s*["'](@google-cloud\/compute[^"']*)["']/g)) {
      importers.push(`${file}: ${m[1]}`);
    }
  }
  assert.deepEqual(importers, [
    "backends/cloud/gce/sdk.ts: @google-cloud/compute/build/src/v1/routes_client.js",
    "backends/cloud/gce/sdk.ts: @google-cloud/compute/build/src/v1/global_operations_client.js",
  ]);
});

Deno.test("provider.ts loads sdk.ts lazily (a dynamic import), so other backends never load the SDK", () => {
  const text = fs.readFileSync(path.join(root, "backends/cloud/gce/provider.ts"), "utf8");
  assert.match(text, /import\("\.\/sdk\.ts"\)/);
  assert.doesNotMatch(
    text,
    /^import (?!type )[^;]*from "\.\/sdk\.ts"/m,
    "only type imports of sdk.ts are static",
  );
});
