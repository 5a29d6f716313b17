// Every key: its budget window as a bar (spent / held / left), limits, models and status;
// admins create, edit, rotate and revoke here.

import * as api from "./api.js";
import {emptyState, h, keyHref, teamHref} from "./dom.js";
import {money, sum} from "./format.js";
import {badges, budgetBar, keyActions, keyForm, limits, models, secretDialog} from "./keyui.js";

export async function keysPage(view, params, session) {
  const all = await api.get("api/keys");
  const showRevoked = params.get("revoked") === "1";
  const revoked = all.filter(key => key.revoked).length;
  const shown = all.filter(key => showRevoked || !key.revoked).sort((a, b) => a.name.localeCompare(b.name));
  const live = all.filter(key => !key.revoked);
  const create = session.canWrite
    ? h("button", {type: "button", class: "button primary", id: "new-key", onclick: () => keyForm(undefined, answer => {
      view.refresh();
      secretDialog(`Key “${answer.name}” created`, answer);
    })}, "New key")
    : null;
  const toggle = revoked
    ? h("a", {class: "button ghost", href: showRevoked ? "#/keys" : "#/keys?revoked=1"},
      showRevoked ? "Hide revoked" : `Show revoked (${revoked})`)
    : null;
  view.head("Keys", h("span", {}, `${live.length} live key${live.length === 1 ? "" : "s"} · `,
    money(sum(live.map(k => k.spent_usd))), " spent and ", money(sum(live.map(k => k.reserved_usd))),
    " held in their current windows"), toggle, create);
  if (!shown.length) {
    view.body.append(h("section", {class: "card"}, emptyState("No keys yet",
      session.canWrite ? "Create one with “New key”: clients use it instead of the provider's key."
        : "An admin creates keys here or with `pouch keys create`.")));
    return;
  }
  view.body.append(h("section", {class: "card flush"}, h("table", {class: "table keys", id: "keys"},
    h("thead", {}, h("tr", {}, h("th", {}, "Key"), h("th", {}, "Status"), h("th", {class: "budget-col"}, "Budget, this window"),
      h("th", {}, "Limits"), h("th", {}, "Models"), session.canWrite ? h("th", {}, h("span", {class: "sr-only"}, "actions")) : null)),
    h("tbody", {}, shown.map(key => h("tr", {dataset: {key: key.name}, class: key.revoked ? "revoked" : null},
      h("td", {}, h("a", {class: "key-name", href: keyHref(key.name)}, key.name),
        h("div", {class: "muted small mono"}, `${key.prefix}…`),
        key.team ? h("a", {class: "small team-link", href: teamHref(key.team)}, `team ${key.team}`) : null),
      h("td", {}, badges(key)),
      h("td", {class: "budget-col"}, budgetBar(key)),
      h("td", {}, limits(key)),
      h("td", {}, models(key)),
      session.canWrite ? h("td", {class: "nowrap"}, keyActions(key, session, warnings => view.refresh(warnings))) : null))))));
}
