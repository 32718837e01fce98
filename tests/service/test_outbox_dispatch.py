"""The outbox dispatcher's guarantees (issue 10): a STOP stops claimed messages that were not
handed over yet (hole 2); a claim whose lease ran out is fenced, and a live claim keeps its lease,
so no message is handed to the provider twice (hole 3); Reg F's 7 calls in 7 days holds against
a burst, at queue time and at send time (hole 9).

On SQLite and PostgreSQL (`engine`), with the real bus and handlers, a fake of the `Sender` port
and a clock moved by hand: the provider's latency and a hung dispatcher are moves of the clock,
not sleeps.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import Engine, select

from conftest import ORG_NUMBER, Clock, RecordingSender, make_system, new_agent, new_org
from optflow.adapters import orm
from optflow.adapters.senders import OutboundMessage, SendResult
from optflow.bootstrap import System
from optflow.domain import commands as c
from optflow.domain.model import Actor, ActorKind, Channel
from optflow.service_layer.dispatcher import LEASE, Dispatcher


class HookedSender(RecordingSender):
    """Records every message handed over, and runs `after[message.to]` once, after that
    message was accepted and before the dispatcher records it (while its batch is being sent)."""

    def __init__(self) -> None:
        super().__init__()
        self.after: dict[str, Callable[[], None]] = {}
        self.each: Callable[[OutboundMessage], None] | None = None

    def send(self, message: OutboundMessage) -> SendResult:
        result = super().send(message)
        if self.each is not None:
            self.each(message)
        hook = self.after.pop(message.to, None)
        if hook is not None:
            hook()
        return result


class Crash(BaseException):
    """The process dies in the middle of a send (not an `Exception`: nothing catches it)."""


@pytest.fixture
def sender() -> HookedSender:
    return HookedSender()


@pytest.fixture
def system(engine: Engine, clock: Clock, sender: HookedSender) -> System:
    return make_system(engine, clock, sender)


def phone(i: int) -> str:
    return f"+1415555{i:04d}"


def opted_in_contacts(system: System, org: int, count: int, channel: Channel = Channel.TEXT) -> list[int]:
    agent = Actor(ActorKind.AGENT, str(new_agent(system, org).id))
    contacts = []
    for i in range(count):
        contact = system.bus.handle(c.CreateContact(org, name=f"C{i}", phones=(phone(i),))).contact_id
        system.bus.handle(c.RecordOptIn(org, contact, channel, agent, method="web_form"))
        contacts.append(contact)
    return contacts


def queue_one_each(system: System, org: int, contacts: list[int], body: str = "Your car is ready") -> list[int]:
    agent = Actor(ActorKind.AGENT, str(new_agent(system, org, name="Bob").id))
    return [system.bus.handle(c.SendMessage(org, contact, Channel.TEXT, body, agent)).message_id
            for contact in contacts]


def statuses(system: System, ids: list[int]) -> list[str]:
    m = orm.messages.c
    with system.engine.connect() as conn:
        found = dict(conn.execute(select(m.id, m.status).where(m.id.in_(ids))).all())
    return [found[i] for i in ids]


def delivered(sender: RecordingSender, ids: list[int]) -> Counter[int]:
    """How many times each outbox row was handed to the provider."""
    counts = Counter(m.id for m in sender.sent)
    return Counter({i: counts[i] for i in ids})


# --- hole 2: a STOP stops claimed messages that were not handed over ------------------------------


def test_a_stop_during_the_batch_stops_the_claimed_messages_not_yet_handed_over(
        system: System, sender: HookedSender) -> None:
    org = new_org(system)
    contacts = opted_in_contacts(system, org, 5)
    ids = queue_one_each(system, org, contacts)

    def stop_from(address: str) -> Callable[[], None]:
        return lambda: system.bus.handle(c.ReceiveInbound(Channel.TEXT, address, ORG_NUMBER, "STOP", f"SM{address}"))

    # While message k is with the provider, the recipient of message k + 1 texts STOP.
    for i in range(4):
        sender.after[phone(i)] = stop_from(phone(i + 1))
    report = system.dispatcher.run(system.clock())

    assert [m.to for m in sender.sent] == [phone(0), phone(2), phone(4)]
    assert statuses(system, ids) == ["sent", "cancelled", "sent", "cancelled", "sent"]
    assert (report.sent, report.withdrawn) == (3, 2)


def test_dnd_during_the_batch_stops_the_claimed_message(system: System, sender: HookedSender) -> None:
    org = new_org(system)
    contacts = opted_in_contacts(system, org, 2)
    ids = queue_one_each(system, org, contacts)
    agent = Actor(ActorKind.AGENT, str(new_agent(system, org, name="Carol").id))
    sender.after[phone(0)] = lambda: system.bus.handle(c.SetDnd(org, contacts[1], agent, on=True, all_channels=True))
    system.dispatcher.run(system.clock())
    assert [m.to for m in sender.sent] == [phone(0)]
    assert statuses(system, ids) == ["sent", "cancelled"]


def test_an_opt_out_stored_behind_the_outbox_s_back_is_seen_at_hand_over(
        system: System, sender: HookedSender) -> None:
    """A claimed row that the opt-out did not cancel (written by any other path) is still
    refused: the consent is read again right before each hand-over."""
    org = new_org(system)
    contacts = opted_in_contacts(system, org, 2)
    ids = queue_one_each(system, org, contacts)
    m = orm.messages.c

    def opt_out_without_cancelling() -> None:
        with system.engine.begin() as conn:
            conn.execute(orm.consents.update().where(orm.consents.c.address == phone(1))
                         .values(state="opted_out", opted_out_at=system.clock()))
            assert conn.execute(select(m.status).where(m.id == ids[1])).scalar() == "sending"

    sender.after[phone(0)] = opt_out_without_cancelling
    report = system.dispatcher.run(system.clock())
    assert [m.to for m in sender.sent] == [phone(0)]
    assert statuses(system, ids) == ["sent", "denied"] and report.denied == 1


# --- hole 3: fenced claims, renewed leases -----------------------------------------------------------


def second_dispatcher(system: System, clock: Clock) -> Dispatcher:
    """Another process's dispatcher on the same database and provider."""
    first = system.dispatcher
    return Dispatcher(system.uows, system.services, first.sender, first.unsubscribe_secret, first.public_url,
                      clock)


