/**
 * Prune a protobufjs JSON descriptor (the `protos.json` the Google client
 * libraries ship) to the services one needs and every type they reach:
 * request and response messages, the messages and enums of their fields,
 * transitively. Names resolve as protobufjs resolves them — relative to the
 * enclosing message, then each enclosing namespace outwards — and a type is
 * kept with its whole outermost message (nested types travel with their
 * parent), so the pruned descriptor builds the same types.
 *
 * @module
 */

// deno-lint-ignore no-explicit-any
type Node = Record<string, any>;

const SCALARS = new Set([
  "double",
  "float",
  "int32",
  "int64",
  "uint32",
  "uint64",
  "sint32",
  "sint64",
  "fixed32",
  "fixed64",
  "sfixed32",
  "sfixed64",
  "bool",
  "string",
  "bytes",
]);

const isType = (n: Node) => "fields" in n || "values" in n || "methods" in n;

interface Entry {
  readonly node: Node;
  /** Full name of the outermost type this one is nested in (itself when top-level). */
  readonly unit: string;
}

function index(root: Node): Map<string, Entry> {
  const out = new Map<string, Entry>();
  const walk = (nested: Node | undefined, prefix: string, unit: string | null) => {
    for (const [name, node] of Object.entries(nested ?? {})) {
      const full = prefix ? `${prefix}.${name}` : name;
      const typeNode = isType(node as Node);
      const u = unit ?? (typeNode ? full : null);
      if (typeNode) out.set(full, { node: node as Node, unit: u! });
      walk((node as Node).nested, full, u);
    }
  };
  walk(root.nested, "", null);
  return out;
}

function resolve(types: Map<string, Entry>, ref: string, scope: string): string | null {
  if (ref.startsWith(".")) return types.has(ref.slice(1)) ? ref.slice(1) : null;
  for (let s = scope;; s = s.slice(0, Math.max(0, s.lastIndexOf(".")))) {
    const candidate = s ? `${s}.${ref}` : ref;
    if (types.has(candidate)) return candidate;
    if (!s) return null;
  }
}

/**
 * Keep only `services` and the types they reach.
 *
 * @param json A protobufjs JSON root (`{ nested: { … } }`).
 * @param services Full service names, e.g. `google.cloud.compute.v1.Routes`.
 * @returns A new JSON root with the same layout and fewer types.
 * @throws {RangeError} When a service is not in `json`.
 * @example
 * ```ts
 * const lean = pruneProtoJson(protos, ["google.cloud.compute.v1.Routes"]);
 * ```
 */
export function pruneProtoJson(json: unknown, services: readonly string[]): Node {
  const root = json as Node;
  const types = index(root);
  const units = new Set<string>();
  const queue: string[] = [];
  const keep = (full: string) => {
    const unit = types.get(full)!.unit;
    if (units.has(unit)) return;
    units.add(unit);
    queue.push(unit);
  };
  for (const s of services) {
    const e = types.get(s);
    if (!e || !("methods" in e.node)) {
      throw new RangeError(`Cannot prune to service ${s}: it is not in the descriptor`);
    }
    keep(s);
  }
  // walk every type inside a kept unit (a unit carries all its nested types)
  const walkType = (full: string, node: Node) => {
    const parent = full.slice(0, Math.max(0, full.lastIndexOf(".")));
    for (const m of Object.values((node.methods ?? {}) as Record<string, Node>)) {
      for (const ref of [m.requestType, m.responseType]) {
        const r = resolve(types, ref, parent);
        if (r) keep(r);
      }
    }
    for (const f of Object.values((node.fields ?? {}) as Record<string, Node>)) {
      if (SCALARS.has(f.type)) continue;
      const r = resolve(types, f.type, full);
      if (r) keep(r);
    }
    for (const [name, child] of Object.entries((node.nested ?? {}) as Record<string, Node>)) {
      if (isType(child)) walkType(`${full}.${name}`, child);
    }
  };
  while (queue.length > 0) {
    const unit = queue.pop()!;
    walkType(unit, types.get(unit)!.node);
  }
  const out: Node = { nested: {} };
  for (const unit of units) {
    const parts = unit.split(".");
    let cur = out;
    for (const p of parts.slice(0, -1)) {
      cur.nested ??= {};
      cur = cur.nested[p] ??= {};
    }
    cur.nested ??= {};
    cur.nested[parts[parts.length - 1]] = types.get(unit)!.node;
  }
  return out;
}
