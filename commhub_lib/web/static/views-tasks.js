// The task board (by status, filtered by alias) and one task's page: timeline, replies, questions, cancel.

import { api, authHeaders, isMissingEndpoint, withQuery } from "./api.js";
import { $, formValues, h, render, say, timeEl } from "./dom.js";
import { emit, on, state } from "./state.js";
import { FINAL_TASK_STATUSES, REPLY_STATUS, TASK_FLAG, TASK_STATUS, TASK_STATUSES } from "./vocabulary.js";

const COLUMNS = [
  [TASK_STATUS.DELIVERED, "Delivered"], [TASK_STATUS.RUNNING, "Running"], [TASK_STATUS.INPUT_REQUIRED, "Question"],
  [TASK_STATUS.REPLIED, "Replied"], [TASK_STATUS.FAILED, "Failed"], [TASK_STATUS.CANCELLED, "Cancelled"],
  [TASK_STATUS.EXPIRED, "Expired"],  // not started by its start_by (docs/tasks-deadlines.md)
];
const FINAL = new Set(FINAL_TASK_STATUSES);
const BOARD_LIMIT = 200;

let tasks = [];
let openTaskId = null;

// What each task flag says to a person (docs/runner-server.md); an unknown flag shows as its name.
const FLAG_LABELS = { [TASK_FLAG.UNANSWERED]: "unanswered" };
const FLAG_HINTS = { [TASK_FLAG.UNANSWERED]: "the agent's turn ended without answering this task; it is not done" };

/** The flag badge of a task, or null when it has none. */
function flagBadge(t) {
  if (!t.flag) return null;
  return h("span", { class: `badge flag flag-${t.flag}`, "data-testid": "task-flag",
    title: `${FLAG_HINTS[t.flag] || "flagged"}${t.flagged_at ? ` (since ${t.flagged_at} UTC)` : ""}` },
  `⚑ ${FLAG_LABELS[t.flag] || t.flag}`);
}

function taskCard(t) {
  return h("li", {},
    h("button", { type: "button", class: `task-card priority-${t.priority}${t.flag ? " flagged" : ""}`,
      dataset: { key: t.task_id, taskId: t.task_id }, onclick: () => openTask(t.task_id) },
    h("span", { class: "task-title" }, t.title || t.content.slice(0, 80)),
    t.flag ? h("span", {}, flagBadge(t)) : null,
    h("span", { class: "small muted" }, `${t.from_name} → ${t.to_name}`),
    h("span", { class: "small muted" }, t.priority !== "normal" ? `${t.priority} · ` : "", timeEl(t.updated_at))));
}

/** Re-read GET /api/tasks with the filters and show the board. */
export async function refreshTasks() {
  if (!state.networkId) return;
  const filters = formValues($("task-filters"));
  const board = $("board");
  try {
    tasks = (await api("GET", withQuery("/api/tasks", { network_id: state.networkId, limit: BOARD_LIMIT, ...filters }))).tasks;
  } catch (err) {
    render(board, `error:${err.message}`, h("p", { class: "error" }, err.message));
    return;
  }
  const shown = filters.status ? COLUMNS.filter(([s]) => s === filters.status) : COLUMNS;
  const signature = JSON.stringify([shown, tasks.map((t) => [t.task_id, t.status, t.updated_at, t.flag]), Math.floor(Date.now() / 30000)]);
  render(board, signature, shown.map(([status, label]) => {
    const inColumn = tasks.filter((t) => t.status === status);
    return h("section", { class: `column column-${status}${inColumn.length ? "" : " empty"}`, "aria-label": `${label} tasks`, dataset: { status } },
      h("h2", {}, label, " ", h("span", { class: "count" }, String(inColumn.length))),
      inColumn.length ? h("ol", { class: "task-list" }, inColumn.map(taskCard)) : h("p", { class: "muted small" }, "none"));
  }));
}

/** A task with its timeline, from GET /api/tasks/<id> (or the event log on a hub without it). */
async function loadTask(taskId) {
  const network_id = state.networkId;
  try {
    return await api("GET", withQuery(`/api/tasks/${encodeURIComponent(taskId)}`, { network_id }));
  } catch (err) {
    if (!isMissingEndpoint(err)) throw err;
  }
  const task = tasks.find((t) => t.task_id === taskId);
  if (!task) throw new Error("this task is not on the board any more; clear the filters");
  const events = (await api("GET", withQuery("/api/task_events", { network_id, task_id: taskId, limit: 500 }))).events;
  return { task, events, completion: null };
}

