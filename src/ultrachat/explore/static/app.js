// UltraChat explorer UI. Safety rule: dialogue text (and every other value from the API)
// reaches the page only through text nodes (el(), textContent), never through innerHTML.
"use strict";

const $ = (id) => document.getElementById(id);
const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
  "#9c755f", "#bab0ac", "#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
  "#bcbd22", "#393b79", "#637939"];
const FILTERS = ["q", "sector", "topic", "model", "min_rounds", "max_rounds", "min_chars", "max_chars"];
const state = { stats: null, map: null, lastSearch: "#/search" };

// el("a", {href: "#"}, "text", child...): strings become text nodes.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== null && v !== undefined) node.setAttribute(k, String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

async function api(path) {
  const resp = await fetch(path, { headers: { Accept: "application/json" } });
  const body = await resp.json().catch(() => ({ error: `HTTP ${resp.status}` }));
  if (!resp.ok) throw new Error(body.error || `HTTP ${resp.status}`);
  return body;
}

function showError(err) {
  const box = $("error");
  box.textContent = err ? String(err.message || err) : "";
  box.hidden = !err;
}

function show(view) {
  for (const s of document.querySelectorAll(".view")) s.hidden = s.id !== `view-${view}`;
  for (const a of document.querySelectorAll("nav a[data-view]")) {
    a.classList.toggle("active", a.dataset.view === view || (view === "dialogue" && a.dataset.view === "search"));
  }
}

function dialogueHref(id, dup) {
  return `#/d/${encodeURIComponent(id)}` + (dup ? `?dup=${dup}` : "");
}

// ---------- search ----------

function fillFilters(stats) {
  const fill = (select, rows) => {
    for (const [value, count] of rows) {
      if (value === null) continue;
      select.append(el("option", { value }, `${value} (${count.toLocaleString()})`));
    }
  };
  fill($("f-sector"), stats.sectors || []);
  fill($("f-model"), stats.models || []);
  for (const [value] of stats.topics || []) if (value !== null) $("topics").append(el("option", { value }));
}

function formParams() {
  const params = new URLSearchParams();
  for (const name of FILTERS) {
    const input = document.querySelector(`#search-form [name="${name}"]`);
    if (input && input.value.trim()) params.set(name, input.value.trim());
  }
  return params;
}

async function renderSearch(params) {
  show("search");
  for (const name of FILTERS) {
    const input = document.querySelector(`#search-form [name="${name}"]`);
    if (input) input.value = params.get(name) || "";
  }
  const page = Number(params.get("page") || "1");
  const res = await api(`/api/search?${params}`);
  const list = $("results");
  list.replaceChildren();
  for (const r of res.results) {
    const snippet = el("p", { class: "snippet" });
    for (const [text, hit] of r.snippet || []) snippet.append(hit ? el("mark", {}, text) : document.createTextNode(text));
    const badges = el("div", { class: "badges" });
    for (const [k, v] of [["sector", r.sector], ["topic", r.topic], ["model", r.model],
      ["rounds", r.rounds], ["chars", r.chars]]) {
      if (v !== null && v !== undefined) badges.append(el("span", { class: "badge", title: k }, `${k}: ${v}`));
    }
    list.append(el("li", { class: "result" },
      el("a", { class: "result-title", href: dialogueHref(r.id, r.dup) }, r.title || r.id),
      el("span", { class: "result-id" }, r.id), badges, r.snippet ? snippet : null));
  }
  const shown = res.total.toLocaleString() + (res.more ? "+" : "");
  $("search-summary").textContent = res.results.length
    ? `${shown} dialogue${res.total === 1 ? "" : "s"}` + (params.get("q") && res.more
      ? ` (best of the first ${res.ranked.toLocaleString()} matches, by relevance)` : "")
    : "No dialogue matches.";
  const pages = Math.max(1, Math.ceil(Math.min(res.total, params.get("q") ? res.ranked : res.total) / res.per_page));
  $("page-info").textContent = `page ${page} of ${pages.toLocaleString()}${res.more ? "+" : ""}`;
  $("prev").disabled = page <= 1;
  $("next").disabled = page >= pages;
  $("pager").dataset.page = String(page);
  state.lastSearch = `#/search?${params}`;
}

function goSearch(params) {
  location.hash = `#/search?${params}`;
}

// ---------- dialogue ----------

