"""One opt-out, every door, the same result (issue 9).

The same contact (text, call and email opted in; messages queued on texts and emails; a drip that
sends on both) opts out of texts through each door optflow has: the signed Twilio webhook (the
word, and Twilio's OptOutType on an ordinary text), the signed chat webhook, an agent through the
REST API, an agent through the CLI, a bulk import of opt-outs, the one-click unsubscribe link,
the carrier's "unsubscribed recipient" answer to the dispatcher, a flow's `opt_out` step, and the
bus's last-resort fallback when rendering fails. With "STOP applies to every channel" off and on,
every door must leave the same consents, the same ledger entries, the same cancelled messages and
the same enrolments.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from click.testing import CliRunner
from sanic import Sanic
from sqlalchemy import Engine, select
from twilio.request_validator import RequestValidator

from conftest import ORG_NUMBER, REPO, Clock, RecordingSender, make_system, new_agent, new_org
from optflow.adapters import orm
from optflow.adapters.senders import OutboundMessage, RecipientUnsubscribed, SendResult
from optflow.adapters.templates import Rendered, TemplateRenderer
from optflow.bootstrap import System
from optflow.domain import commands as c
from optflow.domain.model import Actor, ActorKind, Channel, Purpose
from optflow.domain.signatures import sign_webhook_body
from optflow.domain.tokens import UnsubscribeTarget, make_token
from optflow.entrypoints.app import create_app
from optflow.entrypoints.cli import main as cli_main

PHONE = "+14155552671"
EMAIL = "sam@example.com"
AUTH_TOKEN = "twilio-auth-token-for-tests"
CHAT_SECRET = "chat-secret-for-tests"
FLOWS = REPO / "tests" / "fixtures" / "flows_equivalence"

Door = Callable[["World"], Awaitable[None]]


class CarrierRefuses(RecordingSender):
    """A provider that answers every text to the contact with Twilio's 21610."""

    def send(self, message: OutboundMessage) -> SendResult:
        if message.channel is Channel.TEXT and message.to == PHONE:
            raise RecipientUnsubscribed("21610: attempt to send to unsubscribed recipient")
        return super().send(message)


class BrokenRenderer(TemplateRenderer):
    """Rendering fails outright (a bug, a disk error): the bus's fallback records the opt-out."""

    def render(self, name: str, variables: dict[str, Any], override: str | None = None,
               language: str = "en") -> Rendered:
        raise RuntimeError("rendering is broken")


class World:
    def __init__(self, system: System, org: int, contact: int, agent_token: str, engine: Engine,
                 database_url: str) -> None:
        self.system, self.org, self.contact, self.agent_token = system, org, contact, agent_token
        self.engine, self.database_url = engine, database_url
        self.app: Sanic | None = None

    async def post(self, path: str, body: bytes | str, headers: dict[str, str]) -> int:
        if self.app is None:
            self.app = create_app(system=self.system, name=f"doors{id(self)}")
        _, response = await self.app.asgi_client.post(path, content=body, headers=headers)
        assert response.status_code < 300, response.text
        return int(response.status_code)

    async def twilio(self, **fields: str) -> None:
        params = {"From": PHONE, "To": ORG_NUMBER, "MessageSid": "SM" + "d" * 32, "AccountSid": "AC" + "a" * 32,
                  **fields}
        url = self.system.config.public_url.rstrip("/") + "/webhooks/twilio/sms"
        signature = RequestValidator(AUTH_TOKEN).compute_signature(url, params)
        await self.post("/webhooks/twilio/sms", urlencode(params),
                        {"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"})


async def twilio_word(world: World) -> None:
    await world.twilio(Body="STOP")


async def twilio_whatsapp(world: World) -> None:
    await world.twilio(Body="STOP", From=f"whatsapp:{PHONE}", To=f"whatsapp:{ORG_NUMBER}")


async def twilio_opt_out_type(world: World) -> None:
    await world.twilio(Body="ok thanks, no more of these", OptOutType="STOP")


async def chat_webhook(world: World) -> None:
    body = json.dumps({"channel": "whatsapp", "from": PHONE, "to": ORG_NUMBER, "text": "stop",
                       "message_id": "chat-1"}).encode()
    await world.post("/webhooks/chat", body, {"X-Optflow-Signature": sign_webhook_body(CHAT_SECRET, body),
                                              "Content-Type": "application/json"})


