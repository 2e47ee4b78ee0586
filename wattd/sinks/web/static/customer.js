// wattd customer page: one customer's servers, power now (live over
// server-sent events), energy, cost and CO2 for today and the billing
// periods, the hourly price behind the load, comparisons, and bills.
// Plain DOM code; all text goes in through textContent, never innerHTML.
"use strict";

const SUMMARY_REFRESH_MS = 60000;
const DAY_MS = 86400000;

const page = {
  name: new URLSearchParams(location.search).get("name"),  // the operator's choice
  summary: null,
  live: new Map(),   // address -> latest card fields from the stream
  mine: new Set(),   // addresses on this page
  updates: 0,        // live messages applied (the browser test reads it)
  rendered: 0,       // summary renders (the browser test reads it)
  clockOffsetMs: 0,  // server clock minus browser clock
};
window.customerPage = page;

function apiUrl(path, params) {
  const query = new URLSearchParams(params || {});
  if (page.name) query.set("name", page.name);
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

function money(value) {
  return fmtMoney(value, page.summary && page.summary.currency);
}

function co2(kg) {
  if (kg === null || kg === undefined) return "–";
  return Math.abs(kg) < 1 ? fmtSig(kg * 1000, 3, 0, 1) + " g" : fmtSig(kg, 3, 0, 1) + " kg";
}

function localDate(ms) {
  const tz = page.summary ? page.summary.timezone : undefined;
  return new Date(ms).toLocaleDateString("en-CA", { timeZone: tz });  // YYYY-MM-DD
}

// -- loading -----------------------------------------------------------------

async function loadSummary() {
  let res;
  try {
    res = await fetch(apiUrl("/api/customer"));
  } catch (e) {
    showError("cannot reach the server");
    return;
  }
  if (!res.ok) { showError(`the server answered ${res.status}`); return; }
  const doc = await res.json();
  if (doc.customers) { showChooser(doc.customers); return; }
  page.summary = doc;
  page.clockOffsetMs = doc.now_ms - Date.now();
  page.mine = new Set(doc.sensors.map((s) => s.sensor));
  for (const s of doc.sensors) mergeLive(s);
  renderAll();
  page.rendered += 1;
}

function mergeLive(s) {
  if (!page.mine.has(s.sensor)) return;  // the operator's stream has every meter
  const known = page.live.get(s.sensor);
  page.live.set(s.sensor, known ? Object.assign(known, s) : s);
}

function connect() {
  const source = new EventSource("/api/events");
  const conn = document.getElementById("conn");
  const onDoc = (doc) => {
    for (const s of doc.sensors) mergeLive(s);
    page.updates += 1;
    if (page.summary) { renderLive(); }
  };
  source.addEventListener("snapshot", (e) => onDoc(JSON.parse(e.data)));
  source.addEventListener("update", (e) => onDoc(JSON.parse(e.data)));
  source.onopen = () => { conn.textContent = "live"; conn.className = "conn live"; };
  source.onerror = () => { conn.textContent = "reconnecting…"; conn.className = "conn down"; };
}

function showChooser(names) {
  document.getElementById("chooser").hidden = false;
  document.getElementById("who").textContent = "Customer pages";
  const list = document.getElementById("customer-list");
  list.replaceChildren(...names.map((n) =>
    el("li", {}, el("a", { href: "/customer?name=" + encodeURIComponent(n) }, n))));
}

function showError(text) {
  const node = document.getElementById("error");
  node.textContent = text;
  node.hidden = false;
}

// -- rendering ---------------------------------------------------------------

function renderAll() {
  const s = page.summary;
  document.getElementById("page").hidden = false;
  document.getElementById("who").textContent = s.customer;
  document.title = `wattd – ${s.customer}`;
  for (const label of ["today", "current", "previous"]) {
    const p = s.periods[label];
    setText(document.getElementById(`${label}-kwh`), fmtEnergy(p.it_kwh));
    setText(document.getElementById(`${label}-cost`), money(p.cost));
  }
  setText(document.getElementById("current-co2"), co2(s.periods.current.co2_kg));
  const last = s.periods.previous.co2_kg;
  setText(document.getElementById("previous-co2"), last === null ? "" : "last period " + co2(last));
  renderLive();
  drawCurve(s.curve);
  renderComparison(s.comparison);
  renderBills(s.bills);
  setText(document.getElementById("footer"),
    `Times in ${s.timezone}. Billing period ${localDate(s.periods.current.start_ms)} to now.`);
}

function liveWatts() {
  // Live meters only, as the dashboard counts them: a silent meter's last
  // reading says nothing about its power now.
  const staleMs = (page.summary.stale_after_s || 30) * 1000;
  const now = Date.now() + page.clockOffsetMs;
  let watts = 0, fresh = 0, stale = 0;
  for (const s of page.live.values()) {
    if (!s.time_ms) continue;
    if (now - s.time_ms > staleMs) { stale += 1; continue; }
    fresh += 1;
    watts += s.watts || 0;
  }
  return { watts: fresh ? watts : null, stale };
}

function renderLive() {
  const total = liveWatts();
  setText(document.getElementById("now-watts"), total.watts === null ? "–" : fmtWatts(total.watts) + " W");
  setText(document.getElementById("now-note"), total.stale ? `${total.stale} not heard lately` : "");
  renderServers();
}

function renderServers() {
  const body = document.querySelector("#servers tbody");
  const heads = [...document.querySelectorAll("#servers thead th")].map((th) => th.textContent);
  body.replaceChildren(...page.summary.servers.map((srv) => {
    const live = page.live.get(srv.sensor) || {};
    const cells = [
      srv.name, srv.rack || "–", fmtWatts(live.watts), fmtEnergy(srv.today.it_kwh),
      money(srv.today.cost), fmtEnergy(srv.current.it_kwh), money(srv.current.cost),
      money(srv.previous.cost),
    ];
    const row = el("tr", { "data-sensor": String(srv.sensor) },
      ...cells.map((text, i) => el("td", { "data-label": heads[i] }, text)));
    return row;
  }));
}

function drawCurve(points) {
  const svg = document.getElementById("curve");
  svg.replaceChildren();
  // Phones show the 800-unit chart small, with twice the type (style.css):
  // the axis labels need twice the room at the sides too.
  const phone = window.matchMedia("(max-width: 640px)").matches;
  const W = 800, H = 260, L = phone ? 120 : 64, R = phone ? 200 : 110, T = 14, B = phone ? 40 : 30;
  const hours = points.length;
  const info = document.getElementById("curve-info");
  if (!hours) { info.textContent = "No price or load for today yet."; return; }
  const maxW = Math.max(1, ...points.map((p) => p.watts || 0)) * 1.1;
  const prices = points.map((p) => p.price_per_kwh).filter((p) => p !== null && p !== undefined);
  const maxP = Math.max(0.0001, ...prices) * 1.1;
  const step = (W - L - R) / hours;
  const x = (i) => L + i * step;
  const yW = (w) => T + (H - T - B) * (1 - w / maxW);
  const yP = (p) => T + (H - T - B) * (1 - p / maxP);
  svg.append(svgEl("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }));
  points.forEach((p, i) => {
    if (p.watts === null || p.watts === undefined) return;
    svg.append(svgEl("rect", {
      x: x(i) + 1, y: yW(p.watts), width: Math.max(1, step - 2), height: H - B - yW(p.watts),
      class: "load-bar", "data-watts": p.watts,
    }));
  });
  let d = "";
  points.forEach((p, i) => {
    if (p.price_per_kwh === null || p.price_per_kwh === undefined) return;
    const y = yP(p.price_per_kwh);
    d += (d ? "L" : "M") + x(i).toFixed(1) + " " + y.toFixed(1) + "L" + x(i + 1).toFixed(1) + " " + y.toFixed(1);
  });
  if (d) svg.append(svgEl("path", { d, class: "price" }));
  const label = (text, px, py, anchor) => {
    const t = svgEl("text", { x: px, y: py, class: "label", "text-anchor": anchor });
    t.textContent = text;
    svg.append(t);
  };
  label(fmtWatts(maxW / 1.1) + " W", L - 4, yW(maxW / 1.1) + 4, "end");
  label("0", L - 4, H - B + 4, "end");
  if (prices.length) label(money(maxP / 1.1) + "/kWh", W - R + 4, yP(maxP / 1.1) + 4, "start");
  const tz = page.summary.timezone;
  for (let i = 0; i < hours; i += 6) {
    const hour = new Date(points[i].start_ms).toLocaleTimeString("en-GB", { timeZone: tz, hour: "2-digit", minute: "2-digit" });
    label(hour, x(i), H - B + (phone ? 30 : 16), "start");
  }
  const priced = points.filter((p) => p.price_per_kwh !== null && p.watts > 0);
  info.textContent = priced.length
    ? `Bars: your mean power in each hour so far. Line: the price of each hour (${priced.length} priced hours with load).`
    : "No load recorded today yet; the line is today's price.";
}

function renderComparison(cmp) {
  const body = document.querySelector("#compare tbody");
  const none = document.getElementById("compare-none");
  if (!cmp) { body.replaceChildren(); none.hidden = false; return; }
  const heads = [...document.querySelectorAll("#compare thead th")].map((th) => th.textContent);
  const actual = cmp.actual;
  const rows = [actual, ...cmp.locations];
  if (cmp.shifted) rows.push(cmp.shifted);
  none.hidden = rows.length > 1;
  body.replaceChildren(...rows.map((s) => {
    const isActual = s === actual;
    let diff = "–";
    if (!isActual && s.energy_cost !== null && actual.energy_cost !== null) {
      // Below a millionth it is rounding, not a difference.
      const delta = Math.abs(s.energy_cost - actual.energy_cost) < 1e-6 ? 0 : s.energy_cost - actual.energy_cost;
      diff = (delta > 0 ? "+" : "") + money(delta);
    }
    const cells = [s.label, fmtEnergy(s.facility_kwh), money(s.energy_cost), co2(s.co2_kg), diff];
    return el("tr", isActual ? { class: "actual" } : { class: "scenario" },
      ...cells.map((text, i) => el("td", { "data-label": heads[i] }, text)));
  }));
  setText(document.getElementById("compare-note"), cmp.note || "");
}

function billLink(startMs, endMs, format) {
  return apiUrl("/api/bill", { start: localDate(startMs), end: localDate(endMs), format });
}

function renderBills(periods) {
  const list = document.getElementById("bills");
  list.replaceChildren(...periods.map((p) => {
    const last = localDate(p.end_ms - DAY_MS / 2);
    return el("li", {}, `${localDate(p.start_ms)} to ${last} `,
      el("a", { href: billLink(p.start_ms, p.end_ms, "html"), class: "bill-html" }, "HTML"), " ",
      el("a", { href: billLink(p.start_ms, p.end_ms, "csv"), class: "bill-csv" }, "CSV"));
  }));
}

function setupForm() {
  const form = document.getElementById("bill-form");
  const today = new Date().toLocaleDateString("en-CA");
  document.getElementById("bill-end").value = today;
  document.getElementById("bill-start").value = today.slice(0, 8) + "01";
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const format = e.submitter ? e.submitter.dataset.format : "html";
    const start = document.getElementById("bill-start").value;
    const end = document.getElementById("bill-end").value;
    location.href = apiUrl("/api/bill", { start, end, format });
  });
}

setupForm();
loadSummary().then(() => { if (page.summary) connect(); });
setInterval(() => { if (page.summary) loadSummary(); }, SUMMARY_REFRESH_MS);
setInterval(() => { if (page.summary) renderLive(); }, 5000);
