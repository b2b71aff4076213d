"""Every activity and child workflow the workflows run is registered by a worker, on the queue
it is sent to. A renamed activity or a forgotten registration fails here, instead of leaving
turns waiting on a task no worker polls.

What the workflows run is read from their code: the `workflow.execute_*` / `start_*` calls
name it with a constant of workflows/names.py, or go through `executor.run_activity`, whose
table (`executor.KINDS` and `executor.presets`) says where each activity runs.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest.mock import MagicMock

import pytest
from temporalio import activity, workflow

import workflows
from workers.main import _registrations
from workflows import executor, names
from workflows.types import TurnOptions

STARTS = {
    "execute_activity",
    "start_activity",
    "execute_local_activity",
    "start_local_activity",
    "execute_child_workflow",
    "start_child_workflow",
}
# the one place a workflow may run an activity whose name is not written at the call
DYNAMIC_OK = {("workflows.executor", "run_activity")}


@dataclass
class Start:
    module: str
    line: int
    function: str
    call: str  # one of STARTS
    name: str | None  # None: not a constant (a variable)
    task_queue: str | None  # None: not given (the workflow's own queue), or not a constant
    queue_given: bool

    @property
    def where(self) -> str:
        return f"{self.module}:{self.line}"


def _registered() -> dict[str, dict[str, set[str]]]:
    """queue -> the workflow and activity names its worker registers (workers/main.py)."""
    by_short_name = _registrations(MagicMock())  # the activities only keep the services
    return {
        names.QUEUES[short]: {
            "workflows": {workflow._Definition.must_from_class(w).name for w in reg["workflows"]},
            "activities": {
                activity._Definition.must_from_callable(a).name for a in reg["activities"]
            },
        }
        for short, reg in by_short_name.items()
    }


def _hosts(module: str) -> set[str]:
    """The queues whose workers run `module`'s code: those of the registered workflows
    defined in it, or in a module that imports from it (the executor runs in the sessions')."""
    queues = set()
    for short, reg in _registrations(MagicMock()).items():
        for cls in reg["workflows"]:
            namespace = vars(sys.modules[cls.__module__]).values()
            used = {cls.__module__} | {getattr(v, "__module__", None) for v in namespace}
            if module in used:
                queues.add(names.QUEUES[short])
    return queues


class _Scan(ast.NodeVisitor):
    """The workflow.execute_*/start_* calls of one module, and the constants of
    workflows/names.py it hands to its own helpers as their first argument."""

    def __init__(self, module: str) -> None:
        self.module = module
        self.aliases: set[str] = set()  # what `workflows.names` is called here
        self.imported: set[str] = set()  # constants imported from it by name
        self.function = "<module>"
        self.starts: list[Start] = []
        self.handed: list[tuple[str, int]] = []  # (constant's value, line)

    def constant(self, node: ast.expr) -> str | None:
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in self.aliases
        ):
            return getattr(names, node.attr)
        if isinstance(node, ast.Name) and node.id in self.imported:
            return getattr(names, node.id)
        return None

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for alias in node.names:
            if node.module == "workflows" and alias.name == "names":
                self.aliases.add(alias.asname or "names")
            elif node.module == "workflows.names":
                self.imported.add(alias.asname or alias.name)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        outer, self.function = self.function, node.name
        self.generic_visit(node)
        self.function = outer

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.value.id == "workflow"
            and func.attr in STARTS
        ):
            queue = next((k.value for k in node.keywords if k.arg == "task_queue"), None)
            self.starts.append(
                Start(
                    self.module,
                    node.lineno,
                    self.function,
                    func.attr,
                    self.constant(node.args[0]) if node.args else None,
                    self.constant(queue) if queue is not None else None,
                    queue is not None,
                )
            )
        elif node.args and (value := self.constant(node.args[0])) is not None:
            self.handed.append((value, node.lineno))
        self.generic_visit(node)


def _scans() -> list[_Scan]:
    scans = []
    for path in sorted(Path(workflows.__file__).parent.glob("*.py")):
        scan = _Scan(f"workflows.{path.stem}")
        scan.visit(ast.parse(path.read_text(), str(path)))
        scans.append(scan)
    return scans


