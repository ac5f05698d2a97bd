// The Webhooks card of the Network tab (owners and admins): a network's webhooks, their delivery log, one
// redelivery by hand; a new webhook's secret is shown once (docs/webhooks.md).

import { api, isMissingEndpoint } from "./api.js";
import { $, formValues, h, render, say, timeEl } from "./dom.js";
import { canManage, on, state } from "./state.js";
import { EVENT } from "./vocabulary.js";

const enc = encodeURIComponent;
let openLog = null; // the webhook whose delivery log is shown

function base() {
  return `/api/networks/${enc(state.networkId)}/webhooks`;
}

function button(label, fn, key, cls = "secondary small") {
  return h("button", { type: "button", class: cls, dataset: { key }, onclick: fn }, label);
}

async function act(method, path, body) {
  try {
    await api(method, path, body);
    say($("webhook-result"), "Done.");
  } catch (err) {
    say($("webhook-result"), err.message, true);
  }
  await refreshWebhooks();
}

function stateCell(w) {
  if (!w.enabled) return h("td", { class: "danger-text", title: w.disabled_reason || "" }, `disabled${w.disabled_reason ? ": " + w.disabled_reason : ""}`);
  if (w.failing_since_ts) return h("td", {}, `failing since ${new Date(w.failing_since_ts * 1000).toLocaleString()}`);
  return h("td", {}, "ok");
}

async function deliveryLog(w) {
  const rows = (await api("GET", `${base()}/${enc(w.webhook_id)}/deliveries?limit=20`)).deliveries;
  return h("div", { class: "table-wrap", dataset: { key: `log-${w.webhook_id}` } }, h("table", {},
    h("thead", {}, h("tr", {}, ["Delivery", "Event", "Alias", "Status", "Tries", "HTTP", "Error", "Updated", ""]
      .map((x) => h("th", { scope: "col" }, x)))),
    h("tbody", {}, rows.map((d) => h("tr", {},
      h("td", { class: "mono" }, String(d.delivery_id)), h("td", {}, d.event), h("td", {}, d.alias || "—"),
      h("td", {}, d.status), h("td", {}, String(d.attempts)), h("td", {}, d.last_status == null ? "—" : String(d.last_status)),
      h("td", {}, d.last_error || ""), h("td", {}, timeEl(d.updated_at)),
      h("td", {}, button("Redeliver", () => act("POST", `${base()}/${enc(w.webhook_id)}/deliveries/${d.delivery_id}/redeliver`),
        `redeliver-${d.delivery_id}`)))))));
}

/** Re-read the Webhooks card (hidden for plain members and on a hub without webhooks). */
export async function refreshWebhooks() {
  $("webhooks-card").hidden = !canManage();
  if (!canManage() || !state.networkId) { render($("webhooks"), "none", []); return; }
  let hooks;
  try {
    hooks = (await api("GET", base())).webhooks;
  } catch (err) {
    if (isMissingEndpoint(err)) { $("webhooks-card").hidden = true; return; }
    throw err;
  }
  const log = hooks.find((w) => w.webhook_id === openLog);
  const logNode = log ? await deliveryLog(log) : null;
  const rows = hooks.map((w) => h("tr", { class: w.enabled ? "" : "revoked" },
    h("td", { class: "mono" }, w.url), h("td", {}, w.events.length ? w.events.join(", ") : "all"),
    h("td", {}, w.aliases.length ? w.aliases.join(", ") : "all"), stateCell(w),
    h("td", {},
      button(openLog === w.webhook_id ? "Hide log" : "Log", () => {
        openLog = openLog === w.webhook_id ? null : w.webhook_id;
        refreshWebhooks();
      }, `wh-log-${w.webhook_id}`),
      button(w.enabled ? "Disable" : "Enable", () => act("PATCH", `${base()}/${enc(w.webhook_id)}`, { enabled: !w.enabled }),
        `wh-toggle-${w.webhook_id}`),
      button("Delete", () => act("DELETE", `${base()}/${enc(w.webhook_id)}`), `wh-del-${w.webhook_id}`, "danger small"))));
  render($("webhooks"), JSON.stringify([hooks, openLog, logNode ? logNode.textContent : ""]), [
    hooks.length ? h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, ["URL", "Events", "Aliases", "State", ""].map((x) => h("th", { scope: "col" }, x)))),
      h("tbody", {}, rows)))
      : h("p", { class: "muted small" }, "No webhook in this network."),
    logNode]);
}

async function createWebhook(event) {
  event.preventDefault();
  const { url, events } = formValues($("webhook-form"));
  const result = $("webhook-result");
  if (!url) { say(result, "Give the URL to POST each event to (https://…).", true); return; }
  const body = { url, events: (events || "").split(",").map((s) => s.trim()).filter(Boolean) };
  try {
    const answer = await api("POST", base(), body);
    $("webhook-form").reset();
    // The secret is shown this once: the receiver verifies X-CommHub-Signature with it.
    say(result, `Webhook ${answer.webhook_id} created. Its secret (shown once): ${answer.secret}`);
    await refreshWebhooks();
  } catch (err) {
    say(result, err.message, true);
  }
}

/** Wire the Webhooks card; a webhook_disabled event re-reads it. */
export function initWebhooks() {
  $("webhook-form").addEventListener("submit", createWebhook);
  on("hub-event", (ev) => { if (ev.type === EVENT.WEBHOOK_DISABLED) refreshWebhooks().catch(() => {}); });
}
