/**
 * A fake Kubernetes API server for the nodes weft reads and writes, faithful
 * enough that the real `@kubernetes/client-node` can be pointed at it:
 *
 * - `GET /api/v1/nodes`: list with `resourceVersion` (the list's revision),
 *   `limit`/`continue` pagination over a consistent snapshot, and
 *   `fieldSelector=metadata.name=<n>`; `watch=true` streams newline-delimited
 *   events (`ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK` with
 *   `allowWatchBookmarks`, `ERROR`) resuming after `resourceVersion`, with
 *   `timeoutSeconds`. A resourceVersion older than the compacted history gets
 *   an `ERROR` event carrying a 410 `Expired` Status, as the real server
 *   sends it; an expired continue token gets HTTP 410.
 * - `GET/PUT/PATCH/DELETE /api/v1/nodes/{name}` and `…/{name}/status`,
 *   `POST /api/v1/nodes`. PUT with a stale `metadata.resourceVersion` is a
 *   409 Conflict. PATCH takes `application/strategic-merge-patch+json`
 *   (maps merge; `null` deletes; `status.conditions` and `status.addresses`
 *   merge by `type`; `spec.podCIDRs` and `metadata.finalizers` merge as sets;
 *   `$patch: delete|replace`, `$deleteFromPrimitiveList/…` and
 *   `$setElementOrder/…` are understood), `application/merge-patch+json`
 *   (RFC 7386) and `application/json-patch+json` (RFC 6902); anything else
 *   is a 415. The main resource ignores status changes and the `status`
 *   subresource ignores spec changes, as the real node strategy does; a set
 *   podCIDR cannot be changed through the API (422).
 * - `GET /api/v1/namespaces/{ns}/pods/{name}` for pods added with
 *   {@link FakeKube.addPod} (weft reads its pod's `spec.nodeName`).
 * - Bearer-token auth (401 Status; the token can be rotated with
 *   {@link FakeKube.setToken}), optional basic auth, and optional TLS.
 * - `TCP_NODELAY` on every connection, as the API server (Go) sets it: on
 *   Deno served by testing/serve_nodelay.ts (HTTP/1.1 only), as Deno.serve
 *   leaves Nagle's algorithm on (on Bun, Bun.serve: not measured).
 *
 * Test helpers act as the cluster's controllers: {@link FakeKube.addNode},
 * {@link FakeKube.setPodCIDR} (no validation, so tests can write what a
 * broken controller would), {@link FakeKube.deleteNode},
 * {@link FakeKube.breakWatches}, {@link FakeKube.compactHistory},
 * {@link FakeKube.restart}, {@link FakeKube.down}/{@link FakeKube.up} and
 * failure injection.
 *
 * @module
 */

import { Hono } from "hono";
import type { Context } from "hono";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { sleepQuietly } from "../core/abort.ts";
import { type Clock, systemClock } from "../core/clock.ts";
import { type HttpServer, runtimeName, serveHttp } from "../core/runtime.ts";
import { serveNoDelay } from "./serve_nodelay.ts";

// deno-lint-ignore no-explicit-any
type Obj = Record<string, any>;

/** A watch event as the API server sends it. */
export interface WatchEvent {
  readonly type: "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK" | "ERROR";
  readonly object: Obj;
}

/** One request the fake answered, for assertions. */
export interface RequestRecord {
  readonly method: string;
  /** Path and query, e.g. `/api/v1/nodes?watch=true&resourceVersion=5`. */
  readonly url: string;
  readonly contentType: string | null;
  readonly status: number;
}

/** Options for {@link createFakeKube}. */
export interface FakeKubeOptions {
  /** Require `Authorization: Bearer <token>`; unset = no auth (see {@link FakeKube.setToken}). */
  token?: string;
  /** Also accept HTTP basic auth with these credentials (auth is required once either is set). */
  basicAuth?: { username: string; password: string };
  /** Serve HTTPS with this certificate and key (PEM). */
  tls?: { cert: string; key: string };
  /** Send a BOOKMARK to bookmark-enabled watches this often; 0 (default) = only on demand. */
  bookmarkIntervalMs?: number;
  /** The clock of the bookmark interval and of `timeoutSeconds` (default: the real one). */
  clock?: Clock;
  /** Address to listen on (default 127.0.0.1). */
  hostname?: string;
}

/** Options for {@link FakeKube.addNode}. */
export interface AddNodeOptions {
  /** `spec.podCIDRs` (spec.podCIDR is set to the first). */
  podCIDRs?: string[];
  annotations?: Record<string, string>;
  labels?: Record<string, string>;
  /** InternalIP address in `status.addresses`. */
  internalIP?: string;
}

/** A failure the fake returns instead of handling matching requests. */
export interface InjectedFailure {
  method?: string;
  /** Matched against path and query. */
  path?: RegExp;
  /** HTTP status to return, e.g. 500 or 403. */
  status: number;
  /** How many requests fail (default 1). */
  times?: number;
}