@pytest.fixture(scope="module")
def registered() -> dict[str, dict[str, set[str]]]:
    return _registered()


def _queues_of(start: Start) -> set[str]:
    return {start.task_queue} if start.task_queue else _hosts(start.module)


def test_the_scan_finds_the_workflows_calls() -> None:
    found = {(s.module, s.name) for scan in _scans() for s in scan.starts}
    assert ("workflows.executor", names.TASK_WORKFLOW) in found
    assert ("workflows.fanout", names.DELIVER_BATCH) in found
    assert ("workflows.ingest", names.EMBED_CHUNKS) in found
    assert ("workflows.executor", None) in found  # run_activity
    assert _hosts("workflows.executor") == {names.AGENTS_QUEUE}


def test_every_named_start_is_registered_where_it_is_sent(
    registered: dict[str, dict[str, set[str]]],
) -> None:
    missing = []
    for scan in _scans():
        for start in scan.starts:
            if start.name is None:
                continue
            kind = "workflows" if "child_workflow" in start.call else "activities"
            assert start.task_queue or not start.queue_given, (
                f"{start.where}: name the task queue with workflows/names.py"
            )
            queues = _queues_of(start)
            assert queues, f"{start.where}: no worker runs the workflow that calls this"
            missing += [
                f"{start.where}: {start.name!r} is not among the {kind} of {queue}"
                for queue in sorted(queues)
                if start.name not in registered[queue][kind]
            ]
    assert not missing, "\n".join(missing)


def test_only_run_activity_starts_an_activity_by_a_variable_name() -> None:
    dynamic = {
        (s.module, s.function): s.where for scan in _scans() for s in scan.starts if s.name is None
    }
    assert set(dynamic) <= DYNAMIC_OK, f"name these with workflows/names.py: {dynamic}"


def test_every_activity_in_the_executors_table_is_registered_where_its_preset_sends_it(
    registered: dict[str, dict[str, set[str]]],
) -> None:
    presets = executor.presets(TurnOptions())
    missing = []
    for name, kind in executor.KINDS.items():
        assert kind in presets, f"{name}: no preset for the kind {kind!r}"
        queue = presets[kind].task_queue
        for where in sorted({queue} if queue else _hosts("workflows.executor")):
            if name not in registered[where]["activities"]:
                missing.append(f"{name} ({kind}) is not registered on {where}")
    assert not missing, "\n".join(missing)


def test_every_activity_the_workflows_hand_to_run_activity_is_in_its_table() -> None:
    queues = set(names.QUEUES.values())
    unknown = [
        f"{scan.module}:{line}: {value!r}"
        for scan in _scans()
        for value, line in scan.handed
        if value not in queues and value not in executor.KINDS
    ]
    assert not unknown, "not in executor.KINDS: " + ", ".join(unknown)


def test_the_executor_table_keeps_each_kinds_options() -> None:
    """The presets are the options the turn's activities always ran with (a change here is
    a change of behaviour: timeouts, retries, what is never retried)."""
    opts = TurnOptions(llm_start_to_close_seconds=90, llm_heartbeat_seconds=7, llm_max_attempts=2)
    p: dict[str, Any] = executor.presets(opts)
    llm = p["llm"]
    assert (llm.task_queue, llm.start_to_close.total_seconds(), llm.heartbeat.total_seconds()) == (
        names.LLM_QUEUE,
        90,
        7,
    )
    assert llm.retry.maximum_attempts == 2 and llm.wait_for_cancel
    assert llm.retry.non_retryable_error_types == executor.NON_RETRYABLE
    assert p["tool"].start_to_close.total_seconds() == 300 and p["tool"].wait_for_cancel
    assert p["tool"].heartbeat.total_seconds() == 60
    for kind in ("rag", "memory", "messages"):
        assert p[kind].start_to_close.total_seconds() == 120 and p[kind].heartbeat is None
        assert p[kind].retry == executor.QUICK_RETRY and not p[kind].wait_for_cancel
    assert p["finish"].retry.non_retryable_error_types is None
    assert p["task"].retry.non_retryable_error_types == ["AgentNotFound"]
    assert p["event"].task_queue is None and p["event"].retry is None