/** The replies about a task, both ways: the recipient's (in the sender's inbox) and the sender's answers. */
async function loadReplies(task) {
  const inbox = (alias) => api("GET", withQuery("/api/messages", {
    network_id: state.networkId, alias, kind: "reply", limit: 500 })).then((r) => r.messages);
  const [toSender, toRecipient] = await Promise.all([inbox(task.from_name), inbox(task.to_name)]);
  const seen = new Set();
  return [...toSender, ...toRecipient]
    .filter((m) => m.task_id === task.task_id && !seen.has(m.message_id) && seen.add(m.message_id))
    .sort((a, b) => (a.created_at < b.created_at ? -1 : a.created_at > b.created_at ? 1 : 0));
}

function field(label, value) {
  return value ? [h("dt", {}, label), h("dd", {}, value)] : [];
}

/** A name, with "(person)" or "(agent)" when the hub says which (so a person and an agent never look alike). */
function who(name, kind) {
  return kind ? `${name} (${kind})` : name;
}

function timeline(events) {
  return h("ol", { class: "timeline" }, events.map((e) => h("li", { class: `tl-${e.event}` },
    timeEl(e.created_at), " ", h("strong", {}, e.event), " ", h("span", { class: "muted" }, `by ${e.actor}`),
    e.detail ? h("p", { class: "tl-detail" }, e.detail) : null)));
}

function replyList(replies) {
  return h("ol", { class: "replies" }, replies.map((m) => h("li", { class: `reply reply-${m.status || REPLY_STATUS.DONE}` },
    h("div", { class: "small muted" }, h("strong", {}, m.from), ` · ${m.status || REPLY_STATUS.DONE} · `, timeEl(m.created_at)),
    h("p", { class: "reply-content" }, m.content))));
}

/** The files sent with the task and its replies as download links: fetched with the login's token (never in a URL)
 * and saved, never opened in the page (docs/attachments.md). */
function attachmentList(detail) {
  const files = [...(detail.task.attachments || []), ...(detail.reply_attachments || [])];
  if (!files.length) return null;
  const item = (a) => {
    const link = h("a", { href: "#", download: a.filename, "data-testid": "attachment-link" }, a.filename);
    link.addEventListener("click", async (e) => {
      e.preventDefault();
      const response = await fetch(`/api/attachments/${encodeURIComponent(a.attachment_id)}`,
        { headers: authHeaders(), credentials: "omit", cache: "no-store", redirect: "error" });
      if (!response.ok) { link.title = `download failed (HTTP ${response.status})`; return; }
      const url = URL.createObjectURL(await response.blob());
      h("a", { href: url, download: a.filename }).click();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
    });
    return h("li", {}, link, h("span", { class: "small muted" }, ` · ${a.size} bytes · ${a.content_type}`));
  };
  return [h("h3", {}, "Attachments"), h("ul", { class: "attachments", "data-testid": "task-attachments" }, files.map(item))];
}

function answerForm(task) {
  const result = h("p", { class: "result", role: "status" });
  const text = h("textarea", { id: "answer-content", name: "content", rows: "3", required: true });
  const form = h("form", { class: "answer-form", novalidate: true },
    h("label", { for: "answer-content" }, `Answer ${task.to_name}'s question`), text,
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Send answer"), result));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!text.value.trim()) { say(result, "Write the answer.", true); return; }
    try {
      await api("POST", "/api/replies", { task_id: task.task_id, content: text.value.trim(), network_id: state.networkId });
      say(result, "Answer sent.");
      text.value = "";
      emit("changed");
    } catch (err) {
      say(result, err.message, true);
    }
  });
  return form;
}

/** The question the task waits on, then the box to answer it (the question first: it is what is answered). */
function questionBlock(task, replies) {
  const question = replies.filter((m) => m.status === REPLY_STATUS.QUESTION && m.from === task.to_name).at(-1);
  return h("section", { class: "question-block", "aria-labelledby": "task-question-heading" },
    h("h3", { id: "task-question-heading" }, `${task.to_name} asks`),
    h("p", { class: "content question-text", "data-testid": "task-question" },
      question ? question.content : "(the question is in the replies below)"),
    answerForm(task));
}

