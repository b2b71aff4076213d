"""What Chatee needs to know to reach one MCP server, as a frozen value."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from chatee.logging import register_secret
from chatee.models import McpServer

TRANSPORTS = ("streamable_http", "sse", "stdio")


@dataclass(frozen=True)
class ServerConfig:
    id: int
    name: str
    transport: str
    url: str | None = None
    command: str | None = None
    args: tuple[str, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_row(cls, row: McpServer) -> ServerConfig:
        headers = tuple(sorted((str(k), str(v)) for k, v in (row.headers or {}).items()))
        for _, value in headers:
            register_secret(value)
        return cls(
            id=row.id,
            name=row.name,
            transport=row.transport,
            url=row.url,
            command=row.command,
            args=tuple(str(a) for a in row.args or ()),
            headers=headers,
        )

    @property
    def key(self) -> str:
        """Identifies the configuration: a changed server gets a new session."""
        raw = json.dumps(
            [self.transport, self.url, self.command, self.args, self.headers], sort_keys=True
        )
        return hashlib.sha256(raw.encode()).hexdigest()

    @property
    def label(self) -> str:
        return f"MCP server {self.name!r}"
