import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { Buffer } from "node:buffer";
import { ConfigError } from "../../core/errors.ts";
import {
  decodeKey,
  generateKeys,
  keyFromHex,
  keyToHex,
  loadOrCreateKeys,
  publicKeyOf,
  WireguardKeys,
} from "./keys.ts";

Deno.test("publicKeyOf matches RFC 7748's X25519 test vector (Alice)", () => {
  const priv = Buffer.from(
    "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
    "hex",
  );
  assert.equal(
    Buffer.from(publicKeyOf(new Uint8Array(priv)), "base64").toString("hex"),
    "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a",
  );
});

Deno.test("generateKeys makes clamped keys, distinct each time, whose JSON shows only the public key", () => {
  const a = generateKeys();
  const b = generateKeys();
  assert.notEqual(a.publicKey, b.publicKey);
  const raw = a.privateKeyBytes();
  assert.equal(raw[0] & 7, 0);
  assert.equal(raw[31] & 0xc0, 0x40);
  assert.equal(publicKeyOf(raw), a.publicKey);
  assert.equal(JSON.stringify(a), JSON.stringify({ publicKey: a.publicKey }));
  assert.ok(!JSON.stringify({ a }).includes(a.privateKeyHex()));
});

Deno.test("loadOrCreateKeys writes base64 without newline, mode 0400, and reads it back", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "w1keys-"));
  try {
    const file = path.join(dir, "sub", "wgkey");
    const first = loadOrCreateKeys(file);
    assert.equal(first.created, true);
    const text = fs.readFileSync(file, "utf8");
    assert.match(text, /^[A-Za-z0-9+/]{43}=$/);
    assert.equal(fs.statSync(file).mode & 0o777, 0o400);
    const second = loadOrCreateKeys(file);
    assert.equal(second.created, false);
    assert.equal(second.keys.publicKey, first.keys.publicKey);
    // a key as `wg genkey` writes it (with a newline) is read too
    fs.chmodSync(file, 0o600);
    fs.writeFileSync(file, text + "\n");
    assert.equal(loadOrCreateKeys(file).keys.publicKey, first.keys.publicKey);
  } finally {
    fs.rmSync(dir, { recursive: true });
  }
});

Deno.test("a key file that holds no key fails with its name and never its content", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "w1keys-"));
  try {
    const file = path.join(dir, "wgkey");
    fs.writeFileSync(file, "secret-but-not-a-key");
    assert.throws(() => loadOrCreateKeys(file), (e: Error) => {
      assert.ok(e instanceof ConfigError);
      assert.match(
        e.message,
        /the key file .*wgkey is not a WireGuard key: it must be 32 bytes in base64/,
      );
      assert.ok(!e.message.includes("secret"));
      return true;
    });
  } finally {
    fs.rmSync(dir, { recursive: true });
  }
});

Deno.test("keys convert between base64 and UAPI hex; bad sizes are refused", () => {
  const k = generateKeys().publicKey;
  assert.equal(keyFromHex(keyToHex(k)), k);
  assert.equal(keyToHex(k).length, 64);
  assert.throws(
    () => decodeKey("AAAA", "Backend.PSK"),
    /Backend.PSK is not a WireGuard key.*it has 4 characters/,
  );
  assert.throws(() => new WireguardKeys(new Uint8Array(31)), RangeError);
});
