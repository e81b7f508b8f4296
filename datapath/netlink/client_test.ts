/**
 * The rtnetlink kernel client against the real kernel, each case in a
 * throwaway network namespace: links, VXLAN devices, addresses, routes,
 * neighbours, fdb entries, batches with failures, events.
 *
 * @module
 */

import assert from "node:assert/strict";
import { type IPv4Net, parseIPv4, parseIPv4Net } from "../../core/ip.ts";
import { NetlinkBatchError, NetlinkError } from "./error.ts";
import type { Address, KernelEvent, Link, Route } from "./kernel.ts";
import {
  type KernelSubscription,
  type NetlinkClient,
  type NetlinkClientOptions,
  openNetlinkClient,
  settleStep,
} from "./client.ts";
import { createNetns, deleteNetns, nsRun, run, sweepNetns } from "../../testing/netns.ts";

const PREFIX = "wnc";
sweepNetns(PREFIX);

const opts = { sanitizeResources: false, sanitizeOps: false };

interface ClientCase {
  readonly name: string;
  /** Client options beyond the namespace. */
  readonly options?: NetlinkClientOptions;
  readonly fn: (dp: NetlinkClient) => Promise<void>;
}

const ip = parseIPv4;
const net = parseIPv4Net;

/** A bridge `ext0` at 192.0.2.1/24, up: an underlay to hang routes on. */
async function underlay(dp: NetlinkClient): Promise<Link> {
  const br = await dp.createBridge({ name: "ext0", up: true, mtu: 1500 });
  await dp.addAddresses([{ index: br.index, ip: ip("192.0.2.1"), prefixLen: 24 }]);
  return br;
}

async function vxlan(dp: NetlinkClient, ext: Link, up = true): Promise<Link> {
  return await dp.createVxlan({
    name: "flannel.1",
    vni: 1,
    port: 8472,
    local: ip("192.0.2.1"),
    link: ext.index,
    mac: "02:00:00:00:00:01",
    mtu: 1450,
    up,
  });
}

async function rejectsWith(p: Promise<unknown>, code: string): Promise<NetlinkError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof NetlinkError, `expected NetlinkError ${code}, got ${e}`);
    assert.equal(e.code, code, String(e));
    return e;
  }
  throw new assert.AssertionError({ message: `expected a NetlinkError ${code}, but it succeeded` });
}

/** The IPv4 routes inside `prefix`. */
function ours(routes: Route[], prefix: string): (Route & { dst: IPv4Net })[] {
  const p = net(prefix);
  const mask = p.prefixLen === 0 ? 0 : (~0 << (32 - p.prefixLen)) >>> 0;
  return routes.filter((r): r is Route & { dst: IPv4Net } =>
    typeof r.dst.ip === "number" && ((r.dst.ip & mask) >>> 0) === p.ip &&
    r.dst.prefixLen >= p.prefixLen
  );
}

/** The IPv4 addresses of a list (the kernel adds IPv6 link-local ones to devices that are up). */
function v4(addresses: Address[]): Address[] {
  return addresses.filter((a) => typeof a.ip === "number");
}

/**
 * Wait for an event matching `pred`, for at most `ms` milliseconds.
 *
 * @returns The event.
 * @throws {Error} When none arrives in time.
 */
async function waitForEvent(
  it: AsyncIterator<KernelEvent>,
  pred: (e: KernelEvent) => boolean,
  ms = 2000,
): Promise<KernelEvent> {
  const deadline = Date.now() + ms;
  for (;;) {
    const left = deadline - Date.now();
    if (left <= 0) throw new Error(`no matching datapath event within ${ms} ms`);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const r = await Promise.race([
      it.next(),
      new Promise<"timeout">((res) => (timer = setTimeout(() => res("timeout"), left))),
    ]);
    clearTimeout(timer);
    if (r === "timeout") throw new Error(`no matching datapath event within ${ms} ms`);
    if (r.done) throw new Error("event stream ended");
    if (pred(r.value)) return r.value;
  }
}

