"""The ActionChain: what an agent does in one turn, as a list of typed steps.

An agent's `chain` template is a list whose items are an action name (`"AG_SELF_GEN"`) or an
object with a `type` and that action's parameters. `ChainBuilder` builds the same thing fluently.
Pure data and validation — safe to import from workflows and from the API.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

AG_ACCEPT = "AG_ACCEPT"
AG_REFUSE = "AG_REFUSE"
AG_SELF_GEN = "AG_SELF_GEN"
AG_SELF_DECIDE = "AG_SELF_DECIDE"
AG_USE_MCP = "AG_USE_MCP"
AG_CALL_AG = "AG_CALL_AG"
AG_CALL_HUMAN = "AG_CALL_HUMAN"
AG_RAG = "AG_RAG"
AG_MEMORY_LOAD = "AG_MEMORY_LOAD"
AG_MEMORY_STORE = "AG_MEMORY_STORE"

ACTION_TYPES = (
    AG_ACCEPT,
    AG_REFUSE,
    AG_SELF_GEN,
    AG_SELF_DECIDE,
    AG_USE_MCP,
    AG_CALL_AG,
    AG_CALL_HUMAN,
    AG_RAG,
    AG_MEMORY_LOAD,
    AG_MEMORY_STORE,
)


@dataclass
class Action:
    type: str
    params: dict[str, Any] = field(default_factory=dict)


class ChainError(ValueError):
    """A chain template that cannot run; the message says where and why."""


# parameter name -> (accepted types, required)
_PARAMS: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    AG_ACCEPT: {"text": ((str,), False)},
    AG_REFUSE: {"text": ((str,), False)},
    AG_SELF_GEN: {"max_tool_rounds": ((int,), False), "instructions": ((str,), False)},
    AG_SELF_DECIDE: {
        "question": ((str,), False),
        "options": ((list,), True),
        "branches": ((dict,), False),
    },
    AG_USE_MCP: {
        "server_id": ((str,), True),
        "tool": ((str,), True),
        "arguments": ((dict,), False),
    },
    # another Chatee agent of the same owner (`agent_id`), or a remote A2A agent (`a2a_url`,
    # with the HTTP `headers` it needs — secrets: see chatee/a2a_remote.py)
    AG_CALL_AG: {
        "agent_id": ((str,), False),
        "a2a_url": ((str,), False),
        "headers": ((dict,), False),
        "task": ((str,), False),
    },
    AG_CALL_HUMAN: {
        "prompt": ((str,), False),
        "timeout_seconds": ((int, float), False),
        "on_timeout": ((str,), False),
    },
    AG_RAG: {"top_k": ((int,), False), "query": ((str,), False)},
    AG_MEMORY_LOAD: {"scope": ((str,), False)},
    AG_MEMORY_STORE: {"key": ((str,), False), "value": ((str,), False), "scope": ((str,), False)},
}
MAX_STEPS = 32
MAX_DEPTH = 3
MAX_URL_CHARS = 2048
MAX_HEADERS = 20
MAX_HEADER_CHARS = 8192
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an RFC 9110 token


def parse_chain(template: list[Any], where: str = "chain", depth: int = 0) -> list[Action]:
    """Validate a chain template and turn it into Actions."""
    if not isinstance(template, list) or not template:
        raise ChainError(f"{where}: must be a non-empty list of actions")
    if len(template) > MAX_STEPS:
        raise ChainError(f"{where}: at most {MAX_STEPS} actions")
    return [_parse_action(item, f"{where}[{i}]", depth) for i, item in enumerate(template)]


def _parse_action(item: Any, where: str, depth: int) -> Action:
    if isinstance(item, str):
        item = {"type": item}
    if not isinstance(item, dict) or not isinstance(item.get("type"), str):
        raise ChainError(f"{where}: an action is a name or an object with a 'type'")
    kind = item["type"]
    if kind not in _PARAMS:
        raise ChainError(f"{where}: unknown action {kind!r}; known: {', '.join(ACTION_TYPES)}")
    params = {k: v for k, v in item.items() if k != "type"}
    spec = _PARAMS[kind]
    for name, value in params.items():
        if name not in spec:
            raise ChainError(f"{where}: {kind} takes no parameter {name!r}")
        types, _ = spec[name]
        if isinstance(value, bool) or not isinstance(value, types):
            raise ChainError(f"{where}.{name}: expected {' or '.join(t.__name__ for t in types)}")
    for name, (_, required) in spec.items():
        if required and name not in params:
            raise ChainError(f"{where}: {kind} needs {name!r}")
    _check_specifics(kind, params, where, depth)
    return Action(kind, params)


def _check_specifics(kind: str, params: dict[str, Any], where: str, depth: int) -> None:
    if kind == AG_SELF_DECIDE:
        options = params["options"]
        if len(options) < 2 or not all(isinstance(o, str) and o for o in options):
            raise ChainError(f"{where}.options: at least two non-empty strings")
        if len(set(options)) != len(options):
            raise ChainError(f"{where}.options: must be distinct")
        branches = params.get("branches", {})
        if depth >= MAX_DEPTH and branches:
            raise ChainError(f"{where}: branches nest at most {MAX_DEPTH} deep")
        for option, sub in branches.items():
            if option not in options:
                raise ChainError(f"{where}.branches: {option!r} is not one of the options")
            parse_chain(sub, f"{where}.branches.{option}", depth + 1)
    if kind == AG_CALL_HUMAN:
        if params.get("on_timeout", "fail") not in ("fail", "continue"):
            raise ChainError(f"{where}.on_timeout: 'fail' or 'continue'")
        if params.get("timeout_seconds", 1) <= 0:
            raise ChainError(f"{where}.timeout_seconds: must be positive")
    if kind == AG_CALL_AG:
        _check_call_agent(params, where)
    if kind in (AG_MEMORY_LOAD, AG_MEMORY_STORE) and params.get("scope", "all") not in (
        "agent",
        "user",
        "all",
    ):
        raise ChainError(f"{where}.scope: 'agent', 'user' or 'all'")
    if kind == AG_MEMORY_STORE and ("key" in params) != ("value" in params):
        raise ChainError(f"{where}: give both 'key' and 'value', or neither (the model extracts)")
    for key in ("top_k", "max_tool_rounds"):
        if key in params and not 1 <= params[key] <= 50:
            raise ChainError(f"{where}.{key}: between 1 and 50")


def _check_call_agent(params: dict[str, Any], where: str) -> None:
    """One target: a Chatee agent or a remote A2A agent. The remote URL's host is checked
    against the deny-list where DNS is at hand (chatee/a2a_remote.py), not here."""
    if ("agent_id" in params) == ("a2a_url" in params):
        raise ChainError(f"{where}: AG_CALL_AG needs either 'agent_id' or 'a2a_url'")
    if "agent_id" in params:
        if "headers" in params:
            raise ChainError(f"{where}.headers: only for a remote agent ('a2a_url')")
        return
    url = params["a2a_url"]
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise ChainError(f"{where}.a2a_url: {exc}") from None
    if len(url) > MAX_URL_CHARS or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ChainError(
            f"{where}.a2a_url: an http:// or https:// URL with a host, "
            f"at most {MAX_URL_CHARS} characters"
        )
    headers = params.get("headers", {})
    if len(headers) > MAX_HEADERS:
        raise ChainError(f"{where}.headers: at most {MAX_HEADERS}")
    for name, value in headers.items():
        if not _HEADER_NAME.match(name):
            raise ChainError(f"{where}.headers: {name!r} is not a valid header name")
        if not isinstance(value, str) or len(value) > MAX_HEADER_CHARS:
            raise ChainError(
                f"{where}.headers.{name}: a string of at most {MAX_HEADER_CHARS} characters"
            )
        if any(c in value for c in "\r\n\0"):
            raise ChainError(f"{where}.headers.{name}: no line breaks or NUL characters")


def to_template(actions: list[Action]) -> list[Any]:
    return [{"type": a.type, **a.params} if a.params else a.type for a in actions]


class ChainBuilder:
    """Fluent construction: `ChainBuilder().memory_load().rag().self_gen().build()`."""

    def __init__(self) -> None:
        self._actions: list[Action] = []

    def _add(self, kind: str, **params: Any) -> ChainBuilder:
        return self.step(kind, **{k: v for k, v in params.items() if v is not None})

    def step(self, kind: str, **params: Any) -> ChainBuilder:
        """Any action, with its parameters exactly as given."""
        self._actions.append(Action(kind, params))
        return self

    def accept(self, text: str | None = None) -> ChainBuilder:
        return self._add(AG_ACCEPT, text=text)

    def refuse(self, text: str | None = None) -> ChainBuilder:
        return self._add(AG_REFUSE, text=text)

    def self_gen(
        self, instructions: str | None = None, max_tool_rounds: int | None = None
    ) -> ChainBuilder:
        return self._add(AG_SELF_GEN, instructions=instructions, max_tool_rounds=max_tool_rounds)

    def self_decide(
        self,
        options: list[str],
        question: str | None = None,
        branches: dict[str, ChainBuilder | list[Any]] | None = None,
    ) -> ChainBuilder:
        built = None
        if branches:
            built = {
                k: v.template() if isinstance(v, ChainBuilder) else v for k, v in branches.items()
            }
        return self._add(AG_SELF_DECIDE, options=options, question=question, branches=built)

    def use_mcp(
        self, server_id: str, tool: str, arguments: dict[str, Any] | None = None
    ) -> ChainBuilder:
        return self._add(AG_USE_MCP, server_id=server_id, tool=tool, arguments=arguments)

    def call_agent(self, agent_id: str, task: str | None = None) -> ChainBuilder:
        return self._add(AG_CALL_AG, agent_id=agent_id, task=task)

    def call_remote_agent(
        self, a2a_url: str, headers: dict[str, str] | None = None, task: str | None = None
    ) -> ChainBuilder:
        """A remote A2A agent: `a2a_url` is its agent card's URL or its base URL."""
        return self._add(AG_CALL_AG, a2a_url=a2a_url, headers=headers, task=task)

    def call_human(
        self,
        prompt: str | None = None,
        timeout_seconds: float | None = None,
        on_timeout: str | None = None,
    ) -> ChainBuilder:
        return self._add(
            AG_CALL_HUMAN, prompt=prompt, timeout_seconds=timeout_seconds, on_timeout=on_timeout
        )

    def rag(self, top_k: int | None = None, query: str | None = None) -> ChainBuilder:
        return self._add(AG_RAG, top_k=top_k, query=query)

    def memory_load(self, scope: str | None = None) -> ChainBuilder:
        return self._add(AG_MEMORY_LOAD, scope=scope)

    def memory_store(
        self, key: str | None = None, value: str | None = None, scope: str | None = None
    ) -> ChainBuilder:
        return self._add(AG_MEMORY_STORE, key=key, value=value, scope=scope)

    def template(self) -> list[Any]:
        return to_template(self._actions)

    def build(self) -> list[Action]:
        """The actions, validated as a template would be."""
        return parse_chain(self.template())

    def actions(self) -> list[Action]:
        """The actions as added, unvalidated: for the steps the executor inserts mid-turn,
        which carry parameters of its own (`tool_call_id`, `approval_for`, `round`…)."""
        return list(self._actions)


DEFAULT_CHAIN: list[Any] = ChainBuilder().self_gen().template()
