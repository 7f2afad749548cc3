// The textcnn web page: asks /v1/explain and draws bars, highlights and the shape walk-through.
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = { meta: null, exp: null, label: null, seq: 0 };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "style") node.style.cssText = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

const fmt = (x, d = 3) => (x >= 0 ? "+" : "") + x.toFixed(d);
const shape = (s) => s.join(" \u00d7 ");

// Red (against) through white to green (for), by |score| relative to the largest.
function colour(score, scale) {
  if (!scale || !score) return "transparent";
  const a = Math.min(1, Math.abs(score) / scale);
  const base = score > 0 ? [46, 160, 67] : [207, 34, 46];
  const [r, g, b] = base.map((c) => Math.round(255 + (c - 255) * a));
  return `rgb(${r}, ${g}, ${b})`;
}

async function loadMeta() {
  const res = await fetch("/v1/metadata");
  state.meta = await res.json();
  const m = state.meta, c = m.config;
  $("#model-info").textContent =
    `${m.labels.length} classes \u00b7 vocabulary ${m.vocab_size.toLocaleString()} \u00b7 ` +
    `windows ${c.window_sizes.join(", ")} \u00d7 ${c.feature_size} filters \u00b7 ` +
    `${m.parameters.toLocaleString()} parameters \u00b7 textcnn ${m.versions.textcnn}`;
}

async function explain() {
  const text = $("#text").value;
  const seq = ++state.seq;
  document.body.dataset.state = "busy";
  $("#status").textContent = "\u2026";
  const res = await fetch("/v1/explain", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ texts: [text] }),
  });
  const body = await res.json();
  if (seq !== state.seq) return; // a newer request is on its way
  if (!res.ok) {
    $("#status").textContent = body.detail && body.detail.toString();
    document.body.dataset.state = "error";
    return;
  }
  state.exp = body.explanations[0];
  const top = state.exp.prediction.top_k[0].label;
  if (state.label === null || !state.exp.classes.some((c) => String(c.label) === state.label)) state.label = String(top);
  $("#status").textContent = "";
  render();
  document.body.dataset.state = "ready";
}

function render() {
  $("#results").hidden = false;
  $("#hint").hidden = true;
  renderBars();
  renderHighlights();
  renderWalk();
}

function renderBars() {
  const bars = $("#bars");
  bars.replaceChildren();
  const classes = [...state.exp.classes].sort((a, b) => b.probability - a.probability);
  for (const c of classes) {
    const label = String(c.label);
    const row = el("button", { class: "bar" + (label === state.label ? " chosen" : ""), type: "button",
      "data-label": label, "data-probability": c.probability.toFixed(6) },
      el("span", { class: "bar-label" }, label),
      el("span", { class: "bar-track" }, el("span", { class: "bar-fill", style: `width: ${(100 * c.probability).toFixed(2)}%` })),
      el("span", { class: "bar-value mono" }, (100 * c.probability).toFixed(1) + "%"));
    row.addEventListener("click", () => { state.label = label; render(); });
    bars.append(row);
  }
  const n = state.exp.classes.length;
  $("#prob-note").textContent = state.meta && state.meta.multi_label
    ? `Each label's probability is the sigmoid of its logit; labels above their tuned thresholds are predicted.`
    : `Probabilities: softmax over the ${n} logits (last row of the walk-through below).`;
}

function chosenClass() {
  return state.exp.classes.find((c) => String(c.label) === state.label);
}

function renderHighlights() {
  const exp = state.exp, cls = chosenClass();
  $("#chosen-class").textContent = state.label;
  const box = $("#highlighted");
  box.replaceChildren();
  const scale = Math.max(0, ...cls.token_scores.map(Math.abs));
  let pos = 0;
  exp.tokens.forEach((t, i) => {
    box.append(exp.text.slice(pos, t.start));
    const s = cls.token_scores[i];
    const strong = scale && Math.abs(s) / scale > 0.55;
    box.append(el("span", { class: "tok" + (strong ? " strong" : "") + (t.known ? "" : " unk"),
      "data-index": i, "data-score": s.toFixed(6), title: `${t.token}: ${fmt(s, 4)}${t.known ? "" : " (unknown word)"}`,
      style: `background: ${colour(s, scale)}` }, exp.text.slice(t.start, t.end)));
    pos = t.end;
  });
  if (pos < exp.text.length) box.append(el("span", { class: "cut" }, exp.text.slice(pos)));
  if (exp.truncated) box.append(el("div", { class: "muted small" }, `(only the first ${exp.tokens.length} of ${exp.n_tokens} tokens are read: max_text_len)`));
  const channel = cls.channel_ngrams ? cls.channel_ngrams.reduce((a, g) => a + g.contribution, 0) : null;
  $("#logit-sum").textContent = channel === null
    ? `logit ${fmt(cls.logit)} = bias ${fmt(cls.bias)} + n-grams ${fmt(cls.logit - cls.bias)}`
    : `logit ${fmt(cls.logit)} = bias ${fmt(cls.bias)} + convolution n-grams ${fmt(cls.logit - cls.bias - channel)}` +
      ` + n-gram channel ${fmt(channel)}`;
  renderNgrams(cls);
}