def test_a_claim_whose_lease_ran_out_is_fenced_and_nothing_goes_twice(
        system: System, sender: HookedSender, clock: Clock) -> None:
    org = new_org(system)
    ids = queue_one_each(system, org, opted_in_contacts(system, org, 6))
    other = second_dispatcher(system, clock)
    reports = []

    def hang_past_the_lease() -> None:
        # The first dispatcher hangs inside the provider call for longer than its lease;
        # meanwhile another dispatcher runs.
        clock.advance(seconds=LEASE.total_seconds() + 60)
        reports.append(other.run(clock()))

    sender.after[phone(2)] = hang_past_the_lease
    first = system.dispatcher.run(clock())

    assert delivered(sender, ids) == Counter(dict.fromkeys(ids, 1))
    assert statuses(system, ids) == ["sent"] * 6, "the hung dispatcher's late record of message 3 still counts"
    assert (first.sent, first.withdrawn) == (3, 3)
    assert (reports[0].sent, reports[0].withdrawn) == (3, 0)


def test_a_long_batch_keeps_its_lease_while_it_sends(system: System, sender: HookedSender, clock: Clock) -> None:
    """A provider answering in a minute: the batch takes longer than the lease, and another
    dispatcher ticking all along never takes a message of it."""
    org = new_org(system)
    ids = queue_one_each(system, org, opted_in_contacts(system, org, 15))
    other = second_dispatcher(system, clock)
    others = []

    def slow_provider(message: OutboundMessage) -> None:
        clock.advance(minutes=1)
        if message.id in ids:  # the other dispatcher's sends do not tick it again
            others.append(other.run(clock()))

    sender.each = slow_provider
    started = clock()
    first = system.dispatcher.run(started)

    assert clock() - started > LEASE
    assert delivered(sender, ids) == Counter(dict.fromkeys(ids, 1))
    assert first.sent == 15 and sum(r.sent for r in others) == 0
    assert statuses(system, ids) == ["sent"] * 15


