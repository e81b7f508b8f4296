/**
 * The build steps that need Bun's bundler API (run by `scripts/build.ts`
 * with Bun; plugins are not available on `bun build`'s command line):
 *
 * - `lean-compute <out.js>`: the part of `@google-cloud/compute` and
 *   `google-gax` the gce provider uses — the routes and global-operations
 *   clients on gax's REST transport — as one ES module exporting
 *   `RoutesClient`, `GlobalOperationsClient` and (default) gax's `fallback`.
 *   The client files `require("google-gax")`, whose root loads gRPC
 *   (`@grpc/grpc-js`, `@grpc/proto-loader`) although REST never uses it:
 *   that require gets gax's fallback instead. And each client file carries
 *   the protos of the whole Compute API (12 MB of JSON): they are pruned to
 *   the two services, as `lean_protos.ts` prunes them at run time. 5.3 MB
 *   of bundled SDK becomes 1.2 MB.
 * - `compile <json>`: `bun build --compile` with the same flags as the
 *   command line, where the three SDK specifiers of `sdk.ts` resolve to the
 *   lean module (given in the JSON as `leanCompute`).
 *
 * @module
 */

import * as path from "node:path";
import { pruneProtoJson } from "../backends/cloud/gce/lean_protos.ts";

/** The specifiers `backends/cloud/gce/sdk.ts` imports the SDK by. */
export const COMPUTE_SPECIFIERS = [
  "@google-cloud/compute/build/src/v1/routes_client.js",
  "@google-cloud/compute/build/src/v1/global_operations_client.js",
  "google-gax/fallback",
] as const;

const SERVICES = ["google.cloud.compute.v1.Routes", "google.cloud.compute.v1.GlobalOperations"];

// deno-lint-ignore no-explicit-any
type Any = any;
// deno-lint-ignore no-explicit-any
const bun = (globalThis as any).Bun;

async function leanCompute(root: string, out: string): Promise<void> {
  const work = path.dirname(out);
  const gax = path.join(root, "node_modules/google-gax/build/src");
  const stub = path.join(work, "gax_rest.cjs");
  const entry = path.join(work, "compute_entry.mjs");
  await bun.write(
    stub,
    [
      `const fallback = require(${JSON.stringify(path.join(gax, "fallback.js"))});`,
      `const util = require(${JSON.stringify(path.join(gax, "util.js"))});`,
      "module.exports = Object.assign({}, fallback, {",
      "  fallback,",
      `  loggingUtils: require(${
        JSON.stringify(path.join(root, "node_modules/google-logging-utils"))
      }),`,
      "  decodeAnyProtosInArray: util.decodeAnyProtosInArray,",
      "});",
      "",
    ].join("\n"),
  );
  const mod = (p: string) => JSON.stringify(path.join(root, "node_modules", p));
  await bun.write(
    entry,
    [
      `export { RoutesClient } from ${mod(COMPUTE_SPECIFIERS[0])};`,
      `export { GlobalOperationsClient } from ${mod(COMPUTE_SPECIFIERS[1])};`,
      `import fallback from ${JSON.stringify(path.join(gax, "fallback.js"))};`,
      "export default fallback;",
      "",
    ].join("\n"),
  );
  const r = await bun.build({
    entrypoints: [entry],
    target: "node",
    format: "esm",
    minify: true,
    outdir: work,
    naming: path.basename(out),
    plugins: [{
      name: "weft-lean-compute",
      setup(b: Any) {
        b.onResolve(
          { filter: /^google-gax$/ },
          (a: Any) => a.importer.includes("@google-cloud/compute") ? { path: stub } : undefined,
        );
        b.onLoad(
          { filter: /@google-cloud[\\/]compute[\\/]build[\\/]protos[\\/]protos\.json$/ },
          async (a: Any) => ({
            contents: JSON.stringify(
              pruneProtoJson(JSON.parse(await bun.file(a.path).text()), SERVICES),
            ),
            loader: "json",
          }),
        );
      },
    }],
  });
  if (!r.success) throw new Error(`lean-compute: ${r.logs.join("\n")}`);
}

interface CompileArgs {
  readonly root: string;
  readonly entrypoints: string[];
  readonly outfile: string;
  readonly leanCompute?: string;
}

async function compile(args: CompileArgs): Promise<void> {
  const lean = args.leanCompute;
  const r = await bun.build({
    entrypoints: args.entrypoints.map((e) => path.resolve(args.root, e)),
    root: args.root,
    compile: {
      outfile: args.outfile,
      autoloadDotenv: false,
      autoloadBunfig: false,
      // a smaller heap, collected more often: an agent of 5000 peers stays under 100 MB
      execArgv: ["--smol"],
    },
    minify: true,
    format: "esm",
    splitting: true,
    plugins: lean
      ? [{
        name: "weft-lean-compute",
        setup(b: Any) {
          const exact = new RegExp(
            `^(${
              COMPUTE_SPECIFIERS.map((s) => s.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")).join("|")
            })$`,
          );
          b.onResolve({ filter: exact }, () => ({ path: lean }));
        },
      }]
      : [],
  });
  if (!r.success) throw new Error(`compile: ${r.logs.join("\n")}`);
}

if (import.meta.main) {
  const [cmd, arg, arg2] = bun?.argv.slice(2) ?? [];
  if (!bun) throw new Error("scripts/bun_build.ts runs under Bun");
  if (cmd === "lean-compute") await leanCompute(path.resolve(arg2 ?? "."), path.resolve(arg));
  else if (cmd === "compile") await compile(JSON.parse(arg) as CompileArgs);
  else throw new Error(`bun_build: unknown command ${cmd}: use lean-compute or compile`);
}
