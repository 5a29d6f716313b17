// What the keys page and a key's page share: status badges, the budget bar, limits, and the
// dialogs that create, edit, rotate and revoke a key (admins only).

import * as api from "./api.js";
import {h, teamHref} from "./dom.js";
import {count, dateLabel, fromPico, pico, relative, share, usd} from "./format.js";

export function statuses(key, now = Date.now()) {
  const found = [];
  if (key.revoked) found.push(["revoked", "revoked"]);
  else if (key.expires_at && new Date(key.expires_at).getTime() <= now) found.push(["expired", "expired"]);
  else found.push(["active", "active"]);
  if (key.mock) found.push(["mock", "mock"]);
  if (!key.revoked && key.budget_usd !== null && pico(key.spent_usd) >= pico(key.budget_usd)) {
    found.push(["exhausted", "budget spent"]);
  }
  return found;
}

export function badges(key) {
  return h("span", {class: "badges"}, statuses(key).map(([kind, text]) =>
    h("span", {class: `badge status-${kind}`, dataset: {status: kind}}, text)));
}

export function periodText(key) {
  return {none: "no reset", daily: "daily", weekly: "weekly", monthly: "monthly"}[key.period] ?? `every ${key.period}`;
}

// Spent / held (reserved for requests in flight) / left of the budget, as one bar and one line.
export function budgetBar(key, {large = false} = {}) {
  const spent = pico(key.spent_usd), held = pico(key.reserved_usd);
  const data = {spent: key.spent_usd, held: key.reserved_usd, budget: key.budget_usd ?? ""};
  if (key.budget_usd === null) {
    return h("div", {class: `budget no-budget${large ? " large" : ""}`, dataset: data},
      h("div", {class: "budget-line"},
        h("span", {class: "spent-label", title: `$${key.spent_usd} exactly`}, `${usd(key.spent_usd)} spent`),
        held > 0n ? h("span", {class: "held-label", title: `$${key.reserved_usd} exactly`}, ` · ${usd(key.reserved_usd)} held`) : null,
        h("span", {class: "muted"}, " · no budget")));
  }
  const budget = pico(key.budget_usd);
  const leftText = fromPico(budget - spent - held > 0n ? budget - spent - held : 0n);
  const over = spent > budget;
  const used = budget > 0n ? Number((spent + held) * 1000n / budget) / 10 : 100;
  data.left = leftText;
  const bar = h("div", {class: `bar${over ? " over" : ""}`, role: "img",
                        "aria-label": `${usd(key.spent_usd)} spent, ${usd(key.reserved_usd)} held, ${usd(leftText)} left of ${usd(key.budget_usd)}`},
    h("span", {class: "seg spent", width: share(Number(key.spent_usd), Number(key.budget_usd)),
               title: `spent $${key.spent_usd}`}),
    h("span", {class: "seg held", width: over ? 0 : share(Number(key.reserved_usd), Number(key.budget_usd)),
               title: `held for requests in flight $${key.reserved_usd}`}));
  return h("div", {class: `budget${large ? " large" : ""}${over ? " is-over" : ""}`, dataset: data},
    h("div", {class: "budget-top"},
      h("span", {class: "budget-of"},
        h("strong", {class: "spent-label", title: `$${key.spent_usd} exactly`}, usd(key.spent_usd)),
        h("span", {class: "muted"}, " of "),
        h("span", {title: `$${key.budget_usd} exactly`}, usd(key.budget_usd)),
        h("span", {class: "muted"}, ` · ${periodText(key)}`)),
      h("span", {class: `budget-pct${used >= 80 ? " warn" : ""}`}, `${used.toFixed(used < 10 ? 1 : 0)}%`)),
    bar,
    h("div", {class: "budget-line"},
      h("span", {class: "key-spent"}, h("i", {class: "dot spent"}), `${usd(key.spent_usd)} spent`),
      h("span", {class: "key-held", title: "reserved for requests in flight: released or charged when they end"},
        h("i", {class: "dot held"}), `${usd(key.reserved_usd)} held`),
      over
        ? h("span", {class: "key-left over"}, `over by ${usd(fromPico(spent - budget))}`)
        : h("span", {class: "key-left", title: `$${leftText} exactly`}, h("i", {class: "dot left"}), `${usd(leftText)} left`)));
}

