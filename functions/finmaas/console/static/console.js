/* FinMaaS console: every figure comes from the public API, called with the visitor's key.
 * The key lives in this tab's sessionStorage and travels only as the x-api-key header.
 * Text is always set with textContent: nothing from the API is parsed as HTML. */
"use strict";

const KEY = "finmaas.api-key";
const body = document.body;
const ROOT = body.dataset.root || "";
const main = document.getElementById("main");
window.finmaasCharts = {};  // chart name -> Chart.js instance (tests read their data)

class ApiError extends Error {
  constructor(status, error) {
    super(error && error.message ? error.message : `HTTP ${status}`);
    this.status = status;
    this.code = error && error.code;
    this.details = (error && error.details) || [];
  }
}

function key() { return sessionStorage.getItem(KEY) || ""; }

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function api(path, options = {}) {
  const headers = { "x-api-key": key(), ...(options.headers || {}) };
  if (options.json !== undefined) headers["content-type"] = "application/json";
  for (let attempt = 0; ; attempt++) {
    const response = await fetch(ROOT + path, {
      method: options.method || "GET", headers, cache: "no-store",
      body: options.json !== undefined ? JSON.stringify(options.json) : undefined,
    });
    let payload = null;
    try { payload = await response.json(); } catch (_) { payload = null; }
    const error = payload && payload.error;
    // the plan's rate limit (not its monthly quota): wait as told, then ask again
    if (response.status === 429 && error && error.code === "rate_limited" && attempt < 4) {
      await sleep(1000 * Math.min(Number(response.headers.get("retry-after")) || 1, 5));
      continue;
    }
    if (!response.ok) throw new ApiError(response.status, error);
    return payload;
  }
}

// -- small DOM helpers --------------------------------------------------------------
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = value;
    else if (name === "class") node.className = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function section(title, ...children) {
  return el("section", {}, el("h2", { text: title }), ...children);
}

function table(headers, rows, caption) {
  return el("div", { class: "table-wrap" }, el("table", {},
    caption ? el("caption", { text: caption }) : null,
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, rows.map((r) => el("tr", {}, r.map((c) => el("td", {}, c)))))));
}

function message(text, kind = "info") {
  return el("p", { class: `message ${kind}`, role: kind === "error" ? "alert" : "status", text });
}

function describeError(err) {
  if (err instanceof TypeError && /ISO-8859-1|header/i.test(err.message)) {
    return "This key holds characters no API key has: check what was pasted.";
  }
  if (!(err instanceof ApiError)) return `The API could not be reached: ${err.message}`;
  if (!err.code) return `The API answered HTTP ${err.status} without details; ` +
    "retry in a moment.";
  if (err.status === 401) return `This key was refused (${err.code}): ${err.message}. ` +
    "Check it, or ask your provider for a new one.";
  if (err.status === 403) return `This key's tenant is suspended (${err.code}): ${err.message}`;
  if (err.status === 429) return `Rate limit or quota reached (${err.code}): ${err.message}`;
  return `${err.message} (${err.code || err.status})`;
}

function units(n, unit) { return `${fmt(n)} ${unit}${n === 1 ? "" : "s"}`; }

function fmt(value) {
  if (typeof value === "number") return Number.isInteger(value) ? value.toLocaleString("en") :
    value.toLocaleString("en", { maximumSignificantDigits: 4 });
  if (typeof value === "boolean") return value ? "yes" : "no";
  return String(value);
}

/** Any JSON value as something a person reads: nested objects as definition lists. */
function render(value) {
  if (value === null || value === undefined) return "–";
  if (Array.isArray(value)) {
    if (value.every((v) => typeof v !== "object" || v === null)) return value.map(fmt).join(", ");
    return el("ul", {}, value.map((v) => el("li", {}, render(v))));
  }
  if (typeof value === "object") {
    return el("dl", {}, Object.entries(value).map(([k, v]) =>
      [el("dt", { text: k.replaceAll("_", " ") }), el("dd", {}, render(v))]));
  }
  return fmt(value);
}

