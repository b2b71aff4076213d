"""Settings: `configs/config.yaml` → `configs/config.local.yaml` → `CHATEE_*` environment.

Later sources win. The names documented in the README (``CHATEE_DATABASE_URL`` …) are flat
fields; tuning knobs live in nested sections set with ``__`` (``CHATEE_LIMITS__MAX_MESSAGE_BYTES``).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

REPO_ROOT = Path(__file__).resolve().parent.parent


def config_dir() -> Path:
    """`CHATEE_CONFIG_DIR`, else `configs/` of the checkout, else `./configs`."""
    if env := os.environ.get("CHATEE_CONFIG_DIR"):
        return Path(env)
    if (REPO_ROOT / "configs").is_dir():
        return REPO_ROOT / "configs"
    return Path.cwd() / "configs"


class Limits(BaseModel):
    max_message_bytes: int = Field(32 * 1024, gt=0)
    max_request_bytes: int = Field(1024 * 1024, gt=0)
    context_messages: int = Field(50, gt=0)


class Events(BaseModel):
    retention_seconds: int = Field(24 * 3600, gt=0)
    max_len: int = Field(100_000, gt=0)


class Temporal(BaseModel):
    turns_before_continue_as_new: int = Field(100, gt=0)
    llm_start_to_close_seconds: float = Field(300, gt=0)
    llm_heartbeat_seconds: float = Field(30, gt=0)
    llm_max_attempts: int = Field(5, gt=0)
    max_tool_rounds: int = Field(5, ge=0, le=50)


class Mcp(BaseModel):
    """MCP client safety and limits."""

    stdio_allowlist: list[str] = []  # commands a stdio server may run, e.g. ["npx", "uvx"]
    url_denylist: list[str] = [
        "127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
        "169.254.0.0/16", "100.64.0.0/10", "fc00::/7", "fe80::/10", "0.0.0.0/8",
    ]  # fmt: skip
    allow_loopback: bool = False  # `chatee dev` turns this on
    connect_timeout_seconds: float = Field(10, gt=0)
    call_timeout_seconds: float = Field(60, gt=0)
    max_concurrency_per_server: int = Field(8, gt=0)


class Messaging(BaseModel):
    """People-to-people messaging: write fan-out, WebSocket hub, presence, message store."""

    fanout_workflow_threshold: int = Field(100, ge=0)  # more members: Temporal fan-out
    fanout_batch_size: int = Field(100, gt=0, le=5000)  # inbox entries per transaction
    fanout_parallelism: int = Field(4, gt=0, le=64)  # batches in flight per fan-out workflow
    max_group_members: int = Field(10_000, gt=1)
    ws_queue_size: int = Field(256, gt=0)  # frames queued for one socket before it must resync
    ws_gap_fill_max: int = Field(500, gt=0)  # missed entries a socket is sent without a resync
    sync_page_size: int = Field(200, gt=0, le=1000)  # most inbox entries per sync reply
    presence_ttl_seconds: int = Field(60, ge=3)  # offline this long after the last heartbeat
    presence_fanout_max: int = Field(200, gt=0)  # larger conversations get no typing/presence
    cache_ttl_seconds: int = Field(300, gt=0)  # safety net behind explicit invalidation
    recovery_grace_seconds: float = Field(10, gt=0)  # a send still unfanned this long is resumed
    recovery_interval_seconds: float = Field(5, gt=0)
    reconcile_seconds: float = Field(30, gt=0)  # sockets are checked against inbox heads
    hbase_port: int = Field(9090, gt=0, lt=65536)  # HBase Thrift (CHATEE_HBASE_HOST is the host)
    hbase_table_prefix: str = "chatee"
    hbase_salt_buckets: int = Field(16, gt=0, le=256)
    hbase_pool_size: int = Field(8, gt=0)


class Dev(BaseModel):
    temporal_port: int = Field(7233, gt=0, lt=65536)
    temporal_ui_port: int = Field(8233, gt=0, lt=65536)


class ProviderSettings(BaseModel):
    """An extra OpenAI-compatible provider (vLLM, Ollama, a proxy…), named in `llm_providers`."""

    base_url: str
    api_key: SecretStr | None = None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CHATEE_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    database_url: str | None = None
    mysql_password: SecretStr | None = None
    redis_url: str | None = None
    redis_password: SecretStr | None = None
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    llm_openai_api_key: SecretStr | None = None
    llm_openai_base_url: str | None = None
    llm_deepseek_api_key: SecretStr | None = None
    llm_deepseek_base_url: str = "https://api.deepseek.com"
    llm_default_provider: str = "openai"
    llm_default_model: str = "gpt-4o-mini"
    llm_providers: dict[str, ProviderSettings] = {}
    llm_fallback_provider: str | None = None  # used when a turn's provider keeps failing
    llm_fallback_model: str | None = None
    http_host: str = "127.0.0.1"
    http_port: int = Field(8080, gt=0, lt=65536)
    data_dir: Path = Path(".chatee")
    jwt_secret: SecretStr | None = None
    jwt_ttl_seconds: int = Field(7 * 24 * 3600, gt=0)
    message_store: Literal["sql", "hbase"] = "sql"
    hbase_host: str | None = None
    node_id: int = Field(0, ge=0, lt=1024)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_json: bool = False

    limits: Limits = Limits()
    events: Events = Events()
    temporal: Temporal = Temporal()
    mcp: Mcp = Mcp()
    messaging: Messaging = Messaging()
    dev: Dev = Dev()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        folder = config_dir()
        return (
            init_settings,
            env_settings,
            YamlConfigSettingsSource(settings_cls, yaml_file=folder / "config.local.yaml"),
            YamlConfigSettingsSource(settings_cls, yaml_file=folder / "config.yaml"),
        )

    def sqlalchemy_url(self) -> str:
        """The database URL, with `CHATEE_MYSQL_PASSWORD` filled in when the URL has none."""
        url = self.database_url or f"sqlite+aiosqlite:///{(self.data_dir / 'chatee.db').resolve()}"
        if self.mysql_password and url.startswith("mysql"):
            from sqlalchemy.engine import make_url

            parsed = make_url(url)
            if parsed.password is None:
                url = parsed.set(password=self.mysql_password.get_secret_value()).render_as_string(
                    hide_password=False
                )
        return url

    def redis_connection_url(self) -> str:
        if not self.redis_url:
            raise ConfigError("CHATEE_REDIS_URL is not set (chatee dev starts an embedded Redis)")
        return self.redis_url


class ConfigError(Exception):
    """A configuration problem, worded for the operator."""


def describe_validation_error(exc: ValidationError) -> str:
    """One line per bad key, naming both the setting and its environment variable."""
    lines = []
    for err in exc.errors():
        path = [str(p) for p in err["loc"]]
        key = ".".join(path)
        env = "CHATEE_" + "__".join(p.upper() for p in path)
        lines.append(f"invalid setting {key} ({env}): {err['msg']}")
    return "\n".join(lines)


def load_settings(**overrides: object) -> Settings:
    """Read settings now; raise ConfigError with the offending keys on a bad value."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None


@lru_cache
def get_settings() -> Settings:
    return load_settings()
