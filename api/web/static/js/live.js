// The WebSocket to /ws: live inbox delivery, typing, read markers and presence.
//
// The inbox is gap-free per user (`inbox_seq`), so one cursor is all it takes to stay exact:
// after a drop (or a laptop waking up) the app pages `GET /sync?after=<cursor>` and reopens
// the socket with `?after=<cursor>`; anything at or below the cursor is a duplicate and is
// dropped, a gap is filled with a `sync` frame. Listeners get DOM events on `live`:
// `inbox` (detail: an inbox item), `typing`, `read`, `presence`, `status` (detail: a string).

import { get, refresh, token } from "./api.js";

export const live = new EventTarget();

const BEYOND_THE_END = Number.MAX_SAFE_INTEGER; // /sync answers next_after = the inbox head
let socket = null;
let cursor = null;
let running = false;
let attempt = 0;
let timer = null;
let pinger = null;
export let status = "connecting";

function emit(type, detail) {
  live.dispatchEvent(new CustomEvent(type, { detail }));
}

function setStatus(value) {
  status = value;
  emit("status", value);
}

function accept(item) {
  if (cursor !== null && item.inbox_seq <= cursor) return true; // seen already
  if (cursor !== null && item.inbox_seq > cursor + 1) return false; // a gap: sync first
  cursor = item.inbox_seq;
  emit("inbox", item);
  return true;
}

/** Page /sync from the cursor until the inbox head. */
async function catchUp() {
  if (cursor === null) {
    cursor = (await get(`/sync?after=${BEYOND_THE_END}&limit=1`)).next_after;
    return;
  }
  for (;;) {
    const page = await get(`/sync?after=${cursor}&limit=200`);
    for (const item of page.items) accept(item);
    cursor = Math.max(cursor, page.next_after);
    if (!page.has_more) return;
  }
}

function send(frame) {
  if (socket?.readyState === WebSocket.OPEN) {
    socket.send(JSON.stringify(frame));
    return true;
  }
  return false;
}

function onFrame(frame) {
  switch (frame.type) {
    case "message.new":
    case "inbox.event":
      if (!accept(frame)) send({ type: "sync", after: cursor });
      break;
    case "sync":
      for (const item of frame.items) accept(item);
      cursor = Math.max(cursor ?? 0, frame.next_after);
      if (frame.has_more) send({ type: "sync", after: cursor });
      break;
    case "error":
      if (frame.code === "resync") send({ type: "sync", after: cursor });
      break;
    case "typing":
    case "read":
    case "presence":
    case "message.delta": // an agent's reply streaming into its message
      emit(frame.type, frame);
      break;
    default:
      break;
  }
}

async function connect() {
  clearTimeout(timer);
  if (!running) return;
  setStatus("connecting");
  let bearer;
  try {
    await catchUp();
    bearer = await token();
  } catch (error) {
    if (error.status === 401) return; // signed out: api.js tells the app
    retryLater();
    return;
  }
  if (!running) return;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const url = `${scheme}://${location.host}/ws?token=${encodeURIComponent(bearer)}&after=${cursor}`;
  const ws = new WebSocket(url);
  socket = ws;
  ws.onopen = () => {
    attempt = 0;
    setStatus("online");
    pinger = setInterval(() => send({ type: "ping" }), 25_000);
  };
  ws.onmessage = (e) => {
    try {
      onFrame(JSON.parse(e.data));
    } catch (error) {
      console.error("bad frame", error);
    }
  };
  ws.onclose = async (e) => {
    clearInterval(pinger);
    if (socket !== ws) return;
    socket = null;
    if (!running) return;
    setStatus("offline");
    if (e.code === 4401) {
      try {
        await refresh(bearer);
      } catch {
        return;
      }
    }
    retryLater();
  };
}

function retryLater() {
  if (!running) return;
  setStatus("offline");
  attempt += 1;
  const delay = Math.min(10_000, 500 * 2 ** Math.min(attempt, 5)) * (0.75 + Math.random() / 2);
  timer = setTimeout(connect, navigator.onLine === false ? 60_000 : delay);
}

function drop() {
  const ws = socket;
  socket = null;
  clearInterval(pinger);
  ws?.close();
}

export function start() {
  if (running) return;
  running = true;
  attempt = 0;
  connect();
}

export function stop() {
  running = false;
  cursor = null;
  clearTimeout(timer);
  drop();
}

/** Tell the other members you are typing (the server fans it out; best effort). */
export function typing(conversationId) {
  send({ type: "typing", conversation_id: conversationId });
}

// The network went away (or the laptop slept): close now, and catch up when it is back.
window.addEventListener("offline", () => {
  if (!running) return;
  drop();
  setStatus("offline");
});
window.addEventListener("online", () => {
  if (running && socket === null) connect();
});
