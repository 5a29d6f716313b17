// The first page: what was spent today and this month, spend per day split by model or by key,
// the keys that spend most, and why requests were refused.

import * as api from "./api.js";
import {legend, requestsLine, stackedBars, topParts} from "./charts.js";
import {card, emptyState, h, keyHref} from "./dom.js";
import {count, monthLabel, money, share, sum, usd} from "./format.js";

const RANGES = [7, 30, 90];

// What a refusal's code means, for people; an unknown code shows as it is.
export const REASONS = {
  invalid_api_key: "unknown or revoked key",
  insufficient_quota: "budget spent",
  rate_limit_exceeded: "rate limit",
  model_not_allowed: "model not allowed",
  model_not_priced: "model has no price",
  model_not_found: "unknown model",
  context_length_exceeded: "prompt too long",
  invalid_request_error: "bad request",
  endpoint_not_metered: "endpoint not metered",
  tool_not_metered: "tool not metered",
  unknown_endpoint: "unknown endpoint",
  host_not_configured: "host not configured",
  https_required: "HTTPS required",
  store_unavailable: "store unavailable",
  mock_not_available: "no mock answer",
  side_path_refused: "side path refused",
  gateway_error: "gateway error",
  upstream_unreachable: "provider unreachable",
  reconnect_required: "reconnect required",
};

export function reasonText(reason) {
  return Object.hasOwn(REASONS, reason) ? REASONS[reason] : reason;
}

function stat(id, label, value, ...lines) {
  return h("div", {class: "stat", id},
    h("div", {class: "stat-label"}, label),
    h("div", {class: "stat-value"}, value),
    lines.filter(Boolean).map(line => h("div", {class: "stat-sub"}, line)));
}

function segmented(options, chosen, pick, label) {
  return h("div", {class: "segmented", role: "group", "aria-label": label}, options.map(([value, text]) =>
    h("button", {type: "button", class: value === chosen ? "on" : null, "aria-pressed": String(value === chosen),
                 dataset: {value: String(value)}, onclick: () => pick(value)}, text)));
}

function spendChart(body, by) {
  const days = body.daily.map(d => d.day);
  const field = by === "key" ? "by_key" : "by_model";
  const names = [...new Set(body.daily.flatMap(d => Object.keys(d[field])))];
  const parts = topParts(names.map(name => ({
    name: name || "(no model)", texts: body.daily.map(d => d[field][name] ?? "0")})), by === "key" ? "other keys" : "other models");
  const total = sum(body.daily.map(d => d.cost_usd));
  const place = h("div", {class: "chart", id: "spend-chart", dataset: {by, total}});
  const box = h("div", {}, place);
  if (!parts.length) {
    place.append(emptyState("No spend yet", `Nothing was charged in the last ${body.days} days. Requests through the gateway show here.`));
    return {box, draw: () => {}};
  }
  box.append(legend(parts));
  return {box, draw: () => stackedBars(place, days, parts, {extra: i => requestsLine(body.daily[i].requests)})};
}

function topKeys(body) {
  if (!body.top_keys.length) return emptyState("No spend yet", "Keys that spend show here, most first.");
  const most = Number(body.top_keys[0].cost_usd);
  return h("table", {class: "table", id: "top-keys"},
    h("thead", {}, h("tr", {}, h("th", {}, "Key"), h("th", {class: "num"}, "Spend"), h("th", {class: "num"}, "Requests"),
      h("th", {class: "share-col"}, h("span", {class: "sr-only"}, "share")))),
    h("tbody", {}, body.top_keys.map(row => h("tr", {},
      h("td", {}, h("a", {href: keyHref(row.key)}, row.key)),
      h("td", {class: "num"}, money(row.cost_usd)),
      h("td", {class: "num"}, count(row.requests)),
      h("td", {class: "share-col"}, h("div", {class: "minibar"}, h("span", {width: share(Number(row.cost_usd), most)})))))));
}

