"""Admins list, revoke and expire API tokens over the API; a revoked or expired token gets 401
saying which. Each test makes its own agents, so the shared tokens of the suite stay valid."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import httpx
import pytest

from e2e.helpers import error_code
from optflow.adapters.unit_of_work import SqlUnitOfWork
from optflow.service_layer import admin

if TYPE_CHECKING:
    from e2e.conftest import Library, Server

pytestmark = pytest.mark.e2e


def new_agent(library: Library, org_id: int, role: str = "agent") -> admin.NewAgent:
    with SqlUnitOfWork(library.system.engine) as uow:
        agent = admin.add_agent(uow, org_id, f"{role} for a token test", role, datetime.now(UTC))
        uow.commit()
    return agent


def client(server: Server, token: str) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=15)


def listed(admin_client: httpx.Client, agent_id: int) -> dict[str, object]:
    response = admin_client.get("/api/v1/agents")
    assert response.status_code == 200, response.text
    return next(a for a in response.json()["agents"] if a["id"] == agent_id)


def test_admins_list_agents_with_their_token_state_and_never_the_token(
        server: Server, library: Library, admin_client: httpx.Client) -> None:
    agent = new_agent(library, server.org_id)
    before = listed(admin_client, agent.id)
    assert before["last_used_at"] is None and before["active"] is True
    assert before["expires_at"] is None and before["revoked_at"] is None and before["role"] == "agent"
    with client(server, agent.token) as as_agent:
        assert as_agent.get("/api/v1/contacts").status_code == 200
    after = listed(admin_client, agent.id)
    assert after["last_used_at"] is not None
    assert agent.token not in admin_client.get("/api/v1/agents").text
    assert all(server.tokens[role] not in admin_client.get("/api/v1/agents").text for role in server.tokens)


@pytest.mark.parametrize("role", ["agent", "supervisor"])
def test_only_admins_manage_tokens(server: Server, library: Library, role: str) -> None:
    victim = new_agent(library, server.org_id)
    with server.client(role) as other:
        assert other.get("/api/v1/agents").status_code == 403
        assert other.post(f"/api/v1/agents/{victim.id}/revoke").status_code == 403
        assert other.patch(f"/api/v1/agents/{victim.id}", json={"expires_at": None}).status_code == 403


def test_a_revoked_token_is_refused_saying_so(server: Server, library: Library, admin_client: httpx.Client) -> None:
    agent = new_agent(library, server.org_id)
    revoked = admin_client.post(f"/api/v1/agents/{agent.id}/revoke")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] and revoked.json()["active"] is False
    with client(server, agent.token) as as_agent:
        refused = as_agent.get("/api/v1/contacts")
    assert refused.status_code == 401 and error_code(refused) == "token_revoked"
    assert "revoked" in refused.json()["error"]["message"]
    again = admin_client.post(f"/api/v1/agents/{agent.id}/revoke")
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]
    reopen = admin_client.patch(f"/api/v1/agents/{agent.id}", json={"expires_at": None})
    assert reopen.status_code == 409 and error_code(reopen) == "token_revoked"


def test_an_expired_token_is_refused_and_a_new_expiry_restores_it(
        server: Server, library: Library, admin_client: httpx.Client) -> None:
    agent = new_agent(library, server.org_id)
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    changed = admin_client.patch(f"/api/v1/agents/{agent.id}", json={"expires_at": past})
    assert changed.status_code == 200 and changed.json()["active"] is False
    with client(server, agent.token) as as_agent:
        refused = as_agent.get("/api/v1/contacts")
        assert refused.status_code == 401 and error_code(refused) == "token_expired"
        assert "expired" in refused.json()["error"]["message"]
        future = (datetime.now(UTC) + timedelta(days=90)).isoformat()
        assert admin_client.patch(f"/api/v1/agents/{agent.id}", json={"expires_at": future}).json()["active"]
        assert as_agent.get("/api/v1/contacts").status_code == 200
        assert admin_client.patch(f"/api/v1/agents/{agent.id}", json={"expires_at": None}).json()["expires_at"] is None
        assert as_agent.get("/api/v1/contacts").status_code == 200


def test_token_management_input_errors_are_4xx(server: Server, library: Library, admin_client: httpx.Client) -> None:
    elsewhere = new_agent(library, library.new_org().id)
    assert error_code(admin_client.post(f"/api/v1/agents/{elsewhere.id}/revoke")) == "agent_not_found"
    assert admin_client.post("/api/v1/agents/999999999/revoke").status_code == 404
    agent = new_agent(library, server.org_id)
    assert admin_client.patch(f"/api/v1/agents/{agent.id}", json={}).status_code == 422
    assert admin_client.patch(f"/api/v1/agents/{agent.id}", json={"expires_at": "soon"}).status_code == 400
    assert admin_client.patch(f"/api/v1/agents/{agent.id}", json={"expires_at": 5}).status_code == 400
    far = admin_client.patch(f"/api/v1/agents/{agent.id}", json={"expires_at": "9999-12-31T23:59:59-05:00"})
    assert far.status_code == 422


def test_an_admin_cannot_lock_themselves_out(server: Server, library: Library) -> None:
    me = new_agent(library, server.org_id, "admin")
    with client(server, me.token) as as_me:
        assert error_code(as_me.post(f"/api/v1/agents/{me.id}/revoke")) == "own_token"
        past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        assert error_code(as_me.patch(f"/api/v1/agents/{me.id}", json={"expires_at": past})) == "own_token"
        assert as_me.get("/api/v1/agents").status_code == 200
