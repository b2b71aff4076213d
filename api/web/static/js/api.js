// The REST API: bearer tokens kept across reloads, refreshed before they expire (and once on
// a 401), and problem+json errors turned into ApiError.

const KEY = "chatee.auth";
const listeners = new Set();

/** @typedef {{user_id: string, token: string, refresh_token: string, expires_at: number}} Auth */

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

/** @returns {Auth | null} */
export function auth() {
  try {
    return JSON.parse(localStorage.getItem(KEY) || "null");
  } catch {
    return null;
  }
}

function store(pair) {
  if (pair === null) {
    localStorage.removeItem(KEY);
  } else {
    const saved = {
      user_id: pair.user_id,
      token: pair.token,
      refresh_token: pair.refresh_token,
      expires_at: Date.now() + pair.expires_in * 1000,
    };
    localStorage.setItem(KEY, JSON.stringify(saved));
  }
  for (const listener of listeners) listener(auth());
}

/** Called with the new Auth (or null) whenever this tab signs in, refreshes or signs out. */
export function onAuth(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

// another tab signed in or out, or refreshed the shared tokens
window.addEventListener("storage", (e) => {
  if (e.key === KEY) for (const listener of listeners) listener(auth());
});

async function parse(response) {
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = { detail: text };
  }
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

export async function signIn(username, password, create) {
  const path = create ? "/api/v1/auth/register" : "/api/v1/auth/login";
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username, password }),
  });
  store(await parse(response));
}

export async function signOut() {
  const current = auth();
  if (current) {
    try {
      await request("POST", "/auth/logout", { refresh_token: current.refresh_token });
    } catch {
      // signed out here whatever the server says
    }
  }
  store(null);
}

let refreshing = null;

/** Trade the refresh token for a new pair. Tabs share one login, so they take turns (a
 * refresh token is spent by use) and a tab that finds a fresher token uses it. */
export function refresh(stale) {
  refreshing ??= (async () => {
    const run = async () => {
      const current = auth();
      if (!current) throw new ApiError(401, { detail: "signed out" });
      if (current.token !== stale && current.expires_at - Date.now() > 30_000) return current;
      const response = await fetch("/api/v1/auth/refresh", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ refresh_token: current.refresh_token }),
      });
      if (response.status === 401) {
        store(null);
        throw new ApiError(401, { detail: "signed out: please sign in again" });
      }
      store(await parse(response));
      return auth();
    };
    return navigator.locks ? navigator.locks.request("chatee-refresh", run) : run();
  })().finally(() => {
    refreshing = null;
  });
  return refreshing;
}

/** A fresh access token (refreshed first when it expires within a minute). */
export async function token() {
  const current = auth();
  if (!current) throw new ApiError(401, { detail: "signed out" });
  if (current.expires_at - Date.now() < 60_000) return (await refresh(current.token)).token;
  return current.token;
}

/** fetch() under /api/v1 with the bearer token; one retry after refreshing on a 401. */
export async function raw(method, path, body, headers = {}, signal = undefined) {
  const send = (bearer) => {
    const init = { method, signal, headers: { Authorization: `Bearer ${bearer}`, ...headers } };
    if (body instanceof FormData) {
      init.body = body;
    } else if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(`/api/v1${path}`, init);
  };
  const bearer = await token();
  let response = await send(bearer);
  if (response.status === 401 && auth()) response = await send((await refresh(bearer)).token);
  return response;
}

export async function request(method, path, body) {
  return parse(await raw(method, path, body));
}

export const get = (path) => request("GET", path);
export const post = (path, body) => request("POST", path, body ?? {});
export const put = (path, body) => request("PUT", path, body);
export const del = (path) => request("DELETE", path);
