// Teams: a budget, limits and models every key in the team shares (a key's request must fit
// both). The list shows each team's budget window as a bar; a team's page adds its keys with
// their own spend. Admins create, edit and delete teams here.

import * as api from "./api.js";
import {card, emptyState, h, keyHref, teamHref} from "./dom.js";
import {money, sum} from "./format.js";
import {badges, budgetBar, confirmDialog, dialog, field, limits, models} from "./keyui.js";

function teamPath(name) {
  return `api/teams/${encodeURIComponent(name)}`;
}

const FIELDS = [
  // [name, label, hint, how the team's value shows in the form]
  ["name", "Name", "unique; letters, digits, . _ @ -", team => team.name],
  ["budget_usd", "Budget (USD)", "all its keys together, per period; empty: no budget", team => team.budget_usd ?? ""],
  ["period", "Period", "none, daily, weekly, monthly, or 12h, 30d", team => team.period],
  ["rpm", "Requests per minute", "all its keys together; empty: no limit", team => team.rpm ?? ""],
  ["tpm", "Tokens per minute", "empty: no limit", team => team.tpm ?? ""],
  ["max_concurrent", "At once", "requests in flight; empty: no limit", team => team.max_concurrent ?? ""],
  ["models", "Models", "comma-separated globs; a key's own list narrows it; empty: every model", team => team.models.join(", ")],
];
const WHOLE = ["rpm", "tpm", "max_concurrent"];

// The form's text as the API's JSON value (null: none), or an Error naming the field.
function value(name, label, text) {
  text = text.trim();
  if (name === "models") return text ? text.split(",").map(s => s.trim()).filter(Boolean) : [];
  if (WHOLE.includes(name)) {
    if (!text) return null;
    if (!/^\d+$/.test(text)) throw new Error(`${label}: give a whole number`);
    return Number(text);
  }
  if (name === "period") return text || "none";
  return text || null;
}

