// The chat list: private chats, groups, threads and agent sessions, most recent first, with
// unread counts kept current by the live inbox; and the buttons that start new chats.

import { get, post } from "./api.js";
import { html, useEffect, useState } from "./html.js";
import { live } from "./live.js";
import { lookup, nameOf, remember } from "./names.js";
import { Dialog, FindPeople, Problem } from "./ui.js";

const titles = new Map(); // private conversation id -> the other person's name

async function privateTitle(conversation, me) {
  if (titles.has(conversation.id)) return titles.get(conversation.id);
  const members = await get(`/conversations/${conversation.id}/members`);
  for (const m of members) if (m.name) remember(m.id, m.name);
  const other = members.find((m) => m.id !== me) ?? members[0];
  const name = other ? (other.name ?? nameOf(other.id) ?? (await lookup(other.id))) : "Chat";
  titles.set(conversation.id, name);
  return name;
}

export function conversationTitle(c) {
  if (c.type === "private") return titles.get(c.id) ?? "Private chat";
  if (c.type === "thread") return `# ${c.title ?? "thread"}`;
  return c.title || "Group";
}

function NewChat({ onClose }) {
  const [error, setError] = useState(null);
  const open = async (person) => {
    try {
      const c = await post("/conversations", { type: "private", members: [person.id] });
      titles.set(c.id, person.display_name || person.username);
      location.hash = `#/c/${c.id}`;
      onClose();
    } catch (e) {
      setError(e);
    }
  };
  return html`<${Dialog} label="New chat" onClose=${onClose}>
    <${FindPeople} onPick=${open} />
    <${Problem} error=${error} />
  <//>`;
}

function NewGroup({ onClose }) {
  const [title, setTitle] = useState("");
  const [people, setPeople] = useState([]);
  const [error, setError] = useState(null);
  const create = async (e) => {
    e.preventDefault();
    try {
      const members = people.map((p) => p.id);
      const c = await post("/conversations", { type: "group", title: title.trim(), members });
      location.hash = `#/c/${c.id}`;
      onClose();
    } catch (err) {
      setError(err);
    }
  };
  return html`<${Dialog} label="New group" onClose=${onClose}>
    <form onSubmit=${create}>
      <label>Group name <input required value=${title}
        onInput=${(e) => setTitle(e.currentTarget.value)} /></label>
      <p>Members: ${people.length ? people.map((p) => p.display_name || p.username).join(", ") : "just you so far"}</p>
      <${FindPeople} exclude=${people.map((p) => p.id)}
        onPick=${(p) => setPeople((old) => [...old, p])} />
      <${Problem} error=${error} />
      <button type="submit">Create group</button>
    </form>
  <//>`;
}

function NewAgentChat({ agents, onClose }) {
  const [error, setError] = useState(null);
  const start = async (agent) => {
    try {
      const s = await post("/sessions", { agent_id: agent.id });
      location.hash = `#/s/${s.id}`;
      onClose();
    } catch (e) {
      setError(e);
    }
  };
  return html`<${Dialog} label="New agent chat" onClose=${onClose}>
    <p>Choose an agent:</p>
    <ul class="results" aria-label="Agents">
      ${agents.map((a) => html`<li key=${a.id}>
        <button type="button" onClick=${() => start(a)}>${a.name}</button>
        <span class="muted" aria-hidden="true">${a.model}</span></li>`)}
    </ul>
    ${agents.length ? null : html`<p>No agents yet.</p>`}
    <p><a href="#/agents/new" onClick=${onClose}>Create an agent</a></p>
    <${Problem} error=${error} />
  <//>`;
}

function activity(item) {
  return item.last_message_at || item.created_at || "";
}

