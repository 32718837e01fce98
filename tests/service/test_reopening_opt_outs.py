"""Only the customer reopens their own opt-out (issue 10, hole 4).

The probe: after a customer's STOP, an agent recorded a `paper_form` opt-in dated a month before
the STOP and the next message queued; a reset followed by an opt-in did the same. Now a person may
record a consent over an opt-out only as a supervisor, with evidence, for a consent given after
the opt-out; a reset is a supervisor's, with a reason, and says so in the ledger."""

from __future__ import annotations

from datetime import timedelta

import pytest

from conftest import ORG_NUMBER, new_agent, new_org
from optflow.bootstrap import System
from optflow.domain import commands as c
from optflow.domain.model import Actor, ActorKind, Channel, DomainError, State

PHONE = "+14155552671"


@pytest.fixture
def org(system: System) -> int:
    return new_org(system)


def person(system: System, org: int, role: str) -> Actor:
    made = new_agent(system, org, role=role, name=role.title())
    return Actor(ActorKind.AGENT, str(made.id), role)


@pytest.fixture
def opted_out(system: System, org: int) -> int:
    """A contact who was opted in on paper, then texted STOP."""
    contact = system.bus.handle(c.CreateContact(org, name="Sam", phones=(PHONE,))).contact_id
    system.bus.handle(c.RecordOptIn(org, contact, Channel.TEXT, person(system, org, "agent"), method="paper_form"))
    result = system.bus.handle(c.ReceiveInbound(Channel.TEXT, PHONE, ORG_NUMBER, "STOP", "SMstop"))
    assert result.state is State.OPTED_OUT
    return int(contact)


def text_state(system: System, org: int) -> State:
    with system.bus.uow() as uow:
        return uow.consents.get(org, PHONE, Channel.TEXT).state


def queued(system: System) -> int:
    with system.bus.uow() as uow:
        return len(uow.messages.queued_for(1, PHONE, [Channel.TEXT]))


def test_an_agent_cannot_record_an_opt_in_over_the_customers_opt_out(system: System, org: int,
                                                                      opted_out: int) -> None:
    month_before = system.clock() - timedelta(days=30)
    with pytest.raises(DomainError) as refused:
        system.bus.handle(c.RecordOptIn(org, opted_out, Channel.TEXT, person(system, org, "agent"),
                                        method="paper_form", occurred_at=month_before, evidence="form #7"))
    assert refused.value.code == "opted_out"
    assert text_state(system, org) is State.OPTED_OUT
    with pytest.raises(DomainError):
        system.bus.handle(c.SendMessage(org, opted_out, Channel.TEXT, "Hello again", person(system, org, "agent")))
    assert queued(system) == 0


@pytest.mark.parametrize(("evidence", "days_after", "code"), [
    ("signed form #9", -30, "consent_before_opt_out"),  # given before the STOP: the STOP stands
    (None, 1, "evidence_required"),
    ("   ", 1, "evidence_required"),
    ("signed form #9", None, "consent_before_opt_out"),  # no date given: nobody knows it came after
])
def test_a_supervisor_needs_evidence_of_a_consent_given_after_the_opt_out(
        system: System, org: int, opted_out: int, evidence: str | None, days_after: int | None, code: str) -> None:
    with system.bus.uow() as uow:
        stopped_at = uow.consents.get(org, PHONE, Channel.TEXT).opted_out_at
    assert stopped_at is not None
    system.clock.now += timedelta(days=3)
    occurred = None if days_after is None else stopped_at + timedelta(days=days_after)
    with pytest.raises(DomainError) as refused:
        system.bus.handle(c.RecordOptIn(org, opted_out, Channel.TEXT, person(system, org, "supervisor"),
                                        method="paper_form", occurred_at=occurred, evidence=evidence))
    assert refused.value.code == code
    assert text_state(system, org) is State.OPTED_OUT


def test_a_supervisor_records_a_later_consent_with_evidence(system: System, org: int, opted_out: int) -> None:
    with system.bus.uow() as uow:
        stopped_at = uow.consents.get(org, PHONE, Channel.TEXT).opted_out_at
    assert stopped_at is not None
    system.clock.now += timedelta(days=3)
    supervisor = person(system, org, "supervisor")
    result = system.bus.handle(c.RecordOptIn(org, opted_out, Channel.TEXT, supervisor, method="paper_form",
                                             occurred_at=stopped_at + timedelta(days=2),
                                             evidence="signed form #9, scanned"))
    assert result.state is State.OPTED_IN
    with system.bus.uow() as uow:
        last = uow.ledger.entries(org)[-1]
    assert (last["trigger"], last["actor_id"], last["evidence"]) == ("record_opt_in", supervisor.id,
                                                                      "signed form #9, scanned")


def test_only_a_supervisor_resets_a_consent_and_says_why(system: System, org: int, opted_out: int) -> None:
    with pytest.raises(DomainError) as by_agent:
        system.bus.handle(c.ResetConsent(org, opted_out, Channel.TEXT, person(system, org, "agent"),
                                         evidence="number reassigned"))
    assert by_agent.value.code == "forbidden"
    supervisor = person(system, org, "supervisor")
    with pytest.raises(DomainError) as no_reason:
        system.bus.handle(c.ResetConsent(org, opted_out, Channel.TEXT, supervisor))
    assert no_reason.value.code == "reason_required"
    assert text_state(system, org) is State.OPTED_OUT
    result = system.bus.handle(c.ResetConsent(org, opted_out, Channel.TEXT, supervisor,
                                              evidence="carrier confirmed the number was reassigned"))
    assert result.state is State.UNKNOWN
    with system.bus.uow() as uow:
        last = uow.ledger.entries(org)[-1]
    assert (last["trigger"], last["from_state"], last["actor_id"], last["evidence"]) == (
        "reset", "opted_out", supervisor.id, "carrier confirmed the number was reassigned")


def test_an_agents_opt_in_request_never_goes_over_an_opt_out(system: System, org: int, opted_out: int) -> None:
    for quick in (False, True):
        with pytest.raises(DomainError) as refused:
            system.bus.handle(c.RequestOptIn(org, opted_out, Channel.TEXT, person(system, org, "agent"), quick=quick))
        assert refused.value.code == "opted_out"
    assert queued(system) == 0


def test_the_customer_reopens_their_own_opt_out(system: System, org: int, opted_out: int) -> None:
    result = system.bus.handle(c.ReceiveInbound(Channel.TEXT, PHONE, ORG_NUMBER, "START", "SMstart"))
    assert result.state is State.OPTED_IN
