/**
 * The main thread's handle on the udp packet engine Worker
 * (`worker.ts`): start it over a TUN fd and a UDP socket fd, push route
 * updates, read the counters from shared memory, stop it.
 *
 * @module
 */

import type { IPv4Net } from "../../core/ip.ts";
import type { SocketIoMode } from "./io.ts";
import { COUNTER_COUNT, readCounters, type UdpCounters } from "./loop.ts";
import type { PeerRoute } from "./packet.ts";
import { EMBEDDED_WORKER_SOURCE } from "./embedded_worker.ts";

/** Index of the stop flag in the control array. */
export const CONTROL_STOP = 0;
/** Index of the route-update sequence number in the control array. */
export const CONTROL_SEQ = 1;

/** The first message to the worker. */
export interface WorkerStart {
  readonly type: "start";
  readonly tunFd: number;
  readonly sockFd: number;
  readonly ownSubnet: IPv4Net;
  readonly mtu: number;
  readonly batchSize: number;
  readonly mode: SocketIoMode;
  readonly vnetHdr: boolean;
  readonly gso: boolean;
  readonly pollMs: number;
  readonly routes: readonly PeerRoute[];
  /** Int32Array[2]: stop flag, route sequence. */
  readonly control: SharedArrayBuffer;
  /** Float64Array[COUNTER_COUNT]. */
  readonly counters: SharedArrayBuffer;
}

/** Messages to the worker. */
export type WorkerMessage = WorkerStart | {
  readonly type: "routes";
  readonly routes: readonly PeerRoute[];
};

/** Messages from the worker. */
export type WorkerReply =
  | { readonly type: "started" }
  | { readonly type: "stopped" }
  | { readonly type: "warning"; readonly message: string }
  | { readonly type: "error"; readonly message: string };

/** The packet engine Worker failed (e.g. the TUN device was deleted). */
export class UdpWorkerError extends Error {
  override name = "UdpWorkerError";
}

/** Options for {@link startUdpWorker}. */
export interface UdpWorkerOptions {
  /** Non-blocking TUN descriptor (from `openTun`). */
  readonly tunFd: number;
  /** UDP socket descriptor (from `openUdpSocket`). */
  readonly sockFd: number;
  /** This host's subnet. */
  readonly ownSubnet: IPv4Net;
  /** The TUN MTU. */
  readonly mtu: number;
  /** Initial routes. */
  readonly routes?: readonly PeerRoute[];
  /** Packets per batch (default 64). */
  readonly batchSize?: number;
  /** Socket path: `mmsg` (default) or `single`. */
  readonly mode?: SocketIoMode;
  /** The TUN fd carries virtio headers (opened with offload). */
  readonly vnetHdr?: boolean;
  /** Use UDP GSO/GRO when the kernel has them (default true; `mmsg` only). */
  readonly gso?: boolean;
  /** Longest poll(2) wait, which bounds how late an idle engine sees updates (default 50 ms). */
  readonly pollMs?: number;
  /** How long to wait for the worker to come up (default 10 s). */
  readonly startTimeoutMs?: number;
  /** Called with the worker's warnings (e.g. a rejected route table). */
  readonly onWarning?: (message: string) => void;
}

let embeddedWorkerUrl: string | undefined;

/**
 * Where the Worker's module is. In `dist/weft.js` its code is embedded
 * (`embedded_worker.ts`) and served from a Blob URL made once; in a single
 * file built with `bun build --compile mod.ts backends/udp/worker.ts` every
 * module shares the bundle's URL, and the worker entry point keeps its path
 * from the repository root; from source it sits beside this file.
 */
function workerUrl(): string {
  if (EMBEDDED_WORKER_SOURCE !== undefined) {
    return embeddedWorkerUrl ??= URL.createObjectURL(
      new Blob([EMBEDDED_WORKER_SOURCE], { type: "text/javascript" }),
    );
  }
  return import.meta.url.includes("/$bunfs/")
    ? new URL("./backends/udp/worker.ts", import.meta.url).href
    : new URL("./worker.ts", import.meta.url).href;
}

/** A running packet engine Worker. */
export interface UdpWorker {
  /**
   * Replace the engine's routing table (applied within one batch, or within
   * `pollMs` when idle).
   */
  setRoutes(routes: readonly PeerRoute[]): void;
  /** The engine's counters now. */
  counters(): UdpCounters;
  /**
   * Settles when the worker ends: resolves after {@link UdpWorker.stop},
   * rejects with a {@link UdpWorkerError} when it fails.
   */
  readonly done: Promise<void>;
  /** Stop the loop and end the worker (the fds stay open: they belong to the caller). */
  stop(): Promise<void>;
}