async def rest_agent(world: World) -> None:
    await world.post(f"/api/v1/contacts/{world.contact}/opt-out", json.dumps({"channel": "text"}),
                     {"Authorization": f"Bearer {world.agent_token}", "Content-Type": "application/json"})


async def cli_agent(world: World) -> None:
    result = CliRunner().invoke(cli_main, ["consent", "opt-out", PHONE, "--channel", "text", "--as", "Alice"],
                                env={"DATABASE_URL": world.database_url, "OPTFLOW_FLOWS_DIR": str(FLOWS),
                                     "OPTFLOW_SECRET": "test-secret",
                                     "OPTFLOW_PIN_KEY": "k" * 32})
    assert result.exit_code == 0, result.output


async def cli_import(world: World) -> None:
    """A bulk import of opt-outs (`optflow import consents`), dated as given."""
    source = Path(world.database_url.removeprefix("sqlite:///")).with_name("opt-outs.csv")
    source.write_text(f"phone,channel,state,occurred_at\n{PHONE},text,opted_out,{world.system.clock().isoformat()}\n")
    result = CliRunner().invoke(cli_main, ["import", "consents", str(source), "--as", "Alice"],
                                env={"DATABASE_URL": world.database_url, "OPTFLOW_FLOWS_DIR": str(FLOWS),
                                     "OPTFLOW_SECRET": "test-secret", "OPTFLOW_PIN_KEY": "k" * 32})
    assert result.exit_code == 0, result.output


async def one_click(world: World) -> None:
    token = make_token("test-secret", UnsubscribeTarget(world.org, PHONE, Channel.TEXT))
    await world.post(f"/unsubscribe/{token}", "List-Unsubscribe=One-Click",
                     {"Content-Type": "application/x-www-form-urlencoded"})


async def carrier(world: World) -> None:
    world.system.bus.handle(c.SendMessage(world.org, world.contact, Channel.TEXT, "Your car is ready",
                                          Actor(ActorKind.AGENT, "1", "agent")))
    world.system.dispatcher.run(world.system.clock())


async def flow_step(world: World) -> None:
    world.system.bus.handle(c.RecordEvent(world.org, "customer.asked_to_stop", world.contact))


async def fallback(world: World) -> None:
    world.system.services.renderer = BrokenRenderer(None)
    with pytest.raises(RuntimeError):
        world.system.bus.handle(c.ReceiveInbound(Channel.TEXT, PHONE, ORG_NUMBER, "STOP", "SM" + "f" * 32))


# Each door, and the channel its opt-out is about: a WhatsApp message through the chat gateway is
# compared with the same STOP through Twilio's WhatsApp webhook, everything else with a texted STOP.
DOORS: dict[str, tuple[Door, str]] = {
    "twilio-word": (twilio_word, "twilio-word"), "twilio-opt-out-type": (twilio_opt_out_type, "twilio-word"),
    "rest-agent": (rest_agent, "twilio-word"), "cli-agent": (cli_agent, "twilio-word"),
    "cli-import": (cli_import, "twilio-word"),
    "one-click": (one_click, "twilio-word"), "carrier-21610": (carrier, "twilio-word"),
    "flow-step": (flow_step, "twilio-word"), "fallback": (fallback, "twilio-word"),
    "twilio-whatsapp": (twilio_whatsapp, "twilio-whatsapp"), "chat-webhook": (chat_webhook, "twilio-whatsapp"),
}


