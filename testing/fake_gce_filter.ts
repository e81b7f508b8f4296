/**
 * The part of the Compute API's list `filter` language the GCE fake
 * understands: one `field op value` expression, or several in parentheses
 * joined by spaces or `AND` (or all by `OR`). Operators: `=` and `!=`
 * compare the whole string, `eq` and `ne` match the value as a regular
 * expression against the whole field (RE2 in GCE; JavaScript here, the same
 * for the patterns weft writes), `:*` tests presence. Values are bare words
 * or quoted with `"` or `'`. Anything else is an invalid filter, as the API
 * answers with a 400.
 *
 * @module
 */

/** One comparison. */
interface Term {
  readonly field: string;
  readonly op: "=" | "!=" | "eq" | "ne" | ":";
  readonly value: string;
}

/** A parsed filter: terms joined all by AND or all by OR. */
export interface Filter {
  readonly join: "AND" | "OR";
  readonly terms: readonly Term[];
}

const TERM_RE = /^\s*([A-Za-z][\w.]*)\s*(!=|=|:|\beq\b|\bne\b)\s*(.+?)\s*$/;

function parseTerm(text: string): Term {
  const m = TERM_RE.exec(text);
  if (!m) throw new SyntaxError(`Invalid list filter expression: ${JSON.stringify(text)}`);
  let value = m[3];
  const quoted = /^"(.*)"$/.exec(value) ?? /^'(.*)'$/.exec(value);
  if (quoted) value = quoted[1];
  else if (/[\s()"']/.test(value)) {
    throw new SyntaxError(`Invalid list filter value: ${JSON.stringify(m[3])}`);
  }
  const op = m[2] as Term["op"];
  if (op === ":" && value !== "*") {
    throw new SyntaxError(`Only ':*' (presence) is supported: ${JSON.stringify(text)}`);
  }
  if (op === "eq" || op === "ne") new RegExp(value);
  return { field: m[1], op, value };
}

/**
 * Parse a filter.
 *
 * @param text The `filter` query parameter ("" matches everything).
 * @returns The parsed filter.
 * @throws {SyntaxError} On anything outside the supported subset.
 */
export function parseFilter(text: string): Filter {
  const t = text.trim();
  if (t === "") return { join: "AND", terms: [] };
  if (!t.startsWith("(")) return { join: "AND", terms: [parseTerm(t)] };
  const terms: Term[] = [];
  const joins = new Set<string>();
  let rest = t;
  while (rest.length > 0) {
    const m = /^\(((?:[^()"']|"[^"]*"|'[^']*')*)\)\s*(?:(AND|OR)\s+)?/.exec(rest);
    if (!m) throw new SyntaxError(`Invalid list filter expression: ${JSON.stringify(text)}`);
    terms.push(parseTerm(m[1]));
    if (m[2]) joins.add(m[2]);
    rest = rest.slice(m[0].length).trimStart();
  }
  if (joins.size > 1) throw new SyntaxError(`Cannot mix AND and OR: ${JSON.stringify(text)}`);
  return { join: joins.has("OR") ? "OR" : "AND", terms };
}

function fieldOf(obj: Record<string, unknown>, path: string): unknown {
  let cur: unknown = obj;
  for (const part of path.split(".")) {
    if (cur === null || typeof cur !== "object") return undefined;
    cur = (cur as Record<string, unknown>)[part];
  }
  return cur;
}

function matches(term: Term, obj: Record<string, unknown>): boolean {
  const raw = fieldOf(obj, term.field);
  if (term.op === ":") return raw !== undefined && raw !== null && raw !== "";
  const value = raw === undefined || raw === null ? "" : String(raw);
  switch (term.op) {
    case "=":
      return value === term.value;
    case "!=":
      return value !== term.value;
    case "eq":
      return new RegExp(`^(?:${term.value})$`).test(value);
    case "ne":
      return !new RegExp(`^(?:${term.value})$`).test(value);
  }
}

/**
 * Whether a resource passes a filter.
 *
 * @param filter From {@link parseFilter}.
 * @param obj The resource as JSON.
 * @returns True when it matches.
 */
export function evaluateFilter(filter: Filter, obj: Record<string, unknown>): boolean {
  if (filter.terms.length === 0) return true;
  return filter.join === "AND"
    ? filter.terms.every((t) => matches(t, obj))
    : filter.terms.some((t) => matches(t, obj));
}
