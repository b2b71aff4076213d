"""deploy/kubernetes: every manifest is valid against the Kubernetes schemas (kubernetes-validate)
and keeps the promises of its README — probes, a Deployment per task queue with graceful
termination, a migrate Job, configuration in a ConfigMap, secrets only from a Secret, non-root."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from workflows.names import QUEUES

HERE = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes"
K8S = "1.37.0"
SECRETISH = ("SECRET", "PASSWORD", "API_KEY", "TOKEN")


def manifests() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(HERE.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in manifests() if d["kind"] == kind}


def pod_specs() -> list[tuple[str, dict[str, Any]]]:
    return [
        (d["metadata"]["name"], d["spec"]["template"]["spec"])
        for d in manifests()
        if d["kind"] in ("Deployment", "Job")
    ]


def test_every_manifest_is_valid_against_the_schemas() -> None:
    docs = manifests()
    assert len(docs) >= 10
    for doc in docs:
        kubernetes_validate.validate(doc, K8S, strict=True)


@pytest.mark.parametrize(
    "break_it",
    [
        lambda d: d["spec"]["template"]["spec"]["containers"][0].update(image=42),
        lambda d: d["spec"]["template"]["spec"]["containers"][0].update(livenessprobe={}),
        lambda d: d["spec"].pop("selector"),
    ],
    ids=["wrong type", "misspelled field", "missing required field"],
)
def test_the_validator_rejects_a_broken_manifest(break_it: Any) -> None:
    broken = copy.deepcopy(by_kind("Deployment")["chatee-api"])
    break_it(broken)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S, strict=True)


def test_the_api_has_health_and_readiness_probes_a_service_a_pdb_and_an_hpa() -> None:
    api = by_kind("Deployment")["chatee-api"]["spec"]["template"]["spec"]["containers"][0]
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert by_kind("Service")["chatee-api"]["spec"]["selector"] == {
        "app.kubernetes.io/name": "chatee-api"
    }
    assert "chatee-api" in by_kind("PodDisruptionBudget")
    assert by_kind("HorizontalPodAutoscaler")["chatee-api"]["spec"]["minReplicas"] >= 2


def test_a_worker_deployment_per_task_queue_with_readiness_and_graceful_termination() -> None:
    deployments = by_kind("Deployment")
    for queue in QUEUES:
        pod = deployments[f"chatee-worker-{queue}"]["spec"]["template"]["spec"]
        worker = pod["containers"][0]
        assert worker["args"] == ["worker", "--queue", queue]
        assert worker["readinessProbe"]["exec"]["command"] == ["python", "-m", "workers.health"]
        assert worker["resources"]["requests"]["cpu"] and worker["resources"]["requests"]["memory"]
        assert pod["terminationGracePeriodSeconds"] >= 10
    workers = {n for n, d in deployments.items() if "--queue" in str(d)}
    assert workers == {f"chatee-worker-{q}" for q in QUEUES}


def test_migrations_run_as_a_job() -> None:
    job = by_kind("Job")["chatee-migrate"]["spec"]["template"]["spec"]
    assert job["containers"][0]["args"] == ["migrate"]
    assert job["restartPolicy"] in ("OnFailure", "Never")


def test_configuration_from_the_configmap_and_secrets_only_from_a_secret() -> None:
    config = by_kind("ConfigMap")["chatee-config"]["data"]
    assert not [key for key in config if any(word in key for word in SECRETISH)]
    assert not by_kind("Secret"), "no Secret with literal values ships in the manifests"
    for name, pod in pod_specs():
        for container in pod["containers"]:
            sources = container["envFrom"]
            assert {"configMapRef": {"name": "chatee-config"}} in sources, name
            assert {"secretRef": {"name": "chatee-secrets"}} in sources, name
            literal = [e["name"] for e in container.get("env", []) if "value" in e]
            assert not [n for n in literal if any(word in n for word in SECRETISH)], name


def test_every_pod_runs_as_non_root_without_privileges() -> None:
    for name, pod in pod_specs():
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0, name
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"]["drop"] == ["ALL"], name
