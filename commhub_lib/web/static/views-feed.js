// The live feed: every event of the network as it arrives, newest first.

import { $, clock, h } from "./dom.js";
import { emit } from "./state.js";
import { DEFAULT_PRIORITY, EVENT, REPLY_STATUS } from "./vocabulary.js";

const MAX_ITEMS = 200;
// A broadcast arrives once per recipient alias: show it once, naming how many it reached.
let lastBroadcast = null; // {key, aliases: Set, el}

// One line per event the hub delivers (vocabulary.js DELIVERED_EVENTS: tests/test_vocabulary.py fails while one
// has no entry here); anything else shows as its JSON.
const SUMMARY = {
  [EVENT.NEW_TASK]: (data) => `${data.from || "?"} → ${data.alias || "?"}: task${data.title ? ` “${data.title}”` : ""} (${data.priority || DEFAULT_PRIORITY})`,
  [EVENT.NEW_MESSAGE]: (data) => `${data.from || "?"} → ${data.alias || "?"}: ${data.message ?? ""}`,
  [EVENT.NEW_REPLY]: (data) => {
    if (data.status === REPLY_STATUS.QUESTION) return `${data.from || "?"} asks ${data.alias || "?"} a question`;
    return `${data.from || "?"} → ${data.alias || "?"}: reply (${data.status || REPLY_STATUS.DONE})`;
  },
  [EVENT.BROADCAST]: (data) => `${data.from || "?"} → ${data.alias || "?"}: ${data.content ?? ""}`,
  [EVENT.LOOP_BROKEN]: (data) => `loop broken: ${data.from || "?"} → ${data.to || data.alias || "?"} sent more than ${data.limit} a minute; refused for ${data.retry_after} s`,
  // The network's own events (vocabulary.js NETWORK_EVENTS), for the people who look after it.
  [EVENT.WEBHOOK_DISABLED]: (data) => `webhook ${data.webhook_id || "?"} disabled (${data.url || "?"}): ${data.reason || ""}`,
};

function summary(type, data) {
  return Object.hasOwn(SUMMARY, type) ? SUMMARY[type](data) : JSON.stringify(data);
}

/** Show one event ({type, id, alias, data}) at the top of the feed. */
export function addFeedEvent(ev) {
  const data = { ...ev.data, alias: ev.alias };
  if (ev.type === EVENT.BROADCAST) {
    const key = JSON.stringify([data.from, data.content]);
    if (lastBroadcast && lastBroadcast.key === key && $("feed").firstElementChild === lastBroadcast.el) {
      lastBroadcast.aliases.add(ev.alias);
      lastBroadcast.el.querySelector(".feed-text").textContent = `${data.from || "?"} → ${lastBroadcast.aliases.size} sessions: ${data.content ?? ""}`;
      return;
    }
  }
  const taskId = ev.data.task_id;
  const item = h("li", { class: `feed-item event-${ev.type}`, dataset: { eventId: ev.id || "" } },
    h("span", { class: "feed-time small muted" }, clock()),
    h("span", { class: "badge" }, ev.type.replace("new_", "")),
    h("span", { class: "feed-text" }, summary(ev.type, data)),
    taskId ? h("button", { type: "button", class: "link small", onclick: () => emit("open-task", taskId) }, "open task") : null);
  const feed = $("feed");
  feed.prepend(item);
  lastBroadcast = ev.type === EVENT.BROADCAST ? { key: JSON.stringify([data.from, data.content]), aliases: new Set([ev.alias]), el: item } : null;
  while (feed.children.length > MAX_ITEMS) feed.lastElementChild.remove();
  $("feed-empty").hidden = true;
}

/** Empty the feed (another network is shown). */
export function clearFeed() {
  $("feed").replaceChildren();
  $("feed-empty").hidden = false;
}
