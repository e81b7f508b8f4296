/**
 * A fetch handler served through `node:http(s)` with `TCP_NODELAY` on every
 * accepted connection, as Go's `net/http` (the API server's) serves.
 *
 * Why: Deno 2.9's `Deno.serve` leaves Nagle's algorithm on and has no knob
 * for it. Over TLS its response bodies leave in writes whose tail is shorter
 * than a segment; a second such tail waits for the client's ACK of the first,
 * which Linux delays up to 40 ms. A 10-page node list against the fake spent
 * 3–5 such stalls (measured with tcpdump: a 41 kB write held 40 ms until the
 * delayed ACK of a 141-byte segment) — time a real API server does not cost.
 *
 * Bodies are streamed (watches stay open), `shutdown` cuts open connections.
 * HTTP/1.1 only (node's server has no HTTP/2).
 *
 * @module
 */

import http from "node:http";
import https from "node:https";
import type { HttpServer } from "../core/runtime.ts";

/**
 * Serve `fetch` with `TCP_NODELAY`.
 *
 * @param options Address, handler, optional TLS (PEM).
 * @returns The running server.
 * @example
 * ```ts
 * const s = await serveNoDelay({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("ok") });
 * await s.shutdown();
 * ```
 */
export async function serveNoDelay(options: {
  hostname: string;
  port: number;
  fetch: (request: Request) => Response | Promise<Response>;
  tls?: { cert: string; key: string };
}): Promise<HttpServer> {
  const scheme = options.tls ? "https" : "http";
  const handler = async (req: http.IncomingMessage, res: http.ServerResponse) => {
    const abort = new AbortController();
    res.on("close", () => abort.abort());
    try {
      const chunks: Uint8Array[] = [];
      for await (const c of req) chunks.push(c as Uint8Array);
      const hasBody = req.method !== "GET" && req.method !== "HEAD";
      const headers = new Headers();
      for (const [k, v] of Object.entries(req.headers)) {
        if (v !== undefined) headers.set(k, Array.isArray(v) ? v.join(", ") : v);
      }
      const request = new Request(`${scheme}://${req.headers.host ?? "localhost"}${req.url}`, {
        method: req.method,
        headers,
        body: hasBody && chunks.length ? new Blob(chunks as BlobPart[]) : undefined,
        signal: abort.signal,
      });
      const response = await options.fetch(request);
      res.writeHead(response.status, [...response.headers].flat());
      res.flushHeaders(); // a watch with nothing to say yet still answers at once
      if (!response.body) return void res.end();
      const reader = response.body.getReader();
      abort.signal.addEventListener("abort", () => void reader.cancel().catch(() => {}));
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        if (!res.write(value)) {
          await new Promise<void>((r) => {
            res.once("drain", r);
            res.once("close", r);
          });
        }
      }
      res.end();
    } catch (e) {
      if (abort.signal.aborted) return;
      if (!res.headersSent) {
        res.writeHead(500, { "content-type": "text/plain" });
        res.end(`serveNoDelay: the handler failed: ${(e as Error).message}\n`);
      } else res.destroy(e as Error);
    }
  };
  const server = options.tls
    ? https.createServer({ cert: options.tls.cert, key: options.tls.key, noDelay: true }, handler)
    : http.createServer({ noDelay: true }, handler);
  // node's default 5 s keep-alive timeout would drop idle client connections mid-test
  server.keepAliveTimeout = 0;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.hostname, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const addr = server.address();
  return {
    port: typeof addr === "object" && addr ? addr.port : options.port,
    shutdown: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
