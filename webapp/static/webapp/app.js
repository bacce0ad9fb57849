/* Shared helpers for the platform's pages: API calls with CSRF, polling, formatting,
   colour scales and box drawing.  No framework: each page script is small. */
"use strict";

const CXR = (() => {
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

  /** Call the platform API; JSON in and out; throws Error(message) on a non-2xx answer. */
  async function api(path, { method = "GET", body = null, form = null } = {}) {
    const headers = { "X-CSRFToken": csrf(), Accept: "application/json" };
    let payload = null;
    if (form) payload = form;
    else if (body !== null) { headers["Content-Type"] = "application/json"; payload = JSON.stringify(body); }
    const res = await fetch(path, { method, headers, body: payload, credentials: "same-origin" });
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = { detail: text.slice(0, 200) }; }
    if (!res.ok) {
      const err = data && data.error ? data.error : data;
      const msg = (err && (err.message || err.detail)) || `${res.status} ${res.statusText}`;
      const e = new Error(msg); e.status = res.status; e.data = data; throw e;
    }
    return data;
  }

  /** Call fn every ms until it returns true (done); survives errors; returns a stop(). */
  function poll(fn, ms = 1500) {
    let stopped = false;
    const tick = async () => {
      if (stopped) return;
      let done = false;
      try { done = await fn(); } catch (e) { console.warn(e); }
      if (!done && !stopped) setTimeout(tick, ms);
    };
    tick();
    return () => { stopped = true; };
  }

  const el = (tag, attrs = {}, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") node.className = v;
      else if (k === "style") node.style.cssText = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  };

  const fmt = (v, digits = 3) => (v === null || v === undefined || Number.isNaN(v)) ? "–" : Number(v).toFixed(digits);
  const pct = (v) => (v === null || v === undefined) ? "–" : `${Math.round(v * 100)}%`;
  const duration = (s) => {
    if (s === null || s === undefined) return "–";
    s = Math.max(0, Math.round(s));
    return s >= 3600 ? `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`
      : s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`;
  };
  const when = (iso) => iso ? new Date(iso).toLocaleString() : "–";

  /** Red (0) -> amber -> green (1) for agreement-like values; grey when unknown. */
  function agreementColor(v) {
    if (v === null || v === undefined || Number.isNaN(v)) return "#9aa5b1";
    const t = Math.max(0, Math.min(1, v));
    const hue = 4 + t * 136; // 4 (red) .. 140 (green)
    return `hsl(${hue}, 58%, ${42 - t * 6}%)`;
  }

  const STATE_BADGE = { unassigned: "grey", reading: "", read: "warn", adjudication: "bad", final: "ok" };
  const stateBadge = (s) => el("span", { class: `badge ${STATE_BADGE[s] ?? ""}` }, s);
  const statusBadge = (s) => el("span", {
    class: `badge ${{ done: "ok", failed: "bad", cancelled: "grey", running: "", pending: "warn" }[s] ?? ""}` }, s);

  /** A progress bar element; update with setBar(bar, fraction). */
  function bar(fraction = 0, cls = "") {
    const inner = el("span", { style: `width:${Math.round(fraction * 100)}%` });
    return el("div", { class: `bar ${cls}` }, inner);
  }
  function setBar(node, fraction) { node.firstChild.style.width = `${Math.round(fraction * 100)}%`; }

  /** Chart.js defaults that match the page. */
  function chartDefaults() {
    if (!window.Chart) return;
    Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
    Chart.defaults.font.size = 12;
    Chart.defaults.color = "#5f6b7a";
    Chart.defaults.maintainAspectRatio = false;
    Chart.defaults.animation = false;
  }
  chartDefaults();

  /** A Chart.js chart that fills its .chart-box (both dimensions), without animation. */
  function chart(canvas, config) {
    config.options = { responsive: true, maintainAspectRatio: false, animation: false, ...(config.options || {}) };
    return new Chart(canvas, config);
  }

  const PALETTE = ["#1f6fb2", "#e4572e", "#29a36a", "#8e44ad", "#f0a202", "#17becf", "#d6336c",
    "#6c757d", "#2e4057", "#a0522d", "#4daf4a", "#984ea3", "#ff7f00", "#377eb8"];

  return { api, poll, chart, el, fmt, pct, duration, when, agreementColor, stateBadge, statusBadge, bar, setBar, PALETTE };
})();
