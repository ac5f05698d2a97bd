// Sessions: every agent of the network with its live status, task and progress.

import { api, withQuery } from "./api.js";
import { $, h, render, timeEl } from "./dom.js";
import { banner, emit, state } from "./state.js";
import { HELD_BY, SESSION_STATUS, TASK_STATUS } from "./vocabulary.js";

const ORDER = { [SESSION_STATUS.WORKING]: 0, [SESSION_STATUS.IDLE]: 1, [SESSION_STATUS.OFFLINE]: 2 };

/** A progress value as a percentage when it is one ("50", 50, "50%"), else null. */
function percent(progress) {
  if (progress === null || progress === undefined || progress === "") return null;
  const match = /^\s*(\d{1,3}(?:\.\d+)?)\s*%?\s*$/.exec(String(progress));
  if (!match) return null;
  const value = Number(match[1]);
  return value >= 0 && value <= 100 ? value : null;
}

// What keeps an agent online, in words for a person (docs/presence.md).
const HELD_BY_TEXT = {
  [HELD_BY.RUNNER]: "held by runner",
  [HELD_BY.CHANNEL]: "held by channel",
  [HELD_BY.STREAM]: "held by stream",
  [HELD_BY.POLLING]: "held by polling",
};

/** Who a question of the agent waits for: "you" when the person looking asked the task, else the asker. */
function waitingFor(task) {
  return task.from_name === state.user?.username ? "you" : task.from_name;
}

function sessionCard(s, waiting) {
  const pct = percent(s.progress);
  const who = [s.agent, s.model].filter(Boolean).join(" · ");
  // An online agent whose task asked a question is not working: it waits for an answer (the task's sender).
  const asking = waiting && s.status !== SESSION_STATUS.OFFLINE ? waiting : null;
  const badge = asking
    ? h("span", { class: `badge status-${TASK_STATUS.INPUT_REQUIRED}`, "data-testid": "session-status",
      title: `task ${asking.task_id} asked a question` }, `waiting for ${waitingFor(asking)}`)
    : h("span", { class: `badge status-${s.status}`, "data-testid": "session-status" }, s.status);
  const held = HELD_BY_TEXT[s.held_by];
  return h("article", { class: `session status-${s.status}`, dataset: { alias: s.alias } },
    h("div", { class: "session-head" },
      h("span", { class: "alias" }, s.alias),
      badge),
    held ? h("p", { class: "muted small held-by", "data-testid": "session-held-by",
      title: "what keeps this agent online" }, held) : null,
    who ? h("p", { class: "muted small" }, who) : null,
    s.task ? h("p", { class: "session-task" }, s.task) : null,
    pct !== null
      ? h("div", { class: "progress" },
        h("progress", { max: "100", value: String(pct), "aria-label": `progress of ${s.alias}` }),
        h("span", { class: "small" }, `${Math.round(pct)}%`))
      : (s.progress ? h("p", { class: "small" }, String(s.progress)) : null),
    h("div", { class: "session-foot" },
      h("span", { class: "muted small" }, "seen ", timeEl(s.last_seen_at)),
      h("button", { type: "button", class: "link small", dataset: { key: `tasks-${s.alias}` },
        "aria-label": `tasks for ${s.alias}`, onclick: () => emit("show-tasks-of", s.alias) }, "tasks")));
}

/** The network's tasks that wait for an answer, by recipient alias (the oldest question first). */
async function questionsByAlias() {
  const tasks = (await api("GET", withQuery("/api/tasks", { network_id: state.networkId,
    status: TASK_STATUS.INPUT_REQUIRED, limit: 500 }))).tasks || [];
  const byAlias = new Map();
  for (const task of tasks) {
    const known = byAlias.get(task.to_name);
    if (!known || task.created_at < known.created_at) byAlias.set(task.to_name, task);
  }
  return byAlias;
}

/** Re-read GET /api/status (and the questions waiting for an answer) and show it. */
export async function refreshSessions() {
  if (!state.networkId) return;
  let sessions;
  let questions;
  try {
    [sessions, questions] = await Promise.all([
      api("GET", withQuery("/api/status", { network_id: state.networkId })).then((r) => r.sessions),
      questionsByAlias(),
    ]);
  } catch (err) {
    banner(`Sessions: ${err.message}`);
    return;
  }
  banner(null);
  sessions.sort((a, b) => (ORDER[a.status] ?? 3) - (ORDER[b.status] ?? 3) || a.alias.localeCompare(b.alias));
  state.sessions = sessions;
  const online = sessions.filter((s) => s.status !== SESSION_STATUS.OFFLINE).length;
  $("sessions-count").textContent = sessions.length ? `${online} online of ${sessions.length}` : "";
  // The relative "seen" times change every refresh; compare without them so focus and scroll stay put.
  const signature = JSON.stringify(sessions.map((s) => [s.alias, s.status, s.held_by, s.agent, s.model, s.task,
    s.progress, questions.get(s.alias)?.task_id, Math.floor(Date.now() / 10000)]));
  render($("sessions"), signature, sessions.length
    ? sessions.map((s) => sessionCard(s, questions.get(s.alias)))
    : h("p", { class: "muted" }, "No agent has connected to this network yet. Create a token for one under Network."));
  const aliases = [...new Set([...sessions.map((s) => s.alias)])];
  render($("alias-list"), JSON.stringify(aliases), aliases.map((a) => h("option", { value: a })));
}
