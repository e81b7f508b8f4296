/**
 * A Linux router with a small HTTP API for its routing tables — the router
 * that examples/router-module/module.ts programs. It adds and removes kernel
 * routes (`ip route`) of the namespace it runs in (or of `--netns NAME`);
 * routes it writes carry protocol 87, so it can tell them from the
 * system's own routes. Runs under Deno and Bun:
 *
 * ```sh
 * deno run -A examples/router-module/router.ts --listen 10.0.0.1:8087 --token s3cret
 * bun examples/router-module/router.ts --listen 127.0.0.1:0 --netns r1 --token s3cret
 * ```
 *
 * It prints `listening on http://HOST:PORT` once ready.
 *
 * API (`Authorization: Bearer <token>` when `--token` is set; errors are
 * `{"error": "…", "code": "…"}`):
 *
 * | request | answer |
 * | ------- | ------ |
 * | `GET /v1/info` | `{"name", "tables": [...]}`: the tables it serves (`--tables`, default `main`) |
 * | `GET /v1/tables/T/routes` | `[{"destination", "via" (or null: blackhole), "owner": "api" \| "system"}]` |
 * | `POST /v1/tables/T/routes` `{"destination","via"}` | 201; 409 `exists`; 507 `table-full`; 400 `invalid` |
 * | `PUT /v1/tables/T/routes/<dest, URL-encoded>` `{"via"}` | 200; 404 `not-found` |
 * | `DELETE /v1/tables/T/routes/<dest>` | 204 (also when already gone); 403 for a system route |
 * | `PUT /v1/settings` `{"maxRoutes", "writable", "requestsPerMinute" (null: no limit)}` | 200 (admin token) |
 *
 * Limits, as a real router API has them: `maxRoutes` (routes per table;
 * 507 beyond), `writable: false` (maintenance: writes answer 403 naming the
 * permission `routes:write`), `requestsPerMinute` (429 with `Retry-After`).
 *
 * @module
 */

import { execFile } from "node:child_process";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import process from "node:process";

/** The protocol number of routes written through the API. */
export const API_PROTO = "87";

interface Settings {
  maxRoutes: number;
  writable: boolean;
  /** Route API requests allowed per minute; null: no limit. */
  requestsPerMinute: number | null;
}

/** A route as the API reports it. */
export interface ApiRoute {
  readonly destination: string;
  readonly via: string | null;
  readonly owner: "api" | "system";
}

class HttpError extends Error {
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message);
  }
}

function ip(netns: string | undefined, args: string[]): Promise<string> {
  const full = netns ? ["-n", netns, ...args] : args;
  return new Promise((resolve, reject) => {
    execFile("ip", full, (err, stdout, stderr) => {
      if (err) reject(new Error(`ip ${full.join(" ")}: ${String(stderr).trim() || err.message}`));
      else resolve(String(stdout));
    });
  });
}

const family = (dest: string) => (dest.includes(":") ? "-6" : "-4");

/** Canonical `a.b.c.d/n` from `ip -j`'s `dst` ("default", a host without /n). */
function canonical(dst: string, fam: "-4" | "-6"): string {
  if (dst === "default") return fam === "-4" ? "0.0.0.0/0" : "::/0";
  return dst.includes("/") ? dst : `${dst}/${fam === "-4" ? 32 : 128}`;
}

const CIDR = /^[0-9a-fA-F.:]+\/\d{1,3}$/;
const ADDR = /^[0-9a-fA-F.:]+$/;

/** Options of {@link startRouter}. */
export interface RouterOptions {
  /** `host:port` (port 0: any free one). */
  readonly listen: string;
  /** Program this namespace instead of our own (`ip -n`). */
  readonly netns?: string;
  /** Bearer token of the route API; none: open. */
  readonly token?: string;
  /** Bearer token of `/v1/settings`; default the API token. */
  readonly adminToken?: string;
  /** Tables served (names or numbers), default `["main"]`. */
  readonly tables?: readonly string[];
  /** Name reported by `/v1/info`. */
  readonly name?: string;
}

/** A running router API. */
export interface RouterServer {
  /** `http://host:port`. */
  readonly url: string;
  close(): Promise<void>;
}

/**
 * Serve the router API.
 *
 * @param options Where to listen, what to program.
 * @returns The server once listening.
 */
