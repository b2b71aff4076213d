// An agent session: the conversation with the agent, its reply streaming token by token into
// the reply's list item, the live timeline of the turn's ActionChain steps (tool calls with
// arguments and results, RAG citations), approval and answer cards for human requests,
// cancel, and a link to the session's workflow in the Temporal UI.

import { get, post } from "./api.js";
import { follow } from "./events.js";
import { html, useEffect, useLayoutEffect, useRef, useState } from "./html.js";
import { clock, newId } from "./names.js";
import { Problem } from "./ui.js";

let configured = null;
const config = () => (configured ??= fetch("/app/config.json").then((r) => r.json()).catch(() => ({})));

const APPROVAL = /^Allow the tool (.+)\? Reply yes or no\.$/;

function turnOf(turns, turnId) {
  return turns[turnId] ?? { id: turnId, steps: {}, text: {}, status: "running", request: null };
}

/** The turn after one event (a pure function of the old turn and the event). */
function apply(turn, { event, data }) {
  const t = { ...turn, steps: { ...turn.steps }, text: { ...turn.text } };
  const index = data.step;
  const step = index !== undefined ? { calls: [], ...(t.steps[index] ?? { index }) } : null;
  switch (event) {
    case "step.started":
      t.steps[index] = { ...step, action: data.action, status: "running" };
      break;
    case "step.retry":
      t.steps[index] = { ...step, retries: (step.retries ?? 0) + 1 };
      t.text[index] = ""; // the step runs again: its partial text goes
      break;
    case "message.delta":
      t.text[index ?? 0] = (t.text[index ?? 0] ?? "") + data.text;
      break;
    case "tool.call":
      t.steps[index] = { ...step, calls: [...step.calls.filter((c) => c.id !== data.tool_call_id),
        { id: data.tool_call_id, name: data.name, arguments: data.arguments }] };
      break;
    case "tool.result": {
      const calls = step.calls.some((c) => c.id === data.tool_call_id)
        ? step.calls
        : [...step.calls, { id: data.tool_call_id, name: data.name }];
      t.steps[index] = { ...step, calls: calls.map((c) => (c.id === data.tool_call_id
        ? { ...c, result: data.content, structured: data.structured_content, is_error: data.is_error }
        : c)) };
      break;
    }
    case "step.completed":
      t.steps[index] = { ...step, action: data.action ?? step.action, status: "completed",
        result: data.result, citations: data.citations };
      break;
    case "human.request":
      t.request = data;
      t.status = "waiting";
      break;
    case "turn.completed":
      t.status = "completed";
      t.content = data.content;
      t.request = null;
      break;
    case "turn.failed":
      t.status = "failed";
      t.error = data.error;
      t.request = null;
      break;
    default:
      break;
  }
  if (event !== "human.request" && event !== "turn.completed" && event !== "turn.failed" && t.request
      && event === "step.completed" && data.step === t.request.step) {
    t.request = null;
    t.status = "running";
  }
  return t;
}

function show(value) {
  if (value === undefined || value === null) return "";
  if (Array.isArray(value)) {
    return value.map((part) => (part?.type === "text" ? part.text : JSON.stringify(part))).join("\n");
  }
  return typeof value === "string" ? value : JSON.stringify(value, null, 1);
}

function Timeline({ turn }) {
  const steps = Object.values(turn.steps).sort((a, b) => a.index - b.index);
  if (!steps.length) return null;
  return html`<details class="timeline" open>
    <summary>Steps (${steps.length})</summary>
    <ol aria-label="Steps">
      ${steps.map((s) => html`<li key=${s.index} class=${`step ${s.status ?? ""}`}>
        <span class="action">${s.action ?? "step"}</span>
        <span class="state">${s.status ?? "pending"}${s.retries ? ` (retried ${s.retries}×)` : ""}</span>
        ${s.result ? html`<div class="result">${s.result}</div>` : null}
        ${s.calls?.map((c) => html`<div class="tool" key=${c.id}>
          <div>Tool call <code>${c.name}</code></div>
          ${c.arguments !== undefined ? html`<pre aria-label="Arguments">${show(c.arguments)}</pre>` : null}
          ${c.result !== undefined || c.is_error !== undefined
            ? html`<pre class=${c.is_error ? "problem" : ""} aria-label="Result">${c.is_error ? "Error: " : ""}${show(c.result)}</pre>`
            : html`<div class="muted">running…</div>`}
        </div>`)}
        ${s.citations?.length ? html`<ul class="citations" aria-label="Citations">
          ${s.citations.map((c, i) => html`<li key=${i}>${c.title || c.document_name || c.source || c.document_id || "source"}${c.text || c.snippet ? html`: <q>${(c.text || c.snippet).slice(0, 200)}</q>` : null}</li>`)}
        </ul>` : null}
      </li>`)}
    </ol>
  </details>`;
}

