// The dashboard: sign in with an admin token, then pages by the address's #fragment
// (#/overview, #/keys, #/keys/<name>, #/usage?...). Each page fetches what it shows from the
// admin API; a refresh rebuilds the page out of sight and swaps it in whole.

import * as api from "./api.js";
import {disposeCharts} from "./charts.js";
import {errorBox, h, loading} from "./dom.js";
import {keyPage} from "./key.js";
import {keysPage} from "./keys.js";
import {teamPage, teamsPage} from "./teams.js";
import {overviewPage} from "./overview.js";
import {usagePage} from "./usage.js";

const REFRESH_EVERY = 30_000;  // ms, for the pages that show money moving
const main = document.getElementById("main");
let session = null;  // {info: /api/info's answer, canWrite}
let shownRoute = null;
let rendering = 0;  // the latest render wins: an older one that finishes later is dropped
let timer = null;

function route() {
  const [path, search = ""] = location.hash.replace(/^#/, "").split("?");
  const parts = path.split("/").filter(Boolean);
  const params = new URLSearchParams(search);
  if (parts[0] === "keys" && parts.length === 2) {
    return {page: "keys", id: `key:${parts[1]}`, params, run: (view) => keyPage(view, params, decodeURIComponent(parts[1]), session)};
  }
  if (parts[0] === "keys") return {page: "keys", id: "keys", params, run: view => keysPage(view, params, session)};
  if (parts[0] === "teams" && parts.length === 2) {
    return {page: "teams", id: `team:${parts[1]}`, params, run: view => teamPage(view, params, decodeURIComponent(parts[1]), session)};
  }
  if (parts[0] === "teams") return {page: "teams", id: "teams", params, run: view => teamsPage(view, params, session)};
  if (parts[0] === "usage") return {page: "usage", id: "usage", params, run: view => usagePage(view, params)};
  return {page: "overview", id: "overview", params, refreshes: true, run: view => overviewPage(view, params)};
}

function newView(notices) {
  const head = h("div", {class: "page-head"});
  const body = h("div", {class: "page-body"});
  const root = h("div", {class: "page"}, head, notices?.length ? notices.map(n => h("div", {class: "notice info"}, n)) : null, body);
  const after = [];
  return {
    root, body, after: fn => after.push(fn), attached: () => after.forEach(fn => fn()),
    refresh: warnings => render({keep: true, notices: warnings}),
    head(title, subtitle, ...tools) {
      const updated = h("span", {class: "updated muted small", title: "refreshes by itself every 30 s on the overview"},
        `updated ${new Date().toLocaleTimeString()}`);
      head.replaceChildren(
        h("div", {class: "page-title"}, h("h1", {}, title), subtitle ? h("p", {class: "subtitle"}, subtitle) : null),
        h("div", {class: "page-tools"}, ...tools,
          h("button", {type: "button", class: "button ghost", id: "refresh", onclick: () => render({keep: true})}, "Refresh"),
          updated));
    },
  };
}

async function render({keep = false, notices} = {}) {
  if (!session) return;
  const current = route();
  const mine = ++rendering;
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("active", link.dataset.page === current.page);
  }
  if (!keep || shownRoute !== current.id) {
    disposeCharts();
    main.replaceChildren(loading());
  }
  const view = newView(notices);
  try {
    await current.run(view);
  } catch (e) {
    if (mine !== rendering || !session) return;
    view.head(current.page[0].toUpperCase() + current.page.slice(1));
    view.body.replaceChildren(errorBox(e.message));
  }
  if (mine !== rendering) return;
  disposeCharts();
  main.replaceChildren(view.root);
  shownRoute = current.id;
  view.attached();
  document.title = `pouch · ${current.page}`;
}

function showSignIn(message) {
  session = null;
  shownRoute = null;
  disposeCharts();
  clearInterval(timer);
  document.getElementById("topbar").hidden = true;
  document.getElementById("footer").hidden = true;
  const input = h("input", {id: "token", name: "token", type: "password", autocomplete: "off", spellcheck: "false",
                            required: true, placeholder: "pouch-admin-…"});
  const problem = message ? errorBox(message) : h("div", {class: "notice error", role: "alert", hidden: true});
  const button = h("button", {type: "submit", class: "button primary wide"}, "Sign in");
  const form = h("form", {class: "signin card", id: "signin"},
    h("div", {class: "signin-brand"}, h("span", {class: "brand-mark", "aria-hidden": "true"}), "pouch"),
    h("h1", {}, "Sign in to the dashboard"),
    h("p", {class: "muted"}, "Paste an admin or viewer token. It stays in this browser tab only, and goes to this gateway's admin API alone."),
    h("label", {class: "field"}, h("span", {class: "field-label"}, "Admin token"), input),
    problem, button,
    h("p", {class: "hint"}, "No token? On the gateway's host: ", h("code", {}, "pouch admin-tokens create --name NAME"),
      " (add ", h("code", {}, "--role viewer"), " for read-only). ", h("code", {}, "pouch run"), " prints one on first run."));
  form.addEventListener("submit", async event => {
    event.preventDefault();
    button.disabled = true;
    try {
      const info = await api.get("api/info", input.value.trim());
      api.keepToken(input.value.trim());
      start(info);
    } catch (e) {
      problem.textContent = e.status === 401 ? "This token is not valid: unknown, revoked, or mistyped." : e.message;
      problem.hidden = false;
      button.disabled = false;
      input.select();
    }
  });
  main.replaceChildren(h("div", {class: "signin-wrap"}, form));
  document.title = "pouch · sign in";
  input.focus();
}

function start(info) {
  session = {info, canWrite: info.token.role === "admin"};
  document.getElementById("who-name").textContent = info.token.name;
  const role = document.getElementById("who-role");
  role.textContent = session.canWrite ? "admin" : "viewer · read only";
  role.className = `badge role-${info.token.role}`;
  document.getElementById("topbar").hidden = false;
  const footer = document.getElementById("footer");
  footer.replaceChildren(`pouch ${info.version} · `,
    info.mitmweb ? h("span", {}, "flows in mitmweb at ", h("code", {}, info.mitmweb)) : "mitmweb is not running");
  footer.hidden = false;
  if (!location.hash) history.replaceState(null, "", "#/overview");
  clearInterval(timer);
  timer = setInterval(() => {
    const current = route();
    if ((current.refreshes || current.id.startsWith("key:")) && !document.hidden && !document.querySelector("dialog[open]")) {
      render({keep: true});
    }
  }, REFRESH_EVERY);
  render();
}

document.getElementById("sign-out").addEventListener("click", () => {
  api.forgetToken();
  for (const open of document.querySelectorAll("dialog")) open.remove();
  showSignIn();
});

api.whenUnauthorized(message => {
  if (!session) return;
  api.forgetToken();
  for (const open of document.querySelectorAll("dialog")) open.remove();
  showSignIn(`Signed out: ${message}`);
});

window.addEventListener("hashchange", () => render());

(async () => {
  if (!api.token()) {
    showSignIn();
    return;
  }
  try {
    start(await api.get("api/info"));
  } catch (e) {
    if (e.status !== 401) showSignIn(e.message);  // 401: whenUnauthorized has no session yet
    else {
      api.forgetToken();
      showSignIn("Your token is no longer valid: sign in again.");
    }
  }
})();
