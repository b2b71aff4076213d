"""docker-compose.yml and Dockerfile: valid against the Compose Specification, and what we promise.

There is no Docker engine in CI, so `docker compose config` cannot run; instead the file is
interpolated the way Compose does it and validated with `jsonschema` against the Compose
Specification's own JSON Schema, vendored in `tests/data/compose-spec.json` (source and commit in
`tests/data/README.md`).
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from chatee.config import REPO_ROOT

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
DATA = Path(__file__).parent / "data"
SCHEMA_FILE = DATA / "compose-spec.json"

QUEUES = ["agents", "llm", "tools", "rag", "messages"]
APP_SERVICES = {"migrate", "api", *(f"worker-{q}" for q in QUEUES)}
# what a deployment needs set; everything else has a default in the file
ENV = {"CHATEE_JWT_SECRET": "test-secret"}


# -- Compose-style variable interpolation --------------------------------------------------------

_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


class InterpolationError(Exception):
    pass


def interpolate_str(text: str, env: dict[str, str]) -> str:
    """Compose's rules: `$$`, `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
    `${VAR:?error}` and `${VAR?error}`."""

    def sub(m: re.Match[str]) -> str:
        if m["escaped"]:
            return "$"
        name = m["braced"] or m["named"]
        value, op, arg = env.get(name), m["op"], m["arg"] or ""
        if op in (":-", ":?") and value == "":
            value = None
        if value is not None:
            return value
        if op and op.endswith("?"):
            raise InterpolationError(f"{name}: {arg or 'required'}")
        return arg if op else ""

    return _VAR.sub(sub, text)


def interpolate(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(item, env) for item in node]
    if isinstance(node, str):
        return interpolate_str(node, env)
    return node


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    """The file as YAML (anchors and `<<` merge keys resolved), not yet interpolated."""
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any]) -> dict[str, Any]:
    return interpolate(raw, ENV)


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def validator(schema: dict[str, Any]) -> jsonschema.Draft7Validator:
    # The spec says `"$schema": "https://json-schema.org/draft-07/schema"`; jsonschema knows
    # draft-07 as `http://json-schema.org/draft-07/schema#`, so `validator_for` would fall back to
    # the latest draft (with a warning). Pick draft-07 explicitly, as the schema asks.
    assert "draft-07" in schema["$schema"]
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def errors(validator: jsonschema.Draft7Validator, document: dict[str, Any]) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator.iter_errors(document)
    ]


# -- the schema ------------------------------------------------------------------------------------


def test_vendored_schema_is_the_compose_spec_unmodified(schema: dict[str, Any]) -> None:
    assert schema["title"] == "Compose Specification"
    assert schema["$schema"] == "https://json-schema.org/draft-07/schema"
    note = (DATA / "README.md").read_text(encoding="utf-8")
    recorded = re.search(r"sha256 `([0-9a-f]{64})`", note)
    assert recorded, "tests/data/README.md records the schema's sha256"
    assert hashlib.sha256(SCHEMA_FILE.read_bytes()).hexdigest() == recorded[1]


# -- the compose file is valid ---------------------------------------------------------------------


def test_compose_file_is_valid(validator: jsonschema.Draft7Validator, compose: dict) -> None:
    assert errors(validator, compose) == []


def test_compose_file_is_valid_before_interpolation(
    validator: jsonschema.Draft7Validator, raw: dict
) -> None:
    assert errors(validator, raw) == []


def test_no_obsolete_version_key(raw: dict) -> None:
    assert "version" not in raw


def test_jwt_secret_is_required(raw: dict) -> None:
    with pytest.raises(InterpolationError, match="CHATEE_JWT_SECRET"):
        interpolate(raw, {})


def _set(document: dict, path: str, value: Any) -> dict:
    broken = copy.deepcopy(document)
    *parents, last = path.split(".")
    node = broken
    for key in parents:
        node = node[key]
    node[last] = value
    return broken


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("servicez", {}),  # unknown top-level key
        ("services.api.deploy.replicas", [2]),  # neither integer nor string
        ("services.api.healtcheck", {"test": ["CMD", "true"]}),  # misspelled service key
        ("services.api.depends_on.temporal.condition", "service_ready"),  # not an enum value
        ("services.redis.healthcheck.test", {"cmd": "redis-cli ping"}),  # neither str nor list
        ("services.api.ports", "8080:8080"),  # a string, not a list
    ],
)
def test_validator_rejects_a_broken_copy(
    validator: jsonschema.Draft7Validator, compose: dict, path: str, value: Any
) -> None:
    assert errors(validator, compose) == []
    assert errors(validator, _set(compose, path, value)), f"{path}={value!r} should be rejected"


# -- what the stack promises -----------------------------------------------------------------------


def test_a_worker_service_per_task_queue(compose: dict) -> None:
    from workers.main import QUEUES as CODE_QUEUES

    # the compose file (and its worker healthcheck) name queues `chatee-<name>`, as the code does
    assert {q: f"chatee-{q}" for q in QUEUES} == CODE_QUEUES
    services = compose["services"]
    for queue in QUEUES:
        worker = services[f"worker-{queue}"]
        assert worker["command"] == ["worker", "--queue", queue]
        replicas = worker["deploy"]["replicas"]
        assert isinstance(replicas, int) and replicas >= 1
    workers = {name for name in services if name.startswith("worker")}
    assert workers == {f"worker-{q}" for q in QUEUES}


def test_api_runs_two_replicas_with_a_host_port_each(compose: dict) -> None:
    api = compose["services"]["api"]
    assert api["command"] == ["api", "--host", "0.0.0.0"]
    replicas = api["deploy"]["replicas"]
    assert isinstance(replicas, int) and replicas == 2
    # no fixed host port (two replicas could not share it): a published range, one port each
    (port,) = api["ports"]
    published, target = str(port).rsplit(":", 1)
    assert target == "8080"
    first, last = (int(p) for p in published.split("-"))
    assert last - first + 1 >= replicas


def test_every_long_running_service_has_a_healthcheck(compose: dict) -> None:
    for name, service in compose["services"].items():
        if service.get("restart") == "no":  # one-shot (migrate)
            continue
        check = service.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        assert not check.get("disable"), f"{name} disables its healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name


def test_healthy_dependencies_have_healthchecks(compose: dict) -> None:
    services = compose["services"]
    for name, service in services.items():
        for target, dep in (service.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on unknown {target}"
            if dep["condition"] == "service_healthy":
                assert services[target].get("healthcheck"), f"{name} waits on {target}'s health"


def test_startup_order(compose: dict) -> None:
    services = compose["services"]
    conditions = {
        name: {target: dep["condition"] for target, dep in services[name]["depends_on"].items()}
        for name in services
        if services[name].get("depends_on")
    }
    assert conditions["migrate"] == {"mysql": "service_healthy"}
    assert conditions["temporal"] == {"mysql": "service_healthy"}
    for name in ["api", *(f"worker-{q}" for q in QUEUES)]:
        assert conditions[name]["migrate"] == "service_completed_successfully", name
        assert conditions[name]["redis"] == "service_healthy", name
        assert conditions[name]["temporal"] == "service_healthy", name
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["restart"] == "no"


def test_app_services_share_one_image_and_environment(compose: dict) -> None:
    shared = compose["x-chatee"]
    services = compose["services"]
    app = {name for name, s in services.items() if s.get("image") == shared["image"]}
    assert app == APP_SERVICES
    for name in APP_SERVICES:
        assert services[name]["build"] == shared["build"], name
        assert services[name]["environment"] == shared["environment"], name


def test_shared_environment(raw: dict, compose: dict) -> None:
    env = compose["x-chatee"]["environment"]
    assert env["CHATEE_DATABASE_URL"] == "mysql+aiomysql://chatee@mysql:3306/chatee"
    assert env["CHATEE_MYSQL_PASSWORD"]
    assert env["CHATEE_REDIS_URL"] == "redis://redis:6379/0"
    assert env["CHATEE_TEMPORAL_ADDRESS"] == "temporal:7233"
    assert env["CHATEE_MESSAGE_STORE"] == "sql"
    assert env["CHATEE_HBASE_HOST"] == "hbase"
    assert env["CHATEE_JWT_SECRET"] == ENV["CHATEE_JWT_SECRET"]
    assert env["CHATEE_HTTP_HOST"] == "0.0.0.0"
    assert env["CHATEE_LOG_JSON"] == "true"
    # LLM settings pass through from the host: a null value leaves them unset when the host has
    # none (an empty string would reach the app as a configured-but-empty key)
    for name in ("CHATEE_LLM_OPENAI_API_KEY", "CHATEE_LLM_OPENAI_BASE_URL"):
        assert name in env and env[name] is None, name
    raw_env = raw["x-chatee"]["environment"]
    assert raw_env["CHATEE_MESSAGE_STORE"] == "${CHATEE_MESSAGE_STORE:-sql}"
    hbase = interpolate(raw, {**ENV, "CHATEE_MESSAGE_STORE": "hbase"})
    assert hbase["services"]["api"]["environment"]["CHATEE_MESSAGE_STORE"] == "hbase"


def test_infrastructure_services(compose: dict) -> None:
    services = compose["services"]
    assert services["mysql"]["image"].startswith("mysql:8")
    assert services["redis"]["image"].startswith("redis:7")
    assert "--appendonly" in services["redis"]["command"]
    temporal = services["temporal"]
    assert temporal["image"].startswith("temporalio/auto-setup:")
    assert temporal["environment"]["DB"] == "mysql8"
    assert temporal["environment"]["MYSQL_SEEDS"] == "mysql"
    ui = services["temporal-ui"]
    assert ui["environment"]["TEMPORAL_ADDRESS"] == "temporal:7233"
    assert "8233:8080" in ui["ports"]
    assert "9090" in " ".join(services["hbase"]["healthcheck"]["test"])


def test_python_healthchecks_compile(compose: dict) -> None:
    scripts = [
        (name, s["healthcheck"]["test"][3])
        for name, s in compose["services"].items()
        if s.get("healthcheck", {}).get("test", [None])[:3] == ["CMD", "python", "-c"]
    ]
    assert {name for name, _ in scripts} == {"api"}
    for name, script in scripts:
        compile(script, f"<{name} healthcheck>", "exec")


def test_worker_healthchecks_connect_as_the_worker_does(compose: dict) -> None:
    # workers/health.py builds its client with chatee.temporal.connect (TLS, mTLS, API key)
    for queue in QUEUES:
        check = compose["services"][f"worker-{queue}"]["healthcheck"]["test"]
        assert check == ["CMD", "python", "-m", "workers.health"]


# -- Dockerfile ----------------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs; comments dropped, continuation lines joined."""
    instructions, pending = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    return instructions


