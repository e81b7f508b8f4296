// Interface choice against a real kernel: a child process inside a throwaway namespace reads
// /sys/class/net, getifaddrs, /proc/net/if_inet6 and the route files of that namespace; and the
// IPv4 address flags rtnetlink reports, which order addresses as flannel does.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { evalCommand, REPO_ROOT } from "../test/lab/lab.ts";
import { createNetns, deleteNetns, nsRun, run, sweepNetns } from "../testing/netns.ts";
import { formatIPv4 } from "../core/ip.ts";
import { type ExternalInterface, type InterfaceFlags, preferredIPv4Order } from "./iface.ts";
import { openNetlinkClient } from "./netlink/client.ts";

const PREFIX = "wif";

/** Run pickExternalInterface(flags) in `ns`, in a child process. */
function pickIn(ns: string, flags: InterfaceFlags): Promise<ExternalInterface | { error: string }> {
  const { cmd, args } = evalCommand(
    `import { pickExternalInterface } from ${
      JSON.stringify(new URL("./iface.ts", import.meta.url).href)
    };
try { console.log(JSON.stringify(pickExternalInterface(${JSON.stringify(flags)}))); }
catch (e) { console.log(JSON.stringify({ error: e.message })); }`,
  );
  return new Promise((resolve, reject) =>
    execFile(
      "ip",
      ["netns", "exec", ns, cmd, ...args],
      { cwd: REPO_ROOT },
      (e, out, err) => e ? reject(new Error(`${e.message}\n${err}`)) : resolve(JSON.parse(out)),
    )
  );
}

Deno.test("pickExternalInterface() reads IPv6 addresses and routes of its own namespace", async () => {
  sweepNetns(PREFIX);
  const ns = createNetns(PREFIX, "h");
  try {
    const ip = (...a: string[]) => run("ip", ["-n", ns, ...a]);
    // eth0: dual stack, default routes of both families; eth1: IPv6 only, one routed prefix
    ip("link", "add", "eth0", "type", "veth", "peer", "name", "peer0");
    ip("link", "add", "eth1", "type", "veth", "peer", "name", "peer1");
    for (const d of ["eth0", "peer0", "eth1", "peer1"]) ip("link", "set", d, "up");
    ip("addr", "add", "192.0.2.10/24", "dev", "eth0");
    // a deprecated address first, then the one to use
    ip("-6", "addr", "add", "2001:db8::5/64", "dev", "eth0", "nodad", "preferred_lft", "0");
    ip("-6", "addr", "add", "fd00:1::10/64", "dev", "eth0", "nodad");
    ip("-6", "addr", "add", "2001:db8:2::7/64", "dev", "eth1", "nodad");
    ip("route", "add", "default", "via", "192.0.2.1", "dev", "eth0");
    ip("-6", "route", "add", "default", "via", "fd00:1::1", "dev", "eth0");
    ip("-6", "route", "add", "2001:db8:99::/48", "via", "2001:db8:2::1", "dev", "eth1");

    const dual = await pickIn(ns, { families: { ipv4: true, ipv6: true } });
    assert.deepEqual({ ...dual, index: 0 }, {
      name: "eth0",
      index: 0,
      mtu: 1500,
      ifaceAddr: "192.0.2.10",
      extAddr: "192.0.2.10",
      ifaceV6Addr: "fd00:1::10",
      extV6Addr: "fd00:1::10",
    });
    assert.ok((dual as ExternalInterface).index > 0, "the kernel's ifindex");

    const v6 = await pickIn(ns, {
      families: { ipv4: false, ipv6: true },
      ifaceCanReach: "2001:db8:99::1",
      publicIPv6: "2001:db8:ff::7",
    });
    assert.deepEqual({ ...v6, index: 0 }, {
      name: "eth1",
      index: 0,
      mtu: 1500,
      ifaceAddr: "",
      extAddr: "",
      ifaceV6Addr: "2001:db8:2::7",
      extV6Addr: "2001:db8:ff::7",
    });

    // IPv6-only without an IPv6 default route: two candidates, so it must be named
    ip("-6", "route", "del", "default", "via", "fd00:1::1", "dev", "eth0");
    const none = await pickIn(ns, { families: { ipv4: false, ipv6: true } });
    assert.match((none as { error: string }).error, /there is no IPv6 default route/);
    const named = await pickIn(ns, { families: { ipv4: false, ipv6: true }, iface: ["eth1"] });
    assert.equal((named as ExternalInterface).ifaceV6Addr, "2001:db8:2::7");
  } finally {
    deleteNetns(ns);
  }
});

Deno.test({
  name: "the kernel's address flags (rtnetlink) order a DHCP address after a static one",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    sweepNetns("wia");
    const ns = createNetns("wia");
    const client = await openNetlinkClient({ netns: ns });
    try {
      nsRun(ns, "ip", "link", "add", "br0", "type", "bridge");
      // as a DHCP client adds it: with lifetimes (dynamic), then a static secondary, a deprecated one
      nsRun(
        ns,
        "ip",
        "addr",
        "add",
        "192.0.2.50/24",
        "dev",
        "br0",
        "valid_lft",
        "600",
        "preferred_lft",
        "600",
      );
      nsRun(ns, "ip", "addr", "add", "192.0.2.60/24", "dev", "br0");
      nsRun(ns, "ip", "addr", "add", "192.0.2.70/24", "dev", "br0", "preferred_lft", "0");
      const br = (await client.getLink("br0"))!;
      const facts = (await client.listAddresses(br.index)).map((a) => ({
        ip: formatIPv4(a.ip),
        flags: a.flags ?? 0,
      }));
      assert.deepEqual(facts.map((f) => f.ip), ["192.0.2.50", "192.0.2.60", "192.0.2.70"]);
      assert.deepEqual(preferredIPv4Order(facts), ["192.0.2.60", "192.0.2.50"]);
    } finally {
      client.close();
      deleteNetns(ns);
    }
  },
});
