import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { ConfigError } from "../../core/errors.ts";
import { parseNetworkConfig } from "../../lease/config.ts";
import { parseWireguardConfig, parseWireguardLeaseData, wireguardLeaseData } from "./config.ts";

const config = (backend: Record<string, unknown>) =>
  parseNetworkConfig(
    JSON.stringify({ Network: "10.5.0.0/16", Backend: { Type: "wireguard", ...backend } }),
  );

Deno.test("parseWireguardConfig applies flannel's defaults", () => {
  assert.deepEqual(parseWireguardConfig(config({})), {
    listenPort: 51820,
    listenPortV6: 51821,
    mtu: 0,
    keepalive: 0,
    mode: "separate",
    driver: "auto",
  });
});

Deno.test("parseWireguardConfig reads keys case-insensitively; WEFT_WIREGUARD_DRIVER wins over Driver", () => {
  const psk = Buffer.alloc(32, 9).toString("base64");
  const c = config({
    listenport: 5000,
    ListenPortV6: 5001,
    mtu: 9000,
    psk,
    persistentKeepaliveInterval: 25,
    mode: "auto",
    Driver: "kernel",
  });
  assert.deepEqual(parseWireguardConfig(c, { WEFT_WIREGUARD_DRIVER: "userspace" }), {
    listenPort: 5000,
    listenPortV6: 5001,
    mtu: 9000,
    psk,
    keepalive: 25,
    mode: "auto",
    driver: "userspace",
  });
  assert.equal(parseWireguardConfig(c).driver, "kernel");
});

Deno.test("parseWireguardConfig refuses bad values with the key and the value", () => {
  assert.throws(
    () => parseWireguardConfig(config({ ListenPort: 70000 })),
    /"Backend.ListenPort".*70000/,
  );
  assert.throws(() => parseWireguardConfig(config({ Mode: "both" })), /"Backend.Mode".*"both"/);
  assert.throws(() => parseWireguardConfig(config({ PSK: "short" })), ConfigError);
  assert.throws(
    () => parseWireguardConfig(config({}), { WEFT_WIREGUARD_DRIVER: "fast" }),
    /WEFT_WIREGUARD_DRIVER must be auto, kernel or userspace: current value is "fast"/,
  );
});

Deno.test("lease data is flannel's {PublicKey, Port}; a missing Port means the own listen port", () => {
  const key = Buffer.alloc(32, 1).toString("base64");
  assert.equal(
    JSON.stringify(wireguardLeaseData(key, 51820)),
    `{"PublicKey":"${key}","Port":51820}`,
  );
  assert.deepEqual(parseWireguardLeaseData({ PublicKey: key, Port: 5000 }, 51820), {
    publicKey: key,
    port: 5000,
  });
  assert.deepEqual(parseWireguardLeaseData({ publickey: key }, 51820), {
    publicKey: key,
    port: 51820,
  });
  assert.match(
    (parseWireguardLeaseData({ PublicKey: "x" }, 51820) as { error: string }).error,
    /PublicKey is not a WireGuard public key/,
  );
  assert.match((parseWireguardLeaseData(null, 1) as { error: string }).error, /not an object/);
});
