"""Collect!'s opt-in / opt-out form (issue 12, item 4 and item 8's Collect! line).

Collect! records an opt-out as it records an opt-in: the date and time the customer asked and the
method (a call, a letter), and each phone record carries its own Active and Do-Not-Call flags.
Driven through the REST API (the Sanic app in-process) and the CLI, on a real SQLite file."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sanic import Sanic
from sqlalchemy import select

from conftest import REPO, Clock, RecordingSender, make_system, new_agent, new_org
from optflow.adapters import db, orm
from optflow.bootstrap import System
from optflow.domain import commands as c
from optflow.domain.model import Actor, ActorKind, Channel
from optflow.entrypoints.app import create_app
from optflow.entrypoints.cli import main as cli_main

PHONE = "+14155552671"
EMAIL = "sam@example.com"


class Shop:
    """One org, one agent with an API token, one contact opted in to texts and calls."""

    def __init__(self, tmp_path: Path, clock: Clock, sender: RecordingSender) -> None:
        self.url = f"sqlite:///{tmp_path / 'collect.db'}"
        self.engine = db.make_engine(self.url)
        db.create_schema(self.engine)
        self.system: System = make_system(self.engine, clock, sender)
        self.org = new_org(self.system)
        agent = new_agent(self.system, self.org, name="Alice")
        self.token = agent.token
        self.actor = Actor(ActorKind.AGENT, str(agent.id), "agent")
        self.contact = self.system.bus.handle(c.CreateContact(self.org, name="Sam", phones=(PHONE,),
                                                              emails=(EMAIL,))).contact_id
        for channel in (Channel.TEXT, Channel.CALL):
            self.system.bus.handle(c.RecordOptIn(self.org, self.contact, channel, self.actor, method="paper_form"))
        self.app: Sanic | None = None

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if self.app is None:
            self.app = create_app(system=self.system, name=f"collect{id(self)}")
        _, response = await self.app.asgi_client.post(
            f"/api/v1/contacts/{self.contact}/{path}", content=json.dumps(body),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        return int(response.status_code), response.json

    def cli(self, *args: str) -> str:
        result = CliRunner().invoke(cli_main, list(args), env={
            "DATABASE_URL": self.url, "OPTFLOW_FLOWS_DIR": str(REPO / "flows"), "OPTFLOW_SECRET": "test-secret",
            "OPTFLOW_PIN_KEY": "k" * 32})
        assert result.exit_code == 0, result.output
        return result.output

    def ledger(self) -> list[dict[str, Any]]:
        with self.system.bus.uow() as uow:
            return uow.ledger.entries(self.org)

    def customer_messages(self) -> list[dict[str, Any]]:
        m = orm.messages.c
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(orm.messages).where(m.audience == "customer",
                                                                             m.direction == "out")).mappings()]


@pytest.fixture
def shop(tmp_path: Path, clock: Clock, sender: RecordingSender) -> Shop:
    return Shop(tmp_path, clock, sender)


def _aware(value: Any) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# ------------------------------------------------------------------------------------ item 4


async def test_collect_opt_out_form_through_the_api_keeps_its_date_time_and_method(shop: Shop, clock: Clock) -> None:
    """The customer said "stop calling me" on a call yesterday; the agent fills the form today."""
    asked = clock.now - timedelta(days=1, hours=2)
    status, body = await shop.post("opt-out", {"channel": "text", "method": "phone_call",
                                               "occurred_at": asked.isoformat(), "evidence": "call #42"})
    assert status == 200, body
    assert body["state"] == "opted_out"
    entry = shop.ledger()[-1]
    assert (entry["to_state"], entry["method"], entry["evidence"]) == ("opted_out", "phone_call", "call #42")
    assert _aware(entry["occurred_at"]) == asked and _aware(entry["recorded_at"]) == clock.now
    text = next(k for k in body["contact"]["consents"] if k["channel"] == "text")
    assert _aware(text["opted_out_at"]) == asked
    # The confirmation window of yesterday's request closed long ago: no confirmation is queued.
    assert not [m for m in shop.customer_messages() if m["kind"] == "opt_out_confirmation"]


async def test_collect_opt_out_form_without_an_offset_is_utc_and_without_a_method_is_the_agents(
        shop: Shop, clock: Clock) -> None:
    status, body = await shop.post("opt-out", {"channel": "call", "occurred_at": "2026-11-20T09:30:00"})
    assert status == 200, body
    entry = shop.ledger()[-1]
    assert entry["method"] == "agent"
    assert _aware(entry["occurred_at"]) == datetime(2026, 11, 20, 9, 30, tzinfo=UTC)


@pytest.mark.parametrize(("body", "code"), [
    pytest.param({"channel": "text", "occurred_at": "2026-11-25T09:00:00Z"}, "occurred_in_future", id="future"),
    pytest.param({"channel": "text", "method": "   "}, "invalid_input", id="blank-method"),
    pytest.param({"channel": "text", "method": "m" * 65}, "invalid_input", id="method-too-long"),
])
async def test_collect_opt_out_form_with_a_wrong_field_is_a_422_that_changes_nothing(
        shop: Shop, body: dict[str, Any], code: str) -> None:
    before = len(shop.ledger())
    status, answer = await shop.post("opt-out", body)
    assert status == 422, answer
    assert answer["error"]["code"] == code
    assert len(shop.ledger()) == before


async def test_collect_opt_out_form_just_now_is_still_confirmed(shop: Shop, clock: Clock) -> None:
    status, _ = await shop.post("opt-out", {"channel": "text", "method": "phone_call",
                                            "occurred_at": (clock.now - timedelta(minutes=2)).isoformat()})
    assert status == 200
    assert [m["kind"] for m in shop.customer_messages()] == ["opt_out_confirmation"]


def test_collect_opt_out_form_through_the_cli_keeps_its_date_time_and_method(shop: Shop) -> None:
    out = shop.cli("consent", "opt-out", PHONE, "--channel", "text", "--as", "Alice", "--method", "letter",
                   "--at", "2026-11-20T09:00:00Z", "--evidence", "letter dated 19 Nov")
    assert "opted_out" in out
    entry = shop.ledger()[-1]
    assert (entry["to_state"], entry["method"], entry["evidence"]) == ("opted_out", "letter", "letter dated 19 Nov")
    assert _aware(entry["occurred_at"]) == datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


# ------------------------------------------------------------------------- item 8, Collect!

WORK_PHONE = "+14155552672"


def _phone_flags(body: dict[str, Any]) -> dict[str, tuple[bool, bool]]:
    return {a["value"]: (a["active"], a["do_not_call"]) for a in body["contact"]["addresses"] if a["kind"] == "phone"}


async def test_collect_active_and_do_not_call_belong_to_each_phone_and_follow_its_calls_and_texts(
        shop: Shop) -> None:
    """Collect!: "When you run an opt in, Collect! will set the Active field to Yes and uncheck the
    Do Not Call field. When you run an opt out, ... Active to No and check Do Not Call", on the
    phone record the form was run on."""
    shop.system.bus.handle(c.UpdateContact(shop.org, shop.contact, add_phones=(WORK_PHONE,)))
    # The home phone's texts and calls were opted in (the fixture): its record is active.
    status, body = await shop.post("opt-ins", {"channel": "text", "address": WORK_PHONE, "method": "verbal"})
    assert status == 200, body
    assert _phone_flags(body) == {PHONE: (True, False), WORK_PHONE: (True, False)}
    # An opt-out of texts (not calls) on the work phone: only that record turns inactive, Do-Not-Call.
    status, body = await shop.post("opt-out", {"channel": "text", "address": WORK_PHONE, "method": "phone_call"})
    assert status == 200, body
    assert _phone_flags(body) == {PHONE: (True, False), WORK_PHONE: (False, True)}
    # Calls opted in on it (its texts stay opted out): the last opt-in makes it active and callable.
    status, body = await shop.post("opt-ins", {"channel": "call", "address": WORK_PHONE, "method": "verbal"})
    assert status == 200, body
    assert _phone_flags(body) == {PHONE: (True, False), WORK_PHONE: (True, False)}
    # The customer texts STOP from the home phone: that record only.
    shop.system.bus.handle(c.ReceiveInbound(Channel.TEXT, PHONE, "+12025550123", "STOP", "SM" + "1" * 32))
    with shop.system.bus.uow() as uow:
        flags = {a.value: (a.active, a.do_not_call) for a in uow.contacts.addresses(shop.contact)
                 if a.kind == "phone"}
    assert flags == {PHONE: (False, True), WORK_PHONE: (True, False)}
    # The CLI shows them per phone record as well.
    shown = json.loads(shop.cli("contacts", "show", str(shop.contact)))
    assert {a["value"]: (a["active"], a["do_not_call"]) for a in shown["addresses"] if a["kind"] == "phone"} == flags
    assert "active" not in next(a for a in shown["addresses"] if a["kind"] == "email")


def test_collect_a_number_that_opted_out_before_it_was_a_contacts_is_do_not_call(shop: Shop) -> None:
    stranger = "+14155552679"
    shop.system.bus.handle(c.ReceiveInbound(Channel.TEXT, stranger, "+12025550123", "STOP", "SM" + "2" * 32))
    created = shop.system.bus.handle(c.CreateContact(shop.org, name="Lee", phones=(stranger,))).contact_id
    with shop.system.bus.uow() as uow:
        [phone] = uow.contacts.addresses(created)
    assert (phone.active, phone.do_not_call) == (False, True)
