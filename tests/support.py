"""Helpers for tests that run real `chatee` processes and talk to them over HTTP/SSE."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from chatee.devstack import free_port, stop_process

PYTHON = sys.executable


@dataclass
class ChateeProcess:
    """One `chatee api` or `chatee worker` child, logging to a file the test can read."""

    argv: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ChateeProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "chatee.cli", *self.argv],
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        return self

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to finish anything."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc:
            stop_process(self.proc, timeout=20)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Stack:
    """A running set of chatee processes sharing one configuration."""

    env: dict[str, str]
    tmp: Path
    api_port: int = 0
    processes: list[ChateeProcess] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start_api(self) -> ChateeProcess:
        self.api_port = self.api_port or free_port()
        proc = ChateeProcess(
            ["api", "--port", str(self.api_port)],
            self.env,
            self.tmp / f"api-{len(self.processes)}.log",
        ).start()
        self.processes.append(proc)
        wait_http(f"{self.base}/readyz", proc)
        return proc

    def start_worker(self, *queues: str) -> ChateeProcess:
        argv = ["worker", *(arg for q in queues for arg in ("--queue", q))]
        proc = ChateeProcess(argv, self.env, self.tmp / f"worker-{len(self.processes)}.log").start()
        self.processes.append(proc)
        wait_log(proc, "workers started")
        return proc

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()

    def logs(self) -> str:
        return "\n".join(p.log() for p in self.processes)


def wait_http(url: str, proc: ChateeProcess | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc and proc.proc and proc.proc.poll() is not None:
            raise RuntimeError(f"process exited:\n{proc.log()[-3000:]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready:\n{proc.log()[-3000:] if proc else ''}")


def wait_log(proc: ChateeProcess, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in proc.log():
            return
        if proc.proc and proc.proc.poll() is not None:
            raise RuntimeError(f"process exited:\n{proc.log()[-3000:]}")
        time.sleep(0.1)
    raise TimeoutError(f"{text!r} never logged:\n{proc.log()[-3000:]}")


class Api:
    """A logged-in user of the HTTP API."""

    def __init__(self, client: httpx.AsyncClient, token: str, user_id: str) -> None:
        self.client = client
        self.token = token
        self.user_id = user_id
        self.headers = {"Authorization": f"Bearer {token}"}

    @classmethod
    async def register(cls, client: httpx.AsyncClient, username: str | None = None) -> Api:
        username = username or f"user-{uuid.uuid4().hex[:12]}"
        r = await client.post(
            "/api/v1/auth/register", json={"username": username, "password": "correct horse"}
        )
        assert r.status_code == 201, r.text
        body = r.json()
        return cls(client, body["token"], body["user_id"])

    async def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        headers = {**self.headers, **(headers or {})}
        return await self.client.request(method, f"/api/v1{path}", headers=headers, **kwargs)

    async def create_agent(self, **fields: Any) -> dict[str, Any]:
        body = {
            "name": "helper",
            "system_prompt": "You are helpful.",
            "model": "scripted",
            **fields,
        }
        r = await self.request("POST", "/agents", json=body)
        assert r.status_code == 201, r.text
        return r.json()

    async def create_session(self, agent_id: str) -> dict[str, Any]:
        r = await self.request("POST", "/sessions", json={"agent_id": agent_id})
        assert r.status_code == 201, r.text
        return r.json()

    async def new_session(self, **agent_fields: Any) -> dict[str, Any]:
        agent = await self.create_agent(**agent_fields)
        return await self.create_session(agent["id"])

    async def stream_turn(
        self, session_id: str, content: str, **extra: Any
    ) -> list[dict[str, Any]]:
        """POST /chat/stream and collect its SSE events until the stream ends."""
        body = {"session_id": session_id, "content": content, **extra}
        events = []
        async with aconnect_sse(
            self.client, "POST", "/api/v1/chat/stream", json=body, headers=self.headers
        ) as source:
            source.response.raise_for_status()
            async for sse in source.aiter_sse():
                if sse.data:  # keep-alive pings carry no data
                    events.append({"id": sse.id, "event": sse.event, "data": json.loads(sse.data)})
        return events

    async def events(
        self,
        session_id: str,
        until: str | Callable[[dict[str, Any]], bool],
        headers: dict[str, str] | None = None,
        **params: str,
    ) -> list[dict[str, Any]]:
        """GET /sessions/{id}/events until an event named `until` (or matching it) arrives."""
        done = until if callable(until) else (lambda e: e["event"] == until)
        events = []
        async with aconnect_sse(
            self.client,
            "GET",
            f"/api/v1/sessions/{session_id}/events",
            params=params,
            headers={**self.headers, **(headers or {})},
        ) as source:
            source.response.raise_for_status()
            async for sse in source.aiter_sse():
                if not sse.data:  # keep-alive ping
                    continue
                events.append({"id": sse.id, "event": sse.event, "data": json.loads(sse.data)})
                if done(events[-1]):
                    break
        return events

    async def messages(self, session_id: str) -> list[dict[str, Any]]:
        r = await self.request("GET", f"/sessions/{session_id}/messages", params={"limit": 200})
        assert r.status_code == 200, r.text
        return r.json()["items"]


def completes(turn_id: str) -> Callable[[dict[str, Any]], bool]:
    """An `until` for `Api.events`: the end of that turn."""
    return lambda e: (
        e["event"] in ("turn.completed", "turn.failed") and e["data"]["turn_id"] == turn_id
    )
