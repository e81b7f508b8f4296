import assert from "node:assert/strict";
import { parseIPv4Net, parseIPv6Net } from "../core/ip.ts";
import { parseSubnetEnv, parseSubnetEnvVars, renderSubnetEnv } from "./subnet_env.ts";

Deno.test("renderSubnetEnv() writes flannel's keys in flannel's order", () => {
  assert.equal(
    renderSubnetEnv({
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

Deno.test("parseSubnetEnv() reads what renderSubnetEnv() writes", () => {
  const env = parseSubnetEnv(renderSubnetEnv({
    network: parseIPv4Net("10.5.0.0/16"),
    subnet: parseIPv4Net("10.5.52.0/24"),
    mtu: 1450,
    ipMasq: false,
  }));
  assert.deepEqual(env.subnet, parseIPv4Net("10.5.52.0/24"));
  assert.deepEqual(env.network, parseIPv4Net("10.5.0.0/16"));
  assert.equal(env.mtu, 1450);
  assert.equal(env.ipMasq, false);
  assert.equal(env.ipv6Subnet, undefined);
});

Deno.test("parseSubnetEnvVars() keeps values as written: host address, odd IPMASQ, later lines win", () => {
  const vars = parseSubnetEnvVars(
    "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.52.1/24\n# comment\nFLANNEL_IPMASQ=yes \nFLANNEL_MTU=1400\nFLANNEL_MTU=1450\n",
  );
  assert.deepEqual(Object.fromEntries(vars), {
    FLANNEL_NETWORK: "10.5.0.0/16",
    FLANNEL_SUBNET: "10.5.52.1/24",
    FLANNEL_IPMASQ: "yes",
    FLANNEL_MTU: "1450",
  });
});
