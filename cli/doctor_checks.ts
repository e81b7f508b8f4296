/**
 * `weft doctor`'s checks as pure functions of the facts gathered from a
 * host (./doctor.ts gathers them): each returns findings that say what is
 * wrong, the current value, and how to fix it.
 *
 * @module
 */

import { formatIPv4Net as fmt, type IPv4Net, parseIPv4Net } from "../core/ip.ts";

/** The outcome of one check. */
export interface Finding {
  /** Check id, e.g. `ip-forward`. */
  readonly check: string;
  /** `error`: traffic breaks; `warn`: may break; `ok`; `skip`: not checked (why in `message`). */
  readonly level: "error" | "warn" | "ok" | "skip";
  readonly message: string;
  /** What to do about it. */
  readonly fix?: string;
}

/** A link as `ip -j -d link` shows it (the fields used). */
export interface LinkFact {
  readonly name: string;
  readonly mtu: number;
  /** `vxlan`, `tun`, `bridge`, … */
  readonly kind?: string;
  /** A vxlan device's UDP port. */
  readonly port?: number;
}

/** A route of the main table (IPv4). */
export interface RouteFact {
  /** CIDR, or `default`. */
  readonly dst: string;
  readonly dev?: string;
  readonly gateway?: string;
  /** `unicast`, `blackhole`, … */
  readonly type?: string;
}

/** A UDP socket bound to a port, and who holds it (none: a kernel socket, e.g. vxlan). */
export interface UdpHolder {
  readonly port: number;
  readonly pid?: number;
  readonly comm?: string;
  readonly cmdline?: string;
}

/** A peer probe: whether it answers on the underlay and through the overlay. */
export interface PeerProbe {
  readonly subnet: string;
  readonly publicIP: string;
  readonly underlay: boolean;
  /** Whether its overlay address answered (null: not probed, e.g. no route). */
  readonly overlay: boolean | null;
}

/** What the backend needs, from the network config. */
export interface BackendFacts {
  readonly type: string;
  /** The overlay device (`flannel.1`, `flannel0`), none for host-gw. */
  readonly device: string | null;
  /** Its UDP port (vxlan 8472, udp 8285), none for host-gw. */
  readonly port: number | null;
  /** Bytes the encapsulation adds (vxlan 50, udp 28). */
  readonly overhead: number;
}

/**
 * What a backend type needs.
 *
 * @param type `Backend.Type`.
 * @param backend The Backend object (VNI, Port).
 * @returns Device, port and overhead.
 */
export function backendFacts(
  type: string,
  backend: Readonly<Record<string, unknown>> = {},
): BackendFacts {
  const num = (k: string) => {
    const v = backend[k] ?? backend[k.toLowerCase()];
    return typeof v === "number" && v > 0 ? v : undefined;
  };
  if (type === "vxlan") {
    return { type, device: `flannel.${num("VNI") ?? 1}`, port: num("Port") ?? 8472, overhead: 50 };
  }
  if (type === "udp") return { type, device: "flannel0", port: num("Port") ?? 8285, overhead: 28 };
  return { type, device: null, port: null, overhead: 0 };
}

/**
 * ip_forward (and IPv6 forwarding when the network has IPv6).
 *
 * @param sysctl A sysctl's value by /proc/sys path (null: absent).
 * @param ipv6 Whether IPv6 is enabled.
 * @returns Findings.
 */
export function checkForwarding(sysctl: (path: string) => string | null, ipv6: boolean): Finding[] {
  const out: Finding[] = [];
  const want = [["/proc/sys/net/ipv4/ip_forward", "net.ipv4.ip_forward"]];
  if (ipv6) want.push(["/proc/sys/net/ipv6/conf/all/forwarding", "net.ipv6.conf.all.forwarding"]);
  for (const [path, name] of want) {
    const v = sysctl(path);
    out.push(
      v === "1" ? { check: "ip-forward", level: "ok", message: `${name} is 1` } : {
        check: "ip-forward",
        level: "error",
        message: `${name} is ${
          v ?? "missing"
        }: this host does not forward pod traffic between the overlay and its pods`,
        fix: `sysctl -w ${name}=1, and keep it: echo ${name}=1 > /etc/sysctl.d/90-weft.conf`,
      },
    );
  }
  return out;
}

/**
 * br_netfilter and bridge-nf-call-iptables (kube-proxy's rules must see
 * traffic between pods on one bridge).
 *
 * @param sysctl A sysctl's value by path.
 * @returns Findings.
 */
