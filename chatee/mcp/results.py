"""What an MCP server returns, as plain JSON: tool entries, server info, and call results in
our `{content, structured_content, is_error}` shape (large binaries become references)."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import mcp_types as types
from mcp import Client

INLINE_BINARY_CHARS = 4096  # base64 data up to this size stays in a result; larger is referenced
MAX_TEXT_CHARS = 1_000_000  # one text block of a result, whatever the caller does with it


def tool_entry(tool: types.Tool) -> dict[str, Any]:
    return {
        "name": tool.name,
        "description": tool.description or tool.title or "",
        "input_schema": tool.input_schema,
    }


def server_info_dict(client: Client) -> dict[str, Any]:
    info = client.server_info
    out: dict[str, Any] = {"protocol_version": client.protocol_version}
    if info is not None:
        out.update(name=info.name, version=info.version)
        if info.title:
            out["title"] = info.title
    if client.instructions:
        out["instructions"] = client.instructions[:2000]
    return out


def _binary(kind: str, data: str, mime_type: str | None, **extra: Any) -> dict[str, Any]:
    """Small base64 payloads stay inline; larger ones become a reference (size + digest)."""
    block: dict[str, Any] = {"type": kind, "mime_type": mime_type, **extra}
    try:
        raw = base64.b64decode(data, validate=False)
    except ValueError:
        raw = data.encode()
    block["bytes"] = len(raw)
    if len(data) <= INLINE_BINARY_CHARS:
        block["data"] = data
    else:
        block["sha256"] = hashlib.sha256(raw).hexdigest()
        block["data_omitted"] = True
    return block


def content_block(block: types.ContentBlock) -> dict[str, Any]:
    """A result content block as plain JSON, with large binaries turned into references."""
    if isinstance(block, types.TextContent):
        text = block.text
        if len(text) > MAX_TEXT_CHARS:
            return {"type": "text", "text": text[:MAX_TEXT_CHARS], "truncated": True}
        return {"type": "text", "text": text}
    if isinstance(block, types.ImageContent | types.AudioContent):
        return _binary(block.type, block.data, block.mime_type)
    if isinstance(block, types.ResourceLink):
        out = {"type": "resource_link", "uri": str(block.uri), "name": block.name}
        if block.mime_type:
            out["mime_type"] = block.mime_type
        if block.description:
            out["description"] = block.description
        return out
    if isinstance(block, types.EmbeddedResource):
        res = block.resource
        if isinstance(res, types.TextResourceContents):
            out = {"type": "resource", "uri": str(res.uri), "mime_type": res.mime_type}
            out["text"] = res.text[:MAX_TEXT_CHARS]
            return out
        return _binary("resource", res.blob, res.mime_type, uri=str(res.uri))
    return {"type": getattr(block, "type", "unknown")}


def result_dict(result: types.CallToolResult) -> dict[str, Any]:
    return {
        "content": [content_block(b) for b in result.content],
        "structured_content": result.structured_content,
        "is_error": bool(result.is_error),
    }


def error_result(message: str) -> dict[str, Any]:
    return {
        "content": [{"type": "text", "text": message}],
        "structured_content": None,
        "is_error": True,
    }
