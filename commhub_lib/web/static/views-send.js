// Sending as the logged-in person: a task, a message or a broadcast (POST /api/tasks, /api/messages,
// /api/broadcast). The hub names the person as the sender; replies come back to their username.

import { api } from "./api.js";
import { $, formValues, say } from "./dom.js";
import { emit, state } from "./state.js";

const LABELS = { task: "Send task", message: "Send message", broadcast: "Broadcast" };

function showFields() {
  const kind = formValues($("send-form")).kind;
  for (const el of $("send-form").querySelectorAll("[data-for]")) el.hidden = !el.dataset.for.split(" ").includes(kind);
  $("send-button").textContent = LABELS[kind];
}

async function send(event) {
  event.preventDefault();
  const form = $("send-form");
  const values = formValues(form);
  const result = $("send-result");
  if (!values.content) { say(result, "Write what to send.", true); $("send-content").focus(); return; }
  if (values.kind !== "broadcast" && !values.to) { say(result, "Name the alias to send to.", true); $("send-to").focus(); return; }
  const network_id = state.networkId;
  let path;
  let body;
  if (values.kind === "task") {
    path = "/api/tasks";
    body = { to: values.to, content: values.content, priority: values.priority, network_id };
    if (values.title) body.title = values.title;
  } else if (values.kind === "message") {
    path = "/api/messages";
    body = { to: values.to, content: values.content, network_id };
  } else {
    path = "/api/broadcast";
    body = { content: values.content, network_id };
  }
  $("send-button").disabled = true;
  try {
    const answer = await api("POST", path, body);
    let text = "Sent.";
    if (values.kind === "task") text = `Task sent to ${answer.to}${answer.recipient_online === false ? " (offline: it gets it when it comes back)" : ""}.`;
    else if (values.kind === "broadcast") text = `Broadcast to ${answer.recipients ?? answer.count ?? "every"} session(s).`;
    say(result, text);
    $("send-content").value = "";
    $("send-title").value = "";
    emit("changed");
  } catch (err) {
    say(result, err.message, true);
  } finally {
    $("send-button").disabled = false;
  }
}

/** Wire the send form. */
export function initSend() {
  $("send-form").addEventListener("change", showFields);
  $("send-form").addEventListener("submit", send);
  showFields();
}
