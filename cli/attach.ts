/**
 * `weft attach <netns>` / `weft detach <netns>`: put a network namespace
 * (a "pod") on this host's overlay subnet, the way Pipework did for
 * containers — without a CNI runtime.
 *
 * Kernel state created, all in the caller's network namespace (the host)
 * and the pod's:
 *
 * ```
 * host:  bridge cni0, address <FLANNEL_SUBNET> (e.g. 10.5.52.1/24), up
 *        veth<8 hex> (host end, MTU = FLANNEL_MTU), master cni0, up
 * pod:   eth0 (other end, MTU = FLANNEL_MTU), address <next free>/<len>, up;
 *        lo up; default route via <FLANNEL_SUBNET's address>
 * ```
 *
 * The bridge is the same one the CNI `bridge` plugin uses under flannel,
 * so attached pods and CNI pods share it. Addresses come from
 * {@link ./ipam.ts} (a locked file per subnet), so concurrent attaches
 * never collide. The host end's name is derived from the namespace path,
 * so a repeated attach is recognised and detach finds the link.
 *
 * Commands run through an injected {@link Exec} (`ip`, `nsenter`); the
 * rtnetlink client can replace them later without changing this API.
 *
 * @module
 */

import { createHash } from "node:crypto";
import * as fs from "node:fs";
import { formatIPv4, formatIPv4Net } from "../core/ip.ts";
import { parseSubnetEnv } from "../lease/subnet_env.ts";
import { type Logger, nullLogger } from "../core/log.ts";
import { CommandError, type Exec, systemExec } from "../core/exec.ts";
import { allocateAddress, releaseAddress } from "./ipam.ts";

/** Default subnet.env path (flannel's). */
export const DEFAULT_SUBNET_FILE = "/run/flannel/subnet.env";
/** Default IPAM directory. */
export const DEFAULT_IPAM_DIR = "/run/weft/ipam";
/** Default bridge name (the CNI bridge plugin's under flannel). */
export const DEFAULT_BRIDGE = "cni0";

/** Options of {@link attachPod}. */
export interface AttachOptions {
  /** Pod namespace: a name from `ip netns list`, or a path such as `/proc/<pid>/ns/net`. */
  readonly netns: string;
  /** subnet.env to read (default `/run/flannel/subnet.env`). */
  readonly subnetFile?: string;
  /** IPAM directory (default `/run/weft/ipam`). */
  readonly ipamDir?: string;
  /** Bridge name (default `cni0`). */
  readonly bridge?: string;
  /** Interface name inside the pod (default `eth0`). */
  readonly ifname?: string;
  /** Runs host-side commands (default: in this process's namespace). */
  readonly exec?: Exec;
  readonly logger?: Logger;
  readonly signal?: AbortSignal;
}

/** A pod's place on the overlay. */
export interface PodAttachment {
  /** Path of the pod's netns file. */
  readonly netns: string;
  readonly ifname: string;
  /** Host end of the veth pair. */
  readonly hostVeth: string;
  readonly bridge: string;
  /** Pod address, dotted. */
  readonly ip: string;
  readonly prefixLen: number;
  /** Gateway (the bridge address), dotted. */
  readonly gateway: string;
  readonly mtu: number;
}

