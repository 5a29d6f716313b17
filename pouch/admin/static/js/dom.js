// Building the page: every value from the store goes in as text (textContent, attribute
// values), never as markup. Key names, model names and refusal messages come from whoever
// holds a key, so nothing here ever parses a string as HTML.

// h("td", {class: "money", title: "..."}, "text", otherNode, [more, nodes])
// Attributes are set with setAttribute; "on<event>" attaches a listener; null/false skip.
export function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else if (name === "dataset") {
      Object.assign(node.dataset, value);
    } else if (name === "width") {  // a share of its parent, in percent (CSSOM: allowed by the CSP)
      node.style.width = `${value}%`;
    } else if (value === true) {
      node.setAttribute(name, "");
    } else {
      node.setAttribute(name, String(value));
    }
  }
  append(node, children);
  return node;
}

export function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function clear(node) {
  node.replaceChildren();
  return node;
}

// A link inside the dashboard (#/keys/<name>): the name is encoded, never interpreted.
export function keyHref(name) {
  return `#/keys/${encodeURIComponent(name)}`;
}

export function teamHref(name) {
  return `#/teams/${encodeURIComponent(name)}`;
}

export function errorBox(message) {
  return h("div", {class: "notice error", role: "alert"}, message);
}

export function emptyState(title, detail) {
  return h("div", {class: "empty"}, h("strong", {}, title), detail ? h("span", {}, detail) : null);
}

export function loading() {
  return h("div", {class: "loading", "aria-busy": "true"}, "Loading…");
}

export function card(title, body, extra) {
  return h("section", {class: "card"},
    title || extra ? h("div", {class: "card-head"}, title ? h("h2", {}, title) : null, extra || null) : null,
    body);
}
