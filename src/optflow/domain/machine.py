"""The consent machine: defined once, fired on plain `Consent` objects loaded from rows.

One `transitions.Machine(model=None)` serves every contact and channel (see the FAQ of
pytransitions/transitions, "one machine, many models"): we call
`MACHINE.events[trigger].trigger(consent, ctx)` on an object that holds its state in an
attribute. Building a `Machine` per contact was measured at ~17x slower and ~34 KB each.

The table `TRANSITIONS` is the single definition: the machine, the docs' Mermaid diagram and
the tests all read it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import cast

from transitions import EventData, Machine, MachineError

from .model import (
    Actor,
    ActorKind,
    Consent,
    InvalidInput,
    State,
    TransitionRecord,
    TransitionRefused,
    Trigger,
)

ANY = "*"

# Methods an org accepts for manual opt-ins unless it configures its own list.
DEFAULT_CONSENT_METHODS: tuple[str, ...] = (
    "verbal",
    "phone_call",
    "paper_form",
    "web_form",
    "email",
    "in_person",
    "text",
)


@dataclass(frozen=True)
class TransitionContext:
    """Everything a trigger needs besides the consent itself. `now` is passed in: the domain
    never reads the clock."""

    actor: Actor
    now: datetime
    occurred_at: datetime | None = None  # when consent was given; defaults to `now`
    method: str | None = None
    evidence: str | None = None
    source_message_id: str | None = None
    customer_initiated: bool = False  # the customer wrote first (may reopen an opt-out)
    pin_required: bool = False
    allowed_methods: tuple[str, ...] = DEFAULT_CONSENT_METHODS
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def when(self) -> datetime:
        return self.occurred_at or self.now


def _consent(event: EventData) -> Consent:
    return cast(Consent, event.model)


def _customer_may_reopen(event: EventData) -> bool:
    ctx: TransitionContext = event.kwargs["ctx"]
    return ctx.customer_initiated or ctx.actor.kind is ActorKind.CUSTOMER


def _pin_required(event: EventData) -> bool:
    return bool(event.kwargs["ctx"].pin_required)


def _awaiting_pin(event: EventData) -> bool:
    return _consent(event).awaiting_pin


def _mark_requested(event: EventData) -> None:
    consent = _consent(event)
    consent.requested_at = event.kwargs["ctx"].when
    consent.awaiting_pin = False


def _mark_awaiting_pin(event: EventData) -> None:
    _consent(event).awaiting_pin = True


def _mark_opted_in(event: EventData) -> None:
    consent = _consent(event)
    ctx: TransitionContext = event.kwargs["ctx"]
    consent.opted_in_at = ctx.when
    consent.method = ctx.method
    consent.awaiting_pin = False


def _mark_opted_out(event: EventData) -> None:
    consent = _consent(event)
    consent.opted_out_at = event.kwargs["ctx"].when
    consent.awaiting_pin = False


def _clear(event: EventData) -> None:
    consent = _consent(event)
    consent.awaiting_pin = False
    consent.requested_at = None
    if event.event.name == Trigger.RESET:
        consent.opted_in_at = None
        consent.method = None


# The one definition. Order matters where a trigger has several rows from the same source:
# transitions tries them in order and takes the first whose conditions hold.
TRANSITIONS: list[dict[str, object]] = [
    {"trigger": Trigger.REQUEST_OPT_IN, "source": [State.UNKNOWN, State.REAUTH_DUE, State.REQUESTED],
     "dest": State.REQUESTED, "after": _mark_requested},
    {"trigger": Trigger.REQUEST_OPT_IN, "source": State.OPTED_OUT, "dest": State.REQUESTED,
     "conditions": _customer_may_reopen, "after": _mark_requested,
     "label": "customer wrote first"},
    {"trigger": Trigger.ACCEPT, "source": [State.REQUESTED, State.UNKNOWN, State.OPTED_OUT, State.REAUTH_DUE],
     "dest": State.REQUESTED, "conditions": _pin_required, "after": _mark_awaiting_pin,
     "label": "org asks for a PIN"},
    {"trigger": Trigger.ACCEPT, "source": [State.REQUESTED, State.UNKNOWN, State.OPTED_OUT, State.REAUTH_DUE],
     "dest": State.OPTED_IN, "unless": _pin_required, "after": _mark_opted_in},
    {"trigger": Trigger.CONFIRM_PIN, "source": State.REQUESTED, "dest": State.OPTED_IN,
     "conditions": _awaiting_pin, "after": _mark_opted_in, "label": "awaiting PIN"},
    {"trigger": Trigger.RECORD_OPT_IN, "source": ANY, "dest": State.OPTED_IN, "after": _mark_opted_in},
    {"trigger": Trigger.REAUTHORIZE, "source": [State.OPTED_IN, State.REAUTH_DUE], "dest": State.OPTED_IN,
     "after": _mark_opted_in},
    {"trigger": Trigger.EXPIRE, "source": State.OPTED_IN, "dest": State.REAUTH_DUE},
    {"trigger": Trigger.OPT_OUT, "source": ANY, "dest": State.OPTED_OUT, "after": _mark_opted_out},
    {"trigger": Trigger.LAPSE, "source": State.REQUESTED, "dest": State.UNKNOWN, "after": _clear},
    {"trigger": Trigger.RESET, "source": ANY, "dest": State.UNKNOWN, "after": _clear},
]


def _plain(value: object) -> object:
    """transitions names enum members by `.name`; the machine works on plain state values."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value.value if isinstance(value, (State, Trigger)) else value


