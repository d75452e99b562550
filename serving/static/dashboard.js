// A dashboard page: one websocket page subscription, re-sent when an input changes.
(function () {
  "use strict";
  const cfg = JSON.parse(document.getElementById("cxd-page").textContent);
  const status = document.getElementById("status");
  const panels = {};
  document.querySelectorAll("section[data-query]").forEach((el) => { panels[el.dataset.query] = el; });
  let ws = null, subId = 0, current = null, lastShown = {};

  function params() {
    const out = {};
    document.querySelectorAll("select[data-input]").forEach((s) => { out[s.dataset.input] = s.value; });
    return out;
  }

  function subscribe() {
    if (!ws || ws.readyState !== 1) return;
    if (current) ws.send(JSON.stringify({ op: "unsubscribe", id: current }));
    current = String(++subId);
    ws.send(JSON.stringify({ op: "subscribe", id: current, page: cfg.page, params: params() }));
  }

  function fmt(v) {
    if (v === null || v === undefined) return "–";
    if (typeof v === "number") return Number.isInteger(v) ? v.toLocaleString() : v.toLocaleString(undefined, { maximumFractionDigits: 2 });
    if (typeof v === "string" && /^\d{4}-\d\d-\d\dT/.test(v)) return v.replace("T", " ").slice(0, 19);
    return String(v);
  }

  function el(tag, attrs, text) {
    const e = document.createElementNS(tag === "svg" || attrs && attrs.svg ? "http://www.w3.org/2000/svg" : "http://www.w3.org/1999/xhtml", tag);
    for (const [k, v] of Object.entries(attrs || {})) if (k !== "svg") e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function card(body, result) {
    const row = result.rows[0] || {};
    const col = result.columns[0].name;
    body.replaceChildren(el("div", { class: "value", "data-value": String(row[col]) }, fmt(row[col])));
  }

  function bar(body, result) {
    const [label, value] = result.columns.map((c) => c.name);
    const rows = result.rows, w = 900, barH = 26, h = rows.length * (barH + 8) + 8;
    const max = Math.max(1, ...rows.map((r) => Number(r[value]) || 0));
    const svg = el("svg", { svg: 1, viewBox: `0 0 ${w} ${h}`, width: "100%", height: h });
    rows.forEach((r, i) => {
      const y = 8 + i * (barH + 8), bw = Math.max(1, (Number(r[value]) || 0) / max * (w - 260));
      svg.appendChild(el("text", { svg: 1, x: 0, y: y + barH * 0.7 }, fmt(r[label])));
      svg.appendChild(el("rect", { svg: 1, x: 120, y, width: bw, height: barH, fill: "#3d7be0", "data-label": String(r[label]), "data-value": String(r[value]) }));
      svg.appendChild(el("text", { svg: 1, x: 128 + bw, y: y + barH * 0.7 }, fmt(r[value])));
    });
    body.replaceChildren(svg);
  }

  function table(body, result) {
    const t = el("table"), head = el("tr");
    result.columns.forEach((c) => head.appendChild(el("th", {}, c.name)));
    t.appendChild(head);
    result.rows.forEach((r) => {
      const tr = el("tr");
      result.columns.forEach((c) => tr.appendChild(el("td", {}, fmt(r[c.name]))));
      t.appendChild(tr);
    });
    if (!result.rows.length) t.appendChild(el("tr")).appendChild(el("td", { colspan: result.columns.length }, "no rows"));
    body.replaceChildren(t);
  }

  function show(results) {
    for (const [name, result] of Object.entries(results)) {
      const panel = panels[name];
      if (!panel) continue;
      const body = panel.querySelector(".body");
      if (result.error) { body.textContent = result.error.message; continue; }
      const text = JSON.stringify(result.rows);
      if (lastShown[name] === text) continue;
      ({ card, bar, table })[panel.dataset.shape](body, result);
      if (lastShown[name] !== undefined) { panel.classList.remove("flash"); void panel.offsetWidth; panel.classList.add("flash"); }
      lastShown[name] = text;
      const f = result.freshness || {};
      panel.querySelector(".updated").textContent =
        `updated ${new Date().toLocaleTimeString()} · plan ${f.plan || "?"}${f.stale ? " · stale" : ""}`;
      panel.dataset.updates = String(Number(panel.dataset.updates || 0) + 1);
    }
  }

  function connect() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    ws = new WebSocket(`${proto}//${location.host}/ws?token=${encodeURIComponent(cfg.token)}`);
    ws.onopen = () => { status.textContent = "live"; current = null; subscribe(); };
    ws.onmessage = (event) => {
      const msg = JSON.parse(event.data);
      if (msg.op === "data" && msg.id === current && msg.results) show(msg.results);
      else if (msg.op === "error") status.textContent = `error: ${msg.error.message}`;
    };
    ws.onclose = () => { status.textContent = "reconnecting…"; setTimeout(connect, 1000); };
  }

  document.querySelectorAll("select[data-input]").forEach((s) => s.addEventListener("change", () => { lastShown = {}; subscribe(); }));
  connect();
})();
