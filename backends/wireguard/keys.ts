/**
 * WireGuard keys: Curve25519 key pairs from `node:crypto` (X25519), and the
 * private key file flannel keeps (`/run/flannel/wgkey`, or
 * `WIREGUARD_KEY_FILE`): the base64 private key, no newline, mode 0400,
 * created once and read on every later start, so a restart keeps the public
 * key peers know this host by.
 *
 * A private key never leaves this module except as the hex string handed to
 * the device (UAPI `private_key=`) or the raw bytes handed to the kernel;
 * {@link WireguardKeys} has no enumerable private field, so logging it or
 * serialising it shows only the public key.
 *
 * @module
 */

import { createPrivateKey, createPublicKey, generateKeyPairSync } from "node:crypto";
import * as fs from "node:fs";
import { Buffer } from "node:buffer";
import { writeFileAtomic } from "../../core/files.ts";
import { ConfigError } from "../../core/errors.ts";

/** flannel's private key file. */
export const DEFAULT_KEY_FILE = "/run/flannel/wgkey";

/** PKCS#8 DER prefix of a raw 32-byte X25519 private key. */
const PKCS8_X25519_PREFIX = Buffer.from("302e020100300506032b656e04220420", "hex");

/** A WireGuard key pair; the private key is reachable only through methods. */
export class WireguardKeys {
  readonly #privateKey: Uint8Array;
  /** The public key, base64 (what the lease publishes). */
  readonly publicKey: string;

  /** @param privateKey The raw 32-byte private key. */
  constructor(privateKey: Uint8Array) {
    if (privateKey.length !== 32) {
      throw new RangeError(
        `Cannot use a WireGuard private key of ${privateKey.length} bytes: it must have 32`,
      );
    }
    this.#privateKey = new Uint8Array(privateKey);
    this.publicKey = publicKeyOf(this.#privateKey);
  }

  /** The private key as hex, for UAPI `private_key=`. */
  privateKeyHex(): string {
    return Buffer.from(this.#privateKey).toString("hex");
  }

  /** A copy of the raw private key, for the kernel (`WGDEVICE_A_PRIVATE_KEY`). */
  privateKeyBytes(): Uint8Array {
    return new Uint8Array(this.#privateKey);
  }

  /** Only the public key shows in logs and JSON. */
  toJSON(): { publicKey: string } {
    return { publicKey: this.publicKey };
  }
}

/** Clamp a Curve25519 scalar as `wg genkey` does. */
function clamp(key: Uint8Array): Uint8Array {
  key[0] &= 248;
  key[31] = (key[31] & 127) | 64;
  return key;
}

/**
 * A new random key pair.
 *
 * @returns The keys.
 * @example
 * ```ts
 * const keys = generateKeys();
 * console.log(keys.publicKey); // 44 base64 characters
 * ```
 */
export function generateKeys(): WireguardKeys {
  const { privateKey } = generateKeyPairSync("x25519");
  const der = privateKey.export({ format: "der", type: "pkcs8" }) as Uint8Array;
  return new WireguardKeys(clamp(new Uint8Array(der.subarray(der.length - 32))));
}

/**
 * The base64 public key of a raw private key.
 *
 * @param privateKey 32 raw bytes.
 * @returns The public key, base64.
 */
export function publicKeyOf(privateKey: Uint8Array): string {
  const key = createPrivateKey({
    key: Buffer.concat([PKCS8_X25519_PREFIX, privateKey]),
    format: "der",
    type: "pkcs8",
  });
  const spki = createPublicKey(key).export({ format: "der", type: "spki" }) as Uint8Array;
  return Buffer.from(spki.subarray(spki.length - 32)).toString("base64");
}

/**
 * Decode a base64 WireGuard key (public, private or preshared).
 *
 * @param text 44 base64 characters.
 * @param what Names the key in the error (`PSK`, `the key file /run/flannel/wgkey`).
 * @returns 32 raw bytes.
 * @throws {ConfigError} When it is not 32 bytes of base64.
 */
export function decodeKey(text: string, what: string): Uint8Array {
  const t = text.trim();
  if (!/^[A-Za-z0-9+/]{43}=$/.test(t)) {
    throw new ConfigError(
      `${what} is not a WireGuard key: it must be 32 bytes in base64 (44 characters, as \`wg genkey\` writes); it has ${t.length} characters`,
      what,
    );
  }
  return new Uint8Array(Buffer.from(t, "base64"));
}

/**
 * A base64 key as hex (UAPI's form).
 *
 * @param base64 The key.
 * @returns 64 hex digits.
 */
export function keyToHex(base64: string): string {
  return Buffer.from(decodeKey(base64, "key")).toString("hex");
}

/**
 * A hex key (UAPI's form) as base64.
 *
 * @param hex 64 hex digits.
 * @returns The key in base64.
 */
export function keyFromHex(hex: string): string {
  return Buffer.from(hex, "hex").toString("base64");
}

/**
 * This host's keys: read from `file` when it exists, else generated and
 * written there (directory created, mode 0400, base64 without newline, as
 * flannel writes it).
 *
 * @param file The key file (flannel: `/run/flannel/wgkey`).
 * @returns The keys and whether they were created now.
 * @throws {ConfigError} When the file exists but holds no key (the message
 *   names the file; its content is never shown).
 */
export function loadOrCreateKeys(file: string): { keys: WireguardKeys; created: boolean } {
  let text: string | undefined;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  }
  if (text !== undefined) {
    return { keys: new WireguardKeys(decodeKey(text, `the key file ${file}`)), created: false };
  }
  const keys = generateKeys();
  writeFileAtomic(file, Buffer.from(keys.privateKeyBytes()).toString("base64"), { mode: 0o400 });
  return { keys, created: true };
}