export function limits(key) {
  const parts = [];
  if (key.rpm !== null) parts.push(`${count(key.rpm)} rpm`);
  if (key.tpm !== null) parts.push(`${count(key.tpm)} tpm`);
  if (key.max_concurrent !== null) parts.push(`${count(key.max_concurrent)} at once`);
  return parts.length ? h("span", {class: "limits"}, parts.join(" · ")) : h("span", {class: "muted"}, "no limits");
}

export function models(key) {
  if (!key.models.length) return h("span", {class: "muted"}, "every model");
  return h("span", {class: "chips"}, key.models.map(model => h("code", {class: "chip"}, model)));
}

export function team(key) {
  return key.team ? h("a", {class: "team-link", href: teamHref(key.team)}, key.team) : h("span", {class: "muted"}, "none");
}

// What each end user of the key may do on its own (a budget, a rate), and whether one must be named.
export function endUsers(key) {
  const parts = [];
  if (key.user_budget_usd !== null) parts.push(`${usd(key.user_budget_usd)} each, ${periodText({period: key.user_period})}`);
  if (key.user_rpm !== null) parts.push(`${count(key.user_rpm)} rpm each`);
  if (key.require_user) parts.push("an end-user id required");
  return parts.length ? h("span", {class: "end-users"}, parts.join(" · ")) : h("span", {class: "muted"}, "no limits of their own");
}

export function expiry(key) {
  if (!key.expires_at) return h("span", {class: "muted"}, "never");
  return h("span", {title: `${key.expires_at} (UTC)`},
    `${dateLabel(key.expires_at)} (${relative(key.expires_at)})${key.auto_renew ? " · renews" : ""}`);
}

// ---- dialogs ---------------------------------------------------------------------------

export function dialog(title, ...content) {
  const node = h("dialog", {class: "dialog"}, h("h2", {}, title), ...content);
  node.addEventListener("close", () => node.remove());
  document.body.append(node);
  node.showModal();
  return node;
}

export function field(label, input, hint) {
  return h("label", {class: "field"}, h("span", {class: "field-label"}, label), input,
    hint ? h("span", {class: "hint"}, hint) : null);
}

const FORM_FIELDS = [
  // [name, label, hint, how the key's value shows in the form]
  ["name", "Name", "unique; letters, digits, . _ @ -", key => key.name],
  ["budget_usd", "Budget (USD)", "per period; empty: no budget", key => key.budget_usd ?? ""],
  ["period", "Period", "none, daily, weekly, monthly, or 12h, 30d", key => key.period],
  ["rpm", "Requests per minute", "empty: no limit", key => key.rpm ?? ""],
  ["tpm", "Tokens per minute", "empty: no limit", key => key.tpm ?? ""],
  ["max_concurrent", "At once", "requests in flight; empty: no limit", key => key.max_concurrent ?? ""],
  ["models", "Models", "comma-separated globs (gpt-4o*, claude-*); empty: every model", key => key.models.join(", ")],
  ["expires_at", "Expires", "2026-12-31, or 30d from now; empty: never", key => key.expires_at ?? ""],
  ["alert_at", "Alert at (% of budget)", "e.g. 50, 80, 100; empty: no alerts", key => key.alert_at.join(", ")],
  ["user_budget_usd", "Budget per end user (USD)", "each end user's own; empty: none", key => key.user_budget_usd ?? ""],
  ["user_period", "End users' period", "none, daily, weekly, monthly, or 12h, 30d", key => key.user_period],
  ["user_rpm", "Requests per minute per end user", "empty: no limit", key => key.user_rpm ?? ""],
];
const WHOLE = ["rpm", "tpm", "max_concurrent", "user_rpm"];

