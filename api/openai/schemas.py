"""The request bodies of /v1, as OpenAI clients send them, and their messages as plain text.

Unknown fields (temperature, tools, user…) are accepted and ignored: the agent's own
configuration decides how it answers, as its owner set it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from chatee.errors import Invalid
from chatee.openai_sessions import Said

TEXT_PARTS = ("text", "input_text", "output_text")


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatCompletionIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=128)
    messages: list[ChatMessageIn] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    metadata: dict[str, str] | None = None


class ResponseIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=128)
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    previous_response_id: str | None = None
    stream: bool = False
    metadata: dict[str, str] | None = None


def text_of(content: str | list[dict[str, Any]] | None, where: str) -> str:
    """A message's content as text: a string, or text parts joined. Images, audio and files
    are refused by name rather than silently dropped."""
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for i, part in enumerate(content):
        kind = part.get("type")
        if kind not in TEXT_PARTS or not isinstance(part.get("text"), str):
            raise Invalid(
                f"{where}[{i}]: content parts of type {kind!r} are not supported; "
                "Chatee agents take text only",
                "unsupported_content",
                param=f"{where}[{i}]",
            )
        texts.append(part["text"])
    return "".join(texts)


def chat_messages(messages: list[ChatMessageIn]) -> list[Said]:
    """The request's messages as text; `developer` counts as `system`."""
    return [
        Said(
            "system" if m.role == "developer" else m.role,
            text_of(m.content, f"messages[{i}].content"),
        )
        for i, m in enumerate(messages)
    ]


def response_messages(body: ResponseIn) -> list[Said]:
    """The Responses API's `input`: a string (one user message) or a list of message items."""
    if isinstance(body.input, str):
        return [Said("user", body.input)]
    said = []
    for i, item in enumerate(body.input):
        kind = item.get("type", "message")
        role = item.get("role")
        if kind != "message" or role not in ("system", "developer", "user", "assistant"):
            raise Invalid(
                f"input[{i}]: only message items are supported (got {kind!r})",
                "unsupported_input",
                param=f"input[{i}]",
            )
        role = "system" if role == "developer" else role
        said.append(Said(role, text_of(item.get("content"), f"input[{i}].content")))
    return said
