/**
 * The rules test/ keeps (see STYLE.md), read from the source so a new file
 * is checked as soon as it exists:
 *
 * - no fixed sleep: wait for the condition the sleep hoped for
 *   (`waitFor` of testing/wait.ts), or, where the passing time is the
 *   scenario, say so (`hold(why, ms)`; in a script run by a child process,
 *   a `// scenario:` comment on the line);
 * - no silent skip: a test or step that does not apply is registered with
 *   `testUnless`/`stepUnless` (testing/ignorable.ts), which reports why.
 *
 * @module
 */

import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";

const TEST_DIR = path.dirname(new URL(import.meta.url).pathname);
const SELF = path.basename(new URL(import.meta.url).pathname);

function sources(dir: string, out: string[] = []): string[] {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) sources(p, out);
    else if (e.name.endsWith(".ts") && p !== path.join(TEST_DIR, SELF)) out.push(p);
  }
  return out.sort();
}

/**
 * Lines of `text` matching `re`, as `file:line: text`, unless the line holds
 * `allow` (`// scenario:` for a pause that is the scenario, `// fixture:`
 * for a deliberately bad test written for the runner's own tests).
 */
export function offendingLines(
  file: string,
  text: string,
  re: RegExp,
  allow: string,
): string[] {
  return text.split("\n").flatMap((line, i) =>
    re.test(line) && !line.includes(allow) ? [`${file}:${i + 1}: ${line.trim()}`] : []
  );
}

/** A promise that only waits: `setTimeout(r, …)`, a `sleep` helper, `sleep` run as a process. */
export const FIXED_SLEEP =
  /setTimeout\(\s*(?:r|res|resolve)\s*,|\bconst sleep\b|\bsleep\(\s*\d|spawnSync\(\s*["']sleep["']/;

/** A test or step option that skips it without a reason in its name. */
export const SILENT_IGNORE = /\bignore\s*:/;

Deno.test("the patterns catch fixed sleeps and silent ignores, and let named pauses through", () => {
  const hits = (re: RegExp, line: string) =>
    offendingLines("x.ts", line, re, re === FIXED_SLEEP ? "// scenario:" : "// fixture:").length;
  for (
    const line of [
      "await new Promise((r) => setTimeout(r, 200));",
      "await new Promise((resolve) => setTimeout(resolve, ms));",
      "const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));",
      "await sleep(300); // the agent stays down a while",
      'spawnSync("sleep", ["0.1"]);',
    ]
  ) assert.equal(hits(FIXED_SLEEP, line), 1, line);
  for (
    const line of [
      "await hold(`no agent on host ${host}`, AGENT_DOWN_MS);",
      "await new Promise((r) => setTimeout(r, gapMs)); // scenario: leases arrive one by one",
      "const t = setTimeout(() => child.kill('SIGKILL'), stopTimeoutMs);",
      'spawn("ip", ["netns", "exec", ns, "sleep", "300"], { stdio: "ignore" });',
    ]
  ) assert.equal(hits(FIXED_SLEEP, line) + hits(SILENT_IGNORE, line), 0, line);
  assert.equal(hits(SILENT_IGNORE, "  ignore: !canRun,"), 1);
  assert.equal(hits(SILENT_IGNORE, "  ignore: true, // scenario: no"), 1, "wrong marker");
  assert.equal(hits(SILENT_IGNORE, "Deno.test({ name, ignore: true, fn })"), 1);
});

Deno.test("test/ has no fixed sleep: it waits for a condition or names the scenario's pause", () => {
  const bad = sources(TEST_DIR).flatMap((f) =>
    offendingLines(
      path.relative(TEST_DIR, f),
      fs.readFileSync(f, "utf8"),
      FIXED_SLEEP,
      "// scenario:",
    )
  );
  assert.deepEqual(
    bad,
    [],
    `fixed sleeps (use waitFor/hold from testing/wait.ts):\n  ${bad.join("\n  ")}`,
  );
});

Deno.test("test/ skips no test silently: testUnless/stepUnless give the reason", () => {
  const bad = sources(TEST_DIR).flatMap((f) =>
    offendingLines(
      path.relative(TEST_DIR, f),
      fs.readFileSync(f, "utf8"),
      SILENT_IGNORE,
      "// fixture:",
    )
  );
  assert.deepEqual(
    bad,
    [],
    `tests ignored without a reason (use testUnless/stepUnless from testing/ignorable.ts):\n  ${
      bad.join("\n  ")
    }`,
  );
});
