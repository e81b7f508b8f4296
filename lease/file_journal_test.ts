import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import {
  applyChange,
  type Change,
  changeLine,
  emptyView,
  nextExpiry,
  refreshView,
  writeSnapshot,
} from "./file_journal.ts";

const quiet = () => {};

function withFile(fn: (file: string) => void) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "weft-journal-"));
  try {
    fn(path.join(dir, "leases.json"));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Write a view as a new file the way a writer compacts. */
function snapshot(file: string, view = emptyView()) {
  writeSnapshot(view, (bytes) => {
    fs.writeFileSync(`${file}.tmp`, bytes);
    fs.renameSync(`${file}.tmp`, file);
    const st = fs.statSync(file);
    return `${st.dev}:${st.ino}`;
  });
  return view;
}

Deno.test("lease file reader: reads on from where it was, and only what was appended", () => {
  withFile((file) => {
    const w = emptyView();
    applyChange(w, { revision: 2, key: "10.5.1.0-24", value: "a", expiration: null });
    snapshot(file, w);
    const first = refreshView(file, undefined, quiet);
    assert.equal(first.changes, null, "a first look reads the whole file");
    assert.equal(first.view.revision, 2);
    fs.appendFileSync(file, JSON.stringify({ revision: 3, key: "10.5.2.0-24", value: "b" }) + "\n");
    const second = refreshView(file, first.view, quiet);
    assert.equal(second.view, first.view, "the same view, read on");
    assert.deepEqual(second.changes, [{ revision: 3, key: "10.5.2.0-24", value: "b" }]);
    assert.deepEqual(refreshView(file, first.view, quiet).changes, [], "nothing new");
    // half a line: left for later
    fs.appendFileSync(file, '{"revision":4,"key":"10.5.1.0-24"');
    const third = refreshView(file, first.view, quiet);
    assert.deepEqual([third.changes, third.tail], [[], 33]);
    fs.appendFileSync(file, "}\n");
    assert.deepEqual(refreshView(file, first.view, quiet).changes, [
      { revision: 4, key: "10.5.1.0-24" },
    ]);
    assert.deepEqual([...first.view.records.keys()], ["10.5.2.0-24"]);
  });
});

Deno.test("lease file reader: a new snapshot (a new inode) is read whole, with its history", () => {
  withFile((file) => {
    const w = emptyView();
    applyChange(w, { revision: 2, key: "10.5.1.0-24", value: "a", expiration: null });
    snapshot(file, w);
    const r = refreshView(file, undefined, quiet);
    applyChange(w, { revision: 3, key: "10.5.2.0-24", value: "b", expiration: null });
    snapshot(file, w);
    const again = refreshView(file, r.view, quiet);
    assert.equal(again.changes, null);
    assert.notEqual(again.view, r.view);
    assert.deepEqual(again.view.history.map((c) => c.revision), [2, 3]);
  });
});

Deno.test("lease file view: the next expiry follows puts and deletes", () => {
  const v = emptyView();
  assert.equal(nextExpiry(v), null);
  applyChange(v, { revision: 2, key: "a", value: "x", expiration: 500 });
  applyChange(v, { revision: 3, key: "b", value: "x", expiration: 300 });
  applyChange(v, { revision: 4, key: "c", value: "x", expiration: null });
  assert.equal(nextExpiry(v), 300);
  applyChange(v, { revision: 5, key: "b", value: "x", expiration: 900 }); // renewed
  assert.equal(nextExpiry(v), 500);
  applyChange(v, { revision: 6, key: "a" });
  assert.equal(nextExpiry(v), 900);
  applyChange(v, { revision: 7, key: "b" });
  assert.equal(nextExpiry(v), null);
  assert.equal(applyChange(v, { revision: 7, key: "d", value: "x" }), false, "not newer: ignored");
});

Deno.test("lease file reader: a file rewritten in place (an inode reused) is read whole", () => {
  withFile((file) => {
    const w = emptyView();
    applyChange(w, { revision: 2, key: "10.5.1.0-24", value: "a", expiration: null });
    snapshot(file, w);
    const r = refreshView(file, undefined, quiet);
    // the same inode, longer content, another snapshot: as when a freed inode number comes back
    const other = emptyView();
    applyChange(other, {
      revision: 2,
      key: "10.5.9.0-24",
      value: "z".repeat(50),
      expiration: null,
    });
    writeSnapshot(other, (bytes) => {
      fs.writeFileSync(file, bytes);
      return "";
    });
    fs.appendFileSync(file, JSON.stringify({ revision: 3, key: "10.5.8.0-24", value: "y" }) + "\n");
    assert.equal(fs.statSync(file).ino, Number(r.view.id.split(":")[1]));
    const again = refreshView(file, r.view, quiet);
    assert.equal(again.changes, null, "read whole");
    assert.deepEqual([...again.view.records.keys()], ["10.5.9.0-24", "10.5.8.0-24"]);
  });
});

Deno.test("lease file reader: a compaction of the state it holds is taken over without decoding; one it missed is read whole", () => {
  withFile((file) => {
    const w = emptyView();
    const change = (c: Change) => {
      applyChange(w, c);
      fs.appendFileSync(file, changeLine(c));
    };
    applyChange(w, { revision: 2, key: "10.5.1.0-24", value: "a", expiration: null });
    snapshot(file, w);
    const r = refreshView(file, undefined, quiet).view;
    change({ revision: 3, key: "10.5.2.0-24", value: "b", expiration: null });
    assert.equal(refreshView(file, r, quiet).changes?.length, 1);
    snapshot(file, w); // compacted from the snapshot the reader read, at its revision
    const taken = refreshView(file, r, quiet);
    assert.equal(taken.view, r, "taken over");
    assert.deepEqual(taken.changes, []);
    assert.equal(r.snapshotId, w.snapshotId);
    change({ revision: 4, key: "10.5.1.0-24" });
    assert.deepEqual(refreshView(file, r, quiet).changes, [{ revision: 4, key: "10.5.1.0-24" }]);
    snapshot(file, w);
    snapshot(file, w); // the reader missed the first: its snapshot is not the parent
    const whole = refreshView(file, r, quiet);
    assert.equal(whole.changes, null, "read whole");
    assert.deepEqual([...whole.view.records.keys()], ["10.5.2.0-24"]);
    assert.deepEqual([...r.records.keys()], ["10.5.2.0-24"]);
  });
});
