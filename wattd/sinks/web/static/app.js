// wattd dashboard: live cards over server-sent events, sparklines from the
// store, a health panel, and a detail view with the last raw waveform.
// Plain DOM code, no framework and no build step. All text goes in through
// textContent, never innerHTML, so names from the config cannot inject markup.
"use strict";

const HISTORY_REFRESH_MS = 60000;
const WAVEFORM_REFRESH_MS = 2000;

const state = {
  sensors: new Map(),   // address -> card data from the server
  cards: new Map(),     // address -> DOM element
  totals: null,
  health: null,
  settings: { stale_after_s: 30, history: false },
  clockOffsetMs: 0,     // server clock minus browser clock
  sparks: {},           // address -> [[ms, watts], ...]
  updates: 0,           // live messages applied (the browser test reads it)
  detail: null,         // address shown in the detail view, or null
};
window.wattd = state;

function serverNow() {
  return Date.now() + state.clockOffsetMs;
}

// -- live data ---------------------------------------------------------------

function applySnapshot(doc) {
  state.settings = doc.settings || state.settings;
  state.sensors.clear();
  for (const s of doc.sensors) state.sensors.set(s.sensor, s);
  for (const [addr, card] of state.cards) {
    if (!state.sensors.has(addr)) { card.remove(); state.cards.delete(addr); }
  }
  applyCommon(doc);
}

function applyUpdate(doc) {
  // Known meters come with their live fields only: merge into the card data.
  for (const s of doc.sensors) {
    const known = state.sensors.get(s.sensor);
    state.sensors.set(s.sensor, known ? Object.assign(known, s) : s);
  }
  applyCommon(doc);
}

function applyCommon(doc) {
  if (doc.now_ms) state.clockOffsetMs = doc.now_ms - Date.now();
  state.totals = doc.totals;
  state.health = doc.health;
  state.updates += 1;
  render();
}

function connect() {
  const conn = document.getElementById("conn");
  const source = new EventSource("/api/events");
  source.addEventListener("snapshot", (e) => applySnapshot(JSON.parse(e.data)));
  source.addEventListener("update", (e) => applyUpdate(JSON.parse(e.data)));
  source.onopen = () => { conn.textContent = "live"; conn.className = "conn live"; };
  source.onerror = () => { conn.textContent = "reconnecting…"; conn.className = "conn down"; };
}

// -- overview ----------------------------------------------------------------

function render() {
  renderSummary();
  renderCards();
  renderGroups("racks", state.totals && state.totals.racks);
  renderGroups("customers", state.totals && state.totals.customers);
  renderHealth();
  if (state.detail !== null) renderDetailValues();
}

function staleNote(total) {
  if (!total.stale) return "";
  return total.stale === 1 ? "1 stale meter not counted" : `${total.stale} stale meters not counted`;
}

function renderSummary() {
  const all = state.totals && state.totals.all;
  if (!all) return;
  setText(document.getElementById("total-watts"), fmtWatts(all.watts));
  const stale = document.getElementById("total-stale");
  setText(stale, staleNote(all));
  stale.hidden = !all.stale;
  setText(document.getElementById("total-kwh"), fmtEnergy(all.kwh_today));
  const wrap = document.getElementById("total-cost-wrap");
  wrap.hidden = all.cost_today === null || all.cost_today === undefined;
  if (!wrap.hidden) setText(document.getElementById("total-cost"), fmtMoney(all.cost_today, all.currency));
}

function makeCard(addr) {
  const dl = el("dl", {});
  const field = (key, label) => {
    dl.append(el("dt", {}, label), el("dd", { "data-field": key }, "–"));
  };
  field("kwh_today", "today");
  field("cost_today", "cost today");
  field("pf", "PF");
  field("vrms", "volts");
  field("rssi_dbm", "signal");
  const spark = svgEl("svg", { class: "spark", viewBox: "0 0 200 36", preserveAspectRatio: "none" });
  spark.append(svgEl("polyline", { points: "" }));
  const card = el("article", { class: "card", "data-sensor": String(addr), tabindex: "0" },
    el("div", { class: "head" }, el("span", { class: "name" }), el("span", { class: "addr" }, "#" + addr)),
    el("div", { class: "where" }),
    el("div", { class: "watts" }, el("span", { class: "value" }, "–"), el("span", { class: "unit" }, "W")),
    dl,
    spark,
    el("div", { class: "flags" }),
    el("div", { class: "seen" }, "never seen"));
  card.addEventListener("click", () => { location.hash = "#sensor/" + addr; });
  card.addEventListener("keydown", (e) => { if (e.key === "Enter") location.hash = "#sensor/" + addr; });
  return card;
}

