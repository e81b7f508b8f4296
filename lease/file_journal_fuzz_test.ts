/**
 * Fuzzing the lease file's reader (`file_journal.ts`): a garbled snapshot
 * line is refused with a clear StoreUnavailableError; garbled, cut or spliced
 * change lines never throw — each is skipped with a short warning — and
 * reading a file in two looks (a prefix, then the rest, as a watcher does
 * while a writer appends) ends in the same state as reading it whole.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { type FileView, refreshView } from "./file_journal.ts";
import { createFileRegistry } from "./file_store.ts";
import { encodeLeaseAttrs } from "./types.ts";
import { StoreUnavailableError } from "../core/errors.ts";
import {
  assertCleanLog,
  fuzzParameters,
  mutatedText,
  returnsOrThrowsClearly,
  Tally,
} from "../testing/fuzz.ts";

/** A real file: a snapshot line and a few change lines, as the registry writes them. */
async function realFile(dir: string): Promise<{ snapshot: string; changes: string[] }> {
  const file = path.join(dir, "base.json");
  const reg = createFileRegistry({ path: file, configPath: path.join(dir, "none.json") });
  const attrs = (i: number) =>
    encodeLeaseAttrs({
      publicIP: `192.0.2.${i}`,
      backendType: "vxlan",
      backendData: { VNI: 1, VtepMAC: `02:00:00:00:00:0${i}` },
    });
  await reg.put("10.5.1.0-24", attrs(1), null);
  await reg.put("10.5.2.0-24", attrs(2), 86_400_000);
  await reg.put("10.5.3.0-24", attrs(3), 86_400_000);
  await reg.delete("10.5.1.0-24");
  await reg.put("10.5.2.0-24", attrs(4), 86_400_000);
  await reg.put("10.5.5.0-24&fd00:12:13::-56", attrs(5), null);
  const [snapshot, ...changes] = fs.readFileSync(file, "utf8").split("\n");
  changes.pop();
  return { snapshot, changes };
}

const state = (v: FileView) => ({
  revision: v.revision,
  compacted: v.compacted,
  records: [...v.records],
  history: v.history,
});

Deno.test("fuzz: lease file change lines, garbled, cut or spliced, never throw and read the same in two looks", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "weft-journal-fuzz-"));
  try {
    const { snapshot, changes } = await realFile(dir);
    assert.ok(changes.length >= 5, "the base file has change lines");
    const file = path.join(dir, "leases.json");
    const tally = new Tally();
    fc.assert(
      fc.property(
        fc.array(fc.oneof(fc.constantFrom(...changes), mutatedText(changes)), { maxLength: 8 }),
        fc.nat(),
        (lines, cutAt) => {
          const text = snapshot + "\n" + lines.join("\n");
          const bytes = new TextEncoder().encode(text);
          // a snapshot is written whole (by rename): cut nowhere inside it but at 0
          // (an empty file someone created)
          const from = snapshot.length + 1;
          const cut = cutAt % (bytes.length - from + 2) === 0
            ? 0
            : from + (cutAt % (bytes.length - from + 2)) - 1;
          const warnings: string[] = [];
          const warn = (msg: string, f: Record<string, unknown>) =>
            warnings.push(`${msg} ${JSON.stringify(f)}`);
          fs.writeFileSync(file, bytes.subarray(0, cut));
          const first = refreshView(file, undefined, warn);
          fs.appendFileSync(file, bytes.subarray(cut));
          const second = refreshView(file, first.view, warn);
          const whole = refreshView(file, undefined, warn);
          if (cut > 0) {
            assert.equal(second.view, first.view, "the same file is read on from where it was");
          }
          assert.deepEqual(state(second.view), state(whole.view));
          assert.equal(second.tail, whole.tail);
          assertCleanLog(warnings);
          tally.count(warnings.length === 0);
        },
      ),
      fuzzParameters(2000),
    );
    tally.assertMix("change lines");
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

Deno.test("fuzz: a garbled lease file snapshot is read or refused with a clear StoreUnavailableError", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "weft-journal-fuzz-"));
  try {
    const { snapshot, changes } = await realFile(dir);
    const file = path.join(dir, "leases.json");
    const tally = new Tally();
    fc.assert(
      fc.property(mutatedText([snapshot]), fc.boolean(), (garbled, withChanges) => {
        // a snapshot line holds no newline (JSON escapes it): one in the text ends the line early
        fs.writeFileSync(file, garbled + (withChanges ? "\n" + changes.join("\n") + "\n" : ""));
        const warnings: string[] = [];
        returnsOrThrowsClearly(
          () => refreshView(file, undefined, (msg) => warnings.push(msg)),
          [StoreUnavailableError],
          tally,
        );
        assertCleanLog(warnings);
      }),
      fuzzParameters(2000),
    );
    tally.assertMix("snapshot line");
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
