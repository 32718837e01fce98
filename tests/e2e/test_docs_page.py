"""The browsable API docs work offline: the page and every script it loads come from optflow."""

from __future__ import annotations

import re

import httpx

from e2e.conftest import Server


def test_docs_page_loads_only_local_assets(server: Server) -> None:
    page = httpx.get(server.base_url + "/docs", timeout=10, follow_redirects=True)
    assert page.status_code == 200 and "SwaggerUIBundle" in page.text
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(src.startswith("/docs/assets/") for src in sources), sources
    for src in sources:
        asset = httpx.get(server.base_url + src, timeout=10)
        assert asset.status_code == 200 and len(asset.content) > 1000, src
    assert "https://" not in page.text.split("<script>")[-1]
    redirect = httpx.get(server.base_url + "/docs/oauth2-redirect.html", timeout=10)
    assert redirect.status_code == 200 and "oauth2" in redirect.text.lower()
    spec = httpx.get(server.base_url + "/docs/openapi.json", timeout=10).json()
    assert spec["openapi"].startswith("3.") and "/api/v1/contacts" in spec["paths"]


def test_docs_page_renders_the_operations_in_a_browser(server: Server, browser) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page()
    page.goto(server.base_url + "/docs")
    page.wait_for_selector(".opblock", timeout=20000)
    assert page.locator(".opblock").count() >= 20
    assert page.get_by_text("/api/v1/contacts/{contact_id}/opt-in-request").count() >= 1
    page.close()