function chart(name, canvasLabel, config) {
  const canvas = el("canvas", { role: "img", "aria-label": canvasLabel });
  const holder = el("div", { class: "chart" }, canvas);
  requestAnimationFrame(() => {
    if (window.finmaasCharts[name]) window.finmaasCharts[name].destroy();
    config.options = { responsive: true, maintainAspectRatio: false, animation: false,
                       ...(config.options || {}) };
    window.finmaasCharts[name] = new window.Chart(canvas, config);
  });
  return holder;
}

const PALETTE = ["#1b5e9e", "#d97b00", "#2e8540", "#8e44ad", "#b03a2e", "#5d6d7e", "#117a65"];
const DASHES = [[], [6, 3], [2, 2], [8, 2, 2, 2]];  // told apart without colour too

// -- the key ------------------------------------------------------------------------
const keyForm = document.getElementById("key-form");
const keyInput = document.getElementById("api-key");
const keyStatus = document.getElementById("key-status");

let keyProblem = null;  // why the key in this tab cannot be used right now

async function checkKey() {
  keyProblem = null;
  if (!key()) {
    keyStatus.className = "";
    keyStatus.textContent = "No key yet.";
    return null;
  }
  try {
    const account = await api("/v1/account");
    keyStatus.className = "ok";
    keyStatus.textContent = `Key accepted: tenant ${account.tenant}, plan ${account.plan.name}.`;
    return account;
  } catch (err) {
    keyProblem = describeError(err);
    keyStatus.className = "error";
    keyStatus.textContent = keyProblem;
    return null;
  }
}

keyForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const value = keyInput.value.trim();
  keyInput.value = "";
  if (value) sessionStorage.setItem(KEY, value);
  await start();
});
document.getElementById("forget-key").addEventListener("click", async () => {
  sessionStorage.removeItem(KEY);
  await start();
});

// -- pages ---------------------------------------------------------------------------
function needKey(what) {
  if (keyProblem) return message(`${what[0].toUpperCase()}${what.slice(1)} cannot be ` +
                                 `shown: ${keyProblem}`, "error");
  return message(`Type your API key above to see ${what}. It stays in this tab only.`);
}

function priceText(pricing) {
  const units = { usd_per_1k_predictions: "1,000 predictions",
                  usd_per_1k_explanations: "1,000 explained rows",
                  usd_per_1k_tokens: "1,000 tokens" };
  return Object.entries(pricing || {}).filter(([k]) => units[k])
    .map(([k, v]) => `$${v} per ${units[k]}`).join(" · ");
}

async function modelsPage(account) {
  main.replaceChildren(el("h1", { text: "Models" }));
  if (!account) { main.append(needKey("the catalogue")); return; }
  const { models } = await api("/v1/models");
  main.append(table(["model", "task", "what it does", "price", "production", "aliases"],
    models.map((m) => [
      el("a", { href: `${ROOT}/console/models/${encodeURIComponent(m.name)}`, text: m.name }),
      m.task.replaceAll("_", " "), m.description, priceText(m.pricing),
      `v${m.default_version}`, Object.keys(m.aliases).join(", ")])));
}

