"""Running drip flows: enrolling contacts, executing due steps, and taking contacts out.

Enrolments are rows with a program counter (`pc`) into the flow's compiled program and a
`next_run_at`. A periodic job claims due rows in batches (`FOR UPDATE SKIP LOCKED` on PostgreSQL,
so several processes share the work; SQLite has a single writer) and runs each enrolment until
it reaches a wait, a deferral or its end. No scheduler job per contact or step.

An enrolment finishes on the flow version it started with: every version ever enrolled is kept
in `flow_versions`, and a row whose version differs from the loaded file runs its own program.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, Protocol

from ..domain import commands as c
from ..domain import events as ev
from ..domain import flows as f
from ..domain.languages import DEFAULT_LANGUAGE
from ..domain.model import Actor, ActorKind, Channel, DomainError, InvalidInput, NotFound, State
from ..domain.policy import Allow, Decision, Defer, MessageKind
from ..domain.records import ENDED, RUNNING, Contact, Enrollment, EnrollmentStatus, SendWindow
from ..domain.templates import TEMPLATE_NAMES
from . import handlers as h
from .ports import FlowSource
from .unit_of_work import BatchUnitOfWork, UnitOfWork, UnitOfWorkFactory

log = logging.getLogger("optflow.flows")

FLOW_ACTOR_KIND = ActorKind.SYSTEM
MAX_STEPS_PER_RUN = 200
MAX_REMEMBERED_PLANS = 4096  # plans kept by `FlowEngine._unconditional_plan`; all forgotten beyond this
RETRY_AFTER = timedelta(hours=1)  # an enrolment whose step failed unexpectedly is tried again after this

# The enrolment whose step is being performed. Its own `opt_out` or `set_dnd` step must not end
# it (the `discontinued` flow opts out, then sets DND, then removes the contact from flows);
# a message it might still send on a closed channel is refused by the policy like any other.
_performing: ContextVar[int | None] = ContextVar("optflow_performing_enrollment", default=None)


class StepObserver(Protocol):
    """Watches `execute` (a dry run, service_layer/flow_dry_run.py): each action before it is
    performed, and the policy's decision on each send."""

    def action(self, uow: UnitOfWork, action: f.Action, now: datetime) -> None: ...

    def send_decision(self, step: f.Send, address: str, decision: Decision, now: datetime) -> None: ...


step_observer: ContextVar[StepObserver | None] = ContextVar("optflow_step_observer", default=None)


@dataclass(frozen=True)
class _OptedOut:
    """The `consent: opted_out` trigger of an opt-out, queued behind the opt-out's own events:
    the opt-out's `ChannelsBlocked` ends the contact's enrolments, and must not end the ones
    the opt-out itself starts (a flow that waits, then tells a CRM)."""

    org_id: int
    contact_id: int
    channel: Channel


@dataclass
class FlowRunReport:
    enrollments: int = 0
    steps: int = 0
    sent: int = 0
    deferred: int = 0
    skipped: int = 0
    finished: int = 0
    errors: list[str] = field(default_factory=list)


