/**
 * Throwaway network namespaces for datapath tests. Names are
 * `<prefix>-<pid>-<n>` so that a sweep removes leftovers of dead test
 * processes only, never those of a test running concurrently.
 *
 * Everything here runs `ip` inside the namespaces it created; nothing
 * touches the host's own namespace.
 *
 * @module
 */

import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import process from "node:process";
import { processAlive } from "../core/files.ts";

let counter = 0;

/**
 * Run a command and return its stdout.
 *
 * @param cmd Program.
 * @param args Arguments.
 * @param input Optional stdin text.
 * @returns Trimmed stdout.
 * @throws {Error} With the command line and its stderr when it exits non-zero.
 */
export function run(cmd: string, args: readonly string[], input?: string): string {
  const r = spawnSync(cmd, args, { input, encoding: "utf8" });
  if (r.status !== 0) {
    throw new Error(
      `command failed (exit ${r.status ?? r.signal}): ${cmd} ${args.join(" ")}\n${r.stderr}`,
    );
  }
  return r.stdout.trim();
}

/**
 * Run a command inside a namespace (`ip netns exec <ns> …`).
 *
 * @throws {Error} When it exits non-zero.
 */
export function nsRun(ns: string, cmd: string, ...args: string[]): string {
  return run("ip", ["netns", "exec", ns, cmd, ...args]);
}

/** Whether a command succeeds inside a namespace. */
export function nsOk(ns: string, cmd: string, ...args: string[]): boolean {
  return spawnSync("ip", ["netns", "exec", ns, cmd, ...args], { stdio: "ignore" }).status === 0;
}

/**
 * Delete namespaces `<prefix>-<pid>-*` whose process is gone.
 *
 * @param prefix e.g. `wdp`.
 * @returns The names deleted.
 */
export function sweepNetns(prefix: string): string[] {
  if (!existsSync("/var/run/netns")) return [];
  const re = new RegExp(`^${prefix}-(\\d+)-`);
  const removed: string[] = [];
  for (const name of readdirSync("/var/run/netns")) {
    const m = re.exec(name);
    if (m && !processAlive(Number(m[1]))) {
      spawnSync("ip", ["netns", "del", name], { stdio: "ignore" });
      removed.push(name);
    }
  }
  return removed;
}

/**
 * Create a fresh namespace with `lo` up.
 *
 * @param prefix Name prefix, e.g. `wdp`.
 * @param tag Short label added to the name.
 * @returns The namespace name.
 */
export function createNetns(prefix: string, tag = "ns"): string {
  const name = `${prefix}-${process.pid}-${tag}${counter++}`;
  execFileSync("ip", ["netns", "add", name]);
  execFileSync("ip", ["-n", name, "link", "set", "lo", "up"]);
  return name;
}

/** Delete namespaces, ignoring ones already gone. */
export function deleteNetns(...names: string[]): void {
  for (const n of names) spawnSync("ip", ["netns", "del", n], { stdio: "ignore" });
}

/** A set of hosts (namespaces) on one underlay bridge. */
export interface NetnsLab {
  /** Namespace holding the underlay bridge. */
  readonly underlay: string;
  /** Host namespaces; each has `eth0` at `192.0.2.<10+i>/24`, MTU 1500, up. */
  readonly hosts: readonly { readonly ns: string; readonly ip: string }[];
  /** Delete every namespace of the lab. */
  destroy(): void;
}

/**
 * Build `count` host namespaces connected by veth pairs to a bridge in an
 * underlay namespace.
 *
 * @param prefix Name prefix (sweep first with {@link sweepNetns}).
 * @param count Number of hosts.
 * @returns The lab; call `destroy()` in `finally`.
 */
export function createLab(prefix: string, count: number): NetnsLab {
  const made: string[] = [];
  try {
    const underlay = createNetns(prefix, "u");
    made.push(underlay);
    run("ip", ["-n", underlay, "link", "add", "br0", "type", "bridge"]);
    run("ip", ["-n", underlay, "link", "set", "br0", "up"]);
    const hosts: { ns: string; ip: string }[] = [];
    for (let i = 0; i < count; i++) {
      const ns = createNetns(prefix, `h${i + 1}`);
      made.push(ns);
      const port = `p${i + 1}`;
      run("ip", [
        "-n",
        underlay,
        "link",
        "add",
        port,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        ns,
      ]);
      run("ip", ["-n", underlay, "link", "set", port, "master", "br0", "up"]);
      const ip = `192.0.2.${11 + i}`;
      run("ip", ["-n", ns, "addr", "add", `${ip}/24`, "dev", "eth0"]);
      run("ip", ["-n", ns, "link", "set", "eth0", "up"]);
      hosts.push({ ns, ip });
    }
    return { underlay, hosts, destroy: () => deleteNetns(...made) };
  } catch (e) {
    deleteNetns(...made);
    throw e;
  }
}
