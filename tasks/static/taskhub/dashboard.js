// TaskHub staff dashboard: renders the snapshot, polls the JSON feed, posts the actions.
// Served by TaskHub itself (no CDN). Text is set with textContent only: task types and
// error messages come from users and handlers and must never become markup.
(function () {
  "use strict";

  var SVG = "http://www.w3.org/2000/svg";
  var root, labels, csrfToken, timer;

  var el = window.TaskHubDom.el, format = window.TaskHubDom.format;

  function age(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    if (seconds < 90) return Math.round(seconds) + " s";
    if (seconds < 5400) return Math.round(seconds / 60) + " min";
    return (seconds / 3600).toFixed(1) + " h";
  }

  function row(cells) {
    var tr = el("tr");
    cells.forEach(function (cell) { tr.appendChild(cell); });
    return tr;
  }

  function fill(tableId, rows, emptyText, columns) {
    var body = document.querySelector("#" + tableId + " tbody");
    body.replaceChildren();
    if (!rows.length) {
      body.appendChild(row([el("td", { colspan: String(columns), "class": "th-empty" }, emptyText)]));
      return;
    }
    rows.forEach(function (tr) { body.appendChild(tr); });
  }

  function actionForm(url, label, fields) {
    var form = el("form", { method: "post", action: url, "class": "th-action" });
    form.appendChild(el("input", { type: "hidden", name: "csrfmiddlewaretoken", value: csrfToken }));
    Object.keys(fields || {}).forEach(function (name) {
      form.appendChild(el("input", { type: "hidden", name: name, value: fields[name] }));
    });
    form.appendChild(el("button", { type: "submit", "class": "button" }, label));
    form.addEventListener("submit", submitAction);
    return form;
  }

  function renderQueues(queues) {
    var canPause = root.dataset.canPause === "1";
    fill("th-queues", queues.map(function (q) {
      var action = el("td");
      if (canPause) {
        action.appendChild(q.is_paused ? actionForm(q.resume_url, labels.resume) : actionForm(q.pause_url, labels.pause));
      }
      var tr = row([
        el("td", {}, q.name),
        el("td", { "class": q.is_paused ? "th-paused" : "th-active" }, q.is_paused ? labels.paused : labels.active),
        el("td", { "class": "th-num" }, q.pending),
        el("td", { "class": "th-num" }, q.running),
        el("td", { "class": "th-num" }, q.scheduled),
        el("td", { "class": "th-num" }, age(q.oldest_pending_age_seconds)),
        el("td", { "class": "th-num" }, q.live_workers),
        el("td", {}, q.fairness + (q.rate_limit ? " · " + q.rate_limit : "")),
        el("td", { "class": "th-num" }, q.active_owners),
        el("td", { "class": "th-num" }, q.per_key_concurrency ? q.keys_at_limit : "—"),
        el("td", { "class": "th-num" }, q.rate_limit ? q.throttled_by_rate : "—"),
        action,
      ]);
      tr.dataset.queue = q.name;
      return tr;
    }), labels.no_queues, 12);
  }

  function renderWorkers(workers) {
    fill("th-workers", workers.map(function (w) {
      return row([
        el("td", {}, w.hostname),
        el("td", { "class": "th-num" }, w.pid),
        el("td", {}, w.queues.length ? w.queues.join(", ") : labels.all_queues),
        el("td", { "class": "th-num" }, w.concurrency),
        el("td", { "class": "th-num" }, age(w.heartbeat_age_seconds)),
        el("td", { "class": "th-num" }, w.tasks_processed),
      ]);
    }), labels.no_workers, 6);
  }

  function renderFailures(failures) {
    var canRetry = root.dataset.canRetry === "1";
    var since = new Date(failures.since).toLocaleString();
    document.getElementById("th-failing-note").textContent = failures.truncated
      ? format(labels.truncated, { limit: failures.scan_limit, since: since })
      : format(labels.since, { since: since });
    fill("th-failing", failures.types.map(function (f) {
      var action = el("td");
      if (canRetry) action.appendChild(actionForm(root.dataset.retryUrl, labels.retry, { task_type: f.task_type }));
      var error = el("td");
      error.appendChild(el("code", { "class": "th-error" }, f.last_error || "—"));
      return row([el("td", {}, f.task_type), el("td", { "class": "th-num" }, f.failed), error, action]);
    }), labels.no_failures, 4);
  }

  function svg(tag, attrs, title) {
    var node = document.createElementNS(SVG, tag);
    Object.keys(attrs).forEach(function (key) { node.setAttribute(key, attrs[key]); });
    if (title) {
      var t = document.createElementNS(SVG, "title");
      t.textContent = title;
      node.appendChild(t);
    }
    return node;
  }

  function renderChart(hours) {
    var box = document.getElementById("th-chart");
    var width = 720, height = 180, left = 36, bottom = 20, top = 8;
    var plotH = height - bottom - top, slot = (width - left) / Math.max(hours.length, 1);
    var max = 0;
    hours.forEach(function (h) { max = Math.max(max, h.succeeded + h.failed + h.cancelled, h.created); });
    var chart = svg("svg", { viewBox: "0 0 " + width + " " + height, width: "100%", "class": "th-svg" });
    var scale = function (n) { return max ? (n / max) * plotH : 0; };
    chart.appendChild(svg("line", { x1: left, y1: top + plotH, x2: width, y2: top + plotH, "class": "th-axis" }));
    var yLabel = svg("text", { x: left - 4, y: top + 10, "text-anchor": "end", "class": "th-tick" });
    yLabel.textContent = String(max);
    chart.appendChild(yLabel);
    var created = [];
    hours.forEach(function (h, i) {
      var x = left + i * slot + 2, w = Math.max(slot - 4, 1), y = top + plotH;
      var hourText = h.hour.slice(11, 16);
      var title = format(labels.chart_title, {
        hour: h.hour.slice(0, 10) + " " + hourText, created: h.created,
        succeeded: h.succeeded, failed: h.failed, cancelled: h.cancelled,
      });
      [["succeeded", h.succeeded], ["failed", h.failed], ["cancelled", h.cancelled]].forEach(function (part) {
        var barH = scale(part[1]);
        if (!barH) return;
        y -= barH;
        chart.appendChild(svg("rect", { x: x, y: y, width: w, height: barH, "class": "th-" + part[0] }, title));
      });
      chart.appendChild(svg("rect", { x: x, y: top, width: w, height: plotH, "class": "th-hit" }, title));
      created.push((x + w / 2) + "," + (top + plotH - scale(h.created)));
      if (i % 6 === 0) {
        var tick = svg("text", { x: x + w / 2, y: height - 4, "text-anchor": "middle", "class": "th-tick" });
        tick.textContent = hourText;
        chart.appendChild(tick);
      }
    });
    chart.appendChild(svg("polyline", { points: created.join(" "), "class": "th-created-line" }));
    box.replaceChildren(chart);
    if (!max) box.appendChild(el("p", { "class": "th-note" }, labels.chart_empty));
  }

  function render(snapshot) {
    root.dataset.retryUrl = snapshot.retry_url;
    renderQueues(snapshot.queues);
    renderWorkers(snapshot.workers);
    renderFailures(snapshot.failures);
    renderChart(snapshot.throughput);
    var updated = document.getElementById("th-updated");
    updated.setAttribute("datetime", snapshot.generated_at);
    updated.textContent = new Date(snapshot.generated_at).toLocaleTimeString();
  }

  function setState(text, ok) {
    var state = document.getElementById("th-refresh-state");
    state.textContent = text;
    state.className = ok ? "th-ok" : "th-warn";
  }

  function readJson(response) {
    // An ended session answers with the login page (a redirect), not JSON.
    var type = response.headers.get("Content-Type") || "";
    if (response.redirected || type.indexOf("application/json") === -1) throw new Error("login");
    if (!response.ok) throw new Error("HTTP " + response.status);
    return response.json();
  }

  function failed(error) {
    setState(error.message === "login" ? labels.login_again : labels.refresh_failed, false);
  }

  function refresh() {
    return fetch(root.dataset.dataUrl, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(readJson)
      .then(function (snapshot) { render(snapshot); setState(labels.refresh_ok, true); })
      .catch(failed);
  }

  function submitAction(event) {
    event.preventDefault();
    var form = event.currentTarget;
    form.querySelector("button").disabled = true;
    fetch(form.action, {
      method: "POST",
      body: new FormData(form),
      headers: { Accept: "application/json", "X-CSRFToken": csrfToken },
      credentials: "same-origin",
    })
      .then(readJson)
      .then(function (answer) {
        document.getElementById("th-message").textContent = answer.message;
        render(answer.snapshot);
      })
      .catch(function (error) {
        form.querySelector("button").disabled = false;
        failed(error);
      });
  }

  function start() {
    root = document.getElementById("taskhub-dashboard");
    if (!root) return;
    labels = JSON.parse(document.getElementById("th-labels").textContent);
    csrfToken = document.querySelector("#th-csrf [name=csrfmiddlewaretoken]").value;
    render(JSON.parse(document.getElementById("th-initial").textContent));
    setState(labels.refresh_ok, true);
    var every = Math.max(Number(root.dataset.refreshSeconds) || 5, 1) * 1000;
    timer = setInterval(function () { if (!document.hidden) refresh(); }, every);
  }

  document.addEventListener("DOMContentLoaded", start);
  window.taskhubDashboard = { refresh: refresh, stop: function () { clearInterval(timer); } };
})();
