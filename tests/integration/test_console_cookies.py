"""Behind HTTPS (the public URL says so), the console's cookies are Secure as well as HttpOnly and
SameSite; signing in and reading a page works through the app."""

from __future__ import annotations

import re

from sanic import Sanic

from conftest import new_agent, new_org
from optflow.bootstrap import System
from optflow.config import Config
from optflow.entrypoints.app import create_app
from optflow.service_layer import console_auth


async def test_cookies_are_secure_behind_https(system: System) -> None:
    org_id = new_org(system)
    agent_id = new_agent(system, org_id).id
    with system.bus.uow() as uow:
        console_auth.set_sign_in(uow, org_id, agent_id, "dana@example.com", "a long enough password")
        uow.commit()
    app: Sanic = create_app(Config(database_url=system.config.database_url, public_url="https://optflow.example.com"),
                            system=system, name="console_https")
    _, form = await app.asgi_client.get("/console/sign-in")
    assert "Secure" in form.headers["set-cookie"] and "HttpOnly" in form.headers["set-cookie"]
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert csrf
    _, signed_in = await app.asgi_client.post(
        "/console/sign-in", data={"csrf_token": csrf.group(1), "email": "dana@example.com",
                                  "password": "a long enough password"},
        cookies={"optflow_sign_in": csrf.group(1)})
    assert signed_in.status_code == 303, signed_in.text
    session = next(c for c in signed_in.headers.get_list("set-cookie") if c.startswith("optflow_session="))
    assert "Secure" in session and "HttpOnly" in session and "SameSite=Lax" in session