export function checkBridgeNetfilter(sysctl: (path: string) => string | null): Finding[] {
  const path = "/proc/sys/net/bridge/bridge-nf-call-iptables";
  const v = sysctl(path);
  if (v === null) {
    return [{
      check: "br-netfilter",
      level: "warn",
      message:
        "the br_netfilter module is not loaded: traffic between pods on one bridge (cni0, docker0) bypasses iptables, so Kubernetes service rules miss it",
      fix: "modprobe br_netfilter, and keep it: echo br_netfilter > /etc/modules-load.d/weft.conf",
    }];
  }
  if (v !== "1") {
    return [{
      check: "br-netfilter",
      level: "warn",
      message:
        `net.bridge.bridge-nf-call-iptables is ${v}: traffic between pods on one bridge bypasses iptables, so Kubernetes service rules miss it`,
      fix:
        "sysctl -w net.bridge.bridge-nf-call-iptables=1, and keep it in /etc/sysctl.d/90-weft.conf",
    }];
  }
  return [{
    check: "br-netfilter",
    level: "ok",
    message: "net.bridge.bridge-nf-call-iptables is 1",
  }];
}

/**
 * Strict reverse-path filtering on the overlay device (the kernel uses the
 * higher of `all` and the device's value).
 *
 * @param sysctl A sysctl's value by path.
 * @param device The overlay device (none: nothing to check).
 * @returns Findings.
 */
export function checkRpFilter(
  sysctl: (path: string) => string | null,
  device: string | null,
): Finding[] {
  if (device === null) {
    return [{ check: "rp-filter", level: "skip", message: "no overlay device for this backend" }];
  }
  const devPath = `/proc/sys/net/ipv4/conf/${device.replaceAll(".", "/")}/rp_filter`;
  const dev = sysctl(`/proc/sys/net/ipv4/conf/${device}/rp_filter`) ?? sysctl(devPath);
  if (dev === null) {
    return [{
      check: "rp-filter",
      level: "skip",
      message: `${device} does not exist (is weft running?)`,
    }];
  }
  const all = sysctl("/proc/sys/net/ipv4/conf/all/rp_filter") ?? "0";
  const effective = Math.max(Number(dev), Number(all));
  if (effective === 1) {
    const name = `net.ipv4.conf.${device.replaceAll(".", "/")}.rp_filter`;
    return [{
      check: "rp-filter",
      level: "warn",
      message:
        `strict reverse-path filtering on ${device} (${name}=${dev}, net.ipv4.conf.all.rp_filter=${all}): packets from pods whose replies would leave by another path (a peer not routed yet, a second interface, direct server return) are dropped`,
      fix: `sysctl -w ${name}=2${all === "1" ? " net.ipv4.conf.all.rp_filter=2" : ""} (loose)`,
    }];
  }
  return [{
    check: "rp-filter",
    level: "ok",
    message: `rp_filter on ${device} is ${effective} (not strict)`,
  }];
}

/**
 * The overlay MTU against the underlay: the overlay's packets plus the
 * encapsulation must fit the external interface.
 *
 * @param links The host's links.
 * @param ext The external interface's name.
 * @param backend What the backend needs.
 * @param subnetEnvMtu FLANNEL_MTU from subnet.env, if there is one.
 * @returns Findings.
 */
export function checkMtu(
  links: readonly LinkFact[],
  ext: string,
  backend: BackendFacts,
  subnetEnvMtu: number | null,
): Finding[] {
  const e = links.find((l) => l.name === ext);
  if (!e) return [{ check: "mtu", level: "skip", message: `no interface ${ext}` }];
  const max = e.mtu - backend.overhead;
  const out: Finding[] = [];
  const dev = backend.device === null ? undefined : links.find((l) => l.name === backend.device);
  if (dev && dev.mtu > max) {
    out.push({
      check: "mtu",
      level: "error",
      message:
        `${dev.name} has MTU ${dev.mtu} but ${ext}'s MTU ${e.mtu} leaves ${max} after the ${backend.overhead} bytes of ${backend.type} encapsulation: larger packets are dropped`,
      fix:
        `ip link set ${dev.name} mtu ${max} (weft sets it so when it creates the device: restart it)`,
    });
  }
  if (subnetEnvMtu !== null && subnetEnvMtu > max) {
    out.push({
      check: "mtu",
      level: "error",
      message:
        `subnet.env says FLANNEL_MTU=${subnetEnvMtu} but ${ext}'s MTU ${e.mtu} leaves ${max} for ${backend.type}: pods send packets the overlay drops`,
      fix: `restart weft to rewrite subnet.env, then recreate pods (or set their MTU to ${max})`,
    });
  }
  if (out.length === 0) {
    out.push({
      check: "mtu",
      level: "ok",
      message: `overlay MTU fits ${ext}'s MTU ${e.mtu} (at most ${max})`,
    });
  }
  return out;
}

