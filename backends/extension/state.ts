/**
 * The extension backend's memory across restarts: which peers' add command
 * has succeeded, and with what inputs, so that an add runs once per peer
 * state and a remove runs once for a peer that left — also when it left
 * while weft was down.
 *
 * On disk, under `StateDir` (default `/run/weft/extension`, a tmpfs: the
 * state lives exactly as long as the kernel state the commands made):
 * - `<PublicIP>.json`, a snapshot written atomically (temporary file +
 *   rename):
 *   `{"version":1,"generation":7,"publicIP":"192.0.2.11","hostBackendData":"…"|null,
 *   "addCommand":"…","peers":{"10.5.2.0-24":{…}}}` (one line);
 * - `<PublicIP>.journal`, one JSON line per change since the snapshot
 *   (`{"g":7,"set":"10.5.2.0-24","peer":{…}}` or `{"g":7,"delete":"10.5.2.0-24"}`),
 *   so each change costs one small append rather than rewriting every
 *   peer; folded into a new snapshot (next generation) when it outgrows
 *   it. Lines of another generation (left by a crash between the snapshot
 *   and emptying the journal) and a torn last line are skipped.
 *
 * The file is named after this host's PublicIP, flannel's identity of a
 * host, so hosts sharing a file system (namespaces on one machine) keep
 * apart.
 *
 * @module
 */

import * as fs from "node:fs";
import * as path from "node:path";
import * as v from "valibot";
import { ensureDir, writeFileAtomic } from "../../core/files.ts";

/** A peer as its commands saw it: the inputs of its add and remove commands. */
export interface PeerState {
  /** IPv4 subnet, e.g. `10.5.2.0/24` (env SUBNET). */
  readonly subnet: string;
  /** IPv6 subnet or null (env IPV6SUBNET). */
  readonly ipv6Subnet: string | null;
  /** env PUBLIC_IP. */
  readonly publicIP: string;
  /** env PUBLIC_IPV6, or null. */
  readonly publicIPv6: string | null;
  /** The peer's BackendData string (standard input, plus a newline). */
  readonly backendData: string;
}

/**
 * What the recorded adds depended on besides the peers themselves. When it
 * changes, the recorded adds no longer describe the host: this host's
 * BackendData changed (its PreStartupCommand rebuilt the datapath — the
 * documented vxlan example recreates its device), or SubnetAddCommand
 * itself changed.
 */
export interface StateBasis {
  /** This host's BackendData (PreStartupCommand's output), or null without one. */
  readonly hostBackendData: string | null;
  /** The SubnetAddCommand the adds ran. */
  readonly addCommand: string;
}

/** What {@link PeerStateFile.load} found. */
export interface LoadedState {
  /** What the recorded adds depended on (null when no snapshot was found). */
  readonly basis: StateBasis | null;
  /** Peers whose add command succeeded, by lease key. */
  readonly peers: Map<string, PeerState>;
  /** Whether a snapshot was found at all. */
  readonly found: boolean;
  /** What was wrong with the files (they were read as far as possible). */
  readonly problems: string[];
}

const nullableString = v.nullable(v.string());
const PeerStateSchema = v.object({
  subnet: v.string(),
  ipv6Subnet: nullableString,
  publicIP: v.string(),
  publicIPv6: nullableString,
  backendData: v.string(),
});
const SnapshotSchema = v.object({
  version: v.literal(1),
  generation: v.pipe(v.number(), v.integer()),
  publicIP: v.string(),
  hostBackendData: nullableString,
  addCommand: v.string(),
  peers: v.record(v.string(), PeerStateSchema),
});
const JournalLineSchema = v.union([
  v.object({ g: v.number(), set: v.string(), peer: PeerStateSchema }),
  v.object({ g: v.number(), delete: v.string() }),
]);

/** Journal lines tolerated before folding them into a snapshot (at least). */
const MIN_JOURNAL_LINES = 64;

/**
 * The state file pair of one host.
 *
 * @example
 * ```ts
 * const file = new PeerStateFile("/run/weft/extension", "192.0.2.11");
 * const { peers } = file.load();
 * file.set("10.5.2.0-24", { subnet: "10.5.2.0/24", ipv6Subnet: null, publicIP: "192.0.2.12",
 *   publicIPv6: null, backendData: "" });
 * ```
 */
export class PeerStateFile {
  /** The snapshot's path. */
  readonly snapshotPath: string;
  /** The journal's path. */
  readonly journalPath: string;
  readonly #publicIP: string;
  #basis: StateBasis = { hostBackendData: null, addCommand: "" };
  #peers = new Map<string, PeerState>();
  #journalLines = 0;
  #generation = 0;
  #hasSnapshot = false;

  /**
   * @param dir The state directory (created when first written).
   * @param publicIP This host's PublicIP, which names the files.
   * @throws {TypeError} When `publicIP` could not name a file.
   */
  constructor(dir: string, publicIP: string) {
    if (!/^[0-9A-Za-z.:_-]+$/.test(publicIP)) {
      throw new TypeError(
        `Cannot name the extension state file after the public IP: current value is ${
          JSON.stringify(publicIP)
        }; it must be an IP address`,
      );
    }
    this.#publicIP = publicIP;
    this.snapshotPath = path.join(dir, `${publicIP}.json`);
    this.journalPath = path.join(dir, `${publicIP}.journal`);
  }