@pytest.fixture(scope="module")
def stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's build stages, each a list of its instructions (FROM first)."""
    result: list[list[tuple[str, str]]] = []
    for instruction in dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8")):
        if instruction[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def test_dockerfile_is_multi_stage(stages: list) -> None:
    assert len(stages) >= 2
    builder = stages[0]
    assert builder[0][1].endswith(" AS builder")
    assert any(i == "RUN" and "pip install -c requirements.lock ." in a for i, a in builder)
    assert ("COPY", "--from=builder /opt/venv /opt/venv") in stages[-1]


def test_final_stage_runs_as_a_non_root_user(stages: list) -> None:
    users = [args for instruction, args in stages[-1] if instruction == "USER"]
    assert users, "the final stage sets USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert user in ("chatee", "10001")


def test_final_stage_entrypoint_and_defaults(stages: list) -> None:
    final = dict(stages[-1][1:])  # last value per instruction
    assert stages[-1][0][1] == "${PYTHON_IMAGE} AS runtime"
    assert json.loads(final["ENTRYPOINT"]) == ["chatee"]
    assert json.loads(final["CMD"]) == ["api", "--host", "0.0.0.0"]
    assert final["EXPOSE"] == "8080"
    assert final["WORKDIR"] == "/app"
    assert "/healthz" in final["HEALTHCHECK"]
    script = json.loads(final["HEALTHCHECK"].split("CMD", 1)[1])
    assert script[:2] == ["python", "-c"]
    compile(script[2], "<Dockerfile HEALTHCHECK>", "exec")
    # `chatee migrate` finds alembic.ini and migrations/ next to the package it imports
    assert "PYTHONPATH=/app" in " ".join(a for i, a in stages[-1] if i == "ENV")


def test_python_image_is_3_11_slim() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", text, re.MULTILINE)


def test_runtime_image_has_the_code_migrations_and_config(stages: list) -> None:
    copied = {
        source.rstrip("/")
        for instruction, args in stages[-1]
        if instruction == "COPY" and not args.startswith("--")
        for source in args.split()[:-1]
    }
    needed = {"chatee", "api", "workflows", "activities", "workers", "migrations", "configs"}
    assert needed | {"alembic.ini"} <= copied


def test_dockerignore_keeps_out_local_state_but_not_sources(stages: list) -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for must in (".venv", ".chatee", ".git", "configs/config.local.yaml", "**/__pycache__"):
        assert must in patterns, must
    sources = {
        word
        for stage in stages
        for instruction, args in stage
        if instruction == "COPY" and not args.startswith("--")
        for word in args.split()[:-1]
    }
    for source in sources:
        assert (REPO_ROOT / source).exists(), source
        assert not any(fnmatch.fnmatch(source, p) for p in patterns), f"{source} is ignored"
