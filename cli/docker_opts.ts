/**
 * `weft docker-opts`: flannel's `dist/mk-docker-opts.sh` for Docker hosts
 * whose containers sit on `docker0`. It reads subnet.env and writes the
 * Docker daemon options that put `docker0` on this host's lease:
 *
 * ```
 * DOCKER_OPT_BIP="--bip=10.5.52.1/24"
 * DOCKER_OPT_IPMASQ="--ip-masq=false"
 * DOCKER_OPT_MTU="--mtu=1450"
 * DOCKER_OPTS=" --bip=10.5.52.1/24 --ip-masq=false --mtu=1450"
 * ```
 *
 * Same flags (getopts style: `-ic`, `-dFILE`, `-d FILE`), same bytes as the
 * script run by dash:
 * - `-f FILE` subnet.env (default `/run/flannel/subnet.env`), `-d FILE` the
 *   output (default `/run/docker_opts.env`; weft also takes `-` for stdout);
 * - `-i` only the individual `DOCKER_OPT_*` variables, `-c` only the combined
 *   one, neither = both; `-k KEY` names the combined variable;
 * - `-m` leaves out `--ip-masq` (older Docker versions). `--ip-masq` is the
 *   inverse of `FLANNEL_IPMASQ`: when weft masquerades, Docker must not;
 *   any value but `true`/`false` is an error (unless `-m`);
 * - the variables come in name order, including `DOCKER_OPT_*` variables of
 *   the environment; the combined value starts with `$KEY` from the
 *   environment (then a space), then ` value` per option;
 * - `FLANNEL_IPV6_*` are read and not used: the script gives Docker no IPv6
 *   option, and neither does weft;
 * - a route `via` a gateway to this host's subnet is an error (the script's
 *   last check: Docker's bridge would fight it).
 *
 * Where weft differs on purpose: a missing subnet.env is an error (the
 * script writes an empty `DOCKER_OPTS=""` and Docker starts on its default
 * bridge); the route check matches the route's destination exactly (the
 * script greps a substring) and runs before the file is written (the script
 * writes the file, then fails); the file is written atomically.
 *
 * @module
 */

import * as fs from "node:fs";
import process from "node:process";
import { systemExec } from "../core/exec.ts";
import { writeFileAtomic } from "../core/files.ts";
import { formatIPv4Net, maskIPv4, parseIPv4 } from "../core/ip.ts";
import { parseSubnetEnvVars } from "../lease/subnet_env.ts";

/** What the command line asked for. */
export interface DockerOptsFlags {
  /** subnet.env to read (`-f`). */
  readonly envFile: string;
  /** Where to write (`-d`); `-` is stdout. */
  readonly outFile: string;
  /** Write the individual `DOCKER_OPT_*` variables (`-i`, or neither `-i` nor `-c`). */
  readonly individual: boolean;
  /** Write the combined variable (`-c`, or neither `-i` nor `-c`). */
  readonly combined: boolean;
  /** Emit `--ip-masq` (false with `-m`). */
  readonly ipMasq: boolean;
  /** Name of the combined variable (`-k`, default `DOCKER_OPTS`). */
  readonly combinedKey: string;
}

/** The command line was wrong; the message is followed by the usage text. */
export class DockerOptsUsageError extends Error {
  override name = "DockerOptsUsageError";
}

/** subnet.env or the host cannot give Docker options; the message says what to fix. */
export class DockerOptsError extends Error {
  override name = "DockerOptsError";
}

/** The usage text, as the script's. */
export const DOCKER_OPTS_USAGE =
  `weft docker-opts [-f FLANNEL-ENV-FILE] [-d DOCKER-ENV-FILE] [-i] [-c] [-m] [-k COMBINED-KEY]

Generate Docker daemon options based on flannel env file
OPTIONS:
\t-f\tPath to flannel env file. Defaults to /run/flannel/subnet.env
\t-d\tPath to Docker env file to write to. Defaults to /run/docker_opts.env (- for stdout)
\t-i\tOutput each Docker option as individual var. e.g. DOCKER_OPT_MTU=1500
\t-c\tOutput combined Docker options into DOCKER_OPTS var
\t-k\tSet the combined options key to this value (default DOCKER_OPTS=)
\t-m\tDo not output --ip-masq (useful for older Docker version)
`;

/**
 * Parse the command line as the script's `getopts "f:d:icmk:?h"` does:
 * options may be grouped (`-ic`), an argument may be attached (`-dFILE`)
 * or follow, `--` or the first non-option ends the options (the rest is
 * ignored).
 *
 * @param argv Arguments after `docker-opts`.
 * @returns The flags.
 * @throws {DockerOptsUsageError} On `-h`, `-?`, an unknown option, a
 *   missing argument or a `-k` that is not a variable name.
 * @example
 * ```ts
 * parseDockerOptsArgs(["-c", "-k", "DOCKER_NETWORK_OPTIONS", "-d", "/run/flannel/docker"]);
 * ```
 */
