/**
 * Kernel switches the agent needs in its own network namespace, set by
 * writing `/proc/sys`: `net.ipv4.ip_forward=1` with IPv4 (hosts route pod
 * traffic), `net.ipv6.conf.all.forwarding=1` with IPv6, and — when the
 * `br_netfilter` module is loaded — `net.bridge.bridge-nf-call-iptables=1`
 * (`-ip6tables` with IPv6) so bridged pod traffic passes the masquerade and
 * forward rules, as Kubernetes requires.
 *
 * Turning IPv6 forwarding on makes the kernel ignore router advertisements
 * on interfaces with `accept_ra=1`, so a host whose IPv6 default route comes
 * from SLAAC would lose it when its lifetime runs out. For the interfaces
 * named in `keepRouterAdvertisements` (the external interface), `accept_ra`
 * 1 is raised to 2 ("accept even when forwarding") first; 0 and 2 are left
 * alone.
 *
 * `/proc/sys/net` always shows the namespace of the process that reads or
 * writes it, so the agent (run under `ip netns exec` in the lab) changes
 * only its own namespace. Never call this from a test process in the
 * host's namespace; tests run it in a child process inside a lab namespace.
 * Nothing here loads kernel modules.
 *
 * @module
 */

import * as fs from "node:fs";
import * as path from "node:path";

/** Options of {@link ensureForwarding}. */
export interface ForwardingOptions {
  /** Set `net.ipv4.ip_forward` (default true). */
  readonly ipv4?: boolean;
  /** Set `net.ipv6.conf.all.forwarding` (default false). */
  readonly ipv6?: boolean;
  /**
   * With `ipv6`: interfaces that keep accepting router advertisements once
   * forwarding is on (`net.ipv6.conf.<name>.accept_ra` 1 becomes 2).
   */
  readonly keepRouterAdvertisements?: readonly string[];
  /**
   * Set `net.bridge.bridge-nf-call-iptables` (and `-ip6tables` with IPv6)
   * when br_netfilter is loaded (default true); skipped when it is not.
   */
  readonly bridgeNetfilter?: boolean;
  /** Where sysctls live (default `/proc/sys`; tests point it at a directory). */
  readonly procRoot?: string;
}

/**
 * The file that holds a sysctl.
 *
 * @param name Dotted name, e.g. `net.ipv4.ip_forward`.
 * @param procRoot Default `/proc/sys`.
 * @returns The path.
 * @throws {TypeError} When the name is not a dotted sysctl name.
 */
export function sysctlPath(name: string, procRoot = "/proc/sys"): string {
  if (!/^[a-z0-9_-]+(\.[a-z0-9_-]+)+$/i.test(name)) {
    throw new TypeError(
      `Cannot use ${
        JSON.stringify(name)
      } as a sysctl name: expected dotted words like net.ipv4.ip_forward`,
    );
  }
  return path.join(procRoot, ...name.split("."));
}

/**
 * Read a sysctl.
 *
 * @param name Dotted name.
 * @param procRoot Default `/proc/sys`.
 * @returns Its value without the trailing newline, or `undefined` when it does not exist.
 */
