/**
 * The lab's cloud router: a test-only loop that makes the underlay namespace
 * play a VPC router by mirroring a fake cloud's routes into its own routing
 * table — `subnet → next hop` becomes `ip route replace subnet via <that
 * host's underlay IP> proto 99`, a blackhole becomes `blackhole subnet`,
 * and a route that is gone is deleted. Only its own (`proto 99`) routes are
 * touched. Shared by the aws-vpc and gce labs (`aws_lab_main.ts`,
 * `gce_lab_main.ts`), which say what the routes are.
 *
 * @module
 */

import { systemExec } from "../core/exec.ts";

/** The route protocol number the mirror marks its routes with. */
export const MIRROR_PROTO = 99;

/** A running mirror. */
export interface RouteMirror {
  /** What it installed: destination → `via IP` or `blackhole`. */
  installed(): ReadonlyMap<string, string>;
  stop(): Promise<void>;
}

/**
 * Mirror `want()` into this namespace's routing table every 50 ms.
 *
 * @param want The routes the cloud holds now: destination → `via IP` or `blackhole`.
 * @returns The mirror; `stop()` it.
 */
export function startRouteMirror(want: () => Map<string, string>): RouteMirror {
  let mirrored = new Map<string, string>();
  let stopping = false;
  const mirror = async () => {
    const next = want();
    const lines: string[] = [];
    for (const [dest, how] of next) {
      if (mirrored.get(dest) === how) continue;
      lines.push(
        how === "blackhole"
          ? `route replace blackhole ${dest} proto ${MIRROR_PROTO}`
          : `route replace ${dest} ${how} proto ${MIRROR_PROTO}`,
      );
    }
    for (const dest of mirrored.keys()) {
      if (!next.has(dest)) lines.push(`route del ${dest} proto ${MIRROR_PROTO}`);
    }
    if (lines.length === 0) return;
    const r = await systemExec("ip", ["-batch", "-"], { input: lines.join("\n") + "\n" });
    if (r.code !== 0) console.error(`mirror: ip -batch failed: ${r.stderr.trim()}`);
    else mirrored = next;
  };
  const loop = (async () => {
    while (!stopping) {
      await mirror().catch((e) => console.error(`mirror: ${e}`));
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  return {
    installed: () => mirrored,
    async stop() {
      stopping = true;
      await loop;
    },
  };
}
