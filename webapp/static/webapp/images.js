/* Image browser: a filtered thumbnail grid; filters live in the URL so a reload keeps them. */
"use strict";
(() => {
  const root = document.getElementById("browser");
  const slug = root.dataset.slug;
  const form = document.getElementById("filters");
  const { api, el, fmt, stateBadge, agreementColor } = CXR;
  const LIMIT = 48;
  let offset = 0;

  const params = new URLSearchParams(location.search);
  for (const [k, v] of params) if (form.elements[k]) form.elements[k].value = v;
  offset = Number(params.get("offset") || 0);

  let latest = 0; // answers to older filter settings are dropped
  async function load() {
    const ticket = ++latest;
    const q = new URLSearchParams();
    for (const f of form.elements) if (f.name && f.value) q.set(f.name, f.value);
    history.replaceState(null, "", `?${q}${offset ? `&offset=${offset}` : ""}`);
    q.set("offset", offset); q.set("limit", LIMIT);
    const d = await api(`/api/projects/${slug}/browse/?${q}`);
    if (ticket !== latest) return;
    document.getElementById("count").textContent = d.total
      ? `${d.total} images · showing ${offset + 1}–${Math.min(offset + LIMIT, d.total)}` : "No image matches these filters.";
    document.getElementById("grid").replaceChildren(...d.results.map((r) => el("a", {
      class: "thumb", href: `/images/${encodeURIComponent(r.id)}/`, "data-id": r.id },
      el("img", { src: r.thumbnail, alt: "", loading: "lazy" }),
      el("div", { class: "meta" }, el("span", { class: "id" }, r.id), stateBadge(r.state),
        r.gold ? el("span", { class: "badge" }, "gold") : null,
        r.agreement !== null ? el("span", { class: "badge", style: `background:${agreementColor(r.agreement)};color:#fff` }, `agr ${fmt(r.agreement, 2)}`) : null,
        r.uncertainty !== null ? el("span", { class: "badge grey" }, `unc ${fmt(r.uncertainty, 2)}`) : null,
        r.finding_p !== undefined ? el("span", { class: "badge warn", "data-finding-p": r.finding_p }, `P ${fmt(r.finding_p, 2)}`) : null,
        ...r.classes.slice(0, 3).map((c) => el("span", { class: "badge grey" }, c))))));
    document.getElementById("prev").disabled = offset === 0;
    document.getElementById("next").disabled = offset + LIMIT >= d.total;
    root.dataset.ready = "true";
  }

  const show = () => load().catch((e) => { document.getElementById("count").textContent = e.message; });
  form.addEventListener("change", () => { offset = 0; show(); });
  form.addEventListener("submit", (e) => { e.preventDefault(); offset = 0; show(); });
  document.getElementById("prev").addEventListener("click", () => { offset = Math.max(0, offset - LIMIT); show(); });
  document.getElementById("next").addEventListener("click", () => { offset += LIMIT; show(); });
  show();
})();