function metricsSection(card) {
  const m = card.metrics || {};
  const rows = [];
  if (m.roc_auc !== undefined) {
    const ci = m.roc_auc_ci95 ? ` (95% CI ${m.roc_auc_ci95[0]}–${m.roc_auc_ci95[1]})` : "";
    rows.push(["ROC AUC", `${m.roc_auc}${ci}`]);
  }
  for (const [k, label] of [["pr_auc", "PR AUC"], ["brier", "Brier score"],
    ["brier_of_base_rate", "Brier of the base rate"], ["log_loss", "log loss"],
    ["positive_rate", "positive rate"], ["r2", "R²"], ["rmse", "RMSE"], ["mae", "MAE"]]) {
    if (m[k] !== undefined) rows.push([label, fmt(m[k])]);
  }
  const shown = new Set(["roc_auc", "roc_auc_ci95", "pr_auc", "brier", "brier_of_base_rate",
    "log_loss", "positive_rate", "r2", "rmse", "mae", "calibration", "holdout"]);
  const rest = Object.fromEntries(Object.entries(m).filter(([k]) => !shown.has(k)));
  const out = section("Holdout metrics",
    m.holdout ? el("div", { class: "note" }, el("strong", { text: "Holdout: " }), render(m.holdout))
      : null,
    rows.length ? table(["metric", "value"], rows) : null,
    Object.keys(rest).length ? render(rest) : null);
  if (Array.isArray(m.calibration) && m.calibration.length) {
    const points = m.calibration.map((b) => ({ x: b.mean_predicted, y: b.observed_rate }));
    out.append(el("h3", { text: "Calibration" }), chart("calibration",
      "Calibration: observed rate against mean predicted probability per bin", {
        type: "line",
        data: { datasets: [
          { label: "observed rate per bin", data: points, borderColor: PALETTE[0],
            backgroundColor: PALETTE[0], pointStyle: "circle", pointRadius: 4 },
          { label: "perfect calibration", data: [{ x: 0, y: 0 }, { x: 1, y: 1 }],
            borderColor: PALETTE[5], borderDash: [6, 4], pointRadius: 0 }] },
        options: { scales: { x: { type: "linear", min: 0, max: 1,
                                  title: { display: true, text: "mean predicted" } },
                             y: { min: 0, max: 1,
                                  title: { display: true, text: "observed rate" } } } } }),
    table(["bin", "rows", "mean predicted", "observed rate"],
      m.calibration.map((b) => [b.bin, fmt(b.rows), fmt(b.mean_predicted),
                                fmt(b.observed_rate)])));
  }
  return out;
}

function importanceSection(card) {
  const entries = Object.entries(card.global_importance || {});
  if (!entries.length) return null;
  return section("What drives its predictions",
    el("p", { text: "Mean absolute contribution per field on the holdout (exact attributions)." }),
    chart("importance", "Global importance per field", {
      type: "bar",
      data: { labels: entries.map(([k]) => k),
              datasets: [{ label: "mean |contribution|", data: entries.map(([, v]) => v),
                           backgroundColor: PALETTE[0] }] },
      options: { indexAxis: "y", plugins: { legend: { display: false } } } }));
}

function inputsSection(card) {
  return section("Inputs", table(["field", "type", "required", "allowed", "meaning"],
    card.inputs.map((i) => [
      el("code", { text: i.name }), i.type + (i.unit ? ` (${i.unit})` : ""),
      i.required ? "yes" : "no",
      i.categories ? i.categories.join(", ") :
        i.type === "text" ? `≤ ${i.max_chars} characters, ≤ ${i.max_tokens} tokens` :
        [i.minimum !== undefined ? `≥ ${i.minimum}` : "", i.maximum !== undefined ?
          `≤ ${i.maximum}` : ""].filter(Boolean).join(", ") || "any",
      i.description || ""])));
}

function field(input, example) {
  const id = `field-${input.name}`;
  const value = example ? example[input.name] : undefined;
  let control;
  if (input.type === "category") {
    control = el("select", { id, name: input.name },
      input.required ? null : el("option", { value: "", text: "(not given)" }),
      input.categories.map((c) => el("option", { value: c, text: c, selected: c === value })));
  } else if (input.type === "text") {
    control = el("textarea", { id, name: input.name, rows: 3, maxlength: input.max_chars });
    control.value = value || "";
  } else {
    control = el("input", { id, name: input.name, type: "number",
                            step: input.type === "integer" ? 1 : "any",
                            min: input.minimum, max: input.maximum });
    if (value !== undefined && value !== null) control.value = value;
  }
  return el("div", { class: "field", "data-field": input.name },
    el("label", { for: id, text: input.name + (input.required ? " *" : "") +
                              (input.unit ? ` (${input.unit})` : "") }),
    control, el("p", { class: "field-error", id: `${id}-error`, role: "alert" }));
}

function record(form, card) {
  const out = {};
  for (const input of card.inputs) {
    const raw = form.elements[input.name].value;
    if (raw === "") continue;  // left out: the card's missing_values say what happens
    if (input.type === "number" || input.type === "integer") {
      const n = Number(raw);
      out[input.name] = Number.isFinite(n) ? n : raw;  // the API says what is wrong
    } else out[input.name] = raw;
  }
  return out;
}

function labelsOf(text) {
  return text.split("\n").map((l) => l.trim()).filter(Boolean).map((line) => {
    const at = line.indexOf(":");
    return at < 0 ? { name: line } :
      { name: line.slice(0, at).trim(), description: line.slice(at + 1).trim() };
  });
}

