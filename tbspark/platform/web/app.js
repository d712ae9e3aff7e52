"use strict";
// The live page's script (served as a file: the page's Content-Security-Policy allows no inline
// script). Everything it shows goes into the DOM as text (textContent, setAttribute), never as HTML,
// so names, keys and query-string values cannot become markup. The JWT comes from the login form and
// lives in this tab's sessionStorage only.

// Settings from the query string: ?key=windSpeed&minutes=5&refresh_ms=2000&max_devices=20
const Q = new URLSearchParams(location.search);
function setting(name, fallback, lo, hi) {
  const v = Number(Q.get(name));
  return Q.has(name) && Number.isFinite(v) ? Math.min(Math.max(v, lo), hi) : fallback;
}
const KEY = Q.get("key") || "windSpeed";
// The time range shown; the select in the header changes it (and the URL, so a reload keeps it).
const RANGES = [1, 5, 15, 60, 360, 1440];
let MINUTES = setting("minutes", 5, 0.1, 1440);
const REFRESH_MS = setting("refresh_ms", 2000, 500, 3600000);
const MAX_DEVICES = Math.round(setting("max_devices", 20, 1, 500));
const METRICS = {count: KEY + "Count", min: KEY + "Min", max: KEY + "Max"};
const PALETTE = ["#2e7dd7", "#e8590c", "#2b8a3e", "#9c36b5", "#c92a2a", "#0b7285", "#5c940d", "#862e9c", "#d9480f", "#364fc7"];
const SVGNS = "http://www.w3.org/2000/svg";
const STORE = window.sessionStorage;
let timer = null;

class NeedLogin extends Error {}

function $(id) { return document.getElementById(id); }
function fmtNum(v) { return (typeof v === "number" && isFinite(v)) ? String(Number(v.toFixed(3))) : String(v); }
function fmtTime(ms) { return new Date(ms).toISOString().substring(11, 19); }

