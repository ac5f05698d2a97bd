// What waits for a person (docs/runner-server.md): approvals an agent asked for (on a task, or of its owner),
// each answered here as a reply to its question ("yes" allows, anything else denies); and open tasks a runner
// flagged `unanswered` (the agent's turn ended without an answer), each opened from here.

import { api, isMissingEndpoint, withQuery } from "./api.js";
import { $, h, render, say, timeEl } from "./dom.js";
import { emit, state } from "./state.js";
import { OPEN_TASK_STATUSES, TASK_FLAG } from "./vocabulary.js";

async function answer(approval, text, result) {
  try {
    await api("POST", "/api/replies", { message_id: approval.approval_id, content: text, network_id: state.networkId });
    say(result, "Answer sent.");
    emit("changed");
  } catch (err) {
    say(result, err.message, true);
  }
}

function approvalItem(a) {
  const result = h("span", { class: "result", role: "status" });
  const reason = h("input", { id: `deny-${a.approval_id}`, name: "reason", placeholder: "reason (optional)",
    "aria-label": `reason for denying ${a.alias}` });
  return h("li", { class: "approval", dataset: { approvalId: a.approval_id }, "data-testid": "approval" },
    h("div", { class: "small muted" }, h("strong", {}, a.alias), " asks ", a.asked, " · ", timeEl(a.created_at),
      a.task_id ? [" · ", h("button", { type: "button", class: "link small", onclick: () => emit("open-task", a.task_id) }, "task")] : null),
    h("p", { class: "content" }, a.question || ""),
    h("div", { class: "actions" },
      h("button", { type: "button", dataset: { key: `allow-${a.approval_id}` }, onclick: () => answer(a, "yes", result) }, "Allow"),
      reason,
      h("button", { type: "button", class: "danger", dataset: { key: `deny-${a.approval_id}` },
        onclick: () => answer(a, reason.value.trim() ? `no: ${reason.value.trim()}` : "no", result) }, "Deny"),
      result));
}

const OPEN = new Set(OPEN_TASK_STATUSES);

function flaggedItem(t) {
  return h("li", { class: "approval flagged-task", dataset: { taskId: t.task_id }, "data-testid": "flagged-task" },
    h("div", { class: "small muted" }, h("strong", {}, t.to_name), ` did not answer ${t.from_name}'s task · flagged `,
      timeEl(t.flagged_at)),
    h("p", { class: "content" }, t.title || t.content.slice(0, 160)),
    h("div", { class: "actions" }, h("button", { type: "button", class: "secondary", dataset: { key: `flagged-${t.task_id}` },
      onclick: () => emit("open-task", t.task_id) }, "Open task")));
}

async function pending(path, params, key) {
  try {
    return (await api("GET", withQuery(path, { network_id: state.networkId, limit: 50, ...params })))[key];
  } catch (err) {
    if (!isMissingEndpoint(err)) console.warn(`${path}:`, err.message);
    return [];
  }
}

/** Re-read what waits for a person in the shown network; the card shows only while something does. */
export async function refreshApprovals() {
  if (!state.networkId) return;
  const [approvals, flagged] = await Promise.all([
    pending("/api/approvals", { status: "pending" }, "approvals"),
    pending("/api/tasks", { flag: TASK_FLAG.UNANSWERED }, "tasks").then((ts) => ts.filter((t) => OPEN.has(t.status))),
  ]);
  const count = approvals.length + flagged.length;
  $("approvals-card").hidden = count === 0;
  $("approvals-count").textContent = count ? String(count) : "";
  render($("approvals"), JSON.stringify([approvals.map((a) => a.approval_id), flagged.map((t) => [t.task_id, t.flagged_at])]),
    [approvals.map(approvalItem), flagged.map(flaggedItem)]);
}
