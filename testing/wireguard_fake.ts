/**
 * An in-memory WireGuard driver for the wireguard backend's unit tests: a
 * device is "created" as a TUN link in a {@link FakeDatapath} (as
 * wireguard-go's is) and keeps its key, port and peers as `set` leaves
 * them, with the semantics of the UAPI (peers by public key, an allowed IP
 * moves to the last peer given it, `remove`).
 *
 * @module
 */

import { formatIPv4Net } from "../core/ip.ts";
import type { WireguardDriver } from "../backends/wireguard/driver.ts";
import type { DeviceConfig, DeviceState, PeerState } from "../backends/wireguard/uapi.ts";
import type { FakeDatapath } from "./datapath_fake.ts";

/** The fake driver, with its state and calls open for assertions. */
export class FakeWireguardDriver implements WireguardDriver {
  readonly kind = "userspace" as const;
  /** Devices by name. */
  readonly devices = new Map<
    string,
    { privateKeyHex?: string; listenPort: number; peers: Map<string, PeerState> }
  >();
  /** Every `set`, in order. */
  readonly sets: DeviceConfig[] = [];
  /** How many devices `ensure` created. */
  created = 0;

  /** @param dp The datapath to add the device link to (its MTU and addresses are checked there). */
  constructor(readonly dp: FakeDatapath) {}

  ensure(device: string): Promise<string[]> {
    if (this.devices.has(device)) return Promise.resolve([]);
    this.devices.set(device, { listenPort: 40000, peers: new Map() });
    this.dp.addLink({ name: device, kind: "tun", mtu: 1420, up: false, mac: null });
    this.created++;
    return Promise.resolve([`started ${device}`]);
  }

  get(device: string): Promise<DeviceState> {
    const d = this.devices.get(device);
    if (!d) return Promise.reject(new Error(`no device ${device}`));
    return Promise.resolve({
      ...(d.privateKeyHex ? { privateKeyHex: d.privateKeyHex } : {}),
      listenPort: d.listenPort,
      peers: new Map(d.peers),
    });
  }

  set(device: string, config: DeviceConfig): Promise<void> {
    const d = this.devices.get(device);
    if (!d) return Promise.reject(new Error(`no device ${device}`));
    this.sets.push(config);
    if (config.privateKeyHex !== undefined) d.privateKeyHex = config.privateKeyHex;
    if (config.listenPort !== undefined) d.listenPort = config.listenPort;
    if (config.replacePeers) d.peers.clear();
    for (const p of config.peers) {
      if (p.remove) {
        d.peers.delete(p.publicKey);
        continue;
      }
      const allowed = p.allowedIPs.map(formatIPv4Net).sort();
      for (const [k, other] of d.peers) {
        if (k === p.publicKey) continue;
        d.peers.set(k, {
          ...other,
          allowedIPs: other.allowedIPs.filter((a) => !allowed.includes(a)),
        });
      }
      d.peers.set(p.publicKey, {
        publicKey: p.publicKey,
        ...(p.presharedKey ? { presharedKey: p.presharedKey } : {}),
        ...(p.endpoint ? { endpoint: p.endpoint } : {}),
        keepalive: p.keepalive,
        allowedIPs: allowed,
        lastHandshakeSec: 0,
      });
    }
    return Promise.resolve();
  }
}
