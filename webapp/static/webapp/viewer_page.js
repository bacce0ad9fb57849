/* The image viewer page: each reader, the consensus and the model as toggleable layers. */
"use strict";
(() => {
  const root = document.getElementById("viewer-page");
  const { api, el, fmt, stateBadge, PALETTE } = CXR;
  const ww = document.getElementById("ww"), wc = document.getElementById("wc");

  function syncSliders(v) {
    ww.value = Math.round(v.wl.width); wc.value = Math.round(v.wl.center);
    document.getElementById("ww-v").textContent = ww.value; document.getElementById("wc-v").textContent = wc.value;
  }

  async function main() {
    const d = await api(`/api/images/${encodeURIComponent(root.dataset.image)}/layers/`);
    const viewer = new CXRViewer(document.getElementById("stage"), { width: d.width, height: d.height, onChange: syncSliders });
    let readerIndex = 0;
    const layers = d.layers.map((l) => {
      if (l.kind === "reader") return { ...l, color: PALETTE[readerIndex++ % PALETTE.length], short: `${l.name}: `, visible: true };
      if (l.kind === "consensus") return { ...l, name: l.provisional ? "Consensus (provisional)" : l.name, color: "#ffd400", short: "C: ", visible: true };
      if (l.kind === "model_masks") return { ...l, color: "#ff4fd8", dash: [6, 4], short: "M: ", visible: false };
      return { ...l, color: "#ff4fd8", dash: [6, 4], short: "M: ", visible: false };
    });
    viewer.setLayers(layers);
    await viewer.load(d.url);
    window.cxrViewer = viewer;

    document.getElementById("blinded").replaceChildren(d.blinded
      ? el("div", { class: "notice", id: "blinded-notice" }, "Blinded: this image's consensus is not final, so only your own boxes are shown.")
      : "");
    const list = layers.length ? layers.map((l) => {
      const box = el("input", { type: "checkbox", "data-layer": l.name });
      box.checked = l.visible;
      box.addEventListener("change", () => viewer.setVisible(l.name, box.checked));
      const extra = l.kind === "reader" && l.image_labels.length ? ` · ${l.image_labels.join(", ")}` : "";
      return el("label", { class: "layer" }, box, el("span", { class: "swatch", style: `background:${l.color}` }),
        el("span", {}, l.kind === "reader" ? `Reader ${l.name}` : l.name, l.excluded ? el("span", { class: "badge bad" }, "excluded") : null),
        el("span", { class: "count" }, `${l.boxes.length} box${l.boxes.length === 1 ? "" : "es"}` +
          `${(l.outlines || []).length ? ` · ${l.outlines.length} mask${l.outlines.length === 1 ? "" : "s"}` : ""}${extra}`));
    }) : [el("div", { class: "muted small" }, "No reads yet.")];
    document.getElementById("layers").replaceChildren(...list);

    const consensus = layers.find((l) => l.kind === "consensus");
    const model = layers.find((l) => l.kind === "model");
    const facts = [["Status", stateBadge(d.state)], ["Size", `${d.width} × ${d.height} px`],
      ["View", d.view_position || "–"], ["Gold set", d.gold ? "yes" : "no"],
      ["Agreement", d.agreement === null ? "–" : fmt(d.agreement, 2)]];
    for (const p of d.pairs || []) facts.push([`${p.a} vs ${p.b}`, `F1 ${fmt(p.f1, 2)} (${p.n_a} / ${p.n_b} boxes)`]);
    if (consensus) facts.push(["Consensus", `${consensus.source}${consensus.strategy ? ` (${consensus.strategy})` : ""}`],
      ["Final labels", consensus.image_labels.join(", ") || `${consensus.boxes.length} boxes`]);
    if (model) facts.push(["Model", model.name], ["Entropy (max)", fmt(model.uncertainty && model.uncertainty.entropy_max, 3)]);
    for (const l of layers) if (l.ctr) facts.push([`CTR (${l.kind === "consensus" ? "final masks" : l.name})`,
      el("span", { "data-ctr": l.ctr.ratio }, `${fmt(l.ctr.ratio, 3)}${l.ctr.cardiomegaly ? ` > ${fmt(l.ctr.threshold, 2)}: cardiomegaly` : ""}` +
        `${l.ctr.cardiomegaly_labelled !== undefined ? ` · readers ${l.ctr.cardiomegaly_labelled ? "labelled" : "did not label"} cardiomegaly` : ""}`)]);
    document.getElementById("facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
    const f = model && model.findings;
    if (f) document.getElementById("findings").replaceChildren(
      el("caption", { class: "muted", style: "text-align:left" }, `Image-level findings · ${f.classifier} · operating point ${fmt(f.threshold, 2)}${f.called_normal ? " · called normal" : ""}`),
      el("thead", {}, el("tr", {}, el("th", {}, "Finding"), el("th", { class: "num" }, "P"), el("th", {}, ""))),
      el("tbody", {}, ...f.probabilities.map((r) => el("tr", { "data-label": r.label, "data-p": r.p },
        el("td", {}, r.label), el("td", { class: "num" }, fmt(r.p, 3)),
        el("td", {}, r.p >= f.threshold ? el("span", { class: "badge warn" }, `≥ ${fmt(f.threshold, 2)}`) : "")))));
    if (model) {  // where the models looked: a finding (classifier) or one box (detector)
      const pick = document.getElementById("heat-class"), opacity = document.getElementById("heat-opacity");
      const options = (f ? f.probabilities.filter((r) => r.label !== "No finding") : [])
        .map((r) => el("option", { value: `finding=${encodeURIComponent(r.label)}` }, `${r.label} (classifier)`))
        .concat(model.boxes.map((b, i) => el("option", { value: `box=${i}` }, `box ${i + 1}: ${b.label} ${fmt(b.score, 2)} (detector)`)));
      pick.append(...options);
      document.getElementById("heat-controls").hidden = !options.length;
      pick.addEventListener("change", async () => {
        if (!pick.value) { viewer.setHeatmap(null); return; }
        const h = await api(`/api/images/${encodeURIComponent(root.dataset.image)}/heatmap/?${pick.value}`);
        await viewer.setHeatmap(h.heatmap, { label: pick.value, opacity: Number(opacity.value) });
      });
      opacity.addEventListener("input", () => viewer.setHeatOpacity(Number(opacity.value)));
    }
    const onSlide = () => { viewer.setWindow(Number(wc.value), Number(ww.value)); syncSliders(viewer); };
    ww.addEventListener("input", onSlide); wc.addEventListener("input", onSlide);
    for (const b of document.querySelectorAll("[data-wl]")) b.addEventListener("click", () => {
      const [c, w] = b.dataset.wl.split(",").map(Number); viewer.setWindow(c, w); syncSliders(viewer); });
    document.getElementById("zoom-in").addEventListener("click", () => viewer.zoomBy(1.25));
    document.getElementById("zoom-out").addEventListener("click", () => viewer.zoomBy(0.8));
    document.getElementById("zoom-fit").addEventListener("click", () => viewer.fit());
    root.dataset.ready = "true";
  }
  main().catch((e) => { document.getElementById("layers").replaceChildren(el("div", { class: "errorlist" }, e.message)); });
})();
