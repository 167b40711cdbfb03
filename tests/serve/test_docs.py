"""/docs and /redoc work offline: every script and stylesheet they load is served by the app itself."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from kdsam.serve.app import create_app
from kdsam.serve.engine import Engine


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_only_local_assets(engine: Engine, page: str) -> None:
    client = TestClient(create_app(engine))
    html = client.get(page).text
    assets = re.findall(r'(?:src|href)="([^"]+)"', html) + re.findall(r"url: ?'([^']+)'", html)
    assert assets and not [a for a in assets if a.startswith(("http:", "https:", "//"))], assets
    for asset in assets:
        response = client.get(asset)
        assert response.status_code == 200 and len(response.content) > 100, asset


def test_favicon(engine: Engine) -> None:
    response = TestClient(create_app(engine)).get("/favicon.ico")
    assert response.status_code == 200 and response.headers["content-type"].startswith("image/svg")
