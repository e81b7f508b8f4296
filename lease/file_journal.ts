/**
 * The lease file's format and an incremental reader of it (used by
 * `file_store.ts`).
 *
 * The file is JSON lines. Line 1 is a snapshot, each further line one change
 * made after it:
 *
 * ```text
 * {"revision":7,"compacted":0,"snapshot":"6f1c…","parent":"09ab…","records":{"10.5.3.0-24":{"value":"{\"PublicIP\":…}","expiration":1700000000000}},"log":[…]}
 * {"revision":8,"key":"10.5.4.0-24","value":"{\"PublicIP\":…}","expiration":1700000001000}
 * {"revision":9,"key":"10.5.3.0-24"}
 * ```
 *
 * The snapshot line is the object weft wrote before the journal (plus a
 * random `snapshot` id, and `parent`, the id of the snapshot it was
 * compacted from), so a file
 * written by an older weft (that object, no newline) is read as a snapshot
 * with no changes, and a just-compacted file is still readable by an older
 * weft; one with change lines is refused by it as corrupt (JSON.parse of the
 * whole text), never misread. `log` keeps the last {@link LOG_LIMIT}
 * changes before the snapshot for watchers that fall behind; a change line
 * has the shape of a log entry (no `value` = a deletion).
 *
 * A writer (holding the lock) appends a change as one line with one write;
 * when the changes outgrow the snapshot it writes a new snapshot to a
 * temporary file and renames it over the file (compaction). A reader
 * remembers the file's identity (device, inode and first bytes — inode
 * numbers get reused) and how many bytes it has consumed, and on the next
 * look decodes only the complete lines after them; another identity (a
 * compaction, or a whole file written by another version) means a full
 * read — except for a compaction of the very state the reader holds (same
 * revision, its snapshot as `parent`), which it takes over from the first
 * bytes and the end of the snapshot line. A line still being written (no newline yet) is left for the next
 * look; a writer that finds one left by a crash cuts it off. A complete line
 * that is not a change is skipped with a warning.
 *
 * @module
 */

import * as fs from "node:fs";
import { StoreUnavailableError } from "../core/errors.ts";

/** Changes kept in the snapshot for watchers that fall behind. */
export const LOG_LIMIT = 2000;

/** The journal is folded into a new snapshot once it is larger than the snapshot and this. */
export const COMPACT_MIN_BYTES = 64 * 1024;

/** A stored record. */
export interface FileRecord {
  readonly value: string;
  /** Ms since the epoch; `null` = never expires. */
  readonly expiration: number | null;
}

/** A change: a put, or a deletion when `value` is absent. */
export interface Change {
  readonly revision: number;
  readonly key: string;
  readonly value?: string;
  readonly expiration?: number | null;
}

/** What a reader knows of the file and how far it has read it. */
export interface FileView {
  /** `dev:ino` of the file read; `""` when there was none. */
  id: string;
  /**
   * The file's first bytes as read (revision, compacted and the snapshot's
   * random `snapshot` id): an inode number can be reused by a later
   * snapshot, these bytes are not.
   */
  head: Uint8Array;
  /** The snapshot's `snapshot` id (`""` when it has none: an older weft's). */
  snapshotId: string;
  /** Bytes consumed: the end of the last complete line. */
  offset: number;
  /** Bytes of the snapshot line (with its newline). */
  snapshotBytes: number;
  /** The snapshot has no newline yet (written by an older weft): compact before appending. */
  unterminated: boolean;
  revision: number;
  /** Changes up to this revision are not in `history`. */
  compacted: number;
  records: Map<string, FileRecord>;
  /** The snapshot's log, then the changes after it, oldest first. */
  history: Change[];
  /** Earliest expiration among the records; `null` none expires; `undefined` not known. */
  nextExpiry: number | null | undefined;
}

/** The result of {@link refreshView}. */
export interface Refreshed {
  readonly view: FileView;
  /** The changes read since the previous view, or `null` after a full read. */
  readonly changes: Change[] | null;
  /** Bytes after the last complete line (a change being written, or torn by a crash). */
  readonly tail: number;
}

