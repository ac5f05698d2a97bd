// The page's start: login, the views, the live stream of the shown network and the refresh rhythm.

import { api, clearLogin, isMissingEndpoint, loadLogin, saveLogin, setUnauthorizedHandler } from "./api.js";
import { $, formValues, say } from "./dom.js";
import { LiveFeed } from "./live.js";
import { banner, emit, on, state } from "./state.js";
import { initAudit, refreshAudit } from "./views-audit.js";
import { addFeedEvent, clearFeed, prefillFeed } from "./views-feed.js";
import { clearNeeds, initNeeds, notificationsOn, refreshNeeds } from "./views-needs.js";
import { initNetwork, refreshNetwork } from "./views-network.js";
import { initSchedules, refreshSchedules } from "./views-schedules.js";
import { initSend } from "./views-send.js";
import { refreshSessions } from "./views-sessions.js";
import { initTasks, refreshOpenTask, refreshTasks } from "./views-tasks.js";
import { initWebhooks } from "./views-webhooks.js";

const VIEWS = ["overview", "tasks", "schedules", "network", "audit"];
// Presence (an agent coming online or going quiet) is not an event on the stream: the sessions and the
// board are re-read at this pace while the page is visible, and at once after every event.
const POLL_MS = 2000;

let live = null;
let poll = null;
let refreshTimer = null;
let liveGeneration = 0; // a newer startLive makes an older one's pending opening read drop its result

function currentView() {
  const name = location.hash.slice(1);
  return VIEWS.includes(name) ? name : "overview";
}

function showView() {
  const view = currentView();
  for (const name of VIEWS) $(`view-${name}`).hidden = name !== view;
  for (const link of document.querySelectorAll(".tabs a")) {
    if (link.dataset.view === view) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (view === "network") refreshNetwork();
  if (view === "audit") refreshAudit();
  if (view === "tasks") refreshTasks();
  if (view === "schedules") refreshSchedules();
}

// "Needs you" is read after every event, and by the poll every NEEDS_EVERY-th tick: what changes it without an event
// (a task becoming stuck, an agent going offline) is a matter of minutes.
const NEEDS_EVERY = 3;
let ticks = 0;

async function refreshAll(withNeeds = true) {
  // Needs first: the sessions' "waiting for you" reads what it found.
  if (withNeeds) await refreshNeeds();
  await Promise.allSettled([refreshSessions(), refreshTasks(), refreshOpenTask()]);
}

/** Refresh soon (many events in a burst cause one refresh). */
function refreshSoon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => refreshAll(true), 150);
}

function showLogin(message) {
  stopLive();
  $("app-view").hidden = true;
  $("login-view").hidden = false;
  $("login-form").hidden = false;
  $("register-form").hidden = true;
  say($("login-error"), message || "", Boolean(message));
  $("login-username").focus();
}

function stopLive() {
  liveGeneration += 1;
  if (live) live.close();
  live = null;
  clearInterval(poll);
  poll = null;
}

/** The shown network's feed (opened with its newest events) and stream (going on from there), and the refresh
 * rhythm. */
async function startLive() {
  stopLive();
  clearFeed();
  const generation = liveGeneration;
  const networkId = state.networkId;
  poll = setInterval(() => {
    const withNeeds = ticks++ % NEEDS_EVERY === 0;
    if (!document.hidden) refreshAll(withNeeds);
    else if (withNeeds && notificationsOn()) refreshNeeds(); // a question still notifies from a background tab
  }, POLL_MS);
  const position = await prefillFeed(networkId);
  if (generation !== liveGeneration) return; // another network (or a logout) meanwhile
  live = new LiveFeed(networkId, {
    lastEventId: position,
    onEvent: (ev) => {
      addFeedEvent(ev);
      emit("hub-event", ev);
      refreshSoon();
    },
    onState: (s) => { const el = $("live-state"); el.dataset.state = s; el.textContent = s === "live" ? "live" : `${s}…`; },
    onOpen: refreshSoon, // whatever happened while connecting is read again
  });
}

function fillNetworks() {
  const select = $("network-select");
  select.replaceChildren(...state.networks.map((n) => {
    const option = document.createElement("option");
    option.value = n.network_id;
    option.textContent = n.network_name;
    option.title = `${n.network_name}: you are ${n.member_role}`;
    return option;
  }));
  select.value = state.networkId;
}

