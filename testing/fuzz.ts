/**
 * Shared pieces of weft's fuzz tests (fast-check): how many inputs to
 * generate, generators of *near-valid* inputs (mutations of real ones: a
 * JSON document with a field deleted, retyped or replaced by something
 * nasty; a text cut, spliced or garbled; a byte string with flipped bytes
 * and rewritten length fields), and the one property every parser shares:
 * it returns, or it throws one of the errors it documents with a message
 * that says something — never a `TypeError: Cannot read properties of
 * undefined`, a `RangeError` from a `DataView`, or a hang.
 *
 * `WEFT_FUZZ_RUNS=100000 deno test -A '**\/*_fuzz_test.ts'` runs every
 * target longer (default {@link FUZZ_RUNS}); `WEFT_FUZZ_SEED=<n>` replays
 * a run.
 *
 * @module
 */

import fc from "fast-check";
import process from "node:process";

/** Generated inputs per fuzz target (`WEFT_FUZZ_RUNS`, default 10 000). */
export const FUZZ_RUNS: number = Number(process.env.WEFT_FUZZ_RUNS ?? "") || 10_000;

/**
 * fast-check parameters for a fuzz target: `runs` inputs (scaled with
 * `WEFT_FUZZ_RUNS` when it is set), the seed from `WEFT_FUZZ_SEED` when given.
 *
 * @param runs Inputs at the default scale (default {@link FUZZ_RUNS}).
 * @returns Parameters for `fc.assert`.
 */
export function fuzzParameters<T>(runs = FUZZ_RUNS): fc.Parameters<T> {
  const scaled = process.env.WEFT_FUZZ_RUNS ? Math.ceil((runs * FUZZ_RUNS) / 10_000) : runs;
  const seed = Number(process.env.WEFT_FUZZ_SEED ?? "");
  return {
    numRuns: scaled,
    ...(Number.isInteger(seed) && process.env.WEFT_FUZZ_SEED ? { seed } : {}),
  };
}

/** An error class a parser documents. */
// deno-lint-ignore no-explicit-any
export type ErrorClass = abstract new (...args: any[]) => Error;

/**
 * Whether `error` is one a parser may throw: an instance of one of `allowed`
 * with a message of at least a few words, not one of the engine's own
 * messages for a programming error.
 *
 * @param error What was thrown.
 * @param allowed The documented error classes.
 * @returns Null when it is fine, else why not (for the assertion message).
 */
export function unclearError(error: unknown, allowed: readonly ErrorClass[]): string | null {
  if (!(error instanceof Error)) return `threw a non-Error: ${String(error)}`;
  if (!allowed.some((c) => error instanceof c)) {
    return `threw ${error.name} (expected ${
      allowed.map((c) => c.name).join(" or ")
    }): ${error.message}\n${error.stack}`;
  }
  const m = error.message;
  if (m.length > MAX_MESSAGE) {
    return `threw ${error.name} with a ${m.length}-character message (a clear one is at most ${MAX_MESSAGE}): ${
      m.slice(0, 300)
    }…`;
  }
  if (m.trim().split(/\s+/).length < 3) return `threw ${error.name} with a terse message: ${m}`;
  if (ENGINE_MESSAGES.test(m)) return `threw an engine error: ${m}\n${error.stack}`;
  return null;
}

/** Longest message that is still read: a huge input must be quoted in part, not whole. */
export const MAX_MESSAGE = 2000;

/** Messages the JavaScript engines give programming errors. */
const ENGINE_MESSAGES =
  /Cannot read propert|is not a function|is not iterable|undefined is not|null is not|Offset is outside the bounds|Maximum call stack|Invalid array length|Cannot convert/;

/**
 * Fail when a log line is longer than {@link MAX_MESSAGE} or carries an
 * engine's message for a programming error (a TypeError caught and logged
 * is a crash all the same).
 *
 * @param lines Log lines, e.g. a memory logger's.
 * @throws {Error} Naming the first bad line.
 */
