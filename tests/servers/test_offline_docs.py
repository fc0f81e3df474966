"""`/docs` works with no network: every asset the Swagger UI page loads is served by the server itself."""

from __future__ import annotations

import importlib
import re
from urllib.parse import urljoin, urlsplit

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from jivapay.servers.app_factory import ServerName

_ASSET_URL = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|\burl\s*:\s*["']([^"']+)["']""")


def _asset_urls(html: str) -> list[str]:
    return [a or b for a, b in _ASSET_URL.findall(html)]


@pytest.mark.parametrize("name", [s.value for s in ServerName])
def test_docs_page_loads_every_asset_from_the_server_itself(name: str) -> None:
    module = importlib.import_module(f"jivapay.servers.{name}.server")
    app: FastAPI = module.app
    client = TestClient(app, base_url="http://testserver")

    page = client.get("/docs")
    assert page.status_code == 200
    urls = _asset_urls(page.text)
    # The page script, its stylesheet, its icon and the OpenAPI document at least.
    assert len(urls) >= 4, urls
    for url in urls:
        absolute = urljoin("http://testserver/docs", url)
        parts = urlsplit(absolute)
        assert parts.netloc == "testserver", f"{url} is not served locally"
        answer = client.get(parts.path)
        assert answer.status_code == 200, f"{url}: {answer.status_code}"
        assert answer.content, url
    scripts = [u for u in urls if u.endswith(".js")]
    assert any(client.get(u).text.lstrip().startswith("/*!") for u in scripts)  # the real bundle
    assert client.get("/docs/oauth2-redirect").status_code == 200
