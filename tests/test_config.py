"""Settings precedence (yaml → local yaml → env), nested keys, errors and the database URL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from chatee.config import REPO_ROOT, ConfigError, load_settings


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty config dir, selected through CHATEE_CONFIG_DIR, with no other CHATEE_* set."""
    for name in list(os.environ):
        if name.upper().startswith("CHATEE_"):
            monkeypatch.delenv(name)
    folder = tmp_path / "configs"
    folder.mkdir()
    monkeypatch.setenv("CHATEE_CONFIG_DIR", str(folder))
    return folder


def write(folder: Path, name: str, text: str) -> None:
    (folder / name).write_text(text, encoding="utf-8")


def test_defaults_without_any_file(cfg: Path) -> None:
    settings = load_settings()
    assert settings.http_port == 8080
    assert settings.limits.max_message_bytes == 32 * 1024
    assert settings.database_url is None


def test_yaml_then_local_yaml_then_env(cfg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(cfg, "config.yaml", "http_port: 1001\nhttp_host: yaml.example\nlog_level: debug\n")
    assert load_settings().http_port == 1001

    write(cfg, "config.local.yaml", "http_port: 1002\nhttp_host: local.example\n")
    settings = load_settings()
    assert settings.http_port == 1002
    assert settings.http_host == "local.example"
    assert settings.log_level == "debug"  # only in config.yaml: still applies

    monkeypatch.setenv("CHATEE_HTTP_PORT", "1003")
    settings = load_settings()
    assert settings.http_port == 1003
    assert settings.http_host == "local.example"
    assert settings.log_level == "debug"


def test_env_beats_yaml_files_for_every_kind_of_value(
    cfg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(cfg, "config.yaml", "log_json: false\nnode_id: 3\nmessage_store: sql\n")
    write(cfg, "config.local.yaml", "log_json: false\nnode_id: 4\n")
    monkeypatch.setenv("CHATEE_LOG_JSON", "true")
    monkeypatch.setenv("CHATEE_NODE_ID", "5")
    monkeypatch.setenv("CHATEE_MESSAGE_STORE", "hbase")
    settings = load_settings()
    assert settings.log_json is True
    assert settings.node_id == 5
    assert settings.message_store == "hbase"


def test_nested_keys_merge_across_sources(cfg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(
        cfg,
        "config.yaml",
        "limits:\n  max_message_bytes: 100\n  max_request_bytes: 200\n  context_messages: 7\n",
    )
    write(cfg, "config.local.yaml", "limits:\n  max_request_bytes: 300\n")
    monkeypatch.setenv("CHATEE_LIMITS__MAX_MESSAGE_BYTES", "4096")
    monkeypatch.setenv("CHATEE_TEMPORAL__LLM_HEARTBEAT_SECONDS", "2.5")
    settings = load_settings()
    assert settings.limits.max_message_bytes == 4096  # env
    assert settings.limits.max_request_bytes == 300  # local yaml
    assert settings.limits.context_messages == 7  # yaml
    assert settings.temporal.llm_heartbeat_seconds == 2.5
    assert settings.temporal.llm_max_attempts == 5  # default kept beside an env override


def test_bad_env_value_names_key_and_env_var(cfg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATEE_LIMITS__MAX_MESSAGE_BYTES", "-1")
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "limits.max_message_bytes" in message
    assert "CHATEE_LIMITS__MAX_MESSAGE_BYTES" in message


def test_bad_flat_value_names_key_and_env_var(cfg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATEE_HTTP_PORT", "notaport")
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "http_port" in message
    assert "CHATEE_HTTP_PORT" in message


def test_bad_yaml_value_names_key_and_env_var(cfg: Path) -> None:
    write(cfg, "config.local.yaml", "events:\n  retention_seconds: 0\nlog_level: loud\n")
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "events.retention_seconds" in message
    assert "CHATEE_EVENTS__RETENTION_SECONDS" in message
    assert "log_level" in message and "CHATEE_LOG_LEVEL" in message
    assert len(message.splitlines()) == 2  # one line per bad key


def test_sqlalchemy_url_defaults_to_sqlite_in_data_dir(
    cfg: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    monkeypatch.setenv("CHATEE_DATA_DIR", str(data))
    url = load_settings().sqlalchemy_url()
    assert url == f"sqlite+aiosqlite:///{(data / 'chatee.db').resolve()}"


def test_sqlalchemy_url_relative_data_dir_is_made_absolute(
    cfg: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    url = load_settings().sqlalchemy_url()
    assert url == f"sqlite+aiosqlite:///{(tmp_path / '.chatee' / 'chatee.db').resolve()}"


def test_mysql_password_is_filled_into_url_without_one(
    cfg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "CHATEE_DATABASE_URL", "mysql+aiomysql://chatee@db.example:3306/chatee?charset=utf8mb4"
    )
    monkeypatch.setenv("CHATEE_MYSQL_PASSWORD", "p@ss/w:rd%")
    url = make_url(load_settings().sqlalchemy_url())
    assert url.password == "p@ss/w:rd%"
    assert url.username == "chatee"
    assert url.host == "db.example"
    assert url.port == 3306
    assert url.database == "chatee"
    assert url.query == {"charset": "utf8mb4"}
    assert url.drivername == "mysql+aiomysql"


def test_mysql_password_does_not_replace_one_in_url(
    cfg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATEE_DATABASE_URL", "mysql+aiomysql://chatee:inurl@db.example/chatee")
    monkeypatch.setenv("CHATEE_MYSQL_PASSWORD", "fromenv")
    assert make_url(load_settings().sqlalchemy_url()).password == "inurl"


def test_mysql_password_is_not_put_into_sqlite_url(
    cfg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATEE_DATABASE_URL", "sqlite+aiosqlite:////tmp/x.db")
    monkeypatch.setenv("CHATEE_MYSQL_PASSWORD", "fromenv")
    assert load_settings().sqlalchemy_url() == "sqlite+aiosqlite:////tmp/x.db"


def test_cli_reports_bad_env_and_exits_2(cfg: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CHATEE_")}
    env.update(
        CHATEE_CONFIG_DIR=str(cfg),
        CHATEE_HTTP_PORT="notaport",
        # should the bad value slip through, migrate a throwaway database, not a real one
        CHATEE_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "chatee.cli", "migrate"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "CHATEE_HTTP_PORT" in proc.stderr
    assert "http_port" in proc.stderr
    assert not (tmp_path / "cli.db").exists()


def test_unknown_yaml_key_is_rejected(cfg: Path) -> None:
    write(cfg, "config.yaml", "http_prot: 1234\n")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "http_prot" in str(info.value)


def test_config_dir_env_var_is_not_a_setting(cfg: Path) -> None:
    # CHATEE_CONFIG_DIR shares the CHATEE_ prefix but must not trip extra="forbid"
    assert os.environ["CHATEE_CONFIG_DIR"] == str(cfg)
    load_settings()
