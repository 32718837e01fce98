"""Every row of the transition table, every guard, and the one-machine rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from transitions import Machine

from optflow.domain import machine as m
from optflow.domain.machine import TransitionContext, fire
from optflow.domain.model import (
    CUSTOMER,
    SYSTEM,
    Actor,
    ActorKind,
    Channel,
    Consent,
    InvalidInput,
    State,
    TransitionRefused,
    Trigger,
)

NOW = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
AGENT = Actor(ActorKind.AGENT, "7")
ALL = list(State)


def consent(state: State, awaiting_pin: bool = False) -> Consent:
    return Consent(Channel.TEXT, "+14155552671", state=state, awaiting_pin=awaiting_pin, org_id=1)


def ctx(actor: Actor = CUSTOMER, **kw: object) -> TransitionContext:
    return TransitionContext(actor=actor, now=NOW, **kw)  # type: ignore[arg-type]


# (trigger, from, context, expected to-state, expected awaiting_pin)
ALLOWED = [
    (Trigger.REQUEST_OPT_IN, State.UNKNOWN, ctx(AGENT), State.REQUESTED, False),
    (Trigger.REQUEST_OPT_IN, State.REAUTH_DUE, ctx(AGENT), State.REQUESTED, False),
    (Trigger.REQUEST_OPT_IN, State.REQUESTED, ctx(AGENT), State.REQUESTED, False),
    (Trigger.REQUEST_OPT_IN, State.OPTED_OUT, ctx(CUSTOMER, customer_initiated=True), State.REQUESTED, False),
    *[(Trigger.ACCEPT, s, ctx(), State.OPTED_IN, False)
      for s in (State.REQUESTED, State.UNKNOWN, State.OPTED_OUT, State.REAUTH_DUE)],
    *[(Trigger.ACCEPT, s, ctx(pin_required=True), State.REQUESTED, True)
      for s in (State.REQUESTED, State.UNKNOWN, State.OPTED_OUT, State.REAUTH_DUE)],
    *[(Trigger.RECORD_OPT_IN, s, ctx(AGENT, method="paper_form"), State.OPTED_IN, False) for s in ALL],
    (Trigger.REAUTHORIZE, State.OPTED_IN, ctx(AGENT, method="verbal"), State.OPTED_IN, False),
    (Trigger.REAUTHORIZE, State.REAUTH_DUE, ctx(AGENT, method="verbal"), State.OPTED_IN, False),
    (Trigger.EXPIRE, State.OPTED_IN, ctx(SYSTEM), State.REAUTH_DUE, False),
    *[(Trigger.OPT_OUT, s, ctx(), State.OPTED_OUT, False) for s in ALL],
    (Trigger.LAPSE, State.REQUESTED, ctx(SYSTEM), State.UNKNOWN, False),
    *[(Trigger.RESET, s, ctx(AGENT), State.UNKNOWN, False) for s in ALL],
]


@pytest.mark.parametrize(("trigger", "source", "context", "dest", "pin"), ALLOWED,
                         ids=[f"{t.value}:{s.value}->{d.value}{'+pin' if p else ''}" for t, s, _, d, p in ALLOWED])
def test_every_allowed_transition(trigger: Trigger, source: State, context: TransitionContext, dest: State,
                                  pin: bool) -> None:
    subject = consent(source)
    record = fire(subject, trigger, context)
    assert subject.state is dest
    assert subject.awaiting_pin is pin
    assert (record.trigger, record.from_state, record.to_state) == (trigger, source, dest)
    assert record.actor == context.actor


def test_confirm_pin_only_while_awaiting_pin() -> None:
    waiting = consent(State.REQUESTED, awaiting_pin=True)
    fire(waiting, Trigger.CONFIRM_PIN, ctx(AGENT))
    assert waiting.state is State.OPTED_IN and not waiting.awaiting_pin
    with pytest.raises(TransitionRefused) as refused:
        fire(consent(State.REQUESTED), Trigger.CONFIRM_PIN, ctx(AGENT))
    assert refused.value.code == "no_pin_awaited"


ALLOWED_PAIRS = {(t, s) for t, s, *_ in ALLOWED} | {(Trigger.CONFIRM_PIN, State.REQUESTED)}
REFUSED = [(t, s) for t in Trigger for s in State if (t, s) not in ALLOWED_PAIRS
           and not (t is Trigger.REQUEST_OPT_IN and s is State.OPTED_OUT)]


@pytest.mark.parametrize(("trigger", "source"), REFUSED, ids=[f"{t.value}:{s.value}" for t, s in REFUSED])
def test_every_other_transition_is_refused_with_a_reason(trigger: Trigger, source: State) -> None:
    subject = consent(source)
    context = ctx(AGENT, method="verbal")
    with pytest.raises(TransitionRefused) as refused:
        fire(subject, trigger, context)
    assert subject.state is source, "a refused trigger leaves the state alone"
    assert source.value in str(refused.value) or refused.value.code == "no_pin_awaited"


def test_agent_cannot_request_opt_in_of_an_opted_out_address() -> None:
    subject = consent(State.OPTED_OUT)
    with pytest.raises(TransitionRefused) as refused:
        fire(subject, Trigger.REQUEST_OPT_IN, ctx(AGENT))
    assert refused.value.code == "opted_out"
    assert "only the customer can reopen" in str(refused.value)
    assert subject.state is State.OPTED_OUT


def test_system_cannot_request_opt_in_of_an_opted_out_address_either() -> None:
    with pytest.raises(TransitionRefused):
        fire(consent(State.OPTED_OUT), Trigger.REQUEST_OPT_IN, ctx(SYSTEM))


def test_manual_opt_in_needs_a_method_from_the_org_list() -> None:
    with pytest.raises(InvalidInput) as missing:
        fire(consent(State.UNKNOWN), Trigger.RECORD_OPT_IN, ctx(AGENT))
    assert missing.value.code == "method_required"
    with pytest.raises(InvalidInput) as unknown:
        fire(consent(State.UNKNOWN), Trigger.RECORD_OPT_IN,
             ctx(AGENT, method="carrier_pigeon", allowed_methods=("verbal", "paper_form")))
    assert unknown.value.code == "unknown_method" and "carrier_pigeon" in str(unknown.value)


def test_manual_opt_in_keeps_a_past_moment_beside_the_recorded_one() -> None:
    last_week = NOW - timedelta(days=7, hours=3)
    subject = consent(State.UNKNOWN)
    record = fire(subject, Trigger.RECORD_OPT_IN, ctx(AGENT, method="paper_form", occurred_at=last_week,
                                                     evidence="signed form #42"))
    assert record.occurred_at == last_week and record.recorded_at == NOW
    assert subject.opted_in_at == last_week and subject.method == "paper_form"
    assert record.evidence == "signed form #42"


def test_manual_opt_in_cannot_be_in_the_future() -> None:
    with pytest.raises(InvalidInput) as future:
        fire(consent(State.UNKNOWN), Trigger.RECORD_OPT_IN,
             ctx(AGENT, method="verbal", occurred_at=NOW + timedelta(days=1)))
    assert future.value.code == "occurred_in_future"


def test_opt_out_succeeds_from_every_state_without_any_context() -> None:
    for state in State:
        for awaiting in (False, True):
            subject = consent(state, awaiting_pin=awaiting)
            fire(subject, Trigger.OPT_OUT, TransitionContext(actor=CUSTOMER, now=NOW))
            assert subject.state is State.OPTED_OUT and not subject.awaiting_pin
            assert subject.opted_out_at == NOW


def test_reauthorize_restarts_the_consent_clock() -> None:
    subject = consent(State.OPTED_IN)
    subject.opted_in_at = NOW - timedelta(days=400)
    fire(subject, Trigger.REAUTHORIZE, ctx(AGENT, method="text"))
    assert subject.opted_in_at == NOW


def test_reset_forgets_the_old_consent() -> None:
    subject = consent(State.OPTED_IN)
    subject.opted_in_at, subject.method = NOW, "verbal"
    fire(subject, Trigger.RESET, ctx(AGENT))
    assert subject.state is State.UNKNOWN and subject.opted_in_at is None and subject.method is None


def test_one_machine_serves_every_consent(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[Machine] = []
    original = Machine.__init__

    def counting(self: Machine, *args: object, **kwargs: object) -> None:
        built.append(self)
        original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(m, "_MACHINE", None)
    monkeypatch.setattr(Machine, "__init__", counting)
    for n in range(50):
        subject = Consent(Channel.TEXT, f"+1415555{n:04d}")
        fire(subject, Trigger.REQUEST_OPT_IN, ctx(AGENT))
        fire(subject, Trigger.ACCEPT, ctx())
    assert len(built) == 1
    assert not hasattr(Consent(Channel.TEXT, "x"), "trigger"), "consents stay plain objects"


def test_the_machine_has_exactly_the_design_states() -> None:
    assert set(m.machine().states) == {"unknown", "requested", "opted_in", "opted_out", "reauth_due"}
    assert set(m.machine().events) == {t.value for t in Trigger}
