/* Quick read: upload (or pick) an image, draw the model's boxes, redraw on the slider. */
"use strict";
(() => {
  const root = document.getElementById("quick-read");
  const { api, el, fmt } = CXR;
  const slider = document.getElementById("threshold");
  const status = document.getElementById("qr-status");
  let viewer = null, result = null;

  function table() {
    const t = Number(slider.value);
    document.getElementById("threshold-v").textContent = t.toFixed(2);
    if (!result) return;
    const rows = result.predictions.map((p, i) => el("tr", { "data-score": p.score, class: p.score >= t ? "shown" : "hidden", style: p.score >= t ? "" : "opacity:.35" },
      el("td", {}, el("span", { class: "swatch", style: `background:${p.color}` }), p.label),
      el("td", { class: "mono" }, p.box_original.map((v) => Math.round(v)).join(", ")),
      el("td", { class: "num" }, fmt(p.score, 2))));
    document.querySelector("#predictions").replaceChildren(
      el("thead", {}, el("tr", {}, el("th", {}, "Class"), el("th", {}, "Box x1, y1, x2, y2 (px)"), el("th", { class: "num" }, "Conf."))),
      el("tbody", {}, ...(rows.length ? rows : [el("tr", {}, el("td", { class: "empty" }, "The model found nothing above its floor."))])));
    const shown = result.predictions.filter((p) => p.score >= t).length;
    status.replaceChildren(el("span", { class: "badge ok" }, result.model_version), ` ${shown} of ${result.predictions.length} boxes at ≥ ${t.toFixed(2)}`,
      result.kept ? el("div", { class: "muted" }, `Added to the project (ingest batch #${result.kept.batch}).`) : el("div", { class: "muted" }, result.image_id ? `Image ${result.image_id}` : "Not kept: de-identified, read and discarded."));
    if (viewer) viewer.setMinScore(t);
    findings();
  }

  /* Grad-CAM overlays of the most probable findings: a class picker and an opacity slider. */
  const heatClass = document.getElementById("heat-class");
  const heatOpacity = document.getElementById("heat-opacity");
  function heatControls() {
    const maps = (result && result.findings && result.findings.heatmaps) || {};
    const names = Object.keys(maps);
    document.getElementById("heat-controls").hidden = !names.length;
    heatClass.replaceChildren(el("option", { value: "" }, "off"), ...names.map((n) => el("option", { value: n }, n)));
    if (viewer) viewer.setHeatmap(null);
  }
  heatClass.addEventListener("change", () => {
    const maps = result.findings.heatmaps, name = heatClass.value;
    viewer.setHeatmap(name ? maps[name] : null, { label: name, opacity: Number(heatOpacity.value) });
  });
  heatOpacity.addEventListener("input", () => {
    document.getElementById("heat-opacity-v").textContent = Number(heatOpacity.value).toFixed(2);
    if (viewer) viewer.setHeatOpacity(Number(heatOpacity.value));
  });

  /* The image classifier's probabilities per class, the operating point marked. */
  function findings() {
    const box = document.getElementById("findings");
    const f = result && result.findings;
    if (!f) { box.replaceChildren(); return; }
    const rows = f.probabilities.map((r) => el("tr", { "data-label": r.label, "data-p": r.p, class: r.p >= f.threshold ? "above" : "" },
      el("td", {}, r.label), el("td", { class: "num" }, fmt(r.p, 3)),
      el("td", {}, r.p >= f.threshold ? el("span", { class: "badge warn" }, `≥ ${fmt(f.threshold, 2)}`) : "")));
    const caption = result.two_stage
      ? (f.called_normal ? `Two-stage: P(No finding) ≥ ${fmt(f.threshold, 2)}, film called normal, boxes dropped.` : "Two-stage: boxes gated by the classifier.")
      : `Operating point ${fmt(f.threshold, 2)}.`;
    box.replaceChildren(
      el("caption", { class: "muted", style: "text-align:left" }, `Image-level findings · ${f.model_version} · ${caption}`),
      el("thead", {}, el("tr", {}, el("th", {}, "Finding"), el("th", { class: "num" }, "P"), el("th", {}, ""))),
      el("tbody", {}, ...rows));
  }

  async function read(e) {
    e.preventDefault();
    const slug = document.getElementById("qr-project").value;
    const file = document.getElementById("qr-file").files[0];
    const image = document.getElementById("qr-image").value.trim();
    if (!slug) { status.textContent = "Choose a project with a model in service."; return; }
    if (!file && !image) { status.textContent = "Choose a DICOM file or type an image id."; return; }
    const form = new FormData();
    if (file) form.append("file", file); else form.append("image", image);
    const keep = document.getElementById("qr-keep");
    if (keep && keep.checked) form.append("keep", "true");
    status.replaceChildren(el("span", { class: "spinner" }), " de-identifying and reading…");
    document.getElementById("qr-run").disabled = true;
    try {
      result = await api(`/api/projects/${slug}/quick-read/`, { method: "POST", form });
      const stage = document.getElementById("stage");
      delete stage.dataset.loaded;
      if (!viewer) viewer = new CXRViewer(stage, { width: result.width, height: result.height, onChange: syncWL });
      viewer.width = result.width; viewer.height = result.height; // one viewer, reused per read
      viewer.setLayers([{ name: "model", kind: "model", visible: true, boxes: result.predictions.map((p) => ({ label: p.label, color: p.color, box: p.box_original, score: p.score })) }]);
      viewer.minScore = Number(slider.value);
      await viewer.load(result.image);
      window.cxrViewer = viewer;
      heatControls();
      table();
      root.dataset.ready = "true";
    } catch (err) {
      status.replaceChildren(el("span", { class: "badge bad" }, err.status === 413 ? "too large" : "not read"), ` ${err.message}`);
    } finally { document.getElementById("qr-run").disabled = false; }
  }

  function syncWL(v) {
    document.getElementById("ww").value = Math.round(v.wl.width); document.getElementById("wc").value = Math.round(v.wl.center);
    document.getElementById("ww-v").textContent = Math.round(v.wl.width); document.getElementById("wc-v").textContent = Math.round(v.wl.center);
  }
  for (const id of ["ww", "wc"]) document.getElementById(id).addEventListener("input", () => {
    if (!viewer) return;
    viewer.setWindow(Number(document.getElementById("wc").value), Number(document.getElementById("ww").value)); syncWL(viewer);
  });
  slider.addEventListener("input", table);
  document.getElementById("qr-form").addEventListener("submit", read);
  table();
})();
