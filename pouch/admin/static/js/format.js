// Money, counts and times as people read them. The API sends money as exact decimal strings;
// shown values are rounded to what the eye needs, and the exact string goes in a tooltip.

import {h} from "./dom.js";

const DOLLARS = new Intl.NumberFormat("en-US", {minimumFractionDigits: 2, maximumFractionDigits: 2});
const COUNT = new Intl.NumberFormat("en-US");

// "$1,234.57", "$0.42", "$0.012", "$0.0000069": two decimals from a cent up, two significant
// digits below it (a request through a cheap model costs a small fraction of a cent).
export function usd(text) {
  const value = Number(text);
  if (text === null || text === undefined || !Number.isFinite(value)) return "—";
  if (value === 0) return "$0.00";
  const sign = value < 0 ? "-" : "";
  const size = Math.abs(value);
  if (size >= 0.01) return `${sign}$${DOLLARS.format(size)}`;
  const digits = Math.min(12, 1 - Math.floor(Math.log10(size)));  // two significant digits
  return `${sign}$${size.toFixed(digits).replace(/0+$/, "")}`;
}

// For axes: "$1.2k", "$0.50", "$0.0001".
export function usdShort(value) {
  const size = Math.abs(value);
  if (size >= 1e6) return `$${(value / 1e6).toFixed(1)}M`;
  if (size >= 1e3) return `$${(value / 1e3).toFixed(size >= 1e4 ? 0 : 1)}k`;
  return usd(value);
}

// Exact sums: the store counts pico-dollars (12 decimals), and so do these.
export function pico(text) {
  const [whole, fraction = ""] = String(text ?? "0").replace("-", "").split(".");
  const value = BigInt(whole || "0") * 10n ** 12n + BigInt((fraction + "0".repeat(12)).slice(0, 12));
  return String(text).startsWith("-") ? -value : value;
}

export function fromPico(value) {
  const sign = value < 0n ? "-" : "";
  const size = value < 0n ? -value : value;
  const fraction = String(size % 10n ** 12n).padStart(12, "0").replace(/0+$/, "");
  return `${sign}${size / 10n ** 12n}${fraction ? `.${fraction}` : ""}`;
}

export function sum(texts) {
  return fromPico(texts.reduce((total, text) => total + pico(text), 0n));
}

export function exact(text) {
  return text === null || text === undefined ? "" : `$${text} exactly`;
}

// A money value as an element: rounded, the exact amount on hover.
export function money(text, cls = "money") {
  return h("span", {class: cls, title: exact(text), dataset: {usd: text ?? ""}}, usd(text));
}

export function count(value) {
  return value === null || value === undefined ? "—" : COUNT.format(value);
}

export function tokens(value) {
  if (!value) return "0";
  if (value >= 1e6) return `${(value / 1e6).toFixed(1)}M`;
  if (value >= 1e4) return `${Math.round(value / 1e3)}k`;
  return COUNT.format(value);
}

// A percentage of the whole, for bar widths: within 0..100, a sliver stays visible.
export function share(part, whole) {
  if (!(whole > 0) || !(part > 0)) return 0;
  return Math.min(100, Math.max(0.6, (100 * part) / whole));
}

const WHEN = new Intl.DateTimeFormat("en-US", {month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
                                                second: "2-digit", hour12: false});
const DAY = new Intl.DateTimeFormat("en-US", {month: "short", day: "numeric", timeZone: "UTC"});
const DATE = new Intl.DateTimeFormat("en-US", {year: "numeric", month: "short", day: "numeric", timeZone: "UTC"});
const MONTH = new Intl.DateTimeFormat("en-US", {year: "numeric", month: "long", timeZone: "UTC"});

// A time from the store (ISO 8601, UTC), in the browser's time zone; the UTC text on hover.
export function when(iso) {
  if (!iso) return h("span", {class: "muted"}, "—");
  return h("time", {datetime: iso, title: `${iso} (UTC)`}, WHEN.format(new Date(iso)));
}

// "2026-11-27" -> "Nov 27" (days are UTC days, as the API groups them).
export function dayLabel(day) {
  return DAY.format(new Date(`${day}T00:00:00Z`));
}

export function dateLabel(iso) {
  return iso ? DATE.format(new Date(iso)) : "—";
}

export function monthLabel(iso) {
  return MONTH.format(new Date(iso));
}

// "in 3 days", "2 hours ago"
export function relative(iso) {
  const seconds = (new Date(iso).getTime() - Date.now()) / 1000;
  const units = [["day", 86400], ["hour", 3600], ["minute", 60]];
  const format = new Intl.RelativeTimeFormat("en", {numeric: "auto"});
  for (const [unit, size] of units) {
    if (Math.abs(seconds) >= size) return format.format(Math.round(seconds / size), unit);
  }
  return format.format(Math.round(seconds), "second");
}