export function assertCleanLog(lines: readonly string[]): void {
  for (const line of lines) {
    if (line.length > MAX_MESSAGE) {
      throw new Error(`a ${line.length}-character log line: ${line.slice(0, 300)}…`);
    }
    if (ENGINE_MESSAGES.test(line)) throw new Error(`an engine error was logged: ${line}`);
  }
}

/**
 * How a fuzz target's inputs came out: accepted or rejected. A generator
 * whose inputs are all rejected (or all accepted) tests little; the tests
 * assert a mix with {@link Tally.assertMix}.
 */
export class Tally {
  accepted = 0;
  rejected = 0;

  /** Count one outcome. */
  count(accepted: boolean): void {
    if (accepted) this.accepted++;
    else this.rejected++;
  }

  /**
   * Fail unless at least `minShare` of the inputs went each way.
   *
   * @param what Names the target in the message.
   * @param minShare Smallest share of either outcome (default 0.01).
   * @throws {Error} When one outcome is rarer than that.
   */
  assertMix(what: string, minShare = 0.01): void {
    const total = this.accepted + this.rejected;
    const rare = Math.min(this.accepted, this.rejected);
    if (total === 0 || rare / total < minShare) {
      throw new Error(
        `${what}: the generator is lopsided (${this.accepted} accepted, ${this.rejected} rejected of ${total}); it must produce both`,
      );
    }
  }

  toString(): string {
    return `${this.accepted} accepted, ${this.rejected} rejected`;
  }
}

/**
 * Run `fn`; when it throws, the error must be a clear one of `allowed`.
 *
 * @param fn The call under test.
 * @param allowed The documented error classes.
 * @param tally Counts the outcome, when given.
 * @returns What `fn` returned, or undefined when it threw a clear error.
 * @throws {Error} (an assertion failure) for any other throw.
 */
export function returnsOrThrowsClearly<T>(
  fn: () => T,
  allowed: readonly ErrorClass[],
  tally?: Tally,
): T | undefined {
  try {
    const out = fn();
    tally?.count(true);
    return out;
  } catch (e) {
    const why = unclearError(e, allowed);
    if (why) throw new Error(why, { cause: e });
    tally?.count(false);
    return undefined;
  }
}

// ---- strings -------------------------------------------------------------------

/** Strings that break naive parsers: empty, blanks, controls, unicode, numbers as text, lookalikes. */
export const NASTY_STRINGS: readonly string[] = [
  "",
  " ",
  "\n",
  "\t\r\n",
  "\u0000",
  "\uffff",
  "\ud800",
  "é",
  "💥",
  "null",
  "undefined",
  "true",
  "NaN",
  "Infinity",
  "-1",
  "0",
  "1e400",
  "0x10",
  "9007199254740993",
  "18446744073709551616",
  "__proto__",
  "constructor",
  "toString",
  "10.5.0.0/16",
  "10.5.0.0/33",
  "10.5.0.0/-1",
  "256.1.1.1",
  "1.2.3",
  "1.2.3.4.5",
  "01.2.3.4",
  " 10.5.0.0/16",
  "10.5.0.0/16 ",
  "fd00::/48",
  "fd00:::1",
  "::ffff:1.2.3.4",
  "10.5.34.0-24",
  "10.5.34.0-24&fd00::-56",
  "aa:bb:cc:dd:ee:ff",
  "AA-BB-CC-DD-EE-FF",
  "%00",
  "%zz",
  "=",
  "--",
  "-",
  "{",
  "}",
  "[",
  '{"a":',
  "\\u0000",
];

/** A string: a nasty one, a short arbitrary unicode one, or a long one. */
export function nastyString(): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom(...NASTY_STRINGS) },
    { weight: 4, arbitrary: fc.string({ maxLength: 12 }) },
    { weight: 2, arbitrary: fc.fullUnicodeString({ maxLength: 12 }) },
    {
      weight: 1,
      arbitrary: fc.tuple(
        fc.constantFrom("a", "9", "💥", "\u0000", "."),
        fc.integer({ min: 1_000, max: 70_000 }),
      )
        .map(([c, n]) => c.repeat(n)),
    },
  );
}

