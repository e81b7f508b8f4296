/**
 * The one runtime shim: everything that differs between Deno and Bun lives
 * here, and this is the only file that names `Deno.` or `Bun.`.
 *
 * It covers foreign function calls into libc (netlink sockets, TUN ioctl,
 * the udp packet loop), serving HTTP, and fetch with client TLS material.
 * Process spawning, signals, files and environment use `node:` built-ins,
 * which both runtimes provide, so they need no shim.
 *
 * @module
 */

import process from "node:process";

/** The parts of Bun's global that weft uses (Bun's own types are not installed). */
interface BunGlobal {
  readonly version: string;
  serve(options: {
    hostname: string;
    port: number;
    fetch: (request: Request) => Response | Promise<Response>;
    tls?: { cert: string; key: string };
  }): { readonly port: number; stop(closeActive?: boolean): Promise<void> | void };
}

/** The parts of `bun:ffi` that weft uses. */
interface BunFfi {
  dlopen(
    path: string,
    symbols: Record<string, { args: string[]; returns: string }>,
  ): { symbols: Record<string, (...args: FfiArg[]) => unknown>; close(): void };
  read: { i32(address: number, offset: number): number };
  ptr(view: ArrayBufferView): number;
}

const runtimes = globalThis as { Deno?: typeof Deno; Bun?: BunGlobal };
const deno = runtimes.Deno;
const bun = runtimes.Bun;

/** The runtime this process runs on. */
export const runtimeName: "deno" | "bun" | "node" = deno ? "deno" : bun ? "bun" : "node";

/** Version string of the running runtime, e.g. `deno 2.9.6`. */
export function runtimeVersion(): string {
  if (deno) return `deno ${deno.version.deno}`;
  if (bun) return `bun ${bun.version}`;
  return `node ${process.version}`;
}

/**
 * Types a foreign function may take or return. `buffer` is a typed array
 * passed by pointer (or `null`); `pointer` is an opaque address as a bigint.
 */
export type FfiType =
  | "void"
  | "u8"
  | "i16"
  | "u16"
  | "i32"
  | "u32"
  | "i64"
  | "u64"
  | "isize"
  | "usize"
  | "buffer"
  | "pointer";

/** Signature of one foreign function. */
export interface FfiSymbol {
  readonly parameters: readonly FfiType[];
  readonly result: FfiType;
}

/** An argument of a foreign call: integers as numbers or bigints, buffers as typed arrays. */
export type FfiArg = number | bigint | ArrayBufferView | null;

/** A loaded library: each symbol becomes a synchronous function returning a number. */
export interface FfiLibrary<S extends Record<string, FfiSymbol>> {
  readonly symbols: { [K in keyof S]: (...args: FfiArg[]) => number };
  close(): void;
}

const bunTypes: Record<FfiType, string> = {
  void: "void",
  u8: "u8",
  i16: "i16",
  u16: "u16",
  i32: "i32",
  u32: "u32",
  i64: "i64",
  u64: "u64",
  isize: "i64",
  usize: "u64",
  buffer: "ptr",
  pointer: "ptr",
};

// A specifier in a variable keeps `deno check` from resolving Bun's module.
const bunFfiSpecifier = "bun:ffi";

/**
 * Open a shared library and bind the given symbols, with the same behaviour
 * on Deno (`Deno.dlopen`) and Bun (`bun:ffi`). 64-bit results come back as
 * numbers (all values weft reads fit in 53 bits).
 *
 * @param path Library file, e.g. `libc.so.6`.
 * @param symbols Signatures of the functions to bind.
 * @returns The bound functions.
 * @throws {Error} When the runtime has no FFI or the library cannot be opened.
 * @example
 * ```ts
 * const libc = await openLibrary("libc.so.6", { getpid: { parameters: [], result: "i32" } });
 * console.log(libc.symbols.getpid());
 * ```
 */
