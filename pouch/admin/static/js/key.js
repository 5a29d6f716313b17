// One key: its budget window, limits, spend per day and its recent requests (refusals too),
// each linked to its flow in mitmweb when the gateway runs under mitmweb.

import * as api from "./api.js";
import {requestsLine, stackedBars} from "./charts.js";
import {card, emptyState, h} from "./dom.js";
import {count, dateLabel, money, pico, sum, tokens, when} from "./format.js";
import {badges, budgetBar, endUsers, expiry, keyActions, limits, models, team} from "./keyui.js";
import {reasonText} from "./overview.js";

const DAYS = 30;
const TOP = 10;  // end users and sessions shown on a key's page
const OUTCOMES = {ok: "ok", overrun: "bad", mock: "mock", cut_short: "warn", abandoned: "warn", no_usage: "warn",
                  measure_failed: "warn", upstream_error: "muted", not_sent: "muted"};

function lastDays(n) {
  const today = new Date();
  today.setUTCHours(0, 0, 0, 0);
  return Array.from({length: n}, (_, i) => new Date(today.getTime() - (n - 1 - i) * 86400e3).toISOString().slice(0, 10));
}

function facts(rows) {
  return h("dl", {class: "facts"}, rows.filter(Boolean).map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]));
}

// mitmweb's view of the flow; only a plain http(s) address from the gateway is used.
function flowLink(mitmweb, row) {
  if (!mitmweb || !row.flow_id || !/^https?:\/\/[^/]+$/.test(mitmweb)) return null;
  return h("a", {class: "flow-link", href: `${mitmweb}/#/flows/${encodeURIComponent(row.flow_id)}/request`,
                 target: "_blank", rel: "noopener noreferrer", title: "this request's flow in mitmweb"}, "flow ↗");
}

function outcome(row) {
  if (row.kind === "refusal") {
    return h("div", {class: "outcome"},
      h("span", {class: "badge status-refused"}, "refused"), " ", h("span", {}, reasonText(row.reason)),
      h("div", {class: "message"}, row.message));
  }
  const tone = Object.hasOwn(OUTCOMES, row.outcome) ? OUTCOMES[row.outcome] : "muted";
  return h("span", {class: `badge outcome-${tone}`}, row.outcome.replace("_", " "));
}

function requestsTable(rows, mitmweb) {
  if (!rows.length) return emptyState("No requests yet", "Requests made with this key, and those pouch refused, show here.");
  return h("table", {class: "table requests", id: "recent-requests"},
    h("thead", {}, h("tr", {}, ["When", "Model", "Endpoint", "Status", "Tokens in → out", "Cost", "Outcome", ""].map(
      (title, i) => h("th", {class: [4, 5].includes(i) ? "num" : null}, title)))),
    h("tbody", {}, rows.map(row => h("tr", {class: row.kind === "refusal" ? "refused" : null, dataset: {kind: row.kind}},
      h("td", {class: "nowrap"}, when(row.ts)),
      h("td", {}, row.model ? h("code", {}, row.model) : h("span", {class: "muted"}, "—")),
      h("td", {class: "muted"}, row.endpoint ?? "—", row.streamed ? h("span", {class: "tag"}, "stream") : null),
      h("td", {}, row.status ?? "—"),
      h("td", {class: "num nowrap"}, row.kind === "usage"
        ? h("span", {title: `${count(row.input_tokens)} in (${count(row.cached_tokens)} cached) · ${count(row.output_tokens)} out (${count(row.reasoning_tokens)} reasoning)`},
          `${tokens(row.input_tokens)} → ${tokens(row.output_tokens)}`)
        : "—"),
      h("td", {class: "num"}, row.kind === "usage" ? money(row.cost_usd, row.mock ? "money mock" : "money") : "—"),
      h("td", {}, outcome(row)),
      h("td", {}, flowLink(mitmweb, row))))));
}

