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
    max_upload_bytes: int = Field(10 * 1024 * 1024, gt=0)  # knowledge-base documents
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
    # a cluster or Temporal Cloud (README "Temporal Cloud and TLS"); paths are PEM files
    tls: bool = False  # implied by any tls_* path or an api_key
    tls_client_cert_path: Path | None = None  # mTLS: with tls_client_key_path
    tls_client_key_path: Path | None = None
    tls_server_ca_cert_path: Path | None = None  # unset: the system's roots
    tls_server_name: str | None = None  # SNI / certificate name when it differs from the host
    api_key: SecretStr | None = None  # Temporal Cloud API key (sent as a bearer token)


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
    max_reaction_kinds: int = Field(20, gt=0)  # different emoji on one message
    reactions_per_window: int = Field(120, ge=0)  # reaction changes per user per rate window
    ws_queue_size: int = Field(256, gt=0)  # frames queued for one socket before it must resync
    ws_gap_fill_max: int = Field(500, gt=0)  # missed entries a socket is sent without a resync
    sync_page_size: int = Field(200, gt=0, le=1000)  # most inbox entries per sync reply
    presence_ttl_seconds: int = Field(60, ge=3)  # offline this long after the last heartbeat
    presence_fanout_max: int = Field(200, gt=0)  # larger conversations get no typing/presence
    cache_ttl_seconds: int = Field(300, gt=0)  # safety net behind explicit invalidation
    near_cache_seconds: float = Field(5, ge=0)  # API processes' own copy of cached reads; 0: off
    recovery_grace_seconds: float = Field(10, gt=0)  # a send still unfanned this long is resumed
    recovery_interval_seconds: float = Field(5, gt=0)
    reconcile_seconds: float = Field(30, gt=0)  # sockets are checked against inbox heads
    # push channels users hash into; an API process listens to its own users' buckets only.
    # Every process must use the same number.
    push_buckets: int = Field(256, gt=0, le=16384)
    hbase_port: int = Field(9090, gt=0, lt=65536)  # HBase Thrift (CHATEE_HBASE_HOST is the host)
    hbase_table_prefix: str = "chatee"
    hbase_salt_buckets: int = Field(16, gt=0, le=256)
    hbase_pool_size: int = Field(8, gt=0)


class Rag(BaseModel):
    """Knowledge bases: ingestion (parse → chunk → embed → index) and hybrid retrieval."""

    embedding_provider: str = "openai"  # an LLM provider name (its base URL and key are used)
    embedding_model: str = "text-embedding-3-small"
    embedding_dimensions: int | None = Field(None, gt=0)  # ask the model for shorter vectors
    embed_batch_size: int = Field(64, gt=0, le=2048)  # texts per embeddings request
    chunk_size: int = Field(800, ge=100)  # characters per chunk
    chunk_overlap: int = Field(120, ge=0)  # characters shared by neighbouring chunks
    max_chunks_per_document: int = Field(20_000, gt=0)
    top_k: int = Field(4, gt=0, le=50)  # passages an AG_RAG step / search returns
    candidates: int = Field(50, gt=0, le=1000)  # per retriever (lexical, vector) before fusion
    rrf_k: int = Field(60, gt=0)  # reciprocal rank fusion constant
    score_threshold: float = Field(0.0, ge=0, le=1)  # fused score (0–1) below which hits drop
    min_similarity: float = Field(0.2, ge=-1, le=1)  # cosine below which vector hits drop
    vector_cache_mb: int = Field(512, gt=0)  # in-process vector matrices, LRU per knowledge base
    ingest_max_attempts: int = Field(3, gt=0)  # per ingestion activity, then the doc fails


class Security(BaseModel):
    """Tokens, API keys, CORS, response headers and abuse limits (README "Security")."""

    refresh_ttl_seconds: int = Field(30 * 24 * 3600, gt=0)  # a login lasts this long unused
    # keys API-key hashes; unset: derived from CHATEE_JWT_SECRET (rotating it voids all keys)
    api_key_pepper: SecretStr | None = None
    cors_origins: list[str] = []  # exact origins allowed cross-site, e.g. ["https://app.example"]
    cors_allow_credentials: bool = False
    hsts_seconds: int = Field(0, ge=0)  # Strict-Transport-Security max-age; 0: not sent
    content_security_policy: str = "default-src 'none'; frame-ancestors 'none'"
    rate_limits_enabled: bool = True
    rate_window_seconds: int = Field(60, gt=0)  # every budget below counts over this window
    ip_requests_per_window: int = Field(1200, ge=0)  # any /api/v1 request, per client IP; 0: off
    auth_requests_per_window: int = Field(30, ge=0)  # /api/v1/auth/*, per client IP
    user_writes_per_window: int = Field(1200, ge=0)  # POST/PUT/PATCH/DELETE, per user or key
    # per-IP budgets skip these (a local reverse proxy without X-Forwarded-For looks like one
    # client); per-user budgets still apply
    rate_limit_exempt_ips: list[str] = ["127.0.0.1/32", "::1/128"]
    max_sessions_per_user: int = Field(1000, ge=0)  # open agent sessions per user; 0: no limit
    max_api_keys_per_user: int = Field(50, gt=0)
    ws_max_frame_bytes: int | None = Field(None, gt=0)  # unset: limits.max_request_bytes
    ws_messages_per_second: float = Field(20, gt=0)  # per connection, sustained
    ws_message_burst: int = Field(40, gt=0)  # per connection, all at once
    # open WebSocket / SSE streams re-check their token this often; a revoked one is closed
    stream_recheck_seconds: float = Field(15, gt=0)


