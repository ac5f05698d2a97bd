// The live feed: every event of the network, newest first. It opens with the network's newest events (GET
// /api/networks/<id>/events, prefillFeed), and the stream goes on from the position that read returned, so nothing
// shows twice; a reply shows its text (the read carries it; a live reply's is fetched by its event id).

import { api, isMissingEndpoint, withQuery } from "./api.js";
import { $, clock, h } from "./dom.js";
import { emit, state } from "./state.js";
import { DEFAULT_PRIORITY, EVENT, REPLY_STATUS } from "./vocabulary.js";

const MAX_ITEMS = 200;
const OPENING_EVENTS = 50; // the events the feed opens with
const REPLY_CHARS = 300; // a reply's text in its feed line (the task dialog has all of it)
const shown = new Set(); // ids of the events in the feed (a reconnect's replay never shows one twice)
// A broadcast arrives once per recipient alias: show it once, naming how many it reached.
let lastBroadcast = null; // {key, aliases: Set, el}

// One line per event the hub delivers (vocabulary.js DELIVERED_EVENTS: tests/test_vocabulary.py fails while one
// has no entry here); anything else shows as its JSON.
const SUMMARY = {
  [EVENT.NEW_TASK]: (data) => `${data.from || "?"} → ${data.alias || "?"}: task${data.title ? ` “${data.title}”` : ""} (${data.priority || DEFAULT_PRIORITY})`,
  [EVENT.NEW_MESSAGE]: (data) => `${data.from || "?"} → ${data.alias || "?"}: ${data.message ?? ""}`,
  [EVENT.NEW_REPLY]: (data) => {
    if (data.status === REPLY_STATUS.QUESTION) return `${data.from || "?"} asks ${data.alias || "?"} a question${said(data)}`;
    return `${data.from || "?"} → ${data.alias || "?"}: reply (${data.status || REPLY_STATUS.DONE})${said(data)}`;
  },
  [EVENT.BROADCAST]: (data) => `${data.from || "?"} → ${data.alias || "?"}: ${data.content ?? ""}`,
  [EVENT.LOOP_BROKEN]: (data) => `loop broken: ${data.from || "?"} → ${data.to || data.alias || "?"} sent more than ${data.limit} a minute; refused for ${data.retry_after} s`,
  // The network's own events (vocabulary.js NETWORK_EVENTS), for the people who look after it.
  [EVENT.WEBHOOK_DISABLED]: (data) => `webhook ${data.webhook_id || "?"} disabled (${data.url || "?"}): ${data.reason || ""}`,
};

/** ": <the reply's text>" when the feed has it (cut to REPLY_CHARS), else nothing. */
function said(data) {
  const text = data.reply_text;
  if (typeof text !== "string" || !text) return "";
  const flat = text.replace(/\s+/g, " ").trim();
  return `: ${flat.length > REPLY_CHARS ? `${flat.slice(0, REPLY_CHARS - 1)}…` : flat}`;
}

function summary(type, data) {
  return Object.hasOwn(SUMMARY, type) ? SUMMARY[type](data) : JSON.stringify(data);
}

/** Show one event ({type, id, alias, data, created_at?, content?}) at the top of the feed; a reply without its text
 * (a live one) gets it fetched. */
export function addFeedEvent(ev) {
  if (ev.id) {
    if (shown.has(String(ev.id))) return;
    shown.add(String(ev.id));
  }
  const data = { ...ev.data, alias: ev.alias, reply_text: ev.content };
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
    h("span", { class: "feed-time small muted" }, clock(ev.created_at)),
    h("span", { class: "badge" }, ev.type.replace("new_", "")),
    h("span", { class: "feed-text" }, summary(ev.type, data)),
    taskId ? h("button", { type: "button", class: "link small", onclick: () => emit("open-task", taskId) }, "open task") : null);
  const feed = $("feed");
  feed.prepend(item);
  lastBroadcast = ev.type === EVENT.BROADCAST ? { key: JSON.stringify([data.from, data.content]), aliases: new Set([ev.alias]), el: item } : null;
  while (feed.children.length > MAX_ITEMS) feed.lastElementChild.remove();
  $("feed-empty").hidden = true;
  if (ev.type === EVENT.NEW_REPLY && ev.content === undefined && ev.id) fillReplyText(item, ev, data);
}

/** A live reply's text: the same read as the opening one, for just this event. */
async function fillReplyText(item, ev, data) {
  const networkId = state.networkId;
  try {
    const answer = await api("GET", withQuery(`/api/networks/${encodeURIComponent(networkId)}/events`,
      { after: Number(ev.id) - 1, limit: 1 }));
    const found = answer.events.find((e) => String(e.id) === String(ev.id));
    if (!found || !found.content || networkId !== state.networkId) return;
    item.querySelector(".feed-text").textContent = summary(ev.type, { ...data, reply_text: found.content });
  } catch (err) {
    if (!isMissingEndpoint(err)) console.warn("feed: a reply's text:", err.message);
  }
}

/** Open the feed with the network's newest events; returns the position the stream goes on from (null: live from
 * now, on a hub without the read). */
export async function prefillFeed(networkId) {
  let answer;
  try {
    answer = await api("GET", withQuery(`/api/networks/${encodeURIComponent(networkId)}/events`,
      { limit: OPENING_EVENTS }));
  } catch (err) {
    if (!isMissingEndpoint(err)) console.warn("feed: the newest events:", err.message);
    return null;
  }
  for (const e of answer.events) {
    addFeedEvent({ type: e.event, id: String(e.id), alias: e.alias, data: e.data, created_at: e.created_at,
      content: e.content });
  }
  return answer.last_event_id;
}

/** Empty the feed (another network is shown). */
export function clearFeed() {
  $("feed").replaceChildren();
  shown.clear();
  lastBroadcast = null;
  $("feed-empty").hidden = false;
}
