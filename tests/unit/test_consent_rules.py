"""The consent decision, spoken to directly: no database, no clock, plain objects in and out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from optflow.domain import consent_rules as rules
from optflow.domain.events import ChannelsBlocked, ConsentChanged
from optflow.domain.machine import TransitionContext
from optflow.domain.model import (
    Actor,
    ActorKind,
    Channel,
    Consent,
    DomainError,
    Intent,
    State,
    Trigger,
)
from optflow.domain.policy import MessageKind
from optflow.domain.settings import OrgSettings

NOW = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
PHONE, EMAIL = "+14155552671", "sam@example.com"
CUSTOMER = Actor(ActorKind.CUSTOMER, PHONE)
AGENT = Actor(ActorKind.AGENT, "3", "agent")
SUPERVISOR = Actor(ActorKind.AGENT, "4", "supervisor")


def consents(state: State = State.OPTED_IN) -> list[Consent]:
    made = [Consent(channel=ch, address=PHONE, state=state, org_id=1, contact_id=7)
            for ch in (Channel.TEXT, Channel.CALL, Channel.WHATSAPP)]
    return [*made, Consent(channel=Channel.EMAIL, address=EMAIL, state=state, org_id=1, contact_id=7)]


def stop(door: rules.Door = rules.Door.INBOUND, actor: Actor = CUSTOMER, **kw: object) -> rules.Revocation:
    return rules.Revocation(door, actor, PHONE, Channel.TEXT, method="keyword", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("everything", "covered"), [
    (False, {(PHONE, Channel.TEXT)}),
    (True, {(PHONE, Channel.TEXT), (PHONE, Channel.CALL), (PHONE, Channel.WHATSAPP), (EMAIL, Channel.EMAIL)}),
])
def test_an_opt_out_covers_its_channel_or_every_channel_as_the_org_says(
        everything: bool, covered: set[tuple[str, Channel]]) -> None:
    outcome = rules.revoke(1, 7, consents(), stop(), OrgSettings(stop_applies_to_all_channels=everything), NOW)
    assert {(ch.consent.address, ch.consent.channel) for ch in outcome.changes} == covered
    assert all(ch.consent.state is State.OPTED_OUT and ch.record.trigger is Trigger.OPT_OUT for ch in outcome.changes)
    assert set(outcome.cancel_outbound) == covered
    assert isinstance(outcome.blocked, ChannelsBlocked)
    assert outcome.blocked.channels == frozenset(channel for _, channel in covered)
    assert {(e.address, e.channel) for e in outcome.events if isinstance(e, ConsentChanged)} == covered
    assert (outcome.call_flags == {"active": False, "do_not_call": True}) is everything


def test_a_repeated_stop_is_recorded_again_on_its_own_channel_only() -> None:
    already = consents(State.OPTED_OUT)
    outcome = rules.revoke(1, 7, already, stop(), OrgSettings(stop_applies_to_all_channels=True), NOW)
    assert [(ch.consent.channel, ch.record.from_state) for ch in outcome.changes] == [(Channel.TEXT, State.OPTED_OUT)]
    assert not [e for e in outcome.events if isinstance(e, ConsentChanged)]  # no state changed
    agent = rules.revoke(1, 7, consents(State.OPTED_OUT), stop(rules.Door.AGENT, AGENT), OrgSettings(), NOW)
    assert agent.changes == []


@pytest.mark.parametrize(("door", "actor", "before", "confirmed", "as_reply"), [
    (rules.Door.INBOUND, CUSTOMER, State.UNKNOWN, True, True),  # a STOP always hears back once
    (rules.Door.AGENT, AGENT, State.OPTED_IN, True, False),
    (rules.Door.AGENT, AGENT, State.UNKNOWN, False, False),  # we never messaged them there
    (rules.Door.FLOW, Actor(ActorKind.SYSTEM, "flow:x"), State.OPTED_IN, False, False),
    (rules.Door.CARRIER, Actor(ActorKind.SYSTEM, "carrier"), State.OPTED_IN, False, False),
    (rules.Door.ONE_CLICK, Actor(ActorKind.SYSTEM, "one-click"), State.OPTED_IN, False, False),
])
def test_who_hears_that_the_opt_out_was_recorded(door: rules.Door, actor: Actor, before: State, confirmed: bool,
                                                as_reply: bool) -> None:
    outcome = rules.revoke(1, 7, consents(before), stop(door, actor), OrgSettings(), NOW)
    messages = [(m.template, m.kind, m.reply) for m in outcome.to_customer]
    expected = [("customer/opt_out_confirmation", MessageKind.OPT_OUT_CONFIRMATION, as_reply)] if confirmed else []
    assert messages == expected


def test_the_confirmation_goes_once() -> None:
    mine = consents(State.OPTED_OUT)
    mine[0].opt_out_confirmation_sent = True
    assert rules.revoke(1, 7, mine, stop(), OrgSettings(), NOW).to_customer == []
    assert mine[0].opt_out_confirmation_sent  # a repeated STOP does not forget it was confirmed


def ctx(actor: Actor, **kw: object) -> TransitionContext:
    return TransitionContext(actor=actor, now=NOW, **kw)  # type: ignore[arg-type]


def test_only_a_supervisor_with_evidence_of_a_later_consent_reopens_an_opt_out() -> None:
    def opted_out() -> Consent:
        return Consent(channel=Channel.TEXT, address=PHONE, state=State.OPTED_OUT, opted_out_at=NOW - timedelta(days=2))

    later, earlier = NOW - timedelta(days=1), NOW - timedelta(days=30)
    for actor, evidence, when, code in [(AGENT, "form", later, "opted_out"),
                                        (SUPERVISOR, None, later, "evidence_required"),
                                        (SUPERVISOR, "form", earlier, "consent_before_opt_out")]:
        with pytest.raises(DomainError) as refused:
            rules.change(1, 7, opted_out(), Trigger.RECORD_OPT_IN,
                         ctx(actor, method="paper_form", evidence=evidence, occurred_at=when))
        assert refused.value.code == code
    outcome = rules.change(1, 7, opted_out(), Trigger.RECORD_OPT_IN,
                           ctx(SUPERVISOR, method="paper_form", evidence="form #9", occurred_at=later))
    assert outcome.changes[0].consent.state is State.OPTED_IN
    assert outcome.release_holds == [(PHONE, Channel.TEXT)]


def test_a_reset_is_a_supervisors_with_a_reason() -> None:
    with pytest.raises(DomainError, match="only a supervisor"):
        rules.change(1, 7, consents()[0], Trigger.RESET, ctx(AGENT, evidence="reassigned"))
    with pytest.raises(DomainError, match="needs a reason"):
        rules.change(1, 7, consents()[0], Trigger.RESET, ctx(SUPERVISOR))
    assert rules.change(1, 7, consents()[0], Trigger.RESET,
                        ctx(SUPERVISOR, evidence="reassigned")).changes[0].consent.state is State.UNKNOWN


def test_yes_asks_for_a_pin_when_the_org_does_but_not_after_a_quick_opt_in() -> None:
    settings = OrgSettings(pin_required=True)
    requested = Consent(channel=Channel.TEXT, address=PHONE, state=State.REQUESTED)
    outcome = rules.answer(1, 7, requested, Intent.OPT_IN, settings, ctx(CUSTOMER))
    assert outcome.issue_pin and requested.state is State.REQUESTED and requested.awaiting_pin
    assert [m.kind for m in outcome.to_customer] == [MessageKind.PIN]
    quick = Consent(channel=Channel.TEXT, address=PHONE, state=State.REQUESTED, method="quick_opt_in")
    outcome = rules.answer(1, 7, quick, Intent.OPT_IN, settings, ctx(CUSTOMER))
    assert not outcome.issue_pin and quick.state is State.OPTED_IN
    assert outcome.release_holds == [(PHONE, Channel.TEXT)]
    assert [n.template for n in outcome.to_employee] == ["employee/contact_opted_in"]


def test_a_customer_writing_after_their_opt_out_is_asked_again_and_their_message_waits() -> None:
    stopped = Consent(channel=Channel.TEXT, address=PHONE, state=State.OPTED_OUT)
    outcome = rules.answer(1, 7, stopped, Intent.OTHER, OrgSettings(), ctx(CUSTOMER))
    assert stopped.state is State.REQUESTED and outcome.hold_inbound
    assert [m.template for m in outcome.to_customer] == ["customer/opt_in_request.customer_started"]
    stranger = rules.answer(1, None, Consent(channel=Channel.TEXT, address=PHONE), Intent.OTHER, OrgSettings(),
                            ctx(CUSTOMER))
    assert stranger.changes == [] and stranger.to_customer == []


def _messages(outcome: rules.Outcome) -> tuple[list[tuple[str, MessageKind, bool]], list[str]]:
    return ([(m.template, m.kind, m.reply) for m in outcome.to_customer], [n.template for n in outcome.to_employee])


def test_an_employees_request_asks_the_customer_and_tells_the_employee_a_flows_tells_nobody() -> None:
    request = ("customer/opt_in_request.employee_started", MessageKind.OPT_IN_REQUEST, False)
    by_agent = rules.change(1, 7, Consent(channel=Channel.TEXT, address=PHONE, org_id=1, contact_id=7),
                            Trigger.REQUEST_OPT_IN, TransitionContext(actor=AGENT, now=NOW))
    assert _messages(by_agent) == ([request], ["employee/opt_in_request_sent"])
    assert by_agent.changes[0].consent.state is State.REQUESTED
    by_flow = rules.change(1, 7, Consent(channel=Channel.TEXT, address=PHONE, org_id=1, contact_id=7),
                           Trigger.REQUEST_OPT_IN, TransitionContext(actor=Actor(ActorKind.SYSTEM, "flow"), now=NOW))
    assert _messages(by_flow) == ([request], [])


@pytest.mark.parametrize(("state", "code"), [(State.OPTED_OUT, "opted_out"),
                                             (State.OPTED_IN, "already_opted_in")])
def test_no_request_goes_over_an_opt_out_or_a_consent_already_given(state: State, code: str) -> None:
    consent = Consent(channel=Channel.TEXT, address=PHONE, state=state, org_id=1, contact_id=7)
    with pytest.raises(DomainError) as refused:
        rules.change(1, 7, consent, Trigger.REQUEST_OPT_IN, TransitionContext(actor=SUPERVISOR, now=NOW))
    assert refused.value.code == code and consent.state is state


def test_a_pin_read_back_confirms_to_the_customer_tells_the_employee_and_releases_what_was_held() -> None:
    consent = Consent(channel=Channel.TEXT, address=PHONE, state=State.REQUESTED, org_id=1, contact_id=7)
    accepted = rules.answer(1, 7, consent, Intent.OPT_IN, OrgSettings(pin_required=True),
                            TransitionContext(actor=CUSTOMER, now=NOW))
    assert accepted.issue_pin and consent.awaiting_pin
    confirmed = rules.change(1, 7, consent, Trigger.CONFIRM_PIN,
                             TransitionContext(actor=AGENT, now=NOW, method="pin"))
    assert consent.state is State.OPTED_IN
    assert _messages(confirmed) == ([("customer/opt_in_confirmation", MessageKind.OPT_IN_CONFIRMATION, False)],
                                    ["employee/contact_opted_in"])
    assert confirmed.release_holds == [(PHONE, Channel.TEXT)]


@pytest.mark.parametrize("state", [State.OPTED_IN, State.REAUTH_DUE])
def test_a_reauthorisation_request_goes_to_a_consent_given_or_due_and_changes_nothing(state: State) -> None:
    consent = Consent(channel=Channel.TEXT, address=PHONE, state=state, org_id=1, contact_id=7)
    outcome = rules.reauthorization_request(consent)
    assert _messages(outcome) == ([("customer/reauth_request", MessageKind.OPT_IN_REQUEST, False)], [])
    assert outcome.changes == [] and consent.state is state


@pytest.mark.parametrize("state", [State.UNKNOWN, State.REQUESTED, State.OPTED_OUT])
def test_there_is_no_reauthorisation_without_a_consent(state: State) -> None:
    with pytest.raises(DomainError) as refused:
        rules.reauthorization_request(Consent(channel=Channel.TEXT, address=PHONE, state=state, org_id=1))
    assert refused.value.code == "invalid_transition"


@pytest.mark.parametrize(("state", "holding", "expected"), [
    (State.UNKNOWN, False, rules.HeldMessageRequest.OPT_IN),
    (State.REQUESTED, False, rules.HeldMessageRequest.NONE),
    (State.REAUTH_DUE, False, rules.HeldMessageRequest.REAUTH),
    (State.REAUTH_DUE, True, rules.HeldMessageRequest.NONE),
])
def test_an_agents_held_message_asks_for_renewal_where_a_consent_is_due(
        state: State, holding: bool, expected: rules.HeldMessageRequest) -> None:
    assert rules.request_for_held_message(state, holding) is expected