/** What the kernel client must do, each case in a fresh namespace. */
const cases: readonly ClientCase[] = [
  {
    name: "getLink finds lo by name and index and returns null for a missing link",
    fn: async (dp) => {
      const lo = await dp.getLink("lo");
      assert.ok(lo);
      assert.equal(lo.name, "lo");
      assert.equal((await dp.getLink(lo.index))?.name, "lo");
      assert.equal(await dp.getLink("nope0"), null);
      assert.equal(await dp.getLink(99999), null);
      assert.deepEqual((await dp.listLinks()).map((l) => l.name), ["lo"]);
    },
  },
  {
    name: "createBridge makes an up bridge and a second create fails with EEXIST",
    fn: async (dp) => {
      const br = await dp.createBridge({ name: "br9", up: true, mtu: 1400 });
      assert.equal(br.kind, "bridge");
      assert.equal(br.up, true);
      assert.equal(br.mtu, 1400);
      assert.match(br.mac ?? "", /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
      const e = await rejectsWith(dp.createBridge({ name: "br9" }), "EEXIST");
      assert.match(e.message, /br9/);
    },
  },
  {
    name: "createVxlan reports VNI, local IP, device, port, nolearning, MAC and MTU back",
    fn: async (dp) => {
      const ext = await underlay(dp);
      const vx = await vxlan(dp, ext, false);
      const got = await dp.getLink("flannel.1");
      assert.deepEqual(got, vx);
      assert.equal(vx.kind, "vxlan");
      assert.equal(vx.mac, "02:00:00:00:00:01");
      assert.equal(vx.mtu, 1450);
      assert.equal(vx.up, false);
      assert.deepEqual(vx.vxlan, {
        vni: 1,
        local: ip("192.0.2.1"),
        link: ext.index,
        port: 8472,
        learning: false,
        gbp: false,
      });
      await rejectsWith(vxlan(dp, ext), "EEXIST");
    },
  },
  {
    name: "setLink changes MTU, MAC and state; a missing link gives ENODEV",
    fn: async (dp) => {
      const br = await dp.createBridge({ name: "br9" });
      await dp.setLink(br.index, { up: true, mtu: 1300, mac: "02:00:00:00:00:09" });
      const got = await dp.getLink(br.index);
      assert.equal(got?.up, true);
      assert.equal(got?.mtu, 1300);
      assert.equal(got?.mac, "02:00:00:00:00:09");
      await dp.setLink(br.index, { up: false });
      assert.equal((await dp.getLink(br.index))?.up, false);
      await rejectsWith(dp.setLink(99999, { up: true }), "ENODEV");
    },
  },
  {
    name: "addAddresses is idempotent and deleteAddresses tolerates absent addresses",
    fn: async (dp) => {
      const ext = await underlay(dp);
      const vx = await vxlan(dp, ext);
      const a = { index: vx.index, ip: ip("10.5.1.0"), prefixLen: 32 };
      await dp.addAddresses([a]);
      await dp.addAddresses([a]);
      // a static address: IFA_F_PERMANENT, global scope
      assert.deepEqual(v4(await dp.listAddresses(vx.index)), [{ ...a, flags: 0x80, scope: 0 }]);
      assert.deepEqual(v4(await dp.listAddresses(ext.index)), [
        { index: ext.index, ip: ip("192.0.2.1"), prefixLen: 24, flags: 0x80, scope: 0 },
      ]);
      await dp.deleteAddresses([a]);
      await dp.deleteAddresses([a]);
      assert.deepEqual(v4(await dp.listAddresses(vx.index)), []);
    },
  },
  {
    name: "replaceRoutes installs onlink and gatewayed routes and replaces by destination",
    fn: async (dp) => {
      const ext = await underlay(dp);
      const vx = await vxlan(dp, ext);
      await dp.replaceRoutes([
        { dst: net("10.5.2.0/24"), gateway: ip("10.5.2.0"), index: vx.index, onlink: true },
        { dst: net("10.5.3.0/24"), gateway: ip("192.0.2.3"), index: ext.index },
        { dst: net("10.5.4.0/24"), gateway: ip("192.0.2.4") },
      ]);
      const got = ours(await dp.listRoutes(), "10.5.0.0/16")
        .sort((a, b) => a.dst.ip - b.dst.ip);
      assert.deepEqual(got.map((r) => [r.dst.ip, r.gateway, r.index, r.onlink, r.protocol]), [
        [ip("10.5.2.0"), ip("10.5.2.0"), vx.index, true, 3],
        [ip("10.5.3.0"), ip("192.0.2.3"), ext.index, false, 3],
        [ip("10.5.4.0"), ip("192.0.2.4"), ext.index, false, 3],
      ]);
      // Replacing by destination repoints without duplicating.
      await dp.replaceRoutes([{
        dst: net("10.5.3.0/24"),
        gateway: ip("10.5.3.0"),
        index: vx.index,
        onlink: true,
      }]);
      const again = ours(await dp.listRoutes(), "10.5.3.0/24");
      assert.equal(again.length, 1);
      assert.equal(again[0].gateway, ip("10.5.3.0"));
      assert.equal(again[0].index, vx.index);
      // The connected route of ext0 is listed with protocol kernel, scope link.
      const connected = ours(await dp.listRoutes({ index: ext.index }), "192.0.2.0/24");
      assert.deepEqual(connected.map((r) => [r.gateway, r.protocol, r.scope]), [[null, 2, 253]]);
    },
  },
  {
    name:
      "a gateway off every connected prefix needs onlink (ENETUNREACH) and devices must be up (ENETDOWN)",
    fn: async (dp) => {
      const ext = await underlay(dp);
      const vx = await vxlan(dp, ext, false);
      await rejectsWith(
        dp.replaceRoutes([{ dst: net("10.5.2.0/24"), gateway: ip("10.5.2.0"), index: ext.index }]),
        "ENETUNREACH",
      );
      const e = await rejectsWith(
        dp.replaceRoutes([{
          dst: net("10.5.2.0/24"),
          gateway: ip("10.5.2.0"),
          index: vx.index,
          onlink: true,
        }]),
        "ENETDOWN",
      );
      assert.match(
        e.message,
        /RTM_NEWROUTE replace 10\.5\.2\.0\/24 via 10\.5\.2\.0 dev \d+ onlink/,
      );
    },
  },
  {
    name: "a batch with failures applies the rest and lists every failure",
    fn: async (dp) => {
      const ext = await underlay(dp);
      const routes: Route[] = [
        { dst: net("10.5.2.0/24"), gateway: ip("192.0.2.2"), index: ext.index },
        { dst: net("10.5.3.0/24"), gateway: ip("10.9.9.9"), index: ext.index },
        { dst: net("10.5.4.0/24"), gateway: ip("192.0.2.4"), index: ext.index },
        { dst: net("10.5.5.0/24"), gateway: ip("10.9.9.8"), index: ext.index },
      ];
      try {
        await dp.replaceRoutes(routes);
        assert.fail("expected a NetlinkBatchError");
      } catch (e) {
        assert.ok(e instanceof NetlinkBatchError, String(e));
        assert.equal(e.code, "ENETUNREACH");
        assert.deepEqual(e.errors.map((x) => x.request.split(" ")[2]), [
          "10.5.3.0/24",
          "10.5.5.0/24",
        ]);
        assert.match(e.message, /2 of 4 netlink requests failed/);
      }
      assert.deepEqual(
        ours(await dp.listRoutes(), "10.5.0.0/16").map((r) => r.dst.ip).sort(),
        [ip("10.5.2.0"), ip("10.5.4.0")].sort(),
      );
    },
  },
  {
    name: "deleteRoutes removes by destination and tolerates absent routes",
    fn: async (dp) => {
      const ext = await underlay(dp);
      await dp.replaceRoutes([{
        dst: net("10.5.2.0/24"),
        gateway: ip("192.0.2.2"),
        index: ext.index,
      }]);
      await dp.deleteRoutes([{ dst: net("10.5.2.0/24") }, { dst: net("10.5.9.0/24") }]);
      await dp.deleteRoutes([{
        dst: net("10.5.2.0/24"),
        gateway: ip("192.0.2.2"),
        index: ext.index,
      }]);
      assert.deepEqual(ours(await dp.listRoutes(), "10.5.0.0/16"), []);
    },
  },
  {
    name: "2500 routes go in, list and come out in one call each",
    fn: async (dp) => {
      const ext = await underlay(dp);
      const routes: Route[] = [];
      for (let i = 0; i < 2500; i++) {
        routes.push({
          dst: { ip: (ip("10.64.0.0") + i * 256) >>> 0, prefixLen: 24 },
          gateway: ip("192.0.2.2"),
          index: ext.index,
        });
      }
      await dp.replaceRoutes(routes);
      assert.equal(ours(await dp.listRoutes(), "10.64.0.0/10").length, 2500);
      await dp.replaceRoutes(routes);
      assert.equal(ours(await dp.listRoutes(), "10.64.0.0/10").length, 2500);
      await dp.deleteRoutes(routes);
      assert.equal(ours(await dp.listRoutes(), "10.64.0.0/10").length, 0);
    },
  },
  {
    name: "replaceNeighbours writes permanent entries, replaces the MAC, and deletes idempotently",
    fn: async (dp) => {
      const ext = await underlay(dp);
      const vx = await vxlan(dp, ext);
      const n = { index: vx.index, ip: ip("10.5.2.0"), mac: "02:00:00:00:00:02" };
      await dp.replaceNeighbours([n]);
      await dp.replaceNeighbours([n]);
      // IPv4 only: the kernel keeps IPv6 multicast neighbours (33:33:…) on devices that are up
      const v4n = async () =>
        (await dp.listNeighbours(vx.index)).filter((x) => typeof x.ip === "number");
      assert.deepEqual(await v4n(), [{ ...n, state: 0x80 }]);
      await dp.replaceNeighbours([{ ...n, mac: "02:00:00:00:00:03" }]);
      assert.deepEqual((await v4n()).map((x) => x.mac), ["02:00:00:00:00:03"]);
      await dp.deleteNeighbours([n]);
      await dp.deleteNeighbours([n]);
      assert.deepEqual(await v4n(), []);
      await rejectsWith(dp.replaceNeighbours([{ ...n, index: 99999 }]), "ENODEV");
    },
  },
  {
    name: "replaceFdb repoints a MAC, appendFdb leaves an existing unicast MAC, deleteFdb removes",
    fn: async (dp) => {
      const ext = await underlay(dp);
      const vx = await vxlan(dp, ext);
      const e = { index: vx.index, mac: "02:00:00:00:00:02", dst: ip("192.0.2.2") };
      await dp.appendFdb([e]);
      await dp.appendFdb([e]);
      assert.deepEqual(await dp.listFdb(vx.index), [{ ...e, state: 0x80 }]);
      await dp.appendFdb([{ ...e, dst: ip("192.0.2.3") }]);
      assert.deepEqual((await dp.listFdb(vx.index)).map((x) => x.dst), [ip("192.0.2.2")]);
      await dp.replaceFdb([{ ...e, dst: ip("192.0.2.3") }]);
      assert.deepEqual((await dp.listFdb(vx.index)).map((x) => x.dst), [ip("192.0.2.3")]);
      await dp.deleteFdb([{ ...e, dst: ip("192.0.2.3") }]);
      await dp.deleteFdb([{ ...e, dst: ip("192.0.2.3") }]);
      assert.deepEqual(await dp.listFdb(vx.index), []);
    },
  },
  {
    name: "setting a link down drops its routes and neighbours but keeps fdb entries and addresses",
    fn: async (dp) => {
      const ext = await underlay(dp);
      const vx = await vxlan(dp, ext);
      await dp.addAddresses([{ index: vx.index, ip: ip("10.5.1.0"), prefixLen: 32 }]);
      await dp.replaceNeighbours([{
        index: vx.index,
        ip: ip("10.5.2.0"),
        mac: "02:00:00:00:00:02",
      }]);
      await dp.replaceFdb([{ index: vx.index, mac: "02:00:00:00:00:02", dst: ip("192.0.2.2") }]);
      await dp.replaceRoutes([{
        dst: net("10.5.2.0/24"),
        gateway: ip("10.5.2.0"),
        index: vx.index,
        onlink: true,
      }]);
      await dp.setLink(vx.index, { up: false });
      assert.deepEqual(ours(await dp.listRoutes(), "10.5.0.0/16"), []);
      assert.deepEqual(await dp.listNeighbours(vx.index), []);
      assert.equal((await dp.listFdb(vx.index)).length, 1);
      assert.equal((await dp.listAddresses(vx.index)).length, 1);
    },
  },
  {
    name: "deleteLink removes the link and what hangs on it; deleting again succeeds",
    fn: async (dp) => {
      const ext = await underlay(dp);
      const vx = await vxlan(dp, ext);
      await dp.addAddresses([{ index: vx.index, ip: ip("10.5.1.0"), prefixLen: 32 }]);
      await dp.replaceNeighbours([{
        index: vx.index,
        ip: ip("10.5.2.0"),
        mac: "02:00:00:00:00:02",
      }]);
      await dp.replaceFdb([{ index: vx.index, mac: "02:00:00:00:00:02", dst: ip("192.0.2.2") }]);
      await dp.replaceRoutes([{
        dst: net("10.5.2.0/24"),
        gateway: ip("10.5.2.0"),
        index: vx.index,
        onlink: true,
      }]);
      await dp.deleteLink(vx.index);
      await dp.deleteLink(vx.index);
      assert.equal(await dp.getLink("flannel.1"), null);
      assert.deepEqual(ours(await dp.listRoutes(), "10.5.0.0/16"), []);
      assert.deepEqual(await dp.listNeighbours(vx.index), []);
      assert.deepEqual(await dp.listFdb(vx.index), []);
      assert.deepEqual(v4(await dp.listAddresses(vx.index)), []);
    },
  },
  {
    name: "events report new and deleted links, addresses, routes, neighbours and fdb entries",
    fn: async (dp) => {
      const ac = new AbortController();
      const it = dp.events(ac.signal)[Symbol.asyncIterator]();
      try {
        const ext = await underlay(dp);
        const vx = await vxlan(dp, ext);
        await waitForEvent(
          it,
          (e) => e.kind === "link" && e.action === "new" && e.link.name === "flannel.1",
        );
        await dp.addAddresses([{ index: vx.index, ip: ip("10.5.1.0"), prefixLen: 32 }]);
        await waitForEvent(
          it,
          (e) => e.kind === "address" && e.action === "new" && e.address.ip === ip("10.5.1.0"),
        );
        const route = {
          dst: net("10.5.2.0/24"),
          gateway: ip("10.5.2.0"),
          index: vx.index,
          onlink: true,
        };
        await dp.replaceRoutes([route]);
        await waitForEvent(
          it,
          (e) => e.kind === "route" && e.action === "new" && e.route.dst.ip === ip("10.5.2.0"),
        );
        await dp.deleteRoutes([route]);
        const del = await waitForEvent(it, (e) => e.kind === "route" && e.action === "del");
        assert.equal(del.kind === "route" && del.route.gateway, ip("10.5.2.0"));
        const n = { index: vx.index, ip: ip("10.5.2.0"), mac: "02:00:00:00:00:02" };
        await dp.replaceNeighbours([n]);
        await waitForEvent(
          it,
          (e) => e.kind === "neighbour" && e.action === "new" && e.neighbour.ip === n.ip,
        );
        await dp.deleteNeighbours([n]);
        await waitForEvent(
          it,
          (e) => e.kind === "neighbour" && e.action === "del" && e.neighbour.ip === n.ip,
        );
        const f = { index: vx.index, mac: "02:00:00:00:00:02", dst: ip("192.0.2.2") };
        await dp.replaceFdb([f]);
        await waitForEvent(
          it,
          (e) => e.kind === "fdb" && e.action === "new" && e.fdb.mac === f.mac,
        );
        await dp.deleteFdb([f]);
        await waitForEvent(
          it,
          (e) => e.kind === "fdb" && e.action === "del" && e.fdb.dst === f.dst,
        );
        await dp.deleteLink(vx.index);
        await waitForEvent(
          it,
          (e) => e.kind === "link" && e.action === "del" && e.link.index === vx.index,
        );
      } finally {
        ac.abort();
        await it.return?.();
      }
    },
  },
  {
    name: "an event iterable ends when its signal aborts",
    fn: async (dp) => {
      const ac = new AbortController();
      const it = dp.events(ac.signal)[Symbol.asyncIterator]();
      const next = it.next();
      ac.abort();
      const r = await next;
      assert.equal(r.done, true);
    },
  },
  {
    name: "close ends event iterables and later calls reject",
    fn: async (dp) => {
      const ac = new AbortController();
      const it = dp.events(ac.signal)[Symbol.asyncIterator]();
      const next = it.next();
      dp.close();
      const r = await next;
      assert.equal(r.done, true);
      await assert.rejects(dp.listLinks(), /closed/);
      await assert.rejects(dp.createBridge({ name: "br9" }), /closed/);
      ac.abort();
    },
  },
  {
    name:
      "settleSteps hands every outcome to its step's listener once, in order, in slices of a chunk, before it returns",
    // chunks of 300: slices of at most 128 that never cross a chunk
    options: { chunkSize: 300 },
    fn: async (dp) => {
      const br = await underlay(dp);
      const neighbours = Array.from({ length: 700 }, (_, i) => ({
        index: br.index,
        ip: (ip("192.0.2.0") + 10 + (i % 200)) >>> 0, // repeats: replace lets them all in
        mac: `02:00:00:00:${(i >> 8).toString(16).padStart(2, "0")}:${
          (i & 255).toString(16).padStart(2, "0")
        }`,
      }));
      // routes 250–259 go via a gateway off every link: the kernel refuses those ten
      const routes: Route[] = Array.from({ length: 500 }, (_, i) => ({
        dst: { ip: (ip("10.64.0.0") + i * 256) >>> 0, prefixLen: 24 },
        gateway: i >= 250 && i < 260 ? ip("203.0.113.1") : ip("192.0.2.2"),
        index: br.index,
      }));
      const seen: { step: string; start: number; end: number; failed: number[] }[] = [];
      const listener = (step: string) => (start: number, end: number, results: unknown[]) => {
        const failed: number[] = [];
        for (let i = start; i < end; i++) if (results[i] !== null) failed.push(i);
        seen.push({ step, start, end, failed });
      };
      const out = await dp.settleSteps([
        settleStep("replaceNeighbours", neighbours, listener("neighbours")),
        settleStep("replaceRoutes", routes, listener("routes")),
      ]);
      for (const [step, items] of [["neighbours", 700], ["routes", 500]] as const) {
        const ranges = seen.filter((s) => s.step === step);
        let at = 0;
        for (const r of ranges) {
          assert.equal(r.start, at, `${step}: ranges follow each other`);
          assert.ok(r.end > r.start && r.end - r.start <= 128, `${step}: ${r.start}–${r.end}`);
          assert.equal(Math.floor(r.start / 300), Math.floor((r.end - 1) / 300), "within a chunk");
          at = r.end;
        }
        assert.equal(at, items, `${step}: every item once`);
      }
      // the steps' listeners in step order
      const firstRoute = seen.findIndex((s) => s.step === "routes");
      assert.ok(seen.slice(firstRoute).every((s) => s.step === "routes"));
      const expected = Array.from({ length: 10 }, (_, i) => 250 + i);
      assert.deepEqual(seen.flatMap((s) => s.failed), expected);
      const [neighbourOut, routeOut] = out as unknown[][];
      assert.ok(neighbourOut.every((e) => e === null));
      assert.deepEqual(
        routeOut.flatMap((e, i) => (e === null ? [] : [i])),
        expected,
      );
      assert.equal(ours(await dp.listRoutes(), "10.64.0.0/14").length, 490);
    },
  },
  {
    name:
      "settleStep's toRequest makes each item's request as it is encoded, one reused object for all, and a failure names its own item",
    options: { chunkSize: 100 },
    fn: async (dp) => {
      const br = await underlay(dp);
      const reused = { dst: { ip: 0, prefixLen: 24 }, gateway: 0, index: br.index };
      let made = 0;
      const toRequest = (i: number): Route => {
        made++;
        reused.dst = { ip: (ip("10.68.0.0") + i * 256) >>> 0, prefixLen: 24 };
        // route 123 goes via a gateway off every link: the kernel refuses it
        reused.gateway = i === 123 ? ip("203.0.113.1") : ip("192.0.2.2");
        return reused;
      };
      const items = Array.from({ length: 300 }, (_, i) => i);
      const [out] = await dp.settleSteps([
        settleStep("replaceRoutes", items, undefined, toRequest),
      ]);
      const failed = out.flatMap((e, i) => (e === null ? [] : [[i, e.message]]));
      assert.equal(failed.length, 1);
      assert.equal(failed[0][0], 123);
      assert.match(String(failed[0][1]), /10\.68\.123\.0\/24 via 203\.0\.113\.1/);
      assert.equal(made, 301, "once per item to encode it, once more to describe the failure");
      const routes = ours(await dp.listRoutes(), "10.68.0.0/14");
      assert.equal(routes.length, 299);
      assert.ok(routes.some((r) => r.dst.ip === (ip("10.68.0.0") + 299 * 256) >>> 0));
    },
  },
  {
    name: "a subscription's drain(max) reads the oldest notifications, the next drain the rest",
    fn: async (dp) => {
      const br = await underlay(dp);
      const sub = dp.subscribe();
      sub.drain();
      const ips = Array.from({ length: 50 }, (_, i) => ip("192.0.2.100") + i);
      await dp.replaceNeighbours(ips.map((x, i) => ({
        index: br.index,
        ip: x,
        mac: `02:00:00:00:01:${i.toString(16).padStart(2, "0")}`,
      })));
      const neighbourIps = (events: KernelEvent[]) =>
        events.flatMap((e) => (e.kind === "neighbour" ? [e.neighbour.ip] : []));
      const first = sub.drain(10);
      assert.equal(first.length, 10, "one notification per datagram: ten");
      assert.deepEqual(neighbourIps(first), ips.slice(0, 10));
      assert.deepEqual(neighbourIps(sub.drain()), ips.slice(10));
      assert.deepEqual(sub.drain(), []);
      sub.close();
    },
  },
];

for (const c of cases) {
  Deno.test({
    name: `NetlinkClient: ${c.name}`,
    ...opts,
    fn: async () => {
      const ns = createNetns(PREFIX, "c");
      const dp = await openNetlinkClient({ ...c.options, netns: ns });
      try {
        await c.fn(dp);
      } finally {
        dp.close();
        deleteNetns(ns);
      }
    },
  });
}

Deno.test({
  name: "NetlinkClient in a namespace does not see or touch the host namespace",
  ...opts,
  fn: async () => {
    const ns = createNetns(PREFIX, "c");
    const hostLinks = run("ip", ["-o", "link", "show"]);
    const dp = await openNetlinkClient({ netns: ns });
    try {
      assert.deepEqual((await dp.listLinks()).map((l) => l.name), ["lo"]);
      await dp.createBridge({ name: "wdpbr0", up: true });
      assert.match(nsRun(ns, "ip", "-o", "link", "show", "wdpbr0"), /wdpbr0/);
      assert.equal(run("ip", ["-o", "link", "show"]), hostLinks);
    } finally {
      dp.close();
      deleteNetns(ns);
    }
  },
});

Deno.test({
  name: "NetlinkClient events report changes made by other processes",
  ...opts,
  fn: async () => {
    const ns = createNetns(PREFIX, "c");
    const dp = await openNetlinkClient({ netns: ns });
    const ac = new AbortController();
    const it = dp.events(ac.signal)[Symbol.asyncIterator]();
    try {
      nsRun(ns, "ip", "link", "add", "br7", "type", "bridge");
      nsRun(ns, "ip", "link", "set", "br7", "up");
      nsRun(ns, "ip", "addr", "add", "192.0.2.1/24", "dev", "br7");
      nsRun(ns, "ip", "route", "add", "10.5.2.0/24", "via", "192.0.2.2");
      nsRun(ns, "ip", "route", "del", "10.5.2.0/24");
      const e = await waitForEvent(it, (e) => e.kind === "route" && e.action === "del");
      assert.equal(e.kind === "route" && e.route.gateway, parseIPv4("192.0.2.2"));
      nsRun(ns, "ip", "link", "del", "br7");
      await waitForEvent(
        it,
        (e) => e.kind === "link" && e.action === "del" && e.link.name === "br7",
      );
    } finally {
      ac.abort();
      dp.close();
      deleteNetns(ns);
    }
  },
});

Deno.test({
  name: "a subscription without own entry writes misses this client's routes and neighbours only",
  ...opts,
  fn: async () => {
    const ns = createNetns(PREFIX, "c");
    const dp = await openNetlinkClient({ netns: ns });
    try {
      const br = await dp.createBridge({ name: "br8", up: true });
      await dp.addAddresses([{ index: br.index, ip: parseIPv4("192.0.2.1"), prefixLen: 24 }]);
      const all = dp.subscribe();
      const mine = dp.subscribe({ withoutOwnEntryWrites: true });
      const describe = (events: KernelEvent[]) =>
        events.flatMap((e) =>
          e.kind === "route" && e.route.dst.ip === parseIPv4("10.5.2.0")
            ? [`route ${e.action}`]
            : e.kind === "neighbour" && e.neighbour.ip === parseIPv4("192.0.2.9")
            ? [`neighbour ${e.action}`]
            : e.kind === "link" && e.link.name === "br9"
            ? [`link ${e.action}`]
            : []
        );
      all.drain();
      mine.drain();
      const route = { dst: parseIPv4Net("10.5.2.0/24"), gateway: parseIPv4("192.0.2.2") };
      await dp.replaceRoutes([{ ...route, index: br.index }]);
      await dp.replaceNeighbours([{
        index: br.index,
        ip: parseIPv4("192.0.2.9"),
        mac: "02:00:00:00:00:09",
      }]);
      await dp.createBridge({ name: "br9", up: false }); // a link: still reported
      nsRun(ns, "ip", "route", "del", "10.5.2.0/24"); // another process: reported
      const seen = async (sub: KernelSubscription, want: string) => {
        const got: string[] = [];
        for (let i = 0; i < 200 && !got.includes(want); i++) {
          got.push(...describe(sub.drain()));
          if (!got.includes(want)) await new Promise((r) => setTimeout(r, 10));
        }
        return got;
      };
      assert.deepEqual(await seen(all, "route del"), [
        "route new",
        "neighbour new",
        "link new",
        "route del",
      ]);
      assert.deepEqual(await seen(mine, "route del"), ["link new", "route del"]);
      all.close();
      mine.close();
    } finally {
      dp.close();
      deleteNetns(ns);
    }
  },
});

Deno.test({
  name: "openNetlinkClient names the missing namespace and how to create it",
  ...opts,
  fn: async () => {
    await assert.rejects(
      openNetlinkClient({ netns: `${PREFIX}-does-not-exist` }),
      /ip netns add wnc-does-not-exist/,
    );
  },
});
