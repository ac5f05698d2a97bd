// What the page knows about the logged-in person and the network shown, and a small event bus between views.

import { $ } from "./dom.js";

export const state = {
  user: null, // {user_id, username, role, ...}
  networks: [], // GET /api/networks
  networkId: null, // the network shown
  sessions: [], // GET /api/status of that network
};

const bus = new EventTarget();

/** Listen to a page event: "changed" (data may have changed: refresh), "hub-event" (an SSE event). */
export function on(name, fn) { bus.addEventListener(name, (e) => fn(e.detail)); }

/** Announce a page event. */
export function emit(name, detail) { bus.dispatchEvent(new CustomEvent(name, { detail })); }

/** The network shown, or null. */
export function currentNetwork() {
  return state.networks.find((n) => n.network_id === state.networkId) || null;
}

/** Owner or admin of the shown network (or the system admin): may manage it and read its audit log. */
export function canManage() {
  const role = currentNetwork()?.member_role;
  return role === "owner" || role === "admin" || state.user?.role === "admin";
}

/** A message across the top of the page (null hides it). */
export function banner(text) {
  const el = $("banner");
  el.textContent = text || "";
  el.hidden = !text;
}