/** An empty view (no file). */
export function emptyView(): FileView {
  return {
    id: "",
    head: new Uint8Array(0),
    snapshotId: "",
    offset: 0,
    snapshotBytes: 0,
    unterminated: false,
    revision: 1,
    compacted: 0,
    records: new Map(),
    history: [],
    nextExpiry: null,
  };
}

/**
 * Bring a view up to date with the file: read only what follows it when the
 * file is the same, else the whole file.
 *
 * @param file The lease file.
 * @param view What was read before (changed in place when the file is the same).
 * @param warn Told about a line that is skipped.
 * @returns The view, the changes read, and the unread tail.
 * @throws {StoreUnavailableError} When the file cannot be read or its snapshot is corrupt.
 */
export function refreshView(
  file: string,
  view: FileView | undefined,
  warn: (msg: string, fields: Record<string, unknown>) => void,
): Refreshed {
  let fd: number;
  try {
    fd = fs.openSync(file, "r");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") {
      return {
        view: view?.id === "" ? view : emptyView(),
        changes: view?.id === "" ? [] : null,
        tail: 0,
      };
    }
    throw unreadable(file, e);
  }
  try {
    const st = fs.fstatSync(fd);
    const id = `${st.dev}:${st.ino}`;
    // read on only past a whole snapshot line; an empty file, or an older weft's
    // snapshot without a newline, is read whole again when it grows
    const same = view !== undefined && view.id === id && st.size >= view.offset &&
      (st.size === view.offset || (view.snapshotBytes > 0 && !view.unterminated)) &&
      sameBytes(readRange(fd, 0, view.head.length), view.head);
    let whole: Uint8Array | undefined;
    if (!same) {
      whole = readRange(fd, 0, st.size);
      if (!view || !adoptSnapshot(view, whole, id)) {
        const fresh = parseFile(file, whole, warn);
        fresh.id = id;
        fresh.head = whole.slice(0, Math.min(HEAD_BYTES, whole.length));
        return { view: fresh, changes: null, tail: whole.length - fresh.offset };
      }
    }
    const v = view!;
    if (st.size === v.offset) return { view: v, changes: [], tail: 0 };
    const bytes = whole ? whole.subarray(v.offset) : readRange(fd, v.offset, st.size - v.offset);
    const end = bytes.lastIndexOf(NL) + 1;
    const changes: Change[] = [];
    if (end > 0) {
      for (const line of splitLines(bytes.subarray(0, end))) {
        const c = parseChange(line);
        if (typeof c === "string") {
          warn("skipping a malformed line of the lease file", { file, reason: c });
        } else if (applyChange(v, c)) changes.push(c);
      }
      v.offset += end;
    }
    return { view: v, changes, tail: bytes.length - end };
  } catch (e) {
    if (e instanceof StoreUnavailableError) throw e;
    throw unreadable(file, e);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Take a new file whose snapshot is of the state the view already holds — it
 * was written from the view's snapshot (`parent`) at the view's revision: a
 * compaction of changes this reader has followed — without decoding the
 * snapshot: only its first bytes and where it ends.
 *
 * @returns Whether the view now reads on from the new file's first change line.
 */
function adoptSnapshot(view: FileView, bytes: Uint8Array, id: string): boolean {
  if (view.id === "" || view.snapshotId === "") return false;
  const nl = bytes.indexOf(NL);
  if (nl < 0) return false;
  const head = bytes.subarray(0, Math.min(nl, HEAD_BYTES));
  const m = decoder.decode(head).match(
    /^\{"revision":(\d+),"compacted":(\d+),"snapshot":"(\w+)","parent":"(\w+)",/,
  );
  if (!m || Number(m[1]) !== view.revision || m[4] !== view.snapshotId) return false;
  view.snapshotId = m[3];
  const compacted = Number(m[2]);
  if (compacted > view.compacted) {
    view.compacted = compacted;
    view.history = view.history.filter((c) => c.revision > compacted);
  }
  view.id = id;
  view.head = bytes.slice(0, Math.min(HEAD_BYTES, bytes.length));
  view.offset = view.snapshotBytes = nl + 1;
  view.unterminated = false;
  return true;
}

/**
 * Apply a change to a view (ignored when not newer than it).
 *
 * @returns Whether it was applied.
 */
export function applyChange(view: FileView, c: Change): boolean {
  if (c.revision <= view.revision) return false;
  view.revision = c.revision;
  const old = view.records.get(c.key);
  if (old && old.expiration !== null && old.expiration === view.nextExpiry) {
    view.nextExpiry = undefined;
  }
  if (c.value === undefined) {
    view.records.delete(c.key);
  } else {
    const expiration = c.expiration ?? null;
    view.records.set(c.key, { value: c.value, expiration });
    if (
      expiration !== null && view.nextExpiry !== undefined &&
      (view.nextExpiry === null || expiration < view.nextExpiry)
    ) {
      view.nextExpiry = expiration;
    }
  }
  view.history.push(c);
  // a long-lived reader never compacts: keep its history bounded
  if (view.history.length > 2 * LOG_LIMIT) {
    const dropped = view.history.splice(0, view.history.length - LOG_LIMIT);
    view.compacted = dropped[dropped.length - 1].revision;
  }
  return true;
}

/**
 * The earliest expiration among the view's records (computed again only
 * after the record holding it changed).
 *
 * @returns Ms since the epoch, or `null` when no record expires.
 */
export function nextExpiry(view: FileView): number | null {
  if (view.nextExpiry === undefined) {
    let min: number | null = null;
    for (const r of view.records.values()) {
      if (r.expiration !== null && (min === null || r.expiration < min)) min = r.expiration;
    }
    view.nextExpiry = min;
  }
  return view.nextExpiry;
}

/**
 * Write a view as the snapshot of a new file: its history is cut to the last
 * {@link LOG_LIMIT} changes, which the snapshot keeps, and its identity and
 * offsets become the new file's.
 *
 * @param view The state to write (changed in place).
 * @param write Writes the bytes as the new file (atomically) and returns its `dev:ino`.
 * @param forgetHistory Keep no history (watchers behind it must re-list).
 */
export function writeSnapshot(
  view: FileView,
  write: (bytes: Uint8Array) => string,
  forgetHistory = false,
): void {
  const keep = forgetHistory ? 0 : LOG_LIMIT;
  const drop = view.history.length - keep;
  if (forgetHistory) view.compacted = view.revision;
  else if (drop > 0) view.compacted = Math.max(view.compacted, view.history[drop - 1].revision);
  if (drop > 0) view.history = view.history.slice(drop);
  const id = crypto.randomUUID().replaceAll("-", "").slice(0, 16);
  const bytes = encoder.encode(
    JSON.stringify({
      revision: view.revision,
      compacted: view.compacted,
      snapshot: id,
      parent: view.snapshotId || undefined,
      records: Object.fromEntries(view.records),
      log: view.history,
    }) + "\n",
  );
  view.id = write(bytes);
  view.head = bytes.slice(0, Math.min(HEAD_BYTES, bytes.length));
  view.snapshotId = id;
  view.offset = view.snapshotBytes = bytes.length;
  view.unterminated = false;
}

/** One change as a journal line (with its newline). */
export function changeLine(c: Change): string {
  return JSON.stringify(c) + "\n";
}

const NL = 0x0a;
/** Enough for `{"revision":…,"compacted":…,"snapshot":"…","parent":"…",` with 15-digit revisions. */
const HEAD_BYTES = 128;

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
const decoder = new TextDecoder();
const encoder = new TextEncoder();

function unreadable(file: string, e: unknown): StoreUnavailableError {
  return new StoreUnavailableError(`cannot read lease file ${file}: ${(e as Error).message}`, {
    cause: e,
  });
}

function readRange(fd: number, position: number, length: number): Uint8Array {
  const buf = new Uint8Array(length);
  let got = 0;
  while (got < length) {
    const n = fs.readSync(fd, buf, got, length - got, position + got);
    if (n === 0) break;
    got += n;
  }
  return buf.subarray(0, got);
}

function splitLines(bytes: Uint8Array): string[] {
  const lines = decoder.decode(bytes).split("\n");
  lines.pop(); // after the last newline
  return lines;
}

function corrupt(file: string, why: string): StoreUnavailableError {
  return new StoreUnavailableError(
    `lease file ${file} is corrupt (${why}): move it aside and restart the agents; they will re-register`,
  );
}

/** A whole file: its snapshot line, then its complete change lines. */
function parseFile(
  file: string,
  bytes: Uint8Array,
  warn: (msg: string, fields: Record<string, unknown>) => void,
): FileView {
  const view = emptyView();
  if (bytes.length === 0) return view;
  const first = bytes.indexOf(NL);
  // no newline: a whole snapshot from an older weft (written by rename, so never torn)
  const snapEnd = first < 0 ? bytes.length : first;
  let s: {
    revision?: unknown;
    compacted?: unknown;
    snapshot?: unknown;
    records?: Record<string, { value?: unknown; expiration?: unknown }>;
    log?: unknown;
  };
  try {
    s = JSON.parse(decoder.decode(bytes.subarray(0, snapEnd)));
  } catch (e) {
    throw corrupt(file, (e as Error).message);
  }
  if (
    typeof s !== "object" || s === null || typeof s.revision !== "number" ||
    typeof s.records !== "object" || s.records === null || !Array.isArray(s.log)
  ) {
    throw corrupt(file, "missing revision, records or log");
  }
  view.revision = s.revision;
  view.compacted = typeof s.compacted === "number" ? s.compacted : 0;
  view.snapshotId = typeof s.snapshot === "string" ? s.snapshot : "";
  view.nextExpiry = undefined;
  for (const [key, r] of Object.entries(s.records)) {
    const expiration = r?.expiration ?? null;
    if (typeof r?.value !== "string" || (expiration !== null && typeof expiration !== "number")) {
      warn("skipping a malformed record of the lease file", {
        file,
        key,
        reason: "want {value: string, expiration: number | null}",
      });
      continue;
    }
    view.records.set(key, { value: r.value, expiration });
  }
  for (const e of s.log as unknown[]) {
    const c = checkChange(e);
    if (typeof c !== "string") view.history.push(c);
  }
  if (first < 0) {
    view.unterminated = true;
    view.offset = view.snapshotBytes = bytes.length;
    return view;
  }
  view.offset = view.snapshotBytes = first + 1;
  const end = bytes.lastIndexOf(NL) + 1;
  if (end > view.offset) {
    for (const line of splitLines(bytes.subarray(view.offset, end))) {
      const c = parseChange(line);
      if (typeof c === "string") {
        warn("skipping a malformed line of the lease file", { file, reason: c });
      } else applyChange(view, c);
    }
    view.offset = end;
  }
  return view;
}

function parseChange(line: string): Change | string {
  let json: unknown;
  try {
    json = JSON.parse(line);
  } catch {
    return `not JSON: ${JSON.stringify(line.slice(0, 80))}`;
  }
  return checkChange(json);
}

function checkChange(json: unknown): Change | string {
  const c = json as Record<string, unknown> | null;
  if (
    typeof c !== "object" || c === null || !Number.isInteger(c.revision) ||
    typeof c.key !== "string" || (c.value !== undefined && typeof c.value !== "string") ||
    (c.expiration !== undefined && c.expiration !== null && typeof c.expiration !== "number")
  ) {
    return `not a change {revision, key, value?, expiration?}: ${
      JSON.stringify(JSON.stringify(json)?.slice(0, 80))
    }`;
  }
  return c as unknown as Change;
}
