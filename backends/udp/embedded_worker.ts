/**
 * The udp packet engine Worker's code, when it travels inside a one-file
 * bundle (`dist/weft.js`): `scripts/build.ts` bundles `worker.ts` first and
 * swaps this module, through an import map, for one whose constant holds
 * that bundle as text; `thread.ts` then starts the Worker from a Blob URL.
 *
 * From source, and in the compiled binary (where the Worker is an entry
 * point of its own), the constant is `undefined` and the Worker is loaded
 * from `worker.ts`.
 *
 * @module
 */

/** The bundled Worker's JavaScript, or `undefined` outside `dist/weft.js`. */
export const EMBEDDED_WORKER_SOURCE: string | undefined = undefined;
