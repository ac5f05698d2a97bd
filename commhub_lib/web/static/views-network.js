// Networks, members, invites and agent tokens (owners and admins manage; members see).

import { configBlocks } from "./agent-config.js";
import { api, isMissingEndpoint } from "./api.js";
import { $, formValues, h, render, say, timeEl } from "./dom.js";
import { canManage, emit, state } from "./state.js";
import { refreshWebhooks } from "./views-webhooks.js";

const enc = encodeURIComponent;

function table(headers, rows) {
  return h("div", { class: "table-wrap" }, h("table", {},
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))),
    h("tbody", {}, rows)));
}

function actionButton(label, fn, cls = "secondary small", key = null) {
  return h("button", { type: "button", class: cls, dataset: key ? { key } : null, onclick: fn }, label);
}

async function refreshNetworks() {
  render($("networks"), JSON.stringify([state.networks, state.networkId]), table(["Name", "Your role", "Id", "Created"],
    state.networks.map((n) => h("tr", { class: n.network_id === state.networkId ? "current" : "" },
      h("td", {}, n.network_name), h("td", {}, n.member_role), h("td", { class: "mono" }, n.network_id),
      h("td", {}, timeEl(n.created_at))))));
}

function roleSelect(networkId, member) {
  const select = h("select", { "aria-label": `role of ${member.username}`, dataset: { key: `role-${member.user_id}` } },
    ["member", "admin"].map((role) => h("option", { value: role, selected: role === member.role }, role)));
  select.addEventListener("change", () => act("PUT", `/api/networks/${enc(networkId)}/members/${enc(member.user_id)}`,
    $("invite-result"), { role: select.value }));
  return select;
}

async function refreshMembers() {
  const id = state.networkId;
  const members = (await api("GET", `/api/networks/${enc(id)}/members`)).members;
  const manage = canManage();
  render($("members"), JSON.stringify([members, manage]), table(["User", "Role", "Joined", ""], members.map((m) => h("tr", {},
    h("td", {}, m.display_name && m.display_name !== m.username ? `${m.username} (${m.display_name})` : m.username),
    h("td", {}, manage && m.role !== "owner" && m.user_id !== state.user.user_id ? roleSelect(id, m) : m.role),
    h("td", {}, timeEl(m.joined_at)),
    h("td", {}, manage && m.role !== "owner" && m.user_id !== state.user.user_id
      ? actionButton("Remove", () => act(`DELETE`, `/api/networks/${enc(id)}/members/${enc(m.user_id)}`, $("invite-result")),
        "danger small", `rm-${m.user_id}`)
      : null)))));
}

async function refreshInvites() {
  const id = state.networkId;
  $("invite-form").hidden = !canManage();
  if (!canManage()) { render($("invites"), "none", []); return; }
  let invites;
  try {
    invites = (await api("GET", `/api/networks/${enc(id)}/invites`)).invites;
  } catch (err) {
    if (isMissingEndpoint(err)) { render($("invites"), "missing", []); return; }
    throw err;
  }
  render($("invites"), JSON.stringify(invites), invites.length ? table(["Invite", "Role", "Used", "Expires", ""],
    invites.map((i) => h("tr", {}, h("td", { class: "mono" }, i.invite_id), h("td", {}, i.role),
      h("td", {}, `${i.uses ?? i.used ?? 0} / ${i.max_uses}`), h("td", {}, i.expires_at ? timeEl(i.expires_at) : "never"),
      h("td", {}, actionButton("Revoke", () => act("DELETE", `/api/networks/${enc(id)}/invites/${enc(i.invite_id)}`,
        $("invite-result")), "danger small", `inv-${i.invite_id}`)))))
    : h("p", { class: "muted small" }, "No open invites."));
}

async function refreshTokens() {
  const tokens = (await api("GET", "/api/tokens")).tokens.filter((t) => t.network_id === state.networkId);
  render($("tokens"), JSON.stringify(tokens), tokens.length ? table(["Name", "Alias", "Created", "Last used", "Expires", ""],
    tokens.map((t) => h("tr", { class: t.revoked ? "revoked" : "" },
      h("td", {}, t.name), h("td", {}, t.alias || "any"), h("td", {}, timeEl(t.created_at)),
      h("td", {}, t.last_used_at ? timeEl(t.last_used_at) : "never"),
      h("td", {}, t.expires_at ? timeEl(t.expires_at, false) : "never"),
      h("td", {}, t.revoked ? "revoked" : actionButton("Revoke", () => act("DELETE", `/api/tokens/${enc(t.token_id)}`,
        $("token-result")), "danger small", `tok-${t.token_id}`)))))
    : h("p", { class: "muted small" }, "No token in this network yet."));
}

