// ringway's dashboard: reads the admin API once a second and draws it.
// Everything shown comes from the API (no data in the page); every value is
// set as text, never as HTML. The token, when this ringway asks for one,
// stays in this tab's sessionStorage.
"use strict";

const TOKEN_KEY = "ringway-token";
const HISTORY = 300; // seconds kept on the charts
const ROUTE_ROWS = 500; // rows shown at most (a filter narrows them)
const $ = (sel) => document.querySelector(sel);

let token = sessionStorage.getItem(TOKEN_KEY) || "";
let selected = null; // vHost of the charted route
let routeHistory = []; // client-side samples of the selected route
let lastRouteTotals = null; // {time, totals} for per-route request rates
let routeRates = {};
let routesCache = [];
let certsFetched = 0;
let polling = false;

class Unauthorized extends Error {}

async function api(path, init = {}) {
  const headers = Object.assign({}, init.headers || {});
  if (token) headers.Authorization = "Bearer " + token;
  const r = await fetch(path, Object.assign({}, init, { headers, cache: "no-store" }));
  if (r.status === 401) throw new Unauthorized();
  const text = await r.text();
  const body = text ? JSON.parse(text) : null;
  if (!r.ok) throw new Error((body && body.message) || r.statusText);
  return body;
}

function el(tag, text, attrs) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

function fmtInt(n) { return Number(n || 0).toLocaleString("en-US"); }
function fmtUs(us) {
  if (!us) return "0";
  if (us < 1000) return Math.round(us) + " µs";
  if (us < 1e6) return (us / 1000).toFixed(us < 10000 ? 2 : 1) + " ms";
  return (us / 1e6).toFixed(2) + " s";
}
function fmtDuration(s) {
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  return `${m}m ${s % 60}s`;
}

// ---- charts: lines on a canvas; each series has a dash pattern and a text
// legend with its latest value, so colour is never the only cue.
const SERIES_STYLE = [
  { color: "#0969da", dash: [] },
  { color: "#cf222e", dash: [6, 3] },
  { color: "#1a7f37", dash: [2, 2] },
  { color: "#9a6700", dash: [8, 3, 2, 3] },
  { color: "#8250df", dash: [1, 3] },
];

// `times` (seconds, one per value) place the points: the right edge is the
// newest, the left edge HISTORY seconds before it.
function drawChart(canvas, series, format, times) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 420, h = canvas.clientHeight || 160;
  if (canvas.width !== w * dpr) { canvas.width = w * dpr; canvas.height = h * dpr; }
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const left = 56, right = 6, top = 22, bottom = 14;
  let max = 0;
  for (const s of series) for (const v of s.values) if (v > max) max = v;
  max = max > 0 ? max * 1.1 : 1;
  g.strokeStyle = "#d0d7de"; g.fillStyle = "#5a6470"; g.font = "11px system-ui, sans-serif";
  g.setLineDash([]);
  for (let i = 0; i <= 2; i++) {
    const y = top + (h - top - bottom) * (i / 2);
    g.beginPath(); g.moveTo(left, y); g.lineTo(w - right, y); g.stroke();
    g.fillText(format(max * (1 - i / 2)), 2, y + 4);
  }
  g.fillText("−5 min", left, h - 2);
  g.fillText("now", w - right - 22, h - 2);
  const newest = times.length ? times[times.length - 1] : 0;
  const xOf = (t) => left + (w - left - right) * (1 - Math.min(HISTORY, newest - t) / HISTORY);
  let lx = left;
  series.forEach((s, i) => {
    const st = SERIES_STYLE[i % SERIES_STYLE.length];
    g.strokeStyle = st.color; g.lineWidth = 1.6; g.setLineDash(st.dash);
    g.beginPath();
    const n = s.values.length;
    s.values.forEach((v, j) => {
      const x = xOf(times[j]);
      const y = top + (h - top - bottom) * (1 - v / max);
      if (j === 0) g.moveTo(x, y); else g.lineTo(x, y);
    });
    g.stroke();
    // Legend: a dash sample, the name and the latest value.
    g.beginPath(); g.moveTo(lx, 9); g.lineTo(lx + 16, 9); g.stroke();
    g.setLineDash([]);
    const label = `${s.label} ${format(n ? s.values[n - 1] : 0)}`;
    g.fillStyle = "#1b1f23"; g.fillText(label, lx + 19, 13);
    lx += 19 + g.measureText(label).width + 12;
  });
  g.setLineDash([]);
  canvas.setAttribute("aria-label", series.map((s) => `${s.label} ${format(s.values[s.values.length - 1] || 0)}`).join(", "));
}

