"""Drip flows as data: the flow model, its compiled program, and the pure logic of one step.

A flow's steps (a tree: `if` holds `then` and `else` lists) are compiled into a flat program, so
an enrolment's position is one integer, its program counter `pc`:

    if C then [A, B] else [D]; E        0 JumpUnless(C, 4)
                                        1 A
                                        2 B
                                        3 Jump(5)
                                        4 D
                                        5 E

Jumps only ever go forward, so running a flow always ends. `pc == len(program)` means finished.

How a dispatcher runs an enrolment: call `plan_step(flow, pc, facts, now)`; it follows jumps
(evaluating conditions against `facts`) until it reaches an action to perform, a wait, or the end.
After performing an action, refresh the facts (the action may have changed a consent) and plan
again from the returned `next_pc`. Nothing here does IO or reads the clock.

See docs/flows.md for the language that the loader (`optflow.adapters.flow_loader`) turns into
these objects.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .model import Channel, InvalidInput, Purpose, State

Scalar = str | int | float | bool | None
"""What an equality filter compares with (`when:` on a trigger, `contact:`/`event:` conditions)."""

Equalities = tuple[tuple[str, Scalar], ...]
"""Field/value pairs that must all be equal; kept as sorted pairs so they are hashable."""

WEEKDAYS: tuple[str, ...] = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

class TriggerKind(enum.StrEnum):
    EVENT = "event"
    CONSENT = "consent"
    KEYWORD = "keyword"
    MANUAL = "manual"


class Reenroll(enum.StrEnum):
    """May a contact enter the same flow again?"""

    NEVER = "never"  # once per flow, ever (while active or after it finished or exited)
    AFTER_EXIT = "after_exit"  # again once the previous enrolment has ended, never two at once
    ALWAYS = "always"  # every trigger starts an enrolment, even while another is active


class ExitKind(enum.StrEnum):
    REPLIED = "contact_replied"
    EVENT = "event"
    CONSENT = "consent"


def equalities(values: Mapping[str, Scalar]) -> Equalities:
    return tuple(sorted(values.items()))


def _fold(text: str) -> str:
    """Text as people mean it: without regard to case or to runs of spaces."""
    return " ".join(text.split()).casefold()


def _same(expected: Scalar, actual: object) -> bool:
    """Equality that does not confuse `true` with 1 (Python's True == 1), and compares text
    without regard to case or spacing (a CRM's "Discontinued" is the flow's `discontinued`)."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(expected) is type(actual) and expected == actual
    if isinstance(expected, str) and isinstance(actual, str):
        return _fold(expected) == _fold(actual)
    return expected == actual


PIPELINE_STAGE_EVENT = "pipeline.stage_changed"
DISCONTINUED_STAGE = "discontinued"


def with_pipeline_stage(name: str, data: Mapping[str, Any], discontinued_stages: Sequence[str]) -> Mapping[str, Any]:
    """A CRM names its pipeline's stages as it likes (Market Center's is "Discontinued Process").
    A `pipeline.stage_changed` event whose `stage` is one of the org's names for "discontinued"
    (`discontinued_stages`, compared without regard to case or spacing) reaches the flows as
    `stage: discontinued`, its own name kept as `stage_name`; any other event is left as it is."""
    stage = data.get("stage")
    if name != PIPELINE_STAGE_EVENT or not isinstance(stage, str):
        return data
    if _fold(stage) not in {_fold(s) for s in discontinued_stages}:
        return data
    return {**data, "stage": DISCONTINUED_STAGE, "stage_name": stage}


def _all_equal(required: Equalities, data: Mapping[str, object]) -> bool:
    missing = object()
    return all(_same(value, data.get(key, missing)) for key, value in required)


@dataclass(frozen=True)
class FlowError:
    file: str
    line: int | None
    step: str | None  # e.g. "steps[3] (send)", "trigger"; None for the file or the flow as a whole
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.step}: {self.message}" if self.step else f"{where}: {self.message}"


class FlowValidationError(Exception):
    def __init__(self, errors: Iterable[FlowError]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(str(error) for error in self.errors))


@dataclass(frozen=True)
class FlowTrigger:
    """What enrols a contact. `name` is the event name, the consent state or the keyword
    (casefolded); None for manual flows. `channel` narrows consent and keyword triggers."""

    kind: TriggerKind
    name: str | None = None
    channel: Channel | None = None
    when: Equalities = ()


