import assert from "node:assert/strict";
import { parseIPv4 } from "../../core/ip.ts";
import {
  completeChecksum,
  foldSum,
  GSO_TCPV4,
  onesSum,
  TcpCoalescer,
  tcpHeaderLength,
  VNET_F_NEEDS_CSUM,
  VNET_HDR_LEN,
  writeTcpSegments,
} from "./offload.ts";

/** Independent reference: BigInt sum of big-endian 16-bit words. */
function refSum(bytes: Uint8Array): number {
  let s = 0n;
  for (let i = 0; i < bytes.length; i += 2) {
    s += BigInt((bytes[i] << 8) | (i + 1 < bytes.length ? bytes[i + 1] : 0));
  }
  while (s >> 16n) s = (s & 0xffffn) + (s >> 16n);
  return Number(s);
}

/** Reference TCP/UDP checksum check over pseudo-header + segment: 0xffff sum when valid. */
function l4Valid(p: Uint8Array): boolean {
  const ihl = (p[0] & 15) * 4;
  const total = (p[2] << 8) | p[3];
  const pseudo = new Uint8Array(12);
  pseudo.set(p.subarray(12, 20));
  pseudo[9] = p[9];
  pseudo[10] = (total - ihl) >> 8;
  pseudo[11] = (total - ihl) & 255;
  const all = new Uint8Array(12 + total - ihl);
  all.set(pseudo);
  all.set(p.subarray(ihl, total), 12);
  return refSum(all) === 0xffff;
}

function words(buf: Uint8Array): Int32Array {
  return new Int32Array(buf.buffer, 0, buf.buffer.byteLength >> 2);
}

function rng(seed: number) {
  return () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
}

/** A TCP super-packet: IPv4 (no options) + TCP with 12 bytes of timestamp options. */
function superPacket(
  payloadLen: number,
  opts: { flags?: number; seq?: number; ttl?: number } = {},
) {
  const hdr = 20 + 32;
  const p = new Uint8Array(hdr + payloadLen);
  const v = new DataView(p.buffer);
  p[0] = 0x45;
  v.setUint16(2, Math.min(65535, p.length));
  v.setUint16(4, 0xfffe); // ID wraps during segmentation
  v.setUint16(6, 0x4000);
  p[8] = opts.ttl ?? 64;
  p[9] = 6;
  v.setUint32(12, parseIPv4("10.5.1.7"));
  v.setUint32(16, parseIPv4("10.5.2.9"));
  v.setUint16(20, 40000);
  v.setUint16(22, 5201);
  v.setUint32(24, opts.seq ?? 0xfffff000); // sequence wraps too
  v.setUint32(28, 12345);
  p[32] = 8 << 4;
  p[33] = opts.flags ?? 0x18; // ACK|PSH
  v.setUint16(34, 512);
  p.set([1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2], 40);
  const r = rng(payloadLen);
  for (let i = hdr; i < p.length; i++) p[i] = Math.floor(r() * 256);
  return p;
}

Deno.test("onesSum() agrees with a reference for every alignment and length, fast and slow", () => {
  const buf = new Uint8Array(new ArrayBuffer(4096));
  const r = rng(3);
  for (let i = 0; i < buf.length; i++) buf[i] = Math.floor(r() * 256);
  // Views at odd byte offsets too, so absolute alignment differs from `off`.
  for (const base of [0, 1, 2, 3]) {
    const view = buf.subarray(base);
    const w = words(buf);
    for (const off of [0, 1, 2, 3, 5, 6, 7]) {
      for (const len of [0, 1, 2, 3, 63, 64, 65, 66, 67, 100, 257, 1448, 2000, 4000 - off - base]) {
        const expected = refSum(view.subarray(off, off + len));
        assert.equal(onesSum(view, off, len, w), expected, `base ${base} off ${off} len ${len}`);
        assert.equal(onesSum(view, off, len), expected, `slow: base ${base} off ${off} len ${len}`);
      }
    }
  }
});

Deno.test("onesSum() folds correctly on all-ones data (carry chains)", () => {
  const buf = new Uint8Array(new ArrayBuffer(65540)).fill(0xff);
  assert.equal(onesSum(buf, 0, 65536, words(buf)), 0xffff);
  assert.equal(onesSum(buf, 2, 65535, words(buf)), refSum(buf.subarray(2, 65537)));
  assert.equal(foldSum(0x1fffe), 0xffff);
  assert.equal(foldSum(2 ** 40 + 5), refSum(new Uint8Array([0, 0, 1, 0, 0, 0, 0, 5])));
});

