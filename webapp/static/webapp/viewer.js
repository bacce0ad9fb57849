/* Image viewer: window/level, zoom and pan on the display image, and box layers on top.

   Boxes arrive in original image pixels; the display image may be smaller, so each
   box is scaled by displayWidth/width.  Window/level re-maps the 8-bit display
   pixels (centre/width in display grey levels), like a radiology workstation does
   on its rendered image. */
"use strict";

class CXRViewer {
  constructor(stage, { width, height, onChange = null } = {}) {
    this.stage = stage;
    this.width = width; this.height = height; // original pixels
    this.canvas = document.createElement("canvas");
    this.stage.append(this.canvas);
    this.hud = CXR.el("div", { class: "hud" });
    this.stage.append(this.hud);
    this.ctx = this.canvas.getContext("2d");
    this.layers = [];
    this.minScore = 0;
    this.wl = { center: 127.5, width: 255 };
    this.view = { zoom: 1, x: 0, y: 0 };
    this.onChange = onChange;
    this.source = null; // ImageData of the display image
    this.processed = document.createElement("canvas");
    this._bind();
    new ResizeObserver(() => { this._resize(); this.draw(); }).observe(stage);
  }

  /** Load the display image (a URL or data: URL); resolves when drawn. */
  load(url) {
    return new Promise((resolve, reject) => {
      const img = new Image();
      img.onload = () => {
        this.processed.width = img.naturalWidth; this.processed.height = img.naturalHeight;
        const pctx = this.processed.getContext("2d", { willReadFrequently: true });
        pctx.drawImage(img, 0, 0);
        this.source = pctx.getImageData(0, 0, img.naturalWidth, img.naturalHeight);
        this.scale = img.naturalWidth / this.width;
        this._resize(); this.fit(); this.applyWindow();
        this.stage.dataset.loaded = "true";
        resolve();
      };
      img.onerror = () => reject(new Error("the image could not be loaded"));
      img.src = url;
    });
  }