/** A running fake API server. */
export interface FakeKube {
  /** Base URL, e.g. `http://127.0.0.1:41234`. */
  readonly url: string;
  readonly port: number;
  /** The hono app (usable without a socket via `app.request`). */
  readonly app: Hono;
  /** Current resourceVersion of the whole store (last write). */
  readonly resourceVersion: number;
  /** Number of open watch streams. */
  readonly watchCount: number;
  /** Events written to watch streams so far (bookmarks included). */
  readonly watchEventsSent: number;
  /** Requests answered so far. */
  readonly requests: RequestRecord[];
  /** Create a node (as the kubelet registering). */
  addNode(name: string, options?: AddNodeOptions): Obj;
  /** Set `spec.podCIDRs`/`spec.podCIDR` (as the node IPAM controller), unvalidated. */
  setPodCIDR(name: string, podCIDRs: string[]): Obj;
  /** Merge annotations into a node (`null` removes one), as `kubectl annotate`. */
  annotate(name: string, annotations: Record<string, string | null>): Obj;
  /** Delete a node (as `kubectl delete node`). */
  deleteNode(name: string): void;
  /** A copy of a node, or undefined. */
  getNode(name: string): Obj | undefined;
  /** Names of all nodes, sorted. */
  nodeNames(): string[];
  /** Add a pod (only `spec.nodeName` matters to weft). */
  addPod(namespace: string, name: string, nodeName: string): void;
  /**
   * End every open watch stream: `abrupt` cuts it in the middle of an event
   * (a reset connection), otherwise it ends cleanly (a server-side timeout).
   */
  breakWatches(options?: { abrupt?: boolean }): void;
  /** Send a BOOKMARK at the current resourceVersion to bookmark-enabled watches. */
  sendBookmarks(): void;
  /**
   * Move the resourceVersion on without touching nodes, as writes to other
   * resource types do (they share etcd's revision): node watches see no
   * event, only a later bookmark carries the new revision.
   */
  advanceResourceVersion(by?: number): void;
  /**
   * Forget all history up to now: watches from an older resourceVersion and
   * outstanding continue tokens get 410 Gone.
   */
  compactHistory(): void;
  /** Fail matching requests. */
  injectFailure(failure: InjectedFailure): void;
  /** Accept this bearer token from now on, and no longer the previous one (a rotation). */
  setToken(token: string): void;
  /** Stop and start the server on the same port, keeping the data. */
  restart(): Promise<void>;
  /**
   * Stop serving, keeping the data (an API server that is down: connections
   * are refused, open watches cut) until {@link FakeKube.up}.
   */
  down(): Promise<void>;
  /** Serve again on the same port after {@link FakeKube.down}. */
  up(): Promise<void>;
  /** Stop the server. */
  close(): Promise<void>;
}

const NODE_MERGE_KEYS: Record<string, string> = {
  "status.conditions": "type",
  "status.addresses": "type",
  "metadata.ownerReferences": "uid",
};
const NODE_SET_LISTS = new Set(["spec.podCIDRs", "metadata.finalizers"]);

