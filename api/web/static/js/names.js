// Display names for ids: what the API tells us in passing (members, search results,
// `sender_name`), else looked up once per id with GET /users/{id}; the id itself when unknown.

import { get } from "./api.js";

const known = new Map();
const pending = new Map();

export function remember(id, name) {
  if (id && name) known.set(String(id), name);
}

export function nameOf(id) {
  return known.get(String(id)) ?? null;
}

/** The name for an id, fetching it if needed (resolves to the id when there is none). */
export async function lookup(id) {
  const key = String(id);
  if (known.has(key)) return known.get(key);
  if (!pending.has(key)) {
    pending.set(
      key,
      get(`/users/${key}`)
        .then((u) => {
          remember(key, u.display_name || u.username);
          return known.get(key);
        })
        .catch(() => key),
    );
  }
  return pending.get(key);
}

export function clock(iso) {
  if (!iso) return "";
  const when = new Date(iso);
  const today = new Date().toDateString() === when.toDateString();
  const time = when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return today ? time : `${when.toLocaleDateString()} ${time}`;
}

export function newId() {
  return crypto.randomUUID();
}