def test_a_message_handed_over_by_a_dispatcher_that_died_is_not_sent_again(
        system: System, sender: HookedSender, clock: Clock) -> None:
    org = new_org(system)
    ids = queue_one_each(system, org, opted_in_contacts(system, org, 3))

    def die() -> None:
        raise Crash

    sender.after[phone(0)] = die
    with pytest.raises(Crash):
        system.dispatcher.run(clock())
    clock.advance(seconds=LEASE.total_seconds() + 1)
    report = second_dispatcher(system, clock).run(clock())

    assert delivered(sender, ids) == Counter(dict.fromkeys(ids, 1))
    assert statuses(system, ids) == ["failed", "sent", "sent"] and report.sent == 2
    with system.engine.connect() as conn:
        error = conn.execute(select(orm.messages.c.last_error).where(orm.messages.c.id == ids[0])).scalar()
    assert "outcome unknown" in error


# --- hole 9: Reg F's 7 calls in 7 days against a burst -------------------------------------------


@pytest.fixture
def collector(system: System) -> tuple[int, int]:
    """A debt collector and a debtor opted in on `call`."""
    org = new_org(system, "Collect", preset="debt_collection")
    contact = opted_in_contacts(system, org, 1, Channel.CALL)[0]
    return org, contact


def test_a_burst_of_calls_is_capped_when_queued(system: System, sender: HookedSender, clock: Clock,
                                                collector: tuple[int, int]) -> None:
    org, contact = collector
    agent = Actor(ActorKind.AGENT, str(new_agent(system, org, name="Dan").id))
    results = [system.bus.handle(c.SendMessage(org, contact, Channel.CALL, f"call {n}", agent, address=phone(0)))
               for n in range(8)]
    assert [r.status for r in results] == ["queued"] * 7 + ["deferred"]
    assert "reg_f_7_in_7" in (results[7].detail or "")

    system.dispatcher.run(clock())
    assert [m.body for m in sender.sent] == [f"call {n}" for n in range(7)]
    clock.advance(days=7)
    system.dispatcher.run(clock())
    assert [m.body for m in sender.sent][7:] == ["call 7"]


def test_a_burst_of_calls_forced_into_the_outbox_is_capped_at_send_time(
        system: System, sender: HookedSender, clock: Clock, collector: tuple[int, int]) -> None:
    org, contact = collector
    with system.engine.begin() as conn:  # rows that reached the outbox by a path that did not ask
        ids = [conn.execute(orm.messages.insert().values(
            org_id=org, contact_id=contact, direction="out", channel="call", address=phone(0), body=f"call {n}",
            purpose="transactional", kind="normal", status="queued", not_before=clock(), created_at=clock(),
        )).inserted_primary_key[0] for n in range(8)]
    report = system.dispatcher.run(clock())

    assert len(sender.sent) == 7 and (report.sent, report.deferred) == (7, 1)
    assert statuses(system, ids) == ["sent"] * 7 + ["queued"]
    with system.engine.connect() as conn:
        not_before = conn.execute(select(orm.messages.c.not_before).where(orm.messages.c.id == ids[7])).scalar()
    assert not_before == clock() + timedelta(days=7)


# --- one row's failure stalls nobody ---------------------------------------------------------------


class StumblingDispatcher(Dispatcher):
    """The real dispatcher, whose check of one chosen row fails once (a row it cannot read, a bug)."""

    stumble_on: int | None = None

    def _decide(self, uow, row, now):  # type: ignore[no-untyped-def]
        if row.id == self.stumble_on:
            self.stumble_on = None
            raise RuntimeError("the check of this row fell over")
        return super()._decide(uow, row, now)


def test_a_row_whose_check_fails_goes_back_to_the_queue_and_the_rest_of_the_batch_goes_on(
        system: System, sender: HookedSender, clock: Clock) -> None:
    org = new_org(system)
    ids = queue_one_each(system, org, opted_in_contacts(system, org, 4))
    first = system.dispatcher
    dispatcher = StumblingDispatcher(system.uows, system.services, first.sender, first.unsubscribe_secret,
                                     first.public_url, clock)
    dispatcher.stumble_on = ids[1]
    report = dispatcher.run(clock())
    assert statuses(system, ids) == ["sent", "queued", "sent", "sent"]  # not left claimed for a lease
    assert report.sent == 3 and len(report.errors) == 1
    clock.advance(minutes=1)
    dispatcher.run(clock())
    assert statuses(system, ids) == ["sent"] * 4 and delivered(sender, ids) == Counter(dict.fromkeys(ids, 1))
