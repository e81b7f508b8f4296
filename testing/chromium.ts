/**
 * Headless Chromium driven over the DevTools protocol (a WebSocket; no
 * browser-automation package): start it on a page, evaluate expressions in
 * the page, wait for a condition, take a screenshot. Runs in the process's
 * own network namespace (the lab runs it inside a host with
 * testing/status_page_driver.ts).
 *
 * @module
 */

import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import process from "node:process";

/** The Debian package's browser. */
export const CHROMIUM_BIN = "/usr/bin/chromium";

/** A page in a running browser. */
export interface ChromiumPage {
  /** Evaluate an expression in the page; returns its value (JSON-able). */
  evaluate<T>(expression: string): Promise<T>;
  /**
   * Evaluate `expression` until it is truthy.
   *
   * @throws {Error} After `timeoutMs`, with the last value.
   */
  waitFor(expression: string, timeoutMs: number): Promise<void>;
  /** A PNG of the viewport. */
  screenshot(): Promise<Uint8Array>;
  /** Close the browser and remove its profile. */
  close(): Promise<void>;
}

/**
 * Start headless Chromium on `url`.
 *
 * @param url The page.
 * @param options Window size and the DevTools port (in this namespace).
 * @returns The page.
 * @throws {Error} When Chromium is missing or does not open its DevTools endpoint.
 */
export async function openPage(
  url: string,
  options: { width?: number; height?: number; port?: number } = {},
): Promise<ChromiumPage> {
  if (!fs.existsSync(CHROMIUM_BIN)) {
    throw new Error(
      `Cannot start Chromium: ${CHROMIUM_BIN} is missing; apt-get install -y chromium (test/setup.sh does)`,
    );
  }
  const port = options.port ?? 9222;
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "weft-chromium-"));
  const child = spawn(CHROMIUM_BIN, [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    `--user-data-dir=${profile}`,
    `--remote-debugging-port=${port}`,
    `--window-size=${options.width ?? 1100},${options.height ?? 720}`,
    url,
  ], { stdio: ["ignore", "ignore", "pipe"], detached: true });
  let stderr = "";
  child.stderr!.on("data", (d) => (stderr = (stderr + d).slice(-4000)));
  const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()));
  // its own process group: the renderer and helper processes go with it
  const kill = async () => {
    try {
      process.kill(-child.pid!, "SIGKILL");
    } catch {
      // already gone
    }
    await exited;
    // a helper may still be flushing into the profile for a moment after the kill
    for (let i = 0;; i++) {
      try {
        fs.rmSync(profile, { recursive: true, force: true });
        return;
      } catch (e) {
        if (i >= 20) {
          throw new Error(`Cannot remove Chromium's profile ${profile}: ${(e as Error).message}`);
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  };
  try {
    const wsUrl = await pageSocketUrl(port, url, () => stderr);
    const ws = new WebSocket(wsUrl);
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = () => reject(new Error(`Cannot open the DevTools socket ${wsUrl}`));
    });
    let next = 1;
    const pending = new Map<
      number,
      { resolve: (v: unknown) => void; reject: (e: Error) => void }
    >();
    ws.onmessage = (m) => {
      const msg = JSON.parse(String(m.data));
      const p = msg.id === undefined ? undefined : pending.get(msg.id);
      if (!p) return;
      pending.delete(msg.id);
      if (msg.error) p.reject(new Error(`DevTools: ${msg.error.message}`));
      else p.resolve(msg.result);
    };
    const call = (method: string, params: Record<string, unknown> = {}) =>
      new Promise<Record<string, unknown>>((resolve, reject) => {
        const id = next++;
        pending.set(id, { resolve: (v) => resolve(v as Record<string, unknown>), reject });
        ws.send(JSON.stringify({ id, method, params }));
      });
    const evaluate = async <T>(expression: string): Promise<T> => {
      const r = await call("Runtime.evaluate", {
        expression,
        returnByValue: true,
        awaitPromise: true,
      }) as {
        result: { value?: T };
        exceptionDetails?: { text: string; exception?: { description?: string } };
      };
      if (r.exceptionDetails) {
        throw new Error(
          `in the page: ${r.exceptionDetails.exception?.description ?? r.exceptionDetails.text}`,
        );
      }
      return r.result.value as T;
    };
    return {
      evaluate,
      async waitFor(expression, timeoutMs) {
        const end = Date.now() + timeoutMs;
        let last: unknown;
        while (Date.now() < end) {
          last = await evaluate(expression).catch((e) => (e as Error).message);
          if (last === true) return;
          await new Promise((r) => setTimeout(r, 100));
        }
        throw new Error(
          `timed out after ${timeoutMs} ms waiting in the page for ${expression} (last: ${
            JSON.stringify(last)
          })`,
        );
      },
      async screenshot() {
        const r = await call("Page.captureScreenshot", { format: "png" }) as { data: string };
        return Uint8Array.from(atob(r.data), (c) => c.charCodeAt(0));
      },
      async close() {
        ws.close();
        await kill();
      },
    };
  } catch (e) {
    await kill();
    throw e;
  }
}

/** The page target's DevTools WebSocket URL, once the browser lists it. */
async function pageSocketUrl(port: number, url: string, stderr: () => string): Promise<string> {
  const end = Date.now() + 30_000;
  let last = "";
  while (Date.now() < end) {
    try {
      const list = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json() as {
        type: string;
        url: string;
        webSocketDebuggerUrl: string;
      }[];
      const page = list.find((t) => t.type === "page" && t.url.startsWith(url.replace(/\/$/, "")));
      if (page) return page.webSocketDebuggerUrl;
      last = JSON.stringify(list.map((t) => [t.type, t.url]));
    } catch (e) {
      last = (e as Error).message;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(
    `Chromium did not open ${url} within 30 s (last: ${last}); its stderr:\n${stderr()}`,
  );
}
