/* cxd chart: a compact SVG line and bar chart (no dependencies, MIT, part of cxd).
 *
 *   cxdChart.line(el, points, {xLabel, yLabel, time})  points: [{x, y, g, src}]
 *   cxdChart.bar(el, bars, {yLabel})                   bars:   [{label, value}]
 *
 * Every drawn point keeps its data in attributes (data-x, data-y, data-g, data-label,
 * data-value) so tests and curious operators can read exactly what is plotted.
 */
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  var W = 760, H = 270, L = 60, R = 16, T = 28, B = 40;
  var COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];

  function node(tag, attrs, parent, text) {
    var n = document.createElementNS(NS, tag);
    for (var k in attrs) n.setAttribute(k, attrs[k]);
    if (text !== undefined) n.textContent = text;
    if (parent) parent.appendChild(n);
    return n;
  }

  function extent(values) {
    var lo = Math.min.apply(null, values), hi = Math.max.apply(null, values);
    if (lo === hi) { lo -= 1; hi += 1; }
    return [lo, hi];
  }

  function ticks(lo, hi, n) {
    var out = [];
    for (var i = 0; i <= n; i++) out.push(lo + (hi - lo) * i / n);
    return out;
  }

  function fmtNum(v) {
    var a = Math.abs(v);
    if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (a >= 1e4) return (v / 1e3).toFixed(0) + "k";
    return a >= 100 ? v.toFixed(0) : v.toFixed(2).replace(/\.?0+$/, "");
  }

  function fmtTime(ms, span) {
    var iso = new Date(ms).toISOString();
    return span > 2 * 86400000 ? iso.slice(0, 10) : iso.slice(5, 16).replace("T", " ");
  }

  function frame(el, label) {
    el.querySelectorAll("svg").forEach(function (s) { s.remove(); });
    var svg = node("svg", {viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": label, class: "cxd-chart"});
    el.appendChild(svg);
    return svg;
  }

  function yAxis(svg, lo, hi, sy, label) {
    ticks(lo, hi, 4).forEach(function (v) {
      node("line", {x1: L, x2: W - R, y1: sy(v), y2: sy(v), class: "grid"}, svg);
      node("text", {x: L - 6, y: sy(v) + 4, "text-anchor": "end", class: "tick"}, svg, fmtNum(v));
    });
    if (label) node("text", {x: 8, y: 14, class: "axis-label"}, svg, label);
  }

  function empty(svg, message) {
    node("text", {x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty"}, svg, message);
  }

  function line(el, points, opts) {
    opts = opts || {};
    var svg = frame(el, "line chart of " + (opts.yLabel || "y"));
    el.dataset.count = points.length;
    if (!points.length) return empty(svg, "no points yet");
    var xs = extent(points.map(function (p) { return p.x; }));
    var ys = extent(points.map(function (p) { return p.y; }));
    var sx = function (v) { return L + (v - xs[0]) / (xs[1] - xs[0]) * (W - L - R); };
    var sy = function (v) { return H - B - (v - ys[0]) / (ys[1] - ys[0]) * (H - T - B); };
    yAxis(svg, ys[0], ys[1], sy, opts.yLabel);
    ticks(xs[0], xs[1], 4).forEach(function (v) {
      var text = opts.time === false ? fmtNum(v) : fmtTime(v, xs[1] - xs[0]);
      node("text", {x: sx(v), y: H - B + 16, "text-anchor": "middle", class: "tick"}, svg, text);
    });
    if (opts.xLabel) node("text", {x: W - R, y: H - 4, "text-anchor": "end", class: "axis-label"}, svg, opts.xLabel);
    var groups = {};
    points.forEach(function (p) { (groups[p.g || ""] = groups[p.g || ""] || []).push(p); });
    var names = Object.keys(groups).sort();
    names.forEach(function (g, i) {
      var color = COLORS[i % COLORS.length];
      var ps = groups[g].slice().sort(function (a, b) { return a.x - b.x; });
      node("polyline", {
        points: ps.map(function (p) { return sx(p.x).toFixed(1) + "," + sy(p.y).toFixed(1); }).join(" "),
        fill: "none", stroke: color, "stroke-width": 1.5, "data-g": g,
      }, svg);
      ps.forEach(function (p) {
        var c = node("circle", {
          cx: sx(p.x).toFixed(1), cy: sy(p.y).toFixed(1), r: p.src === "speed" ? 3.5 : 2.2,
          fill: p.src === "speed" ? "#fff" : color, stroke: color,
          class: "point " + (p.src || "batch"), "data-x": p.x, "data-y": p.y, "data-g": g,
        }, svg);
        node("title", {}, c, (g ? g + " " : "") + (opts.time === false ? p.x : new Date(p.x).toISOString()) + ": " + p.y);
      });
    });
    if (names.length > 1 || names[0]) {
      names.slice(0, 8).forEach(function (g, i) {
        var x = W - R - (Math.min(names.length, 8) - i) * 90;
        node("rect", {x: x, y: 6, width: 8, height: 8, fill: COLORS[i % COLORS.length]}, svg);
        node("text", {x: x + 12, y: 14, class: "tick"}, svg, g || "(all)");
      });
    }
  }

  function bar(el, bars, opts) {
    opts = opts || {};
    var svg = frame(el, "bar chart of " + (opts.yLabel || "value"));
    el.dataset.count = bars.length;
    if (!bars.length) return empty(svg, "no values yet");
    var ys = extent(bars.map(function (b) { return b.value; }).concat([0]));
    var sy = function (v) { return H - B - (v - ys[0]) / (ys[1] - ys[0]) * (H - T - B); };
    yAxis(svg, ys[0], ys[1], sy, opts.yLabel);
    var step = (W - L - R) / bars.length, width = Math.max(2, step * 0.7);
    bars.forEach(function (b, i) {
      var x = L + i * step + (step - width) / 2, top = sy(Math.max(b.value, 0)), base = sy(Math.min(b.value, 0));
      var r = node("rect", {
        x: x.toFixed(1), y: top.toFixed(1), width: width.toFixed(1), height: Math.max(1, base - top).toFixed(1),
        fill: COLORS[0], class: "bar", "data-label": b.label, "data-value": b.value,
      }, svg);
      node("title", {}, r, b.label + ": " + b.value);
      if (bars.length <= 24) {
        node("text", {x: x + width / 2, y: H - B + 16, "text-anchor": "middle", class: "tick"}, svg, String(b.label).slice(0, 12));
      }
    });
  }

  /* Mean y per group of line points: the bar chart by key. */
  function meanByGroup(points) {
    var acc = {};
    points.forEach(function (p) {
      var k = p.g || "(all)";
      acc[k] = acc[k] || [0, 0];
      acc[k][0] += p.y; acc[k][1] += 1;
    });
    return Object.keys(acc).sort().map(function (k) { return {label: k, value: acc[k][0] / acc[k][1], n: acc[k][1]}; });
  }

  window.cxdChart = {line: line, bar: bar, meanByGroup: meanByGroup};
})();
