import assert from "node:assert/strict";
import { createRequire } from "node:module";
import fallback from "google-gax/fallback";
import { pruneProtoJson } from "./lean_protos.ts";

// deno-lint-ignore no-explicit-any
type Json = Record<string, any>;

Deno.test("pruneProtoJson() resolves names as protobufjs does: nested first, then outwards, absolute", () => {
  const json: Json = {
    nested: {
      a: {
        nested: {
          Svc: { methods: { Do: { requestType: "Req", responseType: ".a.Res" } } },
          Req: {
            fields: { x: { type: "Inner", id: 1 }, y: { type: "Shared", id: 2 } },
            nested: { Inner: { fields: { z: { type: "Deep", id: 1 } } } },
          },
          Res: { fields: { s: { type: "string", id: 1 }, e: { type: "Kind", id: 2 } } },
          Kind: { values: { A: 0, B: 1 } },
          Deep: { fields: {} },
          Unused: { fields: { q: { type: "Req", id: 1 } } },
        },
      },
      Shared: { fields: {} },
      Other: { fields: {} },
    },
  };
  const pruned = pruneProtoJson(json, ["a.Svc"]);
  assert.deepEqual(Object.keys(pruned.nested).sort(), ["Shared", "a"]);
  assert.deepEqual(Object.keys(pruned.nested.a.nested).sort(), [
    "Deep",
    "Kind",
    "Req",
    "Res",
    "Svc",
  ]);
  assert.throws(() => pruneProtoJson(json, ["a.Nope"]), RangeError);
});

Deno.test("the Compute protos pruned to Routes and GlobalOperations build a complete root", () => {
  const require = createRequire(import.meta.url);
  const protos = require("@google-cloud/compute/build/protos/protos.json");
  const services = ["google.cloud.compute.v1.Routes", "google.cloud.compute.v1.GlobalOperations"];
  const pruned = pruneProtoJson(protos, services);
  const v1 = pruned.nested.google.nested.cloud.nested.compute.nested.v1.nested;
  const full = protos.nested.google.nested.cloud.nested.compute.nested.v1.nested;
  for (
    const t of [
      "Routes",
      "GlobalOperations",
      "Route",
      "RouteList",
      "Operation",
      "InsertRouteRequest",
    ]
  ) {
    assert.ok(t in v1, `${t} kept`);
  }
  assert.ok(!("Instances" in v1) && !("Instance" in v1), "unrelated services and types dropped");
  const kept = Object.keys(v1).length, all = Object.keys(full).length;
  assert.ok(kept * 10 < all, `kept ${kept} of ${all} types`);
  // every reference resolves: protobufjs throws on an unresolvable type
  const root = fallback.protobuf.Root.fromJSON(pruned) as unknown as { resolveAll(): unknown };
  root.resolveAll();
});
