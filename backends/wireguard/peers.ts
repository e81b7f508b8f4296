/**
 * The wireguard backend's pure part: a peer lease → the WireGuard peer it
 * needs (public key, endpoint `PublicIP:Port`, allowed IPs = its subnet,
 * keepalive, PSK), and the difference between the peers wanted and the
 * peers a device has (`get=1`) as the one `set` that fixes it.
 *
 * @module
 */

import { formatIPv4Net, isIPv4 } from "../../core/ip.ts";
import type { Lease } from "../../lease/types.ts";
import type { PeerResult } from "../routed/engine.ts";
import { parseWireguardLeaseData, type WireguardConfig } from "./config.ts";
import type { DeviceState, PeerConfig, PeerState } from "./uapi.ts";

/**
 * A peer lease's WireGuard peer (pure).
 *
 * @param peer The peer lease.
 * @param cfg Listen port (for leases without Port), keepalive, PSK.
 * @returns The peer, or why the lease is skipped.
 * @example
 * ```ts
 * wireguardPeer(lease, { listenPort: 51820, keepalive: 0 });
 * // { entries: { publicKey: "…", endpoint: "192.0.2.12:51820", keepalive: 0, allowedIPs: [lease.subnet] } }
 * ```
 */
export function wireguardPeer(
  peer: Lease,
  cfg: Pick<WireguardConfig, "listenPort" | "keepalive" | "psk">,
): PeerResult<PeerConfig> {
  if (peer.attrs.backendType !== "wireguard") {
    return {
      skip: `backend type is ${JSON.stringify(peer.attrs.backendType ?? "udp")}, not "wireguard"`,
    };
  }
  if (!peer.subnet) return { skip: "it has no IPv4 subnet (an IPv6-only lease)" };
  if (!isIPv4(peer.attrs.publicIP)) {
    return { skip: `PublicIP ${JSON.stringify(peer.attrs.publicIP)} is not IPv4` };
  }
  const data = parseWireguardLeaseData(peer.attrs.backendData, cfg.listenPort);
  if ("error" in data) return { skip: data.error };
  return {
    entries: {
      publicKey: data.publicKey,
      ...(cfg.psk ? { presharedKey: cfg.psk } : {}),
      endpoint: `${peer.attrs.publicIP}:${data.port}`,
      keepalive: cfg.keepalive,
      allowedIPs: [peer.subnet],
    },
  };
}

/**
 * Whether the device's peer already is as wanted.
 *
 * @param want The wanted peer.
 * @param have The peer as the device has it.
 * @returns True when nothing needs writing.
 */
export function peerMatches(want: PeerConfig, have: PeerState | undefined): boolean {
  if (!have) return false;
  const allowed = want.allowedIPs.map(formatIPv4Net).sort();
  return (have.presharedKey ?? "") === (want.presharedKey ?? "") &&
    (want.endpoint === undefined || have.endpoint === want.endpoint) &&
    have.keepalive === want.keepalive &&
    have.allowedIPs.length === allowed.length &&
    have.allowedIPs.every((a, i) => a === allowed[i]);
}

/** The peer changes that make a device hold exactly the wanted peers. */
export interface PeerDiff {
  /** Peers to write (new or different), with the peer key each is for. */
  readonly writes: readonly { readonly key: string; readonly peer: PeerConfig }[];
  /** Public keys of peers to remove (no wanted peer has them). */
  readonly removes: readonly string[];
}

/**
 * Diff wanted peers (by peer key) against a device's peers (pure).
 *
 * @param want Peer key (its subnet) → wanted peer.
 * @param have The device as `get` reports it.
 * @returns What to write and what to remove; empty when all is right.
 */
export function diffPeers(
  want: ReadonlyMap<string, PeerConfig>,
  have: Pick<DeviceState, "peers">,
): PeerDiff {
  const wanted = new Set<string>();
  const writes: { key: string; peer: PeerConfig }[] = [];
  for (const [key, peer] of want) {
    wanted.add(peer.publicKey);
    if (!peerMatches(peer, have.peers.get(peer.publicKey))) writes.push({ key, peer });
  }
  const removes = [...have.peers.keys()].filter((k) => !wanted.has(k));
  return { writes, removes };
}
