/**
 * moto — a third-party EC2 emulator (Python; moto 5.2.1 in this machine
 * image) — as a second, independent EC2 for the aws-vpc provider's tests.
 *
 * {@link startMoto} runs moto's own server (the `moto_server` one,
 * `ThreadedMotoServer`) on 127.0.0.1 and a free port, from a four-line
 * Python launcher that exits as soon as its stdin closes: the test closes it
 * in `finally`, and if the test process dies instead, the kernel closes it —
 * so no moto process can outlive the test that started it.
 *
 * moto starts in ~1 s but its first EC2 call takes 2–4 s (it loads the EC2
 * backend): start it once per test file and {@link Moto.reset} it between
 * tests.
 *
 * @module
 */

import { type ChildProcess, spawn } from "node:child_process";
import process from "node:process";

/** A running moto server. */
export interface Moto {
  /** `http://127.0.0.1:<port>`. */
  readonly endpoint: string;
  /** Forget every resource (moto's `POST /moto-api/reset`). */
  reset(): Promise<void>;
  /**
   * Check IAM policies on every request from now on (true), or accept any
   * credentials (false, the default). With checks on, only the access keys
   * of IAM users created in moto work, and their policies decide.
   */
  enforceIam(on: boolean): Promise<void>;
  /**
   * Call moto's IAM (Query API, version 2010-05-08) while checks are off
   * (moto then ignores signatures): e.g. `CreateUser`, `PutUserPolicy`.
   * @returns The XML reply.
   */
  iam(action: string, params: Record<string, string>): Promise<string>;
  /** Create an IAM user with an inline policy and return its access key. */
  iamUser(
    name: string,
    policy: unknown,
  ): Promise<{ accessKeyId: string; secretAccessKey: string }>;
  /** Stop the server and wait for the process to exit. */
  stop(): Promise<void>;
}

const LAUNCHER = `
import os, sys
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print("MOTO_PORT", server.get_host_and_port()[1], flush=True)
sys.stdin.read()
os._exit(0)
`;

/**
 * Start moto on a free loopback port.
 *
 * @param options How long to wait for it to listen (default 30 s).
 * @returns The running server.
 * @throws {Error} When Python or moto is missing, or moto does not start in time
 *   (with its output, and how to install it).
 * @example
 * ```ts
 * const moto = await startMoto();
 * try { … } finally { await moto.stop(); }
 * ```
 */
export async function startMoto(options: { startTimeoutMs?: number } = {}): Promise<Moto> {
  const child = spawn("python3", ["-u", "-c", LAUNCHER], {
    stdio: ["pipe", "pipe", "pipe"],
    env: {
      ...process.env,
      // weft never needs moto's AMI catalogue; loading it costs seconds
      MOTO_EC2_LOAD_DEFAULT_AMIS: "false",
    },
  });
  let output = "";
  const keep = (chunk: Uint8Array) => {
    output = (output + new TextDecoder().decode(chunk)).slice(-4000);
  };
  child.stderr!.on("data", keep);
  const exited = new Promise<number | null>((resolve) =>
    child.once("exit", (code) => resolve(code))
  );
  try {
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`moto did not start within ${options.startTimeoutMs ?? 30_000} ms`)),
        options.startTimeoutMs ?? 30_000,
      );
      child.stdout!.on("data", (chunk: Uint8Array) => {
        keep(chunk);
        const m = /MOTO_PORT (\d+)/.exec(output);
        if (m) {
          clearTimeout(timer);
          resolve(Number(m[1]));
        }
      });
      child.once("error", (e) => {
        clearTimeout(timer);
        reject(e);
      });
      exited.then((code) => {
        clearTimeout(timer);
        reject(new Error(`moto exited with code ${code} before listening`));
      });
    });
    const endpoint = `http://127.0.0.1:${port}`;
    const post = async (path: string, body: string) => {
      const r = await fetch(`${endpoint}${path}`, {
        method: "POST",
        headers: { "content-type": "text/plain" },
        body,
      });
      const text = await r.text();
      if (!r.ok) throw new Error(`moto ${path} answered ${r.status}: ${text.slice(0, 200)}`);
    };
    const iam = async (action: string, params: Record<string, string>) => {
      const day = new Date().toISOString().slice(0, 10).replaceAll("-", "");
      const r = await fetch(`${endpoint}/`, {
        method: "POST",
        headers: {
          "content-type": "application/x-www-form-urlencoded",
          // moto picks the service from the credential scope
          authorization:
            `AWS4-HMAC-SHA256 Credential=AKIDMOTOADMIN/${day}/us-east-1/iam/aws4_request, ` +
            "SignedHeaders=host, Signature=0",
        },
        body: new URLSearchParams({ Action: action, Version: "2010-05-08", ...params }),
      });
      const text = await r.text();
      if (!r.ok) throw new Error(`moto IAM ${action} answered ${r.status}: ${text.slice(0, 300)}`);
      return text;
    };
    return {
      endpoint,
      reset: () => post("/moto-api/reset", ""),
      enforceIam: (on) => post("/moto-api/reset-auth", on ? "0" : "inf"),
      iam,
      async iamUser(name, policy) {
        await iam("CreateUser", { UserName: name });
        await iam("PutUserPolicy", {
          UserName: name,
          PolicyName: "weft",
          PolicyDocument: JSON.stringify(policy),
        });
        const key = await iam("CreateAccessKey", { UserName: name });
        const pick = (tag: string) => {
          const m = new RegExp(`<${tag}>([^<]+)</${tag}>`).exec(key);
          if (!m) throw new Error(`moto IAM CreateAccessKey answered without ${tag}: ${key}`);
          return m[1];
        };
        return { accessKeyId: pick("AccessKeyId"), secretAccessKey: pick("SecretAccessKey") };
      },
      stop: () => stop(child, exited),
    };
  } catch (e) {
    await stop(child, exited);
    throw new Error(
      `Cannot start moto (python3 -c 'from moto.server import ThreadedMotoServer'): ` +
        `${(e as Error).message}. Install it with: pip install 'moto[server]==5.2.1' boto3. ` +
        `Its output: ${output.trim().slice(-1500) || "(none)"}`,
      { cause: e },
    );
  }
}

/** Close stdin (the launcher exits), and kill after 5 s if it has not. */
async function stop(child: ChildProcess, exited: Promise<number | null>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.stdin?.end();
  const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
  try {
    await exited;
  } finally {
    clearTimeout(timer);
    child.stdout?.destroy();
    child.stderr?.destroy();
  }
}