@dataclass(frozen=True)
class ExitCondition:
    """What ends an active enrolment early: the contact replied, a business event happened, or a
    consent reached a state."""

    kind: ExitKind
    name: str | None = None
    channel: Channel | None = None
    when: Equalities = ()


# ---------------------------------------------------------------------------------- conditions


@dataclass(frozen=True)
class ConsentCondition:
    """True when the contact's consent on `channel` is one of `states` (no consent = unknown)."""

    channel: Channel
    states: frozenset[State]


@dataclass(frozen=True)
class ContactCondition:
    """True when every listed contact field equals its value."""

    equals: Equalities


@dataclass(frozen=True)
class EventCondition:
    """True when every listed field of the event that enrolled the contact equals its value."""

    equals: Equalities


Condition = ConsentCondition | ContactCondition | EventCondition


@dataclass(frozen=True)
class Facts:
    """What conditions and waits look at, gathered by the dispatcher for one enrolment."""

    consent_states: Mapping[Channel, State]  # a channel without a consent is `unknown`
    contact: Mapping[str, object]  # the contact's fields, for `if: {contact: ...}`
    event: Mapping[str, object]  # the data of the event that enrolled the contact
    time_zone: str | None  # the contact's IANA zone, for waits; None = UTC


def evaluate(condition: Condition, facts: Facts) -> bool:
    if isinstance(condition, ConsentCondition):
        return facts.consent_states.get(condition.channel, State.UNKNOWN) in condition.states
    if isinstance(condition, ContactCondition):
        return _all_equal(condition.equals, facts.contact)
    return _all_equal(condition.equals, facts.event)


# -------------------------------------------------------------------------------- instructions
# `step_label` (the step's `id`, or its place such as "steps[2].then[0]") and `line` say where an
# instruction came from; they are keyword-only so the positional fields read like the YAML.


@dataclass(frozen=True, kw_only=True)
class _Located:
    step_label: str = ""
    line: int | None = None


@dataclass(frozen=True)
class WaitFor(_Located):
    """Wait a duration. Whole days count on the contact's local calendar (see next_wait_until)."""

    duration: timedelta


@dataclass(frozen=True)
class WaitUntil(_Located):
    """Wait for the next local `time`, on `weekday` (0 = Monday) when one is given."""

    weekday: int | None
    time: time


@dataclass(frozen=True)
class Send(_Located):
    channel: Channel
    template: str
    purpose: Purpose
    subject: str | None = None


@dataclass(frozen=True)
class RequestOptIn(_Located):
    channel: Channel


@dataclass(frozen=True)
class ReauthorizeRequest(_Located):
    channel: Channel


@dataclass(frozen=True)
class OptOut(_Located):
    """Opt the contact out of `channels` (None = every channel)."""

    channels: frozenset[Channel] | None = None


@dataclass(frozen=True)
class SetDnd(_Located):
    """Put `channels` (None = every channel) on do-not-disturb."""

    channels: frozenset[Channel] | None = None


@dataclass(frozen=True)
class RemoveFromFlows(_Located):
    """End the contact's active enrolments. Unless `except_this`, this enrolment ends too, so
    nothing after this step runs."""

    except_this: bool = False


@dataclass(frozen=True)
class Webhook(_Located):
    """POST `body` as JSON to `url`. The body takes no part in hashing (it is a nested mapping)."""

    url: str
    body: Mapping[str, object] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class JumpUnless(_Located):
    condition: Condition
    target: int


@dataclass(frozen=True)
class Jump(_Located):
    target: int


Action = Send | RequestOptIn | ReauthorizeRequest | OptOut | SetDnd | RemoveFromFlows | Webhook
Wait = WaitFor | WaitUntil
Instruction = Action | Wait | JumpUnless | Jump


@dataclass(frozen=True)
class IfStep:
    """The `if` of the step tree; compile_program turns it into jumps."""

    condition: Condition
    then: tuple[Step, ...] = ()
    otherwise: tuple[Step, ...] = ()
    step_label: str = ""
    line: int | None = None


Step = Action | Wait | IfStep


def ends_enrolment(instruction: Instruction) -> bool:
    """True for an action after which this enrolment is over."""
    return isinstance(instruction, RemoveFromFlows) and not instruction.except_this


