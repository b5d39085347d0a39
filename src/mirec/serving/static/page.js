// The page of `mirec serve`: pick a user or build a history, then show its interests.
// Every element is built with textContent and setAttribute: ids and titles come from user
// data and are never parsed as HTML.
"use strict";

// matplotlib's tab10, so that colours match `mirec inspect --plot`
const COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                 "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
const SVG = "http://www.w3.org/2000/svg";
const HISTORY_SHOWN = 8;  // history items listed per interest before "more"

const $ = (id) => document.getElementById(id);

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "text") node.textContent = value;
    else if (key === "style") {
      for (const [name, v] of Object.entries(value)) node.style.setProperty(name, v);
    }
    else node.setAttribute(key, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

const percent = (share) => `${Math.round(share * 100)}%`;
const label = (row) => row.title || `item ${row.item}`;
const plural = (n, noun) => `${n} ${noun}${n === 1 ? "" : "s"}`;

// -- talking to the server ---------------------------------------------------------------

async function getJSON(url, options = {}) {
  const response = await fetch(url, options);
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: described below by the status alone
  }
  if (!response.ok) throw new Error(errorText(body, response.status));
  return body;
}

function errorText(body, status) {
  const detail = body && body.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {  // FastAPI's validation errors
    return detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ");
  }
  return `the server answered ${status}`;
}

// -- messages ----------------------------------------------------------------------------

function showMessage(text, kind = "error") {
  const box = $("message");
  box.textContent = text;
  box.className = `message ${kind}`;
  box.hidden = false;
}

function hideMessage() {
  $("message").hidden = true;
}

// -- a search box with suggestions -------------------------------------------------------

// input: the text box; list: its listbox; fetchRows(query) -> rows; render(row) -> nodes;
// choose(row) when a suggestion is picked; enter(text) when Enter is pressed without one.
function combobox({ input, list, fetchRows, render, choose, enter }) {
  let rows = [];
  let active = -1;
  let pending = null;
  let timer = null;

  // closing also drops a search still on its way, so that it cannot reopen the list
  function close() {
    clearTimeout(timer);
    if (pending) pending.abort();
    list.hidden = true;
    input.setAttribute("aria-expanded", "false");
    active = -1;
  }

  function highlight(index) {
    active = index;
    [...list.children].forEach((li, i) => li.setAttribute("aria-selected", String(i === index)));
    if (index >= 0) list.children[index].scrollIntoView({ block: "nearest" });
  }

  function show(found) {
    rows = found;
    list.replaceChildren(...rows.map((row, i) => {
      const li = el("li", { role: "option", id: `${list.id}-${i}`, "aria-selected": "false" },
                    ...render(row));
      // mousedown, not click: it comes before the input loses focus and closes the list
      li.addEventListener("mousedown", (event) => {
        event.preventDefault();
        pick(i);
      });
      return li;
    }));
    if (rows.length === 0) list.append(el("li", { class: "empty", text: "No match" }));
    list.hidden = false;
    input.setAttribute("aria-expanded", "true");
    active = -1;
  }

  function pick(i) {
    close();
    choose(rows[i]);
  }

  async function update() {
    const query = input.value.trim();
    if (pending) pending.abort();
    pending = new AbortController();
    try {
      show(await fetchRows(query, pending.signal));
    } catch (error) {
      if (error.name !== "AbortError") showMessage(error.message);
    }
  }

  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(update, 120);
  });
  input.addEventListener("focus", update);  // an empty box suggests too: a list to pick from
  input.addEventListener("blur", close);
  input.addEventListener("keydown", (event) => {
    const open = !list.hidden && rows.length > 0;
    if (event.key === "ArrowDown" && open) {
      highlight((active + 1) % rows.length);
    } else if (event.key === "ArrowUp" && open) {
      highlight(active <= 0 ? rows.length - 1 : active - 1);
    } else if (event.key === "Enter") {
      if (open && active >= 0) pick(active);
      else if (input.value.trim()) {
        close();
        enter(input.value.trim());
      }
    } else if (event.key === "Escape") {
      close();
      return;
    } else {
      return;
    }
    event.preventDefault();
  });
}

