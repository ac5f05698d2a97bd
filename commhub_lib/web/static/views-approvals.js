// Approvals waiting for a person (docs/runner-server.md): an agent asked for permission (on a task, or of its
// owner) and waits. Each is answered here as a reply to its question: "yes" allows, anything else denies.

import { api, isMissingEndpoint, withQuery } from "./api.js";
import { $, h, render, say, timeEl } from "./dom.js";
import { emit, state } from "./state.js";

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

/** Re-read the pending approvals of the shown network; the card shows only while some wait. */
export async function refreshApprovals() {
  if (!state.networkId) return;
  let approvals;
  try {
    approvals = (await api("GET", withQuery("/api/approvals", { network_id: state.networkId, status: "pending", limit: 50 }))).approvals;
  } catch (err) {
    if (!isMissingEndpoint(err)) console.warn("approvals:", err.message);
    approvals = [];
  }
  $("approvals-card").hidden = approvals.length === 0;
  $("approvals-count").textContent = approvals.length ? String(approvals.length) : "";
  render($("approvals"), JSON.stringify(approvals.map((a) => a.approval_id)), approvals.map(approvalItem));
}