def channel_of(instruction: Instruction) -> Channel | None:
    """The channel an instruction sends on: sends and opt-in/reauth requests are messages."""
    if isinstance(instruction, Send | RequestOptIn | ReauthorizeRequest):
        return instruction.channel
    return None


def channels_of(instructions: Iterable[Instruction]) -> frozenset[Channel]:
    return frozenset(c for c in map(channel_of, instructions) if c is not None)


def compile_program(steps: Sequence[Step]) -> tuple[Instruction, ...]:
    """Flatten the step tree: each `if` becomes a JumpUnless over its `then` block, and a Jump
    over its `else` block when it has one. Both carry the `if` step's label and line."""
    program: list[Instruction] = []

    def emit(block: Sequence[Step]) -> None:
        for step in block:
            if not isinstance(step, IfStep):
                program.append(step)
                continue
            branch_at = len(program)
            program.append(JumpUnless(step.condition, -1))  # placeholder, replaced below
            emit(step.then)
            skip_else_at = None
            if step.otherwise:
                skip_else_at = len(program)
                program.append(Jump(-1))  # placeholder, replaced below
            else_at = len(program)
            emit(step.otherwise)
            program[branch_at] = JumpUnless(
                step.condition, else_at, step_label=step.step_label, line=step.line
            )
            if skip_else_at is not None:
                program[skip_else_at] = Jump(len(program), step_label=step.step_label, line=step.line)

    emit(steps)
    return tuple(program)


def _check_program(program: Sequence[Instruction]) -> None:
    for pc, instruction in enumerate(program):
        if isinstance(instruction, Jump | JumpUnless) and not pc < instruction.target <= len(program):
            raise InvalidInput(f"instruction {pc} jumps to {instruction.target}: jumps must go forward")


def _successors(program: Sequence[Instruction], pc: int) -> tuple[int, ...]:
    instruction = program[pc]
    if isinstance(instruction, Jump):
        return (instruction.target,)
    if isinstance(instruction, JumpUnless):
        return (pc + 1, instruction.target)
    if ends_enrolment(instruction):
        return ()
    return (pc + 1,)


# ------------------------------------------------------------------------------------- the flow


