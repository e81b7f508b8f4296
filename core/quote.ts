/**
 * Quoting a value inside an error or log message: its JSON text, cut to a
 * readable length, so that a huge or hostile input (a multi-megabyte
 * string, an object of 100 000 keys) cannot turn one message into
 * megabytes.
 *
 * @module
 */

/**
 * The JSON text of `value`, at most `max` characters; a longer one is cut
 * and says how long it was.
 *
 * @param value Any value (`undefined` and functions read `undefined`).
 * @param max Most characters kept of the JSON text (default 120).
 * @returns e.g. `"10.5.0.0/16"`, or `"aaaa…" (8388610 characters)`.
 * @example
 * ```ts
 * quote("x".repeat(1000), 10); // '"xxxxxxxxx… (1002 characters)'
 * ```
 */
export function quote(value: unknown, max = 120): string {
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value); // a BigInt or a cycle
  }
  return clip(text, max);
}

/**
 * A text cut to `max` characters; a longer one says how long it was.
 *
 * @param text Any text (e.g. a message that quotes its input).
 * @param max Most characters kept (default 200).
 * @returns The text, or its start and its length.
 * @example
 * ```ts
 * clip("abcdef", 3); // "abc… (6 characters)"
 * ```
 */
export function clip(text: string, max = 200): string {
  return text.length <= max ? text : `${text.slice(0, max)}… (${text.length} characters)`;
}
