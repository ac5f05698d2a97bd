// The live stream of one network: GET /events?network_id=<id> (every event of every alias, each naming its
// alias). A hub without that stream answers 404: then the page follows the person's own alias (replies to
// what they sent) and a few agents' aliases instead, within the browser's six connections per host.

import { authHeaders, withQuery } from "./api.js";
import { state } from "./state.js";
import { follow } from "./stream.js";

const MAX_ALIAS_STREAMS = 4;

export class LiveFeed {
  constructor(networkId, username, { onEvent, onState, onOpen }) {
    this.networkId = networkId;
    this.username = username;
    this.onEvent = onEvent;
    this.onState = onState;
    this.onOpen = onOpen;
    this.streams = new Map(); // key (alias or "*") -> {handle, state}
    this.fallback = false;
    this.closed = false;
    this.timer = null;
    this.open("*", withQuery("/events", { network_id: networkId }));
  }

  open(key, path) {
    const entry = { state: "connecting", handle: null };
    this.streams.set(key, entry);
    entry.handle = follow(path, {
      headers: (extra) => authHeaders(extra),
      onEvent: (ev) => this.dispatch(key, ev),
      onState: (s, detail) => {
        entry.state = s;
        if (s === "live") this.onOpen();
        this.report(detail);
      },
      onRefused: (status, body) => {
        if (status === 404 && key === "*" && !this.closed) {
          this.startFallback();
          return true;
        }
        if (status === 400 || status === 401 || status === 403 || status === 404) {
          entry.state = "refused";
          this.report(body && body.message);
          return true;
        }
        return false;
      },
    });
  }

  dispatch(key, ev) {
    if (ev.type === "heartbeat") return;
    let data = {};
    try { data = JSON.parse(ev.data); } catch { data = { text: ev.data }; }
    if (data === null || typeof data !== "object") data = { value: data };
    const alias = data.alias || (key === "*" ? "" : key);
    this.onEvent({ type: ev.type, id: ev.id, alias, data });
  }

  report(detail) {
    const states = [...this.streams.values()].map((e) => e.state);
    let overall = "connecting";
    if (states.includes("live")) overall = "live";
    else if (states.includes("retrying")) overall = "reconnecting";
    else if (states.length && states.every((s) => s === "refused")) overall = "offline";
    this.onState(overall, detail);
  }

  startFallback() {
    this.streams.delete("*");
    this.fallback = true;
    this.syncAliases();
    this.timer = setInterval(() => this.syncAliases(), 3000);
  }

  /** Follow the person's alias and the first online agents (re-checked as sessions come and go). */
  syncAliases() {
    if (this.closed) return;
    const online = state.sessions.filter((s) => s.status !== "offline").map((s) => s.alias);
    const wanted = [this.username, ...online.filter((a) => a !== this.username)].slice(0, MAX_ALIAS_STREAMS);
    for (const [alias, entry] of this.streams) {
      if (!wanted.includes(alias)) { entry.handle.close(); this.streams.delete(alias); }
    }
    for (const alias of wanted) {
      if (!this.streams.has(alias)) {
        this.open(alias, withQuery(`/events/${encodeURIComponent(alias)}`, { network_id: this.networkId }));
      }
    }
    this.report();
  }

  close() {
    this.closed = true;
    clearInterval(this.timer);
    for (const entry of this.streams.values()) entry.handle?.close();
    this.streams.clear();
  }
}
