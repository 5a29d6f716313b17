// Usage rows or totals, filtered by key, time, team, end user, tag and session, and the same
// as a CSV file.

import * as api from "./api.js";
import {emptyState, h, keyHref} from "./dom.js";
import {count, money, sum, tokens, when} from "./format.js";

const SHOWN = 500;  // rows in the page; the CSV has them all
const GROUPS = [["", "each request"], ["day", "day"], ["key", "key"], ["model", "model"], ["team", "team"],
                ["user", "end user"], ["tag", "tag"], ["session", "session"]];
// Typed filters: [name, label, placeholder]. Values a client chose (x-pouch-user, -tags, -session).
const TEXT_FILTERS = [["team", "Team", "any"], ["user", "End user", "any"], ["tag", "Tag", "any"],
                      ["session", "Session", "any"]];
const NONE = {key: "(no known key)", team: "(no team)", user: "(no end user)", tag: "(no tag)", session: "(no session)"};

function filters(params, names, apply, exportCsv) {
  const listed = params.key && !names.includes(params.key) ? [...names, params.key] : names;
  const key = h("select", {name: "key", id: "usage-key"}, h("option", {value: ""}, "all keys"),
    listed.map(name => h("option", {value: name}, name)));
  key.value = params.key ?? "";
  const since = h("input", {name: "since", id: "usage-since", type: "text", placeholder: "7d, 2026-11-01", autocomplete: "off"});
  since.value = params.since ?? "";
  const until = h("input", {name: "until", id: "usage-until", type: "text", placeholder: "now", autocomplete: "off"});
  until.value = params.until ?? "";
  const by = h("select", {name: "by", id: "usage-by"}, GROUPS.map(([value, text]) => h("option", {value}, text)));
  by.value = params.by ?? "";
  const typed = Object.fromEntries(TEXT_FILTERS.map(([name, , placeholder]) => {
    const input = h("input", {name, id: `usage-${name}`, type: "text", placeholder, autocomplete: "off"});
    input.value = params[name] ?? "";
    return [name, input];
  }));
  const read = () => ({key: key.value, since: since.value.trim(), until: until.value.trim(), by: by.value,
                       ...Object.fromEntries(TEXT_FILTERS.map(([name]) => [name, typed[name].value.trim()]))});
  const status = h("span", {class: "muted small", role: "status"});
  const download = h("button", {type: "button", class: "button", id: "export-csv"}, "Export CSV");
  download.addEventListener("click", async () => {
    download.disabled = true;
    status.textContent = "";
    try {
      status.textContent = `Saved ${await exportCsv(read())}`;
    } catch (e) {
      status.textContent = e.message;
      status.classList.add("error-text");
    } finally {
      download.disabled = false;
    }
  });
  const form = h("form", {class: "filters", id: "usage-filters"},
    h("label", {class: "field"}, h("span", {class: "field-label"}, "Key"), key),
    h("label", {class: "field"}, h("span", {class: "field-label"}, "Since"), since),
    h("label", {class: "field"}, h("span", {class: "field-label"}, "Until (excluded)"), until),
    h("label", {class: "field"}, h("span", {class: "field-label"}, "One row per"), by),
    TEXT_FILTERS.map(([name, title]) => h("label", {class: "field"}, h("span", {class: "field-label"}, title), typed[name])),
    h("div", {class: "filter-actions"}, h("button", {type: "submit", class: "button primary"}, "Apply"), download, status));
  form.addEventListener("submit", event => {
    event.preventDefault();
    apply(read());
  });
  return form;
}

function totalsTable(by, rows) {
  const label = value => {
    if (value === null) return h("span", {class: "muted"}, NONE[by] ?? "—");
    if (by === "key") return h("a", {href: keyHref(value)}, value);
    if (by === "model") return value ? h("code", {}, value) : h("span", {class: "muted"}, "(no model)");
    if (by !== "day") return h("code", {}, value);  // a client's string, shown as typed
    return value;
  };
  const head = [by === "user" ? "end user" : by, "Requests", "Input", "Cached", "Output", "Reasoning", "Spend", "Mock (not charged)", "Overruns", "Refused"];
  return h("table", {class: "table", id: "usage-table"},
    h("thead", {}, h("tr", {}, head.map((title, i) => h("th", {class: i ? "num" : null}, i ? title : title[0].toUpperCase() + title.slice(1))))),
    h("tbody", {}, rows.map(row => h("tr", {},
      h("td", {}, label(row[by])),
      h("td", {class: "num"}, count(row.requests)),
      h("td", {class: "num", title: count(row.input_tokens)}, tokens(row.input_tokens)),
      h("td", {class: "num", title: count(row.cached_tokens)}, tokens(row.cached_tokens)),
      h("td", {class: "num", title: count(row.output_tokens)}, tokens(row.output_tokens)),
      h("td", {class: "num", title: count(row.reasoning_tokens)}, tokens(row.reasoning_tokens)),
      h("td", {class: "num"}, money(row.cost_usd)),
      h("td", {class: "num"}, money(row.mock_usd, "money mock")),
      h("td", {class: "num"}, count(row.overruns)),
      h("td", {class: "num"}, count(row.refused))))),
    by === "tag" ? null : h("tfoot", {}, h("tr", {},  // tags overlap: their sum is no total
      h("th", {}, "Total"),
      h("th", {class: "num"}, count(rows.reduce((n, r) => n + r.requests, 0))),
      ["input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens"].map(
        column => h("th", {class: "num"}, tokens(rows.reduce((n, r) => n + r[column], 0)))),
      h("th", {class: "num"}, money(sum(rows.map(r => r.cost_usd)))),
      h("th", {class: "num"}, money(sum(rows.map(r => r.mock_usd)), "money mock")),
      h("th", {class: "num"}, count(rows.reduce((n, r) => n + r.overruns, 0))),
      h("th", {class: "num"}, count(rows.reduce((n, r) => n + r.refused, 0))))));
}

