"""The worker readiness check (`python -m workers.health`, used by compose and Kubernetes):
healthy while Temporal lists the worker among its queues' pollers, and it connects with the
worker's own connection settings, so a TLS / API-key deployment is checked as it is served."""

from __future__ import annotations

import os
import subprocess
import sys

from chatee.devtools.processes import Stack


def health(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.health", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_polling_worker_is_healthy_and_another_process_is_not(stack: Stack) -> None:
    worker = next(p for p in stack.processes if p.argv[0] == "worker")
    assert worker.proc is not None
    ok = health(stack.env, "--pid", str(worker.proc.pid))
    assert ok.returncode == 0, ok.stderr
    not_a_worker = health(stack.env, "--pid", str(os.getpid()), "--queue", "llm")
    assert not_a_worker.returncode != 0
    assert "is not polling chatee-llm" in not_a_worker.stderr


def test_the_check_uses_the_workers_tls_and_api_key_settings(stack: Stack) -> None:
    worker = next(p for p in stack.processes if p.argv[0] == "worker")
    assert worker.proc is not None
    # configured for TLS with an API key (as for Temporal Cloud), the check speaks TLS to the
    # plaintext dev server and fails there, instead of passing over a plaintext connection
    env = {**stack.env, "CHATEE_TEMPORAL__API_KEY": "test-key"}
    tls = health(env, "--pid", str(worker.proc.pid))
    assert tls.returncode != 0
    assert "test-key" not in tls.stderr