// -- the history being built -------------------------------------------------------------

const typed = [];  // {id, title}: the history being built, oldest first

function drawChips() {
  $("history-chips").replaceChildren(...typed.map((entry, i) => {
    const remove = el("button", { type: "button", class: "chip-remove",
                                  "aria-label": `Remove ${entry.title || entry.id}`, text: "×" });
    remove.addEventListener("click", () => {
      typed.splice(i, 1);
      drawChips();
    });
    return el("li", { class: "chip", title: `item ${entry.id}` },
              el("span", { text: entry.title || `item ${entry.id}` }), remove);
  }));
  $("explain-items").disabled = typed.length === 0;
  $("clear-items").disabled = typed.length === 0;
}

function addToHistory(id, title = "") {
  typed.push({ id, title });
  drawChips();
}

// -- opening a user or a history ---------------------------------------------------------

async function openUser(user, push = true) {
  if (push) setLocation({ user });
  await explain(`/api/explain?user=${encodeURIComponent(user)}`);
}

async function openItems(ids, push = true) {
  if (push) setLocation({ items: ids.join(",") });
  await explain("/api/explain", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ items: ids }),
  });
}

function setLocation(params) {
  const url = `${location.pathname}?${new URLSearchParams(params)}`;
  window.history.pushState(params, "", url);
}

async function explain(url, options) {
  showMessage("Explaining…", "info");
  $("report").setAttribute("aria-busy", "true");
  try {
    const report = await getJSON(url, options);
    drawReport(report);
    if (report.unknown_items.length > 0) {
      showMessage(`Not in the catalogue, left out: ${report.unknown_items.join(", ")}`, "warning");
    } else {
      hideMessage();
    }
  } catch (error) {
    $("report").hidden = true;
    showMessage(error.message);
  } finally {
    $("report").removeAttribute("aria-busy");
  }
}

function openFromLocation() {
  const params = new URLSearchParams(location.search);
  const user = params.get("user");
  const items = params.get("items");
  if (user !== null) {
    $("user-search").value = user;
    openUser(user, false);
  } else if (items !== null) {
    const ids = items.split(",").map((s) => s.trim()).filter((s) => s);
    typed.splice(0, typed.length, ...ids.map((id) => ({ id, title: "" })));
    drawChips();
    openItems(ids, false);
  } else {
    $("report").hidden = true;
    hideMessage();
  }
}

// -- the report --------------------------------------------------------------------------

function drawReport(report) {
  // colour by position among the active interests, as `mirec inspect --plot` does
  const colourOf = new Map(report.interests.map((interest, n) => [interest.index,
                                                                  COLOURS[n % COLOURS.length]]));
  const who = report.user !== null ? `User ${report.user}` : "A history of items";
  $("report-title").textContent = who;
  $("report-summary").textContent = [
    `${plural(report.history.length, "history item")} read by the model`,
    plural(report.interests.length, "interest"),
    `${report.model} on ${report.dataset}`,
  ].join(" · ");
  document.title = `mirec · ${who}`;
  fillChipTitles(report);

  $("overall").replaceChildren(...report.recommendations.map((row, i) =>
    itemRow(row, i + 1, score(row), colourOf.get(row.interest))));
  $("interests").replaceChildren(...report.interests.map((interest) =>
    interestCard(interest, colourOf.get(interest.index))));
  drawMap($("map"), report, colourOf);
  $("map-legend").replaceChildren(
    ...report.interests.map((interest) => el("li", { class: "legend-interest" },
      el("span", { class: "swatch", style: { background: colourOf.get(interest.index) } }),
      el("span", { text: `${interest.index}: ${interest.name}` }))),
    el("li", { class: "legend-shapes muted", text: "★ interest   ● history item   ◇ recommended" }),
  );
  $("report").hidden = false;
}

