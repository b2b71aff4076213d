// One conversation: its messages (newest at the bottom, older pages loaded as you scroll up),
// live delivery from the inbox socket, typing indicators, the read marker, the composer, and
// for groups the members panel and threads.

import { del, get, post, request } from "./api.js";
import { html, useEffect, useLayoutEffect, useRef, useState } from "./html.js";
import * as live from "./live.js";
import { clock, lookup, nameOf, newId, remember } from "./names.js";
import { conversationTitle } from "./sidebar.js";
import { Dialog, FindPeople, Problem } from "./ui.js";

const PAGE = 30;

/** Insert or replace a message (by id, or by the client_msg_id of a pending one), in seq order. */
function upsert(list, message) {
  const rest = list.filter(
    (m) => m.id !== message.id && !(m.pending && m.client_msg_id === message.client_msg_id),
  );
  rest.push(message);
  return rest.sort((a, b) => a.seq - b.seq);
}

/** A change to a message already shown: an edit or deletion (the message's new state; its
 * reactions stay as they were), or one person's reaction (the emoji's new count). */
function patch(list, item, me) {
  if (item.kind === "reaction") {
    const r = item.reaction;
    return list.map((m) => {
      if (m.id !== item.message_id) return m;
      const others = (m.reactions ?? []).filter((x) => x.emoji !== r.emoji);
      const old = (m.reactions ?? []).find((x) => x.emoji === r.emoji);
      const mine = r.user_id === me ? r.added : (old?.me ?? false);
      const reactions = r.count > 0 ? [...others, { emoji: r.emoji, count: r.count, me: mine }] : others;
      return { ...m, reactions };
    });
  }
  if (!item.message) return list;
  return list.map((m) => (m.id === item.message.id
    ? { ...m, ...item.message, reactions: item.message.reactions ?? m.reactions } : m));
}

/** An agent's reply streams into its message: apply the `message.delta` frames it does not
 * hold yet (`index` above what the loaded text holds, `meta.deltas`), in order. Deltas that
 * arrive before their message wait in `early` until it does. */
function stream(list, delta, early) {
  const m = list.find((x) => x.id === delta.message_id);
  if (!m) {
    early.set(delta.message_id, [...(early.get(delta.message_id) ?? []), delta]);
    return list;
  }
  return list.map((x) => (x.id === delta.message_id ? applyDelta(x, delta) : x));
}

function applyDelta(m, delta) {
  const held = m.applied ?? m.meta?.deltas ?? 0;
  if (!m.meta?.streaming || delta.index <= held) return m;
  return { ...m, content: m.content.slice(0, delta.offset) + delta.text, applied: delta.index };
}

/** A message just arrived: apply the deltas that came before it. */
function withEarly(message, early) {
  const waiting = early.get(message.id);
  if (!waiting) return message;
  early.delete(message.id);
  return waiting.sort((a, b) => a.index - b.index).reduce(applyDelta, message);
}

const QUICK = "👍";

