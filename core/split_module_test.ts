import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { pathToFileURL } from "node:url";
import {
  buildForm,
  loadSplitModule,
  type SplitModule,
  SplitModuleError,
  splitModuleUrl,
} from "./split_module.ts";

const SOURCE_URL = "file:///opt/src/weft/core/split_module.ts";
const BINARY_URL = "file:///$bunfs/root/chunk-1a2b3c.js";
const BUNDLE_URL = "file:///usr/local/lib/weft/weft.js";
const AWS: SplitModule = { name: "aws", source: "backends/cloud/aws/mod.ts", file: "weft-aws.js" };

Deno.test("buildForm() tells source, the Bun binary and the one-file bundle apart by this module's URL", () => {
  assert.equal(buildForm(SOURCE_URL), "source");
  assert.equal(buildForm("file:///tmp/deno-compile-weft/src/core/split_module.ts"), "source");
  assert.equal(buildForm(BINARY_URL), "binary");
  assert.equal(buildForm("file:///$bunfs/root/weft"), "binary");
  assert.equal(buildForm(BUNDLE_URL), "bundle");
  assert.equal(buildForm(), "source");
});

Deno.test("splitModuleUrl() finds the source file, the binary's entry point, or the file beside weft.js", () => {
  assert.equal(splitModuleUrl(AWS, SOURCE_URL), "file:///opt/src/weft/backends/cloud/aws/mod.ts");
  assert.equal(splitModuleUrl(AWS, BINARY_URL), "file:///$bunfs/root/backends/cloud/aws/mod.js");
  assert.equal(splitModuleUrl(AWS, BUNDLE_URL), "file:///usr/local/lib/weft/weft-aws.js");
  assert.equal(
    splitModuleUrl(AWS),
    new URL("../backends/cloud/aws/mod.ts", import.meta.url).href,
  );
});

Deno.test("loadSplitModule() imports the file beside a bundle, and names the missing file and the fix", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "weft-split-"));
  try {
    const module: SplitModule = { name: "probe", source: "x/probe.ts", file: "weft-probe.js" };
    const here = pathToFileURL(path.join(dir, "weft.js")).href;
    await assert.rejects(
      loadSplitModule(module, { here }),
      (e: unknown) => {
        assert.ok(e instanceof SplitModuleError);
        assert.match(e.message, /Cannot load weft's probe module from file:\/\/.*\/weft-probe\.js/);
        assert.match(e.message, /put weft-probe\.js from the same build next to .*\/weft\.js/);
        return true;
      },
    );
    // a runtime remembers a failed import of a URL: load a present file under another name
    fs.writeFileSync(path.join(dir, "weft-present.js"), "export const answer = 42;\n");
    const m = await loadSplitModule<{ answer: number }>({ ...module, file: "weft-present.js" }, {
      here,
    });
    assert.equal(m.answer, 42);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

Deno.test("loadSplitModule() from source imports the source file, and says to rebuild the binary when an entry point is missing", async () => {
  const m = await loadSplitModule<{ buildForm: unknown }>({
    name: "self",
    source: "core/split_module.ts",
    file: "unused.js",
  });
  assert.equal(m.buildForm, buildForm);
  await assert.rejects(
    loadSplitModule(AWS, { here: "file:///$bunfs/root/weft" }),
    /from file:\/\/\/\$bunfs\/root\/backends\/cloud\/aws\/mod\.js: .*rebuild the binary with backends\/cloud\/aws\/mod\.ts as an entry point/,
  );
});