async function loadNetworks() {
  state.networks = (await api("GET", "/api/networks")).networks;
  if (!state.networks.some((n) => n.network_id === state.networkId)) {
    state.networkId = state.networks[0]?.network_id || null;
  }
  fillNetworks();
  $("audit-tab").hidden = !state.networks.some((n) => n.member_role !== "member") && state.user.role !== "admin";
}

async function startApp(login) {
  state.user = (await api("GET", "/api/auth/me")).user;
  state.networkId = login.network_id;
  $("whoami").textContent = state.user.username;
  await loadNetworks();
  $("login-view").hidden = true;
  $("app-view").hidden = false;
  banner(null);
  startLive();
  showView();
  refreshAll();
}

async function logIn(event) {
  event.preventDefault();
  const { username, password } = formValues($("login-form"));
  if (!username || !password) { say($("login-error"), "Enter your username and password.", true); return; }
  const button = $("login-button");
  button.disabled = true;
  try {
    const answer = await api("POST", "/api/auth/login", { username, password });
    const login = { token: answer.token, network_id: answer.network_id };
    saveLogin(login);
    $("login-password").value = "";
    say($("login-error"), "");
    await startApp(login);
  } catch (err) {
    say($("login-error"), err.message, true);
  } finally {
    button.disabled = false;
  }
}

/** Show the log-in form or the create-account form (one card at a time). */
function showForm(register) {
  $("login-form").hidden = register;
  $("register-form").hidden = !register;
  $(register ? "register-username" : "login-username").focus();
}

async function register(event) {
  event.preventDefault();
  const { username, password, auth_token: hubToken } = formValues($("register-form"));
  if (!username || !password) { say($("register-error"), "Enter a username and a password.", true); return; }
  const button = $("register-button");
  button.disabled = true;
  try {
    const answer = await api("POST", "/api/auth/register", { username, password }, hubToken || undefined);
    const login = { token: answer.token, network_id: answer.network_id };
    saveLogin(login);
    $("register-password").value = "";
    $("register-auth-token").value = "";
    say($("register-error"), "");
    await startApp(login);
  } catch (err) {
    if (err.code === "auth_token_required") {
      // The hub has a registration guard: ask for its token (logging in never needs it).
      $("register-token-field").hidden = false;
      $("register-auth-token").focus();
      say($("register-error"), hubToken ? "That registration token is not the hub's. Ask its operator."
        : "This hub asks for its registration token to create an account: enter it above.", true);
    } else {
      say($("register-error"), err.message, true);
    }
  } finally {
    button.disabled = false;
  }
}

async function logOut() {
  // Revoke this login on the hub when it can (GET/DELETE /api/auth/tokens); otherwise just forget it.
  try {
    const mine = (await api("GET", "/api/auth/tokens")).tokens.find((t) => t.current);
    if (mine) await api("DELETE", `/api/auth/tokens/${encodeURIComponent(mine.token_id)}`);
  } catch (err) {
    if (!isMissingEndpoint(err)) console.warn("logout: the login could not be revoked:", err.message);
  }
  clearLogin();
  state.user = null;
  clearNeeds();
  showLogin();
}

function init() {
  setUnauthorizedHandler(() => { clearLogin(); showLogin("Your login has ended (revoked or expired). Log in again."); });
  $("login-form").addEventListener("submit", logIn);
  $("register-form").addEventListener("submit", register);
  $("show-register").addEventListener("click", () => showForm(true));
  $("show-login").addEventListener("click", () => showForm(false));
  $("logout-button").addEventListener("click", logOut);
  $("network-select").addEventListener("change", (e) => {
    state.networkId = e.target.value;
    for (const el of document.querySelectorAll("[data-signature]")) delete el.dataset.signature;
    emit("network-changed");
    startLive();
    showView();
    refreshAll();
  });
  window.addEventListener("hashchange", showView);
  on("changed", refreshSoon);
  on("networks-changed", () => loadNetworks().then(refreshNetwork).catch((e) => banner(e.message)));
  initSend();
  initTasks();
  initNetwork();
  initWebhooks();
  initSchedules();
  initAudit();
  initNeeds();
  for (const dialog of document.querySelectorAll("dialog")) {
    dialog.addEventListener("click", (e) => { if (e.target.closest("[data-close]")) dialog.close(); });
  }
  const login = loadLogin();
  if (!login) { showLogin(); return; }
  startApp(login).catch((err) => { clearLogin(); showLogin(err.status === 401 ? "" : err.message); });
}

init();
