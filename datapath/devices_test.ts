import assert from "node:assert/strict";
import { parseIPv4, parseIPv4Net } from "../core/ip.ts";
import { addressChanges, describeAddress, vxlanIncompatibility } from "./devices.ts";

const ip = parseIPv4;

Deno.test("vxlanIncompatibility names the first differing setting", () => {
  const base = {
    kind: "vxlan",
    vxlan: { vni: 1, local: ip("192.0.2.11"), link: 2, port: 8472, learning: false, gbp: false },
  };
  const want = { vni: 1, port: 8472, local: ip("192.0.2.11"), learning: false, gbp: false };
  assert.equal(vxlanIncompatibility(base, want, 2), null);
  assert.equal(vxlanIncompatibility(base, want, null), null, "no underlay to compare");
  const table: [object, RegExp][] = [
    [{ kind: "bridge", vxlan: null }, /bridge, not vxlan/],
    [{ vxlan: { ...base.vxlan, vni: 2 } }, /VNI 2, want 1/],
    [{ vxlan: { ...base.vxlan, link: 3 } }, /underlay device index 3, want 2/],
    [{ vxlan: { ...base.vxlan, local: ip("192.0.2.99") } }, /local address 192\.0\.2\.99/],
    [{ vxlan: { ...base.vxlan, port: 4789 } }, /port 4789, want 8472/],
    [{ vxlan: { ...base.vxlan, gbp: true } }, /gbp true/],
    [{ vxlan: { ...base.vxlan, learning: true } }, /learning true/],
  ];
  for (const [patch, re] of table) {
    assert.match(vxlanIncompatibility({ ...base, ...patch }, want, 2) ?? "", re);
  }
});

Deno.test("addressChanges removes what is not asked and adds what is missing", () => {
  const a = (text: string) => {
    const [addr, len] = text.split("/");
    return { ip: ip(addr), prefixLen: Number(len) };
  };
  assert.deepEqual(addressChanges([a("10.5.1.0/32"), a("10.5.77.0/32")], [a("10.5.1.0/32")]), {
    remove: [a("10.5.77.0/32")],
    add: [],
  });
  assert.deepEqual(addressChanges([a("10.5.1.0/24")], [a("10.5.1.0/32")]), {
    remove: [a("10.5.1.0/24")],
    add: [a("10.5.1.0/32")],
  });
  assert.equal(describeAddress(a("192.0.2.11/24")), "192.0.2.11/24");
  assert.equal(describeAddress(parseIPv4Net("10.5.0.0/16")), "10.5.0.0/16");
});
