// TaskHub operator console: failure groups and bulk actions (the queues and charts panels plug in
// from charts.js through window.TaskHubPanels). Polls its JSON feed every few
// seconds (paused while the tab is hidden) and posts actions with the CSRF token. Text is set
// with textContent only: task types and errors come from users and handlers.
(function () {
  "use strict";

  var root, labels, csrfToken;

  var dom = window.TaskHubDom, el = dom.el, format = dom.format;
  var when = dom.when, fill = dom.fill, setState = dom.setState, answer = dom.answer;

  function post(url, data) {
    return fetch(url, {
      method: "POST", body: data, credentials: "same-origin",
      headers: { Accept: "application/json", "X-CSRFToken": csrfToken },
    }).then(answer).then(function (body) {
      document.getElementById("th-message").textContent = body.message;
      document.getElementById("th-message").className = "th-message";
      return refresh();
    }).catch(function (error) {
      var message = document.getElementById("th-message");
      message.textContent = error.message;
      message.className = "th-message th-warn";
    });
  }

  function groupAction(group, action, label, bulkUrl) {
    var button = el("button", { type: "button", "class": "button", "data-action": action }, label);
    button.addEventListener("click", function () {
      var data = new FormData();
      data.append("action", action);
      data.append("failure_group", group.key);
      post(bulkUrl, data);
    });
    return button;
  }

  function renderGroups(data) {
    fill("th-groups", data.groups.map(function (g) {
      var tr = el("tr");
      tr.dataset.group = g.key;
      tr.appendChild(el("td", {}, g.task_type));
      tr.appendChild(el("td", {}, g.exception || "—"));
      var message = el("td");
      message.appendChild(el("code", { "class": "th-error" }, g.fingerprint));
      var details = el("details");
      details.appendChild(el("summary", {}, labels.traceback + (g.example_task_id ? " (#" + g.example_task_id + ")" : "")));
      details.appendChild(el("pre", { "class": "th-error" }, g.example_error));
      message.appendChild(details);
      tr.appendChild(message);
      tr.appendChild(el("td", { "class": "th-num th-count" }, g.count));
      tr.appendChild(el("td", {}, when(g.first_seen)));
      tr.appendChild(el("td", {}, when(g.last_seen)));
      var actions = el("td");
      if (g.count > 0) {
        actions.appendChild(groupAction(g, "retry", labels.retry_all, data.bulk_url));
        actions.appendChild(groupAction(g, "delete", labels.delete_all, data.bulk_url));
      }
      tr.appendChild(actions);
      return tr;
    }), labels.no_groups, 7);
  }

  function describe(filters, params) {
    var parts = Object.keys(filters).map(function (k) { return k + "=" + filters[k]; });
    Object.keys(params || {}).forEach(function (k) { parts.push("→ " + k + "=" + params[k]); });
    return parts.join(", ");
  }

  function renderActions(data) {
    fill("th-actions", data.actions.map(function (a) {
      var tr = el("tr");
      tr.dataset.action = a.id;
      tr.dataset.state = a.state;
      tr.appendChild(el("td", { "class": "th-num" }, a.id));
      tr.appendChild(el("td", {}, a.action_label));
      tr.appendChild(el("td", {}, describe(a.filters, a.params)));
      tr.appendChild(el("td", { "class": "th-state" }, a.state_label + (a.error ? ": " + a.error : "")));
      tr.appendChild(el("td", { "class": "th-num" }, a.scanned));
      tr.appendChild(el("td", { "class": "th-num th-changed" }, a.changed));
      tr.appendChild(el("td", {}, a.by || "—"));
      tr.appendChild(el("td", {}, when(a.created_at)));
      return tr;
    }), labels.no_actions, 8);
  }

  function render(data) {
    var panel = (window.TaskHubPanels || {})[root.dataset.panel];  // queues, charts: charts.js
    if (panel) panel(data, labels);
    else if (root.dataset.panel === "failures") renderGroups(data);
    else renderActions(data);
  }

  function refresh() {
    return fetch(root.dataset.dataUrl, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(answer)
      .then(function (data) { render(data); setState(labels.refresh_ok, true); })
      .catch(function () { setState(labels.refresh_failed, false); });
  }

  function start() {
    root = document.getElementById("taskhub-console");
    if (!root) return;
    labels = JSON.parse(document.getElementById("th-labels").textContent);
    csrfToken = document.querySelector("[name=csrfmiddlewaretoken]").value;
    render(JSON.parse(document.getElementById("th-initial").textContent));
    setState(labels.refresh_ok, true);
    var form = document.getElementById("th-bulk-form");
    if (form) {
      form.addEventListener("submit", function (event) {
        event.preventDefault();
        var data = new FormData(form);
        Array.from(data.keys()).forEach(function (key) { if (data.get(key) === "") data.delete(key); });
        post(form.getAttribute("action"), data);  // form.action is the field named "action"
      });
    }
    var every = Math.max(Number(root.dataset.refreshSeconds) || 3, 1) * 1000;
    setInterval(function () { if (!document.hidden) refresh(); }, every);
    document.addEventListener("visibilitychange", function () { if (!document.hidden) refresh(); });
  }

  document.addEventListener("DOMContentLoaded", start);
  window.taskhubConsole = { refresh: refresh, post: post };
})();