export function readSysctl(name: string, procRoot?: string): string | undefined {
  try {
    return fs.readFileSync(sysctlPath(name, procRoot), "utf8").trim();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
}

/**
 * Set a sysctl when it differs.
 *
 * @param name Dotted name.
 * @param value The value to write.
 * @param procRoot Default `/proc/sys`.
 * @returns True when it was written, false when it already had the value.
 * @throws {Error} When it does not exist or cannot be written (with the fix in the message).
 */
export function ensureSysctl(name: string, value: string, procRoot?: string): boolean {
  const file = sysctlPath(name, procRoot);
  const current = readSysctl(name, procRoot);
  if (current === undefined) {
    throw new Error(`Cannot set ${name}=${value}: ${file} does not exist in this kernel`);
  }
  if (current === value) return false;
  try {
    fs.writeFileSync(file, value + "\n");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const fix = code === "EROFS"
      ? `${file} is read-only here (a container without a writable /proc/sys?): set it on the host beforehand (sysctl -w ${name}=${value}) or run privileged`
      : "run as root or with CAP_NET_ADMIN, or set it beforehand";
    throw new Error(
      `Cannot set ${name}=${value} (current value is ${current}): ${(e as Error).message}; ${fix}`,
      { cause: e },
    );
  }
  return true;
}

/**
 * Turn on forwarding (and bridge netfilter when available) in this
 * process's network namespace.
 *
 * @param options Which families, interfaces that keep router advertisements, procRoot.
 * @returns Names of the sysctls that were changed.
 * @throws {Error} When a sysctl cannot be written.
 * @example
 * ```ts
 * ensureForwarding({ ipv4: true }); // ["net.ipv4.ip_forward"] the first time, then []
 * ensureForwarding({ ipv4: false, ipv6: true, keepRouterAdvertisements: ["eth0"] });
 * // ["net.ipv6.conf.eth0.accept_ra", "net.ipv6.conf.all.forwarding"] when eth0 had accept_ra=1
 * ```
 */
export function ensureForwarding(options: ForwardingOptions = {}): string[] {
  const root = options.procRoot;
  const changed: string[] = [];
  const set = (name: string) => {
    if (ensureSysctl(name, "1", root)) changed.push(name);
  };
  if (options.ipv4 ?? true) set("net.ipv4.ip_forward");
  if (options.ipv6) {
    for (const name of options.keepRouterAdvertisements ?? []) {
      // interface names may hold dots (eth0.100), which sysctl names cannot
      const file = path.join(root ?? "/proc/sys", "net", "ipv6", "conf", name, "accept_ra");
      let current: string | undefined;
      try {
        current = fs.readFileSync(file, "utf8").trim();
      } catch {
        continue; // no such interface here, or IPv6 disabled on it
      }
      if (current !== "1") continue;
      try {
        fs.writeFileSync(file, "2\n");
      } catch (e) {
        throw new Error(
          `Cannot set net.ipv6.conf.${name}.accept_ra=2 (current value is 1): ${
            (e as Error).message
          }; without it ${name} stops learning its IPv6 routes from router advertisements once forwarding is on; run as root, or set it beforehand`,
          { cause: e },
        );
      }
      changed.push(`net.ipv6.conf.${name}.accept_ra`);
    }
    set("net.ipv6.conf.all.forwarding");
  }
  if (options.bridgeNetfilter ?? true) {
    if ((options.ipv4 ?? true) && readSysctl("net.bridge.bridge-nf-call-iptables", root)) {
      set("net.bridge.bridge-nf-call-iptables");
    }
    if (options.ipv6 && readSysctl("net.bridge.bridge-nf-call-ip6tables", root)) {
      set("net.bridge.bridge-nf-call-ip6tables");
    }
  }
  return changed;
}

/**
 * The bridge netfilter switches that do not exist because `br_netfilter`
 * is not loaded: without them traffic between pods on one host's bridge
 * bypasses the masquerade and forward rules (flanneld refuses to start then;
 * weft warns, naming `modprobe br_netfilter`).
 *
 * @param options Which families (IPv4 by default), procRoot.
 * @returns The missing sysctl names, empty when the module is loaded.
 * @example
 * ```ts
 * bridgeNetfilterMissing({}); // ["net.bridge.bridge-nf-call-iptables"] without br_netfilter
 * ```
 */
export function bridgeNetfilterMissing(
  options: Pick<ForwardingOptions, "ipv4" | "ipv6" | "procRoot"> = {},
): string[] {
  const names = [
    ...(options.ipv4 ?? true ? ["net.bridge.bridge-nf-call-iptables"] : []),
    ...(options.ipv6 ? ["net.bridge.bridge-nf-call-ip6tables"] : []),
  ];
  return names.filter((n) => readSysctl(n, options.procRoot) === undefined);
}