export async function openLibrary<S extends Record<string, FfiSymbol>>(
  path: string,
  symbols: S,
): Promise<FfiLibrary<S>> {
  const out: Record<string, (...args: FfiArg[]) => number> = {};
  if (deno) {
    const lib = deno.dlopen(path, symbols as unknown as Deno.ForeignLibraryInterface);
    for (const name of Object.keys(symbols)) {
      const fn = lib.symbols[name] as unknown as (...args: FfiArg[]) => unknown;
      const wide = symbols[name].result;
      if (wide === "i64" || wide === "u64" || wide === "isize" || wide === "usize") {
        out[name] = (...args) => Number(fn(...args));
      } else if (wide === "pointer") {
        out[name] = (...args) => {
          const p = fn(...args) as Deno.PointerValue;
          return p === null ? 0 : Number(deno.UnsafePointer.value(p));
        };
      } else {
        out[name] = fn as (...args: FfiArg[]) => number;
      }
    }
    return { symbols: out as FfiLibrary<S>["symbols"], close: () => lib.close() };
  }
  if (bun) {
    const ffi: BunFfi = await import(bunFfiSpecifier);
    const spec: Record<string, { args: string[]; returns: string }> = {};
    for (const [name, sym] of Object.entries(symbols)) {
      spec[name] = { args: sym.parameters.map((t) => bunTypes[t]), returns: bunTypes[sym.result] };
    }
    const lib = ffi.dlopen(path, spec);
    for (const name of Object.keys(symbols)) {
      const fn = lib.symbols[name];
      out[name] = (...args) => Number(fn(...args) ?? 0);
    }
    return { symbols: out as FfiLibrary<S>["symbols"], close: () => lib.close() };
  }
  throw new Error(
    `FFI is not available on ${runtimeName}: run weft with Deno (deno run -A mod.ts) or Bun (bun mod.ts)`,
  );
}

/**
 * Read a 32-bit signed integer at a raw address (used for `errno`).
 *
 * @param address Address as returned by a `pointer` result.
 * @returns The integer stored there.
 */
export async function makePointerReader(): Promise<(address: number) => number> {
  if (deno) {
    return (address) => {
      const p = deno.UnsafePointer.create(BigInt(address));
      if (p === null) throw new RangeError("Cannot read memory at address 0");
      return new deno.UnsafePointerView(p).getInt32(0);
    };
  }
  if (bun) {
    const ffi: BunFfi = await import(bunFfiSpecifier);
    return (address) => ffi.read.i32(address, 0);
  }
  throw new Error(`FFI is not available on ${runtimeName}`);
}

/**
 * Make a function that returns the address of a typed array's first byte,
 * for kernel structures that hold pointers (iovec, msghdr). The address stays
 * valid while the array is alive; allocate such arrays from an explicit
 * `new ArrayBuffer(n)` with n ≥ 4096 so neither engine moves them.
 *
 * @returns The address function.
 * @throws {Error} When the runtime has no FFI.
 * @example
 * ```ts
 * const addressOf = await makeAddressOf();
 * const iov = new BigUint64Array(2);
 * iov[0] = BigInt(addressOf(new Uint8Array(new ArrayBuffer(4096))));
 * ```
 */
export async function makeAddressOf(): Promise<(view: ArrayBufferView) => number> {
  if (deno) {
    return (view) =>
      Number(deno.UnsafePointer.value(deno.UnsafePointer.of(view as Uint8Array<ArrayBuffer>)));
  }
  if (bun) {
    const ffi: BunFfi = await import(bunFfiSpecifier);
    return (view) => ffi.ptr(view);
  }
  throw new Error(`FFI is not available on ${runtimeName}`);
}

/** A running HTTP server. */
export interface HttpServer {
  /** The port actually bound (useful with port 0). */
  readonly port: number;
  /** Stop accepting connections and close open ones. */
  shutdown(): Promise<void>;
}

/**
 * Serve a fetch handler (a hono app's `fetch`) on the given address.
 *
 * @param options Hostname, port (0 = any free port) and the handler.
 * @returns The server, once it is listening.
 * @throws {Error} When the address cannot be bound.
 * @example
 * ```ts
 * const s = await serveHttp({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("ok") });
 * await s.shutdown();
 * ```
 */
