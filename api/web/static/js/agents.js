// Building an agent: name, model, system prompt, the chain template (with the API's
// validation errors shown next to the field they concern), MCP servers, knowledge bases with
// document upload and ingestion progress, and the double-texting policy.

import { ApiError, get, post, put, request } from "./api.js";
import { html, useEffect, useState } from "./html.js";
import { Problem } from "./ui.js";

let justCreated = null; // the id of the agent this tab just created: its editor says "Saved."

const POLICIES = ["queue", "interrupt", "reject", "rollback"];
const BLANK = {
  name: "", provider: "", model: "", system_prompt: "", temperature: "",
  chain: '["AG_SELF_GEN"]', mcp_servers: [], double_texting: "queue",
};

/** problem+json `errors` ({loc, msg}) by field name: "chain", "name", … */
function fieldErrors(error) {
  const out = {};
  for (const e of error?.problem?.errors ?? []) {
    const field = e.loc?.[0] === "body" ? e.loc[1] : e.loc?.[0];
    if (field) out[field] = [...(out[field] ?? []), e.msg];
  }
  return out;
}

function FieldError({ id, messages }) {
  if (!messages?.length) return null;
  return html`<p class="problem field" id=${id} role="alert">${messages.join("; ")}</p>`;
}

function Documents({ kb }) {
  const [docs, setDocs] = useState([]);
  const [error, setError] = useState(null);
  const load = () => get(`/knowledge-bases/${kb.id}/documents`).then((p) => setDocs(p.items), setError);
  useEffect(() => {
    load();
  }, [kb.id]);
  useEffect(() => {
    if (!docs.some((d) => d.status !== "ready" && d.status !== "failed")) return undefined;
    const again = setTimeout(load, 1000); // ingestion progress
    return () => clearTimeout(again);
  }, [docs]);
  const upload = async (e) => {
    const file = e.currentTarget.files?.[0];
    if (!file) return;
    const form = new FormData();
    form.append("file", file);
    try {
      await request("POST", `/knowledge-bases/${kb.id}/documents`, form);
      e.target.value = "";
      await load();
    } catch (err) {
      setError(err);
    }
  };
  return html`<div class="docs">
    <ul aria-label=${`Documents in ${kb.name}`}>
      ${docs.map((d) => html`<li key=${d.id}>${d.name} — ${d.status}
        ${d.progress?.chunks_total ? ` (${d.progress.chunks_embedded}/${d.progress.chunks_total} chunks)` : ""}
        ${d.error ? html` <span class="problem">${d.error}</span>` : null}</li>`)}
    </ul>
    <label>Upload a document to ${kb.name}
      <input type="file" accept=".txt,.md,.markdown,.html,.htm,.pdf,text/*,application/pdf" onChange=${upload} /></label>
    <${Problem} error=${error} />
  </div>`;
}

