// Sending as the logged-in person: a task, a message or a broadcast (POST /api/tasks, /api/messages,
// /api/broadcast). The hub names the person as the sender; replies come back to their username.

import { api } from "./api.js";
import { $, formValues, h, say } from "./dom.js";
import { emit, state } from "./state.js";
import { DEFAULT_PRIORITY, MESSAGE_KIND, PRIORITIES } from "./vocabulary.js";

const LABELS = { [MESSAGE_KIND.TASK]: "Send task", [MESSAGE_KIND.MESSAGE]: "Send message", [MESSAGE_KIND.BROADCAST]: "Broadcast" };

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
  if (values.kind !== MESSAGE_KIND.BROADCAST && !values.to) { say(result, "Name the alias to send to.", true); $("send-to").focus(); return; }
  const network_id = state.networkId;
  let path;
  let body;
  if (values.kind === MESSAGE_KIND.TASK) {
    path = "/api/tasks";
    body = { to: values.to, content: values.content, priority: values.priority, network_id };
    if (values.title) body.title = values.title;
  } else if (values.kind === MESSAGE_KIND.MESSAGE) {
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
    if (values.kind === MESSAGE_KIND.TASK) text = `Task sent to ${answer.to}${answer.recipient_online === false ? " (offline: it gets it when it comes back)" : ""}.`;
    else if (values.kind === MESSAGE_KIND.BROADCAST) text = `Broadcast to ${answer.recipients ?? answer.count ?? "every"} session(s).`;
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
  $("send-priority").append(...PRIORITIES.map((p) => h("option", { selected: p === DEFAULT_PRIORITY }, p)));
  $("send-form").addEventListener("change", showFields);
  $("send-form").addEventListener("submit", send);
  showFields();
}
