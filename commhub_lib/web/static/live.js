// The live stream of one network: GET /events?network_id=<id> carries every event of every alias of the
// network (each naming its alias), resumable with Last-Event-ID. One stream per page, whatever the size of
// the network (a browser opens at most six connections per host).

import { authHeaders, withQuery } from "./api.js";
import { follow } from "./stream.js";
import { EVENT } from "./vocabulary.js";

export class LiveFeed {
  constructor(networkId, { onEvent, onState, onOpen, lastEventId = null }) {
    this.onEvent = onEvent;
    this.handle = follow(withQuery("/events", { network_id: networkId }), {
      lastEventId: lastEventId === null ? null : String(lastEventId), // the feed's opening read (views-feed.js)
      headers: (extra) => authHeaders(extra),
      onEvent: (ev) => this.dispatch(ev),
      onState: (s, detail) => {
        if (s === "live") onOpen();
        onState(s === "retrying" ? "reconnecting" : s, detail);
      },
      // Refused (logged out, no longer a member, an old hub without the network stream): say so, stop.
      onRefused: (status) => {
        if (status === 400 || status === 401 || status === 403 || status === 404) {
          onState("offline");
          return true;
        }
        return false;
      },
    });
  }

  dispatch(ev) {
    if (ev.type === EVENT.HEARTBEAT) return;
    let data = {};
    try { data = JSON.parse(ev.data); } catch { data = { text: ev.data }; }
    if (data === null || typeof data !== "object") data = { value: data };
    this.onEvent({ type: ev.type, id: ev.id, alias: data.alias || "", data });
  }

  close() { this.handle.close(); }
}
