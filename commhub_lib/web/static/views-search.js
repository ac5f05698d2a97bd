// The search box (docs/search.md): full-text search over the shown network's tasks, messages and replies,
// newest first; a hit that belongs to a task opens that task's dialog. Loaded as its own module by index.html.

import { api, withQuery } from "./api.js";
import { $, h, render, say, timeEl } from "./dom.js";
import { emit, on, state } from "./state.js";

const LIMIT = 50;

function hitItem(hit) {
  const where = hit.to_name === "*" ? `${hit.from_name} → everyone` : `${hit.from_name} → ${hit.to_name}`;
  const body = [
    h("div", { class: "small muted" }, h("span", { class: "badge" }, hit.kind), " ", where, " · ", timeEl(hit.created_at)),
    hit.title ? h("strong", {}, hit.title) : null,
    h("p", { class: "content" }, hit.snippet || ""),
  ];
  if (!hit.task_id) return h("li", { class: "search-hit", "data-testid": "search-hit" }, body);
  return h("li", { class: "search-hit", "data-testid": "search-hit" },
    h("button", { type: "button", class: "search-open", dataset: { key: `hit-${hit.id}`, taskId: hit.task_id },
      title: "open the task", onclick: () => emit("open-task", hit.task_id) }, body));
}

async function runSearch(query) {
  const card = $("search-card");
  const list = $("search-results");
  card.hidden = false;
  say($("search-status"), "searching…");
  try {
    const answer = await api("GET", withQuery("/api/search", { q: query, network_id: state.networkId, limit: LIMIT }));
    const hits = answer.results;
    $("search-count").textContent = `(${hits.length}${hits.length === LIMIT ? "+" : ""})`;
    say($("search-status"), hits.length ? "" : `Nothing found for "${query}".`);
    render(list, JSON.stringify(hits), hits.map(hitItem));
  } catch (err) {
    say($("search-status"), err.message, true);
    render(list, "", []);
  }
}

function closeSearch() {
  $("search-card").hidden = true;
  $("search-input").value = "";
}

function initSearch() {
  $("search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const query = $("search-input").value.trim();
    if (query) runSearch(query);
    else closeSearch();
  });
  $("search-close").addEventListener("click", closeSearch);
  on("network-changed", closeSearch); // hits of another network would open nothing
}

initSearch();
