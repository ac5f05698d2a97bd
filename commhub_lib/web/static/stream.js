// Server-Sent Events over fetch(): EventSource cannot send an Authorization header, and the token must stay
// out of URLs. Lines end at CR, LF or CRLF only (the SSE rule; never at U+2028 and friends).

/** Incremental SSE parser: feed it text, it calls onEvent({type, data, id}) per dispatched event. */
export class SseParser {
  constructor(onEvent, lastId = null) {
    this.onEvent = onEvent;
    this.buffer = "";
    this.type = "";
    this.data = [];
    this.lastId = lastId; // the stream's position: set by every id: field, with or without data
    this.retry = null;
  }

  feed(text) {
    this.buffer += text;
    const buf = this.buffer;
    let start = 0;
    for (let i = 0; i < buf.length; i++) {
      const c = buf.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      if (c === 13 && i === buf.length - 1) break; // a CR at the end: wait for a possible LF
      this.line(buf.slice(start, i));
      if (c === 13 && buf.charCodeAt(i + 1) === 10) i++;
      start = i + 1;
    }
    this.buffer = buf.slice(start);
  }

  line(line) {
    if (line === "") { this.dispatch(); return; }
    if (line.startsWith(":")) return; // a comment
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.type = value;
    else if (field === "data") this.data.push(value);
    else if (field === "id") { if (!value.includes("\0")) this.lastId = value; }
    else if (field === "retry") { if (/^\d+$/.test(value)) this.retry = Number(value); }
  }

  dispatch() {
    if (this.data.length) {
      this.onEvent({ type: this.type || "message", data: this.data.join("\n"), id: this.lastId });
    }
    this.type = "";
    this.data = [];
  }
}

const sleep = (ms, signal) => new Promise((resolve) => {
  const timer = setTimeout(resolve, ms);
  signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
});

/**
 * Follow an SSE path for as long as it is not closed: reconnect with backoff and Last-Event-ID, so nothing
 * sent while away is lost. handlers: headers() -> auth headers; onEvent(ev); onState("connecting"|"live"|
 * "retrying", detail); onRefused(status, body) -> true to stop (401, 403, 404 are not retried blindly); lastEventId:
 * the position to start from (null: live from now).
 */
export function follow(path, handlers) {
  const abort = new AbortController();
  // handlers.lastEventId: where to start (a position read before: the stream replays what came after it).
  let lastId = handlers.lastEventId ?? null;
  let retryMs = 3000;

  async function once() {
    const headers = handlers.headers({ Accept: "text/event-stream" });
    if (lastId !== null) headers["Last-Event-ID"] = lastId;
    const response = await fetch(path, {
      headers, signal: abort.signal, cache: "no-store", credentials: "omit", redirect: "error",
    });
    if (!response.ok) {
      let body = null;
      try { body = await response.json(); } catch { body = null; }
      if (handlers.onRefused(response.status, body)) return "stop";
      throw new Error((body && body.message) || `HTTP ${response.status}`);
    }
    handlers.onState("live");
    const parser = new SseParser((ev) => handlers.onEvent(ev), lastId);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        parser.feed(value);
        lastId = parser.lastId;
        if (parser.retry !== null) retryMs = parser.retry;
      }
    } finally {
      lastId = parser.lastId;
    }
    return "ended";
  }

  (async () => {
    let failures = 0;
    while (!abort.signal.aborted) {
      handlers.onState(failures ? "retrying" : "connecting");
      try {
        if ((await once()) === "stop") return;
        failures = 0;
        if (abort.signal.aborted) return;
        handlers.onState("retrying", "the stream ended");
      } catch (err) {
        if (abort.signal.aborted) return;
        handlers.onState("retrying", err.message);
      }
      failures += 1;
      await sleep(Math.min(retryMs * 2 ** Math.min(failures - 1, 4), 30000), abort.signal);
    }
  })();

  return { close: () => abort.abort() };
}