// titles for chips opened from ?items=, which come with ids only
function fillChipTitles(report) {
  const titles = new Map();
  for (const interest of report.interests) {
    for (const row of interest.history) titles.set(row.item, row.title);
  }
  let changed = false;
  for (const entry of typed) {
    if (!entry.title && titles.get(String(entry.id))) {
      entry.title = titles.get(String(entry.id));
      changed = true;
    }
  }
  if (changed) drawChips();
}

// one line of an item list: rank, the interest's dot (if any), title, and a value at the right
function itemRow(row, rank, value, colour) {
  return el("li", { class: "item", "data-item": row.item },
    el("span", { class: "rank", text: `${rank}.` }),
    colour ? el("span", { class: "dot", style: { background: colour } }) : null,
    el("span", { class: "item-title", text: label(row), title: `item ${row.item}` }),
    value);
}

const score = (row) => el("span", { class: "item-value", text: row.weight.toFixed(2) });

// a history item's share of routing to its interest, as a small bar
function routing(row) {
  const meter = el("span", { class: "meter", title: `${percent(row.weight)} of its routing` },
    el("span", { style: { width: percent(row.weight) } }));
  return el("span", { class: "item-value" }, meter);
}

function interestCard(interest, colour) {
  const shown = interest.history.slice(0, HISTORY_SHOWN);
  const rest = interest.history.slice(HISTORY_SHOWN);
  const historyList = interest.history.length === 0
    ? el("p", { class: "muted small", text: "No history item routes here." })
    : el("ol", { class: "items" }, ...shown.map((row, i) => itemRow(row, i + 1, routing(row))));
  const more = rest.length === 0 ? null : el("details", {},
    el("summary", { text: `${rest.length} more` }),
    el("ol", { class: "items" },
       ...rest.map((row, i) => itemRow(row, HISTORY_SHOWN + i + 1, routing(row)))));
  const card = el("article", { class: "card interest", "data-interest": String(interest.index),
                               style: { "--c": colour } },
    el("header", {},
      el("span", { class: "star", style: { color: colour }, text: "★", "aria-hidden": "true" }),
      el("div", {},
        el("div", { class: "kicker",
                    text: `Interest ${interest.index} · ${percent(interest.share)} of the history`
                          + ` · ${plural(interest.history.length, "item")}`
                          + (interest.alignment == null ? ""
                             : ` · ${percent(interest.alignment)} aligned`),
                    title: "alignment: share of its top 10 carrying one of its three top categories" }),
        el("h3", { class: "interest-name", text: interest.name }))),
    el("div", { class: "share", "aria-hidden": "true" },
      el("span", { style: { width: percent(interest.share), background: colour } })),
    el("div", { class: "columns" },
      el("section", {}, el("h4", { text: "In the history", title: "share of routing" }),
         historyList, more),
      el("section", {}, el("h4", { text: "Recommended for this interest" }),
         el("ol", { class: "items recommendations" },
            ...interest.recommendations.map((row, i) => itemRow(row, i + 1, score(row)))))));
  card.addEventListener("mouseenter", () => focusInterest(interest.index));
  card.addEventListener("mouseleave", () => focusInterest(null));
  return card;
}

// -- the map -----------------------------------------------------------------------------