/**
 * Start the packet engine in a Worker.
 *
 * @param options Descriptors, addresses, routes, tuning.
 * @param signal Stops the worker when it aborts.
 * @returns The running worker, once its loop is up.
 * @throws {UdpWorkerError} When the worker cannot start (no FFI, bad fds) or times out.
 * @example
 * ```ts
 * const w = await startUdpWorker({ tunFd: tun.fd, sockFd: sock.fd, ownSubnet, mtu });
 * w.setRoutes([{ subnet, publicIP, port: 8285 }]);
 * console.log(w.counters().packetsIn);
 * await w.stop();
 * ```
 */
export async function startUdpWorker(
  options: UdpWorkerOptions,
  signal?: AbortSignal,
): Promise<UdpWorker> {
  signal?.throwIfAborted();
  const controlBuf = new SharedArrayBuffer(8);
  const countersBuf = new SharedArrayBuffer(COUNTER_COUNT * 8);
  const control = new Int32Array(controlBuf);
  const counters = new Float64Array(countersBuf);
  const worker = new Worker(workerUrl(), { type: "module" });

  let started!: () => void;
  let startFailed!: (e: Error) => void;
  const up = new Promise<void>((res, rej) => ((started = res), (startFailed = rej)));
  let finish!: () => void;
  let fail!: (e: Error) => void;
  const done = new Promise<void>((res, rej) => ((finish = res), (fail = rej)));
  done.catch(() => {}); // observed through `done` by callers
  let ended = false;
  const end = (error?: Error) => {
    if (ended) return;
    ended = true;
    signal?.removeEventListener("abort", onAbort);
    worker.terminate();
    if (error) {
      startFailed(error);
      fail(error);
    } else {
      finish();
    }
  };

  worker.onmessage = (e: MessageEvent<WorkerReply>) => {
    const m = e.data;
    if (m.type === "started") started();
    else if (m.type === "stopped") end();
    else if (m.type === "warning") options.onWarning?.(m.message);
    else if (m.type === "error") end(new UdpWorkerError(`udp packet engine failed: ${m.message}`));
  };
  worker.onerror = (e: ErrorEvent) => {
    e.preventDefault();
    end(new UdpWorkerError(`udp packet engine worker crashed: ${e.message}`));
  };

  const stop = async (): Promise<void> => {
    if (ended) return await done.catch(() => {});
    Atomics.store(control, CONTROL_STOP, 1);
    const timeout = setTimeout(() => end(), 2000 + (options.pollMs ?? 50));
    await done.catch(() => {});
    clearTimeout(timeout);
  };
  const onAbort = () => void stop();
  signal?.addEventListener("abort", onAbort, { once: true });

  const start: WorkerStart = {
    type: "start",
    tunFd: options.tunFd,
    sockFd: options.sockFd,
    ownSubnet: { ip: options.ownSubnet.ip, prefixLen: options.ownSubnet.prefixLen },
    mtu: options.mtu,
    batchSize: options.batchSize ?? 64,
    mode: options.mode ?? "mmsg",
    vnetHdr: options.vnetHdr === true,
    gso: options.gso !== false,
    pollMs: options.pollMs ?? 50,
    routes: plainRoutes(options.routes ?? []),
    control: controlBuf,
    counters: countersBuf,
  };
  worker.postMessage(start);

  const startTimeoutMs = options.startTimeoutMs ?? 10_000;
  const timer = setTimeout(
    () => end(new UdpWorkerError(`udp packet engine did not start within ${startTimeoutMs} ms`)),
    startTimeoutMs,
  );
  try {
    await up;
  } finally {
    clearTimeout(timer);
  }

  return {
    setRoutes(routes) {
      if (ended) return;
      // Bump the sequence before posting: the loop never sees a message it is not waiting for.
      Atomics.add(control, CONTROL_SEQ, 1);
      worker.postMessage({ type: "routes", routes: plainRoutes(routes) });
    },
    counters: () => readCounters(counters),
    done,
    stop,
  };
}

function plainRoutes(routes: readonly PeerRoute[]): PeerRoute[] {
  return routes.map((r) => ({
    subnet: { ip: r.subnet.ip, prefixLen: r.subnet.prefixLen },
    publicIP: r.publicIP,
    port: r.port,
  }));
}