@dataclass(frozen=True)
class Flow:
    """One loaded flow. `channels` is derived from the program: every channel a step sends on."""

    name: str
    description: str
    trigger: FlowTrigger
    purpose: Purpose
    reenroll: str
    exit_when: tuple[ExitCondition, ...]
    program: tuple[Instruction, ...]
    version: str = ""  # first 16 hex digits of the sha256 of the source text
    source_file: str = ""
    channels: frozenset[Channel] = field(init=False)
    # Per pc (up to len(program)), computed once as a flow never changes: can a run from there
    # reach only jumps (then the action before it is the last), and does `plan_step` from there
    # evaluate a condition before it reaches an action, a wait or the end?
    _only_jumps_from: tuple[bool, ...] = field(init=False, repr=False, compare=False)
    _condition_ahead: tuple[bool, ...] = field(init=False, repr=False, compare=False)
    _sends_until_wait: tuple[bool, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.reenroll not in set(Reenroll):
            raise InvalidInput(f"unknown reenroll policy {self.reenroll!r}")
        _check_program(self.program)
        object.__setattr__(self, "channels", channels_of(self.program))
        object.__setattr__(self, "_only_jumps_from", _only_jumps_from(self.program))
        object.__setattr__(self, "_condition_ahead", _condition_ahead(self.program))
        object.__setattr__(self, "_sends_until_wait", _sends_until_wait(self.program))


def _reachable(program: Sequence[Instruction], pc: int) -> list[Instruction]:
    """Every instruction some run starting at `pc` may reach, whatever the conditions say."""
    seen: set[int] = set()
    pending = [pc]
    while pending:
        at = pending.pop()
        if at < len(program) and at not in seen:
            seen.add(at)
            pending.extend(_successors(program, at))
    return [program[at] for at in sorted(seen)]


def remaining_channels(flow: Flow, pc: int) -> frozenset[Channel]:
    """Channels that some instruction reachable from `pc` (the next one the enrolment will run)
    sends on, whatever the conditions will say. An opt-out or DND on one of them cancels the
    enrolment; on any other channel it leaves the enrolment alone."""
    _check_pc(flow, pc)
    return channels_of(_reachable(flow.program, pc))


def _check_pc(flow: Flow, pc: int) -> None:
    if not 0 <= pc <= len(flow.program):
        raise InvalidInput(f"flow {flow.name!r} has no step at pc={pc} (program length {len(flow.program)})")


# ---------------------------------------------------------------------------------------- waits


def _zone(time_zone: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(time_zone or "UTC")
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidInput(f"unknown time zone {time_zone!r}") from exc


def next_wait_until(instr: WaitFor | WaitUntil, now: datetime, time_zone: str | None) -> datetime:
    """When a wait that starts at `now` is over, as an aware UTC datetime.

    `time_zone` is the contact's IANA zone (None = UTC). A `WaitFor` adds its whole days on the
    local calendar, so "1d" after 10:00 is 10:00 the next day even across a DST change, then adds
    the rest (hours, minutes) as elapsed time. A `WaitUntil` is the first matching local wall time
    at or after `now`. A local time that does not exist (skipped by a spring-forward change) is
    moved forward by the size of the gap; one that occurs twice means its first occurrence.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise InvalidInput("now must be timezone-aware")
    zone = _zone(time_zone)
    local_now = now.astimezone(zone)
    if isinstance(instr, WaitFor):
        days = timedelta(days=instr.duration.days)
        elapsed = instr.duration - days
        start = now
        if days:
            wall = local_now.replace(tzinfo=None, fold=0) + days
            start = wall.replace(tzinfo=zone)
        return (start + elapsed).astimezone(UTC)
    for offset in range(8):
        day = local_now.date() + timedelta(days=offset)
        if instr.weekday is not None and day.weekday() != instr.weekday:
            continue
        candidate = datetime.combine(day, instr.time, tzinfo=zone).astimezone(UTC)
        if candidate >= now:
            return candidate
    raise AssertionError("a week always holds the next matching day")  # pragma: no cover


# ------------------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class StepPlan:
    """What an enrolment does next.

    - `action` set: perform it now, then plan again from `next_pc` (unless `finished`).
    - `wake_at` set: sleep; when woken, plan again from `next_pc`.
    - `finished`: the enrolment is over (after performing `action`, if any).
    """

    action: Action | None
    next_pc: int
    wake_at: datetime | None
    finished: bool


def plan_step(flow: Flow, pc: int, facts: Facts, now: datetime) -> StepPlan:
    _check_pc(flow, pc)
    program = flow.program
    while pc < len(program):
        instruction = program[pc]
        if isinstance(instruction, Jump):
            pc = instruction.target
        elif isinstance(instruction, JumpUnless):
            pc = pc + 1 if evaluate(instruction.condition, facts) else instruction.target
        elif isinstance(instruction, WaitFor | WaitUntil):
            wake_at = next_wait_until(instruction, now, facts.time_zone)
            return StepPlan(action=None, next_pc=pc + 1, wake_at=wake_at, finished=False)
        else:
            return StepPlan(
                action=instruction,
                next_pc=pc + 1,
                wake_at=None,
                finished=ends_enrolment(instruction) or flow._only_jumps_from[pc + 1],
            )
    return StepPlan(action=None, next_pc=pc, wake_at=None, finished=True)


def _every_run(program: Sequence[Instruction], verdict: Callable[[Instruction], bool | None]) -> tuple[bool, ...]:
    """For each pc up to len(program): does every run from it pass? Jumps are followed (both ways
    for a conditional one); at any other instruction `verdict` says pass, fail, or None: go on to
    the next. The end passes. Walked backwards: jumps only go forward, so a pc's successors are
    decided before it."""
    passes = [True] * (len(program) + 1)
    for pc in range(len(program) - 1, -1, -1):
        instruction = program[pc]
        if isinstance(instruction, Jump):
            passes[pc] = passes[instruction.target]
        elif isinstance(instruction, JumpUnless):
            passes[pc] = passes[pc + 1] and passes[instruction.target]
        else:
            said = verdict(instruction)
            passes[pc] = passes[pc + 1] if said is None else said
    return tuple(passes)


def _only_jumps_from(program: Sequence[Instruction]) -> tuple[bool, ...]:
    """For each pc up to len(program): is every instruction reachable from it a jump?"""
    return _every_run(program, lambda _: False)


def _condition_ahead(program: Sequence[Instruction]) -> tuple[bool, ...]:
    """For each pc up to len(program): does following jumps from it meet a conditional jump
    before an action, a wait or the end? Walked backwards, as `_every_run`."""
    ahead = [False] * (len(program) + 1)
    for pc in range(len(program) - 1, -1, -1):
        instruction = program[pc]
        if isinstance(instruction, Jump):
            ahead[pc] = ahead[instruction.target]
        else:
            ahead[pc] = isinstance(instruction, JumpUnless)
    return tuple(ahead)


def _sends_until_wait(program: Sequence[Instruction]) -> tuple[bool, ...]:
    """For each pc up to len(program): is every action reachable from it without passing a wait
    a send, whatever the conditions say?"""
    return _every_run(program, lambda i: None if isinstance(i, Send) else isinstance(i, WaitFor | WaitUntil))


def only_sends_until_wait(flow: Flow, pc: int) -> bool:
    """Can a run from `pc` do nothing but send before its next wait or the end? Such a run reads
    the contact and its consents and writes outbox rows, history and the enrolment's move: what
    the dispatcher can do for many enrolments at once. False for a pc outside the program (its
    run then fails on its own)."""
    return 0 <= pc <= len(flow.program) and flow._sends_until_wait[pc]


def plan_reads_conditions(flow: Flow, pc: int) -> bool:
    """Does `plan_step(flow, pc, facts, now)` evaluate a condition? When it does not, the plan
    depends only on the flow, `pc`, `now` and (for a wait) `facts.time_zone`."""
    _check_pc(flow, pc)
    return flow._condition_ahead[pc]


# ------------------------------------------------------------------------------ triggers, exits


def _normal_keyword(text: str) -> str:
    return " ".join(text.split()).casefold()


def _channel_matches(required: Channel | None, data: Mapping[str, object]) -> bool:
    return required is None or data.get("channel") == required


def trigger_matches(flow: Flow, kind: str, name: str, data: Mapping[str, object]) -> bool:
    """Does this happening enrol a contact in `flow`?

    kind "event": `name` is the event name, `data` its payload (the trigger's `when` filters must
    all be equal). kind "consent": `name` is the new state, `data` may hold {"channel": ...}.
    kind "keyword": `name` is the inbound message (compared whole, ignoring case and spacing),
    `data` may hold {"channel": ...}. kind "manual": an agent, the API or an import enrols the
    contact; only manual flows answer True.
    """
    try:
        wanted = TriggerKind(kind)
    except ValueError as exc:
        raise InvalidInput(f"unknown trigger kind {kind!r}") from exc
    trigger = flow.trigger
    if trigger.kind is not wanted:
        return False
    if wanted is TriggerKind.MANUAL:
        return True
    if wanted is TriggerKind.KEYWORD:
        return trigger.name == _normal_keyword(name) and _channel_matches(trigger.channel, data)
    if trigger.name != name:
        return False
    if wanted is TriggerKind.CONSENT:
        return _channel_matches(trigger.channel, data)
    return _all_equal(trigger.when, data)


def exit_matches(flow: Flow, kind: str, name: str | None, data: Mapping[str, object]) -> bool:
    """Does this happening end the contact's active enrolment in `flow`?

    kind "contact_replied" (name ignored), "event" (name, data = payload filtered by `when`) or
    "consent" (name = new state, data may hold {"channel": ...}).
    """
    try:
        wanted = ExitKind(kind)
    except ValueError as exc:
        raise InvalidInput(f"unknown exit kind {kind!r}") from exc
    return any(_exit_matches(condition, wanted, name, data) for condition in flow.exit_when)


def _exit_matches(
    condition: ExitCondition, kind: ExitKind, name: str | None, data: Mapping[str, object]
) -> bool:
    if condition.kind is not kind:
        return False
    if kind is ExitKind.REPLIED:
        return True
    if condition.name != name:
        return False
    return _channel_matches(condition.channel, data) and _all_equal(condition.when, data)


def may_enroll(flow: Flow, *, has_active: bool, has_ended: bool) -> bool:
    """Apply the flow's `reenroll` policy given the contact's existing enrolments in it."""
    policy = Reenroll(flow.reenroll)
    if policy is Reenroll.ALWAYS:
        return True
    if policy is Reenroll.AFTER_EXIT:
        return not has_active
    return not (has_active or has_ended)