function signalBars(dbm) {
  const level = dbm === null || dbm === undefined ? 0 : dbm >= -55 ? 4 : dbm >= -65 ? 3 : dbm >= -75 ? 2 : dbm >= -85 ? 1 : 0;
  const bars = el("span", { class: "bars", title: dbm + " dBm" });
  for (let i = 1; i <= 4; i++) {
    const bar = el("i", { class: i <= level ? "on" : "" });
    bar.style.height = (i * 25) + "%";
    bars.append(bar);
  }
  return bars;
}

function renderCards() {
  const box = document.getElementById("cards");
  const addrs = [...state.sensors.keys()].sort((a, b) => a - b);
  document.getElementById("no-sensors").hidden = addrs.length > 0;
  let previous = null;
  for (const addr of addrs) {
    let card = state.cards.get(addr);
    if (!card) {
      card = makeCard(addr);
      state.cards.set(addr, card);
      if (previous) previous.after(card); else box.prepend(card);
    }
    fillCard(card, state.sensors.get(addr));
    previous = card;
  }
  updateAges();
}

function fillCard(card, s) {
  setText(card.querySelector(".name"), s.name);
  const where = [s.rack && "rack " + s.rack, s.customer, s.location].filter(Boolean).join(" · ");
  setText(card.querySelector(".where"), where);
  const watts = card.querySelector(".watts .value");
  setText(watts, fmtWatts(s.watts));
  watts.dataset.value = s.watts === undefined || s.watts === null ? "" : String(s.watts);
  const set = (key, text) => setText(card.querySelector(`[data-field="${key}"]`), text);
  set("kwh_today", fmtEnergy(s.kwh_today));
  set("cost_today", s.cost_today === undefined || s.cost_today === null ? "–" : fmtMoney(s.cost_today, s.currency));
  set("pf", fmt(s.pf, 2));
  set("vrms", s.vrms === undefined ? "–" : fmt(s.vrms, 1) + " V");
  const rssi = card.querySelector('[data-field="rssi_dbm"]');
  if (rssi.dataset.dbm !== String(s.rssi_dbm)) {
    rssi.dataset.dbm = String(s.rssi_dbm);
    rssi.replaceChildren(signalBars(s.rssi_dbm), document.createTextNode(s.rssi_dbm === undefined || s.rssi_dbm === null ? "–" : s.rssi_dbm + " dBm"));
  }
  setText(card.querySelector(".flags"), (s.flags || []).join(", ").replaceAll("_", " "));
  card.classList.toggle("never", !s.time_ms);
  card.dataset.timeMs = s.time_ms ? String(s.time_ms) : "";
  drawSpark(card, state.sparks[String(s.sensor)]);
}

function updateAges() {
  const now = serverNow();
  const staleS = state.settings.stale_after_s || 30;
  for (const card of state.cards.values()) {
    const seen = card.querySelector(".seen");
    const t = Number(card.dataset.timeMs);
    if (!t) { setText(seen, "never seen"); card.classList.remove("stale"); continue; }
    const age = (now - t) / 1000;
    const stale = age > staleS;
    card.classList.toggle("stale", stale);
    setText(seen, (stale ? "stale: last seen " : "last seen ") + fmtAge(age));
  }
}

function renderGroups(id, groups) {
  const body = document.querySelector(`#${id} tbody`);
  const names = Object.keys(groups || {}).sort();
  body.replaceChildren(...names.map((name) => {
    const g = groups[name];
    const meters = g.stale ? `${g.sensors} (${g.stale} stale)` : String(g.sensors);
    // A customer's name opens the page that customer sees.
    const label = id === "customers"
      ? el("a", { href: "/customer?name=" + encodeURIComponent(name) }, name) : name;
    return el("tr", {}, el("td", {}, label), el("td", {}, meters),
      el("td", { title: staleNote(g) }, fmtWatts(g.watts)),
      el("td", {}, fmtEnergy(g.kwh_today)), el("td", {}, g.cost_today === null ? "–" : fmtMoney(g.cost_today, g.currency)));
  }));
  body.closest("section").hidden = names.length === 0;
}

function cell(text, cls) {
  return el("td", cls ? { class: cls } : {}, text);
}

