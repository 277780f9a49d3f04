// Shared by the staff dashboard and the console: building DOM nodes (text through textContent
// only: task types and errors come from users and handlers), filling translated templates, and
// the console pages' table, status line and JSON answer helpers.
(function () {
  "use strict";

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) { node.setAttribute(key, attrs[key]); });
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function format(template, values) {
    return template.replace(/%\((\w+)\)s/g, function (_, key) { return values[key]; });
  }

  function when(iso) { return iso ? new Date(iso).toLocaleString() : "—"; }

  function fill(tableId, rows, emptyText, columns) {
    var body = document.querySelector("#" + tableId + " tbody");
    body.replaceChildren();
    if (!rows.length) {
      var tr = el("tr");
      tr.appendChild(el("td", { colspan: String(columns), "class": "th-empty" }, emptyText));
      body.appendChild(tr);
      return;
    }
    rows.forEach(function (tr) { body.appendChild(tr); });
  }

  function setState(text, ok) {
    var state = document.getElementById("th-refresh-state");
    state.textContent = text;
    state.className = ok ? "th-ok" : "th-warn";
  }

  function answer(response) {
    var type = response.headers.get("Content-Type") || "";
    if (type.indexOf("application/json") === -1) throw new Error("HTTP " + response.status);
    return response.json().then(function (body) {
      if (!response.ok) throw new Error(body.detail + " (" + body.code + ")");
      return body;
    });
  }

  function say(text, ok) {
    var message = document.getElementById("th-message");
    message.textContent = text;
    message.className = ok ? "th-message" : "th-message th-warn";
  }

  window.TaskHubDom = {
    el: el, format: format, when: when, fill: fill, setState: setState, answer: answer, say: say,
  };
})();