// Rates from running totals, averaged over SMOOTH samples: workers report
// once a second each, out of step with the sampling, so one-sample rates
// would zig-zag. Aligned with times.slice(SMOOTH).
const SMOOTH = 3;
function rate(values, seconds) {
  const out = [];
  for (let i = SMOOTH; i < values.length; i++) {
    const dt = seconds[i] - seconds[i - SMOOTH];
    out.push(dt > 0 ? Math.max(0, (values[i] - values[i - SMOOTH]) / dt) : 0);
  }
  return out;
}
const fmtRate = (v) => (v >= 100 ? Math.round(v).toLocaleString("en-US") : v.toFixed(1));
const CLASSES = ["2xx", "3xx", "4xx", "5xx"];

function drawGlobal(h) {
  const sec = h.second, later = sec.slice(SMOOTH);
  drawChart($("#c-rps"), [{ label: "req/s", values: rate(h.requests, sec) }], fmtRate, later);
  drawChart($("#c-lat"), [{ label: "p50", values: h.p50Us }, { label: "p99", values: h.p99Us }], fmtUs, sec);
  drawChart($("#c-status"), CLASSES.map((c) => ({ label: c, values: rate(h[c], sec) })), fmtRate, later);
}

function drawRoute() {
  const hs = routeHistory;
  const sec = hs.map((s) => s.t), later = sec.slice(SMOOTH);
  const col = (f) => hs.map(f);
  drawChart($("#r-rps"), [{ label: "req/s", values: rate(col((s) => s.requests), sec) }], fmtRate, later);
  drawChart($("#r-lat"), [
    { label: "p50", values: col((s) => s.p50) },
    { label: "p99", values: col((s) => s.p99) },
  ], fmtUs, sec);
  drawChart($("#r-status"), CLASSES.map((c) => ({ label: c, values: rate(col((s) => s[c]), sec) })), fmtRate, later);
}

// ---- tables
function policyNames(r) {
  const names = [];
  for (const k of ["auth", "authProvider", "rateLimit", "cors", "cache", "circuitBreaker"]) {
    if (r[k]) names.push(k);
  }
  if (r.autoHttps) names.push("autoHttps");
  return names.join(", ") || "—";
}

function renderRoutes(stats) {
  const filter = $("#route-filter").value.trim().toLowerCase();
  const body = $("#routes tbody");
  const rows = [];
  let shown = 0;
  for (const r of routesCache) {
    if (filter && !r.vHost.toLowerCase().includes(filter)) continue;
    if (++shown > ROUTE_ROWS) break;
    const key = r.vHost;
    const tr = el("tr", null, { "data-route": key, tabindex: "0" });
    if (key === selected) tr.className = "selected";
    const paths = (r.paths || []).map((p) => p.prefix || p.path || "").filter(Boolean).join(" ");
    tr.append(el("td", key), el("td", r.id || "—"), el("td", paths || "/"), el("td", r.strategy),
      el("td", policyNames(r)), el("td", (r.backends || []).length),
      el("td", fmtInt((stats.routes || {})[routeStatsKey(key)]), { class: "num route-requests" }),
      el("td", fmtRate(routeRates[routeStatsKey(key)] || 0), { class: "num" }));
    tr.addEventListener("click", () => select(key));
    tr.addEventListener("keydown", (e) => { if (e.key === "Enter") select(key); });
    rows.push(tr);
  }
  body.replaceChildren(...rows);
  $("#route-count").textContent = `(${routesCache.length}${shown > ROUTE_ROWS ? `, first ${ROUTE_ROWS} shown` : ""})`;
}

// Stats name routes by their key: the vHost, lower case.
function routeStatsKey(vHost) { return vHost.toLowerCase(); }

function stateText(b) {
  if (b.state === "maintenance") return ["■ maintenance", "state-maintenance"];
  if (b.circuit === "open") return [`⚡ circuit open (${b.circuitOpenWorkers} workers)`, "state-circuit"];
  if (b.state === "down") return ["▼ down", "state-down"];
  return ["▲ up", "state-up"];
}

