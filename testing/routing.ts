/**
 * Test helpers for the routing backends (vxlan, host-gw): a BackendContext
 * whose `acquire` hands out a fixed subnet and records the attributes, and
 * lease builders.
 *
 * @module
 */

import { memoryLogger } from "./memory_logger.ts";
import { Registry } from "../core/metrics.ts";
import { type Clock } from "../core/clock.ts";
import { FakeClock } from "./fake_clock.ts";
import { parseNetworkConfig } from "../lease/config.ts";
import { parseIPv4Net } from "../core/ip.ts";
import type { Lease, LeaseAttrs } from "../lease/types.ts";
import type { BackendContext } from "../backends/types.ts";
import type { ExternalInterface } from "../datapath/iface.ts";

/** A BackendContext for tests, with what `acquire` was called with. */
export interface TestContext extends BackendContext {
  readonly acquired: LeaseAttrs[];
  readonly logger: ReturnType<typeof memoryLogger>;
}

/**
 * Build a context.
 *
 * @param options Backend JSON (merged into a 10.5.0.0/16 config), the
 *   external interface, the subnet `acquire` returns, the previous lease,
 *   clock and signal.
 * @returns The context.
 */
export function testContext(options: {
  backend?: Record<string, unknown>;
  ext: ExternalInterface;
  subnet: string;
  previousLease?: Lease;
  clock?: Clock;
  signal?: AbortSignal;
}): TestContext {
  const acquired: LeaseAttrs[] = [];
  const config = parseNetworkConfig(
    JSON.stringify({ Network: "10.5.0.0/16", Backend: options.backend ?? { Type: "vxlan" } }),
  );
  const subnet = parseIPv4Net(options.subnet);
  return {
    config,
    extIface: options.ext,
    previousLease: options.previousLease,
    acquire: (attrs) => {
      acquired.push(attrs);
      return Promise.resolve({ subnet, attrs, expiration: null });
    },
    logger: memoryLogger(),
    metrics: new Registry(),
    clock: options.clock ?? new FakeClock(),
    signal: options.signal ?? new AbortController().signal,
    acquired,
  };
}

/**
 * A peer lease.
 *
 * @param subnet e.g. `10.5.2.0/24`.
 * @param publicIP e.g. `192.0.2.12`.
 * @param backend `vxlan` (with `mac`), `host-gw`, or undefined for udp.
 * @param mac VtepMAC for vxlan.
 */
export function peerLease(
  subnet: string,
  publicIP: string,
  backend?: string,
  mac?: string,
): Lease {
  return {
    subnet: parseIPv4Net(subnet),
    attrs: {
      publicIP,
      backendType: backend,
      backendData: backend === "vxlan"
        ? { VNI: 1, VtepMAC: mac ?? "02:00:00:00:00:99" }
        : undefined,
    },
    expiration: null,
  };
}