class Observability(BaseModel):
    """Prometheus metrics, OpenTelemetry tracing (README "Observability")."""

    metrics_enabled: bool = True  # GET /metrics on the API
    worker_metrics_port: int = Field(0, ge=0, lt=65536)  # worker /metrics over HTTP; 0: off
    worker_metrics_host: str = "127.0.0.1"
    temporal_metrics_port: int = Field(0, ge=0, lt=65536)  # Temporal SDK runtime metrics; 0: off
    tracing_exporter: Literal["none", "console", "file", "otlp"] = "none"
    tracing_file: Path | None = None  # `file`: one JSON span per line, appended
    otlp_endpoint: str | None = None  # `otlp`: e.g. http://collector:4318/v1/traces
    service_name: str | None = None  # default chatee-api / chatee-worker
    trace_sample_ratio: float = Field(1.0, ge=0, le=1)


class QueueConcurrency(BaseModel):
    """How much one worker process takes on from one task queue."""

    max_concurrent_activities: int = Field(200, gt=0)
    max_concurrent_workflow_tasks: int = Field(200, gt=0)
    max_activities_per_second: float | None = Field(None, gt=0)  # this worker, this queue
    max_task_queue_activities_per_second: float | None = Field(None, gt=0)  # the whole queue


class Workers(BaseModel):
    """Per-queue concurrency and Worker Deployment versioning (README "Scaling workers")."""

    # workflow tasks are CPU-bound: a few per core, or they outlive their task timeout under load
    agents: QueueConcurrency = QueueConcurrency(max_concurrent_workflow_tasks=10)
    llm: QueueConcurrency = QueueConcurrency()
    tools: QueueConcurrency = QueueConcurrency()
    rag: QueueConcurrency = QueueConcurrency()
    messages: QueueConcurrency = QueueConcurrency()
    graceful_shutdown_seconds: float = Field(10, ge=0)
    # Worker Deployment versioning: off unless a deployment name is set
    deployment_name: str | None = None
    build_id: str | None = None  # this code's version within the deployment, e.g. a git sha
    # make this build the deployment's current version once its pollers are up (simple
    # rollouts; leave off to promote with `temporal worker deployment set-current-version`)
    promote_on_start: bool = False


class Pool(BaseModel):
    """One process's SQL connection pool: it opens at most `size + max_overflow` connections."""

    size: int = Field(10, gt=0)
    max_overflow: int = Field(10, ge=0)
    timeout_seconds: float = Field(30, gt=0)  # wait this long for a free connection, then fail
    recycle_seconds: int = Field(1800, gt=0)  # reconnect before the server's idle timeout

    @property
    def most(self) -> int:
        return self.size + self.max_overflow


class Database(BaseModel):
    """Pools per process kind and an optional read replica (README "Running at scale").

    The defaults keep the compose topology (2 APIs + 10 workers: 2 x 20 + 10 x 8 = 120)
    under MySQL's default `max_connections` of 151."""

    api: Pool = Pool()
    worker: Pool = Pool(size=4, max_overflow=4)
    # reads that tolerate replication lag (history pages, search, listings); never the ledger,
    # inboxes or anything read right after a write. Unset: every read goes to the primary.
    replica_url: str | None = None


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
    # a Redis Cluster: the URL names any node (README "Running at scale")
    redis_cluster: bool = False
    # per process; callers wait for a free connection (an open SSE stream holds one)
    redis_max_connections: int = Field(1000, ge=8)
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    # the web app links each agent session to its workflow here (default: this host, port
    # dev.temporal_ui_port, where `chatee dev` serves it)
    temporal_ui_url: str | None = None
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
    jwt_ttl_seconds: int = Field(30 * 60, gt=0)  # access tokens; refresh for new ones
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
    rag: Rag = Rag()
    security: Security = Security()
    observability: Observability = Observability()
    workers: Workers = Workers()
    database: Database = Database()
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


def require_api_secrets(settings: Settings) -> None:
    """The API refuses to start without a JWT secret: every token would be forgeable."""
    if settings.jwt_secret is None:
        raise ConfigError("CHATEE_JWT_SECRET is not set (chatee dev generates one for you)")


def ws_frame_limit(settings: Settings) -> int:
    """Largest client frame handled; bigger ones get an `error` frame (`too-large`)."""
    return settings.security.ws_max_frame_bytes or settings.limits.max_request_bytes


def ws_protocol_limit(settings: Settings) -> int:
    """uvicorn's `ws_max_size`: frames beyond it are never buffered; the socket closes (1009)."""
    return 4 * ws_frame_limit(settings)
