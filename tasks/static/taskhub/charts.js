// TaskHub console: the queues panel (a row per queue with a one-hour sparkline) and the charts page
// (counts and wait/run percentiles over 1 h, 24 h or 7 d). Plain SVG drawn here, no library:
// polylines over at most 168 points need none. console.js polls the feed and calls these renderers.
(function () {
  "use strict";

  var SVG = "http://www.w3.org/2000/svg";
  var el = window.TaskHubDom.el;

  function svg(tag, attrs) {
    var node = document.createElementNS(SVG, tag);
    Object.keys(attrs || {}).forEach(function (key) { node.setAttribute(key, attrs[key]); });
    return node;
  }

  function points(values, width, height, top) {
    var step = values.length > 1 ? width / (values.length - 1) : 0;
    return values.map(function (v, i) {
      return (i * step).toFixed(1) + "," + (height - (top ? (v || 0) / top * height : 0)).toFixed(1);
    }).join(" ");
  }

  function sparkline(finished, failed, title) {
    var width = 120, height = 24, top = Math.max.apply(null, finished.concat([1]));
    var node = svg("svg", { width: width, height: height + 2, viewBox: "0 -1 " + width + " " + (height + 2), "class": "th-spark" });
    var label = svg("title");
    label.textContent = title;
    node.appendChild(label);
    node.appendChild(svg("polyline", { points: points(finished, width, height, top), "class": "th-line-succeeded" }));
    node.appendChild(svg("polyline", { points: points(failed, width, height, top), "class": "th-line-failed" }));
    return node;
  }

  function age(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    if (seconds < 90) return Math.round(seconds) + " s";
    if (seconds < 5400) return Math.round(seconds / 60) + " min";
    return (seconds / 3600).toFixed(1) + " h";
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    if (seconds < 1) return Math.round(seconds * 1000) + " ms";
    return age(seconds);
  }

  function limits(l, labels) {
    var parts = ["concurrency " + (l.max_concurrency || labels.unlimited)];
    if (l.max_active_per_user) parts.push("per user " + l.max_active_per_user);
    if (l.fairness && l.fairness !== "none") parts.push("fairness " + l.fairness);
    if (l.rate_limit) parts.push("rate " + l.rate_limit + (l.rate_limit_per_key ? " " + labels.per_key : ""));
    if (l.per_key_concurrency) parts.push("per key " + l.per_key_concurrency);
    return parts.join(" · ");
  }

  // The limits form sits outside the table: the 3-second refresh redraws rows, never what is being typed.
  var LIMIT_FIELDS = ["max_concurrency", "fairness", "per_key_concurrency", "rate_limit", "rate_limit_per_key"];

  function openLimits(q, labels) {
    var form = document.getElementById("th-limits-form");
    form.dataset.url = q.limits_url;
    form.dataset.queue = q.name;
    document.getElementById("th-limits-title").textContent = window.TaskHubDom.format(labels.limits_of, { queue: q.name });
    LIMIT_FIELDS.forEach(function (name) {
      var field = form.elements[name];
      if (field.type === "checkbox") field.checked = Boolean(q.limits[name]);
      else field.value = q.limits[name] === null || q.limits[name] === undefined ? "" : String(q.limits[name]);
      field.classList.remove("th-invalid");
    });
    form.hidden = false;
    form.elements.max_concurrency.focus();
  }

  function limitsBody(form) {
    var body = {};
    LIMIT_FIELDS.forEach(function (name) {
      var field = form.elements[name];
      if (field.type === "checkbox") body[name] = field.checked;
      else if (field.type === "number") body[name] = field.value === "" ? null : Number(field.value);
      else body[name] = field.value;
    });
    return body;
  }

  function wireLimits() {
    var form = document.getElementById("th-limits-form");
    if (!form) return;
    var message = document.getElementById("th-message");
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      LIMIT_FIELDS.forEach(function (name) { form.elements[name].classList.remove("th-invalid"); });
      fetch(form.dataset.url, {
        method: "POST", body: JSON.stringify(limitsBody(form)), credentials: "same-origin",
        headers: {
          Accept: "application/json", "Content-Type": "application/json",
          "X-CSRFToken": document.querySelector("[name=csrfmiddlewaretoken]").value,
        },
      }).then(function (response) {
        return response.json().then(function (body) { return { ok: response.ok, body: body }; });
      }).then(function (answer) {
        if (answer.ok) {
          message.textContent = answer.body.message;
          message.className = "th-message";
          form.hidden = true;
          return window.taskhubConsole.refresh();
        }
        message.textContent = answer.body.detail + " (" + answer.body.code + ")";
        message.className = "th-message th-warn";
        var bad = answer.body.field && form.elements[answer.body.field];
        if (bad) { bad.classList.add("th-invalid"); bad.focus(); }
      }).catch(function (error) {
        message.textContent = error.message;
        message.className = "th-message th-warn";
      });
    });
    document.getElementById("th-limits-cancel").addEventListener("click", function () { form.hidden = true; });
  }

  function renderQueues(data, labels) {
    var body = document.querySelector("#th-queues tbody");
    var root = document.getElementById("taskhub-console");
    var canPause = root.dataset.canPause === "true";
    body.replaceChildren();
    if (!data.queues.length) {
      var empty = el("tr");
      empty.appendChild(el("td", { colspan: "12", "class": "th-empty" }, labels.no_queues));
      body.appendChild(empty);
      return;
    }
    data.queues.forEach(function (q) {
      var tr = el("tr");
      tr.dataset.queue = q.name;
      tr.dataset.paused = String(q.is_paused);
      tr.appendChild(el("td", {}, q.name));
      tr.appendChild(el("td", { "class": q.is_paused ? "th-paused th-state" : "th-active th-state" },
        q.is_paused ? labels.paused : labels.active));
      tr.appendChild(el("td", { "class": "th-num th-pending" }, q.pending));
      tr.appendChild(el("td", { "class": "th-num" }, q.scheduled));
      tr.appendChild(el("td", { "class": "th-num" }, q.running));
      tr.appendChild(el("td", { "class": "th-num" }, age(q.oldest_runnable_age_seconds)));
      tr.appendChild(el("td", { "class": "th-num" }, q.live_workers));
      var finished = q.succeeded_last_hour + q.failed_last_hour + q.cancelled_last_hour;
      tr.appendChild(el("td", { "class": "th-num th-finished" }, finished));
      tr.appendChild(el("td", { "class": "th-num th-rate" },
        q.failure_rate_last_hour === null ? "—" : (q.failure_rate_last_hour * 100).toFixed(1) + " %"));
      var spark = el("td");
      spark.appendChild(sparkline(q.finished_per_minute, q.failed_per_minute, labels.sparkline));
      tr.appendChild(spark);
      tr.appendChild(el("td", { "class": "th-limits" }, limits(q.limits, labels)));
      var action = el("td");
      if (canPause) {
        var button = el("button", { type: "button", "class": "button th-toggle" }, q.is_paused ? labels.resume : labels.pause);
        button.addEventListener("click", function () {
          window.taskhubConsole.post(q.is_paused ? q.resume_url : q.pause_url, new FormData());
        });
        action.appendChild(button);
      }
      if (root.dataset.canEdit === "true") {
        var edit = el("button", { type: "button", "class": "button th-edit-limits" }, labels.edit_limits);
        edit.addEventListener("click", function () { openLimits(q, labels); });
        action.appendChild(edit);
      }
      tr.appendChild(action);
      body.appendChild(tr);
    });
  }

  var COUNT_SERIES = ["started", "succeeded", "failed"];
  var PCT = ["p50", "p95", "p99"];

  function tickLabel(iso, step) {
    var d = new Date(iso);
    var hm = String(d.getUTCHours()).padStart(2, "0") + ":" + String(d.getUTCMinutes()).padStart(2, "0");
    return step >= 3600 ? (d.getUTCMonth() + 1) + "/" + d.getUTCDate() + " " + hm : hm;
  }

  function lineChart(id, series, data, format) {
    var holder = document.getElementById(id);
    var width = 720, height = 180, left = 56, bottom = 20;
    var all = [];
    series.forEach(function (s) { all = all.concat(s.values.filter(function (v) { return v !== null; })); });
    var top = Math.max.apply(null, all.concat([0])) || 1;
    var node = svg("svg", { width: width, height: height + bottom, "class": "th-svg th-linechart" });
    node.appendChild(svg("line", { x1: left, y1: height, x2: width, y2: height, "class": "th-axis" }));
    node.appendChild(svg("line", { x1: left, y1: 0, x2: left, y2: height, "class": "th-axis" }));
    [0, top / 2, top].forEach(function (v) {
      var text = svg("text", { x: left - 4, y: Math.max(height - v / top * height, 10), "text-anchor": "end", "class": "th-tick" });
      text.textContent = format(v);
      node.appendChild(text);
    });
    var n = data.points.length;
    [0, Math.floor(n / 2), n - 1].forEach(function (i) {
      var text = svg("text", { x: left + i * (width - left) / Math.max(n - 1, 1), y: height + 14, "text-anchor": i === 0 ? "start" : (i === n - 1 ? "end" : "middle"), "class": "th-tick" });
      text.textContent = tickLabel(data.points[i].at, data.step_seconds) + " UTC";
      node.appendChild(text);
    });
    var plot = svg("g", { transform: "translate(" + left + ",0)" });
    var step = n > 1 ? (width - left) / (n - 1) : 0;
    series.forEach(function (s) {
      // A percentile of a point without tasks is null: the line breaks there rather than drop to 0.
      var segment = [];
      s.values.concat([null]).forEach(function (v, i) {
        if (v !== null && v !== undefined) {
          segment.push((i * step).toFixed(1) + "," + (height - v / top * height).toFixed(1));
          return;
        }
        if (segment.length) {
          plot.appendChild(svg("polyline", { points: segment.join(" "), "class": "th-series " + s.css, "data-series": s.name }));
        }
        segment = [];
      });
    });
    node.appendChild(plot);
    holder.replaceChildren(node);
  }

  function renderCharts(data, labels) {
    var counts = COUNT_SERIES.map(function (name) {
      return { name: name, css: "th-line-" + name, values: data.points.map(function (p) { return p[name]; }) };
    });
    lineChart("th-chart-counts", counts, data, function (v) { return String(Math.round(v)); });
    ["wait", "run"].forEach(function (kind) {
      var series = PCT.map(function (q) {
        return { name: kind + "-" + q, css: "th-line-" + q, values: data.points.map(function (p) { return p[kind][q]; }) };
      });
      lineChart("th-chart-" + kind, series, data, duration);
    });
    var totals = document.getElementById("th-chart-totals");
    totals.replaceChildren();
    ["started", "succeeded", "failed", "cancelled"].forEach(function (name) {
      totals.appendChild(el("td", { "class": "th-num", "data-total": name }, data.totals[name]));
    });
    ["wait", "run"].forEach(function (kind) {
      PCT.forEach(function (q) {
        totals.appendChild(el("td", { "class": "th-num", "data-pct": kind + "-" + q }, duration(data[kind][q])));
      });
    });
    var root = document.getElementById("taskhub-console");
    root.dataset.range = data.range;
    document.querySelectorAll("[data-range-choice]").forEach(function (link) {
      link.classList.toggle("th-current", link.dataset.rangeChoice === data.range);
    });
    document.getElementById("th-chart-empty").hidden = data.totals.started + data.totals.succeeded + data.totals.failed + data.totals.cancelled > 0;
  }

  function chartUrl() {
    var root = document.getElementById("taskhub-console");
    var queue = document.getElementById("th-chart-queue").value;
    return root.dataset.baseUrl + "?range=" + encodeURIComponent(root.dataset.range) + (queue ? "&queue=" + encodeURIComponent(queue) : "");
  }

  document.addEventListener("DOMContentLoaded", wireLimits);

  function wireCharts() {
    var root = document.getElementById("taskhub-console");
    if (!root || root.dataset.panel !== "charts") return;
    document.querySelectorAll("[data-range-choice]").forEach(function (link) {
      link.addEventListener("click", function (event) {
        event.preventDefault();
        root.dataset.range = link.dataset.rangeChoice;
        root.dataset.dataUrl = chartUrl();
        window.taskhubConsole.refresh();
      });
    });
    document.getElementById("th-chart-queue").addEventListener("change", function () {
      root.dataset.dataUrl = chartUrl();
      window.taskhubConsole.refresh();
    });
    root.dataset.dataUrl = chartUrl();
  }

  window.TaskHubPanels = { queues: renderQueues, charts: renderCharts };
  document.addEventListener("DOMContentLoaded", wireCharts);
})();