def _machine_rows() -> list[dict[str, object]]:
    return [{k: _plain(v) for k, v in row.items() if k != "label"} for row in TRANSITIONS]


def build_machine() -> Machine:
    """Build the shared machine. Called once (lazily) by `machine()`; never per contact."""
    return Machine(
        model=None,
        states=[s.value for s in State],
        transitions=_machine_rows(),
        initial=None,
        send_event=True,
        auto_transitions=False,
        ignore_invalid_triggers=False,
    )


_MACHINE: Machine | None = None


def machine() -> Machine:
    global _MACHINE
    if _MACHINE is None:
        _MACHINE = build_machine()
    return _MACHINE


def _check_manual_opt_in(ctx: TransitionContext) -> None:
    if not ctx.method:
        raise InvalidInput(
            "a manual opt-in needs a method: one of " + ", ".join(ctx.allowed_methods),
            code="method_required",
        )
    if ctx.method not in ctx.allowed_methods:
        raise InvalidInput(
            f"unknown consent method {ctx.method!r}: use one of " + ", ".join(ctx.allowed_methods),
            code="unknown_method",
        )
    if ctx.occurred_at is not None and ctx.occurred_at > ctx.now + timedelta(minutes=5):
        raise InvalidInput(
            "the moment consent was given cannot be in the future", code="occurred_in_future"
        )


def _refusal(consent: Consent, trigger: Trigger, ctx: TransitionContext) -> TransitionRefused:
    if trigger is Trigger.REQUEST_OPT_IN and consent.state == State.OPTED_OUT:
        return TransitionRefused(
            f"{consent.address} opted out of {consent.channel.value}; only the customer can "
            "reopen it, by texting an opt-in keyword or writing first",
            code="opted_out",
        )
    if trigger is Trigger.CONFIRM_PIN:
        return TransitionRefused(
            f"no PIN is awaited for {consent.address} on {consent.channel.value}",
            code="no_pin_awaited",
        )
    return TransitionRefused(
        f"cannot {trigger.value.replace('_', ' ')} when the {consent.channel.value} consent of "
        f"{consent.address} is {State(consent.state).value}",
        code="invalid_transition",
    )


def fire(consent: Consent, trigger: Trigger, ctx: TransitionContext) -> TransitionRecord:
    """Fire `trigger` on `consent` and say what happened; raise a `DomainError` saying why not.

    `opt_out` has no guard and is accepted from every state: it never fails for a business
    reason.
    """
    trigger = Trigger(trigger)
    if trigger in (Trigger.RECORD_OPT_IN, Trigger.REAUTHORIZE) and ctx.actor.for_business:
        _check_manual_opt_in(ctx)
    from_state = State(consent.state)
    # transitions reads enum members by their name: hand it the plain value, restore the enum after.
    setattr(consent, "state", from_state.value)  # noqa: B010
    try:
        moved = machine().events[trigger.value].trigger(consent, ctx=ctx)
    except MachineError as exc:
        consent.state = from_state
        raise _refusal(consent, trigger, ctx) from exc
    consent.state = State(consent.state)
    if not moved:
        raise _refusal(consent, trigger, ctx)
    consent.version += 1
    return TransitionRecord(
        trigger=trigger,
        channel=consent.channel,
        address=consent.address,
        from_state=from_state,
        to_state=consent.state,
        actor=ctx.actor,
        occurred_at=ctx.when,
        recorded_at=ctx.now,
        method=ctx.method,
        evidence=ctx.evidence,
        source_message_id=ctx.source_message_id,
        awaiting_pin=consent.awaiting_pin,
    )


def may_fire(consent: Consent, trigger: Trigger) -> bool:
    """Whether `trigger` has any row from the consent's current state (ignoring conditions)."""
    return bool(machine().get_transitions(trigger=Trigger(trigger).value, source=State(consent.state).value)) or any(
        row["trigger"] == trigger and row["source"] == ANY for row in TRANSITIONS
    )


def mermaid_diagram(rows: Iterable[dict[str, object]] = TRANSITIONS) -> str:
    """A Mermaid state diagram of `TRANSITIONS`; docs/consent-machine.md embeds it."""
    lines = ["stateDiagram-v2", f"    [*] --> {State.UNKNOWN.value}"]
    for row in rows:
        sources = row["source"]
        if sources == ANY:
            source_list = [s.value for s in State]
        elif isinstance(sources, list):
            source_list = [State(s).value for s in sources]
        else:
            source_list = [State(str(sources)).value]
        dest = State(str(row["dest"])).value
        label = Trigger(str(row["trigger"])).value
        if "label" in row:
            label += f" [{row['label']}]"
        for src in source_list:
            lines.append(f"    {src} --> {dest}: {label}")
    return "\n".join(lines) + "\n"