function Message({ m, me, who, firstUnread, conversationId, onChange, onError }) {
  const [editing, setEditing] = useState(false);
  const [text, setText] = useState(m.content);
  const path = `/conversations/${conversationId}/messages/${m.id}`;
  const act = async (method, url, body) => {
    try {
      onChange(await request(method, url, body));
    } catch (e) {
      onError(e);
    }
  };
  const save = async (e) => {
    e.preventDefault();
    if (text.trim() && text !== m.content) await act("PATCH", path, { content: text.trim() });
    setEditing(false);
  };
  const react = (emoji, on) =>
    act(on ? "PUT" : "DELETE", `${path}/reactions/${encodeURIComponent(emoji)}`);
  const own = m.sender_id === me && !m.pending && !m.deleted;
  const reactions = m.reactions ?? [];
  const streaming = Boolean(m.meta?.streaming && !m.deleted);
  return html`<li data-seq=${m.seq} aria-busy=${streaming ? "true" : "false"}
    class=${[m.sender_id === me ? "mine" : "", m.seq === firstUnread ? "first-unread" : "",
      m.pending ? "pending" : "", streaming ? "streaming" : ""].join(" ")}>
    <div class="meta"><strong class="sender">${who(m)}</strong>
      <time datetime=${m.created_at}>${clock(m.created_at)}</time>
      ${m.edited_at && !m.deleted && m.sender_type !== "agent"
        ? html`<span class="muted">(edited)</span>` : null}
      ${m.pending && !m.failed ? html`<span class="muted">sending…</span>` : null}
      ${m.failed ? html`<span class="problem">not sent: ${m.failed}</span>` : null}
      ${own && !editing ? html`<span class="tools">
        <button type="button" class="quiet small" aria-label="Edit message" onClick=${() => { setText(m.content); setEditing(true); }}>Edit</button>
        <button type="button" class="quiet small" aria-label="Delete message" onClick=${() => act("DELETE", path)}>Delete</button>
      </span>` : null}</div>
    ${editing
      ? html`<form class="edit" onSubmit=${save}>
          <textarea aria-label="Edit message" rows="2" value=${text}
            onInput=${(e) => setText(e.currentTarget.value)}
            onKeyDown=${(e) => { if (e.key === "Escape") setEditing(false); if (e.key === "Enter" && !e.shiftKey) save(e); }}></textarea>
          <button type="submit">Save</button>
          <button type="button" class="quiet" onClick=${() => setEditing(false)}>Cancel</button>
        </form>`
      : html`<div class="text">${m.deleted ? html`<em class="muted">This message was deleted.</em>` : m.content}</div>`}
    ${m.pending || m.deleted ? null : html`<div class="reactions">
      ${reactions.map((r) => html`<button type="button" key=${r.emoji} class=${`reaction ${r.me ? "me" : ""}`}
        aria-pressed=${r.me ? "true" : "false"} aria-label=${`${r.emoji} ${r.count}`}
        onClick=${() => react(r.emoji, !r.me)}>${r.emoji} ${r.count}</button>`)}
      ${reactions.some((r) => r.emoji === QUICK && r.me) ? null : html`<button type="button"
        class="reaction add" aria-label=${`React with ${QUICK}`} onClick=${() => react(QUICK, true)}>+${QUICK}</button>`}
    </div>`}
  </li>`;
}

function Members({ conversation, me, onClose }) {
  const [members, setMembers] = useState([]);
  const [error, setError] = useState(null);
  const load = () =>
    get(`/conversations/${conversation.id}/members`).then(setMembers, setError);
  useEffect(() => {
    load();
  }, []);
  const manage = conversation.role === "owner" || conversation.role === "admin";
  const act = async (work) => {
    try {
      await work();
      setError(null);
      await load();
    } catch (e) {
      setError(e);
    }
  };
  const add = (p) => act(() => post(`/conversations/${conversation.id}/members`, { members: [p.id] }));
  const remove = (m) => act(() => del(`/conversations/${conversation.id}/members/${m.id}`));
  return html`<${Dialog} label="Members" onClose=${onClose}>
    <ul class="members">
      ${members.map((m) => html`<li key=${m.id}>
        <span>${m.name ?? nameOf(m.id) ?? m.id}</span> <span class="muted">${m.role}</span>
        ${manage && m.id !== me ? html`<button type="button" class="quiet"
          aria-label=${`Remove ${m.name ?? nameOf(m.id) ?? m.id}`} onClick=${() => remove(m)}>Remove</button>` : null}
      </li>`)}
    </ul>
    <${Problem} error=${error} />
    ${manage ? html`<h3>Add people</h3>
      <${FindPeople} exclude=${members.map((m) => m.id)} onPick=${add} />` : null}
  <//>`;
}

function NewThread({ conversation, onClose }) {
  const [title, setTitle] = useState("");
  const [error, setError] = useState(null);
  const open = async (e) => {
    e.preventDefault();
    try {
      const t = await post(`/conversations/${conversation.id}/threads`, { title: title.trim() });
      location.hash = `#/c/${t.id}`;
      onClose();
    } catch (err) {
      setError(err);
    }
  };
  return html`<${Dialog} label="New thread" onClose=${onClose}>
    <form onSubmit=${open}>
      <label>Thread title <input required value=${title}
        onInput=${(e) => setTitle(e.currentTarget.value)} /></label>
      <${Problem} error=${error} />
      <button type="submit">Open thread</button>
    </form>
  <//>`;
}

