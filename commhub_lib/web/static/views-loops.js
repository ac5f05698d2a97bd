// The loop guard's notices under "Needs you" (docs/loop-guard.md): a loop_broken event means the hub refused an
// agent's tasks and messages to another agent, most likely two agents answering each other for ever. The list comes
// from GET /api/needs (read from the hub's database, so a notice is there after a reload or a later visit): one line
// per pair, its newest cut and how many. Dismissing one is remembered in this browser (localStorage) until the pair
// is cut again.

import { $, h, timeEl } from "./dom.js";
import { state } from "./state.js";

const STORAGE_KEY = "commhub.loops-dismissed";

function dismissed() {
  try {
    return JSON.parse(localStorage.getItem(STORAGE_KEY) || "{}") || {};
  } catch {
    return {};
  }
}

function pairKey(loop) {
  return [state.user?.username || "", loop.network_id, loop.from, loop.to].join("\u0000");
}

function dismiss(loop) {
  const all = dismissed();
  all[pairKey(loop)] = loop.event_id;
  try { localStorage.setItem(STORAGE_KEY, JSON.stringify(all)); } catch { /* kept for this page only */ }
}

/** The loops to show: those not dismissed since their newest cut. */
export function visibleLoops(loops) {
  const all = dismissed();
  return loops.filter((loop) => (all[pairKey(loop)] || 0) < loop.event_id);
}

function loopItem(loop, onDismiss, showNetwork) {
  const text = `${loop.from} → ${loop.to}: more than ${loop.limit} tasks and messages a minute; the hub refused them `
    + `for ${loop.retry_after} s${loop.cuts > 1 ? ` (cut ${loop.cuts} times)` : ""}. Look at what they are telling `
    + "each other.";
  return h("li", { class: "loop-notice", dataset: { from: loop.from, to: loop.to, eventId: String(loop.event_id) } },
    h("span", { class: "feed-time small muted" }, timeEl(loop.at)),
    showNetwork ? h("span", { class: "badge" }, loop.network_name) : null,
    h("span", { class: "loop-text" }, text),
    h("button", { type: "button", class: "link small", dataset: { key: `dismiss-${loop.event_id}` },
      onclick: () => { dismiss(loop); onDismiss(); } }, "dismiss"));
}

/** The loop notices as list items (`onDismiss` redraws). */
export function loopItems(loops, onDismiss, showNetwork) {
  return loops.map((loop) => loopItem(loop, onDismiss, showNetwork));
}

/** Show the count of the loops part. */
export function showLoopCount(n) {
  $("loops-count").textContent = n ? String(n) : "";
}
