/* A small, dependency-free SVG time chart for the burst-controller dashboard: the policy's load and
   capacity on the left axis, its cloud replicas as a step area on the right axis, a hover read-out.
   Used by dashboard.js as `new BurstChart(element)` then `chart.update(points, {from, to, unit})`. */
"use strict";

(function (global) {
  const SVG = "http://www.w3.org/2000/svg";
  const HEIGHT = 240;
  const PAD = { left: 56, right: 48, top: 14, bottom: 30 };
  const TIME_STEPS = [60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];

  function el(name, attrs, parent) {
    const node = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (parent) parent.appendChild(node);
    return node;
  }

  /* 1, 2, 2.5, 5 x 10^n ticks covering [0, max]. */
  function niceTicks(max, count) {
    if (!(max > 0)) max = 1;
    const raw = max / count;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || 10 * mag;
    const top = Math.ceil(max / step) * step;
    const ticks = [];
    for (let v = 0; v <= top + step / 2; v += step) ticks.push(+v.toFixed(10));
    return { ticks, top };
  }

  function fmtNumber(v) {
    if (v === null || v === undefined || !isFinite(v)) return "–";
    const a = Math.abs(v);
    if (Number.isInteger(v) && a < 1e4) return String(v);
    if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (a >= 1e4) return (v / 1e3).toFixed(0) + "k";
    if (a >= 100) return v.toFixed(0);
    if (a >= 10) return v.toFixed(1);
    return v.toFixed(2).replace(/\.?0+$/, "") || "0";
  }

  function fmtClock(t, withSeconds) {
    const d = new Date(t * 1000);
    const p = (n) => String(n).padStart(2, "0");
    return p(d.getHours()) + ":" + p(d.getMinutes()) + (withSeconds ? ":" + p(d.getSeconds()) : "");
  }

  /* Path of (t, v) pairs; a null value or a gap longer than `maxGap` lifts the pen. */
  function linePath(points, key, x, y, maxGap) {
    let d = "";
    let prev = null;
    for (const p of points) {
      const v = p[key];
      if (v === null || v === undefined || !isFinite(v)) { prev = null; continue; }
      const cmd = prev === null || p.at - prev > maxGap ? "M" : "L";
      d += cmd + x(p.at).toFixed(1) + "," + y(v).toFixed(1);
      prev = p.at;
    }
    return d;
  }

  /* Step area of replicas: each count holds until the next sample (and to `end` for the last). */
  function stepArea(points, x, y, end) {
    if (!points.length) return "";
    let d = "M" + x(points[0].at).toFixed(1) + "," + y(0).toFixed(1);
    points.forEach((p, i) => {
      const next = i + 1 < points.length ? points[i + 1].at : end;
      d += "L" + x(p.at).toFixed(1) + "," + y(p.replicas).toFixed(1);
      d += "L" + x(next).toFixed(1) + "," + y(p.replicas).toFixed(1);
    });
    return d + "L" + x(end).toFixed(1) + "," + y(0).toFixed(1) + "Z";
  }

  class BurstChart {
    constructor(container, label) {
      this.container = container;
      this.label = label || "load";
      this.points = [];
      this.opts = null;
      this.svg = el("svg", { class: "chart-svg", role: "img", height: HEIGHT, "aria-label": "no data yet" });
      this.tip = document.createElement("div");
      this.tip.className = "chart-tip";
      this.tip.hidden = true;
      container.appendChild(this.svg);
      container.appendChild(this.tip);
      if (global.ResizeObserver) {
        let lastWidth = 0;
        new ResizeObserver(() => {
          const w = this.container.clientWidth;
          if (w !== lastWidth) { lastWidth = w; this.render(); }
        }).observe(container);
      }
    }

    update(points, opts) {
      this.points = points;
      this.opts = opts;
      this.render();
    }

    render() {
      if (!this.opts) return;
      const { from, to, unit } = this.opts;
      const pts = this.points.filter((p) => p.at >= from && p.at <= to);
      const width = Math.max(320, this.container.clientWidth || 640);
      const svg = this.svg;
      while (svg.firstChild) svg.removeChild(svg.firstChild);
      svg.setAttribute("viewBox", `0 0 ${width} ${HEIGHT}`);
      svg.setAttribute("width", width);
      const plotW = width - PAD.left - PAD.right;
      const plotH = HEIGHT - PAD.top - PAD.bottom;

      let maxLoad = 0;
      let maxRep = 0;
      for (const p of pts) {
        if (p.value !== null && isFinite(p.value)) maxLoad = Math.max(maxLoad, p.value);
        if (p.capacity !== null && p.capacity !== undefined && isFinite(p.capacity)) maxLoad = Math.max(maxLoad, p.capacity);
        maxRep = Math.max(maxRep, p.replicas || 0);
      }
      const left = niceTicks(maxLoad * 1.05, 4);
      const right = niceTicks(Math.max(2, maxRep + 1), Math.min(4, Math.max(2, maxRep + 1)));
      right.ticks = right.ticks.filter((t) => Number.isInteger(t));
      const x = (t) => PAD.left + ((t - from) / (to - from)) * plotW;
      const yL = (v) => PAD.top + plotH - (v / left.top) * plotH;
      const yR = (v) => PAD.top + plotH - (v / right.top) * plotH;

      // grid and axes
      const grid = el("g", { class: "chart-grid" }, svg);
      for (const t of left.ticks) {
        el("line", { x1: PAD.left, x2: PAD.left + plotW, y1: yL(t), y2: yL(t) }, grid);
        el("text", { x: PAD.left - 6, y: yL(t) + 4, "text-anchor": "end", class: "axis-left" }, grid)
          .textContent = fmtNumber(t);
      }
      for (const t of right.ticks) {
        el("text", { x: PAD.left + plotW + 6, y: yR(t) + 4, "text-anchor": "start", class: "axis-right" }, grid)
          .textContent = String(t);
      }
      const span = to - from;
      const step = TIME_STEPS.find((s) => span / s <= Math.max(3, Math.floor(plotW / 90))) || 86400;
      const offset = new Date().getTimezoneOffset() * 60;  // ticks on local round times
      for (let t = Math.ceil((from - offset) / step) * step + offset; t <= to; t += step) {
        el("line", { x1: x(t), x2: x(t), y1: PAD.top, y2: PAD.top + plotH, class: "vgrid" }, grid);
        el("text", { x: x(t), y: HEIGHT - 10, "text-anchor": "middle", class: "axis-time" }, grid)
          .textContent = fmtClock(t, false);
      }
      el("text", { x: 4, y: 10, class: "axis-title axis-left" }, grid).textContent = unit ? this.label + " (" + unit + ")" : this.label;
      el("text", { x: width - 4, y: 10, "text-anchor": "end", class: "axis-title axis-right" }, grid).textContent = "replicas";

      if (!pts.length) {
        el("text", { x: PAD.left + plotW / 2, y: PAD.top + plotH / 2, "text-anchor": "middle", class: "chart-empty" }, svg)
          .textContent = "No samples in this window yet";
        svg.setAttribute("aria-label", "Chart: no samples in this window yet");
        this.svg.dataset.points = "0";
        this.hasCapacity = false;
        return;
      }
      // A gap in sampling (controller down) shows as a gap, not as a straight line across it.
      const gaps = pts.slice(1).map((p, i) => p.at - pts[i].at).sort((a, b) => a - b);
      const maxGap = Math.max(60, 4 * (gaps[Math.floor(gaps.length / 2)] || 15));
      const end = Math.min(to, pts[pts.length - 1].at + Math.min(maxGap, Math.max(1, to - pts[pts.length - 1].at)));

      el("path", { d: stepArea(pts, x, yR, end), class: "series-replicas" }, svg);
      const cap = linePath(pts, "capacity", x, yL, maxGap);
      if (cap) el("path", { d: cap, class: "series-capacity" }, svg);
      this.hasCapacity = !!cap;
      el("path", { d: linePath(pts, "value", x, yL, maxGap), class: "series-load" }, svg);
      // single samples would be invisible as lines: mark the latest one
      const last = [...pts].reverse().find((p) => p.value !== null && isFinite(p.value));
      if (last) el("circle", { cx: x(last.at), cy: yL(last.value), r: 3, class: "series-load-dot" }, svg);

      const loads = pts.map((p) => p.value).filter((v) => v !== null && isFinite(v));
      const peak = loads.length ? Math.max(...loads) : null;
      svg.setAttribute("aria-label",
        `Chart of the last ${Math.round(span / 60)} minutes: ${this.label} now ${fmtNumber(last ? last.value : null)}` +
        `${unit ? " " + unit : ""}, peak ${fmtNumber(peak)}; cloud replicas now ${pts[pts.length - 1].replicas}, ` +
        `most ${maxRep}; ${pts.length} samples.`);
      this.svg.dataset.points = String(pts.length);

      // hover read-out
      const cursor = el("line", { y1: PAD.top, y2: PAD.top + plotH, class: "chart-cursor", visibility: "hidden" }, svg);
      const overlay = el("rect", { x: PAD.left, y: PAD.top, width: plotW, height: plotH, fill: "transparent" }, svg);
      const show = (evt) => {
        const box = svg.getBoundingClientRect();
        const t = from + ((evt.clientX - box.left - PAD.left) / plotW) * span;
        let lo = 0, hi = pts.length - 1;
        while (lo < hi) { const mid = (lo + hi) >> 1; if (pts[mid].at < t) lo = mid + 1; else hi = mid; }
        const p = lo > 0 && Math.abs(pts[lo - 1].at - t) < Math.abs(pts[lo].at - t) ? pts[lo - 1] : pts[lo];
        cursor.setAttribute("x1", x(p.at)); cursor.setAttribute("x2", x(p.at));
        cursor.setAttribute("visibility", "visible");
        this.tip.textContent = `${fmtClock(p.at, true)}  ${this.label} ${fmtNumber(p.value)}${unit ? " " + unit : ""}` +
          (p.capacity !== null && p.capacity !== undefined ? `  capacity ${fmtNumber(p.capacity)}` : "") +
          `  replicas ${p.replicas}`;
        this.tip.hidden = false;
        const tipX = Math.min(Math.max(0, x(p.at) - 80), width - 240);
        this.tip.style.left = tipX + "px";
      };
      overlay.addEventListener("mousemove", show);
      overlay.addEventListener("mouseleave", () => { cursor.setAttribute("visibility", "hidden"); this.tip.hidden = true; });
    }
  }

  global.BurstChart = BurstChart;
  global.BurstChartFormat = { fmtNumber, fmtClock };
})(window);
