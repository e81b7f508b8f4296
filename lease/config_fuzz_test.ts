/**
 * Fuzzing the network config parser: mutations of flannel's own config
 * vectors, documents built from the known keys with nasty values, cut and
 * garbled texts. Property: a config that satisfies every documented
 * invariant, or a ConfigError that names a field — never another error.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { readFileSync } from "node:fs";
import { parseNetworkConfig } from "./config.ts";
import { ConfigError } from "../core/errors.ts";
import { containsIPv4, containsIPv6, maskIPv4, maskIPv6 } from "../core/ip.ts";
import {
  fuzzParameters,
  hugeJsonText,
  MAX_MESSAGE,
  mutatedJson,
  mutatedText,
  nastyJson,
  returnsOrThrowsClearly,
  Tally,
} from "../testing/fuzz.ts";

const vectors = JSON.parse(
  readFileSync(new URL("../testing/flannel_vectors/config.json", import.meta.url), "utf8"),
) as { rows: { input: string }[] };
const TEXTS = vectors.rows.map((r) => r.input);
const DOCS = TEXTS.flatMap((t) => {
  try {
    return [JSON.parse(t)];
  } catch {
    return [];
  }
});

const KEYS = [
  "Network",
  "SubnetLen",
  "SubnetMin",
  "SubnetMax",
  "EnableIPv4",
  "EnableIPv6",
  "IPv6Network",
  "IPv6SubnetLen",
  "IPv6SubnetMin",
  "IPv6SubnetMax",
  "EnableNFTables",
  "Backend",
];
const FIELDS = new Set([...KEYS, "Backend.Type", ""]);

const ipv4 = fc.tuple(fc.constantFrom(10, 172, 192), fc.nat(255), fc.nat(255), fc.nat(255))
  .map((xs) => xs.join("."));
const v4net = fc.oneof(
  fc.tuple(fc.nat(255), fc.integer({ min: 8, max: 28 })).map(([b, len]) => `10.${b}.0.0/${len}`),
  fc.tuple(ipv4, fc.integer({ min: 0, max: 32 })).map(([ip, len]) => `${ip}/${len}`),
);
const v6net = fc.tuple(fc.constantFrom("fd00:10::", "fc00::", "2001:db8::", "::"), fc.nat(128))
  .map(([ip, len]) => `${ip}/${len}`);
/** A plausible value for each key (right type, random range), or now and then a nasty one. */
const valueFor = (plausible: fc.Arbitrary<unknown>) =>
  fc.oneof({ weight: 12, arbitrary: plausible }, { weight: 1, arbitrary: nastyJson() });
const bool = fc.boolean();

/** Documents made of the known keys, mostly well-typed, with random ranges. */
const builtDocs = fc.record({
  Network: valueFor(fc.oneof(v4net, fc.constant("10.5.0.0/16"))),
  SubnetLen: valueFor(fc.integer({ min: 0, max: 33 })),
  SubnetMin: valueFor(fc.oneof(ipv4, fc.constantFrom("10.5.1.0", "10.5.4.0", "0.0.0.0", ""))),
  SubnetMax: valueFor(fc.oneof(ipv4, fc.constantFrom("10.5.200.0", "10.5.255.0", ""))),
  EnableIPv4: valueFor(fc.oneof(bool, fc.constant(true))),
  EnableIPv6: valueFor(bool),
  IPv6Network: valueFor(v6net),
  IPv6SubnetLen: valueFor(fc.integer({ min: 0, max: 129 })),
  IPv6SubnetMin: valueFor(fc.constantFrom("fd00:10::", "fd00:10:0:1::", "fc00::100", "::")),
  IPv6SubnetMax: valueFor(fc.constantFrom("fd00:10:ffff::", "fd00:10:0:ff::", "fc00::ff00")),
  EnableNFTables: valueFor(bool),
  Backend: valueFor(
    fc.record({ Type: fc.constantFrom("vxlan", "host-gw", "UDP", "alloc", ""), VNI: fc.nat(10) }),
  ),
  Unknown: valueFor(fc.string()),
}, {
  requiredKeys: ["Network"],
});

