/**
 * Drives the status page in headless Chromium for test/e2e_status_page_test.ts,
 * from inside a lab host (where the agent's status API listens on
 * 127.0.0.1): `deno run -A testing/status_page_driver.ts <url> <png>`.
 *
 * Prints one JSON line per stage: `peers` (the peer rows once at least one
 * peer's kernel state is in place), `joined` (once a further peer appeared,
 * without reloading the page), `done` (after the screenshot is written).
 *
 * @module
 */

import * as fs from "node:fs";
import { openPage } from "./chromium.ts";

const [url, png] = Deno.args;
const rows =
  `[...document.querySelectorAll("#peers tr.peer")].map((r) => r.innerText.replace(/\\s+/g, " ").trim())`;
const page = await openPage(url, { width: 1100, height: 860 });
try {
  await page.waitFor(
    `document.querySelectorAll("#peers tr.peer td.k-applied").length >= 1`,
    30_000,
  );
  const first = await page.evaluate<string[]>(rows);
  const marker = await page.evaluate<string>(`document.getElementById("updated").textContent`);
  console.log(JSON.stringify({ stage: "peers", rows: first, marker }));
  await page.waitFor(
    `document.querySelectorAll("#peers tr.peer td.k-applied").length >= ${first.length + 1}`,
    60_000,
  );
  // the event list shows the join too
  await page.waitFor(`document.getElementById("events").innerText.includes("peer added")`, 10_000);
  console.log(JSON.stringify({
    stage: "joined",
    rows: await page.evaluate<string[]>(rows),
    events: await page.evaluate<string>(`document.getElementById("events").innerText`),
    navigations: await page.evaluate<number>(`performance.getEntriesByType("navigation").length`),
  }));
  fs.writeFileSync(png, await page.screenshot());
  console.log(JSON.stringify({ stage: "done" }));
} finally {
  await page.close();
}
