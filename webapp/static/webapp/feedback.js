/* Feedback: accepted / adjusted / rejected / missed per class and model version, ratings. */
"use strict";
(() => {
  const root = document.getElementById("feedback");
  const slug = root.dataset.slug;
  const { api, el, pct, when } = CXR;
  let chart = null, data = null;
  const COLORS = { accepted: "#29a36a", adjusted: "#f0a202", rejected: "#c0392b", missed: "#6c757d" };

  function draw(version) {
    const rows = data.implicit.filter((r) => r.model_version === version);
    const labels = rows.map((r) => r.class_name);
    const ds = ["accepted", "adjusted", "rejected", "missed"].map((k) => ({ label: k, data: rows.map((r) => r[k]), backgroundColor: COLORS[k], maxBarThickness: 28 }));
    const cfg = { labels, datasets: ds };
    if (chart) { chart.data = cfg; chart.update(); }
    else chart = CXR.chart(document.getElementById("outcome-chart"), { type: "bar", data: cfg,
      options: { indexAxis: "y", scales: { x: { stacked: true, beginAtZero: true, ticks: { precision: 0 }, title: { display: true, text: "boxes" } }, y: { stacked: true } },
        plugins: { legend: { position: "bottom" } } } });
  }

  async function main() {
    data = await api(`/api/projects/${slug}/feedback/`);
    const versions = [...new Set(data.implicit.map((r) => r.model_version))];
    const select = document.getElementById("version");
    select.replaceChildren(...versions.map((v) => el("option", { value: v }, v)));
    select.value = versions[versions.length - 1] || "";
    select.addEventListener("change", () => draw(select.value));
    if (versions.length) draw(select.value);
    document.querySelector("#rates").replaceChildren(
      el("thead", {}, el("tr", {}, ...["Model", "Class", "Shown", "Accepted", "Adjusted", "Rejected", "Missed"].map((h, i) => el("th", { class: i > 1 ? "num" : "" }, h)))),
      el("tbody", {}, ...(data.implicit.length ? data.implicit.map((r) => el("tr", {}, el("td", { class: "mono small" }, r.model_version), el("td", {}, r.class_name),
        el("td", { class: "num" }, r.predicted), el("td", { class: "num" }, pct(r.acceptance_rate)), el("td", { class: "num" }, pct(r.adjustment_rate)),
        el("td", { class: "num" }, pct(r.rejection_rate)), el("td", { class: "num" }, `${pct(r.miss_rate)} (${r.missed})`)))
        : [el("tr", {}, el("td", { class: "empty" }, "No feedback yet: it appears once readers submit images that had pre-labels."))])));
    const useful = data.ratings.filter((r) => r.useful).length;
    document.getElementById("rating-summary").textContent = data.ratings.length ? `${useful} of ${data.ratings.length} found the prediction useful` : "";
    document.querySelector("#ratings").replaceChildren(
      el("thead", {}, el("tr", {}, ...["Image", "Model", "Reader", "Useful", "Comment", "When"].map((h) => el("th", {}, h)))),
      el("tbody", {}, ...(data.ratings.length ? data.ratings.map((r) => el("tr", {}, el("td", {}, el("a", { class: "mono small", href: `/images/${encodeURIComponent(r.image)}/` }, r.image)),
        el("td", { class: "mono small" }, r.model_version), el("td", {}, r.reader), el("td", {}, el("span", { class: `badge ${r.useful ? "ok" : "bad"}` }, r.useful ? "useful" : "not useful")),
        el("td", {}, r.comment || el("span", { class: "muted" }, "–")), el("td", { class: "small" }, when(r.created_at))))
        : [el("tr", {}, el("td", { class: "empty" }, "No ratings yet."))])));
    root.dataset.ready = "true";
  }
  main().catch((e) => document.querySelector("#rates").replaceChildren(el("tbody", {}, el("tr", {}, el("td", { class: "errorlist" }, e.message)))));
})();
