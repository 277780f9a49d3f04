// Shared by the staff dashboard and the console: building DOM nodes (text through textContent
// only: task types and errors come from users and handlers) and filling translated templates.
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

  window.TaskHubDom = { el: el, format: format };
})();
