/* Project dashboard: counts, reader progress, agreement heatmap, kappa, consensus runs. */
"use strict";
(() => {
  const root = document.getElementById("dashboard");
  const slug = root.dataset.slug;
  const { api, el, fmt, pct, bar, agreementColor, statusBadge, when } = CXR;
  let statesChart = null, kappaChart = null, agreementFor = undefined;

  function stats(d) {
    const c = d.counts;
    const cards = [
      ["imported", c.imported, ""], ["quarantined", c.quarantined, c.quarantined ? "bad" : ""],
      ["assigned", c.assigned, ""], ["read (all k)", c.read, ""],
      ["consensus done", c.consensus_done, "ok"], ["waiting adjudication", c.waiting_adjudication, c.waiting_adjudication ? "warn" : ""],
      ["gold set", c.gold, ""],
    ];
    document.getElementById("stats").replaceChildren(...cards.map(([l, n, cls]) =>
      el("div", { class: `stat ${cls}`, "data-stat": l }, el("div", { class: "n" }, n), el("div", { class: "l" }, l))));
  }

  function readers(d) {
    const body = d.readers.length ? d.readers.map((r) => el("tr", {},
      el("td", {}, el("strong", {}, r.reader)),
      el("td", { style: "width:55%" }, bar(r.fraction, r.fraction >= 1 ? "ok" : "")),
      el("td", { class: "num" }, `${r.completed} / ${r.assigned}`),
      el("td", { class: "num muted" }, pct(r.fraction)))) : [el("tr", {}, el("td", { class: "empty" }, "No images assigned yet."))];
    document.querySelector("#readers").replaceChildren(el("tbody", {}, ...body));
  }

  function quarantine(d) {
    const rows = d.quarantine.length ? d.quarantine.map((q) => el("tr", {}, el("td", { class: "mono" }, q.reason), el("td", { class: "num" }, q.count)))
      : [el("tr", {}, el("td", { class: "muted" }, "Nothing quarantined."))];
    document.querySelector("#quarantine").replaceChildren(el("tbody", {}, ...rows));
  }

  function states(d) {
    const labels = Object.keys(d.states), values = Object.values(d.states);
    const colors = { unassigned: "#b8c2cc", reading: "#1f6fb2", read: "#f0a202", adjudication: "#c0392b", final: "#29a36a" };
    const data = { labels: ["images"], datasets: labels.map((l, i) => ({ label: l, data: [values[i]], backgroundColor: colors[l] })) };
    if (statesChart) { statesChart.data = data; statesChart.update(); return; }
    statesChart = CXR.chart(document.getElementById("states-chart"), { type: "bar", data,
      options: { indexAxis: "y", scales: { x: { stacked: true, beginAtZero: true, ticks: { precision: 0 } }, y: { stacked: true, display: false } },
        plugins: { legend: { position: "bottom" } } } });
  }

  function violations(d) {
    const rows = d.violations.length ? d.violations.map((v) => el("tr", {},
      el("td", { class: "mono" }, v.image), el("td", {}, `${v.actual_reader || "unknown user"} in ${v.workspace_reader}'s workspace`),
      el("td", { class: "muted small" }, when(v.detected_at))))
      : [el("tr", {}, el("td", { class: "muted" }, "No violations: every annotation came from the reader it was assigned to."))];
    document.querySelector("#violations").replaceChildren(el("tbody", {}, ...rows));
  }

  function runStatus(d) {
    const r = d.consensus.latest_run;
    const box = document.getElementById("run-status");
    if (!r) { box.replaceChildren("No consensus run yet."); return true; }
    const busy = r.status === "pending" || r.status === "running";
    box.replaceChildren(el("div", { class: "inline", id: "latest-run", "data-status": r.status },
      el("span", {}, `Latest run #${r.id} (${r.strategy}, ${r.trigger})`), statusBadge(r.status),
      busy ? el("span", { class: "spinner" }) : null,
      r.stats && r.stats.images !== undefined ? el("span", { class: "muted small" }, `${r.stats.images} images, ${r.stats.boxes ?? "?"} boxes`) : null,
      r.reason ? el("span", { class: "muted small" }, r.reason) : null));
    document.getElementById("rerun").disabled = busy;
    return !busy;
  }

  async function agreement(runId) {
    if (agreementFor === runId) return;
    const a = await api(`/api/projects/${slug}/agreement/${runId ? `?run=${runId}` : ""}`);
    agreementFor = runId; // only once drawn: a failed call is retried on the next refresh
    const pairs = a.pairwise.filter((p) => p.class_id === null);
    const names = [...new Set(pairs.flatMap((p) => [p.reader_a, p.reader_b]))].sort();
    const f1 = {};
    for (const p of pairs) { f1[`${p.reader_a}|${p.reader_b}`] = p; f1[`${p.reader_b}|${p.reader_a}`] = p; }
    const heat = document.getElementById("heatmap");
    if (!names.length) heat.replaceChildren(el("div", { class: "empty" }, "No two readers share an image yet."));
    else heat.replaceChildren(el("table", { class: "heat", id: "heat-table" },
      el("thead", {}, el("tr", {}, el("th", {}), ...names.map((n) => el("th", { style: "text-align:center" }, n)))),
      el("tbody", {}, ...names.map((a1) => el("tr", {}, el("th", {}, a1), ...names.map((b1) => {
        if (a1 === b1) return el("td", { class: "cell", style: "background:#e9edf2;color:#8895a3" }, "—");
        const p = f1[`${a1}|${b1}`];
        const v = p && p.n_images ? p.f1 : null;
        return el("td", { class: "cell", style: `background:${agreementColor(v)}`, title: p ? `${p.n_images} shared images` : "no shared images" }, v === null ? "·" : fmt(v, 2));
      }))))));
    const kap = a.kappa.concat((a.image_kappa || []).map((k) => ({ ...k, class_name: `${k.label} (image)` })))
      .filter((k) => k.kappa !== null);
    const data = { labels: kap.map((k) => k.class_name), datasets: [{ label: "kappa", data: kap.map((k) => k.kappa),
      backgroundColor: kap.map((k) => agreementColor((k.kappa + 1) / 2)), maxBarThickness: 28 }] };
    if (kappaChart) { kappaChart.data = data; kappaChart.update(); }
    else kappaChart = CXR.chart(document.getElementById("kappa-chart"), { type: "bar", data,
      options: { indexAxis: "y", scales: { x: { min: -1, max: 1 } }, plugins: { legend: { display: false } } } });
    const vs = a.reader_vs_consensus || [];
    document.querySelector("#vs-consensus").replaceChildren(
      el("thead", {}, el("tr", {}, el("th", {}, "Reader"), el("th", { class: "num" }, "Images"), el("th", { class: "num" }, "Sensitivity"), el("th", { class: "num" }, "Precision"))),
      el("tbody", {}, ...(vs.length ? vs.map((r) => el("tr", {}, el("td", {}, r.reader), el("td", { class: "num" }, r.n_images),
        el("td", { class: "num" }, fmt(r.sensitivity, 2)), el("td", { class: "num" }, fmt(r.precision, 2))))
        : [el("tr", {}, el("td", { class: "empty" }, "No consensus yet."))])));
  }

  function batchStatus(d) {
    const b = d.latest_batch, box = document.getElementById("batch-status");
    if (!b) { box.textContent = "No import yet."; return true; }
    const c = b.counts, done = c.total - c.pending;
    box.replaceChildren(el("div", { class: "inline", id: "latest-batch", "data-pending": c.pending },
      `Import #${b.id} (${b.source}):`, el("span", { class: "badge ok" }, `${c.imported} imported`),
      c.duplicate ? el("span", { class: "badge grey" }, `${c.duplicate} duplicate`) : null,
      c.quarantined ? el("span", { class: "badge bad" }, `${c.quarantined} quarantined`) : null,
      c.pending ? el("span", {}, el("span", { class: "spinner" }), ` ${c.pending} to go`) : null),
      el("div", { style: "margin-top:4px" }, bar(c.total ? done / c.total : 1, c.pending ? "" : "ok")));
    return c.pending === 0;
  }

  let timer = null;
  /* Refresh every 2 s while a consensus run or an import is going, else every 20 s. */
  let inFlight = false;
  async function refresh() {
    clearTimeout(timer);
    if (inFlight) { timer = setTimeout(refresh, 500); return; } // one refresh at a time
    inFlight = true;
    let busy = true;
    try {
      const d = await api(`/api/projects/${slug}/dashboard/`);
      stats(d); readers(d); quarantine(d); states(d); violations(d);
      const runSettled = runStatus(d), importSettled = batchStatus(d);
      busy = !(runSettled && importSettled);
      await agreement(d.consensus.latest_done_run);
      root.dataset.ready = "true";
    } catch (e) { console.warn(e); }
    inFlight = false;
    timer = setTimeout(refresh, busy ? 2000 : 20000);
  }

  async function action(button, path, describe, init = { method: "POST" }) {
    const out = document.getElementById("action-status");
    button.disabled = true;
    out.replaceChildren(el("span", { class: "spinner" }), " working…");
    try { out.replaceChildren(el("span", { class: "badge ok" }, "done"), " ", describe(await api(path, init))); }
    catch (e) { out.replaceChildren(el("span", { class: "badge bad" }, "not done"), ` ${e.message}`); }
    button.disabled = false;
    refresh();
  }

  document.getElementById("upload-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const files = document.getElementById("upload-files").files;
    if (!files.length) return;
    const form = new FormData();
    for (const f of files) form.append("files", f);
    action(document.getElementById("upload"), `/api/projects/${slug}/uploads/`,
      (b) => `import #${b.id} started with ${b.counts.total} files`, { method: "POST", form });
  });
  document.getElementById("assign").addEventListener("click", (e) => action(e.target,
    `/api/projects/${slug}/assignments/`, (rows) => `${rows.length} new assignments`));
  document.getElementById("push").addEventListener("click", (e) => action(e.target,
    `/api/projects/${slug}/label-studio/push/`, (r) => `${r.tasks} tasks and ${r.adjudications} adjudication cases pushed to Label Studio`));
  refresh();
})();
