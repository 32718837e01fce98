"""A flow's dry run: every message it would send one contact, when, and the policy's answer.

A marketer sees a drip before it reaches anyone. The run is the engine's own: the contact is
enrolled and `FlowEngine.execute` runs each due step at the moment it would be due (a wait's
end, a quiet-hours deferral's end), so the step planning (`domain/flows.py`), the policy's
decision (`domain/policy.py`, with the caps counting the run's earlier messages), the rendering
and what an action changes (an opt-in request makes the consent `requested`) are exactly those
of a real run. All of it happens in one transaction that is never committed: nothing is
written, no message reaches the outbox, no ledger entry is chained (its queue is flushed only
at a commit) and no webhook is queued.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ..domain import flows as f
from ..domain.languages import DEFAULT_LANGUAGE
from ..domain.model import Channel, DomainError, NotFound
from ..domain.policy import Decision, Defer, Deny, MessageKind
from ..domain.records import ENDED, RUNNING, Audience, Contact, Direction, EnrollmentStatus, Message, MessageStatus
from ..domain.settings import OrgSettings
from ..domain.templates import TEMPLATE_NAMES
from . import handlers as h
from .flow_engine import FlowEngine, FlowRunReport, step_observer
from .unit_of_work import UnitOfWork

HORIZON = timedelta(days=400)  # a step due later than this after the start is not run
MAX_RUNS = 500  # runs of the enrolment (one per wake-up); a flow's jumps only go forward, so it ends

ACTION_NAMES: dict[type, str] = {
    f.Send: "send", f.RequestOptIn: "request_opt_in", f.ReauthorizeRequest: "reauthorize_request",
    f.OptOut: "opt_out", f.SetDnd: "set_dnd", f.RemoveFromFlows: "remove_from_flows", f.Webhook: "webhook",
}


class Answer(enum.StrEnum):
    """The policy's answer for one message of the run."""

    ALLOW = "allow"  # queued to go at `send_at`
    DEFER = "defer"  # it had to wait (quiet hours, a frequency cap): it goes at `send_at`
    DENY = "deny"  # refused: it would not be sent
    HELD = "held"  # waits for the customer's YES


@dataclass(frozen=True)
class PlannedMessage:
    channel: Channel
    address: str
    send_at: datetime  # when it would be handed to the provider
    text: str
    subject: str | None
    kind: MessageKind
    answer: Answer
    reason: str | None = None  # why it waited or was refused
    code: str | None = None  # the policy's code for a refusal or a wait


@dataclass(frozen=True)
class DryRunStep:
    """One action of the run, as the engine would perform it."""

    at: datetime
    step: str  # the step's id, or its place in the flow (steps[2].then[0])
    action: str  # send, request_opt_in, opt_out, webhook, ...
    outcome: str  # the engine's words in the enrolment's history
    messages: tuple[PlannedMessage, ...] = ()


@dataclass
class DryRun:
    flow: str
    version: str
    contact_id: int
    started_at: datetime
    steps: list[DryRunStep] = field(default_factory=list)
    end: str = ""  # how the run ended: completed, cancelled by..., or still waiting past the horizon
    enrolment_refused: str | None = None  # why a real enrolment would be refused now, if it would

    @property
    def messages(self) -> list[tuple[DryRunStep, PlannedMessage]]:
        return [(step, message) for step in self.steps for message in step.messages]


@dataclass
class _Open:
    """The action being performed, until the next one starts or the run stops."""

    at: datetime
    action: f.Action
    first_message_id: int
    decisions: list[tuple[str, Decision, datetime]] = field(default_factory=list)  # address, decision, at


