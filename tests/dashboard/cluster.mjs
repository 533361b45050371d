// The dashboard's cluster card in a real browser (Chromium driven by
// playwright-core), against a ringway node in cluster mode. Started by
// tests/cluster.rs, which passes: ADMIN (http://host:port of the node's
// admin listener, no token), NODES (the node ids, comma separated), SELF
// (this node's id), CHROMIUM (the browser binary). Every wait is bounded;
// any failure exits 1.
import { chromium } from "playwright-core";

const { ADMIN, NODES, SELF, CHROMIUM } = process.env;
const nodes = NODES.split(",");

function check(cond, message) {
  if (!cond) throw new Error("check failed: " + message);
}

const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox"] });
const failures = [];
try {
  const page = await browser.newPage({ viewport: { width: 1366, height: 900 } });
  page.on("pageerror", (e) => failures.push("page error: " + e.message));
  await page.goto(ADMIN + "/", { timeout: 15000 });
  await page.locator("#cluster-section").waitFor({ state: "visible", timeout: 15000 });
  // One row per registered node, this one marked; every one at the
  // revision the API reports for this node.
  const api = await (await fetch(ADMIN + "/api/v1/cluster")).json();
  for (const id of nodes) {
    await page.locator(`tr[data-node="${id}"]`).waitFor({ timeout: 10000 });
  }
  check((await page.locator("#cluster tbody tr").count()) === nodes.length, `${nodes.length} node rows`);
  const self = await page.textContent(`tr[data-node="${SELF}"] td:first-child`);
  check(self.includes("(this node)"), `this node is marked: ${self}`);
  const link = await page.textContent("#cluster-link");
  check(link.includes("etcd connected") && link.includes(`revision ${api.revision}`), `link line: ${link}`);
  // Every node reaches this node's revision (their registrations follow
  // within a moment; bounded).
  const deadline = Date.now() + 10000;
  for (;;) {
    const revs = [];
    for (const id of nodes) revs.push(await page.textContent(`tr[data-node="${id}"] td:nth-child(2)`));
    if (revs.every((r) => r.startsWith(String(api.revision)))) break;
    check(Date.now() < deadline, `every node shows revision ${api.revision}: ${revs.join(", ")}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  console.log(`cluster card: ${nodes.length} nodes at revision ${api.revision}; ${link}`);
} catch (e) {
  failures.push(e.message);
} finally {
  await browser.close();
}
if (failures.length) {
  console.error(failures.join("\n"));
  process.exit(1);
}
