import assert from "node:assert/strict";
import { parseIPv4Net } from "../core/ip.ts";
import {
  backendFacts,
  checkClock,
  checkPeers,
  checkPort,
  checkRoutes,
  checkVxlanChecksum,
  kernelOlderThan,
} from "./doctor_checks.ts";
import { parseLinks, parseUdpHolders } from "./doctor.ts";

Deno.test("backendFacts() knows each backend's device, port and overhead, Backend.VNI and Port included", () => {
  assert.deepEqual(backendFacts("vxlan"), {
    type: "vxlan",
    device: "flannel.1",
    port: 8472,
    overhead: 50,
  });
  assert.deepEqual(backendFacts("vxlan", { VNI: 4, Port: 4789 }).device, "flannel.4");
  assert.deepEqual(backendFacts("vxlan", { VNI: 4, Port: 4789 }).port, 4789);
  assert.deepEqual(backendFacts("udp"), {
    type: "udp",
    device: "flannel0",
    port: 8285,
    overhead: 28,
  });
  assert.deepEqual(backendFacts("host-gw"), {
    type: "host-gw",
    device: null,
    port: null,
    overhead: 0,
  });
});

Deno.test("the VXLAN checksum check warns on kernels before 5.7 that offload, with ethtool's fix", () => {
  assert.equal(kernelOlderThan("5.4.0-150-generic", 5, 7), true);
  assert.equal(kernelOlderThan("5.7.0", 5, 7), false);
  assert.equal(kernelOlderThan("6.1.0-28-amd64", 5, 7), false);
  assert.equal(kernelOlderThan("3.10.0-1160.el7.x86_64", 5, 7), true);
  const [old] = checkVxlanChecksum("5.4.0-150-generic", "flannel.1", true);
  assert.equal(old.level, "warn");
  assert.match(
    old.message,
    /kernel 5\.4\.0-150-generic \(before 5\.7\).*tx-checksum-ip-generic on/,
  );
  assert.match(
    old.fix!,
    /^ethtool -K flannel\.1 tx-checksum-ip-generic off; .*ENV\{INTERFACE\}=="flannel\.1"/,
  );
  assert.equal(checkVxlanChecksum("5.4.0", "flannel.1", false)[0].level, "ok");
  assert.equal(checkVxlanChecksum("6.1.0", "flannel.1", true)[0].level, "ok");
  assert.equal(checkVxlanChecksum("5.4.0", null, true)[0].level, "skip");
});

Deno.test("the port check ignores kernel sockets and weft itself", () => {
  const vx = backendFacts("vxlan");
  assert.equal(checkPort([{ port: 8472 }], vx)[0].level, "ok");
  assert.equal(
    checkPort(
      [{ port: 8472, pid: 7, comm: "deno", cmdline: "deno run -A /opt/weft/mod.ts" }],
      vx,
    )[0].level,
    "ok",
  );
  const [f] = checkPort(
    [{ port: 8472, pid: 9, comm: "flanneld", cmdline: "/usr/bin/flanneld" }],
    vx,
  );
  assert.equal(f.level, "error");
  assert.match(f.message, /held by pid 9 \(flanneld: \/usr\/bin\/flanneld\)/);
});

Deno.test("the routes check allows leases, weft's devices and the Network blackhole", () => {
  const net = parseIPv4Net("10.5.0.0/16");
  const leases = [parseIPv4Net("10.5.2.0/24"), parseIPv4Net("10.5.3.0/24")];
  const f = checkRoutes(
    [
      { dst: "default", dev: "eth0", gateway: "192.0.2.1" },
      { dst: "10.5.2.0/24", dev: "eth0", gateway: "192.0.2.2" },
      { dst: "10.5.3.0/24", dev: "flannel.1" },
      { dst: "10.5.0.0/16", type: "blackhole" },
      { dst: "10.0.0.0/8", dev: "eth0", gateway: "192.0.2.9" },
      { dst: "10.5.9.0/24", dev: "eth0", gateway: "192.0.2.9" },
    ],
    net,
    leases,
    ["flannel.1", "cni0"],
  );
  assert.deepEqual(f.map((x) => [x.level, x.message.split(" lies")[0]]), [
    ["error", 'route "10.5.9.0/24 via 192.0.2.9 dev eth0"'],
  ]);
});

Deno.test("the clock check allows 5 s plus the Date header's rounding", () => {
  const at = Date.UTC(2030, 0, 1, 12, 0, 0, 900);
  assert.equal(checkClock(at, new Date(at - 5900).toUTCString())[0].level, "ok");
  const [f] = checkClock(at, new Date(at + 60_000).toUTCString());
  assert.equal(f.level, "warn");
  assert.match(f.message, /is 59 s behind the store's|is 60 s behind the store's/);
  assert.equal(checkClock(at, null)[0].level, "skip");
});

Deno.test("the peers check tells a blocked port from an unreachable peer", () => {
  const f = checkPeers([
    { subnet: "10.5.2.0/24", publicIP: "192.0.2.2", underlay: true, overlay: true },
    { subnet: "10.5.3.0/24", publicIP: "192.0.2.3", underlay: true, overlay: false },
    { subnet: "10.5.4.0/24", publicIP: "192.0.2.4", underlay: false, overlay: false },
  ], backendFacts("vxlan"));
  assert.deepEqual(f.map((x) => x.message.slice(0, 40)), [
    "peer 10.5.3.0/24 answers at 192.0.2.3 bu",
    "peer 10.5.4.0/24 does not answer ping at",
  ]);
});

Deno.test("parseLinks() and parseUdpHolders() read ip -j -d link and ss -H -uanp", () => {
  assert.deepEqual(
    parseLinks(
      '[{"ifname":"flannel.1","mtu":1450,"linkinfo":{"info_kind":"vxlan","info_data":{"id":1,"port":8472}}},{"ifname":"lo","mtu":65536}]',
    ),
    [
      { name: "flannel.1", mtu: 1450, kind: "vxlan", port: 8472 },
      { name: "lo", mtu: 65536, kind: undefined, port: undefined },
    ],
  );
  const ss = [
    "UNCONN 0      0                0.0.0.0:8472       0.0.0.0:*",
    'UNCONN 0      0                0.0.0.0:8472       0.0.0.0:*    users:(("nc",pid=123,fd=3))',
    'UNCONN 0      0                0.0.0.0:18472      0.0.0.0:*    users:(("x",pid=5,fd=3))',
  ].join("\n");
  assert.deepEqual(parseUdpHolders(ss, 8472), [{ port: 8472 }, {
    port: 8472,
    comm: "nc",
    pid: 123,
  }]);
});