function cancelForm(task) {
  const result = h("p", { class: "result", role: "status" });
  const reason = h("input", { id: "cancel-reason", name: "reason", placeholder: "optional" });
  const form = h("form", { class: "inline-form cancel-form", novalidate: true },
    h("div", { class: "field grow" }, h("label", { for: "cancel-reason" }, "Reason for cancelling"), reason),
    h("button", { type: "submit", class: "danger" }, "Cancel task"), result);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const body = reason.value.trim() ? { reason: reason.value.trim() } : {};
      await api("POST", withQuery(`/api/tasks/${encodeURIComponent(task.task_id)}/cancel`, { network_id: state.networkId }), body);
      say(result, "Cancelled.");
      emit("changed");
    } catch (err) {
      say(result, err.message, true);
    }
  });
  return form;
}

async function showTask(taskId) {
  const body = $("task-body");
  let detail;
  let replies = [];
  try {
    detail = await loadTask(taskId);
    replies = await loadReplies(detail.task);
  } catch (err) {
    render(body, `error:${err.message}`, h("p", { class: "error" }, err.message));
    return;
  }
  if (openTaskId !== taskId) return; // closed or another task opened meanwhile
  const { task, events, completion } = detail;
  $("task-title").textContent = task.title || "Task";
  const asked = task.status === TASK_STATUS.INPUT_REQUIRED;
  const signature = JSON.stringify([task, events.length, replies.length, completion]);
  // Keep what the person is typing when the page is redrawn under them (a new event on this task).
  const typed = Object.fromEntries([...body.querySelectorAll("textarea, input")].map((el) => [el.id, el.value]));
  render(body, signature, [
    h("p", { class: "badges" }, h("span", { class: `badge status-${task.status}`, "data-testid": "task-status" }, asked ? "question" : task.status),
      flagBadge(task)),
    h("dl", { class: "facts" }, field("From", who(task.from_name, task.from_kind)), field("To", who(task.to_name, task.to_kind)), field("Priority", task.priority),
      field("Created", `${task.created_at} UTC`), field("Deadline", task.deadline), field("Task id", task.task_id)),
    h("h3", {}, "Content"), h("p", { class: "content" }, task.content),
    task.context ? [h("h3", {}, "Context"), h("p", { class: "content" }, task.context)] : null,
    attachmentList(detail),
    asked ? questionBlock(task, replies) : null,
    h("h3", {}, "Replies"), replies.length ? replyList(replies) : h("p", { class: "muted" }, "No reply yet."),
    completion || task.result ? [h("h3", {}, "Result"), h("p", { class: "content" }, (completion && completion.result) || task.result)] : null,
    h("h3", {}, "Timeline"), timeline(events),
    FINAL.has(task.status) ? null : cancelForm(task),
  ]);
  for (const el of body.querySelectorAll("textarea, input")) if (typed[el.id]) el.value = typed[el.id];
}

/** Open one task's page. */
export function openTask(taskId) {
  openTaskId = taskId;
  const body = $("task-body");
  delete body.dataset.signature;
  body.replaceChildren(h("p", { class: "muted" }, "Loading…"));
  $("task-title").textContent = "Task";
  const dialog = $("task-dialog");
  if (!dialog.open) dialog.showModal();
  showTask(taskId);
}

/** Re-read the open task, if any. */
export async function refreshOpenTask() {
  if (openTaskId && $("task-dialog").open) await showTask(openTaskId);
}

/** Wire the filters and the task page. */
export function initTasks() {
  const filters = $("task-filters");
  // The status choices come from the vocabulary (a person reads input_required as "question").
  $("filter-status").append(...TASK_STATUSES.map((s) => h("option", { value: s }, s === TASK_STATUS.INPUT_REQUIRED ? "question" : s)));
  filters.addEventListener("submit", (e) => { e.preventDefault(); refreshTasks(); });
  filters.addEventListener("change", () => refreshTasks());
  filters.addEventListener("reset", () => setTimeout(refreshTasks, 0));
  $("task-dialog").addEventListener("close", () => { openTaskId = null; });
  on("open-task", (taskId) => openTask(taskId));
  on("show-tasks-of", (alias) => {
    filters.reset();
    $("filter-to").value = alias;
    if (location.hash === "#tasks") refreshTasks();
    else location.hash = "#tasks";
  });
}
