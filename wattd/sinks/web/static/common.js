// wattd pages: the helpers both the dashboard and the customer page use
// (DOM building, number, money, energy and time formatting). Loaded first.
"use strict";

const SVG = "http://www.w3.org/2000/svg";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else node.setAttribute(k, v);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svgEl(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  return node;
}

function fmt(value, digits) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  return Number(value).toLocaleString(undefined, {
    minimumFractionDigits: digits, maximumFractionDigits: digits,
  });
}

// Power, energy, current and money all take their decimals from this one
// rule: enough for `sig` significant digits, within [minDigits, maxDigits].
// Values side by side then read alike (0.0010 beside 0.0031, never 0.001),
// and a small amount is not rounded away to 0.00.
function decimalsFor(value, sig, minDigits, maxDigits) {
  const v = Math.abs(Number(value));
  if (!Number.isFinite(v) || v === 0) return minDigits;
  const digits = sig - 1 - Math.floor(Math.log10(v));
  return Math.min(maxDigits, Math.max(minDigits, digits));
}

function fmtSig(value, sig, minDigits, maxDigits) {
  if (value === null || value === undefined) return "–";
  return fmt(value, decimalsFor(value, sig, minDigits, maxDigits));
}

function fmtWatts(w) {
  return fmtSig(w, 3, 0, 1);
}

function fmtMoney(value, currency) {
  if (value === null || value === undefined) return "–";
  try {
    const code = currency || "USD";
    // The currency's own minor unit (2 for EUR, 0 for JPY) is the least shown.
    const minor = new Intl.NumberFormat(undefined, { style: "currency", currency: code })
      .resolvedOptions().maximumFractionDigits;
    const digits = decimalsFor(value, 2, minor, 6);
    return new Intl.NumberFormat(undefined, {
      style: "currency", currency: code, minimumFractionDigits: digits, maximumFractionDigits: digits,
    }).format(value);
  } catch (e) {
    return fmtSig(value, 2, 2, 6) + " " + (currency || "");
  }
}

function fmtEnergy(kwh) {
  if (kwh === null || kwh === undefined) return "–";
  return Math.abs(kwh) < 1 ? fmtSig(kwh * 1000, 3, 0, 3) + " Wh" : fmtSig(kwh, 4, 0, 3) + " kWh";
}

function fmtAmps(a) {
  return fmtSig(a, 3, 0, 3);
}

function fmtAge(seconds) {
  if (seconds < 0) seconds = 0;
  if (seconds < 90) return Math.round(seconds) + " s ago";
  if (seconds < 5400) return Math.round(seconds / 60) + " min ago";
  if (seconds < 172800) return Math.round(seconds / 3600) + " h ago";
  return Math.round(seconds / 86400) + " days ago";
}

function fmtDuration(seconds) {
  const d = Math.floor(seconds / 86400), h = Math.floor(seconds % 86400 / 3600);
  const m = Math.floor(seconds % 3600 / 60);
  return (d ? d + " d " : "") + (d || h ? h + " h " : "") + m + " min";
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}
