/**
 * List and watch of Kubernetes nodes, as client-go's reflector does it:
 *
 * - {@link listNodes}: page by page (`limit`/`continue`), the next page
 *   fetched while this one is decoded; an expired continue token (410)
 *   starts the list over.
 * - {@link followNodes}: a watch (`?watch=true`, newline-delimited events)
 *   that resumes from the last resourceVersion it saw — of an event or of a
 *   BOOKMARK — after a broken, silent or refused stream, with backoff; the
 *   server's own timeout (`timeoutSeconds`) just opens the next stream. When
 *   the history it needs is gone (410 Gone / an `ERROR` event with code 410)
 *   it lists again and hands over the full list. Without a starting
 *   resourceVersion it lists first. The store's peer watch and its wait for
 *   this node's podCIDR both follow nodes this way.
 *
 * @module
 */

import type { Clock } from "../../core/clock.ts";
import type { Logger } from "../../core/log.ts";
import { resumableNdjson } from "../../core/ndjson_watch.ts";
import { ApiCallError, type KubeApi, type KubeClient } from "./api.ts";

/** A watch event as the API server sends it. */
export interface NodeWatchEvent {
  readonly type: "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK" | "ERROR";
  // deno-lint-ignore no-explicit-any
  readonly object: any;
}

/**
 * A full list, handed over by {@link followNodes} first (without a starting
 * resourceVersion) and whenever the watch fell behind the server's history:
 * every node now; anything not in it is gone. (`LISTED` is weft's, not the
 * API server's.)
 */
export interface NodeList {
  readonly type: "LISTED";
  readonly items: unknown[];
  readonly resourceVersion: string;
}

/** What {@link followNodes} yields: events, or a full list. BOOKMARKs are not handed over. */
export type NodeChange = NodeWatchEvent | NodeList;

/** Options of {@link listNodes}. */
export interface ListNodesOptions {
  /** Sees each raw node once. */
  onItem(node: unknown): void;
  /** The list starts over (an expired continue token): forget what `onItem` saw. */
  onRestart(): void;
  readonly signal?: AbortSignal;
  /** e.g. `metadata.name=n1`. */
  readonly fieldSelector?: string;
  /** Nodes per page (client-go's reflector: 500). */
  readonly pageSize: number;
  readonly logger: Logger;
}

type Page = { items?: unknown[]; metadata?: { resourceVersion?: string; continue?: string } };

/**
 * List nodes page by page.
 *
 * @param api The API client.
 * @param options Item sink, page size, field selector, abort signal.
 * @returns The list's resourceVersion (watch from it).
 * @throws {ApiCallError} When the server refuses or cannot be reached.
 */
export async function listNodes(api: KubeApi, options: ListNodesOptions): Promise<string> {
  const c = await api.client();
  const fetchPage = async (cont?: string): Promise<Page> => {
    const query = new URLSearchParams({ limit: String(options.pageSize) });
    if (cont) query.set("continue", cont);
    if (options.fieldSelector) query.set("fieldSelector", options.fieldSelector);
    return await api.request(c, "GET", `/api/v1/nodes?${query}`, "listing nodes", {
      signal: options.signal,
    }) as Page;
  };
  for (let restart = 0;; restart++) {
    let cont: string | undefined;
    try {
      // Raw JSON rather than CoreV1Api.listNode (client-node's model
      // deserialisation doubled the time and memory of a 5000-node list);
      // the next page is fetched while this one is decoded.
      let page = await fetchPage();
      for (;;) {
        cont = page.metadata?.continue || undefined;
        const next = cont ? fetchPage(cont) : undefined;
        next?.catch(() => {}); // awaited below; keep an early failure from going unhandled
        for (const item of page.items ?? []) options.onItem(item);
        if (!next) return page.metadata?.resourceVersion ?? "";
        page = await next;
      }
    } catch (e) {
      // an expired continue token: start the list over (as client-go does)
      if (e instanceof ApiCallError && e.code === 410 && cont !== undefined && restart < 3) {
        options.logger.info("node list was compacted while paging, starting over");
        options.onRestart();
        continue;
      }
      throw e;
    }
  }
}

/** Options of {@link followNodes}. */
export interface FollowNodesOptions {
  /** Watch from this resourceVersion (from a list); without it, list first. */
  readonly from?: string;
  /** e.g. `metadata.name=n1`. */
  readonly fieldSelector?: string;
  /** Ask for BOOKMARK events (they move the resume point without a change). */
  readonly bookmarks?: boolean;
  /** The server-side timeout of each watch request, seconds (client-go: random 300–600). */
  timeoutSeconds(): number;
  readonly pageSize: number;
  readonly signal: AbortSignal;
  readonly clock: Clock;
  readonly random: () => number;
  readonly logger: Logger;
  /** Failures that end the watch instead of being retried. */
  readonly isFatal?: (error: unknown) => boolean;
  /** Told before each backoff. */
  readonly onRetry?: (error: unknown, delayMs: number) => void;
}

