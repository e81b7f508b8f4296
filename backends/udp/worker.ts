/**
 * Worker entry of the udp packet engine (started by `startUdpWorker` in
 * `udp_thread.ts`; not imported by anything). It runs a synchronous
 * pump/poll loop over the TUN and socket fds, so the main thread's event
 * loop stays free and the per-packet cost is one synchronous FFI call.
 *
 * Control without blocking the loop on messages: the main thread bumps a
 * sequence number in shared memory *before* posting a route update; the loop
 * sees the sequence ahead of what it applied and yields to receive the
 * message. Stop is a shared flag. Counters live in shared memory the main
 * thread reads directly. poll(2) times out every `pollMs`, which bounds how
 * late an update or a stop is seen when no packet flows.
 *
 * @module
 */

import { createKernelIo, type KernelIo } from "./io.ts";
import { UdpEngine } from "./loop.ts";
import type { WorkerMessage, WorkerReply, WorkerStart } from "./thread.ts";
import { CONTROL_SEQ, CONTROL_STOP } from "./thread.ts";

interface WorkerScope {
  onmessage: ((e: MessageEvent<WorkerMessage>) => void) | null;
  postMessage(message: WorkerReply): void;
}

const scope = globalThis as unknown as WorkerScope;

let engine: UdpEngine | undefined;
let applied = 0;
let wake: (() => void) | null = null;

scope.onmessage = (e) => {
  const m = e.data;
  if (m.type === "start") {
    run(m).catch((err) => {
      scope.postMessage({ type: "error", message: String(err?.message ?? err) });
    });
  } else if (m.type === "routes") {
    try {
      engine?.setRoutes(m.routes);
    } catch (err) {
      scope.postMessage({ type: "warning", message: String((err as Error).message) });
    }
    applied++;
    wake?.();
  }
};

async function run(start: WorkerStart): Promise<void> {
  const control = new Int32Array(start.control);
  let io: KernelIo | undefined;
  try {
    io = await createKernelIo(start.tunFd, start.sockFd, {
      mode: start.mode,
      vnetHdr: start.vnetHdr,
      gso: start.gso,
    });
    engine = new UdpEngine({
      tun: io.tun,
      bind: io.bind,
      ownSubnet: start.ownSubnet,
      mtu: start.mtu,
      batchSize: start.batchSize,
      counters: new Float64Array(start.counters),
      routes: start.routes,
    });
    scope.postMessage({ type: "started" });
    const e = engine;
    const pollMs = start.pollMs;
    while (Atomics.load(control, CONTROL_STOP) === 0) {
      if (Atomics.load(control, CONTROL_SEQ) > applied) {
        await new Promise<void>((resolve) => (wake = resolve));
        wake = null;
        continue;
      }
      let busy = 0;
      for (let i = 0; i < 64; i++) {
        const n = e.pump();
        if (n === 0) break;
        busy += n;
      }
      if (busy === 0) io.wait(pollMs);
    }
    scope.postMessage({ type: "stopped" });
  } finally {
    io?.close();
  }
}