function size(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return i ? `${n.toFixed(1)} ${units[i]}` : `${n} B`;
}

async function refreshUsage() {
  // What the network keeps against its storage quota: owners and admins (and the system admin) may read it.
  $("usage-card").hidden = !canManage();
  if (!canManage()) { render($("usage"), "none", []); return; }
  let u;
  try {
    u = await api("GET", `/api/networks/${enc(state.networkId)}/usage`);
  } catch (err) {
    if (isMissingEndpoint(err)) { $("usage-card").hidden = true; return; }
    throw err;
  }
  const limit = u.max_network_bytes ? `${size(u.max_network_bytes)} (${u.percent} % used)` : "no limit";
  render($("usage"), JSON.stringify(u), [
    u.max_network_bytes ? h("meter", { min: 0, max: u.max_network_bytes, value: u.bytes, high: u.max_network_bytes * 0.9,
      "aria-label": "storage used" }) : null,
    table(["Kept", "Of", "Texts", "Event log", "Aliases", "Tasks", "Send rate per token"], [h("tr", {},
      h("td", { dataset: { key: "usage-bytes" } }, size(u.bytes)), h("td", {}, limit), h("td", {}, size(u.text_bytes)),
      h("td", {}, size(u.event_bytes)), h("td", {}, String(u.aliases)), h("td", {}, String(u.tasks)),
      h("td", {}, u.send_bytes_per_minute ? `${size(u.send_bytes_per_minute)}/min` : "no limit"))])]);
}

async function act(method, path, resultEl, body) {
  try {
    await api(method, path, body);
    say(resultEl, "Done.");
    await refreshNetwork();
  } catch (err) {
    say(resultEl, err.message, true);
  }
}

/** Re-read everything on the Network tab. */
export async function refreshNetwork() {
  if (!state.networkId) return;
  const results = await Promise.allSettled([refreshNetworks(), refreshUsage(), refreshMembers(), refreshInvites(),
    refreshTokens(), refreshWebhooks()]);
  const failed = results.find((r) => r.status === "rejected");
  if (failed) say($("networks-result"), failed.reason.message, true);
}

async function createToken(event) {
  event.preventDefault();
  const { name, alias, expires_in_seconds } = formValues($("token-form"));
  const result = $("token-result");
  if (!name) { say(result, "Give the token a name (which agent or machine it is for).", true); return; }
  const body = { name, network_id: state.networkId };
  if (alias) body.alias = alias;
  if (expires_in_seconds) body.expires_in_seconds = Number(expires_in_seconds);
  try {
    const answer = await api("POST", "/api/tokens", body);
    say(result, `Token “${answer.name}” created.`);
    $("token-form").reset();
    $("token-config").replaceChildren(...configBlocks(answer.token, answer.alias));
    $("token-dialog").showModal();
    refreshTokens();
  } catch (err) {
    say(result, err.message, true);
  }
}

async function createInvite(event) {
  event.preventDefault();
  const { role, max_uses } = formValues($("invite-form"));
  const result = $("invite-result");
  try {
    const answer = await api("POST", `/api/networks/${enc(state.networkId)}/invite`, { role, max_uses: Number(max_uses) || 1 });
    result.replaceChildren("Invite code (shown once): ", h("code", { class: "secret" }, answer.invite_code));
    result.classList.remove("error");
    refreshInvites().catch(() => {});
  } catch (err) {
    say(result, err.message, true);
  }
}

async function createNetwork(event) {
  event.preventDefault();
  const { name } = formValues($("network-form"));
  const result = $("networks-result");
  if (!name) { say(result, "Name the network.", true); return; }
  try {
    const answer = await api("POST", "/api/networks", { name });
    say(result, `Network “${answer.network_name}” created.`);
    $("network-form").reset();
    emit("networks-changed");
  } catch (err) {
    say(result, err.message, true);
  }
}

async function joinNetwork(event) {
  event.preventDefault();
  const { invite_code } = formValues($("join-form"));
  const result = $("networks-result");
  if (!invite_code) { say(result, "Paste the invite code.", true); return; }
  try {
    await api("POST", "/api/networks/join", { invite_code });
    say(result, "Joined.");
    $("join-form").reset();
    emit("networks-changed");
  } catch (err) {
    say(result, err.message, true);
  }
}

/** Wire the forms of the Network tab. */
export function initNetwork() {
  $("token-form").addEventListener("submit", createToken);
  $("invite-form").addEventListener("submit", createInvite);
  $("network-form").addEventListener("submit", createNetwork);
  $("join-form").addEventListener("submit", joinNetwork);
  $("token-dialog").addEventListener("close", () => $("token-config").replaceChildren()); // forget the secret
}

