"""MCP client side: safety checks, a pool of long-lived sessions, and the tools agents see.

Everything goes through the official `mcp` SDK (`mcp.Client` over `streamable_http_client`,
`sse_client` or `stdio_client`); nothing here speaks JSON-RPC by hand.

`McpManager` keeps one session per registered server (keyed by server id + a hash of its
config, so an edited server gets a fresh session). Each session is owned by a background task
that enters and leaves the SDK's anyio context managers itself; callers borrow the connected
`Client`. Calls are bounded three ways: the connect timeout (handshake), the call timeout
(`tools/call`) and a semaphore per server. A failed connect backs off exponentially; a session
that dies (server killed, stream cut) is dropped and the next use reconnects; a session that
timed out is probed before it is trusted again. The server's `notifications/tools/list_changed`
refreshes the tools cache (and, through `on_tools_changed`, the database row).

The modules, one idea each: `errors` (MCP failures as domain errors), `config` (a server's
`ServerConfig`), `safety` (allow-lists, deny-lists, loopback), `results` (SDK results as plain
JSON), `connection` (one session), `pool` (`McpManager`), `tools` (what agents see) and
`registry` (each owner's servers: the use cases every surface calls).
"""

from chatee.mcp.config import TRANSPORTS, ServerConfig
from chatee.mcp.errors import (
    McpConnectFailed,
    McpError,
    McpInvalid,
    McpRefused,
    McpServerError,
    McpTimeout,
    McpUnavailable,
    describe,
)
from chatee.mcp.pool import Connected, McpManager
from chatee.mcp.results import error_result, result_dict
from chatee.mcp.safety import check_server, check_stdio_command, check_url, denied_network
from chatee.mcp.tools import (
    AgentTool,
    agent_servers,
    agent_tools,
    effective_policy,
    openai_tools,
    persist_tools,
    tool_name,
)

__all__ = [
    "TRANSPORTS",
    "AgentTool",
    "Connected",
    "McpConnectFailed",
    "McpError",
    "McpInvalid",
    "McpManager",
    "McpRefused",
    "McpServerError",
    "McpTimeout",
    "McpUnavailable",
    "ServerConfig",
    "agent_servers",
    "agent_tools",
    "check_server",
    "check_stdio_command",
    "check_url",
    "denied_network",
    "describe",
    "effective_policy",
    "error_result",
    "openai_tools",
    "persist_tools",
    "result_dict",
    "tool_name",
]