/** Whether a kernel release (`5.4.0-150-generic`) is older than major.minor. */
export function kernelOlderThan(release: string, major: number, minor: number): boolean {
  const m = /^(\d+)\.(\d+)/.exec(release);
  if (!m) return false;
  return Number(m[1]) < major || (Number(m[1]) === major && Number(m[2]) < minor);
}

/**
 * The VXLAN UDP checksum bug: on kernels before 5.7, VXLAN packets that
 * iptables NATs (kube-proxy's MASQUERADE --random-fully) leave with a wrong
 * UDP checksum when the device offloads it (`tx-checksum-ip-generic`), and
 * the receiver drops them ("UDP: bad checksum" in its dmesg). Calico turns
 * the offload off on such kernels; flannel documents the same fix.
 *
 * @param release The kernel release.
 * @param device The vxlan device (none: not vxlan).
 * @param offload `tx-checksum-ip-generic` of the device (null: no device or no ethtool).
 * @returns Findings.
 */
export function checkVxlanChecksum(
  release: string,
  device: string | null,
  offload: boolean | null,
): Finding[] {
  const check = "vxlan-checksum";
  if (device === null) return [{ check, level: "skip", message: "not a vxlan backend" }];
  if (offload === null) {
    return [{
      check,
      level: "skip",
      message: `cannot read ${device}'s offloads (no device, or no ethtool)`,
    }];
  }
  if (!kernelOlderThan(release, 5, 7)) {
    return [{
      check,
      level: "ok",
      message: `kernel ${release} computes VXLAN checksums after NAT correctly (fixed in 5.7)`,
    }];
  }
  if (!offload) {
    return [{
      check,
      level: "ok",
      message: `${device} does not offload UDP checksums (kernel ${release} needs that)`,
    }];
  }
  return [{
    check,
    level: "warn",
    message:
      `kernel ${release} (before 5.7) sends NATed VXLAN packets with a bad UDP checksum while ${device} offloads it (tx-checksum-ip-generic on): receivers drop them ("UDP: bad checksum" in dmesg), e.g. service traffic to pods on other hosts`,
    fix:
      `ethtool -K ${device} tx-checksum-ip-generic off; to keep it: a udev rule SUBSYSTEM=="net", ACTION=="add|change|move", ENV{INTERFACE}=="${device}", RUN+="/usr/sbin/ethtool -K ${device} tx-checksum-ip-generic off"`,
  }];
}

/**
 * Another process holding the backend's UDP port.
 *
 * @param holders Sockets bound to the port.
 * @param backend What the backend needs.
 * @returns Findings.
 */
export function checkPort(holders: readonly UdpHolder[], backend: BackendFacts): Finding[] {
  const check = "port";
  if (backend.port === null) {
    return [{ check, level: "skip", message: `${backend.type} uses no UDP port` }];
  }
  const others = holders.filter((h) =>
    h.port === backend.port && h.pid !== undefined &&
    !/\bweft\b|mod\.ts|weft\.js/.test(h.cmdline ?? "")
  );
  if (others.length === 0) {
    return [{ check, level: "ok", message: `UDP port ${backend.port} is free or weft's` }];
  }
  return others.map((h) => ({
    check,
    level: "error" as const,
    message:
      `UDP port ${backend.port}, which the ${backend.type} backend needs, is held by pid ${h.pid} (${
        h.comm ?? "?"
      }${h.cmdline ? `: ${h.cmdline}` : ""})${
        backend.type === "vxlan" ? `: ${backend.device} cannot be created` : ""
      }`,
    fix:
      `stop that process (kill ${h.pid}) — is flanneld or another overlay running? — or move weft to another port with Backend.Port in the network config (on every host)`,
  }));
}

const contains = (outer: IPv4Net, inner: IPv4Net) =>
  inner.prefixLen >= outer.prefixLen &&
  (outer.prefixLen === 0 ||
    (inner.ip >>> (32 - outer.prefixLen)) === (outer.ip >>> (32 - outer.prefixLen)));

const cidrKey = (n: IPv4Net) => `${n.ip}/${n.prefixLen}`;

/**
 * Routes inside `Network` that are not weft's: they take pod traffic away
 * from the overlay (a more specific route wins).
 *
 * @param routes The main table.
 * @param network The cluster Network.
 * @param leases Subnets of every lease (own and peers).
 * @param overlayDevices Devices whose routes are weft's (flannel.1, flannel0, cni0, docker0).
 * @returns Findings.
 */