function renderBackends(stats) {
  const rows = (stats.backends || []).map((b) => {
    const tr = el("tr", null, { "data-backend": `${b.route}/${b.id}` });
    const [text, cls] = stateText(b);
    const lat = b.latencyUs || {};
    const inMaint = b.state === "maintenance";
    const button = el("button", inMaint ? "End maintenance" : "Maintenance", { type: "button" });
    button.addEventListener("click", () => toggleMaintenance(b.route, b.id, !inMaint));
    const action = el("td");
    action.append(button);
    tr.append(el("td", b.route), el("td", b.id), el("td", text, { class: "state " + cls }),
      el("td", fmtInt(b.inFlight), { class: "num" }), el("td", fmtInt(b.requests), { class: "num requests" }),
      el("td", fmtInt(b.errors), { class: "num errors" }), el("td", fmtUs(lat.p50), { class: "num" }),
      el("td", fmtUs(lat.p99), { class: "num" }), action);
    return tr;
  });
  $("#backends tbody").replaceChildren(...rows);
}

function renderCertificates(list) {
  const now = Date.now() / 1000;
  const rows = list.map((c) => {
    const tr = el("tr", null, { "data-certificate": c.domain || "" });
    let expires;
    if (c.notAfter === null || c.notAfter === undefined) {
      expires = el("td", "— (not issued yet)");
    } else {
      const days = Math.floor((c.notAfter - now) / 86400);
      const when = new Date(c.notAfter * 1000).toISOString().slice(0, 10);
      const soon = days < 14;
      expires = el("td", `${when} (${soon ? "⚠ " : ""}${days} days)`, soon ? { class: "warn" } : {});
    }
    let source = c.source + (c.default ? ", default" : "");
    const a = c.acme;
    if (a) {
      source += ` · ${a.state === "failed" ? "✖ " : ""}${a.state}`;
      if (a.renewAt) source += `, renews ${new Date(a.renewAt * 1000).toISOString().slice(0, 10)}`;
      if (a.lastError) source += ` — ${a.lastError}`;
      if (a.nextAttemptAt) source += ` (next try ${new Date(a.nextAttemptAt * 1000).toLocaleTimeString()})`;
    }
    tr.append(el("td", c.domain), el("td", (c.sans || []).join(", ")), el("td", c.issuer || "—"), expires,
      el("td", source, a && a.state === "failed" ? { class: "warn source" } : { class: "source" }));
    return tr;
  });
  if (!list.length) {
    const tr = el("tr");
    tr.append(el("td", "no certificates", { colspan: "5" }));
    rows.push(tr);
  }
  $("#certificates tbody").replaceChildren(...rows);
}

function renderCluster(c) {
  $("#cluster-section").hidden = false;
  const link = c.connected
    ? `node ${c.nodeId} · etcd connected · revision ${c.revision}`
    : `node ${c.nodeId} · ✖ etcd unreachable: ${c.lastError || "not connected yet"} (serving the last config)`;
  $("#cluster-link").textContent = link;
  $("#cluster-link").classList.toggle("warn", !c.connected);
  const now = Date.now() / 1000;
  const rows = c.nodes.map((n) => {
    const tr = el("tr", null, { "data-node": n.nodeId });
    const behind = n.revision < c.revision;
    tr.append(
      el("td", n.nodeId + (n.self ? " (this node)" : "")),
      el("td", `${n.revision}${behind ? " ⚠ behind" : ""}`, behind ? { class: "warn" } : {}),
      el("td", `${Math.max(0, Math.round(now - n.heartbeatAt))} s ago`),
      el("td", n.version),
      el("td", String(n.pid)),
    );
    return tr;
  });
  if (!rows.length) {
    const tr = el("tr");
    tr.append(el("td", "no node registered (etcd unreachable?)", { colspan: "5" }));
    rows.push(tr);
  }
  $("#cluster tbody").replaceChildren(...rows);
}

// ---- actions
async function toggleMaintenance(route, id, on) {
  const what = on
    ? `Put backend ${id} of ${route} in maintenance? It stops taking new requests.`
    : `End maintenance of backend ${id} of ${route}? It takes requests again once healthy.`;
  if (!window.confirm(what)) return;
  const path = `/api/v1/routes/${encodeURIComponent(route)}/backends/${encodeURIComponent(id)}/dead`;
  try {
    await api(path, { method: on ? "POST" : "DELETE" });
    setStatus(`${id}: maintenance ${on ? "on" : "off"}`);
    await tick();
  } catch (e) {
    handleError(e);
  }
}

