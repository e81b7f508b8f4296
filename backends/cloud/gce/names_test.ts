import assert from "node:assert/strict";
import {
  canonicalDestination,
  canonicalLink,
  instanceLink,
  isOwnedRoute,
  networkLink,
  parseNetworkLink,
  parseResourceLink,
  routeName,
  WEFT_ROUTE_DESCRIPTION,
} from "./names.ts";

Deno.test("routeName() is flannel's: the subnet with '.' and '/' as '-'", () => {
  const cases: [string, string][] = [
    ["10.244.1.0/24", "flannel-10-244-1-0-24"],
    ["10.0.0.0/8", "flannel-10-0-0-0-8"],
    ["192.168.255.252/30", "flannel-192-168-255-252-30"],
    ["0.0.0.0/0", "flannel-0-0-0-0-0"],
    ["10.244.1.7/24", "flannel-10-244-1-0-24"], // host bits dropped, as the lease subnet has none
  ];
  for (const [subnet, name] of cases) assert.equal(routeName(subnet), name, subnet);
  assert.throws(() => routeName("fd00::/64"), SyntaxError);
  assert.throws(() => routeName("10.244.1.0"), SyntaxError);
});

Deno.test("parseResourceLink() accepts full URLs on any host and partial paths", () => {
  const want = { project: "p-1", rest: "global/networks/default" };
  for (
    const link of [
      "https://www.googleapis.com/compute/v1/projects/p-1/global/networks/default",
      "https://compute.googleapis.com/compute/v1/projects/p-1/global/networks/default",
      "http://127.0.0.1:8089/compute/v1/projects/p-1/global/networks/default/",
      "projects/p-1/global/networks/default",
    ]
  ) {
    assert.deepEqual(parseResourceLink(link), want, link);
  }
  assert.equal(parseResourceLink("global/networks/default"), null);
  assert.equal(parseResourceLink("default"), null);
});

Deno.test("canonicalLink() writes every form as the API's www.googleapis.com selfLink", () => {
  assert.equal(
    canonicalLink("projects/p/zones/europe-west1-b/instances/node-1"),
    instanceLink("p", "europe-west1-b", "node-1"),
  );
  assert.equal(
    canonicalLink("https://compute.googleapis.com/compute/v1/projects/p/global/networks/n"),
    networkLink("p", "n"),
  );
  assert.equal(canonicalLink("not a link"), "not a link");
});

Deno.test("parseNetworkLink() takes network links only, with a fix in the error", () => {
  assert.deepEqual(parseNetworkLink(networkLink("p", "vpc-a")), { project: "p", network: "vpc-a" });
  assert.deepEqual(parseNetworkLink("projects/123456789012/global/networks/shared"), {
    project: "123456789012",
    network: "shared",
  });
  for (
    const bad of [
      "default",
      "rtb-0a1b2c",
      instanceLink("p", "z", "i"),
      "projects/p/global/networks/Bad",
    ]
  ) {
    assert.throws(
      () => parseNetworkLink(bad),
      (e: unknown) => e instanceof TypeError && e.message.includes("expected a network selfLink"),
      bad,
    );
  }
});

Deno.test("isOwnedRoute(): weft's description, or flannel's name for its own range with an instance hop", () => {
  const inst = instanceLink("p", "z", "i");
  const cases: [string, Parameters<typeof isOwnedRoute>[0], boolean][] = [
    ["weft's description", { name: "anything", description: WEFT_ROUTE_DESCRIPTION }, true],
    [
      "flannel's route",
      { name: "flannel-10-244-1-0-24", destRange: "10.244.1.0/24", nextHopInstance: inst },
      true,
    ],
    [
      "flannel's name, other range",
      { name: "flannel-10-244-1-0-24", destRange: "10.244.2.0/24", nextHopInstance: inst },
      false,
    ],
    [
      "flannel's name, next hop an IP",
      { name: "flannel-10-244-1-0-24", destRange: "10.244.1.0/24" },
      false,
    ],
    [
      "GKE's route",
      { name: "gke-c-1234-abcd", destRange: "10.244.1.0/24", nextHopInstance: inst },
      false,
    ],
    [
      "default route",
      {
        name: "default-route-1",
        destRange: "0.0.0.0/0",
        description: "Default route to the Internet.",
      },
      false,
    ],
    ["IPv6 range", { name: "flannel-fd00", destRange: "fd00::/64", nextHopInstance: inst }, false],
  ];
  for (const [what, route, owned] of cases) assert.equal(isOwnedRoute(route), owned, what);
  assert.equal(isOwnedRoute({ description: "cluster-b" }, "cluster-b"), true, "custom mark");
});

Deno.test("canonicalDestination() normalises IPv4 ranges and refuses the rest", () => {
  assert.equal(canonicalDestination("10.244.1.0/24"), "10.244.1.0/24");
  assert.equal(canonicalDestination("10.244.1.9/24"), "10.244.1.0/24");
  assert.equal(canonicalDestination("fd00::/64"), null);
});
