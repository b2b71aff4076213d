"""The first-party web app, served at `GET /`."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(include_in_schema=False)
