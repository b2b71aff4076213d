// The app's root: signed out → the sign-in form; signed in → the chat list and the open
// screen, chosen by the location hash (#/c/<conversation>, #/s/<session>, #/agents/<id|new>).

import { auth, get, onAuth, signIn, signOut } from "./api.js";
import { Conversation } from "./conversation.js";
import { html, render, useEffect, useState } from "./html.js";
import * as live from "./live.js";
import { AgentEditor } from "./agents.js";
import { Session } from "./session.js";
import { Sidebar } from "./sidebar.js";
import { Problem } from "./ui.js";

function SignIn() {
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const go = async (create) => {
    setBusy(true);
    setError(null);
    try {
      await signIn(username.trim(), password, create);
    } catch (e) {
      setError(e);
      setBusy(false);
    }
  };
  const submit = (e) => {
    e.preventDefault();
    const create = e.submitter?.value === "create";
    go(create);
  };
  return html`<main class="signin">
    <form onSubmit=${submit} aria-label="Sign in to Chatee">
      <h1>Chatee</h1>
      <label>Username
        <input name="username" autocomplete="username" required value=${username}
          onInput=${(e) => setUsername(e.currentTarget.value)} /></label>
      <label>Password
        <input name="password" type="password" autocomplete="current-password" required
          value=${password} onInput=${(e) => setPassword(e.currentTarget.value)} /></label>
      <${Problem} error=${error} />
      <div class="row">
        <button type="submit" value="signin" disabled=${busy}>Sign in</button>
        <button type="submit" value="create" class="secondary" disabled=${busy}>
          Create account</button>
      </div>
    </form>
  </main>`;
}

function route() {
  const [, kind, id] = location.hash.match(/^#\/(c|s|agents)\/([\w-]+)/) || [];
  return kind ? { kind, id } : { kind: "home" };
}

function Shell({ me }) {
  const [where, setWhere] = useState(route());
  const [profile, setProfile] = useState(null);
  const [status, setStatus] = useState(live.status);
  useEffect(() => {
    const onHash = () => setWhere(route());
    const onStatus = (e) => setStatus(e.detail);
    window.addEventListener("hashchange", onHash);
    live.live.addEventListener("status", onStatus);
    live.start();
    get("/me").then(setProfile, () => setProfile({ id: me.user_id }));
    return () => {
      window.removeEventListener("hashchange", onHash);
      live.live.removeEventListener("status", onStatus);
      live.stop();
    };
  }, [me.user_id]);
  let screen = html`<section class="empty"><p>Pick a chat, or start one.</p></section>`;
  if (where.kind === "c") screen = html`<${Conversation} key=${where.id} id=${where.id} me=${me} />`;
  if (where.kind === "s") screen = html`<${Session} key=${where.id} id=${where.id} />`;
  if (where.kind === "agents") screen = html`<${AgentEditor} key=${where.id} id=${where.id} />`;
  return html`<div class="shell">
    <${Sidebar} me=${me} profile=${profile} where=${where} status=${status}
      onSignOut=${signOut} />
    <main class="main">${screen}</main>
  </div>`;
}

function App() {
  const [me, setMe] = useState(auth());
  useEffect(() => onAuth((a) => setMe((old) => (old?.user_id === a?.user_id ? old : a))), []);
  return me ? html`<${Shell} key=${me.user_id} me=${me} />` : html`<${SignIn} />`;
}

render(html`<${App} />`, document.getElementById("root"));