function HumanRequest({ sessionId, request }) {
  const [answer, setAnswer] = useState("");
  const [sent, setSent] = useState(false);
  const [error, setError] = useState(null);
  const reply = async (content) => {
    try {
      setSent(true);
      await post(`/sessions/${sessionId}/human-reply`, { request_id: request.request_id, content });
    } catch (e) {
      setSent(false);
      setError(e);
    }
  };
  const approval = request.prompt?.match(APPROVAL);
  if (approval) {
    return html`<div class="card approval" role="group" aria-label="Approval needed">
      <p>The agent wants to call the tool <code>${approval[1]}</code>.</p>
      <div class="row">
        <button type="button" disabled=${sent} onClick=${() => reply("yes")}>Approve</button>
        <button type="button" class="secondary" disabled=${sent} onClick=${() => reply("no")}>Deny</button>
      </div>
      <${Problem} error=${error} />
    </div>`;
  }
  return html`<form class="card human" aria-label="The agent asks you"
    onSubmit=${(e) => { e.preventDefault(); if (answer.trim()) reply(answer.trim()); }}>
    <p>${request.prompt}</p>
    <textarea aria-label="Answer" rows="2" value=${answer}
      onInput=${(e) => setAnswer(e.currentTarget.value)}></textarea>
    <button type="submit" disabled=${sent}>Send answer</button>
    <${Problem} error=${error} />
  </form>`;
}