export function Sidebar({ me, profile, where, status, onSignOut }) {
  const [convs, setConvs] = useState([]);
  const [sessions, setSessions] = useState([]);
  const [agents, setAgents] = useState([]);
  const [dialog, setDialog] = useState(null);
  const [error, setError] = useState(null);
  const [, setTick] = useState(0);

  const reload = async () => {
    try {
      const [c, s, a] = await Promise.all([
        get("/conversations?limit=200"),
        get("/sessions?limit=100"),
        get("/agents"),
      ]);
      setConvs(c);
      setSessions(s);
      setAgents(a);
      setError(null);
      await Promise.all(
        c.filter((x) => x.type === "private").map((x) => privateTitle(x, me.user_id).catch(() => null)),
      );
      setTick((n) => n + 1);
    } catch (e) {
      setError(e);
    }
  };

  useEffect(() => {
    reload();
  }, []);
  useEffect(() => {
    const known = (list) => list.some((x) => x.id === where.id);
    if (where.kind === "c" && !known(convs)) reload();
    if (where.kind === "s" && !known(sessions)) reload();
    if (where.kind === "home" || where.kind === "agents") reload();
  }, [where.kind, where.id]);

  useEffect(() => {
    const onInbox = ({ detail: item }) => {
      const msg = item.message;
      if (item.kind && item.kind !== "message") {
        if (item.kind === "member") reload();
        return;
      }
      let found = false;
      setConvs((old) =>
        old.map((c) => {
          if (c.id !== item.conversation_id) return c;
          found = true;
          const last_seq = Math.max(c.last_seq, msg.seq);
          const mine = msg.sender_id === me.user_id;
          const last_read_seq = mine ? Math.max(c.last_read_seq, msg.seq) : c.last_read_seq;
          return { ...c, last_seq, last_read_seq, unread: Math.max(0, last_seq - last_read_seq),
            last_message_at: msg.created_at };
        }),
      );
      if (!found) reload();
    };
    const onRead = ({ detail: f }) => {
      setConvs((old) =>
        old.map((c) =>
          c.id === f.conversation_id
            ? { ...c, last_read_seq: Math.max(c.last_read_seq, f.seq),
                unread: Math.max(0, c.last_seq - Math.max(c.last_read_seq, f.seq)) }
            : c,
        ),
      );
    };
    live.addEventListener("inbox", onInbox);
    live.addEventListener("read", onRead);
    return () => {
      live.removeEventListener("inbox", onInbox);
      live.removeEventListener("read", onRead);
    };
  }, []);

  const agentName = (id) => agents.find((a) => a.id === id)?.name ?? "Agent";
  const items = [
    ...convs.map((c) => ({ key: `c${c.id}`, href: `#/c/${c.id}`, kind: c.type, at: activity(c),
      title: conversationTitle(c), unread: c.unread, current: where.kind === "c" && where.id === c.id })),
    ...sessions.map((s) => ({ key: `s${s.id}`, href: `#/s/${s.id}`, kind: "agent", at: activity(s),
      title: s.title || agentName(s.agent_id), unread: 0,
      current: where.kind === "s" && where.id === s.id })),
  ].sort((a, b) => (a.at < b.at ? 1 : a.at > b.at ? -1 : 0));

  const who = profile?.display_name || profile?.username || "";
  return html`<nav class="sidebar" aria-label="Chats">
    <header>
      <strong>Chatee</strong>
      <span class=${`status ${status}`} role="status" title="connection">${status}</span>
    </header>
    <div class="actions">
      <button type="button" onClick=${() => setDialog("chat")}>New chat</button>
      <button type="button" onClick=${() => setDialog("group")}>New group</button>
      <button type="button" onClick=${() => setDialog("agent")}>New agent chat</button>
    </div>
    <${Problem} error=${error} />
    <ul class="chats" aria-label="Chat list">
      ${items.map((i) => html`<li key=${i.key} class=${i.current ? "current" : ""}>
        <a href=${i.href} aria-current=${i.current ? "page" : undefined}>
          <span class=${`kind ${i.kind}`} aria-hidden="true">${i.kind[0].toUpperCase()}</span>
          <span class="title">${i.title}</span>
          ${i.unread ? html`<span class="badge" aria-label=${`${i.unread} unread`}>${i.unread}</span>` : null}
        </a></li>`)}
    </ul>
    <details class="agents">
      <summary>Agents (${agents.length})</summary>
      <ul>
        ${agents.map((a) => html`<li key=${a.id}><a href=${`#/agents/${a.id}`}>Edit ${a.name}</a></li>`)}
        <li><a href="#/agents/new">Create agent</a></li>
      </ul>
    </details>
    <footer>
      <span>${who}</span>
      <button type="button" class="quiet" onClick=${onSignOut}>Sign out</button>
    </footer>
    ${dialog === "chat" ? html`<${NewChat} onClose=${() => setDialog(null)} />` : null}
    ${dialog === "group" ? html`<${NewGroup} onClose=${() => setDialog(null)} />` : null}
    ${dialog === "agent" ? html`<${NewAgentChat} agents=${agents} onClose=${() => setDialog(null)} />` : null}
  </nav>`;
}
