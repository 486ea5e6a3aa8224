/* A small hand-written SVG line chart (no library, no CDN): rounds on x, one line per series.
 *
 *   lineChart(svgElement, {
 *     x: [1, 2, 3],                                  // rounds
 *     series: [{label: "CWMM", values: [0.3, null, 0.4], cls: "s0"}],
 *     format: v => v.toFixed(3),                     // y tick and tooltip format
 *     zero: true,                                    // draw y = 0
 *     xLabel: "decile",                              // x axis label (default "round")
 *   });
 *
 * null values leave a gap. Colours come from CSS classes s0, s1, s2 … (style.css).
 */
"use strict";

(function () {
  const NS = "http://www.w3.org/2000/svg";

  function node(tag, attrs, text) {
    const el = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
    if (text !== undefined) el.textContent = text;
    return el;
  }

  /* About `count` round tick values covering [lo, hi]. */
  function niceTicks(lo, hi, count) {
    // a range too narrow for its magnitude (t + step === t) would never end the loop below
    if (!(hi > lo) || hi - lo <= 1e-9 * Math.max(Math.abs(hi), Math.abs(lo))) return [lo];
    const raw = (hi - lo) / count;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map(m => m * mag).find(s => raw <= s) || 10 * mag;
    const ticks = [];
    for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9 && ticks.length <= 4 * count + 2; t += step) ticks.push(Math.round(t / step) * step);
    return ticks;
  }

  function lineChart(svg, opts) {
    const W = 560, H = 250, left = 56, right = 14, top = 30, bottom = 30;
    const fmt = opts.format || (v => v.toFixed(3));
    const xs = opts.x || [];
    svg.replaceChildren();
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    const values = opts.series.flatMap(s => s.values).filter(v => v !== null && v !== undefined && isFinite(v));
    if (!xs.length || !values.length) {
      svg.appendChild(node("text", {x: W / 2, y: H / 2, "text-anchor": "middle", class: "chart-empty"}, opts.empty || "no data yet"));
      return;
    }
    let lo = Math.min(...values), hi = Math.max(...values);
    if (opts.zero) { lo = Math.min(lo, 0); hi = Math.max(hi, 0); }
    if (hi - lo <= 1e-9 * Math.max(Math.abs(hi), Math.abs(lo))) { hi += Math.abs(hi) * 0.1 || 0.01; lo -= Math.abs(lo) * 0.1 || 0.01; }
    const pad = (hi - lo) * 0.08;
    lo -= pad; hi += pad;
    let x0 = Math.min(...xs), x1 = Math.max(...xs);
    if (x0 === x1) { x0 -= 1; x1 += 1; }
    const sx = x => left + (x - x0) / (x1 - x0) * (W - left - right);
    const sy = y => top + (hi - y) / (hi - lo) * (H - top - bottom);

    const grid = node("g", {class: "grid"});
    for (const t of niceTicks(lo, hi, 5)) {
      grid.appendChild(node("line", {x1: left, x2: W - right, y1: sy(t), y2: sy(t)}));
      grid.appendChild(node("text", {x: left - 6, y: sy(t) + 4, "text-anchor": "end", class: "tick"}, fmt(t)));
    }
    const xticks = niceTicks(x0, x1, Math.min(8, xs.length)).filter(t => Number.isInteger(t) && t >= x0 && t <= x1);
    for (const t of xticks) {
      grid.appendChild(node("text", {x: sx(t), y: H - bottom + 16, "text-anchor": "middle", class: "tick"}, String(t)));
    }
    grid.appendChild(node("text", {x: W - right, y: H - 4, "text-anchor": "end", class: "axis-label"}, opts.xLabel || "round"));
    svg.appendChild(grid);
    if (opts.zero && lo < 0 && hi > 0) {
      svg.appendChild(node("line", {x1: left, x2: W - right, y1: sy(0), y2: sy(0), class: "zero"}));
    }

    let legendX = left;
    opts.series.forEach((s, i) => {
      const cls = s.cls || `s${i}`;
      let d = "", pen = false;
      const g = node("g", {class: `series ${cls}`, "data-label": s.label});
      xs.forEach((x, j) => {
        const v = s.values[j];
        if (v === null || v === undefined || !isFinite(v)) { pen = false; return; }
        d += `${pen ? "L" : "M"}${sx(x).toFixed(1)},${sy(v).toFixed(1)}`;
        pen = true;
        const dot = node("circle", {cx: sx(x).toFixed(1), cy: sy(v).toFixed(1), r: 3.2, "data-x": x, "data-value": v});
        dot.appendChild(node("title", {}, `${s.label} · ${opts.xLabel || "round"} ${x}: ${fmt(v)}`));
        g.appendChild(dot);
      });
      g.insertBefore(node("path", {d, fill: "none"}), g.firstChild);
      svg.appendChild(g);
      // legend, left to right along the top, each entry as wide as its text
      const legend = node("g", {class: `legend ${cls}`});
      legend.appendChild(node("line", {x1: legendX, x2: legendX + 18, y1: 12, y2: 12}));
      const text = node("text", {x: legendX + 24, y: 16}, s.label);
      legend.appendChild(text);
      svg.appendChild(legend);
      const width = text.getComputedTextLength ? text.getComputedTextLength() : 0;
      legendX += 24 + (width > 0 ? width : s.label.length * 6.5) + 22;
    });
  }

  window.mmcCharts = {lineChart, niceTicks};
})();
