/**
 * Pods wired by the real CNI bridge + host-local plugins from weft's
 * subnet.env, with flannel's mapping; masquerade by weft's rules where
 * FLANNEL_IPMASQ=true, by the bridge plugin where it is false.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { netnsExec } from "../../core/exec.ts";
import { ensureMasqRules } from "../../datapath/masq.ts";
import { parseIPv4Net, parseIPv6Net } from "../../core/ip.ts";
import { parseSubnetEnv, renderSubnetEnv } from "../../lease/subnet_env.ts";
import { cniAdd, cniDel, flannelDelegateConfig } from "./cni.ts";
import { createLab } from "./lab.ts";

const network = parseIPv4Net("10.5.0.0/16");

Deno.test("flannelDelegateConfig() maps subnet.env the way flannel's CNI plugin does", () => {
  const env = parseSubnetEnv(
    renderSubnetEnv({
      network,
      subnet: parseIPv4Net("10.5.52.0/24"),
      ipv6Network: parseIPv6Net("fd00:12::/48"),
      ipv6Subnet: parseIPv6Net("fd00:12:13::/64"),
      mtu: 1450,
      ipMasq: true,
    }),
  );
  assert.deepEqual(flannelDelegateConfig(env, { ipam: { dataDir: "/d" } }), {
    hairpinMode: true,
    isDefaultGateway: true,
    name: "cbr0",
    type: "bridge",
    ipMasq: false,
    mtu: 1450,
    isGateway: true,
    cniVersion: "0.3.1",
    ipam: {
      dataDir: "/d",
      type: "host-local",
      ranges: [[{ subnet: "10.5.52.0/24" }], [{ subnet: "fd00:12:13::/64" }]],
      routes: [{ dst: "10.5.0.0/16" }, { dst: "fd00:12::/48" }],
    },
  });
  // the conf's own delegate keys win; routes from the conf's ipam are kept first
  const custom = flannelDelegateConfig({ ...env, ipMasq: false }, {
    delegate: { mtu: 1400, isGateway: false },
    ipam: { routes: [{ dst: "192.168.0.0/16" }] },
  });
  assert.equal(custom.mtu, 1400);
  assert.equal(custom.isGateway, false);
  assert.equal(custom.ipMasq, true);
  assert.deepEqual((custom.ipam as { routes: unknown[] }).routes.slice(0, 2), [
    { dst: "192.168.0.0/16" },
    { dst: "10.5.0.0/16" },
  ]);
});

Deno.test("CNI bridge + host-local: pods across hosts, weft masquerade vs bridge ipMasq, DEL", async () => {
  const lab = await createLab({ prefix: "wlb", hosts: 2, podsPerHost: 2, internet: true });
  try {
    const [h1, h2] = lab.hosts;
    const files: string[] = [];
    // host 1: weft masquerades (FLANNEL_IPMASQ=true); host 2: it does not, so the bridge must
    for (const [i, h] of lab.hosts.entries()) {
      const file = path.join(lab.dir, `${h.ns}.env`);
      fs.writeFileSync(
        file,
        renderSubnetEnv({
          network,
          subnet: parseIPv4Net(`10.5.${i + 1}.0/24`),
          mtu: 1450,
          ipMasq: i === 0,
        }),
      );
      files.push(file);
      await lab.run(h.ns, `ip route add 10.5.${2 - i}.0/24 via ${lab.hosts[1 - i].ip}`);
    }
    const opts = (hostIdx: number, pod: number) => ({
      hostNs: lab.hosts[hostIdx].ns,
      podNs: lab.hosts[hostIdx].pods[pod].ns,
      subnetFile: files[hostIdx],
      dataDir: path.join(lab.dir, "cni", lab.hosts[hostIdx].ns),
    });
    const r11 = await cniAdd(opts(0, 0));
    const r12 = await cniAdd(opts(0, 1));
    const r21 = await cniAdd(opts(1, 0));
    const ip = (r: { ips: { address: string }[] }) => r.ips[0].address.split("/")[0];
    assert.equal(r11.ips[0].address, "10.5.1.2/24");
    assert.equal(r11.ips[0].gateway, "10.5.1.1");
    assert.equal(ip(r12), "10.5.1.3");
    assert.equal(ip(r21), "10.5.2.2");

    assert.match(await lab.run(h1.ns, "ip -o addr show dev cni0"), /inet 10\.5\.1\.1\/24/);
    const pod11 = h1.pods[0].ns;
    assert.match(await lab.run(pod11, "ip -o link show dev eth0"), /mtu 1450/);
    const routes = await lab.run(pod11, "ip route");
    assert.match(routes, /10\.5\.0\.0\/16 via 10\.5\.1\.1 dev eth0/);
    assert.match(routes, /default via 10\.5\.1\.1 dev eth0/);

    assert.ok(await lab.ping(pod11, ip(r12)), "same host");
    assert.ok(await lab.ping(pod11, ip(r21)), "across hosts");

    // FLANNEL_IPMASQ=true → the bridge plugin left NAT to weft; false → it installed its own
    assert.doesNotMatch(await lab.run(h1.ns, "iptables -t nat -S"), /CNI-/);
    assert.match(await lab.run(h2.ns, "iptables -t nat -S"), /CNI-/);
    assert.ok(await lab.ping(h2.pods[0].ns, lab.internet!.ip), "bridge ipMasq NATs host 2's pod");
    assert.ok(!await lab.ping(pod11, lab.internet!.ip, { timeoutSeconds: 1 }));
    await ensureMasqRules({
      network,
      subnet: parseIPv4Net("10.5.1.0/24"),
      exec: netnsExec(h1.ns),
    });
    assert.ok(await lab.ping(pod11, lab.internet!.ip), "weft's masquerade NATs host 1's pod");

    await cniDel(opts(0, 1));
    assert.doesNotMatch(await lab.run(h1.pods[1].ns, "ip -o link"), /eth0/);
    const again = await cniAdd(opts(0, 1));
    assert.equal(ip(again), "10.5.1.4", "host-local hands out the next address, not a live one");
    assert.ok(!fs.readdirSync(path.join(lab.dir, "cni", h1.ns, "cbr0")).includes("10.5.1.3"));
  } finally {
    await lab.teardown();
  }
});
