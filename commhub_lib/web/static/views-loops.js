// The loop guard's notices on the Overview: an EVENT.LOOP_BROKEN (docs/loop-guard.md) means the hub refused an
// agent's tasks and messages to another agent, most likely two agents answering each other for ever. One line per
// pair (a later cut of the same pair updates it), kept until the person dismisses it or shows another network.

import { $, clock, h } from "./dom.js";

const notices = new Map(); // "from\u0000to" -> {li, cuts}

function show() {
  const card = $("loops-card");
  card.hidden = notices.size === 0;
  $("loops-count").textContent = notices.size ? String(notices.size) : "";
}

/** Show (or update) the notice for one loop_broken event ({type, id, alias, data}). */
export function noteLoopBroken(ev) {
  const data = ev.data || {};
  const from = data.from || "?";
  const to = data.to || ev.alias || "?";
  const key = `${from}\u0000${to}`;
  const old = notices.get(key);
  const cuts = old ? old.cuts + 1 : 1;
  const text = `${from} → ${to}: more than ${data.limit} tasks and messages a minute; the hub refuses them for `
    + `${data.retry_after} s${cuts > 1 ? ` (cut ${cuts} times)` : ""}. Look at what they are telling each other.`;
  const li = h("li", { class: "loop-notice", dataset: { from, to } },
    h("span", { class: "feed-time small muted" }, clock()),
    h("span", { class: "loop-text" }, text),
    h("button", { type: "button", class: "link small", onclick: () => { li.remove(); notices.delete(key); show(); } },
      "dismiss"));
  if (old) old.li.replaceWith(li); else $("loops").prepend(li);
  notices.set(key, { li, cuts });
  show();
}

/** Forget every notice (another network is shown). */
export function clearLoops() {
  notices.clear();
  $("loops").replaceChildren();
  show();
}