/** Numbers that break naive parsers: boundaries, negatives, fractions, huge, -0. */
export const NASTY_NUMBERS: readonly number[] = [
  0,
  -0,
  1,
  -1,
  0.5,
  2.5,
  24,
  30,
  31,
  32,
  33,
  64,
  126,
  128,
  129,
  255,
  256,
  65535,
  65536,
  2 ** 31 - 1,
  2 ** 31,
  2 ** 32,
  2 ** 53 - 1,
  2 ** 53 + 2,
  1e21,
  -1e21,
  Number.MAX_VALUE,
  Number.MIN_VALUE,
];

/** A JSON value, with a bias to the nasty ones. */
export function nastyJson(): fc.Arbitrary<unknown> {
  return fc.oneof(
    { weight: 3, arbitrary: nastyString() },
    { weight: 2, arbitrary: fc.constantFrom<unknown>(...NASTY_NUMBERS) },
    {
      weight: 1,
      arbitrary: fc.constantFrom<unknown>(null, true, false, [], {}, [null], { "": 1 }),
    },
    { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
    {
      weight: 1,
      // deeper nesting costs milliseconds per value: see deeplyNested() for the few huge ones
      arbitrary: fc.integer({ min: 10, max: 64 }).map(deeplyNested),
    },
  );
}

/**
 * `[[[…1…]]]`, `depth` arrays deep.
 *
 * @param depth Levels.
 * @returns The value.
 */
export function deeplyNested(depth: number): unknown {
  let v: unknown = 1;
  for (let i = 0; i < depth; i++) v = [v];
  return v;
}

/**
 * Huge inputs, few of them (each costs tens of milliseconds): JSON text
 * nested 1 000–50 000 levels deep, strings of 1–4 MiB, objects with
 * 10 000–50 000 keys.
 *
 * @returns JSON texts.
 */
export function hugeJsonText(): fc.Arbitrary<string> {
  return fc.oneof(
    fc.integer({ min: 1_000, max: 50_000 }).map((n) => "[".repeat(n) + "1" + "]".repeat(n)),
    fc.integer({ min: 1_000, max: 50_000 }).map((n) => '{"a":'.repeat(n) + "1" + "}".repeat(n)),
    fc.integer({ min: 1, max: 4 }).map((mib) => JSON.stringify("x".repeat(mib << 20))),
    fc.integer({ min: 10_000, max: 50_000 }).map((n) =>
      "{" + Array.from({ length: n }, (_, i) => `"k${i}":${i}`).join(",") + "}"
    ),
  );
}

// ---- JSON mutations ------------------------------------------------------------------

type Path = (string | number)[];

function paths(value: unknown, prefix: Path = [], out: Path[] = [], depth = 0): Path[] {
  out.push(prefix);
  if (depth > 6 || typeof value !== "object" || value === null) return out;
  const entries = Array.isArray(value)
    ? value.map((v, i) => [i, v] as const)
    : Object.entries(value);
  for (const [k, v] of entries) paths(v, [...prefix, k], out, depth + 1);
  return out;
}

/** One edit of a JSON document. */
type JsonEdit =
  | { op: "set"; at: number; value: unknown }
  | { op: "delete"; at: number }
  | { op: "rename"; at: number; name: string }
  | { op: "recase"; at: number }
  | { op: "wrap"; at: number }
  | { op: "stringify"; at: number };

const jsonEdit: fc.Arbitrary<JsonEdit> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({ op: fc.constant("set" as const), at: fc.nat(), value: nastyJson() }),
  },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("delete" as const), at: fc.nat() }) },
  {
    weight: 1,
    arbitrary: fc.record({ op: fc.constant("rename" as const), at: fc.nat(), name: nastyString() }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("recase" as const), at: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("wrap" as const), at: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("stringify" as const), at: fc.nat() }) },
);