/** The history a watch needs is gone: list again. */
class Gone extends Error {
  override name = "Gone";
}

/**
 * Follow nodes: a full list when needed, then their changes, for as long as
 * `signal` lives.
 *
 * @param api The API client.
 * @param options Where to start, selector, bookmarks, timeouts, clock and
 *   randomness of the backoff, failure hooks.
 * @returns Batches of changes (one per chunk the server sent, or one list).
 * @throws What `isFatal` accepts.
 * @example
 * ```ts
 * for await (const batch of followNodes(api, { from: rv, bookmarks: true, ...common })) {
 *   for (const change of batch) if (change.type === "LISTED") resync(change.items); else apply(change);
 * }
 * ```
 */
export function followNodes(
  api: KubeApi,
  options: FollowNodesOptions,
): AsyncGenerator<NodeChange[]> {
  const log = options.logger;
  let client: KubeClient | undefined;
  let server = "the API server";
  return resumableNdjson<string | undefined, NodeWatchEvent, NodeChange>({
    from: options.from,
    signal: options.signal,
    clock: options.clock,
    random: options.random,
    onEnd: "resume", // the server's timeoutSeconds: go on from the last resourceVersion
    async open(rv, signal) {
      if (rv === undefined) throw new Gone("no resourceVersion to watch from yet");
      const c = client = await api.client();
      server = c.server;
      const timeoutSeconds = options.timeoutSeconds();
      const url = new URL(c.server + "/api/v1/nodes");
      url.searchParams.set("watch", "true");
      url.searchParams.set("resourceVersion", rv);
      if (options.bookmarks) url.searchParams.set("allowWatchBookmarks", "true");
      if (options.fieldSelector) url.searchParams.set("fieldSelector", options.fieldSelector);
      url.searchParams.set("timeoutSeconds", String(timeoutSeconds));
      let res: Response;
      try {
        res = await api.send(c, url, { signal });
      } catch (e) {
        throw api.error(c, "watching nodes", e);
      }
      if (res.status === 410) {
        await res.body?.cancel();
        throw new Gone(`watch from resourceVersion ${rv} is too old`);
      }
      if (!res.ok || !res.body) {
        const text = await res.text().catch(() => "");
        throw api.error(c, "watching nodes", { code: res.status, body: text });
      }
      return {
        body: res.body,
        what: `node watch on ${c.server}`,
        // the server ends the watch after timeoutSeconds; silence well past it is a dead connection
        idleTimeoutMs: (timeoutSeconds + 30) * 1000,
      };
    },
    parse(line) {
      let ev: unknown;
      try {
        ev = JSON.parse(line);
      } catch {
        log.warn("ignoring an unreadable watch event", { server, line: line.slice(0, 120) });
        return undefined;
      }
      // an event is an object with a type; anything else (null, a number) is not one
      if (
        typeof ev !== "object" || ev === null || typeof (ev as NodeWatchEvent).type !== "string"
      ) {
        log.warn("ignoring a watch line that is not an event", {
          server,
          line: line.slice(0, 120),
        });
        return undefined;
      }
      return ev as NodeWatchEvent;
    },
    step(ev, rv) {
      const objRv: string | undefined = ev.object?.metadata?.resourceVersion || undefined;
      if (ev.type === "BOOKMARK") return { cursor: objRv ?? rv };
      if (ev.type === "ERROR") {
        if (ev.object?.code === 410) {
          throw new Gone(ev.object?.message ?? "too old resource version");
        }
        throw api.error(client, "watching nodes", {
          code: ev.object?.code ?? 500,
          body: ev.object,
        });
      }
      return { items: [ev], cursor: objRv ?? rv };
    },
    async recover(error, rv, signal) {
      if (!(error instanceof Gone)) return undefined;
      if (rv !== undefined) {
        log.warn("node watch fell behind the API server's history, re-listing", { from: rv });
      }
      const items: unknown[] = [];
      const resourceVersion = await listNodes(api, {
        onItem: (item) => items.push(item),
        onRestart: () => (items.length = 0),
        signal,
        fieldSelector: options.fieldSelector,
        pageSize: options.pageSize,
        logger: log,
      });
      return { items: [{ type: "LISTED", items, resourceVersion }], cursor: resourceVersion };
    },
    isFatal: options.isFatal,
    onRetry: (error, retry) => options.onRetry?.(error, retry.delayMs),
  });
}
