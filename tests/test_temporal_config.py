"""Connection settings for a Temporal cluster or Temporal Cloud (TLS, mTLS, API key) and the
worker settings (per-queue concurrency, deployment versioning), as parsed from the
environment. There is no TLS Temporal server here, so this checks the parsing and the
operator-facing errors only; the plaintext path is exercised by every end-to-end test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from temporalio.common import VersioningBehavior
from temporalio.service import TLSConfig

from chatee.config import ConfigError, load_settings
from chatee.logging import scrub
from chatee.temporal import tls_config
from workers.main import deployment_config

PEM = {
    "ca.pem": b"-----BEGIN CERTIFICATE-----\nca\n-----END CERTIFICATE-----\n",
    "client.pem": b"-----BEGIN CERTIFICATE-----\nclient\n-----END CERTIFICATE-----\n",
    "client.key": b"-----BEGIN PRIVATE KEY-----\nkey\n-----END PRIVATE KEY-----\n",
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No CHATEE_* from the environment and an empty config folder: only what a test sets."""
    for name in list(os.environ):
        if name.startswith("CHATEE_"):
            monkeypatch.delenv(name)
    folder = tmp_path / "configs"
    folder.mkdir()
    monkeypatch.setenv("CHATEE_CONFIG_DIR", str(folder))


@pytest.fixture
def pems(tmp_path: Path) -> dict[str, Path]:
    for name, body in PEM.items():
        (tmp_path / name).write_bytes(body)
    return {name: tmp_path / name for name in PEM}


def test_plaintext_by_default() -> None:
    assert tls_config(load_settings()) is False


def test_mtls_from_the_environment(monkeypatch: pytest.MonkeyPatch, pems: dict[str, Path]) -> None:
    monkeypatch.setenv("CHATEE_TEMPORAL_ADDRESS", "my-ns.a1b2c.tmprl.cloud:7233")
    monkeypatch.setenv("CHATEE_TEMPORAL__TLS_SERVER_CA_CERT_PATH", str(pems["ca.pem"]))
    monkeypatch.setenv("CHATEE_TEMPORAL__TLS_CLIENT_CERT_PATH", str(pems["client.pem"]))
    monkeypatch.setenv("CHATEE_TEMPORAL__TLS_CLIENT_KEY_PATH", str(pems["client.key"]))
    monkeypatch.setenv("CHATEE_TEMPORAL__TLS_SERVER_NAME", "temporal.internal")
    tls = tls_config(load_settings())
    assert isinstance(tls, TLSConfig)
    assert tls.server_root_ca_cert == PEM["ca.pem"]
    assert tls.client_cert == PEM["client.pem"]
    assert tls.client_private_key == PEM["client.key"]
    assert tls.domain == "temporal.internal"


def test_api_key_alone_means_tls_with_system_roots(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATEE_TEMPORAL__API_KEY", "tc-api-key-0123456789")
    settings = load_settings()
    assert tls_config(settings) is True
    assert settings.temporal.api_key is not None
    assert "tc-api-key" not in repr(settings)  # a SecretStr: never printed by accident


def test_tls_flag_alone_uses_system_roots(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATEE_TEMPORAL__TLS", "true")
    assert tls_config(load_settings()) is True


def test_a_client_cert_needs_its_key(
    monkeypatch: pytest.MonkeyPatch, pems: dict[str, Path]
) -> None:
    monkeypatch.setenv("CHATEE_TEMPORAL__TLS_CLIENT_CERT_PATH", str(pems["client.pem"]))
    with pytest.raises(ConfigError, match="tls_client_key_path go together"):
        tls_config(load_settings())


def test_an_unreadable_pem_names_its_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CHATEE_TEMPORAL__TLS_SERVER_CA_CERT_PATH", str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="CHATEE_TEMPORAL__TLS_SERVER_CA_CERT_PATH"):
        tls_config(load_settings())


async def test_the_api_key_is_masked_in_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    """connect() registers the key as a secret before dialling (here: a port nobody serves)."""
    from chatee.temporal import connect

    monkeypatch.setenv("CHATEE_TEMPORAL__API_KEY", "tc-key-that-must-not-leak")
    monkeypatch.setenv("CHATEE_TEMPORAL_ADDRESS", "127.0.0.1:1")
    with pytest.raises(RuntimeError):
        await connect(load_settings())
    assert scrub("auth failed for tc-key-that-must-not-leak") == "auth failed for ***"
    # a provider's key it echoes back, which Chatee may not know (another key, a typo)
    assert scrub("Incorrect API key provided: sk-live-0123456789abcdef.") == (
        "Incorrect API key provided: sk-***."
    )


def test_per_queue_concurrency_and_versioning_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHATEE_WORKERS__LLM__MAX_CONCURRENT_ACTIVITIES", "16")
    monkeypatch.setenv("CHATEE_WORKERS__LLM__MAX_TASK_QUEUE_ACTIVITIES_PER_SECOND", "50")
    monkeypatch.setenv("CHATEE_WORKERS__AGENTS__MAX_CONCURRENT_WORKFLOW_TASKS", "400")
    settings = load_settings()
    assert settings.workers.llm.max_concurrent_activities == 16
    assert settings.workers.llm.max_task_queue_activities_per_second == 50
    assert settings.workers.agents.max_concurrent_workflow_tasks == 400
    assert settings.workers.tools.max_concurrent_activities == 200  # untouched: the default
    assert deployment_config(settings) is None  # versioning is opt-in

    monkeypatch.setenv("CHATEE_WORKERS__DEPLOYMENT_NAME", "chatee")
    with pytest.raises(ConfigError, match="CHATEE_WORKERS__BUILD_ID"):
        deployment_config(load_settings())
    monkeypatch.setenv("CHATEE_WORKERS__BUILD_ID", "2026-11-23.abc123")
    config = deployment_config(load_settings())
    assert config is not None and config.use_worker_versioning
    assert config.version.deployment_name == "chatee"
    assert config.version.build_id == "2026-11-23.abc123"
    assert config.default_versioning_behavior == VersioningBehavior.AUTO_UPGRADE


def test_bad_concurrency_is_refused_with_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATEE_WORKERS__LLM__MAX_CONCURRENT_ACTIVITIES", "0")
    with pytest.raises(ConfigError, match="CHATEE_WORKERS__LLM__MAX_CONCURRENT_ACTIVITIES"):
        load_settings()
