// TaskHub operator console: the Workers, Stuck and task-search panels. Polls the panel's JSON feed every few
// seconds (paused while the tab is hidden); "Drain" posts with the CSRF token. Text is set with
// textContent only (task types and worker ids come from users and hosts).
(function () {
  "use strict";

  var root, labels, csrfToken;
  var dom = window.TaskHubDom, el = dom.el, format = dom.format;
  var when = dom.when, fill = dom.fill, setState = dom.setState, answer = dom.answer, say = dom.say;

  function megabytes(bytes) { return bytes === null || bytes === undefined ? "—" : (bytes / 1048576).toFixed(1) + " MB"; }

  function drain(worker) {
    if (!window.confirm(format(labels.drain_confirm, { worker: worker.worker_id }))) return;
    fetch(worker.drain_url, {
      method: "POST", credentials: "same-origin",
      headers: { Accept: "application/json", "X-CSRFToken": csrfToken },
    }).then(answer).then(function (body) {
      say(body.message, true);
      return refresh();
    }).catch(function (error) { say(error.message, false); });
  }

  function renderWorkers(data) {
    fill("th-workers", data.workers.map(function (w) {
      var tr = el("tr");
      tr.dataset.worker = w.worker_id;
      tr.dataset.draining = w.drain_requested_at ? "yes" : "no";
      tr.appendChild(el("td", {}, w.hostname));
      tr.appendChild(el("td", { "class": "th-num" }, w.pid));
      tr.appendChild(el("td", {}, w.queues.length ? w.queues.join(", ") : labels.all_queues));
      tr.appendChild(el("td", { "class": "th-num" }, w.concurrency));
      tr.appendChild(el("td", { "class": "th-current" }, w.current.map(function (t) { return "#" + t.id + " " + t.task_type; }).join(", ") || "—"));
      var beat = el("td", { "class": "th-heartbeat" }, when(w.last_heartbeat_at));
      if (w.stale) beat.appendChild(el("span", { "class": "th-warn" }, labels.stale));
      tr.appendChild(beat);
      tr.appendChild(el("td", { "class": "th-num th-memory" }, megabytes(w.memory_rss_bytes)));
      tr.appendChild(el("td", {}, when(w.started_at)));
      tr.appendChild(el("td", { "class": "th-num" }, w.tasks_processed));
      var actions = el("td");
      if (w.drain_requested_at) {
        actions.appendChild(el("span", { "class": "th-paused th-draining" }, labels.draining));
      } else {
        var button = el("button", { type: "button", "class": "button", "data-action": "drain" }, labels.drain);
        button.addEventListener("click", function () { drain(w); });
        actions.appendChild(button);
      }
      tr.appendChild(actions);
      return tr;
    }), labels.no_workers, 10);
  }

  function renderStuck(data) {
    fill("th-past-lease", data.past_lease.map(function (t) {
      var tr = el("tr");
      tr.dataset.task = t.id;
      [["th-num", "#" + t.id], ["", t.task_type], ["", t.claimed_by || "—"], ["th-num", t.attempts],
       ["", when(t.lease_expires_at)], ["th-num", t.overdue_seconds]].forEach(function (cell) {
        tr.appendChild(el("td", { "class": cell[0] }, cell[1]));
      });
      return tr;
    }), labels.no_leases, 6);
    fill("th-silent", data.silent_workers.map(function (w) {
      var tr = el("tr");
      tr.dataset.worker = w.worker_id;
      tr.appendChild(el("td", {}, w.worker_id));
      tr.appendChild(el("td", {}, when(w.last_heartbeat_at)));
      tr.appendChild(el("td", { "class": "th-num" }, w.silent_seconds));
      return tr;
    }), labels.no_silent, 3);
    fill("th-waiting", data.waiting.map(function (q) {
      var tr = el("tr");
      tr.dataset.queue = q.queue;
      tr.appendChild(el("td", {}, q.queue));
      tr.appendChild(el("td", {}, when(q.oldest_runnable_since)));
      tr.appendChild(el("td", { "class": "th-num" }, q.waited_seconds));
      tr.appendChild(el("td", { "class": "th-num" }, q.usual_wait_seconds === null ? "—" : q.usual_wait_seconds));
      tr.appendChild(el("td", { "class": "th-num" }, q.limit_seconds));
      return tr;
    }), labels.no_waiting, 5);
  }

  // --- Task search: on demand (no polling), newest first, "More" follows the keyset cursor ---

  var query = "", next = null;

  function taskRow(t) {
    var tr = el("tr");
    tr.dataset.task = t.id;
    var id = el("td", { "class": "th-num" });
    id.appendChild(el("a", { href: t.admin_url }, "#" + t.id));
    tr.appendChild(id);
    [["", t.task_type], ["th-task-status", t.status], ["", t.queue], ["", t.owner], ["th-num", t.priority],
     ["th-num", t.attempts], ["", when(t.created_at)], ["", when(t.finished_at)]].forEach(function (cell) {
      tr.appendChild(el("td", { "class": cell[0] }, cell[1]));
    });
    return tr;
  }

  function renderTasks(data, append) {
    var body = document.querySelector("#th-tasks tbody");
    if (!append) fill("th-tasks", data.tasks.map(taskRow), labels.no_tasks, 9);
    else data.tasks.forEach(function (t) { body.appendChild(taskRow(t)); });
    next = data.next;
    document.getElementById("th-more").hidden = !next;
    document.getElementById("th-note").textContent = data.note || "";
    var link = document.getElementById("th-bulk-link");
    link.hidden = !data.bulk_url;
    if (data.bulk_url) link.setAttribute("href", data.bulk_url);
  }

  function searchFailed(error) {
    say(error.message, false);
    fill("th-tasks", [], labels.no_tasks, 9);
    document.getElementById("th-more").hidden = true;
    document.getElementById("th-bulk-link").hidden = true;
    document.getElementById("th-note").textContent = "";
  }

  function fetchTasks(before) {
    var params = new URLSearchParams(query);
    if (before) params.set("before", before);
    return fetch(root.dataset.dataUrl + "?" + params.toString(), { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(answer);
  }

  function startSearch(initial) {
    var form = document.getElementById("th-search-form");
    query = window.location.search.replace(/^\?/, "");
    if (initial.error) searchFailed(new Error(initial.error.detail + " (" + initial.error.code + ")"));
    else if (query) renderTasks(initial, false);
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var params = new URLSearchParams();
      new FormData(form).forEach(function (value, key) { if (value !== "") params.append(key, value); });
      query = params.toString();
      window.history.replaceState(null, "", form.getAttribute("action") + "?" + query);
      fetchTasks(null).then(function (data) { say("", true); renderTasks(data, false); }).catch(searchFailed);
    });
    document.getElementById("th-more").addEventListener("click", function () {
      fetchTasks(next).then(function (data) { renderTasks(data, true); }).catch(searchFailed);
    });
  }

  function render(data) {
    if (root.dataset.panel === "workers") renderWorkers(data); else renderStuck(data);
  }

  function refresh() {
    return fetch(root.dataset.dataUrl, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(answer)
      .then(function (data) { render(data); setState(labels.refresh_ok, true); })
      .catch(function () { setState(labels.refresh_failed, false); });
  }

  // The bulk-action form, opened from a search ("apply a bulk action to this filter"): prefilled.
  function prefillBulkForm() {
    var form = document.getElementById("th-bulk-form");
    if (!form) return;
    new URLSearchParams(window.location.search).forEach(function (value, key) {
      var field = form.querySelector("[name='" + key.replace(/[^a-z_]/g, "") + "']");
      if (field && key !== "action") field.value = value;
    });
  }

  function start() {
    prefillBulkForm();
    root = document.getElementById("taskhub-panel");
    if (!root) return;
    labels = JSON.parse(document.getElementById("th-labels").textContent);
    var token = document.querySelector("[name=csrfmiddlewaretoken]");
    csrfToken = token ? token.value : "";
    if (root.dataset.panel === "tasks") {
      startSearch(JSON.parse(document.getElementById("th-initial").textContent));
      return;
    }
    setState(labels.refresh_ok, true);
    render(JSON.parse(document.getElementById("th-initial").textContent));
    var every = Math.max(Number(root.dataset.refreshSeconds) || 3, 1) * 1000;
    setInterval(function () { if (!document.hidden) refresh(); }, every);
    document.addEventListener("visibilitychange", function () { if (!document.hidden) refresh(); });
  }

  document.addEventListener("DOMContentLoaded", start);
  window.taskhubPanel = { refresh: refresh };
})();
