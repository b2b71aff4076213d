"""/docs and /redoc work on a machine without internet: every asset they load is served by
the API itself (fastapi-offline's packaged Swagger UI and ReDoc), none comes from a CDN."""

from __future__ import annotations

import re

import httpx
import pytest


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_pages_load_only_local_assets(http: httpx.AsyncClient, page: str) -> None:
    html = (await http.get(page)).text
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sources, html
    assert not [s for s in sources if s.startswith(("http:", "https:", "//"))], sources
    for src in sources:  # each script, stylesheet and icon is really there
        asset = await http.get(src)
        assert asset.status_code == 200, src
        assert len(asset.content) > 1000, src
    assert "/openapi.json" in html