function isObj(v: unknown): v is Obj {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function clone<T>(v: T): T {
  return v === undefined ? v : JSON.parse(JSON.stringify(v));
}

function stripDirectives(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(stripDirectives);
  if (!isObj(v)) return v;
  const out: Obj = {};
  for (const [k, x] of Object.entries(v)) {
    if (k.startsWith("$")) continue;
    out[k] = stripDirectives(x);
  }
  return out;
}

/**
 * Apply a strategic merge patch to a node-shaped object.
 *
 * @param target The current object (not modified).
 * @param patch The patch.
 * @param path Dotted path of `target` from the object root ("" at the root).
 * @returns The patched object, or `undefined` when the patch deletes it.
 * @throws {Error} When the patch is not an object where one is needed.
 */
export function strategicMergePatch(target: unknown, patch: unknown, path = ""): unknown {
  if (!isObj(patch)) return clone(patch);
  if (patch.$patch === "delete") return undefined;
  if (patch.$patch === "replace") return stripDirectives(patch);
  const out: Obj = isObj(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (k === "$patch" || k === "$retainKeys" || k.startsWith("$setElementOrder/")) continue;
    if (k.startsWith("$deleteFromPrimitiveList/")) {
      const field = k.slice("$deleteFromPrimitiveList/".length);
      const drop = Array.isArray(v) ? v : [];
      if (Array.isArray(out[field])) {
        out[field] = out[field].filter((x: unknown) => !drop.includes(x));
      }
      continue;
    }
    const p = path ? `${path}.${k}` : k;
    if (v === null) {
      delete out[k];
    } else if (Array.isArray(v)) {
      const key = NODE_MERGE_KEYS[p];
      if (key) out[k] = mergeListByKey(Array.isArray(out[k]) ? out[k] : [], v, key, p);
      else if (NODE_SET_LISTS.has(p)) {
        const cur: unknown[] = Array.isArray(out[k]) ? out[k] : [];
        out[k] = [...cur, ...v.filter((x) => !cur.includes(x))];
      } else out[k] = stripDirectives(v);
    } else if (isObj(v)) {
      const merged = strategicMergePatch(out[k], v, p);
      if (merged === undefined) delete out[k];
      else out[k] = merged;
    } else {
      out[k] = v;
    }
  }
  return out;
}

function mergeListByKey(cur: Obj[], patch: unknown[], key: string, path: string): Obj[] {
  if (patch.some((e) => isObj(e) && e.$patch === "replace")) {
    return patch.filter((e) => !(isObj(e) && e.$patch === "replace")).map(stripDirectives) as Obj[];
  }
  let out = cur.slice();
  for (const el of patch) {
    if (!isObj(el)) throw new Error(`${path}: list elements must be objects with "${key}"`);
    if (el.$patch === "delete") {
      out = out.filter((x) => x[key] !== el[key]);
      continue;
    }
    const i = out.findIndex((x) => x[key] === el[key]);
    if (i >= 0) out[i] = strategicMergePatch(out[i], el, path) as Obj;
    else out.push(stripDirectives(el) as Obj);
  }
  return out;
}

/**
 * Apply an RFC 7386 JSON merge patch.
 *
 * @param target The current value (not modified).
 * @param patch The merge patch.
 * @returns The patched value.
 */
export function jsonMergePatch(target: unknown, patch: unknown): unknown {
  if (!isObj(patch)) return clone(patch);
  const out: Obj = isObj(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = jsonMergePatch(out[k], v);
  }
  return out;
}

function pointer(path: string): string[] {
  if (path === "") return [];
  if (!path.startsWith("/")) {
    throw new Error(`JSON pointer ${JSON.stringify(path)} must start with /`);
  }
  return path.slice(1).split("/").map((s) => s.replace(/~1/g, "/").replace(/~0/g, "~"));
}

/**
 * Apply an RFC 6902 JSON patch (add, remove, replace, move, copy, test).
 *
 * @param target The current value (not modified).
 * @param ops The operations.
 * @returns The patched value.
 * @throws {Error} When an operation fails (missing path, failed test).
 */
export function jsonPatch(target: unknown, ops: unknown): unknown {
  if (!Array.isArray(ops)) throw new Error("a JSON patch must be an array of operations");
  let doc = clone(target);
  const parentOf = (segs: string[]): [Obj | unknown[], string] => {
    let cur: unknown = doc;
    for (const s of segs.slice(0, -1)) {
      if (Array.isArray(cur)) cur = cur[Number(s)];
      else if (isObj(cur)) cur = cur[s];
      else cur = undefined;
      if (cur === undefined) throw new Error(`path /${segs.join("/")} does not exist`);
    }
    if (!Array.isArray(cur) && !isObj(cur)) {
      throw new Error(`path /${segs.join("/")} does not exist`);
    }
    return [cur, segs[segs.length - 1]];
  };
  const get = (segs: string[]): unknown => {
    if (segs.length === 0) return doc;
    const [p, k] = parentOf(segs);
    const v = Array.isArray(p) ? p[Number(k)] : p[k];
    if (v === undefined) throw new Error(`path /${segs.join("/")} does not exist`);
    return v;
  };
  const remove = (segs: string[]): unknown => {
    const v = get(segs);
    const [p, k] = parentOf(segs);
    if (Array.isArray(p)) p.splice(Number(k), 1);
    else delete p[k];
    return v;
  };
  const add = (segs: string[], value: unknown) => {
    if (segs.length === 0) {
      doc = clone(value);
      return;
    }
    const [p, k] = parentOf(segs);
    if (Array.isArray(p)) {
      const i = k === "-" ? p.length : Number(k);
      if (!Number.isInteger(i) || i < 0 || i > p.length) throw new Error(`index ${k} out of range`);
      p.splice(i, 0, clone(value));
    } else p[k] = clone(value);
  };
  for (const op of ops) {
    if (!isObj(op) || typeof op.op !== "string" || typeof op.path !== "string") {
      throw new Error(`invalid JSON patch operation ${JSON.stringify(op)}`);
    }
    const segs = pointer(op.path);
    switch (op.op) {
      case "add":
        add(segs, op.value);
        break;
      case "remove":
        remove(segs);
        break;
      case "replace":
        get(segs);
        if (segs.length === 0) doc = clone(op.value);
        else {
          const [p, k] = parentOf(segs);
          if (Array.isArray(p)) p[Number(k)] = clone(op.value);
          else p[k] = clone(op.value);
        }
        break;
      case "move":
        add(segs, remove(pointer(String(op.from))));
        break;
      case "copy":
        add(segs, get(pointer(String(op.from))));
        break;
      case "test":
        if (JSON.stringify(get(segs)) !== JSON.stringify(op.value)) {
          throw new Error(`test failed at ${op.path}`);
        }
        break;
      default:
        throw new Error(`unknown JSON patch operation ${JSON.stringify(op.op)}`);
    }
  }
  return doc;
}

function statusBody(code: number, reason: string, message: string, details?: Obj): Obj {
  return {
    kind: "Status",
    apiVersion: "v1",
    metadata: {},
    status: "Failure",
    message,
    reason,
    ...(details ? { details } : {}),
    code,
  };
}

const REASONS: Record<number, string> = {
  400: "BadRequest",
  401: "Unauthorized",
  403: "Forbidden",
  404: "NotFound",
  409: "Conflict",
  410: "Expired",
  415: "UnsupportedMediaType",
  422: "Invalid",
  500: "InternalError",
  503: "ServiceUnavailable",
  504: "Timeout",
};

class ApiError extends Error {
  constructor(readonly code: number, message: string, readonly details?: Obj) {
    super(message);
  }
}

interface Watcher {
  readonly nameFilter?: string;
  readonly bookmarks: boolean;
  send(ev: WatchEvent): void;
  end(abrupt: boolean): void;
}

function rfc3339(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
}

/**
 * Start a fake API server on 127.0.0.1 (a free port).
 *
 * @param options Auth token, TLS material, bookmark interval.
 * @returns The running fake.
 * @throws {Error} When it cannot listen.
 * @example
 * ```ts
 * const kube = await createFakeKube({ token: "t" });
 * kube.addNode("n1", { podCIDRs: ["10.5.1.0/24"] });
 * await kube.close();
 * ```
 */
export async function createFakeKube(options: FakeKubeOptions = {}): Promise<FakeKube> {
  const hostname = options.hostname ?? "127.0.0.1";
  const nodes = new Map<string, Obj>();
  const pods = new Map<string, Obj>();
  const history: { rv: number; type: "ADDED" | "MODIFIED" | "DELETED"; object: Obj }[] = [];
  const watchers = new Set<Watcher>();
  /** Events written to watch streams, for load counts. */
  let eventsSent = 0;
  const snapshots = new Map<number, Obj[]>();
  const failures: (InjectedFailure & { left: number })[] = [];
  const requests: RequestRecord[] = [];
  let rv = 1;
  let compactedRv = 0;
  let token = options.token;
  let uid = 0;

  const write = (type: "ADDED" | "MODIFIED" | "DELETED", obj: Obj): Obj => {
    rv++;
    const stored = type === "DELETED"
      ? { ...obj, metadata: { ...obj.metadata, resourceVersion: String(rv) } }
      : { ...obj, metadata: { ...obj.metadata, resourceVersion: String(rv) } };
    if (type === "DELETED") nodes.delete(stored.metadata.name);
    else nodes.set(stored.metadata.name, stored);
    history.push({ rv, type, object: stored });
    const ev: WatchEvent = { type, object: { kind: "Node", apiVersion: "v1", ...stored } };
    for (const w of watchers) {
      if (!w.nameFilter || w.nameFilter === stored.metadata.name) w.send(ev);
    }
    return stored;
  };

  const newNode = (name: string, o: AddNodeOptions): Obj => ({
    metadata: {
      name,
      uid: `00000000-0000-4000-8000-${String(++uid).padStart(12, "0")}`,
      creationTimestamp: rfc3339(Date.now()),
      labels: { "kubernetes.io/hostname": name, ...o.labels },
      annotations: { ...o.annotations },
    },
    spec: o.podCIDRs?.length ? { podCIDR: o.podCIDRs[0], podCIDRs: [...o.podCIDRs] } : {},
    status: {
      conditions: [],
      addresses: o.internalIP ? [{ type: "InternalIP", address: o.internalIP }] : [],
    },
  });

  const mustGet = (name: string): Obj => {
    const n = nodes.get(name);
    if (!n) throw new ApiError(404, `nodes "${name}" not found`, { name, kind: "nodes" });
    return n;
  };

  /** Apply the node strategy's rules to an update coming through the API. */
  const admit = (old: Obj, next: Obj, sub: "main" | "status"): Obj => {
    if (!isObj(next) || !isObj(next.metadata)) {
      throw new ApiError(400, "the object must have metadata");
    }
    const sentRv = next.metadata.resourceVersion;
    if (sentRv !== undefined && sentRv !== "" && sentRv !== old.metadata.resourceVersion) {
      throw new ApiError(
        409,
        `Operation cannot be fulfilled on nodes "${old.metadata.name}": the object has been modified; please apply your changes to the latest version and try again`,
        { name: old.metadata.name, kind: "nodes" },
      );
    }
    const out: Obj = {
      ...next,
      metadata: {
        ...next.metadata,
        name: old.metadata.name,
        uid: old.metadata.uid,
        creationTimestamp: old.metadata.creationTimestamp,
      },
    };
    delete out.kind;
    delete out.apiVersion;
    if (sub === "status") {
      out.spec = old.spec;
    } else {
      out.status = old.status;
      const spec = isObj(out.spec) ? out.spec : {};
      const cidrs: string[] = Array.isArray(spec.podCIDRs) && spec.podCIDRs.length
        ? spec.podCIDRs
        : spec.podCIDR
        ? [spec.podCIDR]
        : [];
      const oldCidrs: string[] = old.spec?.podCIDRs ?? [];
      if (oldCidrs.length && JSON.stringify(oldCidrs) !== JSON.stringify(cidrs)) {
        throw new ApiError(
          422,
          `Node "${old.metadata.name}" is invalid: spec.podCIDRs: Forbidden: node updates may not change podCIDR except from "" to valid`,
        );
      }
      if (cidrs.length > 2) {
        throw new ApiError(
          422,
          `Node "${old.metadata.name}" is invalid: spec.podCIDRs: Too many: ${cidrs.length}: must have at most 2 items`,
        );
      }
      out.spec = cidrs.length ? { ...spec, podCIDR: cidrs[0], podCIDRs: cidrs } : spec;
    }
    return out;
  };

  const app = new Hono();

  app.use("*", async (c, next) => {
    const url = new URL(c.req.url);
    const at = url.pathname + url.search;
    const record = (status: number) =>
      requests.push({
        method: c.req.method,
        url: at,
        contentType: c.req.header("content-type") ?? null,
        status,
      });
    const f = failures.find((x) =>
      x.left > 0 && (!x.method || x.method === c.req.method) && (!x.path || x.path.test(at))
    );
    if (f) {
      f.left--;
      record(f.status);
      return c.json(
        statusBody(f.status, REASONS[f.status] ?? "Unknown", `injected failure ${f.status}`),
        f.status as 500,
      );
    }
    if (token !== undefined || options.basicAuth) {
      const auth = c.req.header("authorization");
      const basic = options.basicAuth &&
        `Basic ${btoa(`${options.basicAuth.username}:${options.basicAuth.password}`)}`;
      if (!auth || (auth !== `Bearer ${token}` && auth !== basic)) {
        record(401);
        return c.json(statusBody(401, "Unauthorized", "Unauthorized"), 401);
      }
    }
    await next();
    record(c.res.status);
  });

  app.onError((err, c) => {
    if (err instanceof ApiError) {
      return c.json(
        statusBody(err.code, REASONS[err.code] ?? "Unknown", err.message, err.details),
        err.code as 400,
      );
    }
    return c.json(statusBody(500, "InternalError", String(err)), 500);
  });

  const nameFilterOf = (c: Context): string | undefined => {
    const fs = c.req.query("fieldSelector");
    if (c.req.query("labelSelector")) {
      throw new ApiError(400, "labelSelector is not supported by this fake API server");
    }
    if (!fs) return undefined;
    const m = /^metadata\.name==?([^,]+)$/.exec(fs);
    if (!m) {
      throw new ApiError(
        400,
        `unable to parse requirement: field label not supported by this fake: ${fs}`,
      );
    }
    return m[1];
  };

  const listNodes = (c: Context) => {
    const nameFilter = nameFilterOf(c);
    const limit = Number(c.req.query("limit") ?? 0);
    const cont = c.req.query("continue");
    const rvParam = c.req.query("resourceVersion");
    let snapRv = rv;
    let items: Obj[];
    let start = 0;
    if (cont) {
      let tok: { rv: number; start: number };
      try {
        tok = JSON.parse(atob(cont));
      } catch {
        throw new ApiError(400, `continue key is not valid: ${cont}`);
      }
      const snap = snapshots.get(tok.rv);
      if (tok.rv <= compactedRv || !snap) {
        throw new ApiError(
          410,
          "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
        );
      }
      snapRv = tok.rv;
      items = snap;
      start = tok.start;
    } else {
      if (rvParam && rvParam !== "0" && Number(rvParam) > rv) {
        throw new ApiError(504, `Too large resource version: ${rvParam}, current: ${rv}`);
      }
      items = [...nodes.values()]
        .filter((n) => !nameFilter || n.metadata.name === nameFilter)
        .sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : 1));
    }
    const end = limit > 0 ? Math.min(items.length, start + limit) : items.length;
    const page = items.slice(start, end);
    const metadata: Obj = { resourceVersion: String(snapRv) };
    if (end < items.length) {
      snapshots.set(snapRv, items);
      metadata.continue = btoa(JSON.stringify({ rv: snapRv, start: end }));
      if (!nameFilter) metadata.remainingItemCount = items.length - end;
    } else if (cont) {
      snapshots.delete(snapRv);
    }
    return new Response(
      JSON.stringify({ kind: "NodeList", apiVersion: "v1", metadata, items: page }),
      {
        headers: { "content-type": "application/json" },
      },
    );
  };

  const watchNodes = (c: Context) => {
    const nameFilter = nameFilterOf(c);
    const rvParam = c.req.query("resourceVersion") ?? "";
    const bookmarks = c.req.query("allowWatchBookmarks") === "true";
    const timeoutSeconds = Number(c.req.query("timeoutSeconds") ?? 0);
    const enc = new TextEncoder();
    let watcher: Watcher | undefined;
    const timers = new AbortController();
    const stop = () => {
      if (watcher) watchers.delete(watcher);
      timers.abort();
    };
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        let open = true;
        const send = (ev: WatchEvent) => {
          if (!open) return;
          eventsSent++;
          controller.enqueue(enc.encode(JSON.stringify(ev) + "\n"));
        };
        const end = (abrupt: boolean) => {
          if (!open) return;
          open = false;
          stop();
          // A reset connection: half an event, then the end. (Erroring the
          // body stream instead crashes Deno 2.9's server.)
          if (abrupt) controller.enqueue(enc.encode('{"type":"MODIFIED","object":{"kind":"No'));
          controller.close();
        };
        watcher = { nameFilter, bookmarks, send, end };
        const from = rvParam === "" || rvParam === "0" ? null : Number(rvParam);
        if (from !== null && (!Number.isFinite(from) || from < compactedRv)) {
          send({
            type: "ERROR",
            object: statusBody(
              410,
              "Expired",
              `too old resource version: ${rvParam} (${compactedRv + 1})`,
            ),
          });
          end(false);
          return;
        }
        if (from === null) {
          for (const n of [...nodes.values()]) {
            if (!nameFilter || n.metadata.name === nameFilter) {
              send({ type: "ADDED", object: { kind: "Node", apiVersion: "v1", ...n } });
            }
          }
        } else {
          for (const h of history) {
            if (h.rv > from && (!nameFilter || h.object.metadata.name === nameFilter)) {
              send({ type: h.type, object: { kind: "Node", apiVersion: "v1", ...h.object } });
            }
          }
        }
        watchers.add(watcher);
        const clock = options.clock ?? systemClock;
        if (timeoutSeconds > 0) {
          sleepQuietly(clock, timeoutSeconds * 1000, timers.signal).then((due) =>
            due && end(false)
          );
        }
        const every = options.bookmarkIntervalMs;
        if (bookmarks && every) {
          (async () => {
            while (await sleepQuietly(clock, every, timers.signal)) send(bookmarkEvent());
          })();
        }
      },
      cancel() {
        stop();
      },
    });
    return new Response(body, {
      headers: { "content-type": "application/json", "cache-control": "no-cache" },
    });
  };

  const bookmarkEvent = (): WatchEvent => ({
    type: "BOOKMARK",
    object: { kind: "Node", apiVersion: "v1", metadata: { resourceVersion: String(rv) } },
  });

  const readJson = async (c: Context): Promise<unknown> => {
    try {
      return JSON.parse(await c.req.text());
    } catch (e) {
      throw new ApiError(400, `the body is not valid JSON: ${(e as Error).message}`);
    }
  };

  // Discovery, as client-go (kubectl) reads it before any request: the
  // legacy documents (no aggregated discovery, so clients fall back to them).
  app.get("/version", (c) =>
    c.json({
      major: "1",
      minor: "32",
      gitVersion: "v1.32.0-weft-fake",
      platform: "linux/amd64",
    }));
  app.get("/api", (c) =>
    c.json({
      kind: "APIVersions",
      versions: ["v1"],
      serverAddressByClientCIDRs: [{
        clientCIDR: "0.0.0.0/0",
        serverAddress: new URL(c.req.url).host,
      }],
    }));
  app.get("/apis", (c) => c.json({ kind: "APIGroupList", apiVersion: "v1", groups: [] }));
  app.get("/api/v1", (c) => c.json(API_RESOURCES));

  app.get("/api/v1/nodes", (c) => {
    const w = c.req.query("watch");
    return w === "true" || w === "1" ? watchNodes(c) : listNodes(c);
  });

  app.post("/api/v1/nodes", async (c) => {
    const body = await readJson(c) as Obj;
    const name = body?.metadata?.name;
    if (typeof name !== "string" || name === "") {
      throw new ApiError(422, "Node is invalid: metadata.name: Required value: name is required");
    }
    if (nodes.has(name)) {
      throw new ApiError(409, `nodes "${name}" already exists`, { name, kind: "nodes" });
    }
    const base = newNode(name, {});
    const obj = {
      metadata: { ...base.metadata, ...body.metadata, uid: base.metadata.uid },
      spec: body.spec ?? {},
      status: body.status ?? base.status,
    };
    const spec = obj.spec;
    if (spec.podCIDR && !spec.podCIDRs) spec.podCIDRs = [spec.podCIDR];
    if (spec.podCIDRs?.length) spec.podCIDR = spec.podCIDRs[0];
    const stored = write("ADDED", obj);
    return c.json({ kind: "Node", apiVersion: "v1", ...stored }, 201);
  });

  for (const sub of ["main", "status"] as const) {
    const path = sub === "main" ? "/api/v1/nodes/:name" : "/api/v1/nodes/:name/status";
    app.get(
      path,
      (c) => c.json({ kind: "Node", apiVersion: "v1", ...mustGet(c.req.param("name")) }),
    );
    app.put(path, async (c) => {
      const old = mustGet(c.req.param("name"));
      const next = admit(old, await readJson(c) as Obj, sub);
      const stored = write("MODIFIED", next);
      return c.json({ kind: "Node", apiVersion: "v1", ...stored });
    });
    app.patch(path, async (c) => {
      const old = mustGet(c.req.param("name"));
      const type = (c.req.header("content-type") ?? "").split(";")[0].trim();
      const patch = await readJson(c);
      let next: unknown;
      try {
        if (type === "application/strategic-merge-patch+json") {
          if (!isObj(patch)) throw new Error("a strategic merge patch must be a JSON object");
          next = strategicMergePatch(old, patch);
        } else if (type === "application/merge-patch+json") {
          next = jsonMergePatch(old, patch);
        } else if (type === "application/json-patch+json") {
          next = jsonPatch(old, patch);
        } else {
          throw new ApiError(
            415,
            `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json; got ${
              JSON.stringify(type)
            }`,
          );
        }
      } catch (e) {
        if (e instanceof ApiError) throw e;
        throw new ApiError(
          422,
          `the server rejected our request due to an error in our request: ${(e as Error).message}`,
        );
      }
      const admitted = admit(old, next as Obj, sub);
      if (JSON.stringify(admitted) === JSON.stringify(old)) {
        return c.json({ kind: "Node", apiVersion: "v1", ...old }); // a no-op patch writes nothing
      }
      const stored = write("MODIFIED", admitted);
      return c.json({ kind: "Node", apiVersion: "v1", ...stored });
    });
  }

  app.delete("/api/v1/nodes/:name", (c) => {
    const old = mustGet(c.req.param("name"));
    write("DELETED", old);
    return c.json({
      kind: "Status",
      apiVersion: "v1",
      metadata: {},
      status: "Success",
      details: { name: old.metadata.name, kind: "nodes", uid: old.metadata.uid },
    });
  });

  app.get("/api/v1/namespaces/:ns/pods/:name", (c) => {
    const key = `${c.req.param("ns")}/${c.req.param("name")}`;
    const pod = pods.get(key);
    if (!pod) {
      throw new ApiError(404, `pods "${c.req.param("name")}" not found`, {
        name: c.req.param("name"),
        kind: "pods",
      });
    }
    return c.json(pod);
  });

  app.all("*", (c) => {
    throw new ApiError(
      404,
      `the server could not find the requested resource (${c.req.method} ${
        new URL(c.req.url).pathname
      })`,
    );
  });

  // on Deno through node:http(s): Deno.serve leaves Nagle on (40 ms stalls a Go server has not)
  const serve = (port: number) =>
    (runtimeName === "deno" ? serveNoDelay : serveHttp)({
      hostname,
      port,
      fetch: app.fetch,
      tls: options.tls,
    });
  let server: HttpServer = await serve(0);
  let serving = true;
  const port = server.port;
  const scheme = options.tls ? "https" : "http";

  const endWatches = (abrupt: boolean) => {
    for (const w of [...watchers]) w.end(abrupt);
  };
  const down = async () => {
    if (!serving) return;
    serving = false;
    endWatches(true);
    await server.shutdown();
  };
  const up = async () => {
    if (serving) return;
    server = await serve(port);
    serving = true;
  };

  return {
    url: `${scheme}://${hostname}:${port}`,
    port,
    app,
    get resourceVersion() {
      return rv;
    },
    get watchCount() {
      return watchers.size;
    },
    get watchEventsSent() {
      return eventsSent;
    },
    requests,
    addNode(name, o = {}) {
      if (nodes.has(name)) throw new Error(`node ${name} already exists in the fake`);
      return clone(write("ADDED", newNode(name, o)));
    },
    setPodCIDR(name, podCIDRs) {
      const n = nodes.get(name);
      if (!n) throw new Error(`node ${name} does not exist in the fake`);
      const spec = podCIDRs.length
        ? { ...n.spec, podCIDR: podCIDRs[0], podCIDRs: [...podCIDRs] }
        : (() => {
          const s = { ...n.spec };
          delete s.podCIDR;
          delete s.podCIDRs;
          return s;
        })();
      return clone(write("MODIFIED", { ...n, spec }));
    },
    annotate(name, annotations) {
      const n = nodes.get(name);
      if (!n) throw new Error(`node ${name} does not exist in the fake`);
      const merged: Record<string, string> = { ...n.metadata.annotations };
      for (const [k, v] of Object.entries(annotations)) {
        if (v === null) delete merged[k];
        else merged[k] = v;
      }
      return clone(write("MODIFIED", { ...n, metadata: { ...n.metadata, annotations: merged } }));
    },
    deleteNode(name) {
      const n = nodes.get(name);
      if (!n) throw new Error(`node ${name} does not exist in the fake`);
      write("DELETED", n);
    },
    getNode(name) {
      const n = nodes.get(name);
      return n ? clone(n) : undefined;
    },
    nodeNames() {
      return [...nodes.keys()].sort();
    },
    addPod(namespace, name, nodeName) {
      pods.set(`${namespace}/${name}`, {
        kind: "Pod",
        apiVersion: "v1",
        metadata: { name, namespace, uid: `pod-${++uid}`, resourceVersion: String(rv) },
        spec: { nodeName, containers: [{ name: "weft", image: "weft" }] },
      });
    },
    breakWatches(o = {}) {
      endWatches(o.abrupt ?? false);
    },
    sendBookmarks() {
      for (const w of watchers) if (w.bookmarks) w.send(bookmarkEvent());
    },
    advanceResourceVersion(by = 1) {
      rv += by;
    },
    compactHistory() {
      compactedRv = rv;
      history.length = 0;
      snapshots.clear();
    },
    setToken(t) {
      token = t;
    },
    injectFailure(f) {
      failures.push({ ...f, left: f.times ?? 1 });
    },
    async restart() {
      await down();
      await up();
    },
    down,
    up,
    async close() {
      endWatches(true);
      if (serving) await server.shutdown();
      serving = false;
    },
  };
}

