"""`chatee dev` as a new user runs it: nothing configured but an LLM endpoint."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from chatee.client import Client, TurnCompleted
from chatee.devstack import free_port, port_open
from chatee.devtools.llm_server import LLMServerThread
from tests.support import PASSWORD, new_session, stored_messages


def start_dev(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "chatee.cli", "dev"],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def wait_up(proc: subprocess.Popen[bytes], log: Path, timeout: float = 90) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if "Ctrl-C stops everything." in text:
            return dict(
                re.findall(r"^  (\S+(?: \S+)?)\s{2,}(\S+)$", text.split("is up:")[-1], re.M)
            )
        assert proc.poll() is None, text[-3000:]
        time.sleep(0.2)
    raise TimeoutError(log.read_text(errors="replace")[-3000:])


def processes_mentioning(text: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if text in cmdline or text in environ:
            found.append(int(pid))
    return [p for p in found if p != os.getpid()]


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT) -> None:
    proc.send_signal(sig)
    proc.wait(timeout=60)


async def test_dev_runs_everything_and_keeps_data(tmp_path: Path, llm: LLMServerThread) -> None:
    data_dir = tmp_path / "data"
    http_port, temporal_port, ui_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATEE_")}
    env.update(
        CHATEE_DATA_DIR=str(data_dir),
        CHATEE_HTTP_PORT=str(http_port),
        CHATEE_DEV__TEMPORAL_PORT=str(temporal_port),
        CHATEE_DEV__TEMPORAL_UI_PORT=str(ui_port),
        CHATEE_LLM_OPENAI_BASE_URL=llm.base_url,
        CHATEE_LLM_OPENAI_API_KEY="sk-dev-test",
    )
    log = tmp_path / "dev.log"
    proc = start_dev(env, log)
    try:
        urls = wait_up(proc, log)
        assert urls["API"] == f"http://127.0.0.1:{http_port}/api/v1"
        assert urls["Temporal UI"] == f"http://127.0.0.1:{ui_port}"
        redis_port = int(urls["Redis"].rsplit(":", 1)[1].split("/")[0])
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{http_port}", timeout=30
        ) as client:
            assert (await client.get("/readyz")).json()["status"] == "ready"
            assert (await client.get(urls["Temporal UI"])).status_code == 200
            app = await client.get(urls["Web app"])  # the web app, served by the API
            assert app.status_code == 200 and "<title>Chatee</title>" in app.text
        async with Client(urls["API"]) as chatee:  # the API address it printed
            await chatee.register("dev-user", PASSWORD)
            session = await new_session(chatee)
            turn = await chatee.stream_turn(session.id, "first run").run()
            assert turn.completed, turn.final
    finally:
        stop(proc)
    assert proc.returncode == 0, log.read_text()[-3000:]
    for port in (http_port, temporal_port, ui_port, redis_port):
        assert not port_open("127.0.0.1", port), f"port {port} still open after SIGINT"
    assert processes_mentioning(str(data_dir)) == []
    assert {"temporal.db", "chatee.db", "jwt_secret"} <= {p.name for p in data_dir.iterdir()}

    log = tmp_path / "dev-second-run.log"
    proc = start_dev(env, log)  # second run: same data
    try:
        urls = wait_up(proc, log)
        async with Client(urls["API"]) as again:
            await again.login("dev-user", PASSWORD)
            # the session's workflow lived through the restart in temporal.db
            turn = await again.stream_turn(session.id, "second run").run()
            assert isinstance(turn.final, TurnCompleted), turn.final
            assert turn.final.content == "echo: second run"
            contents = [m.content for m in reversed(await stored_messages(again, session.id))]
            assert contents == ["first run", "echo: first run", "second run", "echo: second run"]
    finally:
        stop(proc, signal.SIGTERM)
    assert proc.returncode == 0
    assert processes_mentioning(str(data_dir)) == []