export function parseDockerOptsArgs(argv: readonly string[]): DockerOptsFlags {
  let envFile = "/run/flannel/subnet.env";
  let outFile = "/run/docker_opts.env";
  let individual = false;
  let combined = false;
  let ipMasq = true;
  let combinedKey = "DOCKER_OPTS";
  outer: for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--") break;
    if (!arg.startsWith("-") || arg === "-") break;
    for (let j = 1; j < arg.length; j++) {
      const opt = arg[j];
      if (opt === "f" || opt === "d" || opt === "k") {
        let value = arg.slice(j + 1);
        if (value === "") {
          if (i + 1 >= argv.length) throw new DockerOptsUsageError(`No arg for -${opt} option`);
          value = argv[++i];
        }
        if (opt === "f") envFile = value;
        else if (opt === "d") outFile = value;
        else combinedKey = value;
        continue outer;
      }
      if (opt === "i") individual = true;
      else if (opt === "c") combined = true;
      else if (opt === "m") ipMasq = false;
      else if (opt === "h" || opt === "?") throw new DockerOptsUsageError("");
      else throw new DockerOptsUsageError(`Illegal option -${opt}`);
    }
  }
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(combinedKey)) {
    throw new DockerOptsUsageError(
      `-k must be a shell variable name, current value is ${JSON.stringify(combinedKey)}`,
    );
  }
  if (!individual && !combined) individual = combined = true;
  return { envFile, outFile, individual, combined, ipMasq, combinedKey };
}

/**
 * The Docker options file for these variables, byte for byte what
 * `mk-docker-opts.sh` writes.
 *
 * @param vars The shell variables in effect after sourcing subnet.env: the
 *   environment overlaid with the file's assignments.
 * @param flags Which forms to write, `-m`, the combined key.
 * @returns The file's content (every line ends with a newline).
 * @throws {DockerOptsError} When `FLANNEL_IPMASQ` is neither `true` nor
 *   `false` (and `-m` is not given).
 * @example
 * ```ts
 * renderDockerOpts(
 *   { FLANNEL_SUBNET: "10.5.52.1/24", FLANNEL_MTU: "1450", FLANNEL_IPMASQ: "true" },
 *   { individual: false, combined: true, ipMasq: true, combinedKey: "DOCKER_OPTS" },
 * ); // 'DOCKER_OPTS=" --bip=10.5.52.1/24 --ip-masq=false --mtu=1450"\n'
 * ```
 */
export function renderDockerOpts(
  vars: Readonly<Record<string, string | undefined>>,
  flags: Pick<DockerOptsFlags, "individual" | "combined" | "ipMasq" | "combinedKey">,
): string {
  const options = new Map<string, string>();
  for (const [name, value] of Object.entries(vars)) {
    if (name.startsWith("DOCKER_OPT_") && value !== undefined) options.set(name, value);
  }
  if (vars.FLANNEL_SUBNET) options.set("DOCKER_OPT_BIP", `--bip=${vars.FLANNEL_SUBNET}`);
  if (vars.FLANNEL_MTU) options.set("DOCKER_OPT_MTU", `--mtu=${vars.FLANNEL_MTU}`);
  if (vars.FLANNEL_IPMASQ && flags.ipMasq) {
    if (vars.FLANNEL_IPMASQ === "true") options.set("DOCKER_OPT_IPMASQ", "--ip-masq=false");
    else if (vars.FLANNEL_IPMASQ === "false") options.set("DOCKER_OPT_IPMASQ", "--ip-masq=true");
    else {
      throw new DockerOptsError(
        `Invalid value of FLANNEL_IPMASQ: ${vars.FLANNEL_IPMASQ} (expected true or false; give -m to leave --ip-masq out)`,
      );
    }
  }
  let combined = vars[flags.combinedKey] ?? "";
  if (combined) combined += " ";
  let out = "";
  // `set` lists variables in name order (C collation: these names are ASCII)
  for (const name of [...options.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))) {
    const value = options.get(name)!;
    if (flags.individual) out += `${name}="${value}"\n`;
    combined += ` ${value}`;
  }
  if (flags.combined) out += `${flags.combinedKey}="${combined}"\n`;
  return out;
}

