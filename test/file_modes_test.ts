/**
 * Every file weft writes has a deliberate mode, whatever the umask it runs
 * under (systemd's `UMask=`, a container's 0000): the files others must
 * read (subnet.env for the CNI plugin, the docker-opts output, the lease file, the IPAM files) are
 * 0644, the extension backend's state (it holds the commands' inputs) and
 * the lock files are 0600, and no directory weft creates is writable by
 * group or others (a world-writable /run/flannel would let any user swap
 * subnet.env, which the CNI plugin trusts).
 *
 * @module
 */

import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import process from "node:process";
import { writeSubnetEnv } from "../lease/subnet_env.ts";
import { createFileLeaseStore } from "../lease/file_store.ts";
import { allocateAddress } from "../cli/ipam.ts";
import { dockerOptsCommand } from "../cli/docker_opts.ts";
import { PeerStateFile } from "../backends/extension/state.ts";
import { withLockFile, writeFileAtomic } from "../core/files.ts";
import { parseIPv4, parseIPv4Net } from "../core/ip.ts";

const mode = (p: string) => fs.statSync(p).mode & 0o777;
const octal = (m: number) => `0${m.toString(8)}`;

/** Run `fn` under `mask`, restoring the umask after. */
async function withUmask(mask: number, fn: () => Promise<void>): Promise<void> {
  const before = process.umask(mask);
  try {
    await fn();
  } finally {
    process.umask(before);
  }
}

/** Directories from `root` (exclusive) down to `file`'s, each not writable by group or others. */
function assertDirsPrivate(root: string, file: string): void {
  for (let d = path.dirname(file); d.startsWith(root) && d !== root; d = path.dirname(d)) {
    assert.equal(mode(d) & 0o022, 0, `directory ${d} is ${octal(mode(d))}: writable by others`);
  }
}

for (const mask of [0o000, 0o022, 0o077]) {
  Deno.test(`files weft writes have their deliberate modes under umask ${octal(mask)}`, async () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), "weft-modes-"));
    try {
      await withUmask(mask, async () => {
        // subnet.env: read by the CNI plugin and docker tooling
        const env = path.join(root, "run/flannel/subnet.env");
        writeSubnetEnv(env, {
          network: parseIPv4Net("10.5.0.0/16"),
          subnet: parseIPv4Net("10.5.1.1/24"),
          mtu: 1450,
          ipMasq: true,
        });
        assert.equal(octal(mode(env)), "0644", "subnet.env");
        assertDirsPrivate(root, env);

        // weft docker-opts' output, made from that subnet.env (read by docker's unit)
        const dockerOpts = path.join(root, "run/docker_opts.env");
        const errs: string[] = [];
        const code = await dockerOptsCommand(["-f", env, "-d", dockerOpts, "-c"], {
          env: {},
          listRoutes: () => Promise.resolve(""),
          stderr: (t) => void errs.push(t),
        });
        assert.equal(code, 0, `weft docker-opts failed: ${errs.join("")}`);
        assert.equal(octal(mode(dockerOpts)), "0644", "docker opts file");
        assertDirsPrivate(root, dockerOpts);

        // the file store's lease file (and its lock, while held)
        const conf = path.join(root, "etc/net-conf.json");
        fs.mkdirSync(path.dirname(conf), { recursive: true, mode: 0o755 });
        fs.writeFileSync(conf, '{"Network":"10.5.0.0/16","Backend":{"Type":"alloc"}}');
        const leases = path.join(root, "var/lib/weft/leases.json");
        const store = createFileLeaseStore({ path: leases, configPath: conf });
        await store.acquire(await store.getNetworkConfig(), { attrs: { publicIP: "192.0.2.1" } });
        await store.close();
        assert.equal(octal(mode(leases)), "0644", "lease file");
        assertDirsPrivate(root, leases);
        const lock = path.join(root, "locks/x/lease.lock");
        await withLockFile(lock, () => {
          assert.equal(octal(mode(lock)), "0600", "lock file");
          assertDirsPrivate(root, lock);
        });

        // the pod IPAM files
        const ipamDir = path.join(root, "var/lib/weft/ipam");
        await allocateAddress({
          dir: ipamDir,
          subnet: parseIPv4Net("10.5.1.0/24"),
          gateway: parseIPv4("10.5.1.1"),
          owner: { netns: "/run/netns/p1", ifname: "eth0", hostVeth: "veth1" },
        });
        const [ipamFile] = fs.readdirSync(ipamDir).filter((f) => !f.endsWith(".lock"));
        assert.equal(octal(mode(path.join(ipamDir, ipamFile))), "0644", "IPAM file");
        assertDirsPrivate(root, path.join(ipamDir, ipamFile));

        // the extension backend's state: snapshot and journal, also when the journal is recreated
        const ext = new PeerStateFile(path.join(root, "run/weft/extension"), "192.0.2.1");
        const peer = {
          subnet: "10.5.2.0/24",
          ipv6Subnet: null,
          publicIP: "192.0.2.2",
          publicIPv6: null,
          backendData: "secret-ish",
        };
        ext.reset({ hostBackendData: null, addCommand: "add" }, new Map());
        ext.set("10.5.2.0-24", peer);
        assert.equal(octal(mode(ext.snapshotPath)), "0600", "extension snapshot");
        assert.equal(octal(mode(ext.journalPath)), "0600", "extension journal");
        fs.rmSync(ext.journalPath);
        ext.set("10.5.3.0-24", { ...peer, subnet: "10.5.3.0/24" });
        assert.equal(octal(mode(ext.journalPath)), "0600", "extension journal, recreated");
        fs.chmodSync(ext.journalPath, 0o644); // left by an older version
        ext.reset({ hostBackendData: null, addCommand: "add" }, new Map());
        assert.equal(octal(mode(ext.journalPath)), "0600", "extension journal, rewritten");
        assertDirsPrivate(root, ext.snapshotPath);

        // writeFileAtomic itself: the mode asked for, exactly
        const f = path.join(root, "deep/er/file");
        writeFileAtomic(f, "x", { mode: 0o640 });
        assert.equal(octal(mode(f)), "0640");
        assertDirsPrivate(root, f);
      });
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
}
