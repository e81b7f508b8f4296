/**
 * The error every {@link Datapath} raises when the kernel (or the fake that
 * stands in for it) refuses a request.
 *
 * @module
 */

import { errnoName } from "../../core/errno.ts";

/**
 * A netlink request failed. `code` is the errno name (`EEXIST`, `ENOENT`,
 * `ENODEV`, …), `request` says what was asked, e.g.
 * `RTM_NEWROUTE replace 10.5.2.0/24 via 10.5.2.0 dev 7 onlink`.
 *
 * @example
 * ```ts
 * try { await dp.createVxlan(spec); } catch (e) {
 *   if (e instanceof NetlinkError && e.code === "EEXIST") { … }
 * }
 * ```
 */
export class NetlinkError extends Error {
  override name = "NetlinkError";
  /** Positive errno. */
  readonly errno: number;
  /** Errno name, e.g. `EEXIST`. */
  readonly code: string;
  /** Description of the request that failed. */
  readonly request: string;
  /** The kernel's own explanation (extended ack), when it gave one. */
  readonly kernelMessage?: string;

  /**
   * @param errno Positive errno.
   * @param request Description of the failed request.
   * @param kernelMessage Extended-ack text, if any.
   * @param options Error options (`cause`).
   */
  constructor(errno: number, request: string, kernelMessage?: string, options?: ErrorOptions) {
    const code = errnoName(errno);
    super(
      `netlink request failed with ${code}${
        kernelMessage ? ` (${kernelMessage})` : ""
      }: ${request}${hint(code)}`,
      options,
    );
    this.errno = errno;
    this.code = code;
    this.request = request;
    this.kernelMessage = kernelMessage;
  }
}

function hint(code: string): string {
  switch (code) {
    case "EPERM":
      return "; run weft as root or with CAP_NET_ADMIN";
    case "ENODEV":
      return "; the device does not exist (was it deleted?)";
    case "ENETUNREACH":
      return "; the gateway is not on a connected network of that device (use onlink or fix the address)";
    case "ENETDOWN":
      return "; the device is down: set it up first";
    case "EOPNOTSUPP":
      return "; the kernel lacks support for this (missing module?)";
    default:
      return "";
  }
}

/**
 * Several requests of one batch failed. The kernel applied every other
 * request of the batch; `errors` lists each failure, and the inherited
 * `errno`/`code`/`request` are those of the first.
 */
export class NetlinkBatchError extends NetlinkError {
  override name = "NetlinkBatchError";
  /** Every failure, in request order. */
  readonly errors: readonly NetlinkError[];

  /**
   * @param errors The individual failures (at least two).
   * @param total How many requests the batch held.
   */
  constructor(errors: readonly NetlinkError[], total: number) {
    const first = errors[0];
    super(first.errno, first.request, first.kernelMessage);
    this.message = `${errors.length} of ${total} netlink requests failed; first: ${first.message}`;
    this.errors = errors;
  }
}

/**
 * Throw the failures of a batch: nothing when there are none, the error
 * itself when there is one, a {@link NetlinkBatchError} when there are more.
 *
 * @param errors Failures in request order.
 * @param total Requests in the batch.
 * @throws {NetlinkError} When `errors` is not empty.
 */
export function throwBatchErrors(errors: readonly NetlinkError[], total: number): void {
  if (errors.length === 1) throw errors[0];
  if (errors.length > 1) throw new NetlinkBatchError(errors, total);
}