function renderHealth() {
  const h = state.health;
  const panel = document.getElementById("health");
  panel.hidden = !h;
  if (!h) return;
  document.querySelector("#ports tbody").replaceChildren(...h.ports.map((p) => el("tr", {},
    cell(p.name), cell(p.connected ? "up" : "down", p.connected ? "good" : "bad"), cell(fmt(p.frames_per_s, 2)),
    cell(p.frames_ok), cell(p.bad_checksum, p.bad_checksum ? "bad" : ""), cell(p.rejected - p.bad_checksum),
    cell(p.garbage_bytes), cell(p.outages))));
  document.querySelector("#sinks tbody").replaceChildren(...h.sinks.map((s) => el("tr", {},
    cell(s.name), cell(s.started ? "up" : "starting", s.started ? "good" : "bad"),
    cell(s.queue_depth + " / " + s.queue_capacity), cell(s.spool_depth === null ? "–" : fmt(s.spool_depth, 0)),
    cell(s.written), cell(s.dropped, s.dropped ? "bad" : ""), cell(s.errors, s.errors ? "bad" : ""))));
  let line = `wattd ${h.version} · up ${fmtDuration(h.uptime_s)} · ${h.readings_total} readings · `
    + `${fmt(h.frames_per_s, 2)} frames/s · ${h.sensors_seen} of ${h.sensors_total} meters seen recently`;
  if (h.last_reload_error) line += " · last reload rejected: " + h.last_reload_error;
  setText(document.getElementById("health-line"), line);
}

// -- sparklines ------------------------------------------------------------------

function sparkPoints(series, width, height, span) {
  if (!series || series.length < 2) return "";
  const end = serverNow(), start = end - span;
  let lo = Infinity, hi = -Infinity;
  for (const [, w] of series) { lo = Math.min(lo, w); hi = Math.max(hi, w); }
  if (hi - lo < 1) { hi += 0.5; lo -= 0.5; }
  return series.map(([t, w]) => {
    const x = ((t - start) / span) * width;
    const y = height - 2 - ((w - lo) / (hi - lo)) * (height - 4);
    return x.toFixed(1) + "," + y.toFixed(1);
  }).join(" ");
}

function drawSpark(card, series) {
  const line = card.querySelector(".spark polyline");
  line.setAttribute("points", sparkPoints(series, 200, 36, 24 * 3600 * 1000));
}

async function loadSparks() {
  if (!state.settings.history) return;
  try {
    const res = await fetch("/api/history?hours=24");
    if (!res.ok) return;
    const doc = await res.json();
    state.sparks = doc.series || {};
    for (const [addr, card] of state.cards) drawSpark(card, state.sparks[String(addr)]);
  } catch (e) { /* the next round will try again */ }
}

// -- detail view -------------------------------------------------------------------

let waveformTimer = null;

