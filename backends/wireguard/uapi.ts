/**
 * WireGuard's cross-platform userspace API (wireguard.com/xplatform), as
 * `wireguard-go` serves it on `/var/run/wireguard/<device>.sock`: a request
 * is `get=1\n\n` or `set=1\n` + `key=value` lines + `\n`; the answer is
 * `key=value` lines ending in `errno=<n>\n\n`. Keys are hex on this
 * protocol; this module speaks base64 to its callers, like `wg`.
 *
 * Pure encoders/decoders ({@link encodeSet}, {@link parseGet}) plus a
 * client over a Unix socket ({@link uapiRequest}).
 *
 * @module
 */

import * as net from "node:net";
import { formatIPv4, formatIPv4Net, type IPv4Net, parseIPv4Net } from "../../core/ip.ts";
import { keyFromHex, keyToHex } from "./keys.ts";

/** Where wireguard-go puts a device's UAPI socket. */
export const UAPI_DIR = "/var/run/wireguard";

/** A peer as the device has it (keys base64). */
export interface PeerState {
  readonly publicKey: string;
  /** Base64 preshared key, or undefined when none (all zero). */
  readonly presharedKey?: string;
  /** `ip:port`, or undefined when none. */
  readonly endpoint?: string;
  /** Seconds; 0 = off. */
  readonly keepalive: number;
  /** Allowed IPv4 networks, `a.b.c.d/n`, sorted. */
  readonly allowedIPs: readonly string[];
  /** Seconds since the epoch of the last handshake; 0 = never. */
  readonly lastHandshakeSec: number;
}

/** A device as `get=1` reports it. */
export interface DeviceState {
  /** Hex private key, or undefined when none is set. */
  readonly privateKeyHex?: string;
  readonly listenPort: number;
  /** Peers by base64 public key. */
  readonly peers: ReadonlyMap<string, PeerState>;
}

/** One peer change of a `set`. */
export interface PeerConfig {
  readonly publicKey: string;
  /** Remove the peer (other fields ignored). */
  readonly remove?: boolean;
  /** Base64 preshared key; undefined clears it. */
  readonly presharedKey?: string;
  readonly endpoint?: string;
  readonly keepalive: number;
  /** Replaces the peer's allowed IPs. */
  readonly allowedIPs: readonly IPv4Net[];
}

/** A `set` request. */
export interface DeviceConfig {
  /** The private key as hex (UAPI's form), when it changes. */
  readonly privateKeyHex?: string;
  readonly listenPort?: number;
  /** Remove every peer not listed first. */
  readonly replacePeers?: boolean;
  readonly peers: readonly PeerConfig[];
}

/** The device answered a request with a non-zero errno. */
export class UapiError extends Error {
  override name = "UapiError";
  /**
   * @param device The device.
   * @param errno The errno it answered.
   * @param what What was asked.
   */
  constructor(readonly device: string, readonly errno: number, what: string) {
    super(
      `WireGuard device ${device} refused ${what}: errno=${errno}; check the device with \`wg show ${device}\` and wireguard-go's log`,
    );
  }
}

const ZERO_KEY = "0".repeat(64);

/**
 * Encode a `set=1` request.
 *
 * @param config What to set.
 * @returns The request text, ending in a blank line.
 * @example
 * ```ts
 * encodeSet({ listenPort: 51820, peers: [] }); // "set=1\nlisten_port=51820\n\n"
 * ```
 */
export function encodeSet(config: DeviceConfig): string {
  const lines = ["set=1"];
  if (config.privateKeyHex !== undefined) lines.push(`private_key=${config.privateKeyHex}`);
  if (config.listenPort !== undefined) lines.push(`listen_port=${config.listenPort}`);
  if (config.replacePeers) lines.push("replace_peers=true");
  for (const p of config.peers) {
    lines.push(`public_key=${keyToHex(p.publicKey)}`);
    if (p.remove) {
      lines.push("remove=true");
      continue;
    }
    lines.push(`preshared_key=${p.presharedKey ? keyToHex(p.presharedKey) : ZERO_KEY}`);
    if (p.endpoint) lines.push(`endpoint=${p.endpoint}`);
    lines.push(`persistent_keepalive_interval=${p.keepalive}`);
    lines.push("replace_allowed_ips=true");
    for (const n of p.allowedIPs) lines.push(`allowed_ip=${formatIPv4(n.ip)}/${n.prefixLen}`);
  }
  return lines.join("\n") + "\n\n";
}

