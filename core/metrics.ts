/**
 * A small Prometheus registry: counters, gauges and histograms with labels,
 * rendered in the text exposition format (version 0.0.4).
 *
 * @module
 */

type Labels = Record<string, string>;

function labelKey(labels: Labels | undefined): string {
  if (!labels) return "";
  const keys = Object.keys(labels).sort();
  return keys.map((k) => `${k}="${escapeLabel(labels[k])}"`).join(",");
}

function escapeLabel(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

/** HELP text escapes only backslash and newline. */
function escapeHelp(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

function fmt(n: number): string {
  if (Number.isNaN(n)) return "NaN";
  if (n === Infinity) return "+Inf";
  if (n === -Infinity) return "-Inf";
  return String(n);
}

interface Family {
  readonly name: string;
  readonly help: string;
  readonly type: "counter" | "gauge" | "histogram";
  render(): string[];
}

/** A monotonically increasing count. */
export class Counter implements Family {
  readonly type = "counter" as const;
  #values = new Map<string, number>();
  constructor(readonly name: string, readonly help: string) {}
  /**
   * Add `by` (default 1) to the series with these labels.
   *
   * @throws {RangeError} When `by` is negative: a counter never goes down.
   */
  inc(labels?: Labels, by = 1): void {
    if (!(by >= 0)) {
      throw new RangeError(
        `Cannot add ${by} to counter ${this.name}: a counter only goes up; use a gauge`,
      );
    }
    const k = labelKey(labels);
    this.#values.set(k, (this.#values.get(k) ?? 0) + by);
  }
  /** Current value of one series. */
  get(labels?: Labels): number {
    return this.#values.get(labelKey(labels)) ?? 0;
  }
  render(): string[] {
    if (this.#values.size === 0) return [`${this.name} 0`];
    return [...this.#values].map(([k, v]) => `${this.name}${k ? `{${k}}` : ""} ${fmt(v)}`);
  }
}

/** A value that goes up and down. */
export class Gauge implements Family {
  readonly type = "gauge" as const;
  #values = new Map<string, number>();
  constructor(readonly name: string, readonly help: string) {}
  /** Set the series with these labels. */
  set(value: number, labels?: Labels): void {
    this.#values.set(labelKey(labels), value);
  }
  /** Current value of one series. */
  get(labels?: Labels): number {
    return this.#values.get(labelKey(labels)) ?? 0;
  }
  render(): string[] {
    if (this.#values.size === 0) return [];
    return [...this.#values].map(([k, v]) => `${this.name}${k ? `{${k}}` : ""} ${fmt(v)}`);
  }
}

/** A distribution of observations in cumulative buckets. */
export class Histogram implements Family {
  readonly type = "histogram" as const;
  #counts: number[];
  #sum = 0;
  #count = 0;
  /** Upper bounds, ascending and without duplicates (+Inf is implied). */
  readonly buckets: readonly number[];
  constructor(readonly name: string, readonly help: string, buckets: readonly number[]) {
    this.buckets = [...new Set(buckets.filter((b) => b !== Infinity))].sort((a, b) => a - b);
    this.#counts = this.buckets.map(() => 0);
  }
  /** Record one observation. */
  observe(value: number): void {
    this.#sum += value;
    this.#count++;
    for (let i = 0; i < this.buckets.length; i++) if (value <= this.buckets[i]) this.#counts[i]++;
  }
  /** Number of observations so far. */
  get count(): number {
    return this.#count;
  }
  render(): string[] {
    const lines = this.buckets.map((b, i) =>
      `${this.name}_bucket{le="${fmt(b)}"} ${this.#counts[i]}`
    );
    lines.push(`${this.name}_bucket{le="+Inf"} ${this.#count}`);
    lines.push(`${this.name}_sum ${fmt(this.#sum)}`);
    lines.push(`${this.name}_count ${this.#count}`);
    return lines;
  }
}

/** A set of metric families. Each agent has its own (nothing global). */
export class Registry {
  #families = new Map<string, Family>();

  /** Get or create a counter. */
  counter(name: string, help: string): Counter {
    return this.#get(name, () => new Counter(name, help)) as Counter;
  }
  /** Get or create a gauge. */
  gauge(name: string, help: string): Gauge {
    return this.#get(name, () => new Gauge(name, help)) as Gauge;
  }
  /** Get or create a histogram (buckets in the unit of the observations). */
  histogram(name: string, help: string, buckets: number[]): Histogram {
    return this.#get(name, () => new Histogram(name, help, buckets)) as Histogram;
  }

  #get(name: string, make: () => Family): Family {
    let f = this.#families.get(name);
    if (!f) {
      f = make();
      this.#families.set(name, f);
      return f;
    }
    const want = make().type;
    if (f.type !== want) {
      throw new TypeError(
        `Cannot register ${want} ${name}: it is already a ${f.type}; give the ${want} another name`,
      );
    }
    return f;
  }

  /** Render every family in Prometheus text format. */
  render(): string {
    const out: string[] = [];
    for (const f of this.#families.values()) {
      out.push(
        `# HELP ${f.name} ${escapeHelp(f.help)}`,
        `# TYPE ${f.name} ${f.type}`,
        ...f.render(),
      );
    }
    return out.join("\n") + "\n";
  }
}

/** Seconds buckets for durations from 100 µs to 10 s. */
export const DURATION_BUCKETS = [
  0.0001,
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  10,
];