/** `GET /api/v1`: the resources this fake serves, as kube-apiserver lists them. */
const API_RESOURCES = {
  kind: "APIResourceList",
  groupVersion: "v1",
  resources: [
    {
      name: "nodes",
      singularName: "node",
      namespaced: false,
      kind: "Node",
      verbs: ["create", "delete", "get", "list", "patch", "update", "watch"],
      shortNames: ["no"],
    },
    {
      name: "nodes/status",
      singularName: "",
      namespaced: false,
      kind: "Node",
      verbs: ["get", "patch", "update"],
    },
    {
      name: "pods",
      singularName: "pod",
      namespaced: true,
      kind: "Pod",
      verbs: ["get"],
      shortNames: ["po"],
    },
  ],
};

/**
 * Write a kubeconfig file pointing at a fake (token and CA optional).
 *
 * @param dir Directory to write `kubeconfig` into.
 * @param kube The fake.
 * @param options Bearer token and the CA certificate (PEM) to trust.
 * @returns The file's path.
 */
export function writeKubeconfig(
  dir: string,
  kube: Pick<FakeKube, "url">,
  options: { token?: string; ca?: string } = {},
): string {
  const cluster = [`    server: ${kube.url}`];
  // client-node 2 refuses plain http unless TLS verification is "skipped"
  if (kube.url.startsWith("http:")) cluster.push("    insecure-skip-tls-verify: true");
  if (options.ca) cluster.push(`    certificate-authority-data: ${btoa(options.ca)}`);
  const user = options.token ? [`    token: ${options.token}`] : ["    {}"];
  const text = [
    "apiVersion: v1",
    "kind: Config",
    "clusters:",
    "- name: fake",
    "  cluster:",
    ...cluster,
    "users:",
    "- name: weft",
    "  user:",
    ...user,
    "contexts:",
    "- name: fake",
    "  context:",
    "    cluster: fake",
    "    user: weft",
    "current-context: fake",
    "",
  ].join("\n");
  const path = join(dir, "kubeconfig");
  writeFileSync(path, text);
  return path;
}

