const g = globalThis as any;
const rss = () => g.Deno ? g.Deno.memoryUsage().rss : process.memoryUsage().rss;
const t0 = performance.now(); const r0 = rss();
const spec = process.argv[2] ?? Deno.args[0];
const k = await import(spec);
console.log(spec, "import ms", (performance.now() - t0).toFixed(0), "rss MB", ((rss() - r0) / 1e6).toFixed(0), "base MB", (r0/1e6).toFixed(0));
