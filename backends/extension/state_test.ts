import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { type PeerState, PeerStateFile } from "./state.ts";

const basis = { hostBackendData: "02:00:00:00:00:01", addCommand: "add" };

function peerState(i: number): PeerState {
  return {
    subnet: `10.5.${i}.0/24`,
    ipv6Subnet: null,
    publicIP: `192.0.2.${i}`,
    publicIPv6: null,
    backendData: `data ${i}`,
  };
}

function withDir(fn: (dir: string) => void): void {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "weft-ext-state-"));
  try {
    fn(dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

Deno.test("PeerStateFile: missing files are an empty state without problems", () =>
  withDir((dir) => {
    const loaded = new PeerStateFile(path.join(dir, "none"), "192.0.2.11").load();
    assert.deepEqual(loaded, { basis: null, peers: new Map(), found: false, problems: [] });
  }));

Deno.test("PeerStateFile: changes survive a reload through the journal; a new instance sees them", () =>
  withDir((dir) => {
    const file = new PeerStateFile(dir, "192.0.2.11");
    file.load();
    file.reset(basis, new Map());
    file.set("10.5.2.0-24", peerState(2));
    file.set("10.5.3.0-24", peerState(3));
    file.delete("10.5.2.0-24");
    assert.equal(fs.readFileSync(file.journalPath, "utf8").trim().split("\n").length, 3);
    const loaded = new PeerStateFile(dir, "192.0.2.11").load();
    assert.deepEqual(loaded.basis, basis);
    assert.deepEqual([...loaded.peers], [["10.5.3.0-24", peerState(3)]]);
    assert.deepEqual(loaded.problems, []);
    assert.equal(path.basename(file.snapshotPath), "192.0.2.11.json");
  }));

Deno.test("PeerStateFile: the journal is folded into a snapshot when it has more lines than max(64, peers)", () =>
  withDir((dir) => {
    const file = new PeerStateFile(dir, "192.0.2.11");
    file.load();
    file.reset(basis, new Map());
    const lines = () => fs.readFileSync(file.journalPath, "utf8").split("\n").length - 1;
    for (let i = 0; i < 64; i++) file.set("k", peerState(i)); // one peer changing 64 times
    assert.equal(lines(), 64);
    file.set("k", peerState(64));
    assert.equal(lines(), 0, "folded: the journal is empty");
    const snapshot = JSON.parse(fs.readFileSync(file.snapshotPath, "utf8"));
    assert.deepEqual(snapshot.peers, { k: peerState(64) });
    assert.equal(snapshot.generation, 2);
    // 100 new peers: the journal never has more lines than peers, so it is not folded
    for (let i = 0; i < 100; i++) file.set(`p${i}`, peerState(i));
    assert.equal(lines(), 100);
    const loaded = new PeerStateFile(dir, "192.0.2.11").load();
    assert.equal(loaded.peers.size, 101);
    assert.deepEqual(loaded.problems, []);
  }));

Deno.test("PeerStateFile: a torn last line and lines of an older generation are skipped", () =>
  withDir((dir) => {
    const file = new PeerStateFile(dir, "192.0.2.11");
    file.load();
    file.reset(basis, new Map([["10.5.2.0-24", peerState(2)]])); // generation 1
    // what a crash between a new snapshot and emptying the journal leaves: old-generation lines
    fs.appendFileSync(file.journalPath, JSON.stringify({ g: 0, delete: "10.5.2.0-24" }) + "\n");
    file.set("10.5.3.0-24", peerState(3));
    fs.appendFileSync(file.journalPath, '{"g":1,"set":"10.5.4.0-24","peer":{"sub');
    const loaded = new PeerStateFile(dir, "192.0.2.11").load();
    assert.deepEqual([...loaded.peers.keys()], ["10.5.2.0-24", "10.5.3.0-24"]);
    assert.equal(loaded.problems.length, 1);
    assert.match(loaded.problems[0], /192\.0\.2\.11\.journal line 3 skipped/);
  }));

Deno.test("PeerStateFile: a corrupt snapshot is reported and read as empty; its journal is ignored", () =>
  withDir((dir) => {
    const file = new PeerStateFile(dir, "192.0.2.11");
    fs.writeFileSync(file.snapshotPath, '{"version":2}');
    fs.writeFileSync(file.journalPath, '{"g":1,"delete":"x"}\n');
    const loaded = file.load();
    assert.equal(loaded.found, false);
    assert.equal(loaded.peers.size, 0);
    assert.match(loaded.problems[0], /is not a weft extension state \(version 1\)/);
    assert.match(loaded.problems[1], /ignored: it has no snapshot to apply to/);
  }));

Deno.test("PeerStateFile: a change before any snapshot writes one, so it is not lost", () =>
  withDir((dir) => {
    const file = new PeerStateFile(dir, "192.0.2.11");
    file.load();
    file.set("10.5.2.0-24", peerState(2));
    assert.equal(new PeerStateFile(dir, "192.0.2.11").load().peers.size, 1);
  }));

Deno.test("PeerStateFile: a public IP that cannot name a file is refused", () => {
  assert.throws(() => new PeerStateFile("/tmp", "../etc/x"), TypeError);
  assert.throws(() => new PeerStateFile("/tmp", ""), /must be an IP address/);
});