Deno.test("completeChecksum() finishes a partial UDP checksum like the device would", () => {
  const p = new Uint8Array(new ArrayBuffer(128));
  const v = new DataView(p.buffer);
  p[0] = 0x45;
  v.setUint16(2, 28 + 71);
  p[9] = 17;
  v.setUint32(12, parseIPv4("10.5.1.7"));
  v.setUint32(16, parseIPv4("10.5.2.9"));
  v.setUint16(20, 53);
  v.setUint16(22, 5353);
  v.setUint16(24, 8 + 71);
  for (let i = 28; i < 99; i++) p[i] = i * 13;
  // The kernel leaves the folded pseudo-header sum in the field.
  const pseudo = refSum(Uint8Array.from([10, 5, 1, 7, 10, 5, 2, 9, 0, 17, 0, 79]));
  v.setUint16(26, pseudo);
  assert.equal(completeChecksum(p, 99, 20, 6, (b, o, l) => onesSum(b, o, l, words(p))), true);
  assert.ok(l4Valid(p.subarray(0, 99)));
  assert.equal(completeChecksum(p, 99, 98, 6), false, "field outside the packet");
});

Deno.test("writeTcpSegments() cuts like TSO: sizes, sequence, IDs, flags, TTL and checksums", () => {
  for (
    const [payload, mss] of [[10000, 1448], [1448 * 3, 1448], [5, 1448], [4001, 1000], [3001, 999]]
  ) {
    const sp = superPacket(payload, { flags: 0x80 | 0x18 | 0x01 }); // CWR|ACK|PSH|FIN
    const hdrLen = tcpHeaderLength(sp, sp.length);
    assert.equal(hdrLen, 52);
    const out = new Uint8Array(new ArrayBuffer(80000));
    const w = words(out);
    const count = writeTcpSegments(
      sp,
      sp.length,
      hdrLen,
      mss,
      out,
      6,
      (b, o, l) => onesSum(b, o, l, w),
    );
    assert.equal(count, Math.ceil(payload / mss));
    let at = 6;
    const data: number[] = [];
    for (let i = 0; i < count; i++) {
      const size = Math.min(mss, payload - i * mss);
      const seg = out.subarray(at, at + hdrLen + size);
      const v = new DataView(seg.buffer, seg.byteOffset);
      assert.equal(v.getUint16(2), hdrLen + size, "total length");
      assert.equal(v.getUint16(4), (0xfffe + i) & 0xffff, "IP ID");
      assert.equal(seg[8], 63, "TTL");
      assert.equal(refSum(seg.subarray(0, 20)), 0xffff, `IP checksum of segment ${i}`);
      assert.ok(l4Valid(seg), `TCP checksum of segment ${i} (payload ${payload}, mss ${mss})`);
      assert.equal(v.getUint32(24), (0xfffff000 + i * mss) >>> 0, "sequence");
      const last = i === count - 1;
      assert.equal(seg[33], (i === 0 ? 0x80 : 0) | 0x10 | (last ? 0x09 : 0), `flags of ${i}`);
      assert.deepEqual(seg.subarray(40, 52), sp.subarray(40, 52), "options copied");
      data.push(...seg.subarray(hdrLen));
      at += hdrLen + size;
    }
    assert.deepEqual(Uint8Array.from(data), sp.subarray(hdrLen));
  }
});

Deno.test("tcpHeaderLength() refuses what cannot be segmented", () => {
  const sp = superPacket(100);
  assert.equal(tcpHeaderLength(sp, sp.length), 52);
  const udp = sp.slice();
  udp[9] = 17;
  assert.equal(tcpHeaderLength(udp, udp.length), 0);
  assert.equal(tcpHeaderLength(sp, 52), 0, "no payload");
  assert.equal(tcpHeaderLength(sp, 30), 0, "truncated");
  const v6 = sp.slice();
  v6[0] = 0x60;
  assert.equal(tcpHeaderLength(v6, v6.length), 0);
});

/** Segments of a super-packet as separate packets (what a peer sends). */
function segmentsOf(sp: Uint8Array, mss: number): Uint8Array[] {
  const out = new Uint8Array(new ArrayBuffer(80000));
  const hdrLen = tcpHeaderLength(sp, sp.length);
  const n = writeTcpSegments(sp, sp.length, hdrLen, mss, out, 0);
  const segs: Uint8Array[] = [];
  let at = 0;
  for (let i = 0; i < n; i++) {
    const len = (out[at + 2] << 8) | out[at + 3];
    segs.push(out.slice(at, at + len));
    at += len;
  }
  return segs;
}

