/* cxd console: the little JavaScript the pages use.
 * - [data-poll=URL]: replace the element's contents with the fragment at URL every 2 s;
 * - figure[data-chart]: draw the chart from its JSON; with data-live, append live points;
 *   with data-live-bars, replace the bars with the JSON at that URL. */
(function () {
  "use strict";
  var EVERY = 2000;

  function refresh(el) {
    return fetch(el.dataset.poll, {credentials: "same-origin", headers: {Accept: "text/html"}})
      .then(function (r) { if (r.status === 401) location.reload(); return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html !== null && html !== el.dataset.last) { el.innerHTML = html; el.dataset.last = html; }
        el.dataset.polled = String(Date.now());
      })
      .catch(function () {});
  }

  function poll(el) {
    refresh(el).then(function () { setTimeout(function () { poll(el); }, EVERY); });
  }

  // [data-follow="ds1,ds2"]: follow those datasets' changes over the /admin/ws websocket (the
  // /ws protocol; the console session's cookie authenticates it) and refresh the element at once on each
  // change; the 2 s poll above still catches run-status changes, which carry no data.
  function follow(el) {
    var names = el.dataset.follow.split(",").filter(Boolean);
    if (!names.length || !window.WebSocket) return;
    var proto = location.protocol === "https:" ? "wss:" : "ws:";
    var ws = new WebSocket(proto + "//" + location.host + "/admin/ws");
    var pending = false;
    ws.onopen = function () {
      el.dataset.live = "websocket";
      names.forEach(function (name, i) {
        ws.send(JSON.stringify({op: "subscribe", id: "f" + i, dataset: name}));
      });
    };
    ws.onmessage = function (event) {
      var msg = JSON.parse(event.data);
      if (msg.op !== "data" || pending) return;
      pending = true;  // one refresh for a burst of changes
      setTimeout(function () {
        pending = false;
        el.dataset.pushes = String(Number(el.dataset.pushes || 0) + 1);
        refresh(el);
      }, 100);
    };
    ws.onclose = function () { delete el.dataset.live; setTimeout(function () { follow(el); }, 2000); };
  }

  function readJSON(el) {
    var s = el.querySelector("script[type='application/json']");
    return s ? JSON.parse(s.textContent) : [];
  }

  function draw(fig) {
    var opts = {xLabel: fig.dataset.xLabel, yLabel: fig.dataset.yLabel, time: fig.dataset.time !== "false"};
    var data = fig._data;
    if (fig.dataset.chart === "line") {
      cxdChart.line(fig, data, opts);
      var bars = fig.dataset.bars && document.getElementById(fig.dataset.bars);
      if (bars) cxdChart.bar(bars, cxdChart.meanByGroup(data), {yLabel: "mean " + (opts.yLabel || "")});
    } else {
      cxdChart.bar(fig, data, opts);
    }
  }

  function live(fig) {
    var limit = Number(fig.dataset.limit || 500);
    var url = fig.dataset.live + (fig.dataset.live.indexOf("?") < 0 ? "?" : "&") + "after=" + encodeURIComponent(fig.dataset.after || "0-0");
    fetch(url, {credentials: "same-origin"})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (body) {
        if (body && body.points.length) {
          fig._data = fig._data.concat(body.points).sort(function (a, b) { return a.x - b.x; }).slice(-limit);
          draw(fig);
        }
        if (body) fig.dataset.after = body.after;
      })
      .catch(function () {})
      .then(function () { setTimeout(function () { live(fig); }, EVERY); });
  }

  function liveBars(fig) {
    fetch(fig.dataset.liveBars, {credentials: "same-origin"})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (bars) { if (bars) { fig._data = bars; draw(fig); } })
      .catch(function () {})
      .then(function () { setTimeout(function () { liveBars(fig); }, EVERY); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-poll]").forEach(function (el) { setTimeout(function () { poll(el); }, EVERY); });
    document.querySelectorAll("[data-follow]").forEach(follow);
    document.querySelectorAll("figure[data-chart]").forEach(function (fig) {
      fig._data = readJSON(fig);
      draw(fig);
      if (fig.dataset.live) setTimeout(function () { live(fig); }, EVERY);
      if (fig.dataset.liveBars) setTimeout(function () { liveBars(fig); }, EVERY);
    });
  });
})();
