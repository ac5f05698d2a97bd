// The Schedules tab: the network's schedules with their next and last runs, a form to create one (once, every N
// seconds or cron in an IANA zone), and pause / resume / run now / delete (docs/schedules.md).

import { api, isMissingEndpoint, withQuery } from "./api.js";
import { $, formValues, h, parseTime, render, say, timeEl } from "./dom.js";
import { on, state } from "./state.js";

const enc = encodeURIComponent;
const WHEN_FIELDS = { once: "schedule-at-field", every: "schedule-every-field", cron: "schedule-cron-field" };

function button(label, fn, key, cls = "secondary small") {
  return h("button", { type: "button", class: cls, dataset: { key }, onclick: fn }, label);
}

/** A schedule's timing in words. */
function timing(s) {
  if (s.kind === "every") return `every ${s.every_seconds} s`;
  if (s.kind === "cron") return `cron ${s.cron} (${s.tz})`;
  return `once at ${s.run_at}`;
}

async function act(method, path, done) {
  const result = $("schedule-result");
  try {
    const answer = await api(method, path);
    if (answer.ran === true) say(result, `Ran: task ${answer.task_id}.`);
    else if (answer.ran === false) say(result, `Skipped: ${answer.skipped_reason}`, true);
    else say(result, done);
  } catch (err) {
    say(result, err.message, true);
  }
  await refreshSchedules();
}

function lastRun(s) {
  if (!s.last_run_at) return h("td", { class: "muted" }, "never");
  return h("td", {}, timeEl(s.last_run_at), s.last_status ? h("span", { class: "muted small" }, ` · ${s.last_status}`) : null);
}

function skips(s) {
  if (!s.skip_count) return h("td", {}, "0");
  return h("td", { class: "detail", title: s.last_skip_reason || "" }, `${s.skip_count}`,
    h("span", { class: "muted small" }, ` · last: ${s.last_skip_reason || ""}`));
}

/** The next run in the reader's local time (the exact UTC time as its title). */
function nextRun(s) {
  const date = parseTime(s.next_run_at);
  if (!date) return h("td", { class: "muted" }, "—");
  return h("td", {}, h("time", { datetime: date.toISOString(), title: `${s.next_run_at} (UTC)` },
    date.toLocaleString([], { dateStyle: "medium", timeStyle: "short" })));
}

function row(s) {
  const one = `/api/schedules/${enc(s.schedule_id)}`;
  const toggle = s.state === "active"
    ? button("Pause", () => act("POST", `${one}/pause`, "Paused."), `sch-pause-${s.schedule_id}`)
    : s.state === "paused"
      ? button("Resume", () => act("POST", `${one}/resume`, "Resumed."), `sch-resume-${s.schedule_id}`)
      : null;
  return h("tr", { class: s.state === "active" ? "" : "schedule-inactive", dataset: { schedule: s.schedule_id } },
    h("td", {}, s.to_name), h("td", { class: "wrap" }, s.title ? `${s.title}: ${s.content}` : s.content),
    h("td", {}, h("span", { class: "mono" }, s.kind === "cron" ? `cron ${s.cron}` : timing(s)),
      s.kind === "cron" ? [h("br"), h("span", { class: "muted small" }, s.tz)] : null), h("td", {}, s.state),
    nextRun(s),
    lastRun(s), skips(s), h("td", {}, s.from_name),
    h("td", {}, h("div", { class: "schedule-actions" }, toggle,
      button("Run now", () => act("POST", `${one}/run`), `sch-run-${s.schedule_id}`),
      button("Delete", () => act("DELETE", one, "Deleted."), `sch-del-${s.schedule_id}`, "danger small"))));
}

// The columns; on a phone each row is a stacked card and every cell shows its column's name (app.css), so the
// buttons stay on screen instead of past a sideways scroll.
const HEADS = ["To", "Task", "When", "State", "Next run", "Last run", "Skips", "By", ""];

function labelled(tr) {
  [...tr.children].forEach((td, i) => { if (HEADS[i]) td.dataset.label = HEADS[i]; });
  return tr;
}

/** Re-read the Schedules tab. */
export async function refreshSchedules() {
  if (!state.networkId) { render($("schedules"), "none", []); return; }
  let list;
  try {
    list = (await api("GET", withQuery("/api/schedules", { network_id: state.networkId }))).schedules;
  } catch (err) {
    if (isMissingEndpoint(err)) return;
    throw err;
  }
  render($("schedules"), JSON.stringify(list), list.length
    ? h("div", { class: "table-wrap" }, h("table", { class: "schedules-table" },
      h("thead", {}, h("tr", {}, HEADS.map((x) => h("th", { scope: "col" }, x)))),
      h("tbody", {}, list.map((s) => labelled(row(s))))))
    : h("p", { class: "muted small", id: "schedules-empty" },
      "No schedule in this network yet. Add one below: the alias of an agent that has connected, what the task "
      + "says, and when (every N seconds, a cron expression, or once)."));
}

function showWhenField() {
  const kind = $("schedule-kind").value;
  for (const [name, id] of Object.entries(WHEN_FIELDS)) $(id).hidden = name !== kind;
}

async function createSchedule(event) {
  event.preventDefault();
  const values = formValues($("schedule-form"));
  const result = $("schedule-result");
  if (!values.to || !values.content) { say(result, "Give the alias and what the task says.", true); return; }
  // The field the chosen timing needs, said in the form's words (an empty number would reach the hub as 0).
  const missing = { every: [values.every_seconds, "Give the number of seconds between runs."],
    cron: [values.cron, "Give the cron expression, e.g. 0 9 * * 1-5 (09:00 on weekdays)."],
    once: [values.at, "Give the date and time of the run."] }[values.kind];
  if (missing && !String(missing[0] || "").trim()) { say(result, missing[1], true); return; }
  const body = { network_id: state.networkId, to: values.to, content: values.content, tz: values.tz || "UTC" };
  if (values.kind === "every") body.every_seconds = Number(values.every_seconds);
  else if (values.kind === "cron") body.cron = values.cron;
  else body.at = values.at;
  try {
    const answer = await api("POST", "/api/schedules", body);
    $("schedule-content").value = "";
    // The next run in the reader's own time, as the table shows it.
    const next = parseTime(answer.schedule.next_run_at);
    const when = next ? next.toLocaleString([], { dateStyle: "medium", timeStyle: "short" }) : "none";
    say(result, `Schedule ${answer.schedule.schedule_id} created; next run ${when}.`);
    await refreshSchedules();
  } catch (err) {
    say(result, err.message, true);
  }
}

/** Wire the Schedules tab; a new task (a run) or a change of network re-reads it. */
export function initSchedules() {
  $("schedule-form").addEventListener("submit", createSchedule);
  $("schedule-kind").addEventListener("change", showWhenField);
  showWhenField();
  const browserZone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  if (browserZone && !$("schedule-tz").value) $("schedule-tz").value = browserZone;
  on("hub-event", () => { if (!$("view-schedules").hidden) refreshSchedules().catch(() => {}); });
}