export function Conversation({ id, me }) {
  const [conversation, setConversation] = useState(null);
  const [messages, setMessages] = useState([]);
  const early = useRef(new Map()); // message.delta frames that came before their message
  const [older, setOlder] = useState(undefined); // next_before_seq; null: the first message is here
  const [firstUnread, setFirstUnread] = useState(null);
  const [typers, setTypers] = useState({});
  const [draft, setDraft] = useState("");
  const [dialog, setDialog] = useState(null);
  const [error, setError] = useState(null);
  const [, setNames] = useState(0);
  const [other, setOther] = useState(null); // a private chat's other person: {id, status, last_seen}
  const list = useRef(null);
  const keep = useRef(null); // scroll anchor while older messages are prepended
  const stuck = useRef(true); // the view is at the bottom: follow new messages
  const loadingOlder = useRef(false);
  const readSent = useRef(0);
  const typingSent = useRef(0);

  const learn = async (items) => {
    const unknown = new Set();
    for (const m of items) {
      if (m.sender_name) remember(m.sender_id, m.sender_name);
      else if (!nameOf(m.sender_id)) unknown.add(m.sender_id);
    }
    if (unknown.size) {
      await Promise.all([...unknown].map(lookup));
      setNames((n) => n + 1);
    }
  };

  useEffect(() => {
    let alive = true;
    (async () => {
      try {
        const [c, page, members] = await Promise.all([
          get(`/conversations/${id}`),
          get(`/conversations/${id}/messages?limit=${PAGE}`),
          get(`/conversations/${id}/members`),
        ]);
        if (!alive) return;
        for (const m of members) if (m.name) remember(m.id, m.name);
        setConversation(c);
        const peer = c.type === "private" && members.find((m) => m.id !== me.user_id);
        if (peer) {
          setOther({ id: peer.id });
          get(`/presence?user_ids=${peer.id}`).then(
            ([p]) => alive && setOther((o) => (o?.id === p.user_id ? { ...o, ...p } : o)),
            () => {},
          );
        }
        const items = page.items.slice().reverse();
        setMessages((old) => items.reduce(upsert, old));
        setOlder(page.next_before_seq);
        setFirstUnread(c.last_read_seq < c.last_seq ? c.last_read_seq + 1 : null);
        learn(items);
      } catch (e) {
        if (alive) setError(e);
      }
    })();
    return () => {
      alive = false;
    };
  }, [id]);

  // live: new messages (and edits/deletions/reactions) for this conversation; typing
  useEffect(() => {
    const onInbox = ({ detail: item }) => {
      if (item.conversation_id !== id) return;
      if (item.kind && item.kind !== "message") {
        setMessages((old) => patch(old, item, me.user_id));
        return;
      }
      learn([item.message]);
      setMessages((old) => upsert(old, withEarly(item.message, early.current)));
      setTypers((t) => {
        const rest = { ...t };
        delete rest[item.message.sender_id];
        return rest;
      });
    };
    const onTyping = ({ detail: f }) => {
      if (f.conversation_id !== id || f.user_id === me.user_id) return;
      lookup(f.user_id).then(() => setNames((n) => n + 1));
      setTypers((t) => ({ ...t, [f.user_id]: Date.now() + 6000 }));
    };
    const onPresence = ({ detail: f }) =>
      setOther((o) => (o && o.id === f.user_id ? { ...o, status: f.status, last_seen: f.last_seen } : o));
    live.live.addEventListener("presence", onPresence);
    const prune = setInterval(() => {
      setTypers((t) => {
        const now = Date.now();
        const kept = Object.fromEntries(Object.entries(t).filter(([, until]) => until > now));
        return Object.keys(kept).length === Object.keys(t).length ? t : kept;
      });
    }, 1000);
    const onDelta = ({ detail: d }) => {
      if (d.conversation_id === id) setMessages((old) => stream(old, d, early.current));
    };
    live.live.addEventListener("inbox", onInbox);
    live.live.addEventListener("typing", onTyping);
    live.live.addEventListener("message.delta", onDelta);
    return () => {
      clearInterval(prune);
      live.live.removeEventListener("presence", onPresence);
      live.live.removeEventListener("inbox", onInbox);
      live.live.removeEventListener("typing", onTyping);
      live.live.removeEventListener("message.delta", onDelta);
    };
  }, [id]);

  // the read marker follows what is on screen (while the tab is visible)
  const newest = messages.reduce((top, m) => (m.pending ? top : Math.max(top, m.seq)), 0);
  useEffect(() => {
    const markRead = () => {
      if (document.visibilityState !== "visible" || !stuck.current) return;
      if (newest > readSent.current) {
        readSent.current = newest;
        post(`/conversations/${id}/read`, { seq: newest }).catch(() => {
          readSent.current = 0;
        });
      }
    };
    markRead();
    document.addEventListener("visibilitychange", markRead);
    return () => document.removeEventListener("visibilitychange", markRead);
  }, [id, newest]);

  useLayoutEffect(() => {
    const el = list.current;
    if (!el) return;
    if (keep.current !== null) {
      el.scrollTop = el.scrollHeight - keep.current;
      keep.current = null;
    } else if (stuck.current) {
      el.scrollTop = el.scrollHeight;
    }
  }, [messages]);

  const loadOlder = async () => {
    if (loadingOlder.current || !older) return;
    loadingOlder.current = true;
    try {
      const page = await get(`/conversations/${id}/messages?before_seq=${older}&limit=${PAGE}`);
      const el = list.current;
      keep.current = el ? el.scrollHeight - el.scrollTop : null;
      setMessages((old) => page.items.reduce(upsert, old));
      setOlder(page.next_before_seq);
      learn(page.items);
    } catch (e) {
      setError(e);
    } finally {
      loadingOlder.current = false;
    }
  };

  const onScroll = (e) => {
    const el = e.currentTarget;
    stuck.current = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
    if (el.scrollTop < 80) loadOlder();
    if (stuck.current && newest > readSent.current && document.visibilityState === "visible") {
      readSent.current = newest;
      post(`/conversations/${id}/read`, { seq: newest }).catch(() => {});
    }
  };

  // not enough history to scroll yet: fetch older pages until the list overflows
  useEffect(() => {
    const el = list.current;
    if (el && older && el.scrollHeight <= el.clientHeight) loadOlder();
  }, [messages, older]);

  const send = async (e) => {
    e?.preventDefault();
    const content = draft.trim();
    if (!content) return;
    const client_msg_id = newId();
    const pending = { id: `pending-${client_msg_id}`, client_msg_id, seq: Number.MAX_SAFE_INTEGER,
      sender_id: me.user_id, content, created_at: new Date().toISOString(), pending: true };
    setDraft("");
    stuck.current = true;
    setMessages((old) => upsert(old, pending));
    try {
      const message = await post(`/conversations/${id}/messages`, { content, client_msg_id });
      setMessages((old) => upsert(old, message));
    } catch (err) {
      setMessages((old) => old.map((m) => (m.id === pending.id ? { ...m, failed: err.message } : m)));
    }
  };

  const onInput = (e) => {
    setDraft(e.currentTarget.value);
    if (Date.now() - typingSent.current > 3000) {
      typingSent.current = Date.now();
      live.typing(id);
    }
  };
  const onKey = (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) send(e);
  };

  const typing = Object.keys(typers).map((u) => nameOf(u) ?? u);
  const group = conversation && conversation.type !== "private";
  const who = (m) => m.sender_name ?? nameOf(m.sender_id) ?? m.sender_id;
  return html`<section class="conversation" aria-label="Conversation">
    <header class="bar">
      <h1>${conversation ? conversationTitle(conversation) : "…"}</h1>
      ${other?.status ? html`<span class=${`presence ${other.status}`}>${other.status === "online"
        ? "online" : other.last_seen ? `last seen ${clock(other.last_seen)}` : "offline"}</span>` : null}
      ${group ? html`<button type="button" onClick=${() => setDialog("members")}>Members</button>` : null}
      ${conversation?.type === "group" ? html`<button type="button" onClick=${() => setDialog("thread")}>New thread</button>` : null}
    </header>
    <${Problem} error=${error} />
    <div class="scroller" ref=${list} onScroll=${onScroll}>
      ${older === null ? html`<p class="muted start">The beginning of this conversation.</p>` : null}
      ${older ? html`<p class="muted start">Loading older messages…</p>` : null}
      <ol class="messages" aria-label="Messages">
        ${messages.map((m) => html`<${Message} key=${m.id} m=${m} me=${me.user_id} who=${who}
          firstUnread=${firstUnread} conversationId=${id} onError=${setError}
          onChange=${(changed) => setMessages((old) => patch(old, { message: changed }, me.user_id))} />`)}
      </ol>
    </div>
    <p class="typing" aria-live="polite">${typing.length ? `${typing.join(", ")} ${typing.length > 1 ? "are" : "is"} typing…` : ""}</p>
    <form class="composer" onSubmit=${send}>
      <textarea aria-label="Message" rows="2" placeholder="Write a message" value=${draft}
        onInput=${onInput} onKeyDown=${onKey}></textarea>
      <button type="submit">Send</button>
    </form>
    ${dialog === "members" ? html`<${Members} conversation=${conversation} me=${me.user_id} onClose=${() => setDialog(null)} />` : null}
    ${dialog === "thread" ? html`<${NewThread} conversation=${conversation} onClose=${() => setDialog(null)} />` : null}
  </section>`;
}
