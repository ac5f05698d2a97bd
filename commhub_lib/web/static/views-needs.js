// "Needs you", at the top of the Overview (docs/dashboard.md#needs-you): what waits for the person across every
// network they belong to, from GET /api/needs — questions (a task's question, answered right here; an agent's
// approval request, allowed or denied here), stuck tasks (flagged by a runner, delivered to an offline agent, running
// without news) and loops the guard broke. Read again on every event of the shown network and every few seconds
// (stuck is a matter of time, not of events). An opt-in browser notification tells of a new question for the person.

import { api, isMissingEndpoint, withQuery } from "./api.js";
import { $, h, render, say, timeEl } from "./dom.js";
import { emit, state } from "./state.js";
import { loopItems, showLoopCount, visibleLoops } from "./views-loops.js";

const NOTIFY_KEY = "commhub.notify-questions";
const ANSWER_CHARS = 4000;

let needs = { questions: [], stuck: [], loops: [] };
let known = null; // ids of the questions already seen (null until the first read: those are not news)
// Stuck tasks shown before "Show N more": a hub with many of them would push Sessions and Send off the first screen.
const STUCK_SHOWN = 3;
let stuckExpanded = false;

// --- what the other views ask ----------------------------------------------------------------------------------

/** Who an agent's question waits for, when it waits for a person: "you", a person's name, or null. The sessions
 * card shows "waiting for you" instead of "working" while it does. */
export function waitingFor(networkId, alias) {
  const q = needs.questions.find((x) => x.network_id === networkId && x.agent === alias);
  if (!q) return null;
  return q.for_you ? "you" : q.asked;
}

// --- answering ---------------------------------------------------------------------------------------------------

function openTask(item) {
  if (!item.task_id) return;
  if (item.network_id !== state.networkId) {
    // A task of another network: show that network first (the task dialog reads the shown one).
    const select = $("network-select");
    select.value = item.network_id;
    select.dispatchEvent(new Event("change"));
  }
  emit("open-task", item.task_id);
}

async function send(item, text, result) {
  const body = item.approval_id
    ? { message_id: item.approval_id, content: text, network_id: item.network_id }
    : { task_id: item.task_id, content: text, network_id: item.network_id };
  try {
    await api("POST", "/api/replies", body);
    say(result, "Answer sent.");
    emit("changed");
  } catch (err) {
    say(result, err.message, true);
  }
}

function who(item) {
  return item.for_you ? "you" : item.asked;
}

function context(item, showNetwork) {
  return h("div", { class: "small muted" }, h("strong", {}, item.agent), ` asks ${who(item)}`,
    showNetwork ? [" · ", h("span", { class: "badge" }, item.network_name)] : null, " · ", timeEl(item.asked_at),
    item.task_id ? [" · ", h("button", { type: "button", class: "link small", onclick: () => openTask(item) },
      item.title ? `task “${item.title}”` : "task")] : null);
}

function approvalActions(item) {
  const result = h("span", { class: "result", role: "status" });
  const reason = h("input", { id: `deny-${item.approval_id}`, name: "reason", placeholder: "reason (optional)",
    "aria-label": `reason for denying ${item.agent}` });
  return h("div", { class: "actions" },
    h("button", { type: "button", dataset: { key: `allow-${item.approval_id}` }, onclick: () => send(item, "yes", result) },
      "Allow"),
    reason,
    h("button", { type: "button", class: "danger", dataset: { key: `deny-${item.approval_id}` },
      onclick: () => send(item, reason.value.trim() ? `no: ${reason.value.trim()}` : "no", result) }, "Deny"),
    result);
}