  /**
   * Read the snapshot and replay the journal. Missing files are an empty
   * state; unreadable files or parts are skipped and listed in `problems`
   * (never thrown).
   *
   * @returns The state found.
   */
  load(): LoadedState {
    const problems: string[] = [];
    let basis: StateBasis | null = null;
    const peers = new Map<string, PeerState>();
    let found = false;
    let generation = 0;
    const snapshotText = readIfExists(this.snapshotPath, problems);
    if (snapshotText !== null) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(snapshotText);
      } catch (e) {
        problems.push(`${this.snapshotPath} is not JSON (${(e as Error).message})`);
      }
      if (parsed !== undefined) {
        const r = v.safeParse(SnapshotSchema, parsed);
        if (r.success) {
          found = true;
          generation = r.output.generation;
          basis = {
            hostBackendData: r.output.hostBackendData,
            addCommand: r.output.addCommand,
          };
          for (const [k, p] of Object.entries(r.output.peers)) peers.set(k, p);
        } else {
          problems.push(
            `${this.snapshotPath} is not a weft extension state (version 1): ${
              r.issues[0].message
            } at ${v.getDotPath(r.issues[0]) ?? "the top"}`,
          );
        }
      }
    }
    const journal = readIfExists(this.journalPath, problems);
    let lines = 0;
    if (journal !== null && found) {
      for (const [i, line] of journal.split("\n").entries()) {
        if (line === "") continue;
        lines++;
        let rec: v.InferOutput<typeof JournalLineSchema>;
        try {
          rec = v.parse(JournalLineSchema, JSON.parse(line));
        } catch (e) {
          problems.push(`${this.journalPath} line ${i + 1} skipped: ${(e as Error).message}`);
          continue;
        }
        if (rec.g !== generation) continue; // written before the snapshot
        if ("set" in rec) peers.set(rec.set, rec.peer);
        else peers.delete(rec.delete);
      }
    } else if (journal !== null && journal !== "") {
      problems.push(`${this.journalPath} ignored: it has no snapshot to apply to`);
    }
    if (basis) this.#basis = basis;
    this.#peers = new Map(peers);
    this.#journalLines = lines;
    this.#generation = generation;
    this.#hasSnapshot = found;
    return { basis, peers, found, problems };
  }

  /**
   * Replace the whole state: write a new snapshot, empty the journal.
   *
   * @param basis What the adds depend on now.
   * @param peers Peers whose add command succeeded.
   * @throws {Error} When the directory or files cannot be written.
   */
  reset(basis: StateBasis, peers: ReadonlyMap<string, PeerState>): void {
    this.#basis = basis;
    this.#peers = new Map(peers);
    this.#writeSnapshot();
  }

  /**
   * Record that a peer's add command succeeded with these inputs.
   *
   * @param key The peer's lease key (`10.5.2.0-24`).
   * @param peer Its state.
   * @throws {Error} When the journal cannot be written.
   */
  set(key: string, peer: PeerState): void {
    this.#peers.set(key, peer);
    this.#append(JSON.stringify({ g: this.#generation, set: key, peer }));
  }

  /**
   * Record that a peer is gone (its remove command succeeded, or it had none).
   *
   * @param key The peer's lease key.
   * @throws {Error} When the journal cannot be written.
   */
  delete(key: string): void {
    this.#peers.delete(key);
    this.#append(JSON.stringify({ g: this.#generation, delete: key }));
  }

  #append(line: string): void {
    const full = this.#journalLines + 1 > Math.max(MIN_JOURNAL_LINES, this.#peers.size);
    if (full || !this.#hasSnapshot) {
      this.#writeSnapshot();
      return;
    }
    ensureDir(path.dirname(this.journalPath));
    // the mode, always: without one Deno 2.9's appendFileSync makes an existing file 0666
    fs.appendFileSync(this.journalPath, line + "\n", { mode: 0o600 });
    this.#journalLines++;
  }

  #writeSnapshot(): void {
    this.#generation++;
    const snapshot = {
      version: 1,
      generation: this.#generation,
      publicIP: this.#publicIP,
      hostBackendData: this.#basis.hostBackendData,
      addCommand: this.#basis.addCommand,
      peers: Object.fromEntries(this.#peers),
    };
    writeFileAtomic(this.snapshotPath, JSON.stringify(snapshot) + "\n", { mode: 0o600 });
    // a crash between the two writes leaves lines of the old generation, which load() skips
    fs.writeFileSync(this.journalPath, "", { mode: 0o600 });
    fs.chmodSync(this.journalPath, 0o600); // one left by an older version keeps its mode otherwise
    this.#journalLines = 0;
    this.#hasSnapshot = true;
  }
}

/** A file's text; null when it is missing or unreadable (said in `problems`). */
function readIfExists(file: string, problems: string[]): string | null {
  try {
    return fs.readFileSync(file, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") {
      problems.push(
        `cannot read ${file} (${
          (e as Error).message
        }); check its permissions or set Backend.StateDir`,
      );
    }
    return null;
  }
}