// A safe Markdown subset: fenced code blocks, inline `code`, **bold**, line breaks. Text nodes only.
function renderMarkdown(text) {
  const box = el("div", { class: "md" });
  const parts = text.split(/^```[^\n]*\n?/m);
  parts.forEach((part, i) => {
    if (i % 2 === 1) {
      box.append(el("pre", {}, el("code", {}, part.replace(/\n$/, ""))));
      return;
    }
    for (const para of part.split(/\n{2,}/)) {
      if (!para.trim()) continue;
      const p = el("p");
      para.split("\n").forEach((line, j) => {
        if (j) p.append(el("br"));
        for (const [k, piece] of line.split(/(`[^`]+`|\*\*[^*]+\*\*)/).entries()) {
          if (k % 2 === 0) p.append(document.createTextNode(piece));
          else if (piece.startsWith("`")) p.append(el("code", {}, piece.slice(1, -1)));
          else p.append(el("strong", {}, piece.slice(2, -2)));
        }
      });
      box.append(p);
    }
  });
  return box;
}

async function renderDialogue(id, params) {
  show("dialogue");
  const dup = params.get("dup");
  const d = await api(`/api/dialogues/${encodeURIComponent(id)}` + (dup ? `?dup=${encodeURIComponent(dup)}` : ""));
  $("d-title").textContent = d.data[0].split("\n")[0].slice(0, 160);
  $("d-permalink").setAttribute("href", dialogueHref(d.id, d.dup));
  $("d-permalink").textContent = `permalink: ${d.id}` + (d.same_id > 1 ? ` (${d.dup + 1} of ${d.same_id} with this id)` : "");
  $("d-back").setAttribute("href", state.lastSearch);
  const turns = $("turns");
  turns.replaceChildren();
  d.data.forEach((text, i) => {
    const role = i % 2 === 0 ? "user" : "assistant";
    turns.append(el("div", { class: `bubble ${role}` }, el("div", { class: "role" }, role), renderMarkdown(text)));
  });
  const meta = $("d-meta");
  meta.replaceChildren();
  const rows = [["id", d.id], ["file", `${d.file}:${d.line}`], ...Object.entries(d.meta)];
  for (const [k, v] of rows) {
    meta.append(el("dt", {}, k), el("dd", {}, typeof v === "object" && v !== null ? JSON.stringify(v) : String(v)));
  }
  window.scrollTo(0, 0);
}

// ---------- statistics ----------

function barChart(title, rows) {
  const max = Math.max(1, ...rows.map((r) => r[1]));
  const box = el("div", { class: "chart" }, el("h2", {}, title));
  for (const [label, count] of rows) {
    const bar = el("div", { class: "bar" });
    bar.style.width = `${(100 * count) / max}%`;
    box.append(el("div", { class: "bar-row" }, el("span", { class: "bar-label" }, label === null ? "(none)" : label),
      el("span", { class: "bar-track" }, bar), el("span", { class: "bar-count" }, count.toLocaleString())));
  }
  return box;
}

// The data tooling's figures (`ultrachat stats`): this corpus's row beside the paper's rows.
function toolingTable(cs) {
  const rows = [cs.row, ...((cs.paper && cs.paper.rows) || [])];
  const keys = Object.keys(cs.row);
  const table = el("table", { class: "tooling" },
    el("thead", {}, el("tr", {}, ...keys.map((k) => el("th", {}, k.replace(/_/g, " "))))));
  const body = el("tbody");
  rows.forEach((row, i) => {
    body.append(el("tr", { class: i === 0 ? "ours" : null }, ...keys.map((k) => {
      const v = row[k];
      return el("td", {}, v === null || v === undefined ? "–" : typeof v === "number" ? v.toLocaleString() : v);
    })));
  });
  table.append(body);
  return el("div", { class: "chart" }, el("h2", {}, "Corpus statistics from `ultrachat stats`"), table,
    el("p", { class: "caption" }, [cs.paper && cs.paper.source, cs.command].filter(Boolean).join(" · ")));
}

function renderStats() {
  show("stats");
  const s = state.stats;
  const cards = $("stat-cards");
  cards.replaceChildren();
  const avg = (a, b) => (b ? (a / b).toFixed(1) : "0");
  for (const [label, value] of [["dialogues", s.dialogues.toLocaleString()], ["turns", s.turns.toLocaleString()],
    ["turns per dialogue", avg(s.turns, s.dialogues)], ["characters per dialogue", avg(s.chars, s.dialogues)],
    ["files", s.files.length]]) {
    cards.append(el("div", { class: "card" }, el("div", { class: "card-value" }, value), el("div", {}, label)));
  }
  $("stat-tooling").replaceChildren(...(s.corpus_stats ? [toolingTable(s.corpus_stats)] : []));
  const charts = $("stat-charts");
  charts.replaceChildren(
    barChart("Rounds per dialogue", s.rounds_hist), barChart("Characters per dialogue", s.chars_hist),
    barChart("Sectors", s.sectors), barChart("Topics (top 30)", s.topics.slice(0, 30)),
    barChart("Assistant models", s.models), barChart("Stop reasons", s.stop_reasons),
    barChart("Files", s.files.map(([p, n]) => [p.split("/").slice(-2).join("/"), n])));
}

