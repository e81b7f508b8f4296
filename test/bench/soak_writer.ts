/**
 * The soak benchmark's lease writer, run in the lab's underlay namespace
 * (where etcd listens): it puts `peers` vxlan leases through etcd's JSON
 * gateway, then churns them at a steady rate until `seconds` are over —
 * each operation removes a random peer's lease, adds one on a free subnet
 * (a new VtepMAC), or moves a peer to another PublicIP, so the peer count
 * stays within a few of `peers`. It prints one JSON line per progress tick
 * (`{"t":…,"ops":…,"peers":…}`) and `done` at the end.
 *
 * Input: the environment variable `WEFT_SOAK_WRITER`, a JSON
 * {@link SoakWriterInput}. Run by `soak_bench.ts`; not meant to be run by hand.
 *
 * @module
 */

import process from "node:process";
import { hold } from "../../testing/wait.ts";

/** What the writer is told. */
export interface SoakWriterInput {
  /** etcd client URL, e.g. `http://192.0.2.2:2379`. */
  readonly endpoint: string;
  /** Key prefix of the leases, e.g. `/coreos.com/network/subnets/`. */
  readonly prefix: string;
  /** Subnets it may use, CIDR (`10.5.4.0/26`), none of them the agent's own. */
  readonly pool: readonly string[];
  /** Leases kept (about). */
  readonly peers: number;
  /** Churn operations per second. */
  readonly opsPerSecond: number;
  /** How long to churn after the initial puts. */
  readonly seconds: number;
  /** Progress line every this many ms. */
  readonly tickMs: number;
}

const input = JSON.parse(process.env.WEFT_SOAK_WRITER ?? "null") as SoakWriterInput | null;
if (!input) throw new Error("soak writer: set WEFT_SOAK_WRITER to its JSON input");

const b64 = (s: string) => btoa(s);

async function post(path: string, body: unknown): Promise<unknown> {
  for (let attempt = 0;; attempt++) {
    try {
      const r = await fetch(input!.endpoint + path, {
        method: "POST",
        body: JSON.stringify(body),
      });
      const text = await r.text();
      if (!r.ok) throw new Error(`${path}: HTTP ${r.status} ${text.slice(0, 200)}`);
      return JSON.parse(text);
    } catch (e) {
      if (attempt >= 5) throw e;
      await hold("a back-off before retrying the write", 200 * (attempt + 1));
    }
  }
}

let serial = 0;
const keyOf = (subnet: string) => input.prefix + subnet.replace("/", "-");
const lease = (publicIP: string) => {
  serial++;
  const hex = serial.toString(16).padStart(6, "0");
  return JSON.stringify({
    PublicIP: publicIP,
    PublicIPv6: null,
    BackendType: "vxlan",
    BackendData: {
      VNI: 1,
      VtepMAC: `02:5a:${hex.slice(0, 2)}:${hex.slice(2, 4)}:${hex.slice(4, 6)}:01`,
    },
  });
};
const randomIP = () =>
  `198.18.${1 + Math.floor(Math.random() * 250)}.${1 + Math.floor(Math.random() * 250)}`;
const put = (subnet: string) =>
  post("/v3/kv/put", { key: b64(keyOf(subnet)), value: b64(lease(randomIP())) });
const remove = (subnet: string) => post("/v3/kv/deleterange", { key: b64(keyOf(subnet)) });
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(Math.random() * xs.length)];

const used = new Set<string>();
const free = new Set(input.pool);
const take = (subnet: string) => {
  free.delete(subnet);
  used.add(subnet);
};
const release = (subnet: string) => {
  used.delete(subnet);
  free.add(subnet);
};

for (const subnet of input.pool.slice(0, input.peers)) {
  await put(subnet);
  take(subnet);
}
console.log(JSON.stringify({ t: Date.now(), ops: 0, peers: used.size, initial: true }));

const started = Date.now();
const end = started + input.seconds * 1000;
const gapMs = 1000 / input.opsPerSecond;
let ops = 0;
let nextTick = started + input.tickMs;
while (Date.now() < end) {
  const due = started + ops * gapMs;
  const wait = due - Date.now();
  if (wait > 0) await hold("the writer's pace", wait);
  const r = Math.random();
  // keep the count near `peers`: remove when above, add when below, else either
  const low = used.size < input.peers - 2, high = used.size > input.peers + 2;
  if (!low && (high || r < 0.4)) {
    const subnet = pick([...used]);
    await remove(subnet);
    release(subnet);
  } else if (high || low || r < 0.8 || used.size === 0) {
    const subnet = pick([...free]);
    await put(subnet);
    take(subnet);
  } else {
    await put(pick([...used])); // the peer moved: new PublicIP and VtepMAC
  }
  ops++;
  if (Date.now() >= nextTick) {
    nextTick += input.tickMs;
    console.log(JSON.stringify({ t: Date.now(), ops, peers: used.size }));
  }
}
console.log(JSON.stringify({ t: Date.now(), ops, peers: used.size, final: true }));
console.log("done");