export function checkRoutes(
  routes: readonly RouteFact[],
  network: IPv4Net,
  leases: readonly IPv4Net[],
  overlayDevices: readonly string[],
): Finding[] {
  const leaseKeys = new Set(leases.map(cidrKey));
  const out: Finding[] = [];
  for (const r of routes) {
    if (r.dst === "default") continue;
    let dst: IPv4Net;
    try {
      dst = parseIPv4Net(r.dst.includes("/") ? r.dst : `${r.dst}/32`);
    } catch {
      continue;
    }
    if (!contains(network, dst)) continue;
    if (r.dev !== undefined && overlayDevices.includes(r.dev)) continue;
    // host-gw peers' routes and blackhole routes of leases (--ip-blackhole-route)
    if (
      leaseKeys.has(cidrKey(dst)) || (r.type === "blackhole" && cidrKey(dst) === cidrKey(network))
    ) continue;
    const text = [
      r.type && r.type !== "unicast" ? r.type : "",
      r.dst,
      r.gateway ? `via ${r.gateway}` : "",
      r.dev ? `dev ${r.dev}` : "",
    ]
      .filter(Boolean).join(" ");
    out.push({
      check: "routes",
      level: "error",
      message: `route "${text}" lies inside Network ${
        fmt(network)
      } and belongs to no lease: traffic for those pods goes there instead of over the overlay`,
      fix: `ip route del ${r.dst}${
        r.dev ? ` dev ${r.dev}` : ""
      } (and remove it where it is configured), or choose a Network that does not overlap this host's networks`,
    });
  }
  if (out.length === 0) {
    out.push({ check: "routes", level: "ok", message: `no foreign route inside ${fmt(network)}` });
  }
  return out;
}

/**
 * Clock skew against the store's clock (its HTTP `Date`).
 *
 * @param localMs Local time at the answer, ms.
 * @param storeDate The store's `Date` header.
 * @param maxSkewMs Largest skew that passes.
 * @returns Findings.
 */
export function checkClock(localMs: number, storeDate: string | null, maxSkewMs = 5000): Finding[] {
  if (storeDate === null) {
    return [{ check: "clock", level: "skip", message: "the store sent no Date header" }];
  }
  const store = Date.parse(storeDate);
  if (Number.isNaN(store)) {
    return [{
      check: "clock",
      level: "skip",
      message: `cannot read the store's Date ${JSON.stringify(storeDate)}`,
    }];
  }
  // Date has whole seconds: up to 1 s is rounding
  const skew = localMs - store;
  if (Math.abs(skew) <= maxSkewMs + 1000) {
    return [{
      check: "clock",
      level: "ok",
      message: `clock within ${Math.ceil(Math.abs(skew) / 1000)} s of the store's`,
    }];
  }
  return [{
    check: "clock",
    level: "warn",
    message: `this host's clock is ${Math.round(Math.abs(skew) / 1000)} s ${
      skew > 0 ? "ahead of" : "behind"
    } the store's (${storeDate}): lease expiry times and renewals are off by as much`,
    fix:
      "synchronise the clock: timedatectl set-ntp true (or run chronyd / systemd-timesyncd) on this host and the store's",
  }];
}

/**
 * Peers reachable on the underlay but not through the overlay (the
 * backend's port is blocked), or not at all.
 *
 * @param probes One per peer.
 * @param backend What the backend needs.
 * @returns Findings.
 */
export function checkPeers(probes: readonly PeerProbe[], backend: BackendFacts): Finding[] {
  const out: Finding[] = [];
  const via = backend.port === null ? backend.type : `${backend.type} (UDP ${backend.port})`;
  for (const p of probes) {
    if (!p.underlay) {
      out.push({
        check: "peers",
        level: "error",
        message: `peer ${p.subnet} does not answer ping at its public IP ${p.publicIP}`,
        fix:
          `check that ${p.publicIP} is up and routable from here (and that ICMP is allowed), or that its lease's public IP is right (--public-ip)`,
      });
    } else if (p.overlay === false) {
      out.push({
        check: "peers",
        level: "error",
        message:
          `peer ${p.subnet} answers at ${p.publicIP} but not through the overlay: ${via} traffic between this host and it is blocked or its agent is down`,
        fix: backend.port === null
          ? `check that the peer's weft runs and that both hosts are on one L2 segment (host-gw)`
          : `allow UDP ${backend.port} between the hosts (firewall, security group), and check that the peer's weft runs`,
      });
    }
  }
  const good = probes.filter((p) => p.underlay && p.overlay !== false).length;
  if (out.length === 0) {
    out.push({
      check: "peers",
      level: probes.length ? "ok" : "skip",
      message: probes.length
        ? `${good} ${good === 1 ? "peer answers" : "peers answer"} through ${via}`
        : "no peers",
    });
  }
  return out;
}