function select(vHost) {
  selected = vHost;
  routeHistory = [];
  $("#route-name").textContent = vHost;
  for (const tr of document.querySelectorAll("#routes tbody tr")) {
    tr.classList.toggle("selected", tr.dataset.route === vHost);
  }
}

// ---- the poll loop
function setStatus(text) { $("#status").textContent = text; }

function handleError(e) {
  if (e instanceof Unauthorized) { showLogin(token ? "That token was refused." : ""); return; }
  setStatus("error: " + e.message);
}

async function tick() {
  const now = Date.now();
  const [info, stats, history] = await Promise.all([api("/api/v1/info"), api("/api/v1/stats"), api("/api/v1/history")]);
  // The route list changes only with the generation (10,000 routes are
  // megabytes: never polled for nothing).
  if (info.generation !== tick.generation) {
    routesCache = await api("/api/v1/routes");
    tick.generation = info.generation;
  }
  if (info.cluster) renderCluster(await api("/api/v1/cluster"));
  if (now - certsFetched > 5000) {
    renderCertificates(await api("/api/v1/certificates"));
    certsFetched = now;
  }
  $("#version").textContent = info.version;
  $("#uptime").textContent = fmtDuration(info.uptimeSeconds);
  $("#workers").textContent = info.workers;
  $("#generation").textContent = info.generation;
  $("#rps").textContent = fmtRate(stats.requests.perSecond["1s"]);
  $("#total-requests").textContent = fmtInt(stats.requests.total);
  $("#latency").textContent = `${fmtUs(stats.latencyUs.p50)} / ${fmtUs(stats.latencyUs.p99)}`;
  $("#total-5xx").textContent = fmtInt(stats.responses["5xx"]);
  $("#open").textContent = fmtInt(stats.openConnections);
  // Per-route rates from the totals of two polls.
  const totals = stats.routes || {};
  if (lastRouteTotals) {
    const dt = Math.max(0.2, (now - lastRouteTotals.time) / 1000);
    routeRates = {};
    for (const [k, v] of Object.entries(totals)) routeRates[k] = Math.max(0, (v - (lastRouteTotals.totals[k] || 0)) / dt);
  }
  lastRouteTotals = { time: now, totals };
  renderRoutes(stats);
  renderBackends(stats);
  drawGlobal(history);
  // The charted route may have been deleted meanwhile.
  if (selected && !routesCache.some((r) => r.vHost === selected)) selected = null;
  if (!selected && routesCache.length) select(routesCache[0].vHost);
  if (selected) {
    const r = await api("/api/v1/stats/" + encodeURIComponent(selected));
    // Timed when the totals arrived (a slow poll must not look like a burst).
    const s = { t: Date.now() / 1000, requests: r.requests.total, p50: r.latencyUs.p50, p99: r.latencyUs.p99 };
    for (const c of CLASSES) s[c] = r.responses[c];
    routeHistory.push(s);
    while (routeHistory.length && routeHistory[0].t < s.t - HISTORY) routeHistory.shift();
    drawRoute();
  }
  setStatus("live · updated " + new Date(now).toLocaleTimeString());
}

async function loop() {
  if (polling) return;
  polling = true;
  while (polling) {
    const started = Date.now();
    try {
      await tick();
    } catch (e) {
      handleError(e);
      if (e instanceof Unauthorized) break;
    }
    await new Promise((r) => setTimeout(r, Math.max(200, 1000 - (Date.now() - started))));
  }
  polling = false;
}

function showLogin(message) {
  polling = false;
  $("#app").hidden = true;
  $("#login").hidden = false;
  $("#logout").hidden = true;
  $("#login-error").textContent = message || "";
  setStatus("signed out");
  $("#token").focus();
}

function showApp() {
  $("#login").hidden = true;
  $("#app").hidden = false;
  $("#logout").hidden = !token;
  loop();
}

document.addEventListener("DOMContentLoaded", () => {
  $("#login").addEventListener("submit", (e) => {
    e.preventDefault();
    token = $("#token").value.trim();
    sessionStorage.setItem(TOKEN_KEY, token);
    $("#token").value = "";
    showApp();
  });
  $("#logout").addEventListener("click", () => {
    token = "";
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin("");
  });
  $("#route-filter").addEventListener("input", () => renderRoutes({ routes: lastRouteTotals ? lastRouteTotals.totals : {} }));
  showApp();
});