// Axis ticks at round UTC times (…:00, :10, :20 or 12:00, 12:05 …): the smallest step from this list
// that gives at most `most` ticks between xmin and xmax. Labels drop the seconds from 1 min steps on.
const STEPS_S = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];
function roundTicks(xmin, xmax, most) {
  const span = Math.max(xmax - xmin, 1);
  const step = (STEPS_S.find(s => span / (s * 1000) <= most) || STEPS_S[STEPS_S.length - 1]) * 1000;
  const ticks = [];
  for (let t = Math.ceil(xmin / step) * step; t <= xmax; t += step) ticks.push(t);
  return {step, ticks, label: ms => step >= 60000 ? fmtTime(ms).substring(0, 5) : fmtTime(ms)};
}
function el(tag, attrs, text) {
  const e = document.createElementNS(SVGNS, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  return e;
}
function div(className, text) {
  const d = document.createElement("div");
  d.className = className;
  d.textContent = text;
  return d;
}

// -- the token ------------------------------------------------------------------------------------

async function errorMessage(r) {
  try { const body = await r.json(); if (body && typeof body.message === "string") return body.message; }
  catch (e) { /* not JSON */ }
  return "HTTP " + r.status;
}

function saveTokens(pair) {
  STORE.setItem("tbspark.token", pair.token);
  STORE.setItem("tbspark.refreshToken", pair.refreshToken);
}

function clearTokens() {
  STORE.removeItem("tbspark.token");
  STORE.removeItem("tbspark.refreshToken");
}

async function refreshTokens() {
  const refreshToken = STORE.getItem("tbspark.refreshToken");
  if (!refreshToken) return false;
  const r = await fetch("/api/auth/token", {method: "POST", headers: {"Content-Type": "application/json"},
                                            body: JSON.stringify({refreshToken: refreshToken})});
  if (!r.ok) return false;
  saveTokens(await r.json());
  return true;
}

async function api(path) {
  const call = () => fetch(path, {headers: {"X-Authorization": "Bearer " + STORE.getItem("tbspark.token")}});
  if (!STORE.getItem("tbspark.token")) throw new NeedLogin();
  let r = await call();
  if (r.status === 401) {
    if (!(await refreshTokens())) { clearTokens(); throw new NeedLogin(); }
    r = await call();
  }
  if (!r.ok) throw new Error("GET " + path.split("?")[0] + " → " + r.status);
  return r.json();
}

// -- data -----------------------------------------------------------------------------------------

async function listAll(path) {
  const out = [];
  for (let page = 0; page < 100; page++) {
    const body = await api(path + (path.includes("?") ? "&" : "?") + "pageSize=1000&page=" + page);
    out.push(...(body.data || []));
    if (!body.hasNext) break;
  }
  return out;
}

async function readHistory(type, id, keys, startTs, endTs) {
  const q = "keys=" + encodeURIComponent(keys.join(",")) + "&startTs=" + startTs + "&endTs=" + endTs +
            "&limit=50000&orderBy=ASC&useStrictDataTypes=true";
  return api("/api/plugins/telemetry/" + encodeURIComponent(type) + "/" + encodeURIComponent(id) +
             "/values/timeseries?" + q);
}

function toPoints(raw) { return (Array.isArray(raw) ? raw : []).map(p => [p.ts, Number(p.value)]).filter(p => isFinite(p[1])); }

// A line chart in inline SVG: one polyline per series, y grid with labels, x labels as UTC times.
function drawChart(container, series, opts) {
  const withData = series.filter(s => s.points.length);
  if (!withData.length) {
    container.replaceChildren(div("empty", "no " + KEY + " data in the last " + MINUTES + " min"));
    return;
  }
  const W = Math.max(container.clientWidth || 900, 400), H = opts.height || 260;
  const L = 48, R = 180, T = 10, B = 26;
  let xmin = Infinity, xmax = -Infinity, ymin = Infinity, ymax = -Infinity;
  for (const s of withData) for (const [x, y] of s.points) {
    xmin = Math.min(xmin, x); xmax = Math.max(xmax, x); ymin = Math.min(ymin, y); ymax = Math.max(ymax, y);
  }
  if (xmax === xmin) { xmax = xmin + 1000; xmin -= 1000; }
  const pad = (ymax - ymin) * 0.08 || 1; ymin -= pad; ymax += pad;
  const sx = x => L + (x - xmin) / (xmax - xmin) * (W - L - R);
  const sy = y => T + (1 - (y - ymin) / (ymax - ymin)) * (H - T - B);
  const svg = el("svg", {width: W, height: H, viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": opts.label});
  for (let i = 0; i <= 4; i++) {
    const y = ymin + (ymax - ymin) * i / 4;
    svg.appendChild(el("line", {x1: L, x2: W - R, y1: sy(y), y2: sy(y), stroke: "#e3e7ec"}));
    svg.appendChild(el("text", {x: L - 6, y: sy(y) + 4, "text-anchor": "end"}, fmtNum(Math.round(y * 10) / 10)));
  }
  const axis = roundTicks(xmin, xmax, Math.max(2, Math.floor((W - L - R) / 90)));
  for (const x of axis.ticks) {
    svg.appendChild(el("line", {x1: sx(x), x2: sx(x), y1: T, y2: H - B, stroke: "#f0f2f5"}));
    svg.appendChild(el("text", {x: sx(x), y: H - 8, "text-anchor": "middle", class: "tick", "data-ts": x},
                       axis.label(x)));
  }
  const legend = el("g", {class: "legend"});
  withData.forEach((s, i) => {
    const color = PALETTE[i % PALETTE.length];
    const pts = s.points.map(([x, y]) => sx(x).toFixed(1) + "," + sy(y).toFixed(1)).join(" ");
    svg.appendChild(el("polyline", {points: pts, fill: "none", stroke: color, "stroke-width": opts.markers ? 2 : 1.2}));
    if (opts.markers) for (const [x, y] of s.points) svg.appendChild(el("circle", {cx: sx(x), cy: sy(y), r: 3, fill: color}));
    const last = s.points[s.points.length - 1][1];
    const ly = T + 14 + i * 18;
    legend.appendChild(el("rect", {x: W - R + 12, y: ly - 9, width: 12, height: 4, fill: color}));
    legend.appendChild(el("text", {x: W - R + 30, y: ly - 4, "data-series": s.name}, s.name + "  " + fmtNum(last)));
  });
  svg.appendChild(legend);
  container.replaceChildren(svg);
}

function fillTable(tbody, rows) {
  const numeric = tbody.parentElement.id === "zones-table" ? 4 : 1;
  tbody.replaceChildren(...rows.map(cells => {
    const tr = document.createElement("tr");
    cells.forEach((c, i) => {
      const td = document.createElement("td");
      td.textContent = c;
      if (i >= cells.length - numeric) td.className = "num";
      tr.appendChild(td);
    });
    return tr;
  }));
}

async function refresh() {
  const endTs = Date.now() + 60000, startTs = Date.now() - MINUTES * 60000;
  const [assets, devices] = await Promise.all([listAll("/api/tenant/assets"), listAll("/api/tenant/devices")]);
  assets.sort((a, b) => String(a.name).localeCompare(String(b.name)));
  devices.sort((a, b) => String(a.name).localeCompare(String(b.name), undefined, {numeric: true}));
  const zoneKeys = [KEY, METRICS.count, METRICS.min, METRICS.max];
  const zoneData = await Promise.all(assets.map(a => readHistory("ASSET", a.id.id, zoneKeys, startTs, endTs)));
  const shown = devices.slice(0, MAX_DEVICES);
  const devData = await Promise.all(shown.map(d => readHistory("DEVICE", d.id.id, [KEY], startTs, endTs)));

  const zoneSeries = assets.map((a, i) => ({name: String(a.name), points: toPoints(zoneData[i][KEY])}));
  drawChart($("zones-chart"), zoneSeries, {markers: true, label: "zone averages", height: 240});
  drawChart($("devices-chart"), shown.map((d, i) => ({name: String(d.name), points: toPoints(devData[i][KEY])})),
            {markers: false, label: "raw values", height: 260});
  $("zones-title").textContent = "Zone averages of " + KEY + " per window (assets)";
  $("devices-title").textContent = "Raw " + KEY + " (devices)" +
    (devices.length > shown.length ? " — first " + shown.length + " of " + devices.length : "");

  const zoneRows = [];
  assets.forEach((a, i) => {
    const avg = toPoints(zoneData[i][KEY]);
    if (!avg.length) return;
    const [ts, v] = avg[avg.length - 1];
    const at = k => { const p = toPoints(zoneData[i][k]).find(p => p[0] === ts); return p ? fmtNum(p[1]) : "–"; };
    zoneRows.push([String(a.name), fmtTime(ts), fmtNum(v), at(METRICS.count), at(METRICS.min), at(METRICS.max)]);
  });
  fillTable(document.querySelector("#zones-table tbody"), zoneRows);
  const devRows = [];
  shown.forEach((d, i) => {
    const pts = toPoints(devData[i][KEY]);
    if (pts.length) devRows.push([String(d.name), String(d.type), fmtTime(pts[pts.length - 1][0]), fmtNum(pts[pts.length - 1][1])]);
  });
  fillTable(document.querySelector("#devices-table tbody"), devRows);
  const st = $("status");
  st.className = "status";
  st.textContent = assets.length + " assets, " + devices.length + " devices · key " + KEY + " · last " + MINUTES +
                   " min · updated " + fmtTime(Date.now()) + " UTC";
  document.body.dataset.loaded = "true";
}

// -- screens --------------------------------------------------------------------------------------

function showLogin(message) {
  clearTimeout(timer);
  $("dashboard").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("status").className = "status";
  $("status").textContent = "not logged in";
  $("login-error").textContent = message || "";
  $("username").focus();
}

function showDashboard() {
  $("login").hidden = true;
  $("dashboard").hidden = false;
  $("logout").hidden = false;
  loop();
}

async function loop() {
  clearTimeout(timer);
  try {
    await refresh();
  } catch (e) {
    if (e instanceof NeedLogin) { showLogin("Your session has ended: log in again."); return; }
    const st = $("status"); st.className = "status error"; st.textContent = "error: " + e.message;
  }
  timer = setTimeout(loop, REFRESH_MS);
}

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("login-error").textContent = "";
  $("login-submit").disabled = true;
  try {
    const r = await fetch("/api/auth/login", {method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({username: $("username").value, password: $("password").value})});
    if (!r.ok) { $("login-error").textContent = await errorMessage(r); return; }
    saveTokens(await r.json());
    $("password").value = "";
    showDashboard();
  } catch (e) {
    $("login-error").textContent = "login failed: " + e.message;
  } finally {
    $("login-submit").disabled = false;
  }
});

$("logout").addEventListener("click", async () => {
  const token = STORE.getItem("tbspark.token");
  clearTokens();
  if (token) {
    // Ends the session on the platform too: its refresh token stops working.
    try { await fetch("/api/auth/logout", {method: "POST", headers: {"X-Authorization": "Bearer " + token}}); }
    catch (e) { /* the local tokens are gone either way */ }
  }
  showLogin("Logged out.");
});

// The time-range select: the query's value (added to the list when it is not one of RANGES).
const rangeSelect = $("range");
for (const m of [...new Set([...RANGES, MINUTES])].sort((a, b) => a - b)) {
  const label = m >= 60 && m % 60 === 0 ? (m / 60) + " h" : m + " min";
  const option = document.createElement("option");
  option.value = String(m);
  option.textContent = "last " + label;
  rangeSelect.appendChild(option);
}
rangeSelect.value = String(MINUTES);
rangeSelect.addEventListener("change", () => {
  MINUTES = Number(rangeSelect.value);
  Q.set("minutes", String(MINUTES));
  window.history.replaceState(null, "", location.pathname + "?" + Q.toString());
  if (!$("dashboard").hidden) loop();
});

if (STORE.getItem("tbspark.token")) showDashboard(); else showLogin();
