/**
 * The test command (`deno task test`): static checks (fmt, lint, type
 * check), then every `*_test.ts` under Deno, then, for CI, the ignored tests
 * with their reasons, the failures and why each failed (its message, cut to
 * 30 lines: CI shows only the end of the run), and a last line
 * `N passed, N failed, N ignored`.
 *
 * What N counts: each static check once, and each test and each test step
 * once, as `deno test` reports them (its summary line
 * `ok | 557 passed (35 steps) | 0 failed | 0 ignored (13 steps)` counts 592
 * passed and 13 ignored). A test whose step fails is itself failed, so a
 * failing step counts twice (the step and its test), as in deno's summary;
 * a file that throws outside any test counts as one failure. Besides, the
 * run fails, one count each, when deno exits non-zero without reporting a
 * failure, prints no summary, or its JUnit report disagrees with its
 * summary.
 *
 * Ignored tests: a test or step that does not apply is registered with
 * `testUnless`/`stepUnless` (testing/ignorable.ts), which puts the reason in
 * its name after " — ignored: ". One ignored without a reason in its name
 * is counted as failed ("ignored without a reason: <name>"), not ignored.
 *
 * Extra arguments go to `deno test` and skip the static checks, e.g.
 * `deno task test --filter vxlan` (tests filtered out are not counted).
 *
 * Tests that need the kernel (network namespaces, iptables) run as root and
 * clean up after themselves; each sweeps leftovers with its own prefix first.
 *
 * @module
 */

import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import process from "node:process";
import { execPath } from "../core/runtime.ts";
import {
  failureReasons,
  ignoredCases,
  parseDenoFailures,
  parseDenoSummary,
  parseJUnit,
  stripAnsi,
  type TestCase,
  testFiles,
  withTestFiles,
} from "./run_report.ts";

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

/** Run deno; `output` is stdout and stderr as they came, `stdout` alone. */
function run(
  args: string[],
  tee = true,
): Promise<{ code: number; output: string; stdout: string }> {
  return new Promise((resolve) => {
    const child = spawn(deno, args, { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    let stdout = "";
    const onData = (stream: NodeJS.WriteStream) => {
      const decoder = new TextDecoder();
      return (chunk: Uint8Array) => {
        const text = decoder.decode(chunk, { stream: true });
        output += text;
        if (stream === process.stdout) stdout += text;
        if (tee) stream.write(text);
      };
    };
    child.stdout.on("data", onData(process.stdout));
    child.stderr.on("data", onData(process.stderr));
    child.on("close", (code) => resolve({ code: code ?? 1, output, stdout }));
  });
}

let passed = 0;
let failed = 0;
let ignored = 0;
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

const junitDir = fs.mkdtempSync(path.join(os.tmpdir(), "weft-test-"));
const junitPath = path.join(junitDir, "junit.xml");
const r = await run(["test", "-A", `--junit-path=${junitPath}`, ...extra, ...findTests(root)]);
let cases: TestCase[] = [];
try {
  cases = withTestFiles(parseJUnit(fs.readFileSync(junitPath, "utf8")), testFiles(r.stdout));
} catch (e) {
  // no report: deno stopped before the tests (then it has no summary either)
  if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
}
fs.rmSync(junitDir, { recursive: true, force: true });

const summary = parseDenoSummary(r.output);
if (summary) {
  passed += summary.passed + summary.passedSteps;
  failed += summary.failed + summary.failedSteps;
  ignored += summary.ignored + summary.ignoredSteps;
  const count = (o: TestCase["outcome"]) => cases.filter((c) => c.outcome === o).length;
  const mismatch = [
    count("passed") !== summary.passed + summary.passedSteps ? "passed" : "",
    count("ignored") !== summary.ignored + summary.ignoredSteps ? "ignored" : "",
    count("failed") > summary.failed + summary.failedSteps ? "failed" : "",
  ].filter(Boolean);
  if (mismatch.length) {
    failed++;
    failures.push(
      `deno's summary and its JUnit report disagree on ${mismatch.join(", ")}: summary ${
        JSON.stringify(summary)
      }, report ${count("passed")} passed, ${count("failed")} failed, ${
        count("ignored")
      } ignored (fix test/run_report.ts for this deno version)`,
    );
  }
} else {
  failed++;
  failures.push(`deno test printed no summary (exit code ${r.code}): it crashed or did not start`);
}
if (r.code !== 0 && summary && summary.failed + summary.failedSteps === 0) {
  failed++;
  failures.push(`deno test exited with ${r.code} without reporting a failed test`);
}
failures.push(...parseDenoFailures(r.output));

const skipped = ignoredCases(cases);
for (const c of skipped) {
  if (c.reason !== null) continue;
  ignored--;
  failed++;
  failures.push(`ignored without a reason: ${c.file}: ${c.name}`);
}

console.log(`\ntest run took ${((Date.now() - started) / 1000).toFixed(0)} s`);
const withReason = skipped.filter((c) => c.reason !== null);
if (withReason.length) {
  console.log(`ignored (${withReason.length}):`);
  for (const c of withReason) console.log(`  ${c.file}: ${c.name} — ${c.reason}`);
}
if (failures.length) {
  console.log(`failed:\n  ${[...new Set(failures.map(stripAnsi))].join("\n  ")}`);
}
const reasons = failureReasons(cases);
if (reasons.length) console.log(`why:\n  ${reasons.join("\n  ")}`);
console.log(`${passed} passed, ${failed} failed, ${ignored} ignored`);
process.exit(failed ? 1 : 0);
