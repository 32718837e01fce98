"""Helpers the end-to-end tests share: an org of a test's own with a token per role, and readers
for the server's TwiML and JSON error answers."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx

from optflow.adapters.unit_of_work import SqlUnitOfWork
from optflow.service_layer import admin

if TYPE_CHECKING:
    from e2e.conftest import Library, Server, TestOrg

API = "/api/v1"


@dataclass
class ApiOrg:
    """An org of its own (so settings changes and counts touch no other test), with a token per role."""

    server: Server
    org: TestOrg
    tokens: dict[str, str]

    def client(self, role: str = "agent") -> httpx.Client:
        return httpx.Client(base_url=self.server.base_url, timeout=15,
                            headers={"Authorization": f"Bearer {self.tokens[role]}"})

    def sms(self, from_number: str, body: str) -> httpx.Response:
        return self.server.twilio_post({"From": from_number, "To": self.org.number, "Body": body,
                                        "MessageSid": self.server.next_sid(), "AccountSid": "AC" + "0" * 32})


def api_org(server: Server, library: Library, **settings: Any) -> ApiOrg:
    """A new org with `settings` and one API token for each role."""
    org = library.new_org(**settings)
    now = datetime.now(UTC)
    with SqlUnitOfWork(library.system.engine) as uow:
        tokens = {role: admin.add_agent(uow, org.id, f"{role} of {org.number}", role, now).token
                  for role in admin.ROLES}
        uow.commit()
    return ApiOrg(server, org, tokens)


def twiml_messages(response: httpx.Response) -> list[str]:
    """The texts of the <Message> elements of a 200 TwiML answer."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/xml")
    root = ET.fromstring(response.text)
    assert root.tag == "Response"
    return [message.text or "" for message in root.findall("Message")]


def error_code(response: httpx.Response) -> str:
    """The code of a JSON error answer, which must be `{"error": {"code": ..., "message": ...}}`."""
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return str(body["error"]["code"])