// The form's text as the API's JSON value (null: none), or an Error naming the field.
function value(name, text) {
  text = text.trim();
  if (name === "models") return text ? text.split(",").map(s => s.trim()).filter(Boolean) : [];
  if (name === "alert_at") {
    if (!text) return null;
    const percents = text.split(",").map(s => s.trim()).filter(Boolean);
    if (!percents.every(p => /^\d+$/.test(p))) throw new Error("Alert at: give whole percents, such as 50, 80, 100");
    return percents.map(Number);
  }
  if (WHOLE.includes(name)) {
    if (!text) return null;
    if (!/^\d+$/.test(text)) throw new Error(`${FORM_FIELDS.find(f => f[0] === name)[1]}: give a whole number`);
    return Number(text);
  }
  if (name === "period" || name === "user_period") return text || "none";
  return text || null;
}

// Create (key undefined) or edit a key; calls done(answer) after the API accepted it.
export function keyForm(key, done) {
  const creating = !key;
  const inputs = {};
  const periods = h("datalist", {id: "periods"}, ["none", "daily", "weekly", "monthly", "12h", "7d", "30d"].map(
    p => h("option", {value: p})));
  const grid = h("div", {class: "form-grid"}, FORM_FIELDS.map(([name, label, hint, shown]) => {
    const input = h("input", {name, type: "text", autocomplete: "off", spellcheck: "false",
                              list: name.endsWith("period") ? "periods" : null, required: name === "name" && creating,
                              inputmode: WHOLE.includes(name) || name === "budget_usd" ? "decimal" : null});
    input.value = key ? String(shown(key)) : (name === "period" ? "monthly" : (name === "user_period" ? "none" : ""));
    inputs[name] = input;
    return field(label, input, hint);
  }));
  const team = teamSelect(key);
  grid.firstChild.after(field("Team", team, "its budget, limits and models bind the key too"));
  const checks = {};
  const boxes = h("div", {class: "checks"}, [["auto_renew", "Renew when it expires"], ["mock", "Mock: answer locally, never charged"],
                                             ["require_user", "Require an end-user id on each request"]].map(
    ([name, label]) => {
      const box = h("input", {type: "checkbox", name});
      box.checked = key ? Boolean(key[name]) : false;
      checks[name] = box;
      return h("label", {class: "check"}, box, label);
    }));
  const problem = h("div", {class: "notice error", role: "alert", hidden: true});
  const submit = h("button", {type: "submit", class: "button primary"}, creating ? "Create key" : "Save changes");
  const form = h("form", {class: "key-form", novalidate: true}, periods, grid, boxes, problem,
    h("div", {class: "dialog-actions"},
      h("button", {type: "button", class: "button ghost", onclick: () => node.close()}, "Cancel"), submit));
  const node = dialog(creating ? "New key" : `Edit key “${key.name}”`, form);
  form.addEventListener("submit", async event => {
    event.preventDefault();
    problem.hidden = true;
    const body = {};
    try {
      for (const [name, , , shown] of FORM_FIELDS) {
        const text = inputs[name].value;
        if (!creating && text.trim() === String(shown(key)).trim()) continue;  // unchanged: not sent
        if (creating && !text.trim() && name !== "name") continue;  // left empty: the API's default
        body[name] = value(name, text);
      }
      if (team.value !== (key?.team ?? "")) body.team = team.value || null;
      for (const [name, box] of Object.entries(checks)) {
        if (creating ? box.checked : box.checked !== Boolean(key[name])) body[name] = box.checked;
      }
    } catch (e) {
      problem.textContent = e.message;
      problem.hidden = false;
      return;
    }
    if (!creating && !Object.keys(body).length) {
      node.close();
      return;
    }
    submit.disabled = true;
    try {
      const answer = creating ? await api.post("api/keys", body) : await api.patch(api.keyPath(key.name), body);
      node.close();
      done(answer);
    } catch (e) {
      problem.textContent = e.message;
      problem.hidden = false;
    } finally {
      submit.disabled = false;
    }
  });
  (creating ? inputs.name : inputs.budget_usd).focus();
}