export async function serveHttp(options: {
  hostname: string;
  port: number;
  fetch: (request: Request) => Response | Promise<Response>;
  /** Serve HTTPS with this PEM certificate chain and key (optional). */
  tls?: { cert: string; key: string };
}): Promise<HttpServer> {
  if (deno) {
    let resolveListen: (port: number) => void = () => {};
    const listening = new Promise<number>((r) => (resolveListen = r));
    const server = deno.serve({
      hostname: options.hostname,
      port: options.port,
      ...(options.tls ? { cert: options.tls.cert, key: options.tls.key } : {}),
      onListen: (addr) => resolveListen((addr as Deno.NetAddr).port),
    }, options.fetch);
    const port = await listening;
    return { port, shutdown: () => server.shutdown() };
  }
  if (bun) {
    const server = bun.serve({
      hostname: options.hostname,
      port: options.port,
      fetch: options.fetch,
      ...(options.tls ? { tls: { cert: options.tls.cert, key: options.tls.key } } : {}),
    });
    return { port: server.port, shutdown: async () => void (await server.stop(true)) };
  }
  const http = await import("node:http");
  const https = await import("node:https");
  const handler = async (
    req: import("node:http").IncomingMessage,
    res: import("node:http").ServerResponse,
  ) => {
    const chunks: Uint8Array[] = [];
    for await (const c of req) chunks.push(c as Uint8Array);
    const body = chunks.length ? new Blob(chunks as BlobPart[]) : undefined;
    const request = new Request(`http://${req.headers.host ?? "localhost"}${req.url}`, {
      method: req.method,
      headers: req.headers as Record<string, string>,
      body: req.method === "GET" || req.method === "HEAD" ? undefined : body,
    });
    const response = await options.fetch(request);
    res.writeHead(response.status, Object.fromEntries(response.headers));
    res.end(new Uint8Array(await response.arrayBuffer()));
  };
  const server = options.tls
    ? https.createServer({ cert: options.tls.cert, key: options.tls.key }, handler)
    : http.createServer(handler);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.hostname, () => resolve());
  });
  const addr = server.address();
  return {
    port: typeof addr === "object" && addr ? addr.port : options.port,
    shutdown: () => new Promise<void>((r) => server.close(() => r())),
  };
}

/** PEM material for a TLS client. */
export interface TlsClientOptions {
  /** CA bundle (PEM) to trust instead of the system roots. */
  ca?: string;
  /** Client certificate (PEM). */
  cert?: string;
  /** Client private key (PEM). */
  key?: string;
}

/** Options of {@link createFetch}. */
export interface FetchOptions {
  /**
   * Speak HTTP/1.1 only, never HTTP/2 (Deno; Bun's fetch speaks HTTP/1.1
   * anyway). Deno's fetch leaves Nagle's algorithm on: over HTTP/2 a request
   * written right after a large response holds behind the WINDOW_UPDATE sent
   * while reading it until the server's delayed ACK, up to 40 ms; over
   * HTTP/1.1 a GET leaves in one segment.
   */
  http1Only?: boolean;
}

/**
 * Make a `fetch` that presents the given client certificate and trusts the
 * given CA. Without TLS options (and without `http1Only` on Deno) it is the
 * global fetch.
 *
 * @param tls PEM strings; all optional.
 * @param options Protocol choice.
 * @returns A fetch function.
 */
export function createFetch(tls?: TlsClientOptions, options: FetchOptions = {}): typeof fetch {
  const noTls = !tls || (!tls.ca && !tls.cert && !tls.key);
  if (noTls && !(deno && options.http1Only)) return fetch;
  tls ??= {};
  if (deno) {
    const client = deno.createHttpClient({
      caCerts: tls.ca ? [tls.ca] : undefined,
      cert: tls.cert,
      key: tls.key,
      ...(options.http1Only ? { http2: false } : {}),
    });
    return ((input: RequestInfo | URL, init?: RequestInit) =>
      fetch(input, { ...init, client } as RequestInit)) as typeof fetch;
  }
  if (bun) {
    const opts = { ca: tls.ca, cert: tls.cert, key: tls.key };
    return ((input: RequestInfo | URL, init?: RequestInit) =>
      fetch(input, { ...init, tls: opts } as RequestInit)) as typeof fetch;
  }
  throw new Error(`client TLS is not supported on ${runtimeName}: use Deno or Bun`);
}

/** Resident set size of this process in bytes. */
export function rssBytes(): number {
  if (deno) return deno.memoryUsage().rss;
  return process.memoryUsage().rss;
}

/** CPU time (user + system, all threads) this process has used so far, in ms. */
export function cpuTimeMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

/** The path of the running runtime's executable (to spawn more agents). */
export function execPath(): string {
  if (deno) return deno.execPath();
  return process.execPath;
}