export function AgentEditor({ id }) {
  const creating = id === "new";
  const [form, setForm] = useState(BLANK);
  const [servers, setServers] = useState([]);
  const [kbs, setKbs] = useState([]);
  const [linked, setLinked] = useState([]);
  const [newKb, setNewKb] = useState("");
  const [error, setError] = useState(null);
  const [saved, setSaved] = useState(justCreated === id);

  useEffect(() => {
    get("/mcp/servers").then(setServers, () => setServers([]));
    get("/knowledge-bases").then(setKbs, () => setKbs([]));
    if (!creating) {
      get(`/agents/${id}`).then(
        (a) => setForm({ ...BLANK, ...a, temperature: a.temperature ?? "",
          chain: JSON.stringify(a.chain, null, 2) }),
        setError,
      );
      get(`/agents/${id}/knowledge-bases`).then((l) => setLinked(l.knowledge_base_ids), () => {});
    }
  }, [id]);

  const set = (field) => (e) => {
    setSaved(false);
    setForm({ ...form, [field]: e.currentTarget.value });
  };
  const toggle = (list, value) => (list.includes(value) ? list.filter((x) => x !== value) : [...list, value]);

  const save = async (e) => {
    e.preventDefault();
    setSaved(false);
    let chain;
    try {
      chain = JSON.parse(form.chain);
    } catch (err) {
      setError(new ApiError(422, { detail: "the chain template is not valid JSON",
        errors: [{ loc: ["body", "chain"], msg: `not valid JSON: ${err.message}` }] }));
      return;
    }
    const body = {
      name: form.name.trim(),
      system_prompt: form.system_prompt,
      model: form.model.trim() || null,
      provider: form.provider.trim() || null,
      temperature: form.temperature === "" ? null : Number(form.temperature),
      mcp_servers: form.mcp_servers,
      chain,
      double_texting: form.double_texting,
    };
    try {
      const agent = creating ? await post("/agents", body) : await put(`/agents/${id}`, body);
      await put(`/agents/${agent.id}/knowledge-bases`, { knowledge_base_ids: linked });
      setError(null);
      setSaved(true);
      if (creating) {
        justCreated = agent.id;
        location.hash = `#/agents/${agent.id}`;
      }
    } catch (err) {
      setError(err);
    }
  };

  const addKb = async () => {
    if (!newKb.trim()) return;
    try {
      const kb = await post("/knowledge-bases", { name: newKb.trim() });
      setKbs([...kbs, kb]);
      setLinked([...linked, kb.id]);
      setNewKb("");
    } catch (err) {
      setError(err);
    }
  };

  const errors = fieldErrors(error);
  const described = (field) => (errors[field] ? `${field}-error` : undefined);
  return html`<section class="editor" aria-label=${creating ? "New agent" : "Edit agent"}>
    <header class="bar"><h1>${creating ? "New agent" : `Edit ${form.name}`}</h1>
      ${creating ? null : html`<button type="button" onClick=${async () => {
        try { const s = await post("/sessions", { agent_id: id }); location.hash = `#/s/${s.id}`; }
        catch (err) { setError(err); } }}>Chat with this agent</button>`}</header>
    <form onSubmit=${save} class="scroller">
      <label>Name <input required value=${form.name} onInput=${set("name")}
        aria-invalid=${errors.name ? "true" : undefined} aria-describedby=${described("name")} /></label>
      <${FieldError} id="name-error" messages=${errors.name} />
      <div class="row">
        <label>Provider <input value=${form.provider} placeholder="default" onInput=${set("provider")} /></label>
        <label>Model <input value=${form.model} placeholder="default" onInput=${set("model")}
          aria-describedby=${described("model")} /></label>
        <label>Temperature <input type="number" step="0.1" min="0" max="2" value=${form.temperature}
          onInput=${set("temperature")} aria-describedby=${described("temperature")} /></label>
      </div>
      <${FieldError} id="model-error" messages=${[...(errors.model ?? []), ...(errors.provider ?? []), ...(errors.temperature ?? [])]} />
      <label>System prompt <textarea rows="4" value=${form.system_prompt} onInput=${set("system_prompt")}></textarea></label>
      <label>Chain template <textarea rows="6" class="code" spellcheck="false" value=${form.chain}
        onInput=${set("chain")} aria-invalid=${errors.chain ? "true" : undefined}
        aria-describedby=${described("chain")}></textarea></label>
      <p class="muted">Action names or objects, e.g. ["AG_MEMORY_LOAD", {"type": "AG_RAG", "top_k": 4}, "AG_SELF_GEN"].</p>
      <${FieldError} id="chain-error" messages=${errors.chain} />
      <label>Double texting
        <select value=${form.double_texting} onChange=${set("double_texting")}>
          ${POLICIES.map((p) => html`<option value=${p}>${p}</option>`)}
        </select></label>
      <fieldset><legend>MCP servers</legend>
        ${servers.length ? null : html`<p class="muted">None registered.</p>`}
        ${servers.map((s) => html`<label class="check" key=${s.id}><input type="checkbox"
          checked=${form.mcp_servers.includes(s.id)}
          onChange=${() => setForm({ ...form, mcp_servers: toggle(form.mcp_servers, s.id) })} /> ${s.name}</label>`)}
      </fieldset>
      <${FieldError} id="mcp-error" messages=${errors.mcp_servers} />
      <fieldset><legend>Knowledge bases</legend>
        ${kbs.map((kb) => html`<div key=${kb.id}><label class="check"><input type="checkbox"
          checked=${linked.includes(kb.id)} onChange=${() => setLinked(toggle(linked, kb.id))} /> ${kb.name}</label>
          <${Documents} kb=${kb} /></div>`)}
        <div class="row"><label>New knowledge base <input value=${newKb}
          onInput=${(e) => setNewKb(e.currentTarget.value)} /></label>
          <button type="button" onClick=${addKb}>Add knowledge base</button></div>
      </fieldset>
      ${error && !Object.keys(errors).length ? html`<${Problem} error=${error} />` : null}
      ${error && Object.keys(errors).length ? html`<p class="problem" role="alert">Not saved: fix the fields marked above.</p>` : null}
      ${saved ? html`<p role="status">Saved.</p>` : null}
      <button type="submit">${creating ? "Create agent" : "Save agent"}</button>
    </form>
  </section>`;
}
