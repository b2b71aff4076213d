// A real AG-UI client (`@ag-ui/client`'s HttpAgent) against Chatee, for tests/test_agui.py.
// Usage: node agui_client.mjs <node_modules dir> <url> <token> <threadId> <answer> <text>...
// Sends each text as a user message in one thread; an interrupt is answered with <answer>
// through `resume`. Prints the agent's messages as JSON. The client verifies every stream:
// a protocol violation rejects runAgent and exits non-zero.
import { createRequire } from "node:module";

const [modules, url, token, threadId, answer, ...texts] = process.argv.slice(2);
const require = createRequire(modules + "/");
const { HttpAgent, buildResumeArray } = require("@ag-ui/client");

const agent = new HttpAgent({ url, headers: { Authorization: `Bearer ${token}` }, threadId });
const interrupts = [];
for (const [i, text] of texts.entries()) {
  agent.addMessage({ id: `${threadId}-user-${i}`, role: "user", content: text });
  await agent.runAgent({ runId: `${threadId}-run-${i}` });
  while (agent.pendingInterrupts.length) {
    interrupts.push(...agent.pendingInterrupts.map((it) => it.message));
    const responses = Object.fromEntries(
      agent.pendingInterrupts.map((it) => [it.id, { status: "resolved", payload: answer }]),
    );
    const resume = buildResumeArray(agent.pendingInterrupts, responses);
    await agent.runAgent({ runId: `${threadId}-resume-${i}`, resume });
  }
}
console.log(JSON.stringify({ messages: agent.messages, interrupts }));
