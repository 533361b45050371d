// The dashboard in a real browser (Chromium driven by playwright-core),
// against a running ringway with traffic. Started by tests/dashboard.rs,
// which passes: ADMIN (http://host:port of the admin listener), PROXY
// (host:port of the proxy), VHOST (the route), BACKENDS (ids, comma
// separated), TOKEN (the admin token), SCREENSHOT (where to write it),
// CHROMIUM (the browser binary). Every wait is bounded; any failure exits 1.
import { chromium } from "playwright-core";
import http from "node:http";

const { ADMIN, PROXY, VHOST, BACKENDS, TOKEN, SCREENSHOT, CHROMIUM } = process.env;
const backends = BACKENDS.split(",");
const [proxyHost, proxyPort] = PROXY.split(":");
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function check(cond, message) {
  if (!cond) throw new Error("check failed: " + message);
}

// One proxied GET on a fresh connection; resolves to its status.
function proxied() {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: proxyHost, port: Number(proxyPort), path: "/", headers: { Host: VHOST }, agent: false, timeout: 5000 },
      (res) => { res.resume(); res.on("end", () => resolve(res.statusCode)); },
    );
    req.on("timeout", () => req.destroy(new Error("proxied GET timed out")));
    req.on("error", reject);
    req.end();
  });
}

async function traffic(n) {
  for (let i = 0; i < n; i++) check((await proxied()) === 200, "a proxied GET answered 200");
}

async function api(path) {
  const r = await fetch(ADMIN + path, { headers: { Authorization: "Bearer " + TOKEN } });
  check(r.ok, `GET ${path}: ${r.status}`);
  return r.json();
}

// Polls `probe` until it returns a truthy value (at most `ms`).
async function until(what, ms, probe) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    last = await probe();
    if (last) return last;
    await sleep(200);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}`);
}

const num = (text) => Number(String(text).replace(/[^0-9.]/g, ""));
const row = (page, id) => page.locator(`tr[data-backend="${VHOST}/${id}"]`);

const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox"] });
const failures = [];
try {
  const page = await browser.newPage({ viewport: { width: 1366, height: 900 } });
  page.on("pageerror", (e) => failures.push("page error: " + e.message));
  page.on("dialog", (d) => d.accept()); // the maintenance confirmation

  // 1. A token is required: the page asks for it, refuses a wrong one.
  await page.goto(ADMIN + "/", { timeout: 15000 });
  await page.locator("#login").waitFor({ state: "visible", timeout: 10000 });
  await page.fill("#token", "wrong-token");
  await page.click("#login button[type=submit]");
  await page.locator("#login-error", { hasText: "refused" }).waitFor({ timeout: 10000 });
  await page.fill("#token", TOKEN);
  await page.click("#login button[type=submit]");
  await page.locator("#app").waitFor({ state: "visible", timeout: 10000 });
  console.log("login: a wrong token is refused, the right one shows the dashboard");
  check(await page.locator("#cluster-section").isHidden(), "no cluster card outside cluster mode");

  // 2. With traffic, the numbers match the stats API once traffic stops.
  await traffic(60);
  const info = await api("/api/v1/info");
  await until("the page's total to match the API's", 15000, async () => {
    const stats = await api("/api/v1/stats");
    return num(await page.textContent("#total-requests")) === stats.requests.total && stats.requests.total >= 60;
  });
  const stats = await api("/api/v1/stats");
  for (const b of stats.backends) {
    const shown = num(await row(page, b.id).locator(".requests").textContent());
    check(shown === b.requests, `backend ${b.id}: page ${shown} = API ${b.requests}`);
  }
  check((await page.textContent("#version")) === info.version, "version shown");
  check(num(await page.textContent("#workers")) === info.workers, "workers shown");
  check(num(await page.textContent("#generation")) === info.generation, "generation shown");
  check(await page.locator(`#routes tr[data-route="${VHOST}"]`).count() === 1, "the route is listed");
  console.log(`numbers: total ${stats.requests.total} and every backend's requests match the API`);

  // 3. Maintenance from the page (confirmed): traffic moves off the backend.
  const target = backends[0];
  await row(page, target).locator("button", { hasText: "Maintenance" }).click();
  await row(page, target).locator(".state", { hasText: "maintenance" }).waitFor({ timeout: 10000 });
  const before = await api("/api/v1/stats");
  const count = (s, id) => s.backends.find((b) => b.id === id).requests;
  await traffic(30);
  const after = await api("/api/v1/stats");
  check(count(after, target) === count(before, target), `${target} in maintenance got no requests`);
  const others = backends.slice(1).reduce((n, id) => n + count(after, id) - count(before, id), 0);
  check(others === 30, `the other backends took all 30 (took ${others})`);
  check((await api(`/api/v1/config`)).maintenance.some((m) => m.backend === target), "the API shows maintenance");
  console.log(`maintenance: ${target} took 0 of 30 requests while in maintenance`);

  await row(page, target).locator("button", { hasText: "End maintenance" }).click();
  await row(page, target).locator(".state", { hasText: "up" }).waitFor({ timeout: 10000 });
  const back = await api("/api/v1/stats");
  await traffic(30);
  const later = await api("/api/v1/stats");
  check(count(later, target) > count(back, target), `${target} takes requests again`);
  console.log(`maintenance off: ${target} took ${count(later, target) - count(back, target)} of 30`);

  // 4. A screenshot under load: charts drawn from a few seconds of traffic.
  const load = (async () => {
    const end = Date.now() + 6000;
    while (Date.now() < end) await Promise.all([proxied(), proxied(), proxied(), proxied()]);
  })();
  await until("a non-zero request rate on the page", 10000, async () => num(await page.textContent("#rps")) > 0);
  await sleep(3000);
  await page.screenshot({ path: SCREENSHOT, fullPage: true });
  await load;
  console.log("screenshot: " + SCREENSHOT);
} catch (e) {
  failures.push(e.stack || String(e));
} finally {
  await browser.close();
}
if (failures.length) {
  console.error(failures.join("\n"));
  process.exit(1);
}
console.log("dashboard: ok");
