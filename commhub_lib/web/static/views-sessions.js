// Sessions: every agent of the network with its live status, task and progress.

import { api, withQuery } from "./api.js";
import { $, h, render, timeEl } from "./dom.js";
import { banner, emit, state } from "./state.js";
import { SESSION_STATUS } from "./vocabulary.js";
import { waitingFor } from "./views-needs.js";

const ORDER = { [SESSION_STATUS.WORKING]: 0, [SESSION_STATUS.IDLE]: 1, [SESSION_STATUS.OFFLINE]: 2 };

/** A progress value as a percentage when it is one ("50", 50, "50%"), else null. */
function percent(progress) {
  if (progress === null || progress === undefined || progress === "") return null;
  const match = /^\s*(\d{1,3}(?:\.\d+)?)\s*%?\s*$/.exec(String(progress));
  if (!match) return null;
  const value = Number(match[1]);
  return value >= 0 && value <= 100 ? value : null;
}

function sessionCard(s) {
  const pct = percent(s.progress);
  // Its task waits on a person's answer: say so, not "working" (views-needs.js knows the questions).
  const waiting = waitingFor(s.network_id, s.alias);
  const shown = waiting ? `waiting for ${waiting}` : s.status;
  const who = [s.agent, s.model].filter(Boolean).join(" · ");
  return h("article", { class: `session status-${s.status}`, dataset: { alias: s.alias } },
    h("div", { class: "session-head" },
      h("span", { class: "alias" }, s.alias),
      h("span", { class: `badge status-${waiting ? "waiting" : s.status}`, "data-testid": "session-status" }, shown)),
    who ? h("p", { class: "muted small" }, who) : null,
    s.task ? h("p", { class: "session-task" }, s.task) : null,
    pct !== null
      ? h("div", { class: "progress" },
        h("progress", { max: "100", value: String(pct), "aria-label": `progress of ${s.alias}` }),
        h("span", { class: "small" }, `${Math.round(pct)}%`))
      : (s.progress ? h("p", { class: "small" }, String(s.progress)) : null),
    // What keeps it online (docs/presence.md): runner, channel, stream or polling; nothing when it is offline.
    s.held_by ? h("p", { class: "muted small", "data-testid": "session-held-by",
      title: "what keeps this agent online" }, `held by ${s.held_by}`) : null,
    h("div", { class: "session-foot" },
      h("span", { class: "muted small" }, "seen ", timeEl(s.last_seen_at)),
      h("button", { type: "button", class: "link small", dataset: { key: `tasks-${s.alias}` },
        "aria-label": `tasks for ${s.alias}`, onclick: () => emit("show-tasks-of", s.alias) }, "tasks")));
}

/** Re-read GET /api/status and show it. */
export async function refreshSessions() {
  if (!state.networkId) return;
  let sessions;
  try {
    sessions = (await api("GET", withQuery("/api/status", { network_id: state.networkId }))).sessions;
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
    s.progress, waitingFor(s.network_id, s.alias), Math.floor(Date.now() / 10000)]));
  render($("sessions"), signature, sessions.length
    ? sessions.map(sessionCard)
    : h("p", { class: "muted" }, "No agent has connected to this network yet. Create a token for one under Network."));
  const aliases = [...new Set([...sessions.map((s) => s.alias)])];
  render($("alias-list"), JSON.stringify(aliases), aliases.map((a) => h("option", { value: a })));
}
