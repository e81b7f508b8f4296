/**
 * The wireguard backend's configuration and lease data, in flannel v0.28's
 * formats.
 *
 * Network config keys (`Backend`, matched case-insensitively like Go's
 * encoding/json): `ListenPort` (51820), `ListenPortV6` (51821), `MTU` (the
 * external interface's; the device and pods get MTU − 80), `PSK` (base64
 * preshared key, optional), `PersistentKeepaliveInterval` (seconds, 0 =
 * off), `Mode` (`separate`, the default: `flannel-wg` for IPv4 and
 * `flannel-wg-v6` for IPv6; `auto`/`ipv4`/`ipv6`: one device `flannel-wg`),
 * and weft's own `Driver` (`auto`, `kernel`, `userspace`; env
 * `WEFT_WIREGUARD_DRIVER` wins).
 *
 * Lease `BackendData` (and `BackendV6Data` with IPv6), exactly as flannel's
 * `wireguardLeaseAttrs` marshals: `{"PublicKey":"<base64>","Port":51820}`.
 *
 * @module
 */

import * as v from "valibot";
import { ConfigError } from "../../core/errors.ts";
import { foldKeys, type NetworkConfig, parseBackendOptions } from "../../lease/config.ts";
import { decodeKey } from "./keys.ts";

/** flannel's IPv4 listen port. */
export const DEFAULT_LISTEN_PORT = 51820;
/** flannel's IPv6 listen port (Mode separate). */
export const DEFAULT_LISTEN_PORT_V6 = 51821;
/**
 * Bytes WireGuard adds (flannel's figure: IPv6 header 40, UDP 8, type 4,
 * key index 4, nonce 8, tag 16).
 */
export const WIREGUARD_OVERHEAD = 80;
/** flannel's device names. */
export const DEVICE_V4 = "flannel-wg";
export const DEVICE_V6 = "flannel-wg-v6";

/** flannel's modes. */
export type WireguardMode = "separate" | "auto" | "ipv4" | "ipv6";
/** How weft drives WireGuard: the kernel over generic netlink, or wireguard-go over UAPI. */
export type DriverChoice = "auto" | "kernel" | "userspace";

const port = v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(65535));

const WireguardOptions = v.object({
  ListenPort: v.optional(port),
  ListenPortV6: v.optional(port),
  MTU: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(65535))),
  PSK: v.optional(v.string()),
  PersistentKeepaliveInterval: v.optional(
    v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(65535)),
  ),
  Mode: v.optional(v.picklist(["separate", "auto", "ipv4", "ipv6", ""])),
  Driver: v.optional(v.picklist(["auto", "kernel", "userspace", ""])),
});

/** The wireguard keys of `Backend`, with flannel's defaults. */
export interface WireguardConfig {
  readonly listenPort: number;
  readonly listenPortV6: number;
  /** Underlay MTU to subtract the overhead from; 0 = the external interface's. */
  readonly mtu: number;
  /** Preshared key, base64, or undefined. */
  readonly psk?: string;
  /** Seconds; 0 = off. */
  readonly keepalive: number;
  readonly mode: WireguardMode;
  readonly driver: DriverChoice;
}

/**
 * Read the wireguard keys of `Backend` with flannel's defaults.
 *
 * @param config The network configuration.
 * @param env Environment (`WEFT_WIREGUARD_DRIVER` overrides `Driver`).
 * @returns The options.
 * @throws {ConfigError} When a key has the wrong type or range, or PSK is not a key.
 */
export function parseWireguardConfig(
  config: NetworkConfig,
  env: Readonly<Record<string, string | undefined>> = {},
): WireguardConfig {
  const o = parseBackendOptions(config, WireguardOptions);
  if (o.PSK) decodeKey(o.PSK, "Backend.PSK");
  const fromEnv = env.WEFT_WIREGUARD_DRIVER;
  if (
    fromEnv !== undefined && fromEnv !== "" && !["auto", "kernel", "userspace"].includes(fromEnv)
  ) {
    throw new ConfigError(
      `WEFT_WIREGUARD_DRIVER must be auto, kernel or userspace: current value is ${
        JSON.stringify(fromEnv)
      }`,
      "WEFT_WIREGUARD_DRIVER",
    );
  }
  return {
    listenPort: o.ListenPort ?? DEFAULT_LISTEN_PORT,
    listenPortV6: o.ListenPortV6 ?? DEFAULT_LISTEN_PORT_V6,
    mtu: o.MTU ?? 0,
    ...(o.PSK ? { psk: o.PSK } : {}),
    keepalive: o.PersistentKeepaliveInterval ?? 0,
    mode: o.Mode || "separate",
    driver: (fromEnv || o.Driver || "auto") as DriverChoice,
  };
}

/**
 * This host's lease data, as flannel marshals it.
 *
 * @param publicKey Base64 public key.
 * @param port The listen port peers send to.
 * @returns `{ PublicKey, Port }` in that key order.
 */
export function wireguardLeaseData(
  publicKey: string,
  port: number,
): { PublicKey: string; Port: number } {
  return { PublicKey: publicKey, Port: port };
}

/**
 * Read a peer's `BackendData` (`{"PublicKey":"…","Port":51820}`; keys
 * case-insensitive; a missing or zero Port means "my own listen port", as
 * flannel does for leases of older versions).
 *
 * @param data The lease's backendData.
 * @param defaultPort This host's listen port.
 * @returns The public key and port, or why it is unusable.
 */
export function parseWireguardLeaseData(
  data: unknown,
  defaultPort: number,
): { publicKey: string; port: number } | { error: string } {
  if (typeof data !== "object" || data === null || Array.isArray(data)) {
    return { error: `BackendData is not an object: ${JSON.stringify(data) ?? "undefined"}` };
  }
  const { values } = foldKeys(data as Record<string, unknown>, ["PublicKey", "Port"] as const);
  const key = values.PublicKey;
  if (typeof key !== "string" || !/^[A-Za-z0-9+/]{43}=$/.test(key)) {
    return { error: `BackendData.PublicKey is not a WireGuard public key: ${JSON.stringify(key)}` };
  }
  const p = values.Port ?? 0;
  if (typeof p !== "number" || !Number.isInteger(p) || p < 0 || p > 65535) {
    return { error: `BackendData.Port is not a port: ${JSON.stringify(p)}` };
  }
  return { publicKey: key, port: p === 0 ? defaultPort : p };
}
