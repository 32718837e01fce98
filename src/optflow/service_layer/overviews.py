"""What the console's supervisor and flows pages show: the outbound queue with the reason each
message waits or failed, and the loaded flows with where their contacts are."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from ..domain import flows as f
from ..domain.policy import Allow, Defer, Deny
from ..domain.records import Message, MessageStatus
from ..domain.settings import OrgSettings
from . import handlers as h
from .flow_engine import FlowEngine
from .unit_of_work import UnitOfWork


@dataclass(frozen=True)
class Waiting:
    message: Message
    contact_name: str | None
    state: str  # held, deferred or failed
    reason: str


def outbound_queue(uow: UnitOfWork, org_id: int, now: datetime, limit: int = 200) -> list[Waiting]:
    """Held, deferred and failed messages to customers, newest first, each with its reason. A
    deferral queued without one (an agent's message sent in quiet hours) gets the policy's answer
    of now."""
    settings = uow.orgs.settings(org_id)
    found = []
    for message, name in uow.overviews.outbound_waiting(org_id, now, limit):
        if message.status is MessageStatus.HELD:
            state, reason = "held", "held until the customer replies YES (the channel runs in consent mode)"
        elif message.status is MessageStatus.FAILED:
            state, reason = "failed", message.last_error or "the provider refused it"
        else:
            state, reason = "deferred", message.last_error or _policy_now(uow, org_id, settings, message, now)
        found.append(Waiting(message, name, state, reason))
    return found


def _policy_now(uow: UnitOfWork, org_id: int, settings: OrgSettings, message: Message, now: datetime) -> str:
    contact = uow.contacts.get(org_id, message.contact_id) if message.contact_id is not None else None
    consent = uow.consents.get(org_id, message.address, message.channel)
    decision = h.policy_decision(uow, settings, contact, consent, message.purpose, message.kind, now)
    if isinstance(decision, Defer):
        return decision.reason
    if isinstance(decision, Deny):
        return f"it would be refused now: {decision.reason}"
    assert isinstance(decision, Allow)
    return "scheduled for later (a flow's wait or a retry)"


@dataclass
class StepCount:
    label: str  # the step's id or place in the flow; "end" past the last step
    active: int = 0
    paused: int = 0


@dataclass
class FlowVersionOverview:
    version: str
    current: bool
    loads: bool  # an old version whose stored source no longer loads cannot run its enrolments
    steps: list[StepCount] = field(default_factory=list)


@dataclass
class FlowOverview:
    name: str
    description: str
    trigger: str
    purpose: str
    version: str
    channels: list[str]
    versions: list[FlowVersionOverview] = field(default_factory=list)

    @property
    def running(self) -> int:
        return sum(s.active + s.paused for v in self.versions for s in v.steps)


def trigger_text(flow: f.Flow) -> str:
    trigger = flow.trigger
    words = {f.TriggerKind.EVENT: "event", f.TriggerKind.CONSENT: "consent becomes",
             f.TriggerKind.KEYWORD: "keyword", f.TriggerKind.MANUAL: "manual enrolment"}[trigger.kind]
    text = f"{words} {trigger.name}" if trigger.name else words
    if trigger.channel is not None:
        text += f" on {trigger.channel.value}"
    if trigger.when:
        text += " when " + ", ".join(f"{key} = {value}" for key, value in trigger.when)
    return text


def _label(flow: f.Flow | None, pc: int) -> str:
    if flow is None:
        return f"pc {pc}"
    if pc >= len(flow.program):
        return "end"
    return flow.program[pc].step_label or f"pc {pc}"


def flows_overview(uow: UnitOfWork, engine: FlowEngine, org_id: int) -> list[FlowOverview]:
    """Every loaded flow (a flow that does not validate stops the server, so each is valid), and
    for each version with running enrolments the number of contacts at each step."""
    overviews = {name: FlowOverview(flow.name, flow.description, trigger_text(flow), flow.purpose.value,
                                    flow.version, sorted(ch.value for ch in flow.channels))
                 for name, flow in sorted(engine.flows.items())}
    versions: dict[tuple[str, str], FlowVersionOverview] = {}
    for name, version, pc, status, count in uow.overviews.enrolments_per_step(org_id):
        flow = engine.flow_for(uow, name, version)
        overview = overviews.get(name)
        if overview is None:  # a flow whose file was removed: its enrolments still run on their version
            overview = overviews[name] = FlowOverview(name, "(no longer loaded)", "-", "-", "-", [])
        key = (name, version)
        if key not in versions:
            versions[key] = FlowVersionOverview(version, version == overview.version, flow is not None)
            overview.versions.append(versions[key])
        label = _label(flow, pc)
        steps = versions[key].steps
        step = next((s for s in steps if s.label == label), None)
        if step is None:
            step = StepCount(label)
            steps.append(step)
        if status == "paused":
            step.paused += count
        else:
            step.active += count
    return list(overviews.values())
