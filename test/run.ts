/**
 * The test command (`deno task test`): static checks (fmt, lint, type
 * check), then every `*_test.ts` under Deno, then a final line
 * `N passed, N failed` for CI. Extra arguments go to `deno test`
 * (e.g. `deno task test --filter vxlan`), and skip the static checks.
 *
 * Tests that need the kernel (network namespaces, iptables) run as root and
 * clean up after themselves; each sweeps leftovers with its own prefix first.
 *
 * @module
 */

import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import process from "node:process";
import { execPath } from "../core/runtime.ts";

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");
const deno = execPath();
const extra = process.argv.slice(2);

function findTests(dir: string, out: string[] = []): string[] {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    if (e.name === "node_modules" || e.name.startsWith(".")) continue;
    const p = path.join(dir, e.name);
    if (e.isDirectory()) findTests(p, out);
    else if (e.name.endsWith("_test.ts")) out.push(path.relative(root, p));
  }
  return out.sort();
}

function run(args: string[], tee = true): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(deno, args, { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    const onData = (stream: NodeJS.WriteStream) => (chunk: Uint8Array) => {
      const text = new TextDecoder().decode(chunk);
      output += text;
      if (tee) stream.write(text);
    };
    child.stdout.on("data", onData(process.stdout));
    child.stderr.on("data", onData(process.stderr));
    child.on("close", (code) => resolve({ code: code ?? 1, output }));
  });
}

let passed = 0;
let failed = 0;
const failures: string[] = [];
const started = Date.now();

if (extra.length === 0) {
  for (
    const [name, args] of [
      ["deno fmt --check", ["fmt", "--check"]],
      ["deno lint", ["lint"]],
      ["deno check", ["check", "mod.ts", "**/*.ts"]],
    ] as const
  ) {
    const r = await run([...args], false);
    if (r.code === 0) {
      passed++;
      console.log(`static: ${name} ... ok`);
    } else {
      failed++;
      failures.push(name);
      console.log(`static: ${name} ... FAILED\n${r.output.slice(-4000)}`);
    }
  }
}

const files = findTests(root);
const r = await run(["test", "-A", ...extra, ...files]);
// deno's summary: "ok | 53 passed (3 steps) | 0 failed ..." or "FAILED | 50 passed | 3 failed ..."
// deno-lint-ignore no-control-regex
const clean = r.output.replace(/\x1b\[[0-9;]*m/g, "");
const summary = [...clean.matchAll(/^(?:ok|FAILED) \| (\d+) passed.*?\| (\d+) failed/gm)].pop();
if (summary) {
  passed += Number(summary[1]);
  failed += Number(summary[2]);
} else {
  failed++;
  failures.push("deno test produced no summary (crashed?)");
}
if (r.code !== 0 && summary && Number(summary[2]) === 0) {
  failed++;
  failures.push(`deno test exited with ${r.code}`);
}
for (const m of clean.matchAll(/^(.+) => .+$/gm)) failures.push(m[1]);
console.log(`\ntest run took ${((Date.now() - started) / 1000).toFixed(0)} s`);
if (failures.length) console.log(`failed:\n  ${[...new Set(failures)].join("\n  ")}`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