function showFieldErrors(form, err) {
  for (const node of form.querySelectorAll(".field-error")) node.textContent = "";
  for (const d of err.details) {
    const name = d.field && d.field.replace(/\[\d+\]$/, "");  // labels[2] -> labels
    const target = name && form.querySelector(`[data-field="${CSS.escape(name)}"]`);
    const holder = target ? target.querySelector(".field-error") :
      form.querySelector(".form-errors");
    holder.textContent = (holder.textContent ? holder.textContent + " " : "") +
      (d.message || d.code);
  }
}

function waterfall(pred, explanation) {
  const contributions = Object.entries(pred.contributions || {})
    .sort((a, b) => Math.abs(b[1]) - Math.abs(a[1]));
  const bars = [];
  let level = explanation.base_value;
  bars.push({ label: "base value", span: [0, level] });
  for (const [name, c] of contributions) {
    bars.push({ label: name, span: [level, level + c], sign: c });
    level += c;
  }
  bars.push({ label: "score (raw)", span: [0, pred.raw_score] });
  return el("div", {},
    el("h3", { text: `Why: contributions in ${explanation.output_space}` }),
    chart("waterfall", "Waterfall of contributions from the base value to the score", {
      type: "bar",
      data: { labels: bars.map((b) => b.label), datasets: [{
        label: "contribution", data: bars.map((b) => b.span),
        backgroundColor: bars.map((b) => b.sign === undefined ? PALETTE[5] :
          b.sign >= 0 ? PALETTE[4] : PALETTE[2]) }] },
      options: { indexAxis: "y", plugins: { legend: { display: false } } } }),
    table(["field", "contribution", "direction"], contributions.map(([n, c]) =>
      [n, fmt(c), c >= 0 ? "toward the outcome" : "away from it"])));
}

function showAnswer(out, answer, explained, card) {
  const pred = answer.predictions[0];
  const rows = [["model", `${answer.model} v${answer.version}`],
                ["request id", answer.request_id],
                ["billed", `${units(answer.usage.units, answer.usage.kind === "token" ?
                  "token" : "row")} × $${answer.usage.unit_price_usd} = ` +
                  `$${answer.usage.amount_usd}`]];
  if (pred.probability !== undefined) rows.unshift(["probability of " + (pred.event || "the event"),
                                                  fmt(pred.probability)]);
  if (pred.value !== undefined) rows.unshift(["forecast", `${fmt(pred.value)} ${pred.unit || ""}`]);
  if (pred.label !== undefined) rows.unshift(["best label", `${pred.label} (${fmt(pred.score)})`]);
  if (pred.embedding !== undefined) rows.unshift(["embedding",
    `${pred.embedding.length} numbers: ${pred.embedding.slice(0, 4).map(fmt).join(", ")}, …`]);
  out.replaceChildren(el("h3", { text: "Answer" }), table(["", ""], rows));
  if (pred.scores) {
    out.append(table(["label", "probability"], Object.entries(pred.scores)
      .sort((a, b) => b[1] - a[1]).map(([k, v]) => [k, fmt(v)])));
  }
  if (explained && answer.explanation) {
    if (pred.reasons && pred.reasons.length) {
      out.append(el("h3", { text: "Reasons" }),
        el("ol", {}, pred.reasons.map((r) => el("li", { text: r.text }))));
    }
    out.append(waterfall(pred, answer.explanation));
  }
}

