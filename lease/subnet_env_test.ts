import assert from "node:assert/strict";
import { parseIPv4Net, parseIPv6Net } from "../core/ip.ts";
import { parseSubnetEnv, parseSubnetEnvVars, renderSubnetEnv, subnetEnvFor } from "./subnet_env.ts";
import { parseNetworkConfig } from "./config.ts";
import type { LeaseSubnets } from "./types.ts";

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

Deno.test("subnetEnvFor() and renderSubnetEnv() write what flannel's WriteSubnetFile writes per family", () => {
  // pkg/subnet/subnet.go:70-92 (v0.28.9): the IPv4 pair only with EnableIPv4, the IPv6 pair
  // only with EnableIPv6, each subnet's first address; then MTU and IPMASQ
  const cases: [string, string, LeaseSubnets, string][] = [
    [
      "IPv4",
      '{"Network":"10.5.0.0/16"}',
      { subnet: parseIPv4Net("10.5.52.0/24") },
      "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.52.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
    ],
    [
      "dual stack (flannel's Documentation/configuration.md example)",
      '{"Network":"10.42.0.0/16","EnableIPv6":true,"IPv6Network":"2001:cafe:42::/56"}',
      { subnet: parseIPv4Net("10.42.0.0/24"), ipv6Subnet: parseIPv6Net("2001:cafe:42::/64") },
      "FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET=10.42.0.1/24\n" +
      "FLANNEL_IPV6_NETWORK=2001:cafe:42::/56\nFLANNEL_IPV6_SUBNET=2001:cafe:42::1/64\n" +
      "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
    ],
    [
      "IPv6-only: no FLANNEL_NETWORK or FLANNEL_SUBNET",
      '{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:5::/48"}',
      { ipv6Subnet: parseIPv6Net("fd00:10:5:7::/64") },
      "FLANNEL_IPV6_NETWORK=fd00:10:5::/48\nFLANNEL_IPV6_SUBNET=fd00:10:5:7::1/64\n" +
      "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
    ],
  ];
  for (const [why, json, lease, want] of cases) {
    const env = subnetEnvFor(parseNetworkConfig(json), lease, 1450, true);
    const text = renderSubnetEnv(env);
    assert.equal(text, want, why);
    // and back: the previous-subnet hint at the next start
    const back = parseSubnetEnv(text);
    assert.deepEqual(back.subnet, lease.subnet, why);
    assert.deepEqual(back.ipv6Subnet, lease.ipv6Subnet, why);
  }
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
