"""AutoPlay's marketing email (issue 12, item 8: "AutoPlay").

AutoPlay's "opt in to future marketing" is a permission of the contact: without it no bulk or
campaign email goes, and individual messages still do. Here: a marketing email an employee sends
through the API carries the unsubscribe footer and headers as a flow's does, and the unsubscribe
link ends marketing email while receipts still go, unless the person asks to stop every email.
Through the Sanic app in-process, on a real SQLite file, with a recording sender."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sanic import Sanic

from conftest import Clock, RecordingSender, make_system, new_agent, new_org
from optflow.adapters import db
from optflow.bootstrap import System
from optflow.domain import commands as c
from optflow.domain.model import Actor, ActorKind, Channel, Purpose, State, TransitionRefused
from optflow.domain.tokens import UnsubscribeTarget, make_token
from optflow.entrypoints.app import create_app

EMAIL = "sam@example.com"
STRANGER = "lee@example.com"


class Dealer:
    def __init__(self, tmp_path: Path, clock: Clock, sender: RecordingSender) -> None:
        engine = db.make_engine(f"sqlite:///{tmp_path / 'autoplay.db'}")
        db.create_schema(engine)
        self.system: System = make_system(engine, clock, sender)
        self.sender = sender
        self.org = new_org(self.system, quiet_hours=False)
        agent = new_agent(self.system, self.org, name="Alice")
        self.token = agent.token
        self.actor = Actor(ActorKind.AGENT, str(agent.id), "agent")
        self.contact = self.system.bus.handle(c.CreateContact(self.org, name="Sam", emails=(EMAIL,))).contact_id
        self.system.bus.handle(c.RecordOptIn(self.org, self.contact, Channel.EMAIL, self.actor, method="web_form"))
        self.app: Sanic | None = None

    def _app(self) -> Sanic:
        if self.app is None:
            self.app = create_app(system=self.system, name=f"autoplay{id(self)}")
        return self.app

    async def api_send(self, purpose: str, body: str) -> tuple[int, dict[str, Any]]:
        _, response = await self._app().asgi_client.post("/api/v1/messages", content=json.dumps(
            {"contact_id": self.contact, "channel": "email", "body": body, "purpose": purpose, "subject": body}),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        return int(response.status_code), response.json

    async def unsubscribe(self, address: str, form: str) -> str:
        token = make_token(self.system.secret, UnsubscribeTarget(self.org, address, Channel.EMAIL))
        _, response = await self._app().asgi_client.post(
            f"/unsubscribe/{token}", content=form, headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert response.status_code == 200, response.text
        return str(response.text)

    def delivered(self) -> list[Any]:
        self.system.dispatcher.run(self.system.clock())
        return self.sender.to(EMAIL)

    def receipt(self) -> str:
        result = self.system.bus.handle(c.SendMessage(self.org, self.contact, Channel.EMAIL, "Your receipt",
                                                      self.actor, purpose=Purpose.TRANSACTIONAL, subject="Receipt"))
        return result.status


@pytest.fixture
def dealer(tmp_path: Path, clock: Clock, sender: RecordingSender) -> Dealer:
    return Dealer(tmp_path, clock, sender)


async def test_autoplay_marketing_email_through_the_api_carries_the_unsubscribe_footer_and_headers(
        dealer: Dealer) -> None:
    status, body = await dealer.api_send("marketing", "Spring sale: 0% APR this weekend")
    assert status == 202, body
    mail = dealer.delivered()[-1]
    assert mail.unsubscribe_url and "/unsubscribe/" in mail.unsubscribe_url
    assert mail.body.startswith("Spring sale") and mail.unsubscribe_url in mail.body
    status, _ = await dealer.api_send("transactional", "Your service is booked")
    assert status == 202
    receipt = dealer.delivered()[-1]
    assert receipt.unsubscribe_url is None and "/unsubscribe/" not in receipt.body


async def test_autoplay_one_click_unsubscribe_ends_marketing_email_and_keeps_receipts(dealer: Dealer) -> None:
    page = await dealer.unsubscribe(EMAIL, "List-Unsubscribe=One-Click")
    assert "marketing emails" in page
    with dealer.system.bus.uow() as uow:
        assert uow.contacts.get(dealer.org, dealer.contact).marketing_allowed is False
        assert uow.consents.get(dealer.org, EMAIL, Channel.EMAIL).state is State.OPTED_IN
        assert uow.ledger.entries(dealer.org)[-1]["to_state"] == "marketing:off"
    assert dealer.receipt() == "queued"
    assert dealer.delivered()[-1].body == "Your receipt"
    with pytest.raises(TransitionRefused):
        dealer.system.bus.handle(c.SendMessage(dealer.org, dealer.contact, Channel.EMAIL, "Spring sale", dealer.actor,
                                               purpose=Purpose.MARKETING))


async def test_autoplay_asking_to_stop_every_email_opts_the_address_out(dealer: Dealer) -> None:
    page = await dealer.unsubscribe(EMAIL, "List-Unsubscribe=One-Click&scope=all")
    assert "no more emails" in page
    with dealer.system.bus.uow() as uow:
        assert uow.consents.get(dealer.org, EMAIL, Channel.EMAIL).state is State.OPTED_OUT
    with pytest.raises(TransitionRefused):
        dealer.receipt()


async def test_autoplay_an_address_no_contact_owns_is_opted_out_by_its_link(dealer: Dealer) -> None:
    await dealer.unsubscribe(STRANGER, "List-Unsubscribe=One-Click")
    with dealer.system.bus.uow() as uow:
        assert uow.consents.get(dealer.org, STRANGER, Channel.EMAIL).state is State.OPTED_OUT
