"""Is this container's worker polling its task queues? `python -m workers.health`.

The readiness check of a worker container (docker-compose.yml, deploy/kubernetes/): healthy
while Temporal lists the worker process (identity "<pid>@<hostname>") among the pollers of each
of its queues. It connects exactly as the worker does (chatee.temporal.connect: TLS, mTLS, API
key), so a Temporal Cloud or mTLS deployment is checked the way it is served. Temporal keeps a
poller for about 5 minutes after its last poll, so "unhealthy" means the process has not polled
for that long: stuck, cut off from Temporal, or every slot busy the whole time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

from chatee import temporal
from chatee.config import load_settings
from workflows.names import AGENTS_QUEUE, QUEUES


def worker_process() -> tuple[int, list[str]]:
    """The pid and queue names of the `chatee worker` process in this container."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().decode().split("\0")
        except OSError:
            continue
        if "worker" in argv and any(os.path.basename(a) == "chatee" for a in argv):
            return int(pid), queues_of(argv)
    sys.exit("no chatee worker process in this container")


def queues_of(argv: list[str]) -> list[str]:
    named = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--queue"]
    named += [a.split("=", 1)[1] for a in argv if a.startswith("--queue=")]
    return named or list(QUEUES)


async def not_polling(pid: int, queues: list[str]) -> str | None:
    """Why the worker is not healthy, or None when it polls every one of its queues."""
    identity = f"{pid}@{socket.gethostname()}"
    settings = load_settings()
    client = await temporal.connect(settings)
    for name in queues:
        queue = QUEUES[name]
        kind = TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY
        if queue == AGENTS_QUEUE:  # workflows only
            kind = TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW
        reply = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=settings.temporal_namespace,
                task_queue=TaskQueue(name=queue),
                task_queue_type=kind,
            )
        )
        if not any(p.identity == identity for p in reply.pollers):
            return f"{identity} is not polling {queue}"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pid", type=int, help="the worker's pid (default: find it in /proc)")
    parser.add_argument("--queue", action="append", help="its queues (with --pid)")
    args = parser.parse_args()
    pid, queues = (args.pid, args.queue or list(QUEUES)) if args.pid else worker_process()
    try:
        sys.exit(asyncio.run(asyncio.wait_for(not_polling(pid, queues), 8)))
    except Exception as exc:  # any failure is "unhealthy", with the reason as the exit message
        sys.exit(f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
