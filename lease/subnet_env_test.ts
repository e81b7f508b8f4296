import assert from "node:assert/strict";
import { formatIPv4, parseIPv4Net, parseIPv6Net } from "./ip.ts";
import { formatSubnetEnv, parseSubnetEnv } from "./subnet_env.ts";

Deno.test("formatSubnetEnv() writes flannel's keys in flannel's order", () => {
  assert.equal(
    formatSubnetEnv({
      network: parseIPv4Net("10.5.0.0/16"),
      subnet: parseIPv4Net("10.5.52.0/24"),
      ipv6Network: parseIPv6Net("fd00:12::/48"),
      ipv6Subnet: parseIPv6Net("fd00:12:13::/64"),
      mtu: 1450,
      ipMasq: true,
    }),
    "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.52.1/24\n" +
      "FLANNEL_IPV6_NETWORK=fd00:12::/48\nFLANNEL_IPV6_SUBNET=fd00:12:13::1/64\n" +
      "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
  );
});

Deno.test("parseSubnetEnv() reads what formatSubnetEnv() writes", () => {
  const env = parseSubnetEnv(formatSubnetEnv({
    network: parseIPv4Net("10.5.0.0/16"),
    subnet: parseIPv4Net("10.5.52.0/24"),
    mtu: 1450,
    ipMasq: false,
  }));
  assert.deepEqual(env.subnet, parseIPv4Net("10.5.52.0/24"));
  assert.equal(formatIPv4(env.gateway!), "10.5.52.1");
  assert.deepEqual(env.network, parseIPv4Net("10.5.0.0/16"));
  assert.equal(env.mtu, 1450);
  assert.equal(env.ipMasq, false);
  assert.equal(env.ipv6Subnet, undefined);
});

Deno.test("parseSubnetEnv() accepts quotes, comments and comma-separated networks", () => {
  const env = parseSubnetEnv(
    '# written by flanneld\nFLANNEL_NETWORK="10.5.0.0/16,10.6.0.0/16"\n\nFLANNEL_SUBNET=10.5.1.1/24\nFLANNEL_MTU=1500\n',
  );
  assert.equal(env.networks.length, 2);
  assert.equal(env.ipMasq, false);
});

Deno.test("parseSubnetEnv() names the bad key and its value", () => {
  const table: [string, RegExp][] = [
    ["FLANNEL_SUBNET=10.5.1.1/24\n", /FLANNEL_MTU/],
    ["FLANNEL_SUBNET=10.5.1/24\nFLANNEL_MTU=1450\n", /FLANNEL_SUBNET .*"10.5.1\/24"/],
    ["FLANNEL_MTU=1450\n", /neither FLANNEL_SUBNET/],
    ["FLANNEL_SUBNET=10.5.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=yes\n", /FLANNEL_IPMASQ/],
    ["garbage\n", /KEY=VALUE/],
  ];
  for (const [text, re] of table) {
    assert.throws(
      () => parseSubnetEnv(text),
      (e: Error) => e instanceof SyntaxError && re.test(e.message),
    );
  }
});