  /** An overlay on the display image (a data: URL with alpha, display pixels), drawn over
      the windowed film at ``opacity``; null removes it.  Window/level changes the film
      under it, never the overlay. */
  setHeatmap(url, { label = "", opacity = 0.5 } = {}) {
    this.heatOpacity = opacity;
    if (!url) {
      this.heat = null; delete this.stage.dataset.heatmap; this.draw();
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      const img = new Image();
      img.onload = () => { this.heat = img; this.stage.dataset.heatmap = label; this.draw(); resolve(); };
      img.onerror = () => reject(new Error("the heatmap could not be loaded"));
      img.src = url;
    });
  }
  setHeatOpacity(opacity) { this.heatOpacity = opacity; this.draw(); }

  setLayers(layers) { this.layers = layers; this.draw(); }
  setVisible(name, visible) {
    for (const l of this.layers) if (l.name === name) l.visible = visible;
    this.draw();
  }
  setMinScore(score) { this.minScore = score; this.draw(); }

  /** Mask outlines (closed polygons, original pixels) and each layer's cardiothoracic
   *  ratio lines; returns how many outlines were drawn. */
  _drawMasks(ctx, v, s) {
    let drawn = 0;
    const ratios = [];
    for (const layer of this.layers) {
      if (!layer.visible) continue;
      for (const o of layer.outlines || []) {
        ctx.strokeStyle = layer.kind === "consensus" ? o.color : (layer.color || o.color);
        ctx.lineWidth = (layer.kind === "consensus" ? 2.5 : 1.5) / v.zoom;
        ctx.setLineDash(layer.dash || []);
        for (const poly of o.polygons) {
          ctx.beginPath();
          for (let i = 0; i < poly.length; i += 2) {
            const x = poly[i] * s, y = poly[i + 1] * s;
            if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
          }
          ctx.closePath(); ctx.stroke(); drawn++;
        }
      }
      const r = layer.ctr;
      if (r) {  // the two measured diameters, and the ratio beside the cardiac one
        ctx.setLineDash([]);
        for (const [line, color] of [[r.cardiac, "#ff5252"], [r.thoracic, "#40c4ff"]]) {
          ctx.strokeStyle = color; ctx.lineWidth = 2 / v.zoom;
          ctx.beginPath(); ctx.moveTo(line.x0 * s, line.y * s); ctx.lineTo(line.x1 * s, line.y * s); ctx.stroke();
        }
        ctx.font = `${13 / v.zoom}px system-ui, sans-serif`;
        ctx.fillStyle = r.cardiomegaly ? "#ff5252" : "#fff";
        ctx.fillText(`CTR ${r.ratio.toFixed(2)}${r.cardiomegaly ? " > " + r.threshold.toFixed(2) : ""}`,
          r.cardiac.x1 * s + 4 / v.zoom, r.cardiac.y * s);
        ratios.push(r.ratio.toFixed(3));
      }
    }
    ctx.setLineDash([]);
    this.stage.dataset.ctr = ratios.join(",");
    return drawn;
  }

  /** Boxes drawn right now, per layer (what a user sees; tests read it too). */
  visibleBoxes() {
    const out = [];
    for (const l of this.layers) {
      if (!l.visible) continue;
      for (const b of l.boxes) if (b.score === undefined || b.score >= this.minScore) out.push({ layer: l.name, ...b });
    }
    return out;
  }

  setWindow(center, width) { this.wl = { center, width: Math.max(1, width) }; this.applyWindow(); }
  resetWindow() { this.setWindow(127.5, 255); }

  applyWindow() {
    if (!this.source) return;
    const { center, width } = this.wl;
    const lo = center - width / 2;
    const lut = new Uint8ClampedArray(256);
    for (let v = 0; v < 256; v++) lut[v] = ((v - lo) / width) * 255;
    const src = this.source.data;
    const out = new ImageData(this.source.width, this.source.height);
    const dst = out.data;
    for (let i = 0; i < src.length; i += 4) {
      const g = lut[src[i]];
      dst[i] = g; dst[i + 1] = g; dst[i + 2] = g; dst[i + 3] = 255;
    }
    this.processed.getContext("2d").putImageData(out, 0, 0);
    this.draw();
  }

  fit() {
    if (!this.source) return;
    const w = this.canvas.width, h = this.canvas.height;
    const z = Math.min(w / this.source.width, h / this.source.height) * 0.98;
    this.view = { zoom: z, x: (w - this.source.width * z) / 2, y: (h - this.source.height * z) / 2 };
    this.draw();
  }

  zoomBy(factor, cx = this.canvas.width / 2, cy = this.canvas.height / 2) {
    const v = this.view;
    const z = Math.max(0.05, Math.min(40, v.zoom * factor));
    v.x = cx - (cx - v.x) * (z / v.zoom); v.y = cy - (cy - v.y) * (z / v.zoom); v.zoom = z;
    this.draw();
  }

  _resize() {
    this.canvas.width = this.stage.clientWidth; this.canvas.height = this.stage.clientHeight;
  }

  _bind() {
    this.stage.addEventListener("wheel", (e) => {
      e.preventDefault();
      const r = this.canvas.getBoundingClientRect();
      this.zoomBy(e.deltaY < 0 ? 1.15 : 1 / 1.15, e.clientX - r.left, e.clientY - r.top);
    }, { passive: false });
    let drag = null;
    this.stage.addEventListener("mousedown", (e) => {
      drag = { x: e.clientX, y: e.clientY, vx: this.view.x, vy: this.view.y, wl: { ...this.wl }, button: e.button, shift: e.shiftKey };
      this.stage.classList.add("dragging");
    });
    window.addEventListener("mousemove", (e) => {
      if (!drag) return;
      const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
      if (drag.shift || drag.button === 2) { // shift-drag: window (x) and level (y)
        this.setWindow(drag.wl.center + dy * 0.5, drag.wl.width + dx);
        if (this.onChange) this.onChange(this);
      } else { this.view.x = drag.vx + dx; this.view.y = drag.vy + dy; this.draw(); }
    });
    window.addEventListener("mouseup", () => { drag = null; this.stage.classList.remove("dragging"); });
    this.stage.addEventListener("contextmenu", (e) => e.preventDefault());
    this.stage.addEventListener("dblclick", () => this.fit());
  }

  draw() {
    const ctx = this.ctx, v = this.view;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#0b0f14"; ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    if (!this.source) return;
    ctx.imageSmoothingEnabled = v.zoom < 2;
    ctx.setTransform(v.zoom, 0, 0, v.zoom, v.x, v.y);
    ctx.drawImage(this.processed, 0, 0);
    if (this.heat) {
      ctx.globalAlpha = this.heatOpacity;
      ctx.drawImage(this.heat, 0, 0, this.processed.width, this.processed.height);
      ctx.globalAlpha = 1;
      this.stage.dataset.heatmapOpacity = String(this.heatOpacity);
    }
    const s = this.scale;
    let shown = 0;
    for (const layer of this.layers) {
      if (!layer.visible) continue;
      ctx.setLineDash(layer.dash || []);
      for (const b of layer.boxes) {
        if (b.score !== undefined && b.score < this.minScore) continue;
        shown++;
        const [x1, y1, x2, y2] = b.box.map((c) => c * s);
        const color = layer.color || b.color || "#ff0";
        ctx.lineWidth = 2 / v.zoom; ctx.strokeStyle = color;
        ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
        const text = `${layer.short || ""}${b.label}${b.score !== undefined ? " " + b.score.toFixed(2) : ""}`;
        ctx.font = `${12 / v.zoom}px system-ui, sans-serif`;
        const tw = ctx.measureText(text).width + 6 / v.zoom, th = 16 / v.zoom;
        const ty = y1 - th >= 0 ? y1 - th : y1;
        ctx.setLineDash([]);
        ctx.fillStyle = color; ctx.globalAlpha = 0.85; ctx.fillRect(x1, ty, tw, th); ctx.globalAlpha = 1;
        ctx.fillStyle = "#fff"; ctx.fillText(text, x1 + 3 / v.zoom, ty + 12 / v.zoom);
        ctx.setLineDash(layer.dash || []);
      }
    }
    ctx.setLineDash([]);
    const outlines = this._drawMasks(ctx, v, s);
    this.stage.dataset.boxes = String(shown);
    this.stage.dataset.outlines = String(outlines);
    this.hud.textContent = `zoom ${(v.zoom * this.scale).toFixed(2)}× · W ${Math.round(this.wl.width)} L ${Math.round(this.wl.center)} · ${shown} boxes`;
  }
}
window.CXRViewer = CXRViewer;
