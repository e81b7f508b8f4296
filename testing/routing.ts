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
import { parseIPv4Net, parseIPv6Net, subnetPair } from "../core/ip.ts";
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
 * @param options Backend JSON (merged into a 10.5.0.0/16 config, or into
 *   `network` when given, e.g. `{ EnableIPv6: true, IPv6Network: "fd00:5::/56" }`),
 *   the external interface, the subnets `acquire` returns (IPv4 and/or
 *   IPv6), the previous lease, clock and signal.
 * @returns The context.
 */
export function testContext(options: {
  backend?: Record<string, unknown>;
  /** Network config keys other than Backend (default `{ Network: "10.5.0.0/16" }`). */
  network?: Record<string, unknown>;
  ext: ExternalInterface;
  /** The IPv4 subnet `acquire` returns; absent for an IPv6-only network. */
  subnet?: string;
  /** The IPv6 subnet `acquire` returns. */
  ipv6Subnet?: string;
  previousLease?: Lease;
  clock?: Clock;
  signal?: AbortSignal;
}): TestContext {
  const acquired: LeaseAttrs[] = [];
  const config = parseNetworkConfig(
    JSON.stringify({
      ...(options.network ?? { Network: "10.5.0.0/16" }),
      Backend: options.backend ?? { Type: "vxlan" },
    }),
  );
  const subnets = subnetPair(
    options.subnet ? parseIPv4Net(options.subnet) : undefined,
    options.ipv6Subnet ? parseIPv6Net(options.ipv6Subnet) : undefined,
  );
  if (!subnets) throw new TypeError("testContext needs a subnet or an ipv6Subnet");
  return {
    config,
    extIface: options.ext,
    previousLease: options.previousLease,
    acquire: (attrs) => {
      acquired.push(attrs);
      return Promise.resolve({ ...subnets, attrs, expiration: null });
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

/** What a dual-stack or IPv6-only peer lease holds. */
export interface PeerLease6Options {
  /** IPv4 subnet, absent for an IPv6-only peer. */
  readonly subnet?: string;
  readonly ipv6Subnet: string;
  /** Public IPv4 address (default none: flannel's "0.0.0.0"). */
  readonly publicIP?: string;
  readonly publicIPv6: string;
  /** `vxlan` or `host-gw`. */
  readonly backend: string;
  /** VtepMACs for vxlan (IPv4 device, IPv6 device). */
  readonly mac?: string;
  readonly mac6?: string;
}

/**
 * A dual-stack or IPv6-only peer lease, with flannel's attributes.
 *
 * @param o Subnets, public addresses, backend and VtepMACs.
 * @returns The lease.
 */
export function peerLease6(o: PeerLease6Options): Lease {
  const vxlan = o.backend === "vxlan";
  const subnets = subnetPair(
    o.subnet ? parseIPv4Net(o.subnet) : undefined,
    parseIPv6Net(o.ipv6Subnet),
  )!;
  return {
    ...subnets,
    attrs: {
      publicIP: o.publicIP ?? "",
      publicIPv6: o.publicIPv6,
      backendType: o.backend,
      ...(vxlan && o.subnet
        ? { backendData: { VNI: 1, VtepMAC: o.mac ?? "02:00:00:00:00:99" } }
        : {}),
      ...(vxlan ? { backendV6Data: { VNI: 1, VtepMAC: o.mac6 ?? "02:00:00:00:06:99" } } : {}),
    },
    expiration: null,
  };
}
