/**
 * Split modules: code that must not ride in weft's main file, such as the
 * cloud backends, whose SDKs (`@aws-sdk/client-ec2`, `@google-cloud/compute`)
 * weigh more than all of weft and would cost every on-prem agent start time
 * and memory. A split module is its source file, and a file of its own in
 * every built form, imported only when it is needed.
 *
 * Where it is depends on how weft runs; this module tells the forms apart by
 * its own URL:
 *
 * | form | this file's URL | the split module |
 * | ---- | --------------- | ---------------- |
 * | source (`deno run mod.ts`, `bun mod.ts`), `deno compile` | `…/core/split_module.ts` | its source file |
 * | `bun build --compile` binary (`dist/weft`) | `file:///$bunfs/root/…` | its entry point, `/$bunfs/root/<source>.js` |
 * | one-file bundle (`dist/weft.js`) | `…/weft.js` | `<file>` beside it, e.g. `weft-aws.js` |
 *
 * The import specifier is computed, so neither `deno bundle` nor `bun build`
 * pulls the module into the main file (a literal `await import("…")` is
 * bundled, and in a Bun binary even parsed at start). `scripts/build.ts`
 * makes each split module a file (weft.js) or an entry point (the binary).
 *
 * One thing differs between the forms: in `dist/weft.js` the split file
 * carries its own copy of the weft modules it imports (the binary shares
 * them: it is built with `--splitting`), so a class is a different class on
 * each side. The seam between a split module and weft must not rely on
 * `instanceof` (recognise errors by `name` and fields) nor on module-level
 * state both sides need.
 *
 * @module
 */

/** A module built as a file of its own. */
export interface SplitModule {
  /** Short name for messages, e.g. `aws`. */
  readonly name: string;
  /** Its source, relative to the repository root, e.g. `backends/cloud/aws/mod.ts`. */
  readonly source: string;
  /** Its file beside `weft.js`, e.g. `weft-aws.js`. */
  readonly file: string;
}

/** How weft is running, as far as finding split modules goes. */
export type BuildForm = "source" | "binary" | "bundle";

const SELF_SOURCE = "/core/split_module.ts";
const BUNFS_ROOT = "/$bunfs/root/";

/**
 * Which form a URL of this module belongs to.
 *
 * @param here This module's URL (default `import.meta.url`).
 * @returns `source`, `binary` (a Bun single file) or `bundle` (`weft.js`).
 * @example
 * ```ts
 * buildForm("file:///opt/weft/weft.js"); // "bundle"
 * ```
 */
export function buildForm(here: string = import.meta.url): BuildForm {
  if (here.endsWith(SELF_SOURCE)) return "source";
  if (here.includes(BUNFS_ROOT)) return "binary";
  return "bundle";
}

/**
 * The URL a split module is imported from in the running form.
 *
 * @param module The module.
 * @param here This module's URL (default `import.meta.url`; tests pass others).
 * @returns An absolute URL.
 * @example
 * ```ts
 * const aws = { name: "aws", source: "backends/cloud/aws/mod.ts", file: "weft-aws.js" };
 * splitModuleUrl(aws, "file:///opt/weft/weft.js"); // "file:///opt/weft/weft-aws.js"
 * ```
 */
export function splitModuleUrl(module: SplitModule, here: string = import.meta.url): string {
  switch (buildForm(here)) {
    case "source":
      return new URL(module.source, here.slice(0, here.length - SELF_SOURCE.length + 1)).href;
    case "binary": {
      const root = here.slice(0, here.indexOf(BUNFS_ROOT) + BUNFS_ROOT.length);
      return new URL(module.source.replace(/\.ts$/, ".js"), root).href;
    }
    case "bundle":
      return new URL(`./${module.file}`, here).href;
  }
}

/** A split module could not be loaded; the message says which file and what to do. */
export class SplitModuleError extends Error {
  override name = "SplitModuleError";
}

/**
 * Import a split module.
 *
 * @param module The module.
 * @param options `here`: the URL to resolve from, as this module's (tests).
 * @returns The module's namespace.
 * @throws {SplitModuleError} When the module's file is missing or fails to
 *   load, naming the file and where it must be.
 * @example
 * ```ts
 * const aws = await loadSplitModule<{ ROUTE_PROVIDER_API_VERSION: number }>(
 *   { name: "aws", source: "backends/cloud/aws/mod.ts", file: "weft-aws.js" },
 * );
 * ```
 */
export async function loadSplitModule<T = Record<string, unknown>>(
  module: SplitModule,
  options: { here?: string } = {},
): Promise<T> {
  const here = options.here ?? import.meta.url;
  const url = splitModuleUrl(module, here);
  try {
    return await import(url) as T;
  } catch (e) {
    const form = buildForm(here);
    const fix = form === "bundle"
      ? `put ${module.file} from the same build next to ${
        decodeURI(new URL(here).pathname)
      } (deno task build writes both to dist/)`
      : form === "binary"
      ? `rebuild the binary with ${module.source} as an entry point (deno task compile:bun)`
      : `check ${module.source}`;
    throw new SplitModuleError(
      `Cannot load weft's ${module.name} module from ${url}: ${
        (e as Error).message.replace(/\.$/, "")
      }; ${fix}`,
      { cause: e },
    );
  }
}