function answerBox(item) {
  const id = `needs-answer-${item.task_id}`;
  const result = h("span", { class: "result", role: "status" });
  const text = h("textarea", { id, name: "content", rows: "2", maxlength: String(ANSWER_CHARS), required: true,
    dataset: { key: id } });
  const form = h("form", { class: "needs-answer", novalidate: true },
    h("label", { for: id }, `Your answer to ${item.agent}`), text,
    h("div", { class: "actions" }, h("button", { type: "submit", dataset: { key: `send-${id}` } }, "Send answer"), result));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    if (!text.value.trim()) { say(result, "Write the answer.", true); return; }
    send(item, text.value.trim(), result).then(() => { if (!result.classList.contains("error")) text.value = ""; });
  });
  return form;
}

function questionItem(item, showNetwork) {
  const dataset = { key: item.approval_id || item.task_id };
  if (item.approval_id) dataset.approvalId = item.approval_id;
  if (item.task_id) dataset.taskId = item.task_id;
  return h("li", { class: `approval question${item.for_you ? " for-you" : ""}`,
    "data-testid": item.approval_id ? "approval" : "question", dataset },
  context(item, showNetwork),
  item.content ? h("p", { class: "small muted question-task" }, item.content) : null,
  h("p", { class: "content question-text" }, item.question || "(the question's text is no longer kept)"),
  !item.can_answer ? h("p", { class: "small muted" }, `Waits for ${item.asked}.`)
    : item.approval_id ? approvalActions(item) : answerBox(item));
}

const STUCK_TEXT = {
  unanswered: (t) => `${t.to_name} did not answer ${t.from_name}'s task`,
  offline: (t) => `${t.to_name} is offline; the task waits to be picked up`,
  silent: (t) => `${t.to_name} reports nothing on this running task`,
};

function stuckItem(t, showNetwork) {
  const text = (STUCK_TEXT[t.reason] || (() => t.reason))(t);
  return h("li", { class: `approval stuck stuck-${t.reason}`, "data-testid": t.reason === "unanswered" ? "flagged-task" : "stuck-task",
    dataset: { taskId: t.task_id, reason: t.reason } },
  h("div", { class: "small muted" }, h("strong", {}, text), " · since ", timeEl(t.since),
    showNetwork ? [" · ", h("span", { class: "badge" }, t.network_name)] : null),
  h("p", { class: "content" }, t.title || t.content),
  h("p", { class: "small muted" }, t.detail),
  h("div", { class: "actions" }, h("button", { type: "button", class: "secondary small", dataset: { key: `stuck-${t.task_id}` },
    onclick: () => openTask(t) }, "Open task")));
}

// --- drawing -----------------------------------------------------------------------------------------------------

function part(id, listId, countId, items) {
  $(id).hidden = items.length === 0;
  $(countId).textContent = items.length ? String(items.length) : "";
  return $(listId);
}

function draw() {
  const showNetwork = new Set([...needs.questions, ...needs.stuck, ...needs.loops].map((x) => x.network_id)).size > 1
    || state.networks.length > 1;
  const loops = visibleLoops(needs.loops);
  const questions = part("needs-questions", "questions", "questions-count", needs.questions);
  // Keep what the person is typing when another question arrives and the list is drawn again.
  const typed = Object.fromEntries([...questions.querySelectorAll("textarea, input")].map((el) => [el.id, el.value]));
  render(questions, JSON.stringify([needs.questions.map((q) => [q.question_id, q.can_answer]), showNetwork]),
    needs.questions.map((q) => questionItem(q, showNetwork)));
  for (const el of questions.querySelectorAll("textarea, input")) if (typed[el.id]) el.value = typed[el.id];
  const stuck = part("needs-stuck", "stuck", "stuck-count", needs.stuck);
  const shownStuck = stuckExpanded ? needs.stuck : needs.stuck.slice(0, STUCK_SHOWN);
  render(stuck, JSON.stringify([shownStuck.map((t) => [t.task_id, t.reason, t.since]), showNetwork,
    Math.floor(Date.now() / 30000)]), shownStuck.map((t) => stuckItem(t, showNetwork)));
  const more = $("stuck-more");
  const hiddenCount = needs.stuck.length - STUCK_SHOWN;
  more.hidden = hiddenCount <= 0;
  more.textContent = stuckExpanded ? "Show fewer" : `Show ${hiddenCount} more stuck task${hiddenCount === 1 ? "" : "s"}`;
  more.setAttribute("aria-expanded", String(stuckExpanded));
  $("loops-card").hidden = loops.length === 0;
  showLoopCount(loops.length);
  render($("loops"), JSON.stringify([loops.map((l) => [l.event_id, l.cuts]), showNetwork]),
    loopItems(loops, draw, showNetwork));
  const count = needs.questions.length + needs.stuck.length + loops.length;
  $("needs-count").textContent = count ? String(count) : "";
  $("needs-empty").hidden = count > 0;
  $("needs-card").classList.toggle("has-needs", count > 0);
}

