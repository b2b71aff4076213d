"""Real `chatee api` / `chatee worker` child processes, for the suite and the benchmarks.

They run the product as it is deployed (its CLI, its config from the environment, one process
each), so what they exercise or measure is what users run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from chatee.devstack import free_port, stop_process

PYTHON = sys.executable


@dataclass
class ChateeProcess:
    """One `chatee api` or `chatee worker` child, logging to a file the caller can read."""

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
