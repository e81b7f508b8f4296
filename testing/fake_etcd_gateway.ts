/**
 * Pieces of a fake etcd JSON gateway for unit tests of the etcd client: a
 * `fetch` that records each call and answers with a handler, and the
 * gateway's reply shapes (JSON bodies, headers, newline-delimited streams).
 *
 * @module
 */

import { Buffer } from "node:buffer";

/** One request the fake received; `body` is the parsed JSON. */
export interface GatewayCall {
  readonly url: string;
  readonly body: Record<string, unknown>;
  readonly headers: Headers;
}

/**
 * A fake gateway: `handler` answers each request; calls are recorded.
 *
 * @example
 * ```ts
 * const { fetch, calls } = fakeFetch(() => json({ header: header(3) }));
 * ```
 */
export function fakeFetch(
  handler: (call: GatewayCall, init: RequestInit) => Response | Promise<Response>,
): { fetch: typeof fetch; calls: GatewayCall[] } {
  const calls: GatewayCall[] = [];
  const f = async (input: RequestInfo | URL, init: RequestInit = {}) => {
    const call = {
      url: String(input),
      body: JSON.parse(String(init.body ?? "{}")),
      headers: new Headers(init.headers),
    };
    calls.push(call);
    return await handler(call, init);
  };
  return { fetch: f as typeof fetch, calls };
}

/** A JSON reply. */
export const json = (body: unknown, status = 200): Response =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });

/** A response header at `revision`, int64 fields as strings as the gateway writes them. */
export const header = (revision: number) => ({
  cluster_id: "1",
  member_id: "2",
  revision: String(revision),
});

/** base64 of a string's Latin-1 bytes (test keys are ASCII). */
export const b64 = (s: string): string => Buffer.from(s, "latin1").toString("base64");

/** The string of base64 Latin-1 bytes. */
export const unb64 = (s: string): string => Buffer.from(s, "base64").toString("latin1");

/**
 * A streaming body that delivers `chunks` and then stays open until
 * cancelled, or ends with `end`.
 */
export function stream(chunks: string[], end = false): Response {
  const enc = new TextEncoder();
  return new Response(
    new ReadableStream<Uint8Array>({
      start(c) {
        for (const ch of chunks) c.enqueue(enc.encode(ch));
        if (end) c.close();
      },
    }),
  );
}

/** Lines of a watch stream: each message as JSON plus a newline. */
export const lines = (...messages: unknown[]): string[] =>
  messages.map((m) => JSON.stringify(m) + "\n");
