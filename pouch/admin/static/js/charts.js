// Spend charts: stacked bars per UTC day, drawn by uPlot (static/vendor/uplot, loaded as a
// classic script before this module). Bars stack by painting each series' running total,
// tallest first, so every band shows one model's or key's part of the day. Hovering a day shows
// its exact amounts; the legend (plain DOM, below the chart) gives each part's total.

import {h} from "./dom.js";
import {count, dayLabel, sum, usd, usdShort} from "./format.js";

// Tableau 10: told apart by most eyes; the rest ("other") in grey.
export const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
                        "#9c755f", "#bab0ac"];
export const OTHER = "#c9ced6";
const MAX_PARTS = 8;  // more would be colours nobody can tell apart

const live = new Set();  // charts on the page, destroyed when the page changes

export function disposeCharts() {
  for (const chart of live) chart.dispose();
  live.clear();
}

// parts: [{name, texts: [exact decimal string per day]}] -> those that spent, biggest first, at
// most MAX_PARTS (the rest summed into one "other" part), each with its colour, its values as
// numbers (to draw) and its exact total.
export function topParts(parts, otherName = "other") {
  const withTotals = parts.map(part => ({...part, values: part.texts.map(Number), total: sum(part.texts)}))
    .filter(part => Number(part.total) > 0)
    .sort((a, b) => Number(b.total) - Number(a.total) || a.name.localeCompare(b.name));
  const shown = withTotals.length > MAX_PARTS ? withTotals.slice(0, MAX_PARTS - 1) : withTotals;
  const rest = withTotals.slice(shown.length);
  const result = shown.map((part, i) => ({...part, color: PALETTE[i % PALETTE.length]}));
  if (rest.length) {
    const texts = rest[0].texts.map((_, day) => sum(rest.map(part => part.texts[day])));
    result.push({name: `${otherName} (${rest.length} more)`, texts, values: texts.map(Number), total: sum(texts),
                 color: OTHER, other: true});
  }
  return result;
}

function tooltip(days, parts, extra) {
  const tip = h("div", {class: "chart-tip", hidden: true});
  return {
    hooks: {
      init: u => u.over.append(tip),
      setCursor: u => {
        const i = u.cursor.idx;
        if (i === null || i === undefined || u.cursor.left < 0) {
          tip.hidden = true;
          return;
        }
        const total = sum(parts.map(part => part.texts[i]));
        const rows = parts.filter(part => part.values[i] > 0).map(part =>
          h("div", {class: "tip-row"}, h("i", {class: "swatch", dataset: {color: part.color}}),
            h("span", {class: "tip-name"}, part.name), h("span", {class: "tip-value"}, `$${part.texts[i]}`)));
        tip.replaceChildren(
          h("div", {class: "tip-day"}, dayLabel(days[i]), h("span", {class: "muted"}, ` · $${total}`)),
          ...(rows.length ? rows : [h("div", {class: "muted"}, "no spend")]),
          extra ? extra(i) : null);
        for (const swatch of tip.querySelectorAll(".swatch")) swatch.style.background = swatch.dataset.color;
        tip.hidden = false;
        const room = u.over.clientWidth;
        const left = u.valToPos(i, "x");
        tip.style.left = `${Math.min(Math.max(left + 12, 0), room - tip.offsetWidth - 4)}px`;
        tip.style.top = "8px";
      },
    },
  };
}

// A stacked bar chart in `container`: days (["2026-11-27", ...]), parts from topParts().
// extra(i): more lines for day i's tooltip (requests, say).
export function stackedBars(container, days, parts, {height = 260, extra} = {}) {
  if (!window.uPlot) {
    container.append(h("div", {class: "notice error"}, "The chart library did not load (static/vendor/uplot)."));
    return null;
  }
  const running = [];
  let below = days.map(() => 0);
  for (const part of parts) {
    below = below.map((v, i) => v + part.values[i]);
    running.push(below);
  }
  const bars = window.uPlot.paths.bars({size: [0.72, 56], align: 0});
  const order = parts.map((_, i) => i).reverse();  // the tallest running total is painted first
  const options = {
    width: Math.max(container.clientWidth, 280),
    height,
    legend: {show: false},
    select: {show: false},
    cursor: {y: false, points: {show: false}, drag: {x: false, y: false, setScale: false}},
    scales: {x: {time: false, range: () => [-0.5, days.length - 0.5]}, y: {range: (u, min, max) => [0, max > 0 ? max * 1.08 : 1]}},
    axes: [
      {stroke: "#656d76", grid: {show: false}, ticks: {show: false}, font: "12px system-ui, sans-serif",
       space: 56, incrs: [1, 2, 3, 7, 14, 30, 61],
       values: (u, splits) => splits.map(i => (Number.isInteger(i) && days[i] ? dayLabel(days[i]) : ""))},
      {stroke: "#656d76", grid: {stroke: "#eef0f3", width: 1}, ticks: {show: false}, size: 70,
       font: "12px system-ui, sans-serif", values: (u, splits) => splits.map(usdShort)},
    ],
    series: [{}, ...order.map(i => ({label: parts[i].name, fill: parts[i].color, stroke: parts[i].color, width: 0,
                                     paths: bars, points: {show: false}}))],
    plugins: [tooltip(days, parts, extra)],
  };
  const data = [days.map((_, i) => i), ...order.map(i => running[i])];
  const plot = new window.uPlot(options, data, container);
  const resize = new ResizeObserver(() => plot.setSize({width: Math.max(container.clientWidth, 280), height}));
  resize.observe(container);
  const chart = {plot, dispose: () => { resize.disconnect(); plot.destroy(); }};
  live.add(chart);
  return chart;
}

// The legend under a chart: each part's colour, name and total (exact on hover).
export function legend(parts) {
  return h("ul", {class: "legend"}, parts.map(part => {
    const swatch = h("i", {class: "swatch"});
    swatch.style.background = part.color;
    return h("li", {class: part.other ? "other" : null},
      swatch, h("span", {class: "legend-name", title: part.name}, part.name),
      h("span", {class: "legend-value", title: `$${part.total} exactly`, dataset: {usd: part.total}}, usd(part.total)));
  }));
}

export function requestsLine(requests) {
  return h("div", {class: "tip-row muted"}, `${count(requests)} request${requests === 1 ? "" : "s"}`);
}
