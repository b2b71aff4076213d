"""Stand-in for the Firefox executable so Playwright can drive a stock Firefox (Debian's
firefox-esr) over WebDriver BiDi: `python tests/firefox_bidi.py FIREFOX [firefox args...]`.

Playwright's BiDi Firefox (channel "moz-firefox") sends `emulation.setMediaFeaturesOverride`
for every new context, and Firefox ESR 153 does not know that command yet, so each
`new_context()` would fail. This starts Firefox, announces a WebSocket relay in place of
Firefox's BiDi endpoint, and answers only that command's "unknown command" with success
(it would set `prefers-color-scheme`, which the tests do not use). Everything else passes
through unchanged, and a Firefox that knows the command answers it itself.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import signal
import sys

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

UNKNOWN_TO_FIREFOX = {"emulation.setMediaFeaturesOverride"}
LISTENING = re.compile(r"WebDriver BiDi listening on (ws://[^\s/]+)")


async def relay(client: ServerConnection, upstream_base: str) -> None:
    path = client.request.path if client.request else "/session"
    async with connect(upstream_base + path, max_size=None) as firefox:
        pending: set[int] = set()
        await asyncio.gather(
            to_firefox(client, firefox, pending), to_playwright(firefox, client, pending)
        )


async def to_firefox(
    client: ServerConnection, firefox: ClientConnection, pending: set[int]
) -> None:
    try:
        async for raw in client:
            message = json.loads(raw)
            if message.get("method") in UNKNOWN_TO_FIREFOX:
                pending.add(message["id"])
            await firefox.send(raw)
    except ConnectionClosed:
        pass
    finally:
        await firefox.close()


async def to_playwright(
    firefox: ClientConnection, client: ServerConnection, pending: set[int]
) -> None:
    try:
        async for raw in firefox:
            message = json.loads(raw)
            if message.get("id") in pending:
                pending.discard(message["id"])
                if message.get("error") == "unknown command":
                    raw = json.dumps({"type": "success", "id": message["id"], "result": {}})
            await client.send(raw)
    except ConnectionClosed:
        pass
    finally:
        await client.close()


async def main(firefox_binary: str, args: list[str]) -> int:
    firefox = await asyncio.create_subprocess_exec(
        firefox_binary, *args, stderr=asyncio.subprocess.PIPE
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, firefox.terminate)
    server = None
    assert firefox.stderr is not None
    async for line in firefox.stderr:
        text = line.decode(errors="replace")
        found = LISTENING.search(text)
        if found and server is None:
            upstream = found.group(1)
            server = await serve(
                functools.partial(relay, upstream_base=upstream), "127.0.0.1", 0, max_size=None
            )
            port = server.sockets[0].getsockname()[1]
            text = f"WebDriver BiDi listening on ws://127.0.0.1:{port}\n"
        sys.stderr.write(text)
        sys.stderr.flush()
    code = await firefox.wait()
    if server is not None:
        server.close()
    return code


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2:])))
