"""Run Alembic migrations from code (`chatee migrate`, `chatee dev`, tests)."""

from __future__ import annotations

import asyncio

from alembic import command
from alembic.config import Config

from chatee.config import REPO_ROOT


def alembic_config(url: str) -> Config:
    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(REPO_ROOT / "migrations"))
    config.attributes["url"] = url
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


async def upgrade_async(url: str, revision: str = "head") -> None:
    """env.py runs its own event loop, so call it from a thread when already inside one."""
    await asyncio.to_thread(upgrade, url, revision)