// Shown only once some team has spent: each links to its usage per key.
function topTeams(body) {
  const most = Number(body.top_teams[0].cost_usd);
  return h("table", {class: "table", id: "top-teams"},
    h("thead", {}, h("tr", {}, h("th", {}, "Team"), h("th", {class: "num"}, "Spend"), h("th", {class: "num"}, "Requests"),
      h("th", {class: "share-col"}, h("span", {class: "sr-only"}, "share")))),
    h("tbody", {}, body.top_teams.map(row => h("tr", {},
      h("td", {}, h("a", {href: `#/usage${api.query({team: row.team, by: "key", since: `${body.days}d`})}`}, row.team)),
      h("td", {class: "num"}, money(row.cost_usd)),
      h("td", {class: "num"}, count(row.requests)),
      h("td", {class: "share-col"}, h("div", {class: "minibar"}, h("span", {width: share(Number(row.cost_usd), most)})))))));
}

function refusals(body) {
  if (!body.refusals.length) return emptyState("No refusals", `pouch refused no request in the last ${body.days} days.`);
  const most = body.refusals[0].count;
  return h("table", {class: "table", id: "refusals"},
    h("thead", {}, h("tr", {}, h("th", {}, "Reason"), h("th", {class: "num"}, "Requests"),
      h("th", {class: "share-col"}, h("span", {class: "sr-only"}, "share")))),
    h("tbody", {}, body.refusals.map(row => h("tr", {},
      h("td", {}, h("span", {}, reasonText(row.reason)), " ", h("code", {class: "muted small"}, row.reason)),
      h("td", {class: "num"}, count(row.count)),
      h("td", {class: "share-col"}, h("div", {class: "minibar refused"}, h("span", {width: share(row.count, most)})))))));
}

export async function overviewPage(view, params) {
  const days = RANGES.includes(Number(params.get("days"))) ? Number(params.get("days")) : 30;
  const by = params.get("by") === "key" ? "key" : "model";
  const body = await api.get(`api/overview${api.query({days})}`);
  const go = changes => { location.hash = `#/overview${api.query({days, by, ...changes})}`; };
  const periodTotal = sum(body.daily.map(d => d.cost_usd));
  const periodRequests = body.daily.reduce((n, d) => n + d.requests, 0);
  const b = body.budgets;
  const chart = spendChart(body, by);
  view.head("Overview", "Money spent through this gateway. Days are UTC days; hover an amount for its exact value.",
    segmented(RANGES.map(d => [d, `${d} days`]), days, d => go({days: d}), "period"));
  view.body.append(
    h("div", {class: "stats"},
      stat("spend-today", "Spent today", money(body.today.cost_usd),
        `${count(body.today.requests)} requests · ${count(body.today.refused)} refused`),
      stat("spend-month", "This month", money(body.month.cost_usd),
        `${monthLabel(body.month.since)} · ${count(body.month.requests)} requests`),
      stat("spend-period", `Last ${days} days`, money(periodTotal),
        `${usd(periodTotal === "0" ? "0" : String(Number(periodTotal) / days))} a day on average · ${count(periodRequests)} requests`),
      stat("budgets", "Current budget windows", money(b.spent_usd),
        h("span", {}, money(b.reserved_usd), " held for requests in flight"),
        h("span", {}, money(b.budget_usd), ` budgeted on ${count(b.keys_with_budget)} of ${count(b.keys)} live keys`))),
    card(`Spend per day, last ${days} days`, chart.box,
      segmented([["model", "By model"], ["key", "By key"]], by, value => go({by: value}), "split the bars")),
    h("div", {class: "columns"},
      body.top_teams?.length
        ? h("div", {class: "stack"}, card("Top teams", topTeams(body)), card("Top keys", topKeys(body)))
        : card("Top keys", topKeys(body)),
      card("Refusals by reason", refusals(body))));
  view.after(chart.draw);  // once the page is shown: the chart takes its box's width
}