// The key's biggest spenders per end user or session (the API's totals, most spent first);
// null when none of its requests named one.
function topSpend(name, since, by, rows) {
  const named = rows.filter(row => row[by] !== null)
    .sort((a, b) => (pico(b.cost_usd) > pico(a.cost_usd)) - (pico(b.cost_usd) < pico(a.cost_usd)) || b.requests - a.requests);
  if (!named.length) return null;
  const title = by === "user" ? "end user" : by;
  return card(`Spend by ${title}, last ${DAYS} days`, h("table", {class: "table", id: `key-by-${by}`},
    h("thead", {}, h("tr", {}, h("th", {}, title[0].toUpperCase() + title.slice(1)), h("th", {class: "num"}, "Requests"),
      h("th", {class: "num"}, "Spend"))),
    h("tbody", {}, named.slice(0, TOP).map(row => h("tr", {},
      h("td", {}, h("a", {href: `#/usage${api.query({key: name, [by]: row[by], since, by: "each"})}`}, h("code", {}, row[by]))),
      h("td", {class: "num"}, count(row.requests)),
      h("td", {class: "num"}, money(row.cost_usd)))))),
    named.length > TOP ? h("span", {class: "muted"}, `top ${TOP} of ${count(named.length)}`) : null);
}

export async function keyPage(view, params, name, session) {
  const days = lastDays(DAYS);
  const [key, recent, daily, byUser, bySession] = await Promise.all([
    api.get(api.keyPath(name)),
    api.get(`${api.keyPath(name, "requests")}?limit=50`),
    api.get(`api/usage${api.query({key: name, since: days[0], by: "day"})}`),
    api.get(`api/usage${api.query({key: name, since: days[0], by: "user"})}`),
    api.get(`api/usage${api.query({key: name, since: days[0], by: "session"})}`),
  ]);
  const spenders = [topSpend(name, days[0], "user", byUser.rows), topSpend(name, days[0], "session", bySession.rows)]
    .filter(Boolean);
  const byDay = Object.fromEntries(daily.rows.map(row => [row.day, row]));
  const texts = days.map(day => byDay[day]?.cost_usd ?? "0");
  const total = sum(texts);
  const place = h("div", {class: "chart", id: "key-chart", dataset: {total}});
  if (Number(total) > 0) {
    const parts = [{name: key.name, texts, values: texts.map(Number), total, color: "#4e79a7"}];
    view.after(() => stackedBars(place, days, parts, {height: 220, extra: i => [
      requestsLine(byDay[days[i]]?.requests ?? 0),
      byDay[days[i]]?.refused ? h("div", {class: "tip-row muted"}, `${count(byDay[days[i]].refused)} refused`) : null]}));
  } else {
    place.append(emptyState("No spend yet", `This key was charged nothing in the last ${DAYS} days.`));
  }
  const window = key.window_end
    ? `${dateLabel(key.window_start)} – ${dateLabel(key.window_end)}`
    : `since ${dateLabel(key.window_start)}`;
  view.head(h("span", {}, h("a", {class: "crumb", href: "#/keys"}, "Keys"), " / ", key.name),
    h("span", {}, badges(key), " ", h("code", {class: "muted"}, `${key.prefix}…`)),
    keyActions(key, session, warnings => view.refresh(warnings)));
  view.body.append(
    h("div", {class: "columns wide-left"},
      card("Budget, this window", h("div", {}, budgetBar(key, {large: true}),
        h("p", {class: "muted small"}, `Window ${window}. Held: reserved for requests in flight, released or charged when they end.`))),
      card("Limits", facts([
        ["Rate", limits(key)],
        ["Models", models(key)],
        ["Team", team(key)],
        ["End users", endUsers(key)],
        ["Expires", expiry(key)],
        ["Alerts at", key.alert_at.length ? `${key.alert_at.join("%, ")}% of the budget` : h("span", {class: "muted"}, "none")],
        key.webhook ? ["Webhook", h("code", {class: "small"}, key.webhook)] : null,
        ["Created", when(key.created_at)],
      ]))),
    card(`Spend per day, last ${DAYS} days`, place, h("span", {class: "muted"}, "total ", money(total))),
    ...(spenders.length ? [h("div", {class: "columns", id: "key-spenders"}, spenders)] : []),
    card("Recent requests", h("div", {},
      session.info.mitmweb ? null : h("p", {class: "muted small"},
        "Run the gateway under mitmweb (pouch web) to open each request's flow from here."),
      requestsTable(recent.requests, session.info.mitmweb))));
}