// The teams to choose from, filled in when the API answers; the key's own team is there at once.
function teamSelect(key) {
  const select = h("select", {name: "team", id: "key-team"}, h("option", {value: ""}, "no team"),
    key?.team ? h("option", {value: key.team}, key.team) : null);
  select.value = key?.team ?? "";
  api.get("api/teams").then(teams => {
    for (const team of teams) {
      if (team.name !== key?.team) select.append(h("option", {value: team.name}, team.name));
    }
  }, () => { /* no list: the key's team and "no team" stay choosable */ });
  return select;
}

// The secret, once: with a copy button and the warning that it is not shown again.
export function secretDialog(title, answer) {
  const secret = h("input", {id: "secret-value", class: "secret", type: "text", readonly: true, spellcheck: "false",
                             "aria-label": "the key's secret"});
  secret.value = answer.key;
  const copied = h("span", {class: "copied", role: "status"});
  const copy = h("button", {type: "button", class: "button", id: "copy-secret", onclick: async () => {
    secret.select();
    try {
      await navigator.clipboard.writeText(secret.value);
    } catch (e) {
      document.execCommand("copy");  // no clipboard API (a page not served from a secure origin)
    }
    copied.textContent = "Copied";
  }}, "Copy");
  const node = dialog(title,
    h("p", {class: "notice warn"}, h("strong", {}, "Copy this key now. "),
      "pouch keeps only its hash: it will not be shown again. Lost, it can only be replaced (Rotate)."),
    h("div", {class: "secret-row"}, secret, copy, copied),
    h("p", {class: "hint"}, "Clients use it as their API key, through the gateway."),
    answer.warnings?.length ? h("ul", {class: "notice info warnings"}, answer.warnings.map(w => h("li", {}, w))) : null,
    h("div", {class: "dialog-actions"},
      h("button", {type: "button", class: "button primary", id: "secret-done", onclick: () => node.close()},
        "I have copied it")));
  node.addEventListener("close", () => { secret.value = ""; });
  secret.select();
}

export function confirmDialog(title, text, action, run) {
  const problem = h("div", {class: "notice error", role: "alert", hidden: true});
  const go = h("button", {type: "button", class: "button danger", id: "confirm-action"}, action);
  const node = dialog(title, h("p", {}, text), problem,
    h("div", {class: "dialog-actions"},
      h("button", {type: "button", class: "button ghost", onclick: () => node.close()}, "Cancel"), go));
  go.addEventListener("click", async () => {
    go.disabled = true;
    try {
      await run();
      node.close();
    } catch (e) {
      problem.textContent = e.message;
      problem.hidden = false;
      go.disabled = false;
    }
  });
}

// Edit / Rotate / Revoke buttons for an admin; nothing for a viewer. changed(): reload.
export function keyActions(key, session, changed) {
  if (!session.canWrite) return null;
  const edit = h("button", {type: "button", class: "button small", onclick: () => keyForm(key, answer => {
    if (answer.name !== key.name && location.hash.startsWith("#/keys/")) location.hash = `#/keys/${encodeURIComponent(answer.name)}`;
    changed(answer.warnings);
  })}, "Edit");
  if (key.revoked) return h("span", {class: "actions"}, edit);
  const rotate = h("button", {type: "button", class: "button small", onclick: () => confirmDialog(
    `Rotate “${key.name}”?`, "A new secret replaces the old one, which stops working at once. The budget, limits and history stay.",
    "Rotate", async () => {
      const answer = await api.post(api.keyPath(key.name, "rotate"));
      changed();
      secretDialog(`New secret for “${key.name}”`, answer);
    })}, "Rotate");
  const revoke = h("button", {type: "button", class: "button small danger-text", onclick: () => confirmDialog(
    `Revoke “${key.name}”?`, "Requests with this key are refused from the next one on. Its history stays. This cannot be undone.",
    "Revoke", async () => {
      await api.post(api.keyPath(key.name, "revoke"));
      changed();
    })}, "Revoke");
  return h("span", {class: "actions"}, edit, rotate, revoke);
}
