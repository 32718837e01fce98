"""What a customer's words ask for is read before the batch's transaction, and used in it only
while it still holds.

On SQLite every writer's transaction is serialised by the write lock, so a web worker's group
commit reads its messages' words (`MessageBus.prerender`) before it waits for the lock
(docs/performance.md). The reading is used only if the org's keyword table is still the one
that read them: an admin's keyword change in between is honoured."""

from __future__ import annotations

from typing import Any

from conftest import ORG_NUMBER, another_writer_can_write, new_agent, new_org, texts_through_a_worker
from optflow.bootstrap import System
from optflow.domain import commands as c
from optflow.domain.keywords import Classification, KeywordTable
from optflow.domain.model import Actor, ActorKind, Channel, Intent, State
from optflow.domain.settings import OrgSettings
from optflow.service_layer.admin import update_settings

PHONE = "+14155552671"


class LockProbeTable(KeywordTable):
    """The default keywords; each reading notes whether another writer could write meanwhile
    (no write transaction open on the database file)."""

    def __init__(self, database: str) -> None:
        super().__init__(KeywordTable.default().as_dict())
        self.database = database
        self.readings: list[tuple[str, bool]] = []

    def classify(self, text: str) -> Classification:
        self.readings.append((text, another_writer_can_write(self.database)))
        return super().classify(text)


def opted_in_contact(system: System, org: int) -> int:
    agent = Actor(ActorKind.AGENT, str(new_agent(system, org).id), "agent")
    contact: int = system.bus.handle(c.CreateContact(org, name="Sam", phones=(PHONE,))).contact_id
    system.bus.handle(c.RecordOptIn(org, contact, Channel.TEXT, agent, method="paper_form"))
    return contact


async def test_the_group_commit_reads_the_messages_words_before_it_takes_the_write_lock(system: System) -> None:
    org = new_org(system)
    opted_in_contact(system, org)
    database = system.engine.url.database
    assert database is not None
    table = LockProbeTable(database)

    def keywords(settings: OrgSettings, country: str | None = None) -> KeywordTable:
        return table

    system.services.keywords = keywords  # type: ignore[method-assign]
    hello, stop = await texts_through_a_worker(system, ("See you at 3", "SMhello1"), ("alto por favor", "SMstop1"),
                                               phone=PHONE)
    assert hello.intent is Intent.OTHER
    assert stop.state is State.OPTED_OUT
    assert "se ha dado de baja" in stop.replies[0]  # the language worked out ahead, too
    assert [text for text, _ in table.readings] == ["See you at 3", "alto por favor"]  # each read once
    assert all(free for _, free in table.readings), table.readings


def test_a_keyword_change_between_the_reading_and_the_transaction_is_honoured(system: System) -> None:
    org = new_org(system)
    opted_in_contact(system, org)
    command = c.ReceiveInbound(Channel.TEXT, PHONE, ORG_NUMBER, "zanahoria", "SMcarrot1", org_id=org)
    ahead = system.bus.prerender([command])
    assert ahead.readings["zanahoria"][1].intent is Intent.OTHER
    with system.bus.uow() as uow:  # an admin adds the words meanwhile
        update_settings(uow, system.services.renderer, org, {"keywords": {"es": {"opt_out": ["zanahoria"]}}})
        uow.commit()
    [done] = system.bus.handle_batch([command], prerendered=ahead)
    assert done.error is None
    result: Any = done.result
    assert result.intent is Intent.OPT_OUT
    assert result.state is State.OPTED_OUT


def test_a_sender_that_is_no_address_does_not_stop_the_batchs_other_readings(system: System) -> None:
    org = new_org(system, keywords_by_country={"MX": {"es": {"opt_out": ["ya no"]}}})
    bad = c.ReceiveInbound(Channel.TEXT, "not a number", ORG_NUMBER, "hello", "SMbad1", org_id=org)
    good = c.ReceiveInbound(Channel.TEXT, PHONE, ORG_NUMBER, "STOP", "SMgood1", org_id=org)
    ahead = system.bus.prerender([bad, good])
    assert set(ahead.readings) == {"STOP"}
    bad_done, good_done = system.bus.handle_batch([bad, good], prerendered=ahead)
    assert bad_done.error is not None  # refused in the transaction, as without the reading
    assert good_done.result.state is State.OPTED_OUT
