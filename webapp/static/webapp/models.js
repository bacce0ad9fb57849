/* Models: live training progress and loss curve, versions with gold metrics, promote/roll back. */
"use strict";
(() => {
  const root = document.getElementById("models");
  const slug = root.dataset.slug;
  const { api, el, fmt, duration, when, bar, statusBadge, PALETTE } = CXR;
  let lossChart = null, apChart = null, frocChart = null, selected = null, versions = [];
  let timer = null;

  function lossCurve(run) {
    const pts = (run && run.progress && run.progress.loss_history) || [];
    const data = { datasets: [{ label: "total loss", data: pts.map(([x, y]) => ({ x, y })), borderColor: PALETTE[0], pointRadius: 0, tension: 0.2 }] };
    const maxIter = (run && ((run.progress && run.progress.max_iter) || run.params.max_iter)) || 1;
    if (lossChart) { lossChart.data = data; lossChart.options.scales.x.max = maxIter; lossChart.update(); return; }
    lossChart = CXR.chart(document.getElementById("loss-chart"), { type: "line", data,
      options: { parsing: false, scales: { x: { type: "linear", min: 0, max: maxIter, title: { display: true, text: "iteration" } }, y: { beginAtZero: true, title: { display: true, text: "loss" } } }, plugins: { legend: { display: false } } } });
  }

  function activeRun(run) {
    const box = document.getElementById("active-run");
    if (!run) { box.replaceChildren(el("div", { class: "muted" }, "No training run yet.")); lossCurve(null); return; }
    const p = run.progress || {};
    const fraction = run.status === "done" ? 1 : (p.fraction || 0);
    const busy = run.status === "pending" || run.status === "running";
    const line = busy
      ? `${p.phase === "evaluating" ? "evaluating on the gold set" : `iteration ${p.iteration ?? 0} / ${p.max_iter ?? run.params.max_iter}`} · ETA ${duration(p.eta_seconds)}`
      : run.status === "done" ? `finished ${when(run.finished_at)} → ${run.model_version || "no version"}` : (run.reason || run.status);
    const cancel = busy ? el("button", { class: "secondary", type: "button", id: "cancel-run", onclick: async () => {
      await api(`/api/training-runs/${run.id}/cancel/`, { method: "POST" }); kick(); } }, "Cancel") : null;
    box.replaceChildren(el("div", { class: "inline", id: "run-line", "data-status": run.status, "data-run": run.id },
      el("strong", {}, `Run #${run.id}`), statusBadge(run.status), el("span", { class: "muted small" }, `${run.params.preset}, ${run.params.max_iter} iterations`), cancel),
      el("div", { style: "margin:10px 0 4px" }, bar(fraction, `big ${run.status === "done" ? "ok" : ""}`)),
      el("div", { class: "small muted", id: "run-progress" }, `${Math.round(fraction * 100)}% · ${line}`));
    document.getElementById("retrain").disabled = busy;
    lossCurve(run);
  }

  function runsTable(runs) {
    document.querySelector("#runs").replaceChildren(
      el("thead", {}, el("tr", {}, ...["Run", "Status", "Model", "Iterations", "Started", "Finished", "Version"].map((h) => el("th", {}, h)))),
      el("tbody", {}, ...(runs.length ? runs.map((r) => el("tr", {}, el("td", {}, `#${r.id}`), el("td", {}, statusBadge(r.status)),
        el("td", {}, r.params.preset), el("td", {}, r.params.max_iter), el("td", { class: "small" }, when(r.started_at)),
        el("td", { class: "small" }, when(r.finished_at)), el("td", {}, r.model_version || (r.reason ? el("span", { class: "small muted" }, r.reason.slice(0, 90)) : "–"))))
        : [el("tr", {}, el("td", { class: "empty" }, "No runs."))])));
  }

  function labelsOf(v) {
    const p = v.training_params || {};
    return `${p.soft_labels ? "soft" : "hard"}${p.seed != null ? ` · seed ${p.seed}` : ""}`;
  }

  /* Soft against hard labels: versions trained with the same seed on the same number of
     images, differing in soft_labels; the gold mAP@0.4 of each and the difference. */
  function softCompare() {
    const pairs = [];
    for (const soft of versions) {
      const sp = soft.training_params || {};
      if (!sp.soft_labels || sp.seed == null) continue;
      const hard = versions.find((h) => { const hp = h.training_params || {};
        return !hp.soft_labels && hp.seed === sp.seed && hp.preset === sp.preset && hp.max_iter === sp.max_iter && h.n_train_images === soft.n_train_images; });
      if (hard) pairs.push([soft, hard]);
    }
    const box = document.getElementById("soft-compare");
    if (!pairs.length) { box.replaceChildren(el("span", { class: "muted" }, "Soft labels: train once with soft_labels and once without, same seed, to compare them here.")); return; }
    box.replaceChildren(...pairs.map(([s, h]) => {
      const a = (s.metrics || {}).map_40, b = (h.metrics || {}).map_40;
      const d = a != null && b != null ? a - b : null;
      return el("div", { class: "soft-pair", "data-soft": s.name, "data-hard": h.name },
        el("strong", {}, "Soft vs hard labels"), ` (seed ${s.training_params.seed}, ${s.n_train_images} images): `,
        el("span", { class: "mono" }, s.name), ` ${fmt(a)} vs `, el("span", { class: "mono" }, h.name), ` ${fmt(b)} mAP@0.4 → `,
        el("strong", { "data-diff": d == null ? "" : d.toFixed(3) }, d == null ? "n/a" : `${d >= 0 ? "+" : ""}${d.toFixed(3)}`),
        d == null ? "" : (d > 0 ? " (soft labels helped on this gold set)" : d < 0 ? " (soft labels did not help on this gold set)" : " (no difference)"));
    }));
  }

  function versionsTable() {
    softCompare();
    const promoted = versions.find((v) => v.promoted);
    document.querySelector("#versions").replaceChildren(
      el("thead", {}, el("tr", {}, ...["Version", "Parent", "Trained on", "Labels", "mAP@0.4", "COCO mAP", "FROC score", "Created", ""].map((h) => el("th", { class: /mAP|FROC|Trained/.test(h) ? "num" : "" }, h)))),
      el("tbody", {}, ...(versions.length ? versions.map((v) => {
        const m = v.metrics || {};
        const actions = [];
        if (!v.promoted) actions.push(el("button", { class: "secondary", type: "button", "data-promote": v.name, onclick: () => act(`/api/model-versions/${v.name}/promote/`, `Put ${v.name} in service, replacing ${promoted ? promoted.name : "nothing"}?`) }, "Promote"));
        if (v.promoted && v.parent) actions.push(el("button", { class: "secondary", type: "button", id: "rollback", onclick: () => act(`/api/projects/${slug}/model-versions/rollback/?kind=${v.kind || "detector"}`, `Roll back from ${v.name} to the version before it?`) }, "Roll back"));
        const row = el("tr", { "data-version": v.name, style: selected === v.name ? "background:#f0f6fc" : "" },
          el("td", {}, el("a", { href: "#", onclick: (e) => { e.preventDefault(); select(v.name); } }, el("strong", { class: "mono" }, v.name)), " ", v.promoted ? el("span", { class: "badge ok" }, "in service") : null,
            v.kind && v.kind !== "detector" ? el("span", { class: "badge", "data-kind": v.kind }, v.kind === "segmenter" ? `mask model · gold Dice ${fmt(m.mean_dice)}` : `classifier · gold AUROC ${fmt(m.macro_auroc)}`) : null),
          el("td", { class: "mono small" }, v.parent || "–"), el("td", { class: "num" }, `${v.n_train_images} images`), el("td", { class: "small", "data-labels": v.name }, labelsOf(v)),
          el("td", { class: "num", "data-metric": "map_40" }, fmt(m.map_40)), el("td", { class: "num" }, fmt(m.coco_map)), el("td", { class: "num" }, fmt(m.froc_score)),
          el("td", { class: "small" }, when(v.created_at)), el("td", {}, ...actions));
        return row;
      }) : [el("tr", {}, el("td", { class: "empty" }, "No model version yet: retrain once final labels exist."))])));
  }

  function select(name) {
    selected = name;
    const v = versions.find((x) => x.name === name);
    versionsTable();
    if (!v) return;
    const m = v.metrics || {};
    const ap = m.ap_40 || {};
    document.getElementById("ap-version").textContent = name;
    document.getElementById("froc-version").textContent = name;
    const apData = { labels: Object.keys(ap), datasets: [{ label: "AP@0.4", data: Object.values(ap), backgroundColor: PALETTE[0], maxBarThickness: 28 }] };
    if (apChart) { apChart.data = apData; apChart.update(); }
    else apChart = CXR.chart(document.getElementById("ap-chart"), { type: "bar", data: apData,
      options: { indexAxis: "y", scales: { x: { min: 0, max: 1 } }, plugins: { legend: { display: false } } } });
    const froc = Object.entries(m.froc || {}).map(([x, y]) => ({ x: Number(x), y })).sort((a, b) => a.x - b.x);
    const fData = { datasets: [{ label: "sensitivity", data: froc, borderColor: PALETTE[1], backgroundColor: PALETTE[1], tension: 0.1 }] };
    if (frocChart) { frocChart.data = fData; frocChart.update(); }
    else frocChart = CXR.chart(document.getElementById("froc-chart"), { type: "line", data: fData,
      options: { parsing: false, scales: { x: { type: "logarithmic", min: 0.1, max: 10, title: { display: true, text: "false positives per image" },
        ticks: { autoSkip: false, callback: (v) => [0.125, 0.25, 0.5, 1, 2, 4, 8].includes(Number(v)) ? String(v) : "" },
        afterBuildTicks: (axis) => { axis.ticks = [0.125, 0.25, 0.5, 1, 2, 4, 8].map((value) => ({ value })); } }, y: { min: 0, max: 1, title: { display: true, text: "sensitivity" } } }, plugins: { legend: { display: false } } } });
  }

  async function act(path, question) {
    if (!confirm(question)) return;
    try { await api(path, { method: "POST" }); } catch (e) { alert(e.message); }
    kick();
  }

  async function prelabels() {
    const runs = await api(`/api/projects/${slug}/prelabel-runs/`);
    const r = runs[0];
    const box = document.getElementById("prelabel-status");
    if (!r) { box.textContent = "No pre-labelling run yet."; return true; }
    box.replaceChildren(el("div", { class: "inline" }, `Run #${r.id} with ${r.model_version}`, statusBadge(r.status), `${r.done} / ${r.total} images, ${r.pushed} pushed to readers`),
      el("div", { style: "margin-top:4px" }, bar(r.total ? r.done / r.total : 0)));
    return !(r.status === "pending" || r.status === "running");
  }

  async function refresh() {
    const [runs, vs] = await Promise.all([api(`/api/projects/${slug}/training-runs/`), api(`/api/projects/${slug}/model-versions/`)]);
    const list = (runs.results || runs).slice().sort((a, b) => b.id - a.id);
    versions = vs.results || vs;
    activeRun(list[0]); runsTable(list);
    if (!selected || !versions.some((v) => v.name === selected)) selected = (versions.find((v) => v.promoted) || versions[0] || {}).name;
    document.getElementById("version-charts").style.display = versions.length ? "" : "none";
    if (selected) select(selected); else versionsTable();
    root.dataset.ready = "true";
    return Boolean(list[0] && (list[0].status === "pending" || list[0].status === "running"));
  }

  /* Refresh every 1.5 s while a run is going, every 10 s otherwise; kick() refreshes now. */
  let inFlight = false;
  function kick() {
    clearTimeout(timer);
    if (inFlight) { timer = setTimeout(kick, 300); return; } // one refresh at a time
    inFlight = true;
    refresh().then((busy) => { inFlight = false; timer = setTimeout(kick, busy ? 1500 : 10000); },
      (e) => { inFlight = false; document.getElementById("active-run").replaceChildren(el("div", { class: "errorlist" }, e.message)); timer = setTimeout(kick, 5000); });
  }

  // what to train: each kind of model has its own presets
  const PRESETS = { detector: [["r50_fpn", "ResNet-50 FPN (production)"], ["tiny", "Tiny (quick check)"]],
    classifier: [["densenet121", "DenseNet-121 (production)"], ["tiny", "Tiny (quick check)"]],
    segmenter: [["unet", "U-Net, 512 px (production)"], ["tiny", "Tiny U-Net (quick check)"]] };
  const taskPick = document.getElementById("task");
  taskPick.addEventListener("change", () => {
    document.getElementById("preset").replaceChildren(...PRESETS[taskPick.value].map(([v, t]) => el("option", { value: v }, t)));
    document.getElementById("soft-labels-row").style.display = taskPick.value === "detector" ? "" : "none";
  });
  document.getElementById("retrain-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const task = document.getElementById("task").value;
    const params = { preset: document.getElementById("preset").value, max_iter: Number(document.getElementById("max_iter").value) };
    if (task === "detector") params.soft_labels = document.getElementById("soft_labels").checked;
    else params.task = task;
    const seed = document.getElementById("seed").value;
    if (seed !== "") params.seed = Number(seed);
    try { await api(`/api/projects/${slug}/training-runs/`, { method: "POST", body: { params } }); }
    catch (err) { alert(err.message); }
    kick();
  });
  kick();
  CXR.poll(prelabels, 2000);
})();