function rowsTable(rows) {
  const newest = rows.slice(-SHOWN).reverse();
  return h("div", {},
    rows.length > SHOWN ? h("p", {class: "muted small"}, `The newest ${SHOWN} of ${count(rows.length)} requests; the CSV has every one.`) : null,
    h("table", {class: "table", id: "usage-table"},
      h("thead", {}, h("tr", {}, ["When", "Key", "Model", "Endpoint", "Status", "In", "Out", "Cost", "Outcome"].map(
        (title, i) => h("th", {class: [5, 6, 7].includes(i) ? "num" : null}, title)))),
      h("tbody", {}, newest.map(row => h("tr", {},
        h("td", {class: "nowrap"}, when(row.ts)),
        h("td", {}, h("a", {href: keyHref(row.key)}, row.key)),
        h("td", {}, row.model ? h("code", {}, row.model) : "—"),
        h("td", {class: "muted"}, row.endpoint ?? "—"),
        h("td", {}, row.status ?? "—"),
        h("td", {class: "num", title: count(row.input_tokens)}, tokens(row.input_tokens)),
        h("td", {class: "num", title: count(row.output_tokens)}, tokens(row.output_tokens)),
        h("td", {class: "num"}, money(row.cost_usd, row.mock ? "money mock" : "money")),
        h("td", {}, h("span", {class: "badge"}, row.outcome)))))));
}

export async function usagePage(view, params) {
  // In the page's address an empty since is "all" and one row per request "each": left out,
  // they mean the defaults (the last 7 days, per day).
  const since = params.has("since") ? params.get("since") : "7d";
  const by = params.has("by") ? params.get("by") : "day";
  const chosen = {key: params.get("key") ?? "", since: since === "all" ? "" : since, until: params.get("until") ?? "",
                  by: by === "each" ? "" : by,
                  ...Object.fromEntries(TEXT_FILTERS.map(([name]) => [name, params.get(name) ?? ""]))};
  const [keys, found] = await Promise.all([
    api.get("api/keys"),
    api.get(`api/usage${api.query(chosen)}`).catch(e => e),  // a bad filter: said beside the form
  ]);
  const apply = picked => {
    location.hash = `#/usage${api.query({...picked, since: picked.since || "all", by: picked.by || "each"})}`;
  };
  const exportCsv = picked => api.download(`api/usage${api.query({...picked, format: "csv"})}`, "pouch-usage.csv");
  view.head("Usage", "What each key, team, end user, tag and session used and spent. Since and until take a date, a UTC time, " +
    "or a span back from now (24h, 7d, 4w). Per tag, a request with several tags counts under each.");
  const names = keys.map(key => key.name).sort();
  view.body.append(h("section", {class: "card"}, filters(chosen, names, apply, exportCsv)));
  if (found instanceof Error) {
    view.body.append(h("div", {class: "notice error", role: "alert", id: "usage-error"}, found.message));
    return;
  }
  const rows = found.rows;
  const total = sum(rows.map(row => row.cost_usd));
  const body = rows.length
    ? (chosen.by ? totalsTable(chosen.by, rows) : rowsTable(rows))
    : emptyState("No usage here", "No request matches these filters.");
  view.body.append(h("section", {class: "card flush"},
    h("div", {class: "card-head padded"}, h("h2", {}, chosen.by ? `Per ${chosen.by === "user" ? "end user" : chosen.by}` : "Requests"),
      h("span", {class: "muted"}, `${count(rows.length)} row${rows.length === 1 ? "" : "s"} · `,
        chosen.by === "tag" ? "a request with several tags counts under each" : [money(total), " spent"])),
    h("div", {class: "scroll"}, body)));
}
