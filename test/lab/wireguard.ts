/**
 * wireguard-go in lab hosts. Its UAPI socket lives at
 * `/var/run/wireguard/<dev>.sock`, which network namespaces share, so each
 * lab host gets its own directory bound over /var/run/wireguard in a new
 * mount namespace (`unshare -m`) for everything that talks to its
 * wireguard-go: the agent, a restarted agent, `wg`. Used by the wireguard
 * e2e test and bench.
 *
 * @module
 */

import * as fs from "node:fs";
import * as path from "node:path";
import type { Lab, LabHost } from "./lab.ts";

/** The device name flannel and weft use. */
export const WG_DEVICE = "flannel-wg";

/** Host's own /var/run/wireguard (inside the lab directory, removed with it). */
export function wgDir(lab: Lab, host: LabHost): string {
  return path.join(lab.dir, `${host.ns}-wireguard`);
}

/**
 * A command prefix: a new mount namespace with host's directory over
 * /var/run/wireguard, then the command (`[...inWgMount(lab, h), "wg", "show"]`).
 */
export function inWgMount(lab: Lab, host: LabHost): string[] {
  const dir = wgDir(lab, host);
  fs.mkdirSync(dir, { recursive: true });
  fs.mkdirSync("/var/run/wireguard", { recursive: true });
  return ["unshare", "-m", "sh", "-c", `mount --bind ${dir} /var/run/wireguard && exec "$@"`, "sh"];
}

/** Host's WireGuard private key file (`WIREGUARD_KEY_FILE` of its agent). */
export function wgKeyFile(lab: Lab, host: LabHost): string {
  return path.join(lab.dir, `${host.ns}.wgkey`);
}

/** One WireGuard peer as `wg show <dev> dump` lists it. */
export interface WgPeerRow {
  readonly publicKey: string;
  readonly endpoint: string;
  readonly allowedIPs: string;
  readonly keepalive: string;
}

/**
 * `wg show flannel-wg dump` in a host.
 *
 * @returns The device's public key and port, and its peers sorted by allowed IPs.
 */
export async function wgShow(
  lab: Lab,
  host: LabHost,
): Promise<{ publicKey: string; port: number; peers: WgPeerRow[] }> {
  const out = await lab.run(host.ns, [...inWgMount(lab, host), "wg", "show", WG_DEVICE, "dump"]);
  const [dev, ...rest] = out.trim().split("\n").map((l) => l.split("\t"));
  return {
    publicKey: dev[1],
    port: Number(dev[2]),
    peers: rest.map((p) => ({
      publicKey: p[0],
      endpoint: p[2],
      allowedIPs: p[3],
      keepalive: p[7],
    })).sort((a, b) => a.allowedIPs.localeCompare(b.allowedIPs)),
  };
}