export function Session({ id }) {
  const [session, setSession] = useState(null);
  const [agent, setAgent] = useState(null);
  const [history, setHistory] = useState([]); // stored messages, oldest first
  const [mine, setMine] = useState([]); // user messages sent from here, not yet in history
  const [turns, setTurns] = useState({});
  const [order, setOrder] = useState([]); // turn ids in the order they showed up
  const [older, setOlder] = useState(null);
  const [draft, setDraft] = useState("");
  const [error, setError] = useState(null);
  const [ui, setUi] = useState({});
  const stream = useRef(null);
  const scroller = useRef(null);
  const stuck = useRef(true);

  const onEvent = (ev) => {
    const turnId = ev.data?.turn_id;
    if (!turnId) return;
    setTurns((old) => ({ ...old, [turnId]: apply(turnOf(old, turnId), ev) }));
    setOrder((old) => (old.includes(turnId) ? old : [...old, turnId]));
  };

  useEffect(() => {
    let alive = true;
    config().then(setUi);
    (async () => {
      try {
        const s = await get(`/sessions/${id}`);
        const [a, page] = await Promise.all([
          get(`/agents/${s.agent_id}`).catch(() => null),
          get(`/sessions/${id}/messages?limit=50`),
        ]);
        if (!alive) return;
        setSession(s);
        setAgent(a);
        setHistory(page.items.filter((m) => m.role === "user" || m.role === "assistant").reverse());
        setOlder(page.next_before);
        // a turn already running: replay the stream so its steps show too
        const busy = s.state && s.state.status !== "idle";
        stream.current = follow(id, busy ? "0" : null, onEvent);
      } catch (e) {
        if (alive) setError(e);
      }
    })();
    return () => {
      alive = false;
      stream.current?.stop();
    };
  }, [id]);

  useLayoutEffect(() => {
    if (stuck.current && scroller.current) scroller.current.scrollTop = scroller.current.scrollHeight;
  });

  const loadOlder = async () => {
    if (!older) return;
    const page = await get(`/sessions/${id}/messages?limit=50&before=${older}`);
    setOlder(page.next_before);
    setHistory((old) => [
      ...page.items.filter((m) => m.role === "user" || m.role === "assistant").reverse(), ...old]);
  };

  const send = async (e) => {
    e?.preventDefault();
    const content = draft.trim();
    if (!content) return;
    setDraft("");
    stuck.current = true;
    try {
      await Promise.race([stream.current?.ready, new Promise((r) => setTimeout(r, 3000))]);
      const accepted = await post("/chat/send", { session_id: id, content, client_msg_id: newId() });
      setMine((old) => [...old, { id: accepted.message_id, role: "user", content,
        turn_id: accepted.turn_id, created_at: new Date().toISOString() }]);
      setOrder((old) => (old.includes(accepted.turn_id) ? old : [...old, accepted.turn_id]));
    } catch (err) {
      setError(err);
      setDraft(content);
    }
  };
  const onKey = (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) send(e);
  };
  const cancel = (turnId) =>
    post(`/sessions/${id}/cancel`, { turn_id: turnId }).catch(setError);

  const name = agent?.name ?? "Agent";
  const running = order.map((t) => turns[t]).find((t) => t && (t.status === "running" || t.status === "waiting"));
  const workflowUrl = session && ui.temporal_ui
    ? `${ui.temporal_ui}/namespaces/${encodeURIComponent(ui.temporal_namespace)}/workflows/${encodeURIComponent(session.workflow_id)}`
    : null;
  const stored = new Set(history.filter((m) => m.role === "assistant").map((m) => m.turn_id));
  const live = order.filter((t) => !stored.has(t));
  const item = (m) => html`<li key=${m.id} class=${m.role === "user" ? "mine" : "agent"}>
    <div class="meta"><strong class="sender">${m.role === "user" ? "You" : name}</strong>
      <time datetime=${m.created_at}>${clock(m.created_at)}</time></div>
    <div class="text">${m.content}</div>
    ${m.citations?.length ? html`<ul class="citations" aria-label="Citations">${m.citations.map((c, i) => html`<li key=${i}>${c.title || c.document_name || c.source || "source"}</li>`)}</ul>` : null}
  </li>`;
  const turnItem = (turnId) => {
    const t = turns[turnId] ?? turnOf({}, turnId);
    const text = t.content ?? Object.keys(t.text).sort((a, b) => a - b).map((k) => t.text[k]).join("");
    const active = t.status === "running" || t.status === "waiting";
    return html`<li key=${`turn-${turnId}`} class="agent" aria-busy=${active ? "true" : "false"}>
      <div class="meta"><strong class="sender">${name}</strong>
        <span class="muted">${active ? "working…" : t.status}</span>
        ${workflowUrl ? html`<a href=${workflowUrl} target="_blank" rel="noopener">Workflow in Temporal UI</a>` : null}
        ${active ? html`<button type="button" class="quiet" onClick=${() => cancel(turnId)}>Cancel turn</button>` : null}</div>
      <div class="text">${text}${active && !text ? html`<span class="muted">…</span>` : null}</div>
      ${t.error ? html`<p class="problem">${t.error.type === "cancelled" ? "Cancelled" : "Failed"}: ${t.error.message}</p>` : null}
      <${Timeline} turn=${t} />
      ${t.request ? html`<${HumanRequest} key=${t.request.request_id} sessionId=${id} request=${t.request} />` : null}
    </li>`;
  };
  const entries = [];
  for (const m of history) entries.push(item(m));
  for (const turnId of live) {
    const sent = mine.find((m) => m.turn_id === turnId);
    if (sent && !history.some((m) => m.id === sent.id)) entries.push(item(sent));
    entries.push(turnItem(turnId));
  }
  return html`<section class="conversation session" aria-label="Agent chat">
    <header class="bar">
      <h1>${name}</h1>
      ${agent ? html`<a href=${`#/agents/${agent.id}`}>Edit agent</a>` : null}
      ${workflowUrl ? html`<a href=${workflowUrl} target="_blank" rel="noopener">Session workflow</a>` : null}
    </header>
    <${Problem} error=${error} />
    <div class="scroller" ref=${scroller}
      onScroll=${(e) => { const el = e.currentTarget; stuck.current = el.scrollHeight - el.scrollTop - el.clientHeight < 40; }}>
      ${older ? html`<button type="button" class="quiet" onClick=${loadOlder}>Load older messages</button>` : null}
      <ol class="messages" aria-label="Messages">${entries}</ol>
    </div>
    <form class="composer" onSubmit=${send}>
      <textarea aria-label="Message" rows="2" placeholder=${`Message ${name}`} value=${draft}
        onInput=${(e) => setDraft(e.currentTarget.value)} onKeyDown=${onKey}></textarea>
      <button type="submit">Send</button>
      ${running ? html`<button type="button" class="secondary" onClick=${() => cancel(running.id)}>Cancel</button>` : null}
    </form>
  </section>`;
}
