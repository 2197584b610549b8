// The usage page: asks GET /usage/api with the admin key and draws what it returns.
// No HTML is ever parsed from data (textContent only); the charts are uPlot's canvases.
"use strict";

const KEY_STORAGE = "aichat-admin-key";
const COLOURS = ["#2f6fde", "#d9622b", "#1f9d55", "#9c27b0", "#c98a00", "#00838f", "#c62828", "#6d4c41"];
const $ = (id) => document.getElementById(id);
const ui = {
  form: $("query"), key: $("key"), since: $("since"), until: $("until"), by: $("by"),
  error: $("error"), budgets: $("budgets"), noBudgets: $("no-budgets"), top: $("top-keys"),
};
// The charts being shown, by name: tests read their data to compare it with the API's.
window.usageCharts = {};

const usd = (value) => "$" + value.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 6 });
const count = (value) => value.toLocaleString("en-US");
const isoDay = (date) => date.toISOString().slice(0, 10);

function showError(message) {
  ui.error.textContent = message;
  ui.error.hidden = !message;
}

function cell(row, text, numeric) {
  const td = document.createElement("td");
  td.textContent = text;
  if (numeric) td.className = "number";
  row.append(td);
  return td;
}

function fillTable(table, rows, addCells) {
  const body = table.tBodies[0];
  body.replaceChildren();
  for (const item of rows) {
    const tr = document.createElement("tr");
    addCells(tr, item);
    body.append(tr);
  }
}

function drawChart(name, element, data, field, format) {
  const old = window.usageCharts[name];
  if (old) old.destroy();
  // uPlot's x axis is time in seconds: each day at 00:00 UTC.
  const xs = data.days.map((day) => Date.parse(day + "T00:00:00Z") / 1000);
  const series = [{}];
  data.series.forEach((group, i) => {
    series.push({
      label: group.name,
      stroke: COLOURS[i % COLOURS.length],
      width: 2,
      points: { show: true, size: 6 },
      value: (u, v) => (v == null ? "–" : format(v)),
    });
  });
  const options = {
    width: Math.max(320, element.clientWidth - 8),
    height: 260,
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
    scales: { x: { time: true } },
    axes: [{}, { values: (u, ticks) => ticks.map(format), size: 80 }],
    series,
  };
  const chart = new uPlot(options, [xs, ...data.series.map((group) => group[field])], element);
  window.usageCharts[name] = chart;
}

function show(data) {
  const totals = data.totals;
  $("total-cost").textContent = usd(totals.cost_usd);
  $("total-requests").textContent = count(totals.requests);
  $("total-tokens").textContent = `${count(totals.input_tokens)} / ${count(totals.output_tokens)}`;
  $("cache-share").textContent = (totals.cache_read_share * 100).toFixed(1) + " %";
  $("cache-saved").textContent = usd(totals.cache_saved_usd);
  drawChart("spend", $("spend-chart"), data, "cost_usd", usd);
  drawChart("tokens", $("tokens-chart"), data, "tokens", count);
  fillTable(ui.top, data.top_keys, (tr, key) => {
    cell(tr, key.key);
    cell(tr, usd(key.cost_usd), true);
    cell(tr, count(key.requests), true);
    cell(tr, count(key.input_tokens + key.output_tokens), true);
    cell(tr, (key.cache_read_share * 100).toFixed(1) + " %", true);
  });
  fillTable(ui.budgets, data.budgets, (tr, budget) => {
    const money = budget.unit === "usd";
    const format = money ? usd : count;
    cell(tr, budget.key);
    cell(tr, `${budget.window} (${money ? "USD" : "tokens"})`);
    cell(tr, format(budget.used), true);
    cell(tr, format(budget.limit), true);
    const bar = document.createElement("progress");
    bar.max = budget.limit;
    bar.value = Math.min(budget.used, budget.limit);
    cell(tr, "").append(bar);
    cell(tr, budget.resets_at.replace("T", " ").replace("Z", ""));
  });
  ui.noBudgets.hidden = data.budgets.length > 0;
  document.body.dataset.loaded = data.since + "/" + data.until + "/" + data.by;
}

async function load() {
  const key = ui.key.value.trim();
  // sessionStorage only: the key is gone when the tab closes and never reaches a cookie.
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  const query = new URLSearchParams({ since: ui.since.value, until: ui.until.value, by: ui.by.value });
  history.replaceState(null, "", "?" + query);
  try {
    const response = await fetch("usage/api?" + query, { headers: { Authorization: `Bearer ${key}` } });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      showError((body.error && body.error.message) || `HTTP ${response.status}`);
      return;
    }
    showError("");
    show(body);
  } catch (err) {
    showError(`The gateway did not answer: ${err.message}`);
  }
}

function start() {
  const params = new URLSearchParams(location.search);
  const today = new Date();
  const monthAgo = new Date(today.getTime() - 29 * 86400 * 1000);
  ui.since.value = params.get("since") || isoDay(monthAgo);
  ui.until.value = params.get("until") || isoDay(today);
  ui.by.value = params.get("by") || "key";
  ui.key.value = sessionStorage.getItem(KEY_STORAGE) || "";
  ui.form.addEventListener("submit", (event) => {
    event.preventDefault();
    load();
  });
  ui.by.addEventListener("change", load);
  if (ui.key.value) load();
}

start();
