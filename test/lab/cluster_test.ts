/**
 * The pure parts of the cluster helpers: reading etcd's lease listing and
 * turning leases into the kernel entries each backend must hold.
 */
import assert from "node:assert/strict";
import { expectedPeerState, parseEtcdLeases, stateDiff } from "./cluster.ts";
import { replySeqs } from "./scenarios.ts";

const LISTING = `/coreos.com/network/subnets/10.5.25.0-24
{"PublicIP":"192.0.2.11","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"3E:02:4b:aa:07:7c"}}
/coreos.com/network/subnets/10.5.72.0-24
{"PublicIP":"192.0.2.12","PublicIPv6":null,"BackendType":"host-gw"}
`;

Deno.test("parseEtcdLeases() reads key/value lines and lowercases VtepMAC", () => {
  assert.deepEqual(parseEtcdLeases(LISTING), [
    {
      subnet: "10.5.25.0/24",
      publicIP: "192.0.2.11",
      backendType: "vxlan",
      vtepMAC: "3e:02:4b:aa:07:7c",
    },
    { subnet: "10.5.72.0/24", publicIP: "192.0.2.12", backendType: "host-gw", vtepMAC: undefined },
  ]);
});

Deno.test("parseEtcdLeases() skips keys that are not subnet leases", () => {
  assert.deepEqual(parseEtcdLeases(`/coreos.com/network/config\n{"Network":"10.5.0.0/16"}\n`), []);
  assert.deepEqual(parseEtcdLeases(""), []);
});

Deno.test("expectedPeerState() lists flannel's three vxlan entries and host-gw's one route", () => {
  const peers = parseEtcdLeases(LISTING).slice(0, 1);
  const cases = [
    {
      backend: "vxlan" as const,
      want: {
        routes: ["10.5.25.0/24 via 10.5.25.0 dev flannel.1 onlink"],
        neighbours: ["10.5.25.0 lladdr 3e:02:4b:aa:07:7c"],
        fdb: ["3e:02:4b:aa:07:7c dst 192.0.2.11"],
      },
    },
    {
      backend: "host-gw" as const,
      want: { routes: ["10.5.25.0/24 via 192.0.2.11 dev eth0"], neighbours: [], fdb: [] },
    },
  ];
  for (const { backend, want } of cases) {
    assert.deepEqual(expectedPeerState(backend, peers), want, backend);
  }
});

Deno.test("stateDiff() names missing and unexpected entries, null when equal", () => {
  const a = { routes: ["r1", "r2"], neighbours: ["n1"], fdb: [] };
  assert.equal(stateDiff(a, a), null);
  assert.equal(
    stateDiff(a, { routes: ["r1", "r3"], neighbours: ["n1"], fdb: ["f"] }),
    "routes missing [r2], routes unexpected [r3], fdb unexpected [f]",
  );
});

Deno.test("replySeqs() collects echo reply sequence numbers, not requests or summaries", () => {
  const out = `PING 10.5.1.2 (10.5.1.2) 56(84) bytes of data.
64 bytes from 10.5.1.2: icmp_seq=1 ttl=62 time=0.1 ms
64 bytes from 10.5.1.2: icmp_seq=3 ttl=62 time=0.1 ms
From 10.5.2.1 icmp_seq=2 Destination Host Unreachable
--- 10.5.1.2 ping statistics ---
3 packets transmitted, 2 received, 33% packet loss, time 100ms
`;
  assert.deepEqual([...replySeqs(out)], [1, 3]);
});