// Create (team undefined) or edit a team; done(answer) after the API accepted it.
function teamForm(team, done) {
  const creating = !team;
  const inputs = {};
  const grid = h("div", {class: "form-grid"}, FIELDS.map(([name, label, hint, shown]) => {
    const input = h("input", {name, type: "text", autocomplete: "off", spellcheck: "false", required: name === "name" && creating,
                              inputmode: WHOLE.includes(name) || name === "budget_usd" ? "decimal" : null});
    input.value = team ? String(shown(team)) : (name === "period" ? "monthly" : "");
    inputs[name] = input;
    return field(label, input, hint);
  }));
  const problem = h("div", {class: "notice error", role: "alert", hidden: true});
  const submit = h("button", {type: "submit", class: "button primary"}, creating ? "Create team" : "Save changes");
  const form = h("form", {class: "key-form team-form", novalidate: true}, grid, problem,
    h("div", {class: "dialog-actions"},
      h("button", {type: "button", class: "button ghost", onclick: () => node.close()}, "Cancel"), submit));
  const node = dialog(creating ? "New team" : `Edit team “${team.name}”`, form);
  form.addEventListener("submit", async event => {
    event.preventDefault();
    problem.hidden = true;
    const body = {};
    try {
      for (const [name, label, , shown] of FIELDS) {
        const text = inputs[name].value;
        if (!creating && text.trim() === String(shown(team)).trim()) continue;  // unchanged: not sent
        if (creating && !text.trim() && name !== "name") continue;  // left empty: the API's default
        body[name] = value(name, label, text);
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
      const answer = creating ? await api.post("api/teams", body) : await api.patch(teamPath(team.name), body);
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

// Edit / Delete for an admin; nothing for a viewer. The API refuses to delete a team with keys:
// the dialog shows its message.
function teamActions(team, session, changed, deleted) {
  if (!session.canWrite) return null;
  const edit = h("button", {type: "button", class: "button small", onclick: () => teamForm(team, answer => {
    if (answer.name !== team.name && location.hash.startsWith("#/teams/")) location.hash = teamHref(answer.name);
    changed(answer.warnings);
  })}, "Edit");
  const remove = h("button", {type: "button", class: "button small danger-text", onclick: () => confirmDialog(
    `Delete team “${team.name}”?`, "Its keys must be moved out first. The keys' past usage keeps the team's name.",
    "Delete", async () => {
      await api.remove(teamPath(team.name));
      deleted();
    })}, "Delete");
  return h("span", {class: "actions"}, edit, remove);
}

export async function teamsPage(view, params, session) {
  const teams = (await api.get("api/teams")).sort((a, b) => a.name.localeCompare(b.name));
  const create = session.canWrite
    ? h("button", {type: "button", class: "button primary", id: "new-team",
                   onclick: () => teamForm(undefined, answer => view.refresh(answer.warnings))}, "New team")
    : null;
  view.head("Teams", h("span", {}, `${teams.length} team${teams.length === 1 ? "" : "s"} · `,
    money(sum(teams.map(t => t.spent_usd))), " spent and ", money(sum(teams.map(t => t.reserved_usd))),
    " held in their current windows"), create);
  if (!teams.length) {
    view.body.append(h("section", {class: "card"}, emptyState("No teams yet",
      session.canWrite ? "Create one with “New team”, then put keys in it from a key's Edit dialog."
        : "An admin creates teams here or with `pouch teams create`.")));
    return;
  }
  view.body.append(h("section", {class: "card flush"}, h("table", {class: "table teams", id: "teams"},
    h("thead", {}, h("tr", {}, h("th", {}, "Team"), h("th", {class: "budget-col"}, "Budget, this window"),
      h("th", {}, "Limits"), h("th", {}, "Models"), h("th", {class: "num"}, "Keys"),
      session.canWrite ? h("th", {}, h("span", {class: "sr-only"}, "actions")) : null)),
    h("tbody", {}, teams.map(team => h("tr", {dataset: {team: team.name}},
      h("td", {}, h("a", {class: "key-name", href: teamHref(team.name)}, team.name)),
      h("td", {class: "budget-col"}, budgetBar(team)),
      h("td", {}, limits(team)),
      h("td", {}, models(team)),
      h("td", {class: "num key-count"}, String(team.keys.length)),
      session.canWrite ? h("td", {class: "nowrap"}, teamActions(team, session, warnings => view.refresh(warnings),
        () => view.refresh())) : null))))));
}

export async function teamPage(view, params, name, session) {
  const [team, allKeys] = await Promise.all([api.get(teamPath(name)), api.get("api/keys")]);
  const members = allKeys.filter(key => key.team === team.name).sort((a, b) => a.name.localeCompare(b.name));
  view.head(h("span", {}, h("a", {class: "crumb", href: "#/teams"}, "Teams"), " / ", team.name),
    `${members.length} key${members.length === 1 ? "" : "s"}`,
    teamActions(team, session, warnings => view.refresh(warnings), () => { location.hash = "#/teams"; }));
  const keysTable = members.length
    ? h("table", {class: "table keys", id: "team-keys"},
      h("thead", {}, h("tr", {}, h("th", {}, "Key"), h("th", {}, "Status"), h("th", {class: "budget-col"}, "Its own budget, this window"),
        h("th", {}, "Limits"))),
      h("tbody", {}, members.map(key => h("tr", {dataset: {key: key.name}, class: key.revoked ? "revoked" : null},
        h("td", {}, h("a", {class: "key-name", href: keyHref(key.name)}, key.name),
          h("div", {class: "muted small mono"}, `${key.prefix}…`)),
        h("td", {}, badges(key)),
        h("td", {class: "budget-col"}, budgetBar(key)),
        h("td", {}, limits(key))))))
    : emptyState("No keys in this team", "Put a key in it from the key's Edit dialog, or with `pouch keys update KEY --team NAME`.");
  view.body.append(
    h("div", {class: "columns wide-left"},
      card("Team budget, this window", h("div", {id: "team-budget"}, budgetBar(team, {large: true}),
        h("p", {class: "muted small"}, "All the team's keys together. Held: reserved for requests in flight."))),
      card("Limits, all keys together", h("dl", {class: "facts"},
        h("dt", {}, "Rate"), h("dd", {}, limits(team)),
        h("dt", {}, "Models"), h("dd", {}, models(team))))),
    card("Keys", h("div", {class: "scroll"}, keysTable),
      h("span", {class: "muted"}, "their own windows: ", money(sum(members.map(k => k.spent_usd))), " spent")));
}