/**
 * Routes of `ip route show` output that go `via` a gateway to the network of
 * `FLANNEL_SUBNET` (its first address and prefix, e.g. `10.5.52.1/24` →
 * `10.5.52.0/24`): Docker's bridge on that subnet would lose to them.
 *
 * @param subnet `FLANNEL_SUBNET` as written.
 * @param routes `ip route show` output.
 * @returns The conflicting lines (none when `subnet` is not IPv4 CIDR text).
 * @example
 * ```ts
 * conflictingRoutes("10.5.52.1/24", "10.5.52.0/24 via 192.0.2.9 dev eth0\n"); // one line
 * ```
 */
export function conflictingRoutes(subnet: string, routes: string): string[] {
  const m = /^(\d+\.\d+\.\d+\.\d+)\/(\d+)$/.exec(subnet);
  if (!m || Number(m[2]) > 32) return [];
  let ip: number;
  try {
    ip = parseIPv4(m[1]);
  } catch {
    return [];
  }
  const prefixLen = Number(m[2]);
  const network = formatIPv4Net({ ip: (ip & maskIPv4(prefixLen)) >>> 0, prefixLen });
  return routes.split("\n").filter((line) => {
    const words = line.trim().split(/\s+/);
    return words[0] === network && words.includes("via");
  });
}

/** What {@link dockerOptsCommand} touches, injectable for tests. */
export interface DockerOptsIo {
  /** The environment (default `process.env`). */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Read a file (default `fs.readFileSync(path, "utf8")`). */
  readonly readFile?: (path: string) => string;
  /** Write the output atomically (default {@link writeFileAtomic}, mode 0644). */
  readonly writeFile?: (path: string, text: string) => void;
  /** `ip route show` output (default: run it). */
  readonly listRoutes?: () => Promise<string>;
  readonly stdout?: (text: string) => void;
  readonly stderr?: (text: string) => void;
}

/**
 * Run `weft docker-opts`.
 *
 * @param argv Arguments after `docker-opts`.
 * @param io Environment, files, routes and output (all defaulted).
 * @returns The exit code: 0 written, 1 error or usage (as the script).
 * @example
 * ```ts
 * const code = await dockerOptsCommand(["-c", "-d", "-"]);
 * ```
 */
export async function dockerOptsCommand(
  argv: readonly string[],
  io: DockerOptsIo = {},
): Promise<number> {
  const env = io.env ?? process.env;
  const stdout = io.stdout ?? ((t: string) => void process.stdout.write(t));
  const stderr = io.stderr ?? ((t: string) => void process.stderr.write(t));
  let flags: DockerOptsFlags;
  try {
    flags = parseDockerOptsArgs(argv);
  } catch (e) {
    if (!(e instanceof DockerOptsUsageError)) throw e;
    stderr(`${e.message ? `${e.message}\n` : ""}${DOCKER_OPTS_USAGE}`);
    return 1;
  }
  try {
    let text: string;
    try {
      text = (io.readFile ?? ((p) => fs.readFileSync(p, "utf8")))(flags.envFile);
    } catch (e) {
      throw new DockerOptsError(
        `cannot read ${flags.envFile}: ${
          (e as NodeJS.ErrnoException).code ?? (e as Error).message
        }; start weft first (it writes the file once it holds a lease) or give its path with -f`,
      );
    }
    const vars: Record<string, string | undefined> = { ...env };
    for (const [name, value] of parseSubnetEnvVars(text)) vars[name] = value;
    const output = renderDockerOpts(vars, flags);
    if (vars.FLANNEL_SUBNET) {
      const routes = await (io.listRoutes ?? listRoutes)();
      const conflicts = conflictingRoutes(vars.FLANNEL_SUBNET, routes);
      if (conflicts.length) {
        throw new DockerOptsError(
          `Your routing table already contains the subnet: ${
            conflicts.join("; ")
          } (Docker's bridge on ${vars.FLANNEL_SUBNET} would lose to it; remove the route or find the host that leases this subnet too)`,
        );
      }
    }
    if (flags.outFile === "-") stdout(output);
    else {
      (io.writeFile ?? ((p, t) => writeFileAtomic(p, t, { mode: 0o644 })))(flags.outFile, output);
    }
    return 0;
  } catch (e) {
    if (!(e instanceof DockerOptsError)) throw e;
    stderr(`weft docker-opts: ${e.message}\n`);
    return 1;
  }
}

async function listRoutes(): Promise<string> {
  const r = await systemExec("ip", ["-4", "route", "show"]);
  if (r.code !== 0) {
    throw new DockerOptsError(
      `cannot list routes (ip -4 route show exited ${r.code}: ${r.stderr.trim()}); install iproute2`,
    );
  }
  return r.stdout;
}
