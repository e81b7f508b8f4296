import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { Buffer } from "node:buffer";
import { parseIPv4Net } from "../../core/ip.ts";
import { answerErrno, encodeSet, parseGet, uapiRequest } from "./uapi.ts";

const hex = (b: number) => Buffer.alloc(32, b).toString("hex");
const b64 = (b: number) => Buffer.alloc(32, b).toString("base64");

Deno.test("encodeSet writes the xplatform set request: key, port, peers with replace_allowed_ips, removes", () => {
  assert.equal(
    encodeSet({
      privateKeyHex: hex(1),
      listenPort: 51820,
      peers: [
        { publicKey: b64(2), remove: true, keepalive: 0, allowedIPs: [] },
        {
          publicKey: b64(3),
          presharedKey: b64(4),
          endpoint: "192.0.2.12:51820",
          keepalive: 25,
          allowedIPs: [parseIPv4Net("10.5.2.0/24")],
        },
        { publicKey: b64(5), keepalive: 0, allowedIPs: [parseIPv4Net("10.5.3.0/24")] },
      ],
    }),
    [
      "set=1",
      `private_key=${hex(1)}`,
      "listen_port=51820",
      `public_key=${hex(2)}`,
      "remove=true",
      `public_key=${hex(3)}`,
      `preshared_key=${hex(4)}`,
      "endpoint=192.0.2.12:51820",
      "persistent_keepalive_interval=25",
      "replace_allowed_ips=true",
      "allowed_ip=10.5.2.0/24",
      `public_key=${hex(5)}`,
      `preshared_key=${hex(0)}`,
      "persistent_keepalive_interval=0",
      "replace_allowed_ips=true",
      "allowed_ip=10.5.3.0/24",
      "",
      "",
    ].join("\n"),
  );
});

Deno.test("parseGet reads wireguard-go's get answer: key, port, peers with endpoint, keepalive, sorted allowed IPs", () => {
  const answer = [
    `private_key=${hex(1)}`,
    "listen_port=51820",
    `public_key=${hex(3)}`,
    `preshared_key=${hex(0)}`,
    "protocol_version=1",
    "endpoint=192.0.2.12:51820",
    "last_handshake_time_sec=1700000000",
    "last_handshake_time_nsec=5",
    "tx_bytes=10",
    "rx_bytes=20",
    "persistent_keepalive_interval=25",
    "allowed_ip=10.5.9.0/24",
    "allowed_ip=10.5.2.0/24",
    `public_key=${hex(5)}`,
    `preshared_key=${hex(4)}`,
    "persistent_keepalive_interval=0",
    "errno=0",
    "",
    "",
  ].join("\n");
  assert.equal(answerErrno(answer), 0);
  const d = parseGet(answer);
  assert.equal(d.privateKeyHex, hex(1));
  assert.equal(d.listenPort, 51820);
  assert.deepEqual(d.peers.get(b64(3)), {
    publicKey: b64(3),
    endpoint: "192.0.2.12:51820",
    keepalive: 25,
    allowedIPs: ["10.5.2.0/24", "10.5.9.0/24"],
    lastHandshakeSec: 1700000000,
  });
  assert.deepEqual(d.peers.get(b64(5)), {
    publicKey: b64(5),
    presharedKey: b64(4),
    keepalive: 0,
    allowedIPs: [],
    lastHandshakeSec: 0,
  });
  assert.equal(parseGet("listen_port=0\nerrno=0\n\n").privateKeyHex, undefined);
  assert.equal(answerErrno("errno=-22\n\n"), -22);
  assert.throws(() => parseGet("garbage\n"), /Cannot parse the UAPI line "garbage"/);
});

Deno.test("uapiRequest sends one request over a Unix socket and reads up to the blank line", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "w1uapi-"));
  const sock = path.join(dir, "wg0.sock");
  const got: string[] = [];
  const server = net.createServer((c) => {
    c.setEncoding("utf8");
    let req = "";
    c.on("data", (d: string) => {
      req += d;
      if (!req.endsWith("\n\n")) return;
      got.push(req);
      // the answer arrives in two pieces, as a stream may deliver it
      c.write("listen_port=51820\n");
      setTimeout(() => c.write("errno=0\n\n"), 10);
    });
  });
  await new Promise<void>((r) => server.listen(sock, r));
  try {
    assert.equal(await uapiRequest(sock, "get=1\n\n"), "listen_port=51820\nerrno=0\n\n");
    assert.deepEqual(got, ["get=1\n\n"]);
    await assert.rejects(
      uapiRequest(path.join(dir, "missing.sock"), "get=1\n\n"),
      /Cannot talk to the WireGuard UAPI socket .*missing\.sock/,
    );
  } finally {
    await new Promise<void>((r) => server.close(() => r()));
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