// ---------- map ----------

const view = { scale: 1, base: 1, ox: 0, oy: 0, hover: -1, drag: null, grid: null };

function colourKey() { return $("colour-by").value; }

function colourOf(i) {
  const m = state.map;
  return PALETTE[m[colourKey()][i] % PALETTE.length];
}

function resetView() {
  const c = $("map-canvas");
  const size = Math.min(c.clientWidth, c.clientHeight);
  view.scale = size * 0.45;
  view.base = view.scale;
  view.ox = c.clientWidth / 2;
  view.oy = c.clientHeight / 2;
  drawMap();
}

function toScreen(i) {
  return [view.ox + state.map.x[i] * view.scale, view.oy - state.map.y[i] * view.scale];
}

function drawMap() {
  const c = $("map-canvas");
  const dpr = window.devicePixelRatio || 1;
  if (c.width !== c.clientWidth * dpr || c.height !== c.clientHeight * dpr) {
    c.width = c.clientWidth * dpr;
    c.height = c.clientHeight * dpr;
  }
  const ctx = c.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, c.clientWidth, c.clientHeight);
  const m = state.map;
  if (!m) return;
  // Dot size: big for small samples, small for 20k points; grows a little as you zoom in.
  const r = Math.min(10, Math.max(2, 300 / Math.sqrt(m.x.length)) * Math.max(1, Math.sqrt(view.scale / view.base)));
  for (let i = 0; i < m.x.length; i++) {
    const [sx, sy] = toScreen(i);
    if (sx < -5 || sy < -5 || sx > c.clientWidth + 5 || sy > c.clientHeight + 5) continue;
    ctx.fillStyle = colourOf(i);
    ctx.fillRect(sx - r / 2, sy - r / 2, r, r);
  }
  if (view.hover >= 0) {
    const [sx, sy] = toScreen(view.hover);
    ctx.strokeStyle = "#000";
    ctx.lineWidth = 2;
    ctx.beginPath();
    ctx.arc(sx, sy, r + 4, 0, 2 * Math.PI);
    ctx.stroke();
  }
}

// Uniform grid over data coordinates: hover lookups touch a few cells, not every point.
function buildGrid() {
  const m = state.map;
  const cells = new Map();
  for (let i = 0; i < m.x.length; i++) {
    const key = `${Math.floor(m.x[i] * 50)},${Math.floor(m.y[i] * 50)}`;
    if (!cells.has(key)) cells.set(key, []);
    cells.get(key).push(i);
  }
  view.grid = cells;
}

function nearest(px, py, radius) {
  const m = state.map;
  const dx = (px - view.ox) / view.scale;
  const dy = (view.oy - py) / view.scale;
  const reach = Math.ceil((radius / view.scale) * 50);
  const cx = Math.floor(dx * 50);
  const cy = Math.floor(dy * 50);
  let best = -1;
  let bestD = radius * radius;
  for (let gx = cx - reach; gx <= cx + reach; gx++) {
    for (let gy = cy - reach; gy <= cy + reach; gy++) {
      for (const i of view.grid.get(`${gx},${gy}`) || []) {
        const [sx, sy] = toScreen(i);
        const d = (sx - px) ** 2 + (sy - py) ** 2;
        if (d <= bestD) { bestD = d; best = i; }
      }
    }
  }
  return best;
}

function renderLegend() {
  const m = state.map;
  const key = colourKey();
  const names = key === "sector" ? m.sectors : m.topics;
  const counts = new Array(names.length).fill(0);
  for (const v of m[key]) counts[v]++;
  const legend = $("map-legend");
  legend.replaceChildren();
  const order = names.map((_, i) => i).sort((a, b) => counts[b] - counts[a]).slice(0, 20);
  for (const i of order) {
    const swatch = el("span", { class: "swatch" });
    swatch.style.background = PALETTE[i % PALETTE.length];
    legend.append(el("li", {}, swatch, `${names[i] === null ? "(none)" : names[i]} (${counts[i]})`));
  }
}