function drawMap(map, report, colourOf) {
  const [width, height, pad] = [560, 400, 26];
  const points = [...report.map.history, ...report.map.interests, ...report.map.recommendations];
  const xs = points.map((p) => p[0]);
  const ys = points.map((p) => p[1]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  // one scale for both axes: distances on the map are distances between the vectors
  const scale = Math.min((width - 2 * pad) / (x1 - x0 || 1), (height - 2 * pad) / (y1 - y0 || 1));
  const cx = (x0 + x1) / 2;
  const cy = (y0 + y1) / 2;
  const at = ([x, y]) => [width / 2 + (x - cx) * scale, height / 2 - (y - cy) * scale];
  const tip = (node, text) => {
    const title = svg("title");
    title.textContent = text;
    node.append(title);
    return node;
  };

  map.replaceChildren();
  map.append(svg("rect", { x: 0.5, y: 0.5, width: width - 1, height: height - 1,
                           class: "map-frame" }));
  const [ox, oy] = at([0, 0]);  // the mean of the history and the interests
  map.append(svg("line", { x1: ox, y1: 0, x2: ox, y2: height, class: "map-axis" }),
             svg("line", { x1: 0, y1: oy, x2: width, y2: oy, class: "map-axis" }));

  report.recommendations.forEach((row, i) => {
    const [x, y] = at(report.map.recommendations[i]);
    map.append(tip(svg("rect", {
      x: x - 4.5, y: y - 4.5, width: 9, height: 9, transform: `rotate(45 ${x} ${y})`,
      class: "map-recommendation", stroke: colourOf.get(row.interest) || "#555",
      "data-interest": String(row.interest),
    }), `recommended #${i + 1}: ${label(row)}`));
  });
  const titles = new Map();
  for (const interest of report.interests) {
    for (const row of interest.history) titles.set(row.item, row.title);
  }
  report.history.forEach((item, i) => {
    const [x, y] = at(report.map.history[i]);
    const interest = report.map.assignment[i];
    map.append(tip(svg("circle", {
      cx: x, cy: y, r: 5, class: "map-history", fill: colourOf.get(interest),
      "data-interest": String(interest),
    }), `${titles.get(item) || `item ${item}`} (interest ${interest})`));
  });
  report.interests.forEach((interest, n) => {
    const [x, y] = at(report.map.interests[n]);
    map.append(tip(svg("path", {
      d: starPath(x, y, 13, 5.5), class: "map-interest", fill: colourOf.get(interest.index),
      "data-interest": String(interest.index),
    }), `interest ${interest.index}: ${interest.name}`));
  });
}

function starPath(x, y, outer, inner) {
  const corners = [];
  for (let i = 0; i < 10; i++) {
    const r = i % 2 === 0 ? outer : inner;
    const angle = -Math.PI / 2 + (i * Math.PI) / 5;
    corners.push(`${(x + r * Math.cos(angle)).toFixed(2)},${(y + r * Math.sin(angle)).toFixed(2)}`);
  }
  return `M${corners.join("L")}Z`;
}

function focusInterest(index) {
  for (const node of $("map").querySelectorAll("[data-interest]")) {
    node.classList.toggle("faded", index !== null && node.dataset.interest !== String(index));
  }
}

// -- wiring ------------------------------------------------------------------------------

function start() {
  combobox({
    input: $("user-search"),
    list: $("user-suggestions"),
    fetchRows: (q, signal) => getJSON(`/api/users?q=${encodeURIComponent(q)}&limit=20`,
                                      { signal }),
    render: (user) => [el("span", { class: "option-main", text: `user ${user.id}` }),
                       el("span", { class: "option-side",
                                    text: plural(user.history, "item") })],
    choose: (user) => {
      $("user-search").value = String(user.id);
      openUser(user.id);
    },
    enter: (text) => openUser(text),
  });
  combobox({
    input: $("item-search"),
    list: $("item-suggestions"),
    fetchRows: (q, signal) => getJSON(`/api/items?q=${encodeURIComponent(q)}&limit=20`,
                                      { signal }),
    render: (item) => [el("span", { class: "option-main", text: item.title || `item ${item.id}` }),
                       el("span", { class: "option-side",
                                    text: [`#${item.id}`, ...item.categories].join(" · ") })],
    choose: (item) => {
      $("item-search").value = "";
      addToHistory(item.id, item.title);
    },
    // typed ids, separated by commas or spaces
    enter: (text) => {
      $("item-search").value = "";
      for (const id of text.split(/[\s,]+/).filter((s) => s)) addToHistory(id);
    },
  });
  $("explain-items").addEventListener("click", () => {
    $("user-search").value = "";
    openItems(typed.map((entry) => entry.id));
  });
  $("clear-items").addEventListener("click", () => {
    typed.splice(0, typed.length);
    drawChips();
  });
  window.addEventListener("popstate", openFromLocation);
  openFromLocation();
}

start();
