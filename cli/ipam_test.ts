import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { formatIPv4, parseIPv4, parseIPv4Net } from "../core/ip.ts";
import { execPath, runtimeName } from "../core/runtime.ts";
import {
  AddressExhaustedError,
  allocateAddress,
  listAddresses,
  pickFreeAddress,
  releaseAddress,
} from "./ipam.ts";

const subnet = parseIPv4Net("10.5.52.0/24");
const gateway = parseIPv4("10.5.52.1");

function tempDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), "wlb-ipam-"));
}

/** A file standing in for a pod's netns file (allocations of vanished namespaces are reclaimed). */
function fakeNetns(dir: string, name: string): string {
  const p = path.join(dir, `ns-${name}`);
  fs.writeFileSync(p, "");
  return p;
}

Deno.test("pickFreeAddress() skips network, gateway, broadcast and used addresses", () => {
  const table: [string, string, string[], string | undefined][] = [
    ["10.5.52.0/24", "10.5.52.1", [], "10.5.52.2"],
    ["10.5.52.0/24", "10.5.52.1", ["10.5.52.2", "10.5.52.3"], "10.5.52.4"],
    ["10.5.52.0/30", "10.5.52.1", [], "10.5.52.2"],
    ["10.5.52.0/30", "10.5.52.1", ["10.5.52.2"], undefined],
    ["255.255.255.0/24", "255.255.255.1", [], "255.255.255.2"],
  ];
  for (const [net, gw, used, want] of table) {
    const got = pickFreeAddress(parseIPv4Net(net), parseIPv4(gw), new Set(used.map(parseIPv4)));
    assert.equal(got === undefined ? undefined : formatIPv4(got), want, `${net} ${used}`);
  }
  assert.throws(() => pickFreeAddress(parseIPv4Net("10.5.52.0/31"), 0, new Set()), RangeError);
});

Deno.test("allocateAddress() gives distinct addresses to concurrent callers and the same one to a repeat", async () => {
  const dir = tempDir();
  try {
    const owners = Array.from({ length: 20 }, (_, i) => ({
      netns: fakeNetns(dir, `p${i}`),
      ifname: "eth0",
      hostVeth: `veth${i}`,
    }));
    const ips = await Promise.all(
      owners.map((owner) => allocateAddress({ dir, subnet, gateway, owner })),
    );
    assert.equal(new Set(ips).size, 20);
    assert.ok(!ips.includes(gateway));
    assert.equal(await allocateAddress({ dir, subnet, gateway, owner: owners[7] }), ips[7]);
    assert.equal(Object.keys(listAddresses(dir, subnet)).length, 20);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

Deno.test("allocateAddress() never hands out one address twice across processes", async () => {
  const dir = tempDir();
  try {
    const script = path.join(dir, "alloc.ts");
    const mod = new URL("./ipam.ts", import.meta.url).href;
    const ipmod = new URL("../core/ip.ts", import.meta.url).href;
    fs.writeFileSync(
      script,
      `import { allocateAddress } from ${JSON.stringify(mod)};
import { formatIPv4, parseIPv4, parseIPv4Net } from ${JSON.stringify(ipmod)};
import * as fs from "node:fs";
const [dir, tag] = [process.argv.at(-2), process.argv.at(-1)];
const out = [];
for (let i = 0; i < 8; i++) {
  const netns = dir + "/ns-" + tag + "-" + i;
  fs.writeFileSync(netns, "");
  out.push(formatIPv4(await allocateAddress({ dir, subnet: parseIPv4Net("10.5.52.0/24"),
    gateway: parseIPv4("10.5.52.1"), owner: { netns, ifname: "eth0", hostVeth: "v" } })));
}
console.log(out.join(" "));
`,
    );
    const args = (tag: string) =>
      runtimeName === "deno" ? ["run", "-A", script, dir, tag] : [script, dir, tag];
    const outputs = await Promise.all(
      ["a", "b", "c"].map((tag) =>
        new Promise<string>((resolve, reject) =>
          execFile(
            execPath(),
            args(tag),
            (err, stdout, stderr) =>
              err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout),
          )
        )
      ),
    );
    const all = outputs.join(" ").trim().split(/\s+/);
    assert.equal(all.length, 24);
    assert.equal(new Set(all).size, 24, `duplicates in ${all.join(" ")}`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

Deno.test("allocateAddress() reclaims addresses of vanished namespaces and reports exhaustion", async () => {
  const dir = tempDir();
  try {
    const small = parseIPv4Net("10.5.52.0/29"); // .2 … .6 usable besides the gateway .1
    const owners = [2, 3, 4, 5, 6].map((i) => ({
      netns: fakeNetns(dir, `q${i}`),
      ifname: "eth0",
      hostVeth: `v${i}`,
    }));
    for (const owner of owners) await allocateAddress({ dir, subnet: small, gateway, owner });
    const extra = { netns: fakeNetns(dir, "extra"), ifname: "eth0", hostVeth: "vx" };
    await assert.rejects(
      () => allocateAddress({ dir, subnet: small, gateway, owner: extra }),
      AddressExhaustedError,
    );
    fs.rmSync(owners[1].netns);
    assert.equal(
      formatIPv4(await allocateAddress({ dir, subnet: small, gateway, owner: extra })),
      "10.5.52.3",
    );
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

Deno.test("releaseAddress() frees the owner's address and returns its record", async () => {
  const dir = tempDir();
  try {
    const owner = { netns: fakeNetns(dir, "r"), ifname: "eth0", hostVeth: "vethr" };
    const ip = await allocateAddress({ dir, subnet, gateway, owner });
    const released = await releaseAddress({ dir, netns: owner.netns, ifname: "eth0" });
    assert.deepEqual(released, { ip, owner });
    assert.equal(await releaseAddress({ dir, netns: owner.netns, ifname: "eth0" }), undefined);
    assert.deepEqual(listAddresses(dir, subnet), {});
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
