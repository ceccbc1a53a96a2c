// A small time-series line chart on <canvas>: no library, so the page has nothing to vendor and
// works offline. Crisp on high-DPI screens, redrawn on resize; null values leave a gap.
"use strict";

(function (global) {
  const PALETTE = ["#2563eb", "#d97706", "#059669", "#db2777", "#7c3aed", "#0891b2", "#65a30d", "#dc2626"];

  function cssVar(name, fallback) {
    const v = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    return v || fallback;
  }

  /** A "nice" step (1, 2 or 5 x 10^k) giving about ``ticks`` intervals over ``span``. */
  function niceStep(span, ticks) {
    const raw = span / ticks;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const n = raw / mag;
    return (n < 1.5 ? 1 : n < 3.5 ? 2 : n < 7.5 ? 5 : 10) * mag;
  }

  function formatTick(v, step) {
    const digits = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
    return v.toFixed(Math.min(digits, 4));
  }

  class LineChart {
    /** ``opts``: {unit, min (lower bound, default 0), max (fixed upper bound, optional), windowS}. */
    constructor(canvas, legend, opts) {
      this.canvas = canvas;
      this.legend = legend;
      this.opts = Object.assign({ min: 0, max: null, windowS: 120, unit: "" }, opts);
      this.times = [];
      this.series = [];
      this.empty = "waiting for data";
      new ResizeObserver(() => this.draw()).observe(canvas);
    }

    /** ``times``: seconds; ``series``: [{name, color, dash, values (same length, null = gap)}]. */
    setData(times, series, empty) {
      this.times = times;
      this.series = series;
      this.empty = empty || "waiting for data";
      this.renderLegend();
      this.draw();
    }

    renderLegend() {
      const items = this.series.filter((s) => !s.hideInLegend);
      const key = items.map((s) => s.name + s.color + (s.dash ? "-" : "")).join("|");
      if (key === this.legendKey) {
        this.updateLegendValues(items);
        return;
      }
      this.legendKey = key;
      this.legend.replaceChildren();
      for (const s of items) {
        const item = document.createElement("span");
        item.className = "legend-item";
        const swatch = document.createElement("span");
        swatch.className = s.dash ? "swatch dashed" : "swatch";
        swatch.style.borderColor = s.color;
        const name = document.createElement("span");
        name.textContent = s.name;
        const value = document.createElement("span");
        value.className = "legend-value";
        item.append(swatch, name, value);
        this.legend.append(item);
      }
      this.updateLegendValues(items);
    }

    updateLegendValues(items) {
      const values = this.legend.querySelectorAll(".legend-value");
      items.forEach((s, i) => {
        const last = [...s.values].reverse().find((v) => v !== null && v !== undefined);
        values[i].textContent = last === undefined ? "" : this.format(last);
      });
    }

    format(v) {
      const digits = Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : 2;
      return v.toFixed(digits) + (this.opts.unit ? " " + this.opts.unit : "");
    }

    draw() {
      const dpr = window.devicePixelRatio || 1;
      const width = this.canvas.clientWidth;
      const height = this.canvas.clientHeight;
      if (!width || !height) return;
      if (this.canvas.width !== Math.round(width * dpr) || this.canvas.height !== Math.round(height * dpr)) {
        this.canvas.width = Math.round(width * dpr);
        this.canvas.height = Math.round(height * dpr);
      }
      const ctx = this.canvas.getContext("2d");
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.clearRect(0, 0, width, height);
      const text = cssVar("--muted", "#6b7280");
      const grid = cssVar("--grid", "#e5e7eb");
      ctx.font = "11px system-ui, sans-serif";

      const values = this.series.flatMap((s) => s.values).filter((v) => v !== null && Number.isFinite(v));
      if (!this.times.length || !values.length) {
        ctx.fillStyle = text;
        ctx.textAlign = "center";
        ctx.textBaseline = "middle";
        ctx.fillText(this.empty, width / 2, height / 2);
        return;
      }
      const lo = this.opts.min === null ? Math.min(...values) : Math.min(this.opts.min, ...values);
      let hi = this.opts.max !== null ? this.opts.max : Math.max(...values);
      if (hi <= lo) hi = lo + (lo === 0 ? 1 : Math.abs(lo) * 0.1);
      const step = niceStep(hi - lo, 4);
      const top = this.opts.max !== null ? hi : Math.ceil(hi / step) * step;
      const bottom = Math.floor(lo / step) * step;

      const left = 44;
      const right = 8;
      const topPad = 8;
      const bottomPad = 18;
      const plotW = width - left - right;
      const plotH = height - topPad - bottomPad;
      const now = this.times[this.times.length - 1];
      // the x axis grows with the data up to windowS: a fresh page does not squeeze its first
      // seconds into the right edge
      const span = Math.min(this.opts.windowS, Math.max(30, Math.ceil((now - this.times[0]) / 10) * 10));
      const t0 = now - span;
      const x = (t) => left + ((t - t0) / span) * plotW;
      const y = (v) => topPad + plotH - ((v - bottom) / (top - bottom)) * plotH;

      // grid and y labels
      ctx.strokeStyle = grid;
      ctx.fillStyle = text;
      ctx.lineWidth = 1;
      ctx.textAlign = "right";
      ctx.textBaseline = "middle";
      for (let v = bottom; v <= top + step / 2; v += step) {
        const py = Math.round(y(v)) + 0.5;
        ctx.beginPath();
        ctx.moveTo(left, py);
        ctx.lineTo(width - right, py);
        ctx.stroke();
        ctx.fillText(formatTick(v, step), left - 6, py);
      }
      // x labels: seconds ago
      ctx.textAlign = "center";
      ctx.textBaseline = "top";
      const xStep = span / 6; // 5 s steps on a fresh page, 20 s on the full window
      for (let ago = span; ago >= 0; ago -= xStep) {
        ctx.fillText(ago === 0 ? "now" : "-" + Math.round(ago) + " s", x(now - ago), topPad + plotH + 4);
      }
      // lines
      ctx.save();
      ctx.beginPath();
      ctx.rect(left, topPad - 2, plotW, plotH + 4);
      ctx.clip();
      ctx.lineJoin = "round";
      for (const s of this.series) {
        ctx.strokeStyle = s.color;
        ctx.lineWidth = s.dash ? 1.5 : 2;
        ctx.setLineDash(s.dash ? [5, 4] : []);
        ctx.beginPath();
        let pen = false;
        s.values.forEach((v, i) => {
          if (v === null || v === undefined || !Number.isFinite(v) || this.times[i] < t0 - 5) {
            pen = false;
            return;
          }
          if (pen) ctx.lineTo(x(this.times[i]), y(v));
          else ctx.moveTo(x(this.times[i]), y(v));
          pen = true;
        });
        ctx.stroke();
      }
      ctx.restore();
    }
  }

  global.Charts = { LineChart, PALETTE };
})(window);
