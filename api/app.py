"""The FastAPI application: routers, error handling, and the resources they share."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from starlette.middleware.cors import CORSMiddleware

from api import agui, errors, web
from api.a2a import router as a2a_router
from api.deps import SESSION_HEADER
from api.limits import BodySizeLimit
from api.mcp_server import AgentsMcpServer
from api.metrics import Observe
from api.metrics import router as metrics_router
from api.middleware import REQUEST_ID, RequestContext
from api.openai import router as openai_router
from api.ratelimit import RateLimitByIp
from api.routers import (
    agents,
    api_keys,
    auth,
    chat,
    conversations,
    health,
    knowledge,
    mcp,
    memory,
    presence,
    sessions,
    sync,
    users,
)
from api.ws import Hub
from api.ws import router as ws_router
from chatee import temporal
from chatee.config import Settings, load_settings, require_api_secrets
from chatee.logging import register_secret
from chatee.messaging.cache import watch_agent_writes
from chatee.nodes import NodeLease
from chatee.runtime import tune_for_serving
from chatee.services import Services
from chatee.tracing import setup_tracing


def app_from_config() -> FastAPI:
    """The app `chatee api` serves (a uvicorn factory: settings from config and environment)."""
    return create_app(load_settings())


def create_app(settings: Settings) -> FastAPI:
    require_api_secrets(settings)
    for secret in (settings.jwt_secret, settings.llm_openai_api_key, settings.llm_deepseek_api_key):
        register_secret(secret.get_secret_value() if secret else None)
    setup_tracing(settings, "chatee-api")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # lazy: the API starts (and /readyz reports) even while Temporal is still coming up
        client = await temporal.connect(settings, lazy=True)
        svc = app.state.services = Services.create(settings, client)
        lease = None
        if "node_id" not in settings.model_fields_set:  # replicas share a config: lease one
            lease = NodeLease(svc.redis)
            await lease.acquire()
        watch_agent_writes(svc.messenger.cache)
        svc.messenger.cache.listen()  # a near copy of memberships, invalidated by pub/sub
        app.state.hub = Hub(svc)  # this process's WebSocket connections
        await app.state.hub.start()
        tune_for_serving()  # after everything startup built: see chatee/runtime.py
        async with mcp_endpoint.lifespan():
            yield
        await app.state.hub.stop()
        if lease:
            await lease.release()
        await svc.close()

    app = FastAPIOffline(  # /docs and /redoc from the package's own assets: no CDN
        title="Chatee",
        version="0.1.0",
        summary="Chat backend where people talk to each other and to AI agents, on Temporal.",
        lifespan=lifespan,
    )
    errors.install(app)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.limits.max_request_bytes,
        upload_bytes=settings.limits.max_upload_bytes,
    )
    app.add_middleware(RateLimitByIp, settings=settings)  # per client IP (per user: api.deps)
    app.add_middleware(  # cross-site browsers: only the configured origins (default none)
        CORSMiddleware,
        allow_origins=settings.security.cors_origins,
        allow_credentials=settings.security.cors_allow_credentials,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        allow_headers=[
            "Authorization",
            "Content-Type",
            "Last-Event-ID",
            REQUEST_ID,
            SESSION_HEADER,  # the OpenAI-compatible API's session (api/openai)
        ],
        expose_headers=[REQUEST_ID, "Retry-After", SESSION_HEADER],
        max_age=600,
    )
    app.add_middleware(RequestContext, settings=settings)  # outermost: request id, headers
    app.add_middleware(Observe)  # around everything: latency by route template (/metrics)
    app.include_router(health.router)
    if settings.observability.metrics_enabled:
        app.include_router(metrics_router)  # GET /metrics (Prometheus)
    app.include_router(api_keys.router, prefix="/api/v1")
    for router in (auth.router, agents.router, sessions.router, chat.router, mcp.router):
        app.include_router(router, prefix="/api/v1")
    app.include_router(users.router, prefix="/api/v1")  # /me, /users
    for router in (conversations.router, sync.router, presence.router):
        app.include_router(router, prefix="/api/v1")
    for router in (knowledge.router, memory.router):  # knowledge bases, RAG, memory
        app.include_router(router, prefix="/api/v1")
    app.include_router(ws_router)  # WS /ws
    app.include_router(openai_router)  # /v1: the OpenAI-compatible API
    app.include_router(agui.router, prefix="/api/v1")  # AG-UI runs
    app.include_router(a2a_router)  # /a2a: agent cards and JSON-RPC
    # the caller's agents as MCP tools (streamable HTTP, bearer JWT)
    mcp_endpoint = AgentsMcpServer(app, settings)
    app.router.add_route("/mcp", mcp_endpoint, include_in_schema=False)
    app.include_router(web.router)  # last: the web app at /
    return app
