/**
 * `weft attach` on a real kernel: pods of one lab host attached to cni0
 * from a subnet.env, concurrently, in-process and from separate processes
 * running inside the host namespace (as `ip netns exec h1 weft attach …` would).
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import process from "node:process";
import { AttachError, attachPod, detachPod } from "../../cli/attach.ts";
import { netnsExec } from "../../core/exec.ts";
import { listAddresses } from "../../cli/ipam.ts";
import { parseIPv4Net } from "../../core/ip.ts";
import { renderSubnetEnv } from "../../lease/subnet_env.ts";
import { createLab, evalCommand, REPO_ROOT } from "./lab.ts";

const network = parseIPv4Net("10.5.0.0/16");
const subnet = parseIPv4Net("10.5.7.0/24");

Deno.test("attachPod(): concurrent attaches get distinct addresses; pods on one host reach each other", async () => {
  const lab = await createLab({ prefix: "wlb", hosts: 1, podsPerHost: 4 });
  try {
    const host = lab.hosts[0];
    const subnetFile = path.join(lab.dir, "subnet.env");
    fs.writeFileSync(subnetFile, renderSubnetEnv({ network, subnet, mtu: 1450, ipMasq: true }));
    const ipamDir = path.join(lab.dir, "ipam");
    const exec = netnsExec(host.ns);

    // two pods at once, in this process (races on creating cni0 and on the IPAM file)
    const [a, b] = await Promise.all(
      host.pods.slice(0, 2).map((p) => attachPod({ netns: p.ns, subnetFile, ipamDir, exec })),
    );
    // two more at once from separate processes running inside the host namespace
    const code = `import { attachPod } from ${
      JSON.stringify(new URL("../../cli/attach.ts", import.meta.url).href)
    };
const o = JSON.parse(process.env.WLB_ATTACH);
console.log(JSON.stringify(await attachPod(o)));`;
    const { cmd, args } = evalCommand(code);
    const [c, d] = await Promise.all(
      host.pods.slice(2).map((p) =>
        new Promise<{ ip: string }>((resolve, reject) =>
          execFile(
            "ip",
            ["netns", "exec", host.ns, cmd, ...args],
            {
              cwd: REPO_ROOT,
              env: {
                ...process.env,
                WLB_ATTACH: JSON.stringify({ netns: p.ns, subnetFile, ipamDir }),
              },
            },
            (err, stdout, stderr) =>
              err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(JSON.parse(stdout)),
          )
        )
      ),
    );
    const ips = [a.ip, b.ip, c.ip, d.ip];
    assert.equal(new Set(ips).size, 4, `addresses ${ips.join(" ")}`);
    assert.ok(ips.every((ip) => /^10\.5\.7\.([2-9]|\d\d+)$/.test(ip)), ips.join(" "));
    assert.equal(Object.keys(listAddresses(ipamDir, subnet)).length, 4);

    // the kernel state the module note promises
    assert.match(await lab.run(host.ns, "ip -o addr show dev cni0"), /inet 10\.5\.7\.1\/24/);
    const pod0 = host.pods[0].ns;
    assert.match(await lab.run(pod0, "ip -o link show dev eth0"), /mtu 1450/);
    assert.match(await lab.run(pod0, "ip -o addr show dev eth0"), new RegExp(`inet ${a.ip}/24`));
    assert.match(await lab.run(pod0, "ip route show default"), /default via 10\.5\.7\.1 dev eth0/);
    assert.match(
      await lab.run(host.ns, `ip -o link show dev ${a.hostVeth}`),
      /mtu 1450 .*master cni0/,
    );
    assert.ok(a.hostVeth.length <= 15);

    for (const [i, pod] of host.pods.entries()) {
      const other = ips[(i + 1) % 4];
      assert.ok(await lab.ping(pod.ns, other), `${pod.ns} → ${other}`);
    }
    assert.ok(await lab.ping(pod0, "10.5.7.1"), "gateway answers");
    assert.ok(await lab.ping(pod0, host.ip), "the host's underlay address via the default route");

    // attaching again returns the same attachment
    const again = await attachPod({ netns: pod0, subnetFile, ipamDir, exec });
    assert.deepEqual(again, a);

    // detach frees the link and the address; the next attach reuses it
    assert.equal(await detachPod({ netns: pod0, ipamDir, exec }), true);
    assert.equal((await lab.exec(host.ns, `ip link show dev ${a.hostVeth}`)).code, 1);
    assert.doesNotMatch(await lab.run(pod0, "ip -o link"), /eth0/);
    assert.equal(await detachPod({ netns: pod0, ipamDir, exec }), false);
    const re = await attachPod({ netns: pod0, subnetFile, ipamDir, exec });
    assert.equal(re.ip, a.ip);
  } finally {
    await lab.teardown();
  }
});

Deno.test("attachPod() explains a missing namespace, a missing subnet.env and a bridge of another subnet", async () => {
  const lab = await createLab({ prefix: "wlb", hosts: 1, podsPerHost: 1 });
  try {
    const host = lab.hosts[0];
    const exec = netnsExec(host.ns);
    const ipamDir = path.join(lab.dir, "ipam");
    const subnetFile = path.join(lab.dir, "subnet.env");
    const pod = host.pods[0].ns;
    await assert.rejects(
      () => attachPod({ netns: pod, subnetFile, ipamDir, exec }),
      (e: Error) => e instanceof AttachError && /start the weft agent first/.test(e.message),
    );
    fs.writeFileSync(subnetFile, renderSubnetEnv({ network, subnet, mtu: 1450, ipMasq: true }));
    await assert.rejects(
      () => attachPod({ netns: `${lab.id}-nope`, subnetFile, ipamDir, exec }),
      /does not exist; create it with 'ip netns add/,
    );
    await lab.run(host.ns, "ip link add cni0 type bridge");
    await lab.run(host.ns, "ip addr add 10.5.3.1/24 dev cni0");
    await assert.rejects(
      () => attachPod({ netns: pod, subnetFile, ipamDir, exec }),
      /bridge cni0 has 10\.5\.3\.1\/24 but this host's subnet gateway is 10\.5\.7\.1\/24/,
    );
    assert.deepEqual(listAddresses(ipamDir, subnet), {}, "nothing reserved on failure");
  } finally {
    await lab.teardown();
  }
});
