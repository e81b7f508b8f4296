import assert from "node:assert/strict";
import { CLOUD_MODULES, loadCloudModule } from "./loader.ts";
import { isRouteProviderError, RouteProviderError } from "./provider.ts";
import { splitModuleUrl } from "../../core/split_module.ts";

Deno.test("CLOUD_MODULES are backends/cloud/<name>/provider.ts, and weft-<name>.js beside weft.js", () => {
  for (const [name, m] of Object.entries(CLOUD_MODULES)) {
    assert.equal(m.source, `backends/cloud/${name}/provider.ts`);
    assert.equal(
      splitModuleUrl(m, "file:///usr/local/lib/weft/weft.js"),
      `file:///usr/local/lib/weft/weft-${name}.js`,
    );
  }
});

Deno.test("loadCloudModule() loads the aws and gce providers from source", async () => {
  const aws = await loadCloudModule<typeof import("./aws/provider.ts")>("aws");
  assert.equal(aws.API_VERSION, 1);
  assert.equal(typeof aws.createAwsVpcProvider, "function");
  const gce = await loadCloudModule<typeof import("./gce/provider.ts")>("gce");
  assert.equal(typeof gce.createGceRouteProvider, "function");
});

Deno.test("isRouteProviderError() recognises the class and a copy of it from a split file", () => {
  assert.equal(isRouteProviderError(new RouteProviderError("limit", "table full")), true);
  class CopiedRouteProviderError extends Error {
    override name = "RouteProviderError";
    constructor(readonly kind: string) {
      super("from weft-aws.js");
    }
  }
  const copy = new CopiedRouteProviderError("throttled");
  assert.equal(copy instanceof RouteProviderError, false);
  assert.equal(isRouteProviderError(copy), true);
  assert.equal(isRouteProviderError(new Error("RouteProviderError")), false);
  assert.equal(
    isRouteProviderError(Object.assign(new Error("x"), { name: "RouteProviderError" })),
    false,
  );
  assert.equal(isRouteProviderError({ name: "RouteProviderError", kind: "limit" }), false);
});
