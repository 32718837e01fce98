"""What the web app answers besides its own routes, now that it loads only the Sanic Extensions
it uses (the OpenAPI document, and HEAD and OPTIONS for every route): HEAD and OPTIONS still
work, the API's OpenAPI document is still served, and no CORS header lets a browser page of
another origin read an answer."""

from __future__ import annotations

from sanic import Sanic

from conftest import new_org
from optflow.bootstrap import System
from optflow.config import Config
from optflow.entrypoints.app import create_app


def app_for(system: System, name: str) -> Sanic:
    return create_app(Config(database_url=system.config.database_url), system=system, name=name)


async def test_head_and_options_are_answered_for_every_route(system: System) -> None:
    new_org(system)
    app = app_for(system, "http_methods")
    _, head = await app.asgi_client.head("/healthz")
    assert head.status_code == 200 and head.body == b""
    _, options = await app.asgi_client.options("/api/v1/contacts")
    assert options.status_code == 204
    assert set(options.headers["allow"].split(",")) == {"GET", "HEAD", "POST", "OPTIONS"}


async def test_the_openapi_document_is_served(system: System) -> None:
    app = app_for(system, "http_openapi")
    _, document = await app.asgi_client.get("/docs/openapi.json")
    assert document.status_code == 200
    assert "/api/v1/contacts" in document.json["paths"]


async def test_no_answer_carries_cors_headers(system: System) -> None:
    app = app_for(system, "http_cors")
    preflight_headers = {"origin": "https://elsewhere.example", "access-control-request-method": "POST"}
    _, preflight = await app.asgi_client.options("/api/v1/contacts", headers=preflight_headers)
    _, health = await app.asgi_client.get("/healthz", headers={"origin": "https://elsewhere.example"})
    for response in (preflight, health):
        assert not [name for name in response.headers if name.lower().startswith("access-control-")]