function applyEdit(doc: unknown, edit: JsonEdit): unknown {
  const all = paths(doc);
  const path = all[edit.at % all.length];
  if (path.length === 0) {
    // a copy: fast-check may hand the same value object to two edits, and
    // setting it inside itself would make a cycle JSON cannot write
    if (edit.op === "set") return structuredClone(edit.value);
    if (edit.op === "wrap") return [doc];
    if (edit.op === "stringify") return JSON.stringify(doc);
    return doc;
  }
  const parentPath = path.slice(0, -1);
  let parent = doc as Record<string | number, unknown>;
  for (const k of parentPath) parent = parent[k] as Record<string | number, unknown>;
  const key = path[path.length - 1];
  switch (edit.op) {
    case "set":
      parent[key] = structuredClone(edit.value);
      break;
    case "delete":
      if (Array.isArray(parent)) parent.splice(key as number, 1);
      else delete parent[key];
      break;
    case "rename":
    case "recase": {
      if (Array.isArray(parent)) break;
      const name = edit.op === "rename"
        ? edit.name
        : String(key) === String(key).toLowerCase()
        ? String(key).toUpperCase()
        : String(key).toLowerCase();
      const v = parent[key];
      delete parent[key];
      // define, not assign: a "__proto__" key must become an own property, as JSON.parse makes it
      Object.defineProperty(parent, name, {
        value: v,
        enumerable: true,
        writable: true,
        configurable: true,
      });
      break;
    }
    case "wrap":
      parent[key] = [parent[key]];
      break;
    case "stringify":
      parent[key] = JSON.stringify(parent[key]);
      break;
  }
  return doc;
}

/**
 * Near-valid JSON documents: one of `bases` (deep-copied) with 1–`maxEdits`
 * edits at random places — a value replaced by a nasty one, a key deleted,
 * renamed or re-cased, a value wrapped in an array or turned into its JSON
 * text. The unedited bases come out too, now and then.
 *
 * @param bases Valid documents.
 * @param maxEdits Most edits per document (default 3).
 * @returns The arbitrary.
 */
export function mutatedJson(bases: readonly unknown[], maxEdits = 3): fc.Arbitrary<unknown> {
  return fc.tuple(
    fc.constantFrom(...bases),
    fc.array(jsonEdit, { minLength: 0, maxLength: maxEdits }),
  ).map(([base, edits]) => edits.reduce(applyEdit, structuredClone(base)));
}

// ---- text mutations ---------------------------------------------------------------

type TextEdit =
  | { op: "truncate"; at: number }
  | { op: "insert"; at: number; text: string }
  | { op: "delete"; at: number; length: number }
  | { op: "duplicate"; at: number; length: number };