// The convolutions' n-grams (filters won), and the n-gram channel's (each n-gram's share of the mean bag).
function renderNgrams(cls) {
  ngramTable($("#ngrams"), cls.ngrams, "filters", (g) => g.filters);
  const channel = $("#channel-ngrams");
  channel.hidden = !cls.channel_ngrams;
  if (cls.channel_ngrams) ngramTable(channel, cls.channel_ngrams, "n-gram channel", () => "bag");
}

function ngramTable(table, ngrams, source, sourceOf) {
  table.replaceChildren(el("tr", {}, el("th", {}, "n-gram"), el("th", {}, source), el("th", {}, "contribution")));
  const pos = ngrams.filter((g) => g.contribution > 0).slice(0, 5);
  const neg = ngrams.filter((g) => g.contribution < 0).slice(-3).reverse();
  const scale = Math.max(0, ...ngrams.map((g) => Math.abs(g.contribution)));
  for (const g of [...pos, ...neg]) {
    table.append(el("tr", { class: "ngram", "data-contribution": g.contribution.toFixed(6) },
      el("td", {}, el("span", { class: "chip", style: `background: ${colour(g.contribution, scale)}` }, g.text)),
      el("td", { class: "mono" }, sourceOf(g)),
      el("td", { class: "mono " + (g.contribution > 0 ? "pos-text" : "neg-text") }, fmt(g.contribution))));
  }
}

const ngramText = (g) => (g.padding_only ? "(padding)" : g.text);

function walkRow(step, shp, ...detail) {
  return el("tr", {}, el("td", { class: "step" }, step), el("td", { class: "mono shape" }, shp), el("td", {}, ...detail));
}

function renderWalk() {
  const exp = state.exp, w = exp.walk, tbody = $("#walk tbody");
  const T = w.token_ids_shape[1], E = w.embedding_shape[2], n = exp.tokens.length;
  const chips = el("span", { class: "token-chips" },
    ...exp.tokens.map((t) => el("span", { class: "chip" + (t.known ? "" : " unk"), title: t.known ? "" : "unknown word" }, t.token)));
  const padNote = T > n ? ` (${n} tokens, padded with ${T - n} to the widest window)` : ` tokens`;
  const rows = [
    walkRow("tokenize", `${n} tokens`, chips),
    walkRow("token ids", shape(w.token_ids_shape), `T = ${T}${padNote}`),
    walkRow("embedding", shape(w.embedding_shape), `each token \u2192 a ${E}-number vector: a ${T} \u00d7 ${E} matrix`),
    walkRow("permute(0, 2, 1)", shape(w.permuted_shape), "Conv1d slides over the last dimension, so time goes last"),
  ];
  for (const b of w.branches) {
    const L = b.conv_shape[2];
    const masked = L > b.text_windows ? ` (${L - b.text_windows} start too late and run into padding: masked out of the max)` : "";
    rows.push(walkRow(`conv k=${b.window}`, shape(b.conv_shape),
      `${b.conv_shape[1]} filters, each over ${b.window} consecutive tokens: ${T} \u2212 ${b.window} + 1 = ${L} window${L === 1 ? "" : "s"}${masked}`));
    const best = ngramText(b.best_ngram);
    const common = b.most_common_ngram
      ? [" \u00b7 most filters (", el("b", {}, b.most_common_ngram.filters), ") won by ", el("span", { class: "chip" }, ngramText(b.most_common_ngram))]
      : [];
    rows.push(walkRow(`ReLU, max over time k=${b.window}`, shape(b.pooled_shape),
      `${b.active_filters} of ${b.pooled_shape[1]} filters fire \u00b7 strongest: #${b.best_filter} = `,
      el("b", { class: "mono" }, b.best_value.toFixed(3)), " on ", el("span", { class: "chip" }, best), ...common));
  }
  rows.push(walkRow("cat(dim=1)", shape(w.concat_shape), `${w.branches.length} branches \u00d7 ${w.branches[0].pooled_shape[1]} pooled values`));
  const logits = el("span", { class: "logits" }, ...w.labels.map((label, i) =>
    el("span", { class: "chip" + (String(label) === state.label ? " chosen" : "") }, `${label} ${fmt(w.logits[i], 2)}`)));
  rows.push(walkRow("dropout (off), fc \u2192 logits", shape([1, w.labels.length]), logits));
  tbody.replaceChildren(...rows);
}

let timer = null;
$("#text").addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(explain, 350); });
const explainNow = () => { clearTimeout(timer); explain(); };
$("#text").addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) explainNow(); });
$("#go").addEventListener("click", explainNow);
loadMeta().then(() => { document.body.dataset.state = "idle"; });