/** The documented invariants of a parsed config. */
function checkConfig(text: string, tally?: Tally): void {
  const warnings: unknown[] = [];
  const cfg = returnsOrThrowsClearly(
    () => parseNetworkConfig(text, { onWarning: (m) => warnings.push(m) }),
    [ConfigError],
    tally,
  );
  for (const w of warnings) {
    assert.equal(typeof w, "string");
    assert.ok((w as string).length <= MAX_MESSAGE, `a ${(w as string).length}-character warning`);
  }
  assert.ok(warnings.length <= 20, `${warnings.length} warnings for one document`);
  if (cfg === undefined) {
    try {
      parseNetworkConfig(text);
    } catch (e) {
      const path = (e as ConfigError).path;
      assert.ok(path === undefined || FIELDS.has(path), `path ${path} names no field`);
    }
    return;
  }
  assert.ok(cfg.enableIPv4 || cfg.enableIPv6, "some family is enabled");
  assert.equal(cfg.backendType, cfg.backendType.toLowerCase());
  assert.ok(typeof cfg.backend === "object" && cfg.backend !== null && !Array.isArray(cfg.backend));
  if (cfg.enableIPv4) {
    const net = cfg.network!;
    assert.ok(cfg.subnetLen >= net.prefixLen && cfg.subnetLen <= 30, `SubnetLen ${cfg.subnetLen}`);
    assert.ok(cfg.subnetMin <= cfg.subnetMax, "SubnetMin ≤ SubnetMax");
    for (const ip of [cfg.subnetMin, cfg.subnetMax]) {
      assert.ok(containsIPv4(net, ip), "the subnet range lies in Network");
      assert.equal((ip & maskIPv4(cfg.subnetLen)) >>> 0, ip, "subnet bounds are aligned");
    }
  }
  if (cfg.enableIPv6) {
    const net = cfg.ipv6Network!;
    assert.ok(cfg.ipv6SubnetLen >= net.prefixLen && cfg.ipv6SubnetLen <= 126);
    assert.ok(cfg.ipv6SubnetMin! <= cfg.ipv6SubnetMax!);
    for (const ip of [cfg.ipv6SubnetMin!, cfg.ipv6SubnetMax!]) {
      assert.ok(containsIPv6(net, ip));
      assert.equal(ip & maskIPv6(cfg.ipv6SubnetLen), ip);
    }
  }
}

Deno.test("fuzz parseNetworkConfig(): mutations of flannel's config vectors (10 000 inputs)", () => {
  const tally = new Tally();
  fc.assert(
    fc.property(mutatedJson(DOCS, 4), (doc) => checkConfig(JSON.stringify(doc), tally)),
    fuzzParameters(),
  );
  tally.assertMix("mutated config vectors");
});

Deno.test("fuzz parseNetworkConfig(): documents of the known keys with nasty values (10 000 inputs)", () => {
  const tally = new Tally();
  fc.assert(
    fc.property(builtDocs, (doc) => checkConfig(JSON.stringify(doc), tally)),
    fuzzParameters(),
  );
  tally.assertMix("built config documents");
});

Deno.test("fuzz parseNetworkConfig(): cut, spliced and garbled texts (10 000 inputs)", () => {
  const tally = new Tally();
  fc.assert(
    fc.property(mutatedText(TEXTS, 4), (text) => checkConfig(text, tally)),
    fuzzParameters(),
  );
  tally.assertMix("garbled config texts");
});

Deno.test("fuzz parseNetworkConfig(): arbitrary text (10 000 inputs)", () => {
  fc.assert(
    fc.property(fc.fullUnicodeString({ maxLength: 200 }), (text) => checkConfig(text)),
    fuzzParameters(),
  );
});

Deno.test("fuzz parseNetworkConfig(): huge documents — deep nesting, MiB strings, many keys (50 inputs)", () => {
  fc.assert(
    fc.property(
      hugeJsonText(),
      fc.constantFrom("Network", "Backend", "SubnetMin", null),
      (huge, key) => checkConfig(key ? `{"${key}":${huge},"Network":"10.5.0.0/16"}` : huge),
    ),
    fuzzParameters(50),
  );
});