/** Attaching or detaching a pod failed. */
export class AttachError extends Error {
  /**
   * @param message What failed and how to fix it.
   * @param options The underlying error.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "AttachError";
  }
}

/**
 * The netns file of a namespace name or path.
 *
 * @param netns Name or path.
 * @returns `/run/netns/<name>` for a name, the path otherwise.
 * @throws {TypeError} When the name contains characters `ip netns` would not accept.
 */
export function netnsPath(netns: string): string {
  if (netns.includes("/")) return netns;
  if (!/^[A-Za-z0-9_.-]+$/.test(netns) || netns === "." || netns === "..") {
    throw new TypeError(`Cannot use ${JSON.stringify(netns)} as a network namespace name`);
  }
  return `/run/netns/${netns}`;
}

/**
 * Host-side veth name for a pod interface: `veth` + 8 hex digits of a hash
 * of the namespace path and interface name (15 characters at most).
 *
 * @param path Netns path.
 * @param ifname Pod interface name.
 * @returns e.g. `veth1a2b3c4d`.
 */
export function hostVethName(path: string, ifname: string): string {
  return "veth" + createHash("sha256").update(`${path}\0${ifname}`).digest("hex").slice(0, 8);
}

async function ip(exec: Exec, args: string[], signal?: AbortSignal, input?: string) {
  return await exec("ip", args, { signal, input });
}

function fail(what: string, argv: string[], r: { code: number; stdout: string; stderr: string }) {
  return new AttachError(what, { cause: new CommandError(argv, r) });
}

interface AddrInfo {
  family: string;
  local: string;
  prefixlen: number;
}

async function ensureBridge(
  exec: Exec,
  bridge: string,
  gatewayCidr: string,
  signal?: AbortSignal,
): Promise<void> {
  let shown = await ip(exec, ["-j", "addr", "show", "dev", bridge], signal);
  if (shown.code !== 0) {
    const add = await ip(exec, ["link", "add", bridge, "type", "bridge"], signal);
    // a concurrent attach may have created it first
    if (add.code !== 0 && !/File exists/.test(add.stderr)) {
      throw fail(`Cannot create bridge ${bridge}`, ["ip", "link", "add", bridge], add);
    }
    shown = await ip(exec, ["-j", "addr", "show", "dev", bridge], signal);
    if (shown.code !== 0) throw fail(`Cannot read bridge ${bridge}`, ["ip", "addr", "show"], shown);
  }
  const links = JSON.parse(shown.stdout || "[]") as { addr_info?: AddrInfo[] }[];
  const v4 = (links[0]?.addr_info ?? []).filter((a) => a.family === "inet");
  if (!v4.some((a) => `${a.local}/${a.prefixlen}` === gatewayCidr)) {
    if (v4.length > 0) {
      throw new AttachError(
        `Cannot attach: bridge ${bridge} has ${
          v4.map((a) => `${a.local}/${a.prefixlen}`).join(", ")
        } but this host's subnet gateway is ${gatewayCidr} (the lease changed?); ` +
          `detach its pods and delete the bridge (ip link del ${bridge}), then attach again`,
      );
    }
    const add = await ip(exec, ["addr", "add", gatewayCidr, "dev", bridge], signal);
    // "File exists" / "Address already assigned": a concurrent attach added it first
    if (add.code !== 0 && !/File exists|already assigned/.test(add.stderr)) {
      throw fail(`Cannot add ${gatewayCidr} to ${bridge}`, ["ip", "addr", "add"], add);
    }
  }
  const up = await ip(exec, ["link", "set", bridge, "up"], signal);
  if (up.code !== 0) throw fail(`Cannot set ${bridge} up`, ["ip", "link", "set", bridge, "up"], up);
}

/**
 * Attach a network namespace to this host's overlay subnet (see the
 * module note for what it creates). Attaching an already attached
 * namespace returns its existing attachment.
 *
 * @param options Namespace, subnet.env path, IPAM directory, exec.
 * @returns The pod's address, gateway and links.
 * @throws {AttachError} When subnet.env is missing or the kernel refuses a step
 *   (everything created so far is removed again).
 * @throws {AddressExhaustedError} When the subnet is full.
 * @example
 * ```ts
 * const pod = await attachPod({ netns: "pod1" });
 * console.log(`${pod.ip}/${pod.prefixLen} via ${pod.gateway}`);
 * ```
 */
export async function attachPod(options: AttachOptions): Promise<PodAttachment> {
  const exec = options.exec ?? systemExec;
  const logger = options.logger ?? nullLogger;
  const subnetFile = options.subnetFile ?? DEFAULT_SUBNET_FILE;
  const bridge = options.bridge ?? DEFAULT_BRIDGE;
  const ifname = options.ifname ?? "eth0";
  const signal = options.signal;
  const path = netnsPath(options.netns);
  if (!fs.existsSync(path)) {
    throw new AttachError(
      `Cannot attach ${options.netns}: network namespace ${path} does not exist; create it with 'ip netns add ${options.netns}'`,
    );
  }
  let text: string;
  try {
    text = fs.readFileSync(subnetFile, "utf8");
  } catch (e) {
    throw new AttachError(
      `Cannot attach ${options.netns}: cannot read ${subnetFile} (${
        (e as Error).message
      }); start the weft agent first, or pass the right --subnet-file`,
      { cause: e },
    );
  }
  const env = parseSubnetEnv(text);
  if (!env.subnet || env.mtu === undefined) {
    throw new AttachError(
      `Cannot attach ${options.netns}: ${subnetFile} lacks a valid ${
        env.subnet ? "FLANNEL_MTU" : "FLANNEL_SUBNET (IPv4)"
      }; it is written by the weft agent once it holds a lease`,
    );
  }
  if (env.subnet.prefixLen > 30) {
    throw new AttachError(
      `Cannot attach ${options.netns}: subnet ${
        formatIPv4Net(env.subnet)
      } in ${subnetFile} is too small for pods (needs /30 or larger)`,
    );
  }
  const subnet = env.subnet;
  // flannel writes the subnet's first address as FLANNEL_SUBNET: the bridge gateway
  const gatewayIP = (subnet.ip + 1) >>> 0;
  const gateway = formatIPv4(gatewayIP);
  const gatewayCidr = `${gateway}/${subnet.prefixLen}`;
  const hostVeth = hostVethName(path, ifname);
  await ensureBridge(exec, bridge, gatewayCidr, signal);

  const address = await allocateAddress({
    dir: options.ipamDir ?? DEFAULT_IPAM_DIR,
    subnet,
    gateway: gatewayIP,
    owner: { netns: path, ifname, hostVeth },
    signal,
  });
  const podIP = formatIPv4(address);
  const result: PodAttachment = {
    netns: path,
    ifname,
    hostVeth,
    bridge,
    ip: podIP,
    prefixLen: subnet.prefixLen,
    gateway,
    mtu: env.mtu,
  };
  const existing = await ip(exec, ["-j", "link", "show", "dev", hostVeth], signal);
  if (existing.code === 0) {
    logger.debug("pod already attached", { netns: path, ip: podIP });
    return result;
  }

  const mtu = String(env.mtu);
  // deno-fmt-ignore
  const create = [
    "link", "add", hostVeth, "mtu", mtu, "type", "veth",
    "peer", "name", ifname, "mtu", mtu, "netns", path,
  ];
  const made = await ip(exec, create, signal);
  if (made.code !== 0) {
    await releaseAddress({ dir: options.ipamDir ?? DEFAULT_IPAM_DIR, netns: path, ifname });
    throw fail(
      `Cannot create the veth pair for ${options.netns} (does it already have ${ifname}?)`,
      ["ip", ...create],
      made,
    );
  }
  try {
    const podBatch = [
      `addr add ${podIP}/${subnet.prefixLen} dev ${ifname}`,
      `link set ${ifname} up`,
      `link set lo up`,
      `route replace default via ${gateway} dev ${ifname}`,
    ].join("\n") + "\n";
    const pod = await exec("nsenter", [`--net=${path}`, "ip", "-batch", "-"], {
      input: podBatch,
      signal,
    });
    if (pod.code !== 0) throw fail(`Cannot configure ${ifname} in ${path}`, ["nsenter", "ip"], pod);
    const up = await ip(exec, ["link", "set", hostVeth, "master", bridge, "up"], signal);
    if (up.code !== 0) throw fail(`Cannot plug ${hostVeth} into ${bridge}`, ["ip", "link"], up);
  } catch (e) {
    await ip(exec, ["link", "del", hostVeth]);
    await releaseAddress({ dir: options.ipamDir ?? DEFAULT_IPAM_DIR, netns: path, ifname });
    throw e;
  }
  logger.info("attached pod", {
    netns: path,
    ip: `${podIP}/${subnet.prefixLen}`,
    hostVeth,
    subnet: formatIPv4Net(subnet),
  });
  return result;
}

/**
 * Detach a pod: delete its veth pair and release its address. Detaching a
 * pod that is not attached does nothing.
 *
 * @param options Namespace, IPAM directory, interface name, exec.
 * @returns True when something was removed.
 * @throws {AttachError} When the link exists but cannot be deleted.
 */
export async function detachPod(
  options: Pick<AttachOptions, "netns" | "ipamDir" | "ifname" | "exec" | "logger" | "signal">,
): Promise<boolean> {
  const exec = options.exec ?? systemExec;
  const path = netnsPath(options.netns);
  const ifname = options.ifname ?? "eth0";
  const released = await releaseAddress({
    dir: options.ipamDir ?? DEFAULT_IPAM_DIR,
    netns: path,
    ifname,
    signal: options.signal,
  });
  const hostVeth = released?.owner.hostVeth ?? hostVethName(path, ifname);
  const del = await ip(exec, ["link", "del", hostVeth], options.signal);
  const gone = /Cannot find device|does not exist/.test(del.stderr);
  if (del.code !== 0 && !gone) {
    throw fail(
      `Cannot delete ${hostVeth} of ${options.netns}`,
      ["ip", "link", "del", hostVeth],
      del,
    );
  }
  if (released || del.code === 0) {
    (options.logger ?? nullLogger).info("detached pod", {
      netns: path,
      ip: released ? formatIPv4(released.ip) : undefined,
    });
    return true;
  }
  return false;
}
