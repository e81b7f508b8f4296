/**
 * Reading what `deno test` reports, for the test command (`test/run.ts`):
 * its summary line (the counts) and its JUnit file (the name and outcome of
 * every test and step). Pure functions over text, so they are tested on
 * real `deno test` output.
 *
 * @module
 */

import { IGNORED_MARK } from "../testing/ignorable.ts";

/** Counts as deno's summary line gives them: tests and steps apart. */
export interface DenoSummary {
  readonly passed: number;
  readonly passedSteps: number;
  readonly failed: number;
  readonly failedSteps: number;
  readonly ignored: number;
  readonly ignoredSteps: number;
}

/** Removes ANSI colour codes. */
export function stripAnsi(text: string): string {
  // deno-lint-ignore no-control-regex
  return text.replace(/\x1b\[[0-9;]*m/g, "");
}

/**
 * The last summary line of `deno test` output, e.g.
 * `ok | 557 passed (35 steps) | 0 failed | 0 ignored (13 steps) (4m2s)`.
 *
 * @param output The test run's output (colours allowed).
 * @returns The counts, or null when there is no summary (deno crashed or
 *   stopped before running tests).
 */
export function parseDenoSummary(output: string): DenoSummary | null {
  const lines = [...stripAnsi(output).matchAll(/^(?:ok|FAILED) \| (.*)$/gm)];
  const line = lines.pop()?.[1];
  if (line === undefined) return null;
  const part = (word: string): [number, number] => {
    const m = line.match(new RegExp(`(\\d+) ${word}(?: \\((\\d+) steps?\\))?`));
    return m ? [Number(m[1]), Number(m[2] ?? 0)] : [0, 0];
  };
  const [passed, passedSteps] = part("passed");
  const [failed, failedSteps] = part("failed");
  const [ignored, ignoredSteps] = part("ignored");
  return { passed, passedSteps, failed, failedSteps, ignored, ignoredSteps };
}

/**
 * The failures deno lists after ` FAILURES `: tests and steps
 * (`name => ./file.ts:1:2`) and files that threw outside a test
 * (`./file.ts (uncaught error)`).
 *
 * @param output The test run's output.
 * @returns Their names, in order, without duplicates.
 */
export function parseDenoFailures(output: string): string[] {
  const clean = stripAnsi(output);
  const at = clean.lastIndexOf(" FAILURES ");
  if (at < 0) return [];
  const out = new Set<string>();
  for (const line of clean.slice(at).split("\n").slice(1)) {
    if (/^(?:ok|FAILED) \|/.test(line)) break;
    const m = line.match(/^(.+?) => \S+$/) ?? line.match(/^(\S.* \(uncaught error\))$/);
    if (m) out.add(m[1]);
  }
  return [...out];
}

/** One test or step from the JUnit report. */
export interface TestCase {
  /** The test file, as deno names it (`./dir/x_test.ts`). */
  readonly file: string;
  /** Its name; a step's is `test > step` (nested: `test > step > substep`). */
  readonly name: string;
  readonly outcome: "passed" | "failed" | "ignored";
  /** A failed case's message (deno's `<failure message>`: the error's first lines). */
  readonly message?: string;
}

function unescapeXml(s: string): string {
  return s.replace(/&(#x[0-9a-f]+|#\d+|lt|gt|amp|quot|apos);/gi, (_, e: string) => {
    if (e[0] === "#") {
      return String.fromCodePoint(e[1] === "x" ? parseInt(e.slice(2), 16) : Number(e.slice(1)));
    }
    return { lt: "<", gt: ">", amp: "&", quot: '"', apos: "'" }[e.toLowerCase()]!;
  });
}

/**
 * Every test and step in a JUnit report written by `deno test --junit-path`.
 * deno writes one `<testcase>` per test and per step; a skipped (ignored)
 * one holds `<skipped/>`, a failed one `<failure>`. Files that threw
 * outside any test do not appear (see {@link parseDenoFailures}).
 *
 * @param xml The report.
 * @returns The cases in report order.
 * @throws {SyntaxError} When a `<testcase>` lacks its name.
 */
export function parseJUnit(xml: string): TestCase[] {
  const out: TestCase[] = [];
  // the file is the <testsuite>'s name: a case's classname is where Deno.test
  // was called, which for testUnless is testing/ignorable.ts
  const suites = /<testsuite\s([^>]*?)>([\s\S]*?)<\/testsuite>/g;
  const cases = /<testcase\s([^>]*?)(\/>|>([\s\S]*?)<\/testcase>)/g;
  const attr = (attrs: string, key: string) => attrs.match(new RegExp(`\\b${key}="([^"]*)"`))?.[1];
  for (const suite of xml.matchAll(suites)) {
    const file = unescapeXml(attr(suite[1], "name") ?? "");
    for (const m of suite[2].matchAll(cases)) {
      const name = attr(m[1], "name");
      if (name === undefined) {
        throw new SyntaxError(
          `Cannot read a JUnit <testcase> without a name: ${m[0].slice(0, 200)}`,
        );
      }
      const body = m[3] ?? "";
      const failure = body.match(/<(?:failure|error)(\s[^>]*?)?\/?>/);
      const message = failure ? attr(failure[1] ?? "", "message") : undefined;
      out.push({
        file,
        name: unescapeXml(name),
        outcome: failure ? "failed" : /<skipped[\s>/]/.test(body) ? "ignored" : "passed",
        ...(message === undefined ? {} : { message: unescapeXml(message) }),
      });
    }
  }
  return out;
}

/**
 * Which file each top-level test ran from, read from deno's pretty output
 * (`running 3 tests from ./x_test.ts`, then `name ... ok`). The JUnit report
 * files a test under the place `Deno.test` was called, which for tests
 * registered through testing/ignorable.ts is that file, not the test's.
 *
 * @param output deno test's standard output.
 * @returns Test name → file (`./x_test.ts`).
 */
export function testFiles(output: string): Map<string, string> {
  const out = new Map<string, string>();
  let file = "";
  for (const line of stripAnsi(output).split("\n")) {
    const header = line.match(/^running \d+ tests? from (\S+)$/);
    if (header) file = header[1];
    const result = line.match(/^(\S.*?) \.\.\. (?:ok|FAILED|ignored)\b/);
    if (result && file && !out.has(result[1])) out.set(result[1], file);
  }
  return out;
}

/**
 * The cases with the file each test really ran from (see {@link testFiles}).
 *
 * Tests a `--filter` left out are dropped: the report lists them as skipped
 * like ignored ones, but deno never announces them in its output.
 *
 * @param cases Cases from {@link parseJUnit}.
 * @param files From {@link testFiles}.
 * @returns The cases that ran or were ignored; `file` replaced where the test's name is known.
 */
export function withTestFiles(
  cases: readonly TestCase[],
  files: ReadonlyMap<string, string>,
): TestCase[] {
  return cases.flatMap((c) => {
    // the top-level test of a step `a > b > c` is the longest known prefix
    const parts = c.name.split(" > ");
    for (let n = parts.length; n > 0; n--) {
      const file = files.get(parts.slice(0, n).join(" > "));
      if (file) return [{ ...c, file }];
    }
    return c.outcome === "ignored" ? [] : [c];
  });
}

/** An ignored test or step and why. */
export interface Ignored {
  readonly file: string;
  /** The name without the reason. */
  readonly name: string;
  /** The reason from its name, or null when it gave none. */
  readonly reason: string | null;
}

/**
 * The ignored cases, each with the reason `testUnless`/`stepUnless` put in
 * its name after {@link IGNORED_MARK}.
 *
 * @param cases All cases of the run.
 * @returns The ignored ones; `reason` is null when the name carries none.
 */
export function ignoredCases(cases: readonly TestCase[]): Ignored[] {
  return cases.filter((c) => c.outcome === "ignored").map((c) => {
    const at = c.name.lastIndexOf(IGNORED_MARK);
    const reason = at < 0 ? "" : c.name.slice(at + IGNORED_MARK.length).trim();
    return {
      file: c.file,
      name: at < 0 ? c.name : c.name.slice(0, at),
      reason: reason === "" ? null : reason,
    };
  });
}

/** At most this many lines of one failure's message in {@link failureReasons}. */
const REASON_LINES = 30;

/**
 * Why each failed test failed, for the end of the run (CI shows only its
 * tail): the failed cases' messages, each cut to {@link REASON_LINES}
 * lines. Tests whose steps failed are left out (their steps say why).
 *
 * @param cases All cases of the run.
 * @returns One block per failed case: its file and name, then its message indented.
 */
export function failureReasons(cases: readonly TestCase[]): string[] {
  const failedSteps = new Set(
    cases.filter((c) => c.outcome === "failed" && c.name.includes(" > "))
      .map((c) => c.name.slice(0, c.name.lastIndexOf(" > "))),
  );
  return cases.filter((c) => c.outcome === "failed" && !failedSteps.has(c.name)).map((c) => {
    const lines = stripAnsi(c.message ?? "(no message)").split("\n");
    const shown = lines.length > REASON_LINES
      ? [...lines.slice(0, REASON_LINES), `… (${lines.length - REASON_LINES} more lines)`]
      : lines;
    return `${c.file}: ${c.name}\n${shown.map((l) => `    ${l}`).join("\n")}`;
  });
}
