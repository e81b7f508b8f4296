/**
 * Byte layouts of the WireGuard generic netlink messages, derived field by
 * field from the kernel's `include/uapi/linux/wireguard.h` (attribute
 * numbers, flags, nesting) and `linux/netlink.h` (nlattr: u16 length incl.
 * the 4-byte header, u16 type, payload padded to 4; NLA_F_NESTED 0x8000),
 * written here without the encoder's writer.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import {
  decodeFamilyId,
  decodeGetDevice,
  encodeGetDevice,
  encodeGetFamily,
  encodeSetDevice,
} from "./wireguard_messages.ts";

/** One nlattr: length, type, payload, padding. */
function attr(type: number, payload: Uint8Array | number[]): number[] {
  const p = [...payload];
  const len = 4 + p.length;
  const out = [len & 0xff, len >> 8, type & 0xff, type >> 8, ...p];
  while (out.length % 4) out.push(0);
  return out;
}
const NESTED = 0x8000;
const u16 = (n: number) => [n & 0xff, n >> 8];
const u32 = (n: number) => [n & 0xff, (n >> 8) & 0xff, (n >> 16) & 0xff, n >>> 24];
const cstr = (s: string) => [...new TextEncoder().encode(s), 0];
const key = (b: number) => new Uint8Array(32).fill(b);

Deno.test("encodeSetDevice matches wireguard.h's WG_CMD_SET_DEVICE layout byte for byte (kernel path: cannot run here, no WireGuard module; bytes only)", () => {
  const bytes = encodeSetDevice({
    ifname: "flannel-wg",
    privateKey: key(0x11),
    listenPort: 51820,
    peers: [
      {
        publicKey: key(0x22),
        presharedKey: key(0),
        endpoint: { ip: 0xc000020c, n: 51820 }, // 192.0.2.12:51820
        keepalive: 25,
        allowedIPs: [{ ip: 0x0a050200, n: 24 }], // 10.5.2.0/24
      },
      { publicKey: key(0x33), remove: true },
    ],
  });
  const sockaddrIn = [
    ...u16(2), // sin_family AF_INET, host order
    0xca,
    0x6c, // sin_port 51820, network order
    192,
    0,
    2,
    12, // sin_addr
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0, // sin_zero
  ];
  const expected = [
    1,
    1,
    0,
    0, // genlmsghdr: cmd WG_CMD_SET_DEVICE=1, version WG_GENL_VERSION=1, reserved
    ...attr(2, cstr("flannel-wg")), // WGDEVICE_A_IFNAME
    ...attr(3, key(0x11)), // WGDEVICE_A_PRIVATE_KEY
    ...attr(6, u16(51820)), // WGDEVICE_A_LISTEN_PORT (u16, host order)
    ...attr(8 | NESTED, [ // WGDEVICE_A_PEERS
      ...attr(0 | NESTED, [ // peer 0
        ...attr(1, key(0x22)), // WGPEER_A_PUBLIC_KEY
        ...attr(3, u32(2)), // WGPEER_A_FLAGS: WGPEER_F_REPLACE_ALLOWEDIPS
        ...attr(2, key(0)), // WGPEER_A_PRESHARED_KEY (zero: none)
        ...attr(4, sockaddrIn), // WGPEER_A_ENDPOINT
        ...attr(5, u16(25)), // WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL
        ...attr(9 | NESTED, [ // WGPEER_A_ALLOWEDIPS
          ...attr(0 | NESTED, [
            ...attr(1, u16(2)), // WGALLOWEDIP_A_FAMILY AF_INET
            ...attr(2, [10, 5, 2, 0]), // WGALLOWEDIP_A_IPADDR
            ...attr(3, [24]), // WGALLOWEDIP_A_CIDR_MASK
          ]),
        ]),
      ]),
      ...attr(0 | NESTED, [ // peer 1
        ...attr(1, key(0x33)),
        ...attr(3, u32(1)), // WGPEER_F_REMOVE_ME
      ]),
    ]),
  ];
  assert.deepEqual([...bytes], expected);
});

Deno.test("encodeSetDevice with replace_peers sets WGDEVICE_A_FLAGS and writes no empty peer nest (bytes only; kernel path cannot run here)", () => {
  assert.deepEqual([...encodeSetDevice({ ifname: "wg0", replacePeers: true, peers: [] })], [
    1,
    1,
    0,
    0,
    ...attr(2, cstr("wg0")),
    ...attr(5, u32(1)), // WGDEVICE_A_FLAGS: WGDEVICE_F_REPLACE_PEERS
  ]);
});

Deno.test("the controller's GETFAMILY request and the GET_DEVICE dump request have genetlink's layout", () => {
  assert.deepEqual([...encodeGetFamily("wireguard")], [
    3,
    1,
    0,
    0, // CTRL_CMD_GETFAMILY, version 1
    ...attr(2, cstr("wireguard")), // CTRL_ATTR_FAMILY_NAME
  ]);
  assert.deepEqual([...encodeGetDevice("flannel-wg")], [
    0,
    1,
    0,
    0,
    ...attr(2, cstr("flannel-wg")),
  ]);
  const reply = new Uint8Array([1, 2, 0, 0, ...attr(2, cstr("wireguard")), ...attr(1, u16(0x1f))]);
  assert.equal(decodeFamilyId(reply), 0x1f);
});

Deno.test("decodeGetDevice reads a dump whose peer continues in the next message", () => {
  const peerHead = attr(0 | NESTED, [
    ...attr(1, key(0x22)),
    ...attr(5, u16(25)),
    ...attr(4, [...u16(2), 0xca, 0x6c, 192, 0, 2, 12, 0, 0, 0, 0, 0, 0, 0, 0]),
    ...attr(9 | NESTED, [
      ...attr(0 | NESTED, [...attr(1, u16(2)), ...attr(2, [10, 5, 2, 0]), ...attr(3, [24])]),
    ]),
  ]);
  const peerTail = attr(0 | NESTED, [
    ...attr(1, key(0x22)),
    ...attr(9 | NESTED, [
      ...attr(0 | NESTED, [...attr(1, u16(2)), ...attr(2, [10, 5, 9, 0]), ...attr(3, [24])]),
    ]),
  ]);
  const first = new Uint8Array([
    0,
    1,
    0,
    0,
    ...attr(3, key(0x11)),
    ...attr(6, u16(51820)),
    ...attr(8 | NESTED, peerHead),
  ]);
  const second = new Uint8Array([0, 1, 0, 0, ...attr(8 | NESTED, peerTail)]);
  const d = decodeGetDevice([first, second]);
  assert.equal(Buffer.from(d.privateKey!).toString("hex"), "11".repeat(32));
  assert.equal(d.listenPort, 51820);
  assert.equal(d.peers.length, 1);
  assert.deepEqual(d.peers[0].endpoint, { ip: 0xc000020c, n: 51820 });
  assert.equal(d.peers[0].keepalive, 25);
  assert.deepEqual(d.peers[0].allowedIPs, [{ ip: 0x0a050200, n: 24 }, { ip: 0x0a050900, n: 24 }]);
});
