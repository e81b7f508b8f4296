/**
 * Where the command line's own output goes: stdout for answers (help,
 * version, attach results), stderr for usage errors. Injectable so tests
 * read what a command printed.
 *
 * @module
 */

/** Output sinks of the command line. */
export interface CliIo {
  stdout(text: string): void;
  stderr(text: string): void;
}

/** The process's stdout and stderr. */
export const processIo: CliIo = {
  stdout: (text) => console.log(text),
  stderr: (text) => console.error(text),
};