export async function startRouter(options: RouterOptions): Promise<RouterServer> {
  const tables = options.tables ?? ["main"];
  const settings: Settings = { maxRoutes: 10_000, writable: true, requestsPerMinute: null };
  let window = { start: Date.now(), count: 0 };

  const list = async (table: string): Promise<ApiRoute[]> => {
    const out: ApiRoute[] = [];
    for (const fam of ["-4", "-6"] as const) {
      let text: string;
      try {
        text = await ip(options.netns, [fam, "-j", "route", "show", "table", table]);
      } catch (e) {
        if (/table does not exist/i.test((e as Error).message)) continue;
        throw e;
      }
      const rows = JSON.parse(text || "[]") as {
        dst: string;
        gateway?: string;
        type?: string;
        protocol?: string;
      }[];
      for (const r of rows) {
        if (r.type && r.type !== "unicast" && r.type !== "blackhole") continue;
        out.push({
          destination: canonical(r.dst, fam),
          via: r.type === "blackhole" ? null : r.gateway ?? null,
          owner: r.protocol === API_PROTO ? "api" : "system",
        });
      }
    }
    return out;
  };

  const write = async (op: "add" | "replace", table: string, dest: string, via: string) => {
    try {
      await ip(options.netns, [
        family(dest),
        "route",
        op,
        dest,
        "via",
        via,
        "proto",
        API_PROTO,
        "table",
        table,
      ]);
    } catch (e) {
      const m = (e as Error).message;
      if (/File exists/.test(m)) throw new HttpError(409, "exists", `${dest} has a route already`);
      throw new HttpError(400, "invalid", m);
    }
  };

  const handle = async (req: IncomingMessage, body: string): Promise<[number, unknown]> => {
    const url = new URL(req.url ?? "/", "http://router");
    const parts = url.pathname.split("/").filter(Boolean).map(decodeURIComponent);
    const auth = req.headers.authorization ?? "";
    const isAdmin = parts[1] === "settings";
    const want = isAdmin ? (options.adminToken ?? options.token) : options.token;
    if (want && auth !== `Bearer ${want}`) {
      throw new HttpError(401, "unauthorized", "missing or wrong bearer token");
    }
    if (!isAdmin && settings.requestsPerMinute !== null) {
      if (Date.now() - window.start >= 60_000) window = { start: Date.now(), count: 0 };
      if (++window.count > settings.requestsPerMinute) {
        const retry = Math.ceil((window.start + 60_000 - Date.now()) / 1000);
        throw new HttpError(429, "throttled", `rate limit: ${retry}`);
      }
    }
    const json = () => {
      try {
        return JSON.parse(body || "{}") as Record<string, unknown>;
      } catch {
        throw new HttpError(400, "invalid", "the body is not JSON");
      }
    };
    if (req.method === "GET" && parts.join("/") === "v1/info") {
      return [200, { name: options.name ?? "router", tables }];
    }
    if (isAdmin && req.method === "PUT") {
      const b = json();
      if (typeof b.maxRoutes === "number") settings.maxRoutes = b.maxRoutes;
      if (typeof b.writable === "boolean") settings.writable = b.writable;
      if (typeof b.requestsPerMinute === "number" || b.requestsPerMinute === null) {
        settings.requestsPerMinute = b.requestsPerMinute as number | null;
        window = { start: Date.now(), count: 0 };
      }
      return [200, settings];
    }
    if (parts[0] !== "v1" || parts[1] !== "tables" || parts[3] !== "routes") {
      throw new HttpError(404, "no-such-path", `no ${req.method} ${url.pathname}`);
    }
    const table = parts[2];
    if (!tables.includes(table)) {
      throw new HttpError(404, "no-such-table", `no table ${table}; tables: ${tables.join(", ")}`);
    }
    const dest = parts[4];
    if (req.method === "GET" && dest === undefined) return [200, await list(table)];
    if (!settings.writable) {
      throw new HttpError(403, "denied", "the router is read-only: writes need routes:write");
    }
    if (req.method === "POST" && dest === undefined) {
      const b = json();
      const d = String(b.destination), via = String(b.via);
      if (!CIDR.test(d) || !ADDR.test(via)) {
        throw new HttpError(400, "invalid", `bad destination ${d} or via ${via}`);
      }
      const routes = await list(table);
      if (routes.some((r) => r.destination === d)) {
        throw new HttpError(409, "exists", `${d} has a route already`);
      }
      if (routes.length >= settings.maxRoutes) {
        throw new HttpError(
          507,
          "table-full",
          `table ${table} holds ${routes.length} routes, its limit is ${settings.maxRoutes}`,
        );
      }
      await write("add", table, d, via);
      return [201, { destination: d, via, owner: "api" }];
    }
    if (dest === undefined || !CIDR.test(dest)) {
      throw new HttpError(400, "invalid", `bad destination ${dest}`);
    }
    const current = (await list(table)).find((r) => r.destination === dest);
    if (req.method === "PUT") {
      const via = String(json().via);
      if (!ADDR.test(via)) throw new HttpError(400, "invalid", `bad via ${via}`);
      if (!current) throw new HttpError(404, "not-found", `no route to ${dest} in ${table}`);
      await write("replace", table, dest, via);
      return [200, { destination: dest, via, owner: "api" }];
    }
    if (req.method === "DELETE") {
      if (!current) return [204, null];
      if (current.owner !== "api") {
        throw new HttpError(403, "system-route", `${dest} is a system route`);
      }
      try {
        await ip(options.netns, [
          family(dest),
          "route",
          "del",
          dest,
          "proto",
          API_PROTO,
          "table",
          table,
        ]);
      } catch (e) {
        if (!/No such process/.test((e as Error).message)) throw e;
      }
      return [204, null];
    }
    throw new HttpError(405, "method", `${req.method} is not allowed here`);
  };

  const serve = (req: IncomingMessage, res: ServerResponse) => {
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (c: string) => (body += c));
    req.on("end", () => {
      handle(req, body).then(([status, out]) => {
        res.writeHead(status, { "content-type": "application/json" });
        res.end(out === null ? undefined : JSON.stringify(out));
      }, (e: unknown) => {
        const he = e instanceof HttpError
          ? e
          : new HttpError(500, "internal", (e as Error).message);
        const headers: Record<string, string> = { "content-type": "application/json" };
        if (he.status === 429) headers["retry-after"] = he.message.replace(/\D+/g, "") || "1";
        res.writeHead(he.status, headers);
        res.end(JSON.stringify({ error: he.message, code: he.code }));
      });
    });
  };

  const server = createServer(serve);
  const i = options.listen.lastIndexOf(":");
  const host = options.listen.slice(0, i), port = Number(options.listen.slice(i + 1));
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  const address = server.address();
  const bound = typeof address === "object" && address ? address.port : port;
  return {
    url: `http://${host}:${bound}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

if (import.meta.main) {
  const server = await startRouter({
    listen: arg("listen") ?? "127.0.0.1:8087",
    netns: arg("netns"),
    token: arg("token"),
    adminToken: arg("admin-token"),
    tables: arg("tables")?.split(","),
    name: arg("name"),
  });
  console.log(`listening on ${server.url}`);
  const stop = () => server.close().then(() => process.exit(0));
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}
