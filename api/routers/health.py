"""Liveness and readiness (database, Redis, Temporal checked separately)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.deps import Svc
from api.schemas import Check, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(svc: Svc) -> JSONResponse:
    async def database() -> None:
        async with svc.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def redis() -> None:
        await svc.redis.ping()

    async def temporal() -> None:
        await svc.temporal.service_client.check_health()

    names = ("database", "redis", "temporal")
    results = await asyncio.gather(*(_check(f()) for f in (database, redis, temporal)))
    checks = dict(zip(names, results, strict=True))
    ready = all(c.ok for c in checks.values())
    body = Readiness(status="ready" if ready else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


async def _check(probe: Awaitable[None]) -> Check:
    try:
        await asyncio.wait_for(probe, timeout=2)
        return Check(ok=True)
    except Exception as exc:  # any failure means not ready; say which kind, not the secrets
        return Check(ok=False, detail=type(exc).__name__)