function route() {
  const m = location.hash.match(/^#sensor\/(\d+)$/);
  state.detail = m ? Number(m[1]) : null;
  document.getElementById("overview").hidden = state.detail !== null;
  document.getElementById("detail").hidden = state.detail === null;
  clearInterval(waveformTimer);
  waveformTimer = null;
  if (state.detail !== null) {
    renderDetailValues();
    loadWaveform();
    loadDetailHistory();
    waveformTimer = setInterval(loadWaveform, WAVEFORM_REFRESH_MS);
    window.scrollTo(0, 0);
  }
}

function renderDetailValues() {
  const s = state.sensors.get(state.detail);
  const title = document.getElementById("detail-title");
  setText(title, s ? `${s.name} (#${s.sensor})` : `sensor #${state.detail}`);
  const box = document.getElementById("detail-values");
  if (!s) { box.replaceChildren(); return; }
  const items = [
    ["watts", fmtWatts(s.watts) + " W"], ["VA", fmtWatts(s.va)], ["volts", fmt(s.vrms, 1) + " V"],
    ["amps", fmtAmps(s.irms) + " A"], ["power factor", fmt(s.pf, 3)], ["today", fmtEnergy(s.kwh_today)],
    ["total", fmtEnergy(s.wh_total === undefined ? null : s.wh_total / 1000)],
    ["cost today", s.cost_today === undefined || s.cost_today === null ? "–" : fmtMoney(s.cost_today, s.currency)],
    ["signal", s.rssi_dbm === undefined || s.rssi_dbm === null ? "–" : s.rssi_dbm + " dBm"],
    ["port", s.port || "–"],
    ["current zero", s.current_zero === undefined || s.current_zero === null ? "–"
      : fmt(s.current_zero, 1) + " counts" + ((s.flags || []).includes("zero_estimated") ? " (estimated)" : "")],
  ];
  box.replaceChildren(...items.map(([k, v]) => el("div", {}, el("dt", {}, k), el("dd", {}, v))));
}

async function loadWaveform() {
  const addr = state.detail;
  const info = document.getElementById("waveform-info");
  try {
    const res = await fetch(`/api/sensors/${addr}/waveform`);
    if (addr !== state.detail) return;
    if (!res.ok) {
      document.getElementById("waveform").replaceChildren();
      setText(info, res.status === 404 ? "No frame from this meter since the daemon started." : `error ${res.status}`);
      return;
    }
    drawWaveform(await res.json());
  } catch (e) {
    setText(info, "waveform unavailable: " + e);
  }
}

function drawTrace(svg, values, zero, zeroLabelText, top, height, cls, xOf, label) {
  let lo = Math.min(...values.slice(1), zero), hi = Math.max(...values.slice(1), zero);
  if (hi - lo < 10) { const mid = (hi + lo) / 2; lo = mid - 5; hi = mid + 5; }
  const pad = (hi - lo) * 0.08;
  lo -= pad; hi += pad;
  const yOf = (v) => top + height - ((v - lo) / (hi - lo)) * height;
  svg.append(svgEl("line", { class: "axis", x1: 50, x2: 790, y1: top + height, y2: top + height }));
  svg.append(svgEl("line", { class: "zero", x1: 50, x2: 790, y1: yOf(zero), y2: yOf(zero) }));
  const zeroLabel = svgEl("text", { class: "label", x: 790, y: yOf(zero) - 4, "text-anchor": "end" });
  zeroLabel.textContent = zeroLabelText;
  svg.append(zeroLabel);
  for (const v of [hi - pad, lo + pad]) {
    const t = svgEl("text", { class: "label", x: 46, y: yOf(v) + 4, "text-anchor": "end" });
    t.textContent = fmt(v, 0);
    svg.append(t);
  }
  const title = svgEl("text", { class: "label", x: 52, y: top - 6 });
  title.textContent = label;
  svg.append(title);
  const d = values.slice(1).map((v, i) => (i ? "L" : "M") + xOf(i + 1).toFixed(1) + "," + yOf(v).toFixed(1)).join(" ");
  svg.append(svgEl("path", { class: cls, d }));
  values.forEach((v, i) => {
    svg.append(svgEl("circle", { class: cls + (i === 0 ? " skipped" : ""), cx: xOf(i), cy: yOf(v), r: 3 }));
  });
}

function drawWaveform(w) {
  const svg = document.getElementById("waveform");
  svg.replaceChildren();
  const n = Math.max(w.voltage_counts.length, w.current_counts.length);
  const xOf = (i) => 60 + (i / Math.max(1, n - 1)) * 720;
  const vLabel = w.voltage_zero_source === "configured"
    ? `zero ${fmt(w.voltage_zero, 1)} (configured)` : `midline ${fmt(w.voltage_zero, 1)} (estimated)`;
  drawTrace(svg, w.voltage_counts, w.voltage_zero, vLabel, 24, 130, "voltage", xOf,
    `voltage AD${w.voltage_channel} (counts)`);
  const iLabel = `zero ${fmt(w.current_zero, 1)} (${w.current_zero_source})`;
  drawTrace(svg, w.current_counts, w.current_zero, iLabel, 190, 130, "current", xOf,
    `current AD${w.current_channel} (counts)`);
  const interval = w.sample_interval_ms ? ` · ${fmt(w.sample_interval_ms, 3)} ms between samples` : "";
  const mean = w.current_mean === null ? ""
    : ` · current mean ${fmt(w.current_mean, 2)} vs zero ${fmt(w.current_zero, 2)} (${w.current_zero_source})`;
  setText(document.getElementById("waveform-info"),
    `frame of ${new Date(w.time_ms).toLocaleTimeString()} · ${n} samples${interval}${mean}`
    + ` · ${fmtWatts(w.watts)} W, ${fmt(w.vrms, 1)} V, ${fmtAmps(w.irms)} A`);
}

async function loadDetailHistory() {
  const addr = state.detail;
  const svg = document.getElementById("detail-history");
  const info = document.getElementById("detail-history-info");
  svg.replaceChildren();
  if (!state.settings.history) { setText(info, "History needs the SQLite store (store.enabled)."); return; }
  try {
    const res = await fetch(`/api/history?hours=24&sensor=${addr}`);
    if (!res.ok || addr !== state.detail) return;
    const doc = await res.json();
    const series = (doc.series || {})[String(addr)] || [];
    const points = sparkPoints(series, 800, 160, 24 * 3600 * 1000);
    if (points) svg.append(svgEl("polyline", { class: "history", points }));
    const watts = series.map(([, w]) => w);
    setText(info, series.length
      ? `${series.length} minute${series.length === 1 ? "" : "s"} with readings · min ${fmtWatts(Math.min(...watts))} W · max ${fmtWatts(Math.max(...watts))} W`
      : "No stored readings in the last 24 hours yet.");
  } catch (e) {
    setText(info, "history unavailable: " + e);
  }
}

// -- start ----------------------------------------------------------------------

window.addEventListener("hashchange", route);
document.addEventListener("DOMContentLoaded", () => {
  route();
  connect();
  setInterval(updateAges, 1000);
  setTimeout(loadSparks, 1500);
  setInterval(loadSparks, HISTORY_REFRESH_MS);
  setText(document.getElementById("footer"), "wattd · live values by server-sent events");
});