function tryIt(card) {
  const explains = Boolean(card.explanation);
  const form = el("form", { id: "try-form", novalidate: true },
    el("p", { text: "The card's example is filled in. Change anything and ask the model; " +
                    "the call is billed to your key like any other." }),
    el("div", { class: "fields" }, card.inputs.map((i) => field(i, card.example))),
    card.task === "text_embedding" ? el("div", { class: "field", "data-field": "labels" },
      el("label", { for: "field-labels",
                    text: "Labels (optional; one per line, name: description)" }),
      el("textarea", { id: "field-labels", name: "labels", rows: 4 }),
      el("p", { class: "field-error", role: "alert" })) : null,
    el("p", { class: "form-errors", role: "alert" }),
    el("div", { class: "actions" },
      el("button", { type: "submit", name: "action", value: "predict", text: "Predict" }),
      explains ? el("button", { type: "submit", name: "action", value: "explain",
                                text: "Predict and explain" }) : null));
  const out = el("div", { id: "try-answer", "aria-live": "polite" });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const action = (event.submitter && event.submitter.value) || "predict";
    const payload = { instances: [record(form, card)] };
    if (form.elements.labels && form.elements.labels.value.trim()) {
      payload.labels = labelsOf(form.elements.labels.value);
    }
    form.querySelector(".form-errors").textContent = "";
    for (const node of form.querySelectorAll(".field-error")) node.textContent = "";
    out.replaceChildren(message("Asking the model…"));
    try {
      const answer = await api(`/v1/models/${encodeURIComponent(card.name)}/${action}`,
                               { method: "POST", json: payload });
      showAnswer(out, answer, action === "explain", card);
    } catch (err) {
      out.replaceChildren(message(describeError(err), "error"));
      if (err instanceof ApiError) showFieldErrors(form, err);
    }
  });
  return section("Try it", form, out);
}

async function modelPage(account) {
  const name = body.dataset.model;
  main.replaceChildren(el("h1", { text: name }));
  if (!account) { main.append(needKey("this model's card")); return; }
  let card;
  try {
    card = await api(`/v1/models/${encodeURIComponent(name)}`);
  } catch (err) { main.append(message(describeError(err), "error")); return; }
  const { models } = await api("/v1/models");
  const entry = models.find((m) => m.name === name) || { versions: [card.version] };
  main.replaceChildren(...[
    el("h1", { text: `${card.name} v${card.version}` }),
    el("p", { class: "lead", text: card.description }),
    section("For whom, and what not",
      table(["", ""], [["intended use", card.intended_use || "–"],
                       ["limitations", card.limitations || "–"],
                       ["price", priceText(card.pricing)],
                       ["versions", entry.versions.map((v) => `v${v}`).join(", ")],
                       ["aliases", Object.entries(card.aliases || {}).map(([a, v]) =>
                         `${a} → ${typeof v === "string" ? "v" + v : JSON.stringify(v)}`)
                         .join(", ")]])),
    inputsSection(card), metricsSection(card),
    card.fairness ? section("Fairness", render(card.fairness)) : null,
    importanceSection(card), tryIt(card)].filter(Boolean));
}

function isoDate(d) { return d.toISOString().slice(0, 10); }

async function usagePage(account) {
  main.replaceChildren(el("h1", { text: "Usage and bill" }));
  if (!account) { main.append(needKey("your usage and invoices")); return; }
  const plan = account.plan;
  const quota = plan.monthly_request_quota;
  main.append(section(`Plan: ${plan.name}`, table(["", ""], [
    ["rate limit", `${plan.rate_limit_rps} requests/s, bursts of ${plan.burst}`],
    ["monthly quota", quota ? `${units(quota, "call")} a month` : "none"],
    ["billed this month", units(account.billed_requests_this_month, "request") +
      (quota ? " (the quota counts every call with your key, this console's reads too, " +
               `so at most ${fmt(Math.max(quota - account.billed_requests_this_month, 0))} ` +
               "are left)" : "")],
    ["included predictions", fmt(plan.included_units)],
    ["discount", `${plan.discount_percent}%`]])));
  const today = new Date();
  const first = new Date(Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), 1));
  const range = el("form", { id: "range-form", class: "inline" },
    el("label", { for: "start", text: "From" }),
    el("input", { id: "start", name: "start", type: "date", value: isoDate(first) }),
    el("label", { for: "end", text: "to" }),
    el("input", { id: "end", name: "end", type: "date", value: isoDate(today) }),
    el("button", { type: "submit", text: "Show" }));
  const usageOut = el("div", { id: "usage-out" });
  range.addEventListener("submit", (event) => {
    event.preventDefault();
    drawUsage(usageOut, range.elements.start.value, range.elements.end.value);
  });
  main.append(section("Daily usage", range, usageOut));
  const invoiceOut = el("div", { id: "invoice-out" });
  const pastOut = el("div", { id: "past-out" });
  main.append(section("This month's invoice", invoiceOut), section("Past months", pastOut));
  await Promise.all([drawUsage(usageOut, isoDate(first), isoDate(today)),
                     drawInvoice(invoiceOut, today), drawPast(pastOut, today)]);
}