const textEdit: fc.Arbitrary<TextEdit> = fc.oneof(
  { weight: 2, arbitrary: fc.record({ op: fc.constant("truncate" as const), at: fc.nat() }) },
  {
    weight: 3,
    arbitrary: fc.record({
      op: fc.constant("insert" as const),
      at: fc.nat(),
      text: fc.oneof(
        fc.constantFrom('"', ",", "{", "}", "[", "]", ":", "\n", "\\", "0", "-", "null"),
        nastyString(),
      ),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant("delete" as const),
      at: fc.nat(),
      length: fc.integer({ min: 1, max: 8 }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant("duplicate" as const),
      at: fc.nat(),
      length: fc.integer({ min: 1, max: 40 }),
    }),
  },
);

function applyTextEdit(text: string, edit: TextEdit): string {
  const at = text.length ? edit.at % (text.length + 1) : 0;
  switch (edit.op) {
    case "truncate":
      return text.slice(0, at);
    case "insert":
      return text.slice(0, at) + edit.text + text.slice(at);
    case "delete":
      return text.slice(0, at) + text.slice(at + edit.length);
    case "duplicate":
      return text.slice(0, at + edit.length) + text.slice(at);
  }
}

/**
 * Near-valid texts: one of `bases` cut short, with characters inserted
 * (JSON punctuation, nasty strings), deleted or duplicated.
 *
 * @param bases Valid texts.
 * @param maxEdits Most edits per text (default 3).
 * @returns The arbitrary.
 */
export function mutatedText(bases: readonly string[], maxEdits = 3): fc.Arbitrary<string> {
  return fc.tuple(
    fc.constantFrom(...bases),
    fc.array(textEdit, { minLength: 1, maxLength: maxEdits }),
  )
    .map(([base, edits]) => edits.reduce(applyTextEdit, base));
}

// ---- byte mutations ------------------------------------------------------------------

type ByteEdit =
  | { op: "flip"; at: number; bit: number }
  | { op: "set"; at: number; value: number }
  | { op: "u16"; at: number; value: number }
  | { op: "u32"; at: number; value: number }
  | { op: "truncate"; at: number }
  | { op: "insert"; at: number; bytes: Uint8Array };

const INTERESTING_U16 = [0, 1, 2, 3, 4, 5, 8, 12, 16, 20, 0x7fff, 0x8000, 0xfffe, 0xffff];
const INTERESTING_U32 = [0, 1, 3, 4, 15, 16, 17, 20, 0x7fffffff, 0x80000000, 0xffffffff];

const byteEdit: fc.Arbitrary<ByteEdit> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.record({
      op: fc.constant("flip" as const),
      at: fc.nat(),
      bit: fc.integer({ min: 0, max: 7 }),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant("set" as const),
      at: fc.nat(),
      value: fc.oneof(fc.constantFrom(0, 1, 0x7f, 0x80, 0xff), fc.integer({ min: 0, max: 255 })),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant("u16" as const),
      at: fc.nat(),
      value: fc.oneof(fc.constantFrom(...INTERESTING_U16), fc.integer({ min: 0, max: 0xffff })),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant("u32" as const),
      at: fc.nat(),
      value: fc.oneof(fc.constantFrom(...INTERESTING_U32), fc.nat()),
    }),
  },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("truncate" as const), at: fc.nat() }) },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant("insert" as const),
      at: fc.nat(),
      bytes: fc.uint8Array({ maxLength: 16 }),
    }),
  },
);

function applyByteEdit(bytes: Uint8Array, edit: ByteEdit): Uint8Array {
  const n = bytes.length;
  const at = n ? edit.at % n : 0;
  switch (edit.op) {
    case "flip":
      if (n) bytes[at] ^= 1 << edit.bit;
      return bytes;
    case "set":
      if (n) bytes[at] = edit.value;
      return bytes;
    case "u16":
    case "u32": {
      // length and type fields sit at 4-byte boundaries in netlink and IPv4 alike
      const size = edit.op === "u16" ? 2 : 4;
      const aligned = at & ~1;
      if (aligned + size > n) return bytes;
      const view = new DataView(bytes.buffer, bytes.byteOffset, n);
      if (size === 2) view.setUint16(aligned, edit.value, true);
      else view.setUint32(aligned & ~3, edit.value >>> 0, true);
      return bytes;
    }
    case "truncate":
      return bytes.slice(0, n ? edit.at % (n + 1) : 0);
    case "insert": {
      const i = n ? edit.at % (n + 1) : 0;
      const out = new Uint8Array(n + edit.bytes.length);
      out.set(bytes.subarray(0, i));
      out.set(edit.bytes, i);
      out.set(bytes.subarray(i), i + edit.bytes.length);
      return out;
    }
  }
}

/**
 * Near-valid byte strings: one of `bases` (copied) with bits flipped, bytes
 * set, 16/32-bit fields (little-endian, aligned) overwritten with boundary
 * values, cut short or with bytes inserted.
 *
 * @param bases Valid byte strings (e.g. real netlink replies).
 * @param maxEdits Most edits (default 4).
 * @returns The arbitrary.
 */
export function mutatedBytes(bases: readonly Uint8Array[], maxEdits = 4): fc.Arbitrary<Uint8Array> {
  return fc.tuple(
    fc.constantFrom(...bases),
    fc.array(byteEdit, { minLength: 1, maxLength: maxEdits }),
  )
    .map(([base, edits]) => edits.reduce(applyByteEdit, base.slice()));
}
