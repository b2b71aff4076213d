// A session's event stream: GET /sessions/{id}/events read with fetch() (EventSource cannot
// send the bearer token), resumed after any drop from the last event id it saw (`?after=`),
// so no event is lost or seen twice. The SSE wire format is parsed as the spec says.

import { raw } from "./api.js";

function* frames(buffer) {
  // yields [event, consumedLength] for each complete block ("\n\n"-terminated)
  let start = 0;
  for (;;) {
    const end = buffer.indexOf("\n\n", start);
    if (end < 0) return;
    const block = buffer.slice(start, end);
    start = end + 2;
    const event = { event: "message", data: [], id: null };
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") event.event = value;
      else if (field === "data") event.data.push(value);
      else if (field === "id") event.id = value;
    }
    yield [event, start];
  }
}

/** Follow the session's events until `stop()`: `onEvent({event, id, data})` for each one.
 * Starts at `after` (a stream id), or at the newest event when it is null; `ready` resolves
 * once the server holds the cursor, so a turn sent afterwards cannot be missed. */
export function follow(sessionId, after, onEvent, onStatus = () => {}) {
  let cursor = after;
  let stopped = false;
  let controller = null;
  let markReady;
  const ready = new Promise((resolve) => {
    markReady = resolve;
  });
  (async () => {
    let attempt = 0;
    while (!stopped) {
      controller = new AbortController();
      try {
        const query = cursor ? `?after=${encodeURIComponent(cursor)}` : "";
        const response = await raw("GET", `/sessions/${sessionId}/events${query}`, undefined, {
          Accept: "text/event-stream",
        }, controller.signal);
        if (!response.ok) throw new Error(`events: HTTP ${response.status}`);
        markReady();
        onStatus("online");
        attempt = 0;
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done || stopped) break;
          buffer += value.replace(/\r\n?/g, "\n");
          let used = 0;
          for (const [event, end] of frames(buffer)) {
            used = end;
            if (event.id) cursor = event.id;
            if (!event.data.length || event.event === "message") continue;
            let data = null;
            try {
              data = JSON.parse(event.data.join("\n"));
            } catch {
              data = event.data.join("\n");
            }
            onEvent({ event: event.event, id: event.id, data });
          }
          buffer = buffer.slice(used);
        }
      } catch (error) {
        if (stopped) return;
        if (error.status === 401) return;
      }
      if (stopped) return;
      onStatus("offline");
      attempt += 1;
      await new Promise((r) => setTimeout(r, Math.min(10_000, 500 * 2 ** Math.min(attempt, 5))));
    }
  })();
  return {
    ready,
    stop() {
      stopped = true;
      controller?.abort();
    },
  };
}