class FlowEngine:
    """Runs the flows. It subscribes to the domain events that start, end, pause or resume
    enrolments when it is built, and handles the commands about enrolments
    (`command_handlers`); the handlers never call it."""

    def __init__(self, flows: Mapping[str, f.Flow], services: h.Services, source: FlowSource,
                 unsubscribe_url: Callable[[int, str, Channel], str] | None = None) -> None:
        self.flows: Mapping[str, f.Flow] = MappingProxyType(dict(flows))
        # The flows each kind of happening may start, in the order `flows` gave them: most
        # happenings (a customer's reply, a consent change) start no flow, and are not matched
        # against every flow's trigger.
        self._started_by: dict[f.TriggerKind, tuple[f.Flow, ...]] = {
            kind: tuple(flow for flow in self.flows.values() if flow.trigger.kind is kind) for kind in f.TriggerKind}
        self.services = services
        services.subscribe(ev.ConsentChanged, self._on_consent_changed)
        services.subscribe(ev.ChannelsBlocked, self._on_channels_blocked)
        services.subscribe(ev.ChannelsUnblocked, self._on_channels_unblocked)
        services.subscribe(ev.CustomerReplied, self._on_customer_replied)
        services.subscribe(ev.BusinessEvent, self._on_business_event)
        services.subscribe(_OptedOut, self._on_opted_out)
        self.source = source
        self._versions: dict[tuple[str, str], f.Flow | None] = {}
        self._sources: dict[tuple[str, str], str] = {}
        for flow in self.flows.values():
            self._source(flow)
        self.unsubscribe_url = unsubscribe_url
        self._plans: dict[tuple[str, str, int, str | None, datetime], f.StepPlan] = {}

    # ---------------------------------------------------------------- versions and templates

    def remember_versions(self, uows: UnitOfWorkFactory, now: datetime) -> None:
        with uows() as uow:
            for flow in self.flows.values():
                uow.enrollments.remember_version(flow.name, flow.version, flow.source_file, self._source(flow), now)
            uow.commit()

    def _source(self, flow: f.Flow) -> str:
        """The YAML a flow version was loaded from, read when the engine starts: it is stored with
        the first enrolment on that version so the version can be rebuilt after the file changes."""
        key = (flow.name, flow.version)
        if key not in self._sources:
            self._sources[key] = self.source.source_of(flow)
        return self._sources[key]

    def flow_for(self, uow: UnitOfWork, name: str, version: str) -> f.Flow | None:
        current = self.flows.get(name)
        if current is not None and current.version == version:
            return current
        key = (name, version)
        if key not in self._versions:
            row = uow.enrollments.version_source(name, version)
            flow = None
            if row is not None:
                try:
                    flow = self.source.load_text(row.source, row.source_file)
                except f.FlowValidationError as exc:
                    log.error("flow %s version %s no longer loads: %s", name, version, exc)
            self._versions[key] = flow
        return self._versions[key]

    def render_content(self, name: str, variables: Mapping[str, object], settings: Any,
                       language: str = DEFAULT_LANGUAGE) -> str:
        """A step's text: a packaged template (in `language`) or the flow's own content template."""
        if name in TEMPLATE_NAMES:
            return h.render(self.services, settings, name, dict(variables), language)
        text = self.source.render_content(name, variables)
        if text is None:
            raise DomainError(f"unknown flow template {name!r}", code="unknown_template")
        return text

    # ---------------------------------------------------------------- enrolling

    def _allowed_to_enroll(self, uow: UnitOfWork, flow: f.Flow, contact_id: int) -> bool:
        return f.may_enroll(
            flow,
            has_active=uow.enrollments.any_for(contact_id, flow.name, RUNNING),
            has_ended=uow.enrollments.any_for(contact_id, flow.name, ENDED),
        )

    def enroll(self, uow: UnitOfWork, org_id: int, contact_id: int, flow: f.Flow, data: Mapping[str, Any],
               now: datetime, run_now: bool = True) -> int | None:
        if not self._allowed_to_enroll(uow, flow, contact_id):
            return None
        uow.enrollments.remember_version(flow.name, flow.version, flow.source_file, self._source(flow), now)
        enrollment_id = uow.enrollments.create(org_id, contact_id, flow.name, flow.version, data, now)
        uow.enrollments.log_step(enrollment_id, 0, "enrolled", "started", now)
        if run_now:
            row = uow.enrollments.get(enrollment_id)
            assert row is not None
            self._execute_isolated(uow, row, now, FlowRunReport())
        return enrollment_id

    def enroll_manual(self, uow: UnitOfWork, org_id: int, contact_id: int, flow_name: str,
                      now: datetime, data: Mapping[str, Any] | None = None) -> int:
        flow = self.flows.get(flow_name)
        if flow is None:  # the request's own content is wrong: nothing the URL names is missing
            raise InvalidInput(f"no flow named {flow_name!r}", code="unknown_flow")
        uow.contacts.get(org_id, contact_id)
        enrollment_id = self.enroll(uow, org_id, contact_id, flow, data or {}, now)
        if enrollment_id is None:
            raise DomainError(f"contact {contact_id} may not enrol in {flow_name!r} again "
                              f"(re-enrolment policy {flow.reenroll!r})", code="already_enrolled")
        return enrollment_id

    def _trigger(self, uow: UnitOfWork, org_id: int, contact_id: int, kind: str, name: str,
                 data: Mapping[str, Any], now: datetime) -> list[int]:
        try:
            started_by = self._started_by[f.TriggerKind(kind)]
        except ValueError as exc:
            raise InvalidInput(f"unknown trigger kind {kind!r}") from exc
        enrolled = []
        for flow in started_by:
            if f.trigger_matches(flow, kind, name, data):
                enrollment_id = self.enroll(uow, org_id, contact_id, flow, {"kind": kind, "name": name, **data}, now)
                if enrollment_id is not None:
                    enrolled.append(enrollment_id)
        return enrolled

    def _exit(self, uow: UnitOfWork, contact_id: int, now: datetime, kind: str, name: str | None,
              data: Mapping[str, Any], reason: str) -> None:
        for row in uow.enrollments.for_contact(contact_id):
            flow = self.flow_for(uow, row.flow_name, row.flow_version)
            if flow is not None and f.exit_matches(flow, kind, name, data):
                uow.enrollments.end(row.id, EnrollmentStatus.DONE, reason, now)
                uow.enrollments.log_step(row.id, row.pc, "exit", reason, now)

    # ---------------------------------------------------------------- commands and events

    def command_handlers(self) -> dict[type, Callable[..., Any]]:
        return {c.RecordEvent: self.record_event, c.EnrollContact: self.enroll_contact,
                c.RemoveEnrollment: self.remove_enrollment}

    def record_event(self, cmd: c.RecordEvent, uow: UnitOfWork, svc: h.Services, now: datetime) -> h.ActionResult:
        if not cmd.name or len(cmd.name) > 100:
            raise InvalidInput("an event needs a name of at most 100 characters", code="invalid_event")
        uow.contacts.get(cmd.org_id, cmd.contact_id)
        enrolled = self.event(uow, cmd.org_id, cmd.contact_id, cmd.name, cmd.data, now)
        return h.ActionResult(cmd.contact_id, None, None, status="recorded",
                              detail=f"enrolled in {len(enrolled)} flow(s)" if enrolled else "no flow matched",
                              enrollment_ids=tuple(enrolled))

    def enroll_contact(self, cmd: c.EnrollContact, uow: UnitOfWork, svc: h.Services, now: datetime) -> int:
        return self.enroll_manual(uow, cmd.org_id, cmd.contact_id, cmd.flow, now, cmd.data)

    def remove_enrollment(self, cmd: c.RemoveEnrollment, uow: UnitOfWork, svc: h.Services, now: datetime) -> int:
        uow.contacts.get(cmd.org_id, cmd.contact_id)
        self.remove(uow, cmd.org_id, cmd.contact_id, cmd.enrollment_id, now, cmd.actor)
        return cmd.enrollment_id

    def _on_consent_changed(self, uow: UnitOfWork, event: ev.ConsentChanged, now: datetime) -> None:
        self.consent_changed(uow, event.org_id, event.contact_id, event.channel, event.to_state, now)

    def _on_channels_blocked(self, uow: UnitOfWork, event: ev.ChannelsBlocked, now: datetime) -> None:
        self.channels_blocked(uow, event.org_id, event.contact_id, event.channels, now, reason=event.reason,
                              pause=event.pause)

    def _on_channels_unblocked(self, uow: UnitOfWork, event: ev.ChannelsUnblocked, now: datetime) -> None:
        self.channels_unblocked(uow, event.org_id, event.contact_id, now)

    def _on_customer_replied(self, uow: UnitOfWork, event: ev.CustomerReplied, now: datetime) -> None:
        self.contact_replied(uow, event.org_id, event.contact_id, now)
        self.keyword(uow, event.org_id, event.contact_id, event.text, event.channel, now)

    def _on_business_event(self, uow: UnitOfWork, event: ev.BusinessEvent, now: datetime) -> None:
        self.event(uow, event.org_id, event.contact_id, event.name, event.data, now)

    def event(self, uow: UnitOfWork, org_id: int, contact_id: int, name: str, data: Mapping[str, Any],
              now: datetime) -> list[int]:
        data = f.with_pipeline_stage(name, data, uow.orgs.settings(org_id).discontinued_stages)
        self._exit(uow, contact_id, now, "event", name, data, f"event {name}")
        return self._trigger(uow, org_id, contact_id, "event", name, data, now)

    def consent_changed(self, uow: UnitOfWork, org_id: int, contact_id: int, channel: Channel, state: State,
                        now: datetime) -> None:
        """End the enrolments that exit on this state, and start the flows it triggers. A flow
        triggered by `opted_out` runs too (to tell a CRM, say), once the opt-out has closed the
        contact's channels and ended their enrolments (`_OptedOut`); its steps that would message
        the contact on a closed channel are refused by the policy."""
        self._exit(uow, contact_id, now, "consent", state.value, {"channel": channel},
                   f"consent {state.value} on {channel.value}")
        if state is State.OPTED_OUT:
            uow.events.append(_OptedOut(org_id, contact_id, channel))  # after the opt-out's ChannelsBlocked
        else:
            self._trigger(uow, org_id, contact_id, "consent", state.value, {"channel": channel.value}, now)

    def _on_opted_out(self, uow: UnitOfWork, event: _OptedOut, now: datetime) -> None:
        self._trigger(uow, event.org_id, event.contact_id, "consent", State.OPTED_OUT.value,
                      {"channel": event.channel.value}, now)

    def keyword(self, uow: UnitOfWork, org_id: int, contact_id: int, text: str, channel: Channel,
                now: datetime) -> None:
        self._trigger(uow, org_id, contact_id, "keyword", text, {"channel": channel.value}, now)

    def contact_replied(self, uow: UnitOfWork, org_id: int, contact_id: int, now: datetime) -> None:
        self._exit(uow, contact_id, now, "contact_replied", None, {}, "contact replied")

    def channels_blocked(self, uow: UnitOfWork, org_id: int, contact_id: int, channels: Collection[Channel] | None,
                         now: datetime, *, reason: str, pause: bool = False) -> None:
        """Opt-out or DND on some channels; `channels=None` (everything) ends every enrolment.

        DND on a channel pauses every enrolment whose remaining steps would send on it, until it
        is lifted. An opt-out of a channel cancels the enrolments that have nothing left to send
        on any channel still open to the contact; an enrolment that still has steps on another
        open channel carries on, and its steps on the closed channel are skipped by the policy
        (a drip's emails still go after a STOP to its texts)."""
        rows = uow.enrollments.for_contact(contact_id, RUNNING)
        closed = set(channels or ()) | (self._opted_out_channels(uow, org_id, contact_id) if rows else set())
        cancelled: list[tuple[int, int]] = []
        for row in rows:
            if row.id == _performing.get():
                continue
            flow = self.flow_for(uow, row.flow_name, row.flow_version)
            needs = f.remaining_channels(flow, min(row.pc, len(flow.program))) if flow else frozenset(Channel)
            touched = channels is None or bool(needs & set(channels))
            if touched and (channels is None or pause or needs <= closed):
                if pause and channels is not None:
                    uow.enrollments.pause(row.id, reason)
                    uow.enrollments.log_step(row.id, row.pc, "paused", reason, now)
                else:
                    cancelled.append((row.id, row.pc))
        uow.enrollments.end_many(cancelled, EnrollmentStatus.CANCELLED, reason, now)

    def _opted_out_channels(self, uow: UnitOfWork, org_id: int, contact_id: int) -> set[Channel]:
        addresses = [a.value for a in uow.contacts.addresses(contact_id)]
        return {consent.channel for consent in uow.consents.for_addresses(org_id, addresses)
                if consent.state is State.OPTED_OUT}

    def channels_unblocked(self, uow: UnitOfWork, org_id: int, contact_id: int, now: datetime) -> None:
        """DND lifted: paused enrolments whose channels are free again carry on."""
        dnd = uow.contacts.get(org_id, contact_id).dnd
        for row in uow.enrollments.for_contact(contact_id, (EnrollmentStatus.PAUSED,)):
            flow = self.flow_for(uow, row.flow_name, row.flow_version)
            if flow is None:
                continue
            needs = f.remaining_channels(flow, min(row.pc, len(flow.program)))
            if not any(dnd.blocks(ch) for ch in needs):
                uow.enrollments.resume(row.id, now)
                uow.enrollments.log_step(row.id, row.pc, "resumed", "do not disturb lifted", now)

    def remove(self, uow: UnitOfWork, org_id: int, contact_id: int, enrollment_id: int, now: datetime,
               actor: Actor) -> None:
        row = uow.enrollments.get(enrollment_id)
        if row is None or row.contact_id != contact_id or row.org_id != org_id:
            raise NotFound(f"contact {contact_id} has no enrolment {enrollment_id}", code="enrollment_not_found")
        if not row.running:
            raise DomainError(f"enrolment {enrollment_id} already ended ({row.status})", code="enrollment_ended")
        uow.enrollments.end(enrollment_id, EnrollmentStatus.CANCELLED, f"removed by {actor}", now)
        uow.enrollments.log_step(enrollment_id, row.pc, "removed", f"removed by {actor}", now)

    # ---------------------------------------------------------------- running due steps

    def run_due(self, uows: UnitOfWorkFactory, now: datetime, batch: int = 500,
                max_batches: int = 1000) -> FlowRunReport:
        report = FlowRunReport()
        for _ in range(max_batches):
            with uows() as uow:
                rows = uow.enrollments.claim_due(now, batch, uow.skip_locked)
                self._run_batch(uow, rows, now, report)
                uow.commit()
            report.enrollments += len(rows)
            if len(rows) < batch:
                break
        return report

    def _run_batch(self, uow: UnitOfWork, rows: list[Enrollment], now: datetime, report: FlowRunReport) -> None:
        """Run the claimed enrolments in order, set-based where the steps allow it.

        An enrolment whose steps until its next wait can only be sends
        (`flows.only_sends_until_wait`) runs in a batched unit of work (`UnitOfWork.batched`): its reads come from the
        batch's preload and its writes are kept, then
        written for many enrolments at once. Any other enrolment runs on its own in a savepoint,
        as `enroll` runs one; the kept writes are written first, so it sees everything the batch
        did before it (an opt-out cancels the outbox rows already queued), and the later
        enrolments of its contact run on their own too (it may have changed their facts)."""
        batched = uow.batched(rows, self._send_windows(uow, rows, now))
        pending: list[Enrollment] = []  # run batched, not written yet
        pending_report = FlowRunReport()
        changed_contacts: set[int] = set()
        for row in rows:
            contact = batched.contact(row.contact_id)
            flow = self.flow_for(uow, row.flow_name, row.flow_version)
            if (flow is not None and contact is not None and contact.org_id == row.org_id
                    and row.contact_id not in changed_contacts and f.only_sends_until_wait(flow, row.pc)):
                pending.append(row)
                self._execute_batched(batched, row, now, pending_report)
                continue
            self._write_batched(uow, batched, pending, pending_report, now, report)
            pending_report = FlowRunReport()
            self._execute_isolated(uow, row, now, report)
            changed_contacts.add(row.contact_id)
        self._write_batched(uow, batched, pending, pending_report, now, report)

    def _write_batched(self, uow: UnitOfWork, batched: BatchUnitOfWork, pending: list[Enrollment],
                       pending_report: FlowRunReport, now: datetime, report: FlowRunReport) -> None:
        """Write what the pending enrolments did and count it in `report`. Should the bulk write
        fail (a row the database refuses), it is undone and each of them runs again on its own,
        so the failure stays with the enrolment that caused it."""
        if not pending:
            return
        try:
            with uow.savepoint():
                batched.flush_writes()
        except Exception:
            log.exception("writing the steps of %d enrolments at once failed; running them one by one", len(pending))
            batched.drop_writes()
            for row in pending:
                self._execute_isolated(uow, row, now, report)
        else:
            for name, value in vars(pending_report).items():
                setattr(report, name, getattr(report, name) + value)
        pending.clear()

    def _send_windows(self, uow: UnitOfWork, rows: list[Enrollment], now: datetime) -> dict[int, SendWindow]:
        """For each org of the batch with frequency caps: the sends they may count."""
        windows = {}
        for org_id in {row.org_id for row in rows}:
            try:
                caps = h.policy_settings(uow.orgs.settings(org_id)).caps
            except DomainError:
                continue  # the enrolment's own run reports it
            if caps:
                windows[org_id] = SendWindow(frozenset(ch for cap in caps for ch in cap.channels),
                                             now - max(cap.window for cap in caps))
        return windows

    def _execute_batched(self, uow: BatchUnitOfWork, row: Enrollment, now: datetime,
                         report: FlowRunReport) -> None:
        """`execute` in the batch's unit of work. A step that fails drops what this enrolment
        wrote, like the savepoint of `_execute_isolated`."""
        mark = uow.mark()
        try:
            self.execute(uow, row, now, report)
        except Exception as exc:
            uow.undo(mark, row.id)
            self._failed(uow, row, exc, now, report)

    def _execute_isolated(self, uow: UnitOfWork, row: Enrollment, now: datetime, report: FlowRunReport) -> None:
        """`execute` inside a savepoint. A step that fails unexpectedly (a content template that
        no longer renders, say) undoes only this enrolment's work and is tried again from the same
        step after RETRY_AFTER, so it neither blocks the rest of the batch on every tick nor fails
        the business event that enrolled the contact."""
        try:
            with uow.savepoint():
                self.execute(uow, row, now, report)
        except Exception as exc:
            self._failed(uow, row, exc, now, report)

    def _failed(self, uow: UnitOfWork, row: Enrollment, exc: Exception, now: datetime,
                report: FlowRunReport) -> None:
        log.exception("enrolment %s (flow %s) failed at step %s", row.id, row.flow_name, row.pc,
                      exc_info=exc)
        retry_at = now + RETRY_AFTER
        problem = f"{type(exc).__name__}: {exc}"
        uow.enrollments.move(row.id, row.pc, retry_at)
        uow.enrollments.log_step(row.id, row.pc, "error",
                                 f"{problem}; trying again at {retry_at.isoformat()}", now)
        report.errors.append(f"enrolment {row.id}: {problem}")

    def execute(self, uow: UnitOfWork, row: Enrollment, now: datetime, report: FlowRunReport) -> None:
        """Run one enrolment from its pc until a wait, a deferral or the end. Everything it does
        lands in the caller's transaction, with the step advance."""
        flow = self.flow_for(uow, row.flow_name, row.flow_version)
        enrollment_id, pc = row.id, row.pc
        if flow is None:
            uow.enrollments.end(enrollment_id, EnrollmentStatus.CANCELLED, "flow version no longer available", now)
            report.errors.append(f"enrolment {enrollment_id}: flow {row.flow_name} {row.flow_version} missing")
            return
        org_id = row.org_id
        contact = uow.contacts.get(org_id, row.contact_id)
        event: dict[str, Any] = json.loads(row.event_json or "{}")
        facts: f.Facts | None = None  # read when a condition needs them, again after an action changed them
        for _ in range(MAX_STEPS_PER_RUN):
            if f.plan_reads_conditions(flow, pc):
                if facts is None:
                    facts = self._facts(uow, org_id, contact, event)
                plan = f.plan_step(flow, pc, facts, now)
            else:
                plan = self._unconditional_plan(flow, pc, contact.time_zone, now)
            if plan.wake_at is not None:
                uow.enrollments.move(enrollment_id, plan.next_pc, plan.wake_at)
                uow.enrollments.log_step(enrollment_id, plan.next_pc - 1, "wait",
                                         f"waiting until {plan.wake_at.isoformat()}", now)
                return
            if plan.action is None:
                uow.enrollments.end(enrollment_id, EnrollmentStatus.DONE, "completed", now)
                report.finished += 1
                return
            at = plan.next_pc - 1
            report.steps += 1
            observer = step_observer.get()
            if observer is not None:
                observer.action(uow, plan.action, now)
            performing = _performing.set(enrollment_id)
            try:
                outcome, deferred_until = self._act(uow, flow, row, plan.action, contact, event, now, report)
                self.services.publish(uow, now)  # what the step changed reaches the other enrolments
            finally:
                _performing.reset(performing)
            uow.enrollments.log_step(enrollment_id, at, plan.action.step_label or f"pc {at}", outcome, now)
            if deferred_until is not None:
                uow.enrollments.move(enrollment_id, at, deferred_until)
                report.deferred += 1
                return
            if not isinstance(plan.action, f.Send):
                # Any other action may have changed a consent, or ended or paused this
                # enrolment (opt-out, DND, remove). A send changes neither: its facts still hold.
                current = uow.enrollments.get(enrollment_id)
                if current is None or current.status is not EnrollmentStatus.ACTIVE:
                    return
                facts = None
            if plan.finished:
                uow.enrollments.end(enrollment_id, EnrollmentStatus.DONE, "completed", now)
                report.finished += 1
                return
            pc = plan.next_pc
        uow.enrollments.move(enrollment_id, pc, now)

    def _unconditional_plan(self, flow: f.Flow, pc: int, time_zone: str | None, now: datetime) -> f.StepPlan:
        """`plan_step` from a pc where it reads no condition, so its plan depends only on the
        flow, the pc, the contact's time zone and `now`: remembered, as a batch runs many
        enrolments from the same step at the same `now`."""
        key = (flow.name, flow.version, pc, time_zone, now)
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= MAX_REMEMBERED_PLANS:
                self._plans.clear()
            plan = self._plans[key] = f.plan_step(flow, pc, f.Facts({}, {}, {}, time_zone), now)
        return plan

    def _facts(self, uow: UnitOfWork, org_id: int, contact: Contact, event: Mapping[str, Any]) -> f.Facts:
        states: dict[Channel, State] = {}
        for consent in uow.consents.for_addresses(org_id, [a.value for a in uow.contacts.addresses(contact.id)]):
            if consent.channel not in states or consent.state is State.OPTED_OUT:
                states[consent.channel] = consent.state
        fields = {**contact.fields(), "name": contact.name, "marketing_allowed": contact.marketing_allowed}
        return f.Facts(consent_states=states, contact=fields, event=event, time_zone=contact.time_zone)

    def _act(self, uow: UnitOfWork, flow: f.Flow, row: Enrollment, instruction: f.Instruction,
             contact: Contact, event: Mapping[str, Any], now: datetime,
             report: FlowRunReport) -> tuple[str, datetime | None]:
        org_id, contact_id = row.org_id, row.contact_id
        try:
            if isinstance(instruction, f.Send):
                return self._send(uow, flow, row, instruction, contact, event, now, report)
            actor = Actor(FLOW_ACTOR_KIND, f"flow:{flow.name}")
            if isinstance(instruction, f.RequestOptIn):
                h.request_opt_in(c.RequestOptIn(org_id, contact_id, instruction.channel, actor, reason="flow"),
                                 uow, self.services, now)
                return "opt-in request queued", None
            if isinstance(instruction, f.ReauthorizeRequest):
                h.send_reauth_request(c.SendReauthRequest(org_id, contact_id, instruction.channel, actor),
                                      uow, self.services, now)
                return "re-authorisation request queued", None
            if isinstance(instruction, f.OptOut):
                if instruction.channels is None:
                    h.opt_out(c.OptOut(org_id, contact_id, Channel.TEXT, actor, all_channels=True, method="flow",
                                       evidence=f"flow {flow.name}"), uow, self.services, now)
                else:
                    for channel in sorted(instruction.channels):
                        h.opt_out(c.OptOut(org_id, contact_id, channel, actor, method="flow",
                                           evidence=f"flow {flow.name}"), uow, self.services, now)
                return "opted out", None
            if isinstance(instruction, f.SetDnd):
                h.set_dnd(c.SetDnd(org_id, contact_id, actor, on=True,
                                   channels=tuple(sorted(instruction.channels or ())),
                                   all_channels=instruction.channels is None), uow, self.services, now)
                return "do not disturb set", None
            if isinstance(instruction, f.RemoveFromFlows):
                for other in uow.enrollments.for_contact(contact_id):
                    if other.id != row.id:
                        uow.enrollments.end(other.id, EnrollmentStatus.CANCELLED, f"removed by flow {flow.name}", now)
                        uow.enrollments.log_step(other.id, other.pc, "removed", f"by flow {flow.name}", now)
                return "removed from other flows", None
            if isinstance(instruction, f.Webhook):
                return self._webhook(uow, instruction, flow, row, event, now), None
        except DomainError as exc:
            report.skipped += 1
            return f"skipped: {exc}", None
        raise AssertionError(f"unhandled instruction {instruction!r}")

    def _send(self, uow: UnitOfWork, flow: f.Flow, row: Enrollment, step: f.Send,
              contact: Contact, event: Mapping[str, Any], now: datetime,
              report: FlowRunReport) -> tuple[str, datetime | None]:
        org_id, contact_id = row.org_id, row.contact_id
        settings = uow.orgs.settings(org_id)
        try:
            address = h._contact_address(uow, contact_id, step.channel, None)
        except DomainError as exc:
            report.skipped += 1
            return f"skipped: {exc}", None
        consent = uow.consents.get(org_id, address, step.channel)
        decision = h.policy_decision(uow, settings, contact, consent, step.purpose, MessageKind.NORMAL, now)
        observer = step_observer.get()
        if observer is not None:
            observer.send_decision(step, address, decision, now)
        if isinstance(decision, Defer):
            return f"deferred: {decision.reason}", decision.until
        if not isinstance(decision, Allow):
            report.skipped += 1
            return f"skipped: {decision.reason}", None
        # Packaged templates speak the contact's language; a flow's own content is written in one
        # language and gets its variables as documented (English words).
        language = h.customer_language(settings, contact)
        content_language = language if step.template in TEMPLATE_NAMES else DEFAULT_LANGUAGE
        variables = h.template_variables(uow, org_id, settings, step.channel, contact, None,
                                         language=content_language, event=dict(event))
        body = self.render_content(step.template, variables, settings, content_language)
        if step.channel is Channel.EMAIL and step.purpose.value == "marketing" and self.unsubscribe_url:
            footer_vars = {**h.template_variables(uow, org_id, settings, step.channel, contact, None,
                                                  language=language),
                           "unsubscribe_url": self.unsubscribe_url(org_id, address, step.channel)}
            footer = h.render(self.services, settings, "email/marketing_footer", footer_vars, language)
            body = f"{body}\n\n{footer}"
        h.queue_to_customer(uow, org_id, contact_id, step.channel, address, body, now, kind=MessageKind.NORMAL,
                            purpose=step.purpose, subject=step.subject, enrollment_id=row.id)
        report.sent += 1
        return f"queued {step.template} on {step.channel.value}", None

    def _webhook(self, uow: UnitOfWork, step: f.Webhook, flow: f.Flow, row: Enrollment,
                 event: Mapping[str, Any], now: datetime) -> str:
        """Queue the POST in the step's transaction; the scheduler's `WebhookDispatcher` sends it.
        No HTTP here: this runs inside a transaction, and often on a web worker's event loop."""
        payload = {"flow": flow.name, "enrollment_id": row.id, "contact_id": row.contact_id,
                   "event": dict(event), **dict(step.body)}
        # ASCII JSON: storable whatever the event carried (a NUL or a lone surrogate is escaped).
        delivery_id = uow.webhook_deliveries.add(row.org_id, row.id, step.url,
                                                 json.dumps(payload, default=str), now)
        return f"webhook queued (delivery {delivery_id})"
