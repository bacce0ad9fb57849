/* Active learning: the learning curve, the next batch's preview, Start round. */
"use strict";
(() => {
  const root = document.getElementById("al");
  const slug = root.dataset.slug;
  const { api, el, fmt, when, PALETTE } = CXR;
  let chart = null;

  async function curve() {
    const d = await api(`/api/projects/${slug}/learning-curve/`);
    const pts = d.versions.filter((v) => v.map_40 !== null).map((v) => ({ x: v.train_images, y: v.map_40, name: v.name, promoted: v.promoted }));
    const data = { datasets: [{ label: "gold mAP@0.4", data: pts, borderColor: PALETTE[0], backgroundColor: pts.map((p) => p.promoted ? PALETTE[2] : PALETTE[0]),
      pointRadius: 5, showLine: true, tension: 0 }] };
    const opts = { parsing: false, scales: { x: { type: "linear", beginAtZero: true, title: { display: true, text: "labeled images trained on" } },
      y: { min: 0, max: 1, title: { display: true, text: "gold mAP@0.4" } } },
      plugins: { legend: { display: false }, tooltip: { callbacks: { label: (c) => `${c.raw.name}: ${fmt(c.raw.y)} (${c.raw.x} images)` } } } };
    if (chart) { chart.data = data; chart.update(); } else chart = CXR.chart(document.getElementById("curve-chart"), { type: "scatter", data, options: opts });
    document.querySelector("#rounds").replaceChildren(
      el("thead", {}, el("tr", {}, ...["Round", "Strategy", "Budget", "Selected", "Final labels before", "Model", "Started"].map((h) => el("th", {}, h)))),
      el("tbody", {}, ...(d.rounds.length ? d.rounds.map((r) => el("tr", {}, el("td", {}, `#${r.number}`), el("td", {}, r.strategy), el("td", {}, r.budget),
        el("td", {}, r.selected), el("td", {}, r.labeled_before), el("td", { class: "mono small" }, r.model_version || "–"), el("td", { class: "small" }, when(r.created_at))))
        : [el("tr", {}, el("td", { class: "empty" }, "No round yet."))])));
    root.dataset.ready = "true";
  }

  async function preview() {
    const strategy = document.getElementById("strategy").value, budget = document.getElementById("budget").value;
    const box = document.getElementById("preview");
    box.replaceChildren(el("div", { class: "empty" }, el("span", { class: "spinner" }), " scoring…"));
    try {
      const d = await api(`/api/projects/${slug}/al-preview/?strategy=${encodeURIComponent(strategy)}&budget=${budget}`);
      document.getElementById("preview-info").textContent = `${d.strategy} with ${d.model_version} · pool ${d.pool}, ${d.scored} scored${d.unscored ? `, ${d.unscored} not scored yet (a round scores them first)` : ""}`;
      box.replaceChildren(...(d.selected.length ? d.selected.map((s, i) => el("a", { class: "thumb", href: `/images/${encodeURIComponent(s.id)}/`, "data-id": s.id },
        el("img", { src: s.thumbnail, alt: "" }),
        el("div", { class: "meta" }, el("span", { class: "id" }, `${i + 1}. ${s.id}`),
          el("span", { class: "badge" }, `entropy ${fmt(s.scores.entropy_max, 2)}`),
          el("span", { class: "badge grey" }, `LC ${fmt(s.scores.least_confidence_max, 2)}`),
          s.tta !== null && s.tta !== undefined ? el("span", { class: "badge grey" }, `TTA ${fmt(s.tta, 2)}`) : null)))
        : [el("div", { class: "empty" }, d.missing_scores.length ? `This strategy needs ${d.missing_scores.join(", ")} scores: Start round computes them.` : "Nothing to preview: pre-label the pool first.")]));
    } catch (e) { box.replaceChildren(el("div", { class: "empty" }, e.message)); }
  }

  document.getElementById("preview-btn").addEventListener("click", preview);
  document.getElementById("al-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const btn = document.getElementById("start-round"), out = document.getElementById("round-result");
    btn.disabled = true; out.replaceChildren(el("span", { class: "spinner" }), " scoring the pool and selecting…");
    try {
      let r = await api(`/api/projects/${slug}/al-rounds/`, { method: "POST", body: { strategy: document.getElementById("strategy").value, budget: Number(document.getElementById("budget").value) } });
      // a gpu worker scores the pool and assigns: follow the round (for an hour at most)
      const until = Date.now() + 3600 * 1000;
      while ((r.status === "pending" || r.status === "running") && Date.now() < until) {
        out.replaceChildren(el("span", { class: "spinner" }), ` round ${r.status}: scoring the pool and selecting…`);
        await new Promise((ok) => setTimeout(ok, 2000));
        r = await api(`/api/al-rounds/${r.id}/`);
      }
      if (r.status === "pending" || r.status === "running") throw new Error("still running: see the rounds below later");
      if (r.status !== "done") throw new Error(`round ${r.status}: ${r.reason}`);
      out.replaceChildren(el("span", { class: "badge ok" }, `round ${r.number}`), ` ${r.selected.length} images assigned to readers.`);
    } catch (err) { out.replaceChildren(el("span", { class: "badge bad" }, "not started"), ` ${err.message}`); }
    btn.disabled = false; curve(); preview();
  });
  curve().then(preview);
})();
