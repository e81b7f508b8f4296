import assert from "node:assert/strict";
import * as fs from "node:fs";
import { CLOUD_MODULES, loadCloudModule } from "./loader.ts";
import { isRouteProviderError, RouteProviderError } from "./provider.ts";
import { splitModuleUrl } from "../../core/split_module.ts";

Deno.test("CLOUD_MODULES are backends/cloud/<name>/mod.ts, and weft-<name>.js beside weft.js", () => {
  for (const [name, m] of Object.entries(CLOUD_MODULES)) {
    assert.equal(m.source, `backends/cloud/${name}/mod.ts`);
    assert.equal(
      splitModuleUrl(m, "file:///usr/local/lib/weft/weft.js"),
      `file:///usr/local/lib/weft/weft-${name}.js`,
    );
  }
});

Deno.test("loadCloudModule() loads a cloud module that exists, and names its file while it does not", async () => {
  for (const name of ["aws", "gce"] as const) {
    if (fs.existsSync(new URL(`./${name}/mod.ts`, import.meta.url))) {
      const m = await loadCloudModule(name);
      assert.equal(m.ROUTE_PROVIDER_API_VERSION, 1);
    } else {
      await assert.rejects(
        loadCloudModule(name),
        new RegExp(`Cannot load weft's ${name} module from .*${name}/mod\\.ts`),
      );
    }
  }
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