/**
 * Make a throwaway CA and a server certificate for an IP address signed by it,
 * with the openssl command (rustls, under Deno, refuses a self-signed
 * certificate that is its own CA).
 *
 * @param ip The server's address, in the certificate's subjectAltName (default 127.0.0.1).
 * @returns PEM CA certificate, server certificate and server key.
 * @throws {Error} When openssl is missing or fails.
 */
export function makeTestCerts(ip = "127.0.0.1"): { ca: string; cert: string; key: string } {
  const dir = mkdtempSync(join(tmpdir(), "weft-kube-cert-"));
  const f = (name: string) => join(dir, name);
  const ossl = (...args: string[]) => execFileSync("openssl", args, { stdio: "pipe" });
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  try {
    ossl(
      "req",
      "-x509",
      ...ec,
      "-days",
      "2",
      "-subj",
      "/CN=weft test CA",
      "-keyout",
      f("ca.key"),
      "-out",
      f("ca.pem"),
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
    );
    ossl("req", ...ec, "-subj", `/CN=${ip}`, "-keyout", f("key.pem"), "-out", f("csr.pem"));
    writeFileSync(
      f("ext.cnf"),
      `basicConstraints=CA:FALSE\nsubjectAltName=IP:${ip}\nextendedKeyUsage=serverAuth\n`,
    );
    ossl(
      "x509",
      "-req",
      "-in",
      f("csr.pem"),
      "-CA",
      f("ca.pem"),
      "-CAkey",
      f("ca.key"),
      "-CAcreateserial",
      "-days",
      "2",
      "-extfile",
      f("ext.cnf"),
      "-out",
      f("cert.pem"),
    );
    return {
      ca: readFileSync(f("ca.pem"), "utf8"),
      cert: readFileSync(f("cert.pem"), "utf8"),
      key: readFileSync(f("key.pem"), "utf8"),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