class _Recorder:
    """The `StepObserver` (flow_engine.py) of one dry run: collects each action, the messages it
    queued and the policy's decisions on its sends."""

    def __init__(self, run: DryRun, flows: FlowEngine, flow: f.Flow, org_id: int, contact: Contact,
                 settings: OrgSettings, data: Mapping[str, Any]) -> None:
        self.run = run
        self.flows = flows
        self.flow = flow
        self.org_id = org_id
        self.contact = contact
        self.settings = settings
        self.data = data
        self.enrollment_id = 0
        self.last_message_id = 0
        self.last_history_id = 0
        self.open: _Open | None = None
        self.deferred: dict[str, tuple[Defer, datetime]] = {}  # a send step's first deferral, by step

    def action(self, uow: UnitOfWork, action: f.Action, now: datetime) -> None:
        self.close(uow)
        self.open = _Open(now, action, self.last_message_id)

    def send_decision(self, step: f.Send, address: str, decision: Decision, now: datetime) -> None:
        if self.open is not None:
            self.open.decisions.append((address, decision, now))

    def close(self, uow: UnitOfWork) -> None:
        """Finish the open action: its outcome from the history, the messages it queued."""
        current, self.open = self.open, None
        new_messages = [m for m in reversed(uow.messages.for_contact(self.org_id, self.contact.id, limit=200))
                        if m.id > self.last_message_id]
        if new_messages:
            self.last_message_id = new_messages[-1].id
        history = [row for row in uow.enrollments.history(self.enrollment_id) if row["id"] > self.last_history_id]
        if history:
            self.last_history_id = history[-1]["id"]
        if current is not None:
            self._close_action(uow, current, history, new_messages)
        for row in history:  # the wait the run stopped at, if any: it follows the action
            if row["step"] == "wait":
                wait = self.flow.program[row["pc"]] if row["pc"] < len(self.flow.program) else None
                label = wait.step_label if wait is not None else f"pc {row['pc']}"
                self.run.steps.append(DryRunStep(row["at"], label, "wait", row["outcome"]))

    def _close_action(self, uow: UnitOfWork, current: _Open, history: list[dict[str, Any]],
                      new_messages: list[Message]) -> None:
        label = current.action.step_label
        outcome = next((row["outcome"] for row in history if row["step"] == label),
                       history[0]["outcome"] if history else "")
        messages = [self._planned(uow, current, m) for m in new_messages
                    if m.direction is Direction.OUT and m.audience is Audience.CUSTOMER]
        if isinstance(current.action, f.Send):
            messages += self._not_queued(uow, current)
        self.run.steps.append(DryRunStep(current.at, label, ACTION_NAMES[type(current.action)], outcome,
                                         tuple(messages)))

    def _planned(self, uow: UnitOfWork, current: _Open, message: Message) -> PlannedMessage:
        send_at = message.not_before or current.at
        answer, reason, code = Answer.ALLOW, None, None
        if message.status is MessageStatus.HELD:
            answer, reason = Answer.HELD, "held until the customer replies YES"
        elif message.status in (MessageStatus.DENIED, MessageStatus.CANCELLED):
            answer, reason = Answer.DENY, message.last_error or f"{message.status}"
        elif isinstance(current.action, f.Send) and current.action.step_label in self.deferred:
            first, _ = self.deferred.pop(current.action.step_label)
            answer, reason, code = Answer.DEFER, first.reason, ",".join(first.codes) or None
        elif send_at > current.at:
            answer, reason = Answer.DEFER, f"the policy let it go at {send_at.isoformat()} at the earliest"
        return PlannedMessage(message.channel, message.address, send_at, message.body, message.subject,
                              message.kind, answer, reason, code)

    def _not_queued(self, uow: UnitOfWork, current: _Open) -> list[PlannedMessage]:
        """A send the policy refused (shown with the text it would have had) or deferred (shown
        when it goes, after the wait)."""
        assert isinstance(current.action, f.Send)
        step = current.action
        refused = []
        for address, decision, at in current.decisions:
            if isinstance(decision, Defer):
                self.deferred.setdefault(step.step_label, (decision, at))
            elif isinstance(decision, Deny):
                self.deferred.pop(step.step_label, None)
                refused.append(PlannedMessage(step.channel, address, at, self._text(uow, step), step.subject,
                                              MessageKind.NORMAL, Answer.DENY, decision.reason, decision.code))
        return refused

    def _text(self, uow: UnitOfWork, step: f.Send) -> str:
        # As the run renders it: packaged templates in the contact's language, a flow's own content as written.
        language = h.customer_language(self.settings, self.contact)
        content_language = language if step.template in TEMPLATE_NAMES else DEFAULT_LANGUAGE
        variables = h.template_variables(uow, self.org_id, self.settings, step.channel, self.contact, None,
                                         language=content_language, event=dict(self.data))
        try:
            return self.flows.render_content(step.template, variables, self.settings, content_language)
        except Exception as exc:  # a content template that does not render: what the run would report
            return f"(the template {step.template} does not render: {exc})"


