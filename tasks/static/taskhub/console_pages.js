// TaskHub operator console: the Schedules and Keys pages. Polls the page's JSON feed every few
// seconds (paused while the tab is hidden) for the first page; "More" follows the keyset cursor
// (and stops the polling from redrawing the list). Schedule actions post with the CSRF token.
// Text is set with textContent only (names, keys and task types come from users).
(function () {
  "use strict";

  var root, labels, csrfToken, next = null, paged = false;
  var dom = window.TaskHubDom, el = dom.el, format = dom.format;
  var when = dom.when, setState = dom.setState, answer = dom.answer, say = dom.say;

  function empty(body, text, columns) {
    var tr = el("tr");
    tr.appendChild(el("td", { colspan: String(columns), "class": "th-empty" }, text));
    body.appendChild(tr);
  }

  function post(url) {
    fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { Accept: "application/json", "X-CSRFToken": csrfToken },
    }).then(answer).then(function (body) {
      say(body.message, true);
      paged = false;
      return refresh();
    }).catch(function (error) { say(error.message, false); });
  }

  // --- Schedules ---

  function timing(s) {
    return s.cron ? s.cron + " (" + s.timezone + ")" : format(labels.every, { seconds: s.interval_seconds });
  }

  function scheduleRow(s) {
    var tr = el("tr");
    tr.dataset.schedule = s.id;
    tr.dataset.paused = String(s.is_paused);
    var name = el("td");
    name.appendChild(el("a", { href: s.admin_url }, s.name));
    tr.appendChild(name);
    tr.appendChild(el("td", {}, s.owner));
    tr.appendChild(el("td", {}, s.queue));
    tr.appendChild(el("td", {}, s.task_type));
    tr.appendChild(el("td", { "class": "th-timing" }, timing(s)));
    tr.appendChild(el("td", { "class": "th-next" }, s.is_paused ? "—" : when(s.next_fire_at)));
    var last = s.last_fire;
    tr.appendChild(el("td", { "class": "th-last" }, last
      ? when(last.fire_time) + " · " + last.outcome_label + (last.task_id ? " · #" + last.task_id + (last.task_status ? " " + last.task_status : "") : "")
      : labels.never));
    tr.appendChild(el("td", { "class": s.is_paused ? "th-paused th-state" : "th-active th-state" },
      s.is_paused ? labels.paused : labels.active));
    var actions = el("td");
    if (root.dataset.canChange === "true") {
      var toggle = el("button", { type: "button", "class": "button th-toggle" }, s.is_paused ? labels.resume : labels.pause);
      toggle.addEventListener("click", function () { post(s.is_paused ? s.resume_url : s.pause_url); });
      actions.appendChild(toggle);
      var run = el("button", { type: "button", "class": "button th-run-now" }, labels.run_now);
      run.addEventListener("click", function () { post(s.run_now_url); });
      actions.appendChild(run);
    }
    tr.appendChild(actions);
    return tr;
  }

  // --- Keys ---

  function fullKeyRow(k) {
    var tr = el("tr");
    tr.dataset.key = k.key;
    tr.dataset.queue = k.queue;
    tr.appendChild(el("td", {}, k.queue));
    var key = el("td");
    key.appendChild(el("a", { href: k.search_url }, k.key));
    tr.appendChild(key);
    tr.appendChild(el("td", { "class": "th-num th-running" }, k.running));
    tr.appendChild(el("td", { "class": "th-num" }, k.limit));
    return tr;
  }

  function uniqueKeyRow(u) {
    var tr = el("tr");
    tr.dataset.task = u.id;
    var id = el("td", { "class": "th-num" });
    id.appendChild(el("a", { href: u.admin_url }, "#" + u.id));
    tr.appendChild(id);
    [["th-key", u.key], ["", u.status], ["", u.task_type], ["", u.queue], ["", u.owner], ["", when(u.created_at)]]
      .forEach(function (cell) { tr.appendChild(el("td", { "class": cell[0] }, cell[1])); });
    return tr;
  }

  function renderFullKeys(data) {
    var body = document.querySelector("#th-full-keys tbody");
    body.replaceChildren();
    if (!data.concurrency.queues.length) empty(body, labels.no_per_key_queues, 4);
    else if (!data.concurrency.keys.length) empty(body, labels.no_full_keys, 4);
    else data.concurrency.keys.forEach(function (k) { body.appendChild(fullKeyRow(k)); });
  }

  // --- Both: the list pages by keyset ---

  var LISTS = {
    schedules: { table: "th-schedules", rows: "schedules", row: scheduleRow, none: "no_schedules", columns: 9, cursor: "after" },
    keys: { table: "th-unique-keys", rows: "unique_keys", row: uniqueKeyRow, none: "no_unique_keys", columns: 7, cursor: "before" },
  };

  function renderList(data, append) {
    var list = LISTS[root.dataset.panel];
    var body = document.querySelector("#" + list.table + " tbody");
    if (!append) body.replaceChildren();
    data[list.rows].forEach(function (row) { body.appendChild(list.row(row)); });
    if (!body.children.length) empty(body, labels[list.none], list.columns);
    next = data.next;
    document.getElementById("th-more").hidden = next === null || next === undefined;
    var note = document.getElementById("th-note");
    if (note) note.textContent = data.partial ? format(labels.partial, { scanned: data.scanned }) : "";
  }

  function render(data) {
    if (root.dataset.panel === "keys") renderFullKeys(data);
    if (!paged) renderList(data, false);
  }

  function fetchData(cursor) {
    var url = root.dataset.dataUrl;
    if (cursor) url += "?" + LISTS[root.dataset.panel].cursor + "=" + encodeURIComponent(cursor);
    return fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" }).then(answer);
  }

  function refresh() {
    return fetchData(null)
      .then(function (data) { render(data); setState(labels.refresh_ok, true); })
      .catch(function () { setState(labels.refresh_failed, false); });
  }

  function start() {
    root = document.getElementById("taskhub-pages");
    if (!root) return;
    labels = JSON.parse(document.getElementById("th-labels").textContent);
    var token = document.querySelector("[name=csrfmiddlewaretoken]");
    csrfToken = token ? token.value : "";
    render(JSON.parse(document.getElementById("th-initial").textContent));
    setState(labels.refresh_ok, true);
    document.getElementById("th-more").addEventListener("click", function () {
      fetchData(next).then(function (data) {
        paged = true;
        if (root.dataset.panel === "keys") renderFullKeys(data);
        renderList(data, true);
      }).catch(function (error) { say(error.message, false); });
    });
    var every = Math.max(Number(root.dataset.refreshSeconds) || 3, 1) * 1000;
    setInterval(function () { if (!document.hidden) refresh(); }, every);
    document.addEventListener("visibilitychange", function () { if (!document.hidden) refresh(); });
  }

  document.addEventListener("DOMContentLoaded", start);
  window.taskhubPages = { refresh: refresh };
})();