async function drawUsage(out, start, end) {
  let report;
  try {
    report = await api(`/v1/usage?start=${encodeURIComponent(start)}&end=${encodeURIComponent(end)}`);
  } catch (err) { out.replaceChildren(message(describeError(err), "error")); return; }
  if (!report.days.length) {
    out.replaceChildren(message("No usage in this range yet."));
    if (window.finmaasCharts.usage) window.finmaasCharts.usage.destroy();
    delete window.finmaasCharts.usage;
    return;
  }
  const days = [...new Set(report.days.map((d) => d.date))].sort();
  const series = [...new Set(report.days.map((d) => `${d.model} (${d.kind})`))].sort();
  const datasets = series.map((s, i) => ({
    label: s, backgroundColor: PALETTE[i % PALETTE.length], borderColor: "#222",
    borderWidth: 1, borderDash: DASHES[i % DASHES.length],
    data: days.map((day) => report.days.filter((d) => d.date === day &&
      `${d.model} (${d.kind})` === s).reduce((n, d) => n + d.requests, 0)) }));
  const totals = Object.entries(report.totals.units).map(([u, n]) => units(n, u)).join(", ");
  out.replaceChildren(
    el("p", { text: `${units(report.totals.requests, "request")}, ${totals}, ` +
                    `$${report.totals.amount_usd} from ${report.start} to ${report.end}.` }),
    chart("usage", "Requests per day, stacked by model", {
      type: "bar", data: { labels: days, datasets },
      options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true,
                 title: { display: true, text: "requests" } } } } }),
    table(["date", "model", "version", "kind", "requests", "units", "amount (USD)"],
      report.days.map((d) => [d.date, d.model, d.version, d.kind, fmt(d.requests),
                              units(d.units, d.unit), d.amount_usd])));
}

function invoiceTable(invoice) {
  const lines = invoice.lines.map((l) => [l.model, `v${l.version}`, l.kind, fmt(l.requests),
    units(l.units, l.unit), l.unit_price_usd, l.amount_usd]);
  const inc = invoice.included_units;
  return el("div", {},
    table(["model", "version", "kind", "requests", "units", "unit price (USD)", "amount (USD)"],
          lines, `Invoice ${invoice.month} (${invoice.status}), plan ${invoice.plan}`),
    table(["", "USD"], [["subtotal", invoice.subtotal_usd],
      [`included units (${fmt(inc.used)} of ${fmt(inc.allowance)})`, `-${inc.credit_usd}`],
      [`discount (${invoice.discount.percent}%)`, `-${invoice.discount.amount_usd}`],
      [el("strong", { text: "total" }), el("strong", { text: invoice.total_usd })]]));
}

function month(d, back = 0) {
  const m = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth() - back, 1));
  return m.toISOString().slice(0, 7);
}

async function drawInvoice(out, today) {
  try {
    out.replaceChildren(invoiceTable(await api(`/v1/invoices/${month(today)}`)));
  } catch (err) { out.replaceChildren(message(describeError(err), "error")); }
}

async function drawPast(out, today) {
  const rows = [];
  for (let back = 1; back <= 3; back++) {
    try {
      const inv = await api(`/v1/invoices/${month(today, back)}`);
      rows.push([inv.month, inv.status, fmt(inv.lines.reduce((n, l) => n + l.requests, 0)),
                 inv.total_usd]);
    } catch (err) {
      rows.push([month(today, back), el("span", { class: "error-text",
                                                  text: describeError(err) }), "–", "–"]);
    }
  }
  out.replaceChildren(table(["month", "status", "requests", "total (USD)"], rows));
}

async function start() {
  body.dataset.ready = "false";
  const account = await checkKey();
  const page = { models: modelsPage, model: modelPage, usage: usagePage }[body.dataset.page];
  try {
    await page(account);
  } catch (err) {
    main.append(message(describeError(err), "error"));
  }
  body.dataset.ready = "true";  // for people's scripts and the browser tests
}

start();