/**
 * The errno of an answer (`errno=N` line), or -1 when it has none.
 *
 * @param text The answer.
 * @returns The errno.
 */
export function answerErrno(text: string): number {
  const m = /(?:^|\n)errno=(-?\d+)\n/.exec(text);
  return m ? Number(m[1]) : -1;
}

/**
 * Decode a `get=1` answer. IPv6 allowed IPs are kept as written.
 *
 * @param text The answer, up to and including `errno=0`.
 * @returns The device state.
 * @throws {SyntaxError} When a line has no `=`.
 */
export function parseGet(text: string): DeviceState {
  let privateKeyHex: string | undefined;
  let listenPort = 0;
  const peers = new Map<string, PeerState>();
  let peer: {
    publicKey: string;
    presharedKey?: string;
    endpoint?: string;
    keepalive: number;
    allowedIPs: string[];
    lastHandshakeSec: number;
  } | null = null;
  const flush = () => {
    if (peer) peers.set(peer.publicKey, { ...peer, allowedIPs: peer.allowedIPs.sort() });
    peer = null;
  };
  for (const line of text.split("\n")) {
    if (line === "") continue;
    const eq = line.indexOf("=");
    if (eq < 0) {
      throw new SyntaxError(`Cannot parse the UAPI line ${JSON.stringify(line)}: it has no "="`);
    }
    const key = line.slice(0, eq);
    const value = line.slice(eq + 1);
    switch (key) {
      case "private_key":
        if (value !== ZERO_KEY) privateKeyHex = value;
        break;
      case "listen_port":
        listenPort = Number(value);
        break;
      case "public_key":
        flush();
        peer = { publicKey: keyFromHex(value), keepalive: 0, allowedIPs: [], lastHandshakeSec: 0 };
        break;
      case "preshared_key":
        if (peer && value !== ZERO_KEY) peer.presharedKey = keyFromHex(value);
        break;
      case "endpoint":
        if (peer) peer.endpoint = value;
        break;
      case "persistent_keepalive_interval":
        if (peer) peer.keepalive = Number(value);
        break;
      case "allowed_ip":
        if (peer) peer.allowedIPs.push(normalizeCidr(value));
        break;
      case "last_handshake_time_sec":
        if (peer) peer.lastHandshakeSec = Number(value);
        break;
    }
  }
  flush();
  return { ...(privateKeyHex ? { privateKeyHex } : {}), listenPort, peers };
}

function normalizeCidr(text: string): string {
  try {
    return formatIPv4Net(parseIPv4Net(text));
  } catch {
    return text;
  }
}

/**
 * Send one request to a UAPI socket and read the answer up to its blank line.
 *
 * @param socketPath `/var/run/wireguard/<dev>.sock`.
 * @param request `get=1\n\n` or an {@link encodeSet} text.
 * @param timeoutMs How long to wait for the answer.
 * @returns The answer text.
 * @throws {Error} When the socket cannot be reached (the message names it) or times out.
 */
export function uapiRequest(
  socketPath: string,
  request: string,
  timeoutMs = 5000,
): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = net.createConnection({ path: socketPath });
    let text = "";
    let done = false;
    const finish = (err: Error | null) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve(text);
    };
    const timer = setTimeout(
      () =>
        finish(
          new Error(`WireGuard UAPI socket ${socketPath} did not answer within ${timeoutMs} ms`),
        ),
      timeoutMs,
    );
    sock.setEncoding("utf8");
    sock.on("connect", () => sock.write(request));
    sock.on("data", (chunk: string) => {
      text += chunk;
      if (/(?:^|\n)errno=-?\d+\n\n$/.test(text)) finish(null);
    });
    sock.on("error", (e: Error) =>
      finish(
        new Error(`Cannot talk to the WireGuard UAPI socket ${socketPath}: ${e.message}`, {
          cause: e,
        }),
      ));
    sock.on("close", () => {
      if (!done) {
        finish(
          new Error(
            `WireGuard UAPI socket ${socketPath} closed before answering: got ${
              JSON.stringify(text.slice(0, 80))
            }`,
          ),
        );
      }
    });
  });
}