def build_world(tmp_path: Path, clock: Clock, sender: RecordingSender, everything: bool) -> World:
    tmp_path.mkdir(parents=True)
    url = f"sqlite:///{tmp_path / 'doors.db'}"
    from optflow.adapters import db

    engine = db.make_engine(url)
    db.create_schema(engine)
    system = make_system(engine, clock, sender, flows_dir=FLOWS)
    org = new_org(system, twilio_auth_token=AUTH_TOKEN, chat_secret=CHAT_SECRET,
                  stop_applies_to_all_channels=everything)
    agent = new_agent(system, org, role="agent", name="Alice")
    actor = Actor(ActorKind.AGENT, str(agent.id), "agent")
    contact = system.bus.handle(c.CreateContact(org, name="Sam", phones=(PHONE,), emails=(EMAIL,))).contact_id
    for channel in (Channel.TEXT, Channel.CALL, Channel.EMAIL, Channel.WHATSAPP):
        system.bus.handle(c.RecordOptIn(org, contact, channel, actor, method="paper_form"))
    # Messages waiting in the outbox on both channels (quiet hours or not, they are queued).
    for channel in (Channel.TEXT, Channel.EMAIL):
        system.bus.handle(c.SendMessage(org, contact, channel, f"Reminder by {channel.value}", actor,
                                        purpose=Purpose.TRANSACTIONAL))
    with system.engine.begin() as conn:  # not due yet: only an opt-out can touch them now
        conn.execute(orm.messages.update().where(orm.messages.c.status == "queued")
                     .values(not_before=clock.now + timedelta(days=3)))
    system.bus.handle(c.RecordEvent(org, "drip.start", contact))
    return World(system, org, contact, agent.token, engine, url)


def snapshot(world: World, ledger_from: int, messages_upto: int) -> dict[str, Any]:
    m, e, k, led = orm.messages.c, orm.enrollments.c, orm.consents.c, orm.ledger.c
    with world.engine.connect() as conn:
        consents = sorted((r.address, r.channel, r.state) for r in conn.execute(select(k.address, k.channel, k.state)))
        entries = sorted((r.address, r.channel, r.from_state, r.to_state, r.trigger) for r in conn.execute(
            select(led.address, led.channel, led.from_state, led.to_state, led.trigger).where(led.seq > ledger_from)))
        outbox = sorted((r.channel, r.body, r.status) for r in conn.execute(
            select(m.channel, m.body, m.status).where(m.id <= messages_upto, m.direction == "out",
                                                      m.audience == "customer")))
        enrolments = sorted((r.flow_name, r.status) for r in conn.execute(
            select(e.flow_name, e.status).where(e.flow_name == "drip")))
        contact = conn.execute(select(orm.contacts.c.active, orm.contacts.c.do_not_call)).one()
    return {"consents": consents, "ledger": entries, "outbox": outbox, "enrolments": enrolments,
            "call_flags": tuple(contact)}


def marks(world: World) -> tuple[int, int]:
    with world.engine.connect() as conn:
        seq = conn.execute(select(orm.ledger.c.seq).order_by(orm.ledger.c.seq.desc()).limit(1)).scalar() or 0
        last = conn.execute(select(orm.messages.c.id).order_by(orm.messages.c.id.desc()).limit(1)).scalar() or 0
    return int(seq), int(last)


@pytest.mark.parametrize("everything", [False, True], ids=["stop-means-its-channel", "stop-means-everything"])
async def test_every_door_leaves_the_same_opt_out(tmp_path: Path, clock: Clock, everything: bool) -> None:
    results: dict[str, dict[str, Any]] = {}
    for name, (door, _) in DOORS.items():
        sender = CarrierRefuses()
        world = build_world(tmp_path / name, clock, sender, everything)
        ledger_from, messages_upto = marks(world)
        try:
            await door(world)
            results[name] = snapshot(world, ledger_from, messages_upto)
        finally:
            world.system.close()
    reference = results["twilio-word"]
    # The opt-out itself, and what it must stop: texts (and, with STOP meaning everything, the rest).
    opted_out = {(a, ch) for a, ch, s in reference["consents"] if s == "opted_out"}
    assert (PHONE, "text") in opted_out
    assert ((EMAIL, "email") in opted_out) is everything
    assert ("text", "Reminder by text", "cancelled") in reference["outbox"]
    assert (("email", "Reminder by email", "cancelled") in reference["outbox"]) is everything
    assert reference["enrolments"] == [("drip", "cancelled")] if everything else [("drip", "active")]
    whatsapp = results["twilio-whatsapp"]
    assert ((PHONE, "text") in {(a, ch) for a, ch, s in whatsapp["consents"] if s == "opted_out"}) is everything
    if everything:  # then which channel the STOP came in on makes no difference at all
        assert whatsapp == reference
    for name, (_, compared_with) in DOORS.items():
        assert results[name] == results[compared_with], f"the {name} door differs from {compared_with}"