function showTip(i, px, py) {
  const tip = $("map-tip");
  if (i < 0) { tip.hidden = true; return; }
  const m = state.map;
  const s = m.sectors[m.sector[i]];
  const t = m.topics[m.topic[i]];
  tip.replaceChildren(el("strong", {}, m.title[i]), el("div", {}, [s, t].filter((v) => v !== null).join(" · ")),
    el("div", { class: "tip-id" }, m.id[i]));
  tip.style.left = `${px + 14}px`;
  tip.style.top = `${py + 14}px`;
  tip.hidden = false;
}

function setupMap() {
  const c = $("map-canvas");
  const pos = (e) => { const b = c.getBoundingClientRect(); return [e.clientX - b.left, e.clientY - b.top]; };
  c.addEventListener("wheel", (e) => {
    e.preventDefault();
    const [px, py] = pos(e);
    const f = Math.exp(-e.deltaY * 0.0015);
    view.ox = px - (px - view.ox) * f;
    view.oy = py - (py - view.oy) * f;
    view.scale *= f;
    drawMap();
  }, { passive: false });
  c.addEventListener("mousedown", (e) => { view.drag = { start: pos(e), ox: view.ox, oy: view.oy, moved: false }; });
  window.addEventListener("mouseup", () => { setTimeout(() => { view.drag = null; }, 0); });
  c.addEventListener("mousemove", (e) => {
    if (!state.map) return;
    const [px, py] = pos(e);
    if (view.drag && (e.buttons & 1)) {
      const [sx, sy] = view.drag.start;
      if (Math.abs(px - sx) + Math.abs(py - sy) > 3) view.drag.moved = true;
      view.ox = view.drag.ox + px - sx;
      view.oy = view.drag.oy + py - sy;
      drawMap();
      return;
    }
    view.hover = nearest(px, py, 8);
    c.style.cursor = view.hover >= 0 ? "pointer" : "grab";
    showTip(view.hover, px, py);
    drawMap();
  });
  c.addEventListener("mouseleave", () => { view.hover = -1; showTip(-1); drawMap(); });
  c.addEventListener("click", (e) => {
    if (view.drag && view.drag.moved) return;
    const [px, py] = pos(e);
    const i = nearest(px, py, 8);
    if (i >= 0) location.hash = dialogueHref(state.map.id[i], state.map.dup[i]);
  });
  $("colour-by").addEventListener("change", () => { renderLegend(); drawMap(); });
  $("map-reset").addEventListener("click", resetView);
  window.addEventListener("resize", () => { if (!$("view-map").hidden) drawMap(); });
}

async function renderMap() {
  show("map");
  if (!state.map) {
    $("map-info").textContent = "loading…";
    state.map = await api("/api/map");
    buildGrid();
  }
  const m = state.map;
  $("map-info").textContent = `${m.count.toLocaleString()} of ${m.total.toLocaleString()} dialogues (sample); ` +
    "drag to pan, wheel to zoom, click a point to open it";
  renderLegend();
  resetView();
  $("map-canvas").dataset.points = String(m.count);
}

// Screen position of map point i, relative to the canvas: lets scripts (and the tests) aim at points.
window.explorerMap = { point: (i) => toScreen(i), count: () => (state.map ? state.map.x.length : 0) };

// ---------- routing ----------

async function route() {
  showError(null);
  const hash = location.hash || "#/search";
  const [path, query] = hash.slice(1).split("?");
  const params = new URLSearchParams(query || "");
  try {
    if (path.startsWith("/d/")) await renderDialogue(decodeURIComponent(path.slice(3)), params);
    else if (path === "/stats") renderStats();
    else if (path === "/map") await renderMap();
    else await renderSearch(params);
    document.body.dataset.ready = path;
  } catch (err) {
    showError(err);
    document.body.dataset.ready = "error";
  }
}

async function main() {
  $("search-form").addEventListener("submit", (e) => { e.preventDefault(); goSearch(formParams()); });
  for (const id of ["f-sector", "f-model"]) $(id).addEventListener("change", () => goSearch(formParams()));
  const step = (delta) => {
    const params = formParams();
    params.set("page", String(Number($("pager").dataset.page || "1") + delta));
    goSearch(params);
  };
  $("prev").addEventListener("click", () => step(-1));
  $("next").addEventListener("click", () => step(1));
  setupMap();
  try {
    state.stats = await api("/api/stats");
    fillFilters(state.stats);
    $("corpus-size").textContent = `${state.stats.dialogues.toLocaleString()} dialogues`;
  } catch (err) {
    showError(err);
  }
  window.addEventListener("hashchange", route);
  await route();
}

main();
