/**
 * Fuzzing the command line and the FLANNELD_* environment: every known flag
 * with `-`/`--`, `=` or a separate value, plausible and nasty values, typos,
 * stray dashes, `--`, positionals, and environment variables for every
 * flag. Property: flags of the declared types (numbers finite, lists of
 * strings), or a UsageError of one readable line — never another error.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { type FlagName, FLAGS, parseDuration, parseFlags, UsageError } from "./flags.ts";
import {
  fuzzParameters,
  MAX_MESSAGE,
  nastyString,
  returnsOrThrowsClearly,
  Tally,
} from "../testing/fuzz.ts";

const NAMES = Object.keys(FLAGS) as FlagName[];
const camel = (s: string) => s.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

/** Values a flag of each kind could plausibly be given. */
const PLAUSIBLE = [
  "true",
  "false",
  "1",
  "0",
  "24h",
  "90m",
  "1h30m",
  "500ms",
  "1.5h",
  "8472",
  "65535",
  "-1",
  "192.0.2.1",
  "fd00::1",
  "eth0",
  "^eth[0-9]+$",
  "http://127.0.0.1:2379,http://10.0.0.2:2379",
  "/run/flannel/subnet.env",
  "json",
  "debug",
];
const value = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(...PLAUSIBLE) },
  { weight: 2, arbitrary: nastyString() },
  {
    weight: 1,
    arbitrary: fc.stringOf(fc.constantFrom("1", "9", ".", "h", "m", "s", "ms", "-", "e"), {
      maxLength: 12,
    }),
  },
);
const flagName = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(...NAMES) },
  {
    weight: 1,
    arbitrary: fc.constantFrom("h", "etcd-endpoint", "ip-mask", "IFACE", "", "=", "--"),
  },
  { weight: 1, arbitrary: nastyString() },
);
const arg = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.tuple(fc.constantFrom("-", "--"), flagName, fc.boolean(), value).map(
      ([dash, name, eq, v]) => eq ? [`${dash}${name}=${v}`] : [`${dash}${name}`, v],
    ),
  },
  { weight: 1, arbitrary: fc.constantFrom(["--"], ["-"], ["positional"], ["--", "--ip-masq"]) },
  { weight: 1, arbitrary: nastyString().map((s) => [s]) },
);
const argv = fc.array(arg, { maxLength: 6 }).map((xs) => xs.flat());
const env = fc.dictionary(
  fc.oneof(
    fc.constantFrom(...NAMES).map((n) => `FLANNELD_${n.toUpperCase().replace(/-/g, "_")}`),
    fc.constantFrom("FLANNELD_", "FLANNELD_X", "PATH"),
  ),
  value,
  { maxKeys: 4 },
);

Deno.test("fuzz parseFlags(): flags, values and FLANNELD_* variables (10 000 inputs)", () => {
  const tally = new Tally();
  fc.assert(
    fc.property(argv, env, (args, vars) => {
      let message = "";
      const flags = returnsOrThrowsClearly(
        () => {
          try {
            return parseFlags(args, vars);
          } catch (e) {
            message = (e as Error).message;
            throw e;
          }
        },
        [UsageError],
        tally,
      );
      if (!flags) {
        assert.ok(
          !message.includes("\n") && message.length <= MAX_MESSAGE,
          `usage error: ${message.slice(0, 300)}`,
        );
        return;
      }
      const values = flags as unknown as Record<string, unknown>;
      for (const name of NAMES) {
        const v = values[camel(name)];
        const kind = FLAGS[name].kind;
        if (kind === "bool") assert.equal(typeof v, "boolean", name);
        else if (kind === "int" || kind === "duration") {
          assert.ok(typeof v === "number" && Number.isFinite(v), `${name}: ${v}`);
        } else if (kind === "list") {
          assert.ok(Array.isArray(v) && v.every((x) => typeof x === "string"), name);
        } else assert.equal(typeof v, "string", name);
      }
      assert.ok(flags.args.every((a) => typeof a === "string"));
    }),
    fuzzParameters(),
  );
  tally.assertMix("command lines");
});

Deno.test("fuzz parseDuration(): any text (10 000 inputs)", () => {
  fc.assert(
    fc.property(
      fc.oneof(
        value,
        fc.stringOf(fc.constantFrom("0", "1", "9", ".", "h", "m", "s", "ms"), { maxLength: 40 }),
      ),
      (text) => {
        const ms = returnsOrThrowsClearly(() => parseDuration(text), [SyntaxError]);
        if (ms !== undefined) assert.ok(Number.isFinite(ms) && ms >= 0, `${text} → ${ms}`);
      },
    ),
    fuzzParameters(),
  );
});