/** Re-read GET /api/needs (every network of the person) and show it. */
export async function refreshNeeds() {
  if (!state.user) return;
  let answer;
  try {
    answer = await api("GET", withQuery("/api/needs", {}));
  } catch (err) {
    if (!isMissingEndpoint(err)) console.warn("/api/needs:", err.message);
    return;
  }
  needs = answer;
  announce(answer.questions.filter((q) => q.for_you));
  draw();
}

/** Forget what was shown (another person logs in). */
export function clearNeeds() {
  needs = { questions: [], stuck: [], loops: [] };
  known = null;
  stuckExpanded = false;
  draw();
}

// --- notifications (opt-in: asked only when the person clicks) ---------------------------------------------------

function supported() { return typeof window.Notification === "function"; }

function wanted() {
  try { return localStorage.getItem(NOTIFY_KEY) === "on"; } catch { return false; }
}

function notifying() { return supported() && wanted() && Notification.permission === "granted"; }

/** Whether to keep reading "needs you" while the tab is hidden (notifications are on: that is when they matter). */
export function notificationsOn() { return notifying(); }

function showToggle() {
  const button = $("notify-toggle");
  const on = notifying();
  button.setAttribute("aria-pressed", String(on));
  button.textContent = on ? "Notifications on" : "Notify me of questions";
  button.title = !supported() ? "this browser has no notifications"
    : Notification.permission === "denied" ? "notifications are blocked for this site in the browser's settings"
      : on ? "click to stop the notifications" : "a browser notification when an agent asks you a question";
}

async function toggle() {
  const result = $("notify-result");
  if (!supported()) { say(result, "This browser cannot show notifications.", true); return; }
  if (notifying()) {
    try { localStorage.setItem(NOTIFY_KEY, "off"); } catch { /* nothing kept */ }
    say(result, "");
    showToggle();
    return;
  }
  const permission = await Notification.requestPermission(); // resolves at once when already granted
  if (permission === "granted") {
    try { localStorage.setItem(NOTIFY_KEY, "on"); } catch { /* on for this page only */ }
    say(result, "");
  } else {
    say(result, "The browser did not allow notifications (its site settings can).", true);
  }
  showToggle();
}

function announce(questions) {
  const ids = new Set(questions.map((q) => q.question_id || q.task_id));
  const fresh = known === null ? [] : questions.filter((q) => !known.has(q.question_id || q.task_id));
  known = ids;
  if (!notifying()) return;
  for (const q of fresh) {
    try {
      const note = new Notification(`${q.agent} asks you`, {
        body: (q.question || "").slice(0, 300), tag: `commhub-${q.question_id || q.task_id}` });
      note.onclick = () => { window.focus(); if (q.task_id) openTask(q); note.close(); };
    } catch (err) {
      console.warn("notification:", err.message);
    }
  }
}

/** Wire the notification toggle (it never asks for permission by itself) and the stuck list's "Show N more". */
export function initNeeds() {
  $("notify-toggle").addEventListener("click", toggle);
  $("stuck-more").addEventListener("click", () => { stuckExpanded = !stuckExpanded; draw(); });
  showToggle();
}
