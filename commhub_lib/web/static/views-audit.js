// The audit log of the shown network (owners and admins; the system admin sees every network's).

import { api, withQuery } from "./api.js";
import { $, formValues, h, render, timeEl } from "./dom.js";
import { canManage, state } from "./state.js";

function detailText(detail) {
  if (!detail) return "";
  try {
    return Object.entries(JSON.parse(detail)).map(([k, v]) => `${k}: ${typeof v === "string" ? v : JSON.stringify(v)}`).join(", ");
  } catch {
    return String(detail);
  }
}

/** Re-read GET /api/audit-log for the shown network. */
export async function refreshAudit() {
  const out = $("audit");
  if (!canManage()) {
    render(out, "forbidden", h("p", { class: "muted" }, "The audit log is for the network's owners and admins."));
    return;
  }
  const systemAdmin = state.user?.role === "admin";
  $("audit-scope-field").hidden = !systemAdmin;
  const { action, scope } = formValues($("audit-form"));
  // The system admin may read the whole hub's log (logins and registrations belong to no network).
  const network_id = systemAdmin && scope === "all" ? null : state.networkId;
  const names = Object.fromEntries(state.networks.map((n) => [n.network_id, n.network_name]));
  try {
    const entries = (await api("GET", withQuery("/api/audit-log", { network_id, action, limit: 200 }))).entries;
    render(out, JSON.stringify(entries), entries.length ? h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, ["When", "Who", "Action", "Network", "Detail", "IP"].map((x) => h("th", { scope: "col" }, x)))),
      h("tbody", {}, entries.map((e) => h("tr", {}, h("td", {}, timeEl(e.created_at)), h("td", {}, e.actor || ""),
        h("td", {}, h("code", {}, e.action)), h("td", {}, e.network_id ? names[e.network_id] || e.network_id : "—"),
        h("td", { class: "detail" }, detailText(e.detail)), h("td", { class: "mono" }, e.ip || ""))))))
      : h("p", { class: "muted" }, "No entries."));
  } catch (err) {
    render(out, `error:${err.message}`, h("p", { class: "error" }, err.message));
  }
}

/** Wire the audit filter. */
export function initAudit() {
  $("audit-form").addEventListener("submit", (e) => { e.preventDefault(); refreshAudit(); });
  $("audit-scope").addEventListener("change", () => refreshAudit());
}