Deno.test("TcpCoalescer merges in-order segments into one GSO_TCPV4 packet the kernel can re-cut", () => {
  const sp = superPacket(20000, { flags: 0x18 });
  const segs = segmentsOf(sp, 1448);
  const c = new TcpCoalescer();
  for (const s of segs) assert.equal(c.add(s, s.length), true);
  assert.equal(c.pending, segs.length);
  const n = c.flush();
  const out = c.buffer.subarray(0, n);
  const hdr = new DataView(out.buffer, 0, VNET_HDR_LEN);
  assert.equal(out[0], VNET_F_NEEDS_CSUM);
  assert.equal(out[1], GSO_TCPV4);
  assert.equal(hdr.getUint16(2, true), 52, "hdr_len");
  assert.equal(hdr.getUint16(4, true), 1448, "gso_size");
  assert.equal(hdr.getUint16(6, true), 20, "csum_start");
  assert.equal(hdr.getUint16(8, true), 16, "csum_offset");
  const merged = out.subarray(VNET_HDR_LEN);
  assert.equal((merged[2] << 8) | merged[3], 52 + 20000);
  assert.equal(refSum(merged.subarray(0, 20)), 0xffff, "IP checksum");
  assert.equal(merged[8], 63);
  assert.equal(merged[33], 0x18, "PSH from the last segment");
  assert.deepEqual(merged.subarray(52), sp.subarray(52), "payload in order");
  // The partial checksum completes to a valid one (what the kernel does on output).
  const full = merged.slice();
  assert.equal(completeChecksum(full, full.length, 20, 16), true);
  assert.ok(l4Valid(full));
  assert.equal(c.pending, 0);
  assert.equal(c.flush(), 0);
});

Deno.test("TcpCoalescer writes a lone segment unchanged with an empty virtio header", () => {
  const [seg] = segmentsOf(superPacket(500), 1448);
  const c = new TcpCoalescer();
  assert.equal(c.add(seg, seg.length), true);
  const n = c.flush();
  assert.deepEqual(c.buffer.subarray(0, VNET_HDR_LEN), new Uint8Array(VNET_HDR_LEN));
  assert.deepEqual(c.buffer.subarray(VNET_HDR_LEN, n), seg);
});

Deno.test("TcpCoalescer refuses what GRO would not merge", () => {
  const base = segmentsOf(superPacket(1448 * 4, { flags: 0x10 }), 1448);
  const cases: [string, (segs: Uint8Array[]) => Uint8Array][] = [
    ["a gap in the sequence", (s) => s[2]],
    ["another flow", (s) => ((p) => (p[23] ^= 1, p))(s[1].slice())],
    ["another ACK number", (s) => ((p) => (p[31] ^= 1, p))(s[1].slice())],
    ["another window", (s) => ((p) => (p[35] ^= 1, p))(s[1].slice())],
    ["other options", (s) => ((p) => (p[51] ^= 1, p))(s[1].slice())],
    ["another TTL", (s) => ((p) => (p[8] -= 1, p))(s[1].slice())],
    ["FIN", (s) => ((p) => (p[33] |= 1, p))(s[1].slice())],
    ["RST", (s) => ((p) => (p[33] |= 4, p))(s[1].slice())],
    ["ECE where the first had none", (s) => ((p) => (p[33] |= 0x40, p))(s[1].slice())],
  ];
  for (const [name, make] of cases) {
    const c = new TcpCoalescer();
    assert.equal(c.add(base[0], base[0].length), true);
    const p = make(base);
    assert.equal(c.add(p, p.length), false, name);
  }
  // Not TCP, SYN, bare ACK without payload: never start a run.
  const c = new TcpCoalescer();
  const syn = base[0].slice();
  syn[33] = 0x12;
  assert.equal(c.add(syn, syn.length), false);
  const ack = base[0].slice(0, 52);
  assert.equal(c.add(ack, ack.length), false);
});

Deno.test("TcpCoalescer ends a run after a short segment or a PSH, and at 64 KiB", () => {
  const segs = segmentsOf(superPacket(1448 * 2 + 100, { flags: 0x10 }), 1448);
  const more = segmentsOf(
    superPacket(1448, { flags: 0x10, seq: (0xfffff000 + 1448 * 2 + 100) >>> 0 }),
    1448,
  );
  const c = new TcpCoalescer();
  for (const s of segs) assert.equal(c.add(s, s.length), true);
  assert.equal(c.add(more[0], more[0].length), false, "after the short one");

  const psh = segmentsOf(superPacket(1448 * 3, { flags: 0x18 }), 1448); // PSH on the last
  const d = new TcpCoalescer();
  for (const s of psh) assert.equal(d.add(s, s.length), true);
  const after = segmentsOf(
    superPacket(1448, { flags: 0x10, seq: (0xfffff000 + 1448 * 3) >>> 0 }),
    1448,
  );
  assert.equal(d.add(after[0], after[0].length), false, "after PSH");

  const big = segmentsOf(superPacket(1448 * 50, { flags: 0x10 }), 1448);
  const e = new TcpCoalescer();
  let taken = 0;
  while (taken < big.length && e.add(big[taken], big[taken].length)) taken++;
  assert.equal(taken, Math.floor((65535 - 52) / 1448));
});
