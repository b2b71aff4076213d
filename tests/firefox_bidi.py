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
from collections.abc import Callable

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

UNKNOWN_TO_FIREFOX = {"emulation.setMediaFeaturesOverride"}
LISTENING = re.compile(r"WebDriver BiDi listening on (ws://[^\s/]+)")


async def relay(client: ServerConnection, upstream_base: str) -> None:
    path = client.request.path if client.request else "/session"
    async with connect(upstream_base + path, max_size=None) as firefox:
        asked: set[int] = set()  # ids of the commands Firefox may not know

        def note(raw: str | bytes) -> str | bytes:
            message = json.loads(raw)
            if message.get("method") in UNKNOWN_TO_FIREFOX:
                asked.add(message["id"])
            return raw

        def answer(raw: str | bytes) -> str | bytes:
            message = json.loads(raw)
            if message.get("id") in asked:
                asked.discard(message["id"])
                if message.get("error") == "unknown command":
                    return json.dumps({"type": "success", "id": message["id"], "result": {}})
            return raw

        await asyncio.gather(pump(client, firefox, note), pump(firefox, client, answer))


async def pump(
    source: ServerConnection | ClientConnection,
    sink: ServerConnection | ClientConnection,
    change: Callable[[str | bytes], str | bytes],
) -> None:
    """Every message from `source` to `sink`, through `change`; closes `sink` at the end."""
    try:
        async for raw in source:
            await sink.send(change(raw))
    except ConnectionClosed:
        pass
    finally:
        await sink.close()


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
