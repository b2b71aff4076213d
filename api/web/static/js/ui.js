// Small shared pieces: a modal dialog, the people search, an error line.

import { get } from "./api.js";
import { html, useEffect, useRef, useState } from "./html.js";
import { remember } from "./names.js";

/** A modal dialog: focus moves into it, Escape or the Close button closes it. */
export function Dialog({ label, onClose, children }) {
  const box = useRef(null);
  useEffect(() => {
    const back = document.activeElement;
    box.current?.querySelector("input, textarea, select, button")?.focus();
    return () => back?.focus?.();
  }, []);
  const onKey = (e) => {
    if (e.key === "Escape") onClose();
  };
  return html`<div class="backdrop" onClick=${(e) => e.target === e.currentTarget && onClose()}>
    <div class="dialog" role="dialog" aria-modal="true" aria-label=${label} ref=${box}
      onKeyDown=${onKey}>
      <header><h2>${label}</h2>
        <button type="button" class="quiet" onClick=${onClose}>Close</button></header>
      ${children}
    </div>
  </div>`;
}

export function Problem({ error }) {
  if (!error) return null;
  return html`<p class="problem" role="alert">${error.message || String(error)}</p>`;
}

/** `Find people`: prefix search on username and display name; each result is a button
 * named by the person's display name. */
export function FindPeople({ onPick, exclude = [] }) {
  const [q, setQ] = useState("");
  const [found, setFound] = useState([]);
  const [error, setError] = useState(null);
  useEffect(() => {
    const text = q.trim();
    if (!text) {
      setFound([]);
      return undefined;
    }
    let live = true;
    const wait = setTimeout(async () => {
      try {
        const page = await get(`/users?q=${encodeURIComponent(text)}&limit=10`);
        if (!live) return;
        for (const u of page.items) remember(u.id, u.display_name || u.username);
        setFound(page.items);
        setError(null);
      } catch (e) {
        if (live) setError(e);
      }
    }, 150);
    return () => {
      live = false;
      clearTimeout(wait);
    };
  }, [q]);
  const shown = found.filter((u) => !exclude.includes(u.id));
  return html`<div class="find">
    <input type="search" aria-label="Find people" placeholder="Find people by name"
      value=${q} onInput=${(e) => setQ(e.currentTarget.value)} />
    <${Problem} error=${error} />
    <ul class="results" aria-label="People found">
      ${shown.map(
        (u) => html`<li key=${u.id}>
          <button type="button" onClick=${() => onPick(u)}>${u.display_name || u.username}</button>
          <span class="muted" aria-hidden="true">@${u.username}</span>
        </li>`,
      )}
      ${q.trim() && !shown.length && !error ? html`<li class="muted">Nobody found</li>` : null}
    </ul>
  </div>`;
}