def dry_run(uow_factory: Callable[[], UnitOfWork], flows: FlowEngine, org_id: int, contact_id: int,
            flow_name: str, now: datetime, data: Mapping[str, Any] | None = None,
            horizon: timedelta = HORIZON) -> DryRun:
    """Run `flow_name` for the contact from `now` on, in a transaction that is rolled back.

    `data` is the event the contact would be enrolled with (what `event.*` in the flow's
    templates and conditions reads). A real enrolment the flow's re-enrolment policy would
    refuse is still run, and the refusal is reported."""
    flow = flows.flows.get(flow_name)
    if flow is None:
        raise NotFound(f"no flow named {flow_name!r}", code="unknown_flow")
    data = dict(data or {})
    run = DryRun(flow.name, flow.version, contact_id, now)
    with uow_factory() as uow:
        contact = uow.contacts.get(org_id, contact_id)
        settings = uow.orgs.settings(org_id)
        if not f.may_enroll(flow, has_active=uow.enrollments.any_for(contact_id, flow.name, RUNNING),
                            has_ended=uow.enrollments.any_for(contact_id, flow.name, ENDED)):
            run.enrolment_refused = (f"contact {contact_id} is or was in {flow.name} and its re-enrolment policy "
                                     f"is {flow.reenroll!r}: a real enrolment would be refused")
        recorder = _Recorder(run, flows, flow, org_id, contact, settings, data)
        recorder.close(uow)  # the messages and history before the run are not the run's
        enrollment_id = uow.enrollments.create(org_id, contact_id, flow.name, flow.version, data, now)
        recorder.enrollment_id = enrollment_id
        token = step_observer.set(recorder)
        try:
            _run(uow, flows, recorder, run, enrollment_id, now + horizon)
        finally:
            step_observer.reset(token)
            uow.rollback()
    return run


def _run(uow: UnitOfWork, flows: FlowEngine, recorder: _Recorder, run: DryRun, enrollment_id: int,
         until: datetime) -> None:
    for _ in range(MAX_RUNS):
        row = uow.enrollments.get(enrollment_id)
        assert row is not None
        if row.status is not EnrollmentStatus.ACTIVE:
            run.end = f"{row.status}: {row.end_reason}" if row.status is not EnrollmentStatus.PAUSED \
                else "paused (do not disturb on a channel it sends on)"
            return
        at = row.next_run_at
        assert at is not None
        if at > until:
            run.end = f"still waiting: the next step is due at {at.isoformat()}, past the dry run's horizon"
            return
        report = FlowRunReport()
        try:
            with uow.savepoint():
                flows.execute(uow, row, at, report)
        except DomainError as exc:
            recorder.close(uow)
            run.end = f"stopped: {exc}"
            return
        except Exception as exc:  # what the engine would retry every hour: the run stops and says why
            recorder.close(uow)
            run.end = f"stopped: the step failed ({type(exc).__name__}: {exc})"
            return
        recorder.close(uow)
    run.end = f"stopped after {MAX_RUNS} runs"


def event_data(text: str | None) -> dict[str, Any]:
    """The `--data` of the CLI: a JSON object, or nothing."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DomainError(f"the event data is not JSON: {exc}", code="invalid_input") from None
    if not isinstance(value, dict):
        raise DomainError("the event data must be a JSON object", code="invalid_input")
    return value
