/**
 * A tiny address book for `weft attach`: which pod address of this host's
 * subnet belongs to which network namespace, so two attaches never get the
 * same address — also when they run at the same time in two processes.
 *
 * One JSON file per subnet, `<dir>/<a.b.c.d>-<len>.json` (default dir
 * `/run/weft/ipam`, lost on reboot like the pods it describes):
 *
 * ```json
 * { "subnet": "10.5.52.0/24",
 *   "allocations": { "10.5.52.2": { "netns": "/run/netns/pod1", "ifname": "eth0", "hostVeth": "veth1a2b3c4d" } } }
 * ```
 *
 * Writers serialise on `<file>.lock`, created with O_EXCL and holding
 * `<pid> <ms>`; a lock whose process is gone, or older than 10 s, is
 * broken (core/files.ts). The file is replaced by rename, so readers never see half a
 * write. Addresses are handed out lowest first, skipping the network
 * address, the gateway (`FLANNEL_SUBNET`'s address) and the broadcast
 * address. An entry whose namespace file no longer exists is reclaimed.
 *
 * @module
 */

import * as fs from "node:fs";
import * as path from "node:path";
import { ensureDir, withLockFile, writeFileAtomic } from "../core/files.ts";
import { formatIPv4, formatIPv4Net, type IPv4Net, lastIPv4, parseIPv4 } from "../core/ip.ts";

/** Who holds an address. */
export interface IpamOwner {
  /** Path of the pod's network namespace file. */
  readonly netns: string;
  /** Interface name inside the pod. */
  readonly ifname: string;
  /** Host end of the veth pair. */
  readonly hostVeth: string;
}

interface IpamState {
  subnet: string;
  allocations: Record<string, IpamOwner>;
}

/** No free address is left in the subnet. */
export class AddressExhaustedError extends Error {
  /**
   * @param message What failed.
   */
  constructor(message: string) {
    super(message);
    this.name = "AddressExhaustedError";
  }
}

/**
 * The IPAM file of a subnet.
 *
 * @param dir IPAM directory.
 * @param subnet The host's subnet.
 * @returns e.g. `/run/weft/ipam/10.5.52.0-24.json`.
 */
export function ipamFile(dir: string, subnet: IPv4Net): string {
  return path.join(dir, `${formatIPv4(subnet.ip)}-${subnet.prefixLen}.json`);
}

/**
 * The lowest free pod address of a subnet.
 *
 * @param subnet The subnet.
 * @param gateway Address kept for the bridge.
 * @param used Addresses in use.
 * @returns The address, or `undefined` when none is free.
 * @throws {RangeError} When the subnet is smaller than /30.
 */
export function pickFreeAddress(
  subnet: IPv4Net,
  gateway: number,
  used: ReadonlySet<number>,
): number | undefined {
  if (subnet.prefixLen > 30) {
    throw new RangeError(
      `Cannot hand out pod addresses from ${
        formatIPv4Net(subnet)
      }: a subnet needs at least 4 addresses (/30)`,
    );
  }
  const last = lastIPv4(subnet);
  for (let ip = subnet.ip + 1; ip < last; ip++) {
    if (ip !== gateway && !used.has(ip)) return ip >>> 0;
  }
  return undefined;
}

function load(file: string, subnet: IPv4Net): IpamState {
  try {
    const state = JSON.parse(fs.readFileSync(file, "utf8")) as IpamState;
    if (typeof state.allocations !== "object" || state.allocations === null) {
      throw new SyntaxError("allocations is not an object");
    }
    return state;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") {
      return { subnet: formatIPv4Net(subnet), allocations: {} };
    }
    throw new Error(
      `Cannot read IPAM file ${file}: ${(e as Error).message}; delete it to start over`,
      {
        cause: e,
      },
    );
  }
}

function save(file: string, state: IpamState): void {
  writeFileAtomic(file, JSON.stringify(state, null, 2) + "\n", { mode: 0o644 });
}

/** Options of {@link allocateAddress}. */
export interface AllocateOptions {
  /** IPAM directory (created when missing). */
  readonly dir: string;
  readonly subnet: IPv4Net;
  /** The bridge's address, never handed out. */
  readonly gateway: number;
  readonly owner: IpamOwner;
  readonly signal?: AbortSignal;
}

/**
 * Reserve a pod address. An owner (same netns and ifname) that already
 * holds one gets it back.
 *
 * @param options Directory, subnet, gateway, owner.
 * @returns The address (uint32).
 * @throws {AddressExhaustedError} When the subnet is full.
 */
export async function allocateAddress(options: AllocateOptions): Promise<number> {
  ensureDir(options.dir);
  const file = ipamFile(options.dir, options.subnet);
  return await withLockFile(`${file}.lock`, () => {
    const state = load(file, options.subnet);
    const used = new Set<number>();
    for (const [ip, owner] of Object.entries(state.allocations)) {
      if (owner.netns === options.owner.netns && owner.ifname === options.owner.ifname) {
        return parseIPv4(ip);
      }
      if (!fs.existsSync(owner.netns)) {
        delete state.allocations[ip]; // the pod is gone, and its veth with it
        continue;
      }
      used.add(parseIPv4(ip));
    }
    const ip = pickFreeAddress(options.subnet, options.gateway, used);
    if (ip === undefined) {
      throw new AddressExhaustedError(
        `Cannot attach ${options.owner.netns}: all addresses of ${
          formatIPv4Net(options.subnet)
        } are taken (${used.size} pods); detach some pods or use a larger SubnetLen`,
      );
    }
    state.allocations[formatIPv4(ip)] = { ...options.owner };
    save(file, state);
    return ip;
  }, { signal: options.signal });
}

/**
 * Release the address held by a pod interface, looking through every
 * subnet file in the directory (the subnet may have changed since).
 *
 * @param options Directory, netns path, interface name.
 * @returns The released address and its owner record, or `undefined` when none was held.
 */
export async function releaseAddress(options: {
  dir: string;
  netns: string;
  ifname: string;
  signal?: AbortSignal;
}): Promise<{ ip: number; owner: IpamOwner } | undefined> {
  let names: string[];
  try {
    names = fs.readdirSync(options.dir).filter((n) => /^\d+\.\d+\.\d+\.\d+-\d+\.json$/.test(n));
  } catch {
    return undefined;
  }
  for (const name of names) {
    const file = path.join(options.dir, name);
    const found = await withLockFile(`${file}.lock`, () => {
      const state = load(file, { ip: 0, prefixLen: 0 });
      for (const [ip, owner] of Object.entries(state.allocations)) {
        if (owner.netns === options.netns && owner.ifname === options.ifname) {
          delete state.allocations[ip];
          save(file, state);
          return { ip: parseIPv4(ip), owner };
        }
      }
      return undefined;
    }, { signal: options.signal });
    if (found) return found;
  }
  return undefined;
}

/**
 * Every allocation of a subnet (for status and tests).
 *
 * @param dir IPAM directory.
 * @param subnet The subnet.
 * @returns Address (dotted) → owner.
 */
export function listAddresses(dir: string, subnet: IPv4Net): Record<string, IpamOwner> {
  return load(ipamFile(dir, subnet), subnet).allocations;
}
