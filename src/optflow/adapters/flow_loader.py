"""Load `flows/*.yaml` into `Flow` objects, or explain, by file, line and step, what is wrong.

Flows are written by marketing teams, so the loader reports every problem of a file at once and
words each one for the person who wrote the YAML (see docs/flows.md for the language).

YAML is read with YAML 1.2 scalars: only `true`/`false` are booleans (`yes`, `no`, `on`, `off`
are words), `10:00` is text rather than the base-60 number 600, a number with a leading zero
(`02134`, a postcode) is text rather than octal, and dates stay text. Every mapping and list
remembers the lines of its entries, and duplicate keys are errors instead of the later one
silently winning (a `<<: *anchor` merge may still be overridden, as YAML intends).
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Callable, Collection, Iterable, Mapping, MutableMapping, Sequence
from datetime import time, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from jinja2 import StrictUndefined, Template
from jinja2.sandbox import ImmutableSandboxedEnvironment

from optflow.domain.flows import (
    WEEKDAYS,
    Condition,
    ConsentCondition,
    ContactCondition,
    EventCondition,
    ExitCondition,
    ExitKind,
    Flow,
    FlowError,
    FlowTrigger,
    FlowValidationError,
    IfStep,
    OptOut,
    ReauthorizeRequest,
    Reenroll,
    RemoveFromFlows,
    RequestOptIn,
    Scalar,
    Send,
    SetDnd,
    Step,
    TriggerKind,
    WaitFor,
    WaitUntil,
    Webhook,
    channel_of,
    compile_program,
    ends_enrolment,
    equalities,
)
from optflow.domain.keywords import KeywordTable
from optflow.domain.model import Channel, Intent, Purpose, State
from optflow.domain.templates import TEMPLATE_NAMES

FLOW_FILE_PATTERNS = ("*.yaml", "*.yml")
CONTENT_TEMPLATE_DIR = "templates"
CONTENT_TEMPLATE_SUFFIX = ".j2"

FLOW_KEYS = ("name", "description", "trigger", "purpose", "reenroll", "exit_when", "steps")
FLOW_PURPOSES = (Purpose.MARKETING, Purpose.TRANSACTIONAL)
STEP_TYPES = (
    "wait", "send", "request_opt_in", "reauthorize_request", "opt_out", "set_dnd",
    "remove_from_flows", "webhook", "if",
)
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")
_DURATION = re.compile(r"^(\d+)([mhdw])$")
_ISO_DURATION = re.compile(r"^P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$")
_UNIT = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
_CHANNELS_HELP = "write 'all' or a list such as [text, email]"
_CLOCK = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
# A keyword trigger may not take over a word the classifier already gives a meaning to (STOP,
# START, HELP and their kin in every language of the default table).
_RESERVED_MEANINGS = {
    Intent.OPT_OUT: "an opt-out",
    Intent.OPT_IN: "an opt-in",
    Intent.HELP: "a request for help",
}
# Names people reach for that are not optflow's channel names.
_CHANNEL_HINTS = {"sms": "text", "mms": "text", "phone": "call", "voice": "call", "mail": "email"}


# ------------------------------------------------------------------------------------- errors


# ------------------------------------------------------------------------------ YAML with lines


class _Map(dict[Any, Any]):
    """A YAML mapping that knows the line it starts on and the line of each key."""

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.key_lines: dict[Any, int] = {}

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


class _Seq(list[Any]):
    """A YAML list that knows the line it starts on and the line of each item."""

    def __init__(self, line: int, items: Iterable[Any], item_lines: Iterable[int]) -> None:
        super().__init__(items)
        self.line = line
        self.item_lines = list(item_lines)


class _FlowYamlLoader(yaml.SafeLoader):
    yaml_implicit_resolvers: dict[Any, list[tuple[str, re.Pattern[str]]]] = {}  # noqa: RUF012

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicate_keys: list[tuple[int, str]] = []


def _add_resolver(tag: str, pattern: str, first: str | list[str]) -> None:
    _FlowYamlLoader.add_implicit_resolver(f"tag:yaml.org,2002:{tag}", re.compile(pattern), list(first))


_add_resolver("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF")
_add_resolver("int", r"^[-+]?(?:0|[1-9][0-9]*)$", "-+0123456789")
_add_resolver(
    "float",
    r"^[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$|^[-+]?[0-9]+[eE][-+]?[0-9]+$"
    r"|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$",
    "-+0123456789.",
)
_add_resolver("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""])
_MERGE_TAG = "tag:yaml.org,2002:merge"
_add_resolver("merge", r"^(?:<<)$", "<")


def _construct_map(loader: _FlowYamlLoader, node: yaml.MappingNode) -> _Map:
    own_keys: set[tuple[str, str]] = set()
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            raise yaml.constructor.ConstructorError(
                None, None, "a key must be a plain word or number", key_node.start_mark
            )
        if key_node.tag == _MERGE_TAG:
            continue
        if (key_node.tag, key_node.value) in own_keys:
            loader.duplicate_keys.append((key_node.start_mark.line + 1, key_node.value))
        own_keys.add((key_node.tag, key_node.value))
    loader.flatten_mapping(node)  # `<<: *anchor` merges come first, so the mapping's own keys win
    mapping = _Map(node.start_mark.line + 1)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.key_lines[key] = key_node.start_mark.line + 1
    return mapping


def _construct_seq(loader: _FlowYamlLoader, node: yaml.SequenceNode) -> _Seq:
    return _Seq(
        node.start_mark.line + 1,
        (loader.construct_object(child, deep=True) for child in node.value),
        (child.start_mark.line + 1 for child in node.value),
    )


_FlowYamlLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_FlowYamlLoader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def _plain(value: Any) -> Any:
    """Strip the line bookkeeping: a webhook body is sent as ordinary JSON."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


# ------------------------------------------------------------------------------------- wording


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"'{str(value).lower()}'"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"'{value}'"
    return f"the number {value}"


def _hint(value: str, choices: Sequence[str], *, list_choices: bool = True) -> str:
    close = difflib.get_close_matches(value, choices, n=1, cutoff=0.7)
    if close:
        return f" (did you mean '{close[0]}'?)"
    if list_choices:
        return f" (expected {_one_of(choices)})"
    return ""


def _one_of(choices: Sequence[str]) -> str:
    if len(choices) == 1:
        return choices[0]
    return ", ".join(choices[:-1]) + f" or {choices[-1]}"


def _quoted(names: Iterable[str]) -> str:
    return " and ".join(f"'{name}'" for name in names)


_KIND_NAMES: Mapping[type, str] = {
    WaitFor: "wait", WaitUntil: "wait", Send: "send", RequestOptIn: "request_opt_in",
    ReauthorizeRequest: "reauthorize_request", OptOut: "opt_out", SetDnd: "set_dnd",
    RemoveFromFlows: "remove_from_flows", Webhook: "webhook", IfStep: "if",
}


def _where(step: Step) -> str:
    return f"{step.step_label} ({_KIND_NAMES[type(step)]})"


def _message_kind(step: Step) -> str:
    return {"send": "message", "request_opt_in": "opt-in request"}.get(
        _KIND_NAMES[type(step)], "reauthorization request"
    )


# ------------------------------------------------------------------------------------ checking


class _FileChecker:
    """Checks one file, collecting every error instead of stopping at the first."""

    def __init__(self, file: str, known_templates: Collection[str]) -> None:
        self.file = file
        self.known_templates = known_templates
        self.errors: list[FlowError] = []
        self.default_purpose = Purpose.MARKETING
        self.step_ids: dict[str, str] = {}

    def error(self, line: int | None, step: str | None, message: str) -> None:
        self.errors.append(FlowError(self.file, line, step, message))

    # --- small typed readers: each reports its own error and returns None when the value is bad

    def text(self, mapping: _Map, key: str, step: str | None, *, required: bool = True) -> str | None:
        if key not in mapping:
            if required:
                self.error(mapping.line, step, f"missing '{key}'")
            return None
        value = mapping[key]
        if not isinstance(value, str) or not value.strip():
            self.error(mapping.line_of(key), step, f"'{key}' must be text, found {_type_name(value)}")
            return None
        return value.strip()

    def choice(
        self, value: Any, choices: Sequence[str], what: str, line: int, step: str | None
    ) -> str | None:
        if isinstance(value, str) and value in choices:
            return value
        if isinstance(value, str):
            self.error(line, step, f"unknown {what} '{value}'{_hint(value, choices)}")
        else:
            self.error(line, step, f"{what} must be one of {_one_of(choices)}, found {_type_name(value)}")
        return None

    def channel(self, mapping: _Map, key: str, step: str | None) -> Channel | None:
        if key not in mapping:
            self.error(mapping.line, step, f"missing '{key}'")
            return None
        return self.channel_value(mapping[key], mapping.line_of(key), step)

    def channel_value(self, value: Any, line: int, step: str | None) -> Channel | None:
        names = [c.value for c in Channel]
        if isinstance(value, str) and value in _CHANNEL_HINTS:
            self.error(line, step, f"unknown channel '{value}' (did you mean '{_CHANNEL_HINTS[value]}'?)")
            return None
        chosen = self.choice(value, names, "channel", line, step)
        return Channel(chosen) if chosen else None

    def mapping(self, value: Any, line: int, step: str | None, what: str) -> _Map | None:
        if isinstance(value, _Map):
            return value
        self.error(line, step, f"{what} must be a mapping, found {_type_name(value)}")
        return None

    def only_keys(
        self, mapping: _Map, allowed: Sequence[str], step: str | None, what: str, within: str = ""
    ) -> None:
        """Report keys outside `allowed`: "unknown {what} 'x'{within}", with a suggestion."""
        for key in mapping:
            if key not in allowed:
                name = str(key)
                hint = _hint(name, allowed)
                self.error(mapping.line_of(key), step, f"unknown {what} '{name}'{within}{hint}")

    def equalities(self, value: Any, line: int, step: str | None, what: str) -> dict[str, Scalar] | None:
        mapping = self.mapping(value, line, step, what)
        if mapping is None:
            return None
        if not mapping:
            self.error(line, step, f"{what} lists no field")
            return None
        result: dict[str, Scalar] = {}
        for key, item in mapping.items():
            if isinstance(item, dict | list):
                self.error(
                    mapping.line_of(key), step,
                    f"'{key}' in {what} must be a single value to compare with, found {_type_name(item)}",
                )
            else:
                result[str(key)] = item
        return result if len(result) == len(mapping) else None

    # --- the flow

    def flow(self, doc: Any, version: str) -> tuple[Flow | None, int | None]:
        if not isinstance(doc, _Map):
            self.error(
                getattr(doc, "line", 1), None,
                "a flow file holds one mapping (name, trigger, steps, ...); found " + _type_name(doc),
            )
            return None, None
        self.only_keys(doc, FLOW_KEYS, None, "setting")
        name = self.name(doc)
        description = self.text(doc, "description", None, required=False) or ""
        if "purpose" in doc:
            purpose = self.choice(doc["purpose"], FLOW_PURPOSES, "purpose", doc.line_of("purpose"), None)
            self.default_purpose = Purpose(purpose) if purpose else Purpose.MARKETING
        reenroll = Reenroll.NEVER.value
        if "reenroll" in doc:
            reenroll = self.choice(
                doc["reenroll"], [r.value for r in Reenroll], "reenroll policy", doc.line_of("reenroll"), None
            ) or reenroll
        trigger = self.trigger(doc)
        exits = self.exit_conditions(doc)
        steps = self.steps(doc)
        if self.errors or name is None or trigger is None or exits is None or steps is None:
            return None, doc.line_of("name")
        flow = Flow(
            name=name,
            description=description,
            trigger=trigger,
            purpose=self.default_purpose,
            reenroll=reenroll,
            exit_when=exits,
            program=compile_program(steps),
            version=version,
            source_file=self.file,
        )
        return flow, doc.line_of("name")

    def name(self, doc: _Map) -> str | None:
        name = self.text(doc, "name", None)
        if name is not None and not NAME_PATTERN.match(name):
            suggestion = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")[:100] or "welcome_drip"
            self.error(
                doc.line_of("name"), None,
                f"name '{name}' may only use lowercase letters, digits, '_' and '-', at most 100 of "
                f"them (such as '{suggestion}')",
            )
            return None
        return name

    def trigger(self, doc: _Map) -> FlowTrigger | None:
        where = "trigger"
        if "trigger" not in doc:
            self.error(doc.line, None, "missing 'trigger'")
            return None
        value, line = doc["trigger"], doc.line_of("trigger")
        kinds = [k.value for k in TriggerKind]
        if value == TriggerKind.MANUAL.value:
            return FlowTrigger(TriggerKind.MANUAL)
        if isinstance(value, str):
            self.error(line, where, f"unknown trigger '{value}'{_hint(value, kinds)}")
            return None
        mapping = self.mapping(value, line, where, "'trigger'")
        if mapping is None:
            return None
        found = [key for key in mapping if key in kinds]
        if len(found) > 1:
            self.error(mapping.line, where, f"a trigger has one kind; found {_quoted(found)}")
            return None
        if not mapping:
            self.error(line, where, f"the trigger is empty (expected {_one_of(kinds)})")
            return None
        if not found:
            unknown = str(next(iter(mapping)))
            self.error(mapping.line_of(unknown), where, f"unknown trigger '{unknown}'{_hint(unknown, kinds)}")
            return None
        kind = TriggerKind(found[0])
        allowed = {
            TriggerKind.EVENT: ("event", "when"),
            TriggerKind.CONSENT: ("consent", "channel"),
            TriggerKind.KEYWORD: ("keyword", "channel"),
            TriggerKind.MANUAL: ("manual",),
        }[kind]
        self.only_keys(mapping, allowed, where, "field", f" in a {kind.value} trigger")
        channel = self.channel(mapping, "channel", where) if "channel" in mapping else None
        if kind is TriggerKind.MANUAL:
            return FlowTrigger(kind)
        if kind is TriggerKind.CONSENT:
            state = self.choice(mapping["consent"], [s.value for s in State], "consent state",
                                mapping.line_of("consent"), where)
            return FlowTrigger(kind, state, channel) if state else None
        name = self.text(mapping, kind.value, where)
        if name is None:
            return None
        if kind is TriggerKind.KEYWORD:
            meaning = _RESERVED_MEANINGS.get(KeywordTable.default().classify(name).intent)
            if meaning is not None:
                self.error(
                    mapping.line_of("keyword"), where,
                    f"keyword '{name}' is reserved: every inbound message like it is {meaning}, so a "
                    "flow cannot start on it",
                )
                return None
            return FlowTrigger(kind, " ".join(name.split()).casefold(), channel)
        when: dict[str, Scalar] = {}
        if "when" in mapping:
            checked = self.equalities(mapping["when"], mapping.line_of("when"), where, "'when'")
            if checked is None:
                return None
            when = checked
        return FlowTrigger(kind, name, None, equalities(when))

    def exit_conditions(self, doc: _Map) -> tuple[ExitCondition, ...] | None:
        if "exit_when" not in doc:
            return ()
        items = doc["exit_when"]
        if not isinstance(items, _Seq):
            found = _type_name(items)
            self.error(doc.line_of("exit_when"), None, f"'exit_when' must be a list, found {found}")
            return None
        results = [self.exit_condition(item, line, f"exit_when[{i}]")
                   for i, (item, line) in enumerate(zip(items, items.item_lines, strict=True))]
        exits = tuple(result for result in results if result is not None)
        return exits if len(exits) == len(results) else None

    def exit_condition(self, item: Any, line: int, where: str) -> ExitCondition | None:
        kinds = [k.value for k in ExitKind]
        if item == ExitKind.REPLIED.value:
            return ExitCondition(ExitKind.REPLIED)
        if isinstance(item, str):
            self.error(line, where, f"unknown exit condition '{item}'{_hint(item, kinds)}")
            return None
        mapping = self.mapping(item, line, where, "an exit condition")
        if mapping is None:
            return None
        if "event" in mapping:
            self.only_keys(mapping, ("event", "when"), where, "field", " in an event exit")
            name = self.text(mapping, "event", where)
            when = (self.equalities(mapping["when"], mapping.line_of("when"), where, "'when'")
                    if "when" in mapping else {})
            if name is None or when is None:
                return None
            return ExitCondition(ExitKind.EVENT, name, None, equalities(when))
        if "consent" in mapping:
            self.only_keys(mapping, ("consent", "channel"), where, "field", " in a consent exit")
            state = self.choice(mapping["consent"], [s.value for s in State], "consent state",
                                mapping.line_of("consent"), where)
            channel = self.channel(mapping, "channel", where) if "channel" in mapping else None
            if state is None or ("channel" in mapping and channel is None):
                return None
            return ExitCondition(ExitKind.CONSENT, state, channel)
        first = str(next(iter(mapping), ""))
        self.error(mapping.line_of(first), where, f"unknown exit condition '{first}'{_hint(first, kinds)}")
        return None

    # --- steps

    def steps(self, doc: _Map) -> tuple[Step, ...] | None:
        if "steps" not in doc:
            self.error(doc.line, None, "missing 'steps'")
            return None
        items = doc["steps"]
        if not isinstance(items, _Seq) or not items:
            found = "an empty list" if isinstance(items, list) else _type_name(items)
            self.error(doc.line_of("steps"), None, f"'steps' must list at least one step, found {found}")
            return None
        steps = self.block(items, "steps")
        self.check_reachability(steps, {})
        return steps

    def block(self, items: _Seq, path: str) -> tuple[Step, ...]:
        """The steps that parsed; the others have reported their errors. Leaving a broken step out
        can only hide reachability findings, never invent one."""
        steps = [self.step(item, line, f"{path}[{i}]")
                 for i, (item, line) in enumerate(zip(items, items.item_lines, strict=True))]
        return tuple(step for step in steps if step is not None)

    def step(self, item: Any, line: int, path: str) -> Step | None:
        if not isinstance(item, _Map):
            self.error(
                line, path,
                f"a step is written 'type: settings', such as 'wait: 2d'; found {_type_name(item)}",
            )
            return None
        label = path
        if "id" in item:
            step_id = self.text(item, "id", path)
            if step_id is None:
                return None
            if step_id in self.step_ids:
                self.error(item.line_of("id"), path,
                           f"step id '{step_id}' is already used by {self.step_ids[step_id]}")
                return None
            self.step_ids[step_id] = path
            label = step_id
        kinds = [key for key in item if key in STEP_TYPES]
        others = [str(key) for key in item if key not in (*STEP_TYPES, "id", "then", "else")]
        if len(kinds) > 1:
            self.error(item.line, label, f"a step does one thing; found {_quoted(kinds)} "
                                         "(start each with its own '- ')")
            return None
        if not kinds:
            for key in others:
                self.error(item.line_of(key), label, f"unknown step type '{key}'{_hint(key, STEP_TYPES)}")
            if not others:
                self.error(item.line, label, f"this step has no action (expected {_one_of(STEP_TYPES)})")
            return None
        kind = kinds[0]
        where = f"{label} ({kind})"
        for key in others:
            self.error(item.line_of(key), where, f"'{key}' is not a step type; if it is a setting of "
                                                 f"'{kind}', indent it under '{kind}'")
        if kind != "if":
            for key in ("then", "else"):
                if key in item:
                    self.error(item.line_of(key), where, f"'{key}' only goes with 'if'")
        errors_before = len(self.errors)
        body, body_line = item[kind], item.line_of(kind)
        parsers: Mapping[str, Callable[..., Step | None]] = {
            "wait": self.wait, "send": self.send, "request_opt_in": self.request_opt_in,
            "reauthorize_request": self.reauthorize_request, "opt_out": self.opt_out,
            "set_dnd": self.set_dnd, "remove_from_flows": self.remove_from_flows,
            "webhook": self.webhook,
        }
        if kind == "if":
            step: Step | None = self.if_step(item, body, body_line, where, path, label)
        else:
            step = parsers[kind](body, body_line, where, label)
        return step if len(self.errors) == errors_before else None

    def settings(self, body: Any, line: int, where: str, kind: str, fields: Sequence[str]) -> _Map | None:
        """The mapping of a step's (or sub-setting's) fields. A field missing from it is reported on
        `line`, the line that introduces the settings, rather than on the first field present."""
        if not isinstance(body, _Map):
            self.error(line, where, f"'{kind}' takes settings as a mapping ({', '.join(fields)}); "
                                    f"found {_type_name(body)}")
            return None
        self.only_keys(body, fields, where, "field", f" in '{kind}'")
        body.line = line
        return body

    def wait(self, body: Any, line: int, where: str, label: str) -> WaitFor | WaitUntil | None:
        if isinstance(body, _Map):
            settings = self.settings(body, line, where, "wait", ("until",))
            if settings is None or "until" not in settings:
                self.error(line, where, "missing 'until' (or write a duration such as 'wait: 2d')")
                return None
            until = self.settings(settings["until"], settings.line_of("until"), where, "until",
                                  ("weekday", "time"))
            return self.wait_until(until, label, line) if until is not None else None
        duration = _duration(body)
        if duration is None:
            self.error(line, where, f"cannot read {_type_name(body)} as a duration: write a number and a "
                                    "unit (30m, 2h, 3d, 1w) or ISO 8601 such as P3D or PT12H")
            return None
        if not duration:
            self.error(line, where, "a wait must be longer than zero")
            return None
        return WaitFor(duration, step_label=label, line=line)

    def wait_until(self, until: _Map, label: str, line: int) -> WaitUntil | None:
        where = f"{label} (wait)"
        weekday = None
        if "weekday" in until:
            value = until["weekday"]
            day = self.choice(value.lower() if isinstance(value, str) else value, WEEKDAYS, "weekday",
                              until.line_of("weekday"), where)
            weekday = WEEKDAYS.index(day) if day else None
        clock = self.text(until, "time", where)
        match = _CLOCK.match(clock) if clock is not None else None
        if clock is not None and match is None:
            self.error(until.line_of("time"), where,
                       f"bad time '{clock}': write 24-hour local time in quotes, such as \"09:30\"")
        if match is None or ("weekday" in until and weekday is None):
            return None
        return WaitUntil(weekday, time(int(match[1]), int(match[2])), step_label=label, line=line)

    def send(self, body: Any, line: int, where: str, label: str) -> Send | None:
        settings = self.settings(body, line, where, "send", ("channel", "template", "purpose", "subject"))
        if settings is None:
            return None
        channel = self.channel(settings, "channel", where)
        template = self.text(settings, "template", where)
        subject = self.text(settings, "subject", where, required=False)
        purpose = self.default_purpose
        if "purpose" in settings:
            chosen = self.choice(settings["purpose"], FLOW_PURPOSES, "purpose", settings.line_of("purpose"),
                                 where)
            purpose = Purpose(chosen) if chosen else purpose
        if template is not None:
            self.check_template(template, settings.line_of("template"), where)
        if channel is Channel.EMAIL and "subject" not in settings:
            self.error(settings.line, where, "an email needs a 'subject'")
        if channel not in (Channel.EMAIL, None) and "subject" in settings:
            self.error(settings.line_of("subject"), where, "'subject' is only for email")
        if channel is Channel.CALL and purpose is Purpose.MARKETING:
            self.error(
                settings.line_of("channel"), where,
                "flows cannot place marketing calls: an automated marketing call needs the contact's "
                "prior express written consent, which optflow does not record; use purpose: "
                "transactional for a service call, or another channel",
            )
        if channel is None or template is None:
            return None
        return Send(channel, template, purpose, subject, step_label=label, line=line)

    def check_template(self, template: str, line: int, where: str) -> None:
        if template not in self.known_templates:
            hint = _hint(template, sorted(self.known_templates), list_choices=False)
            self.error(line, where, f"unknown template '{template}'{hint}")
        elif template.startswith("employee/"):
            self.error(
                line, where, f"template '{template}' is written for employees; a flow sends to the contact"
            )

    def request_opt_in(self, body: Any, line: int, where: str, label: str) -> RequestOptIn | None:
        settings = self.settings(body, line, where, "request_opt_in", ("channel",))
        channel = self.channel(settings, "channel", where) if settings is not None else None
        return RequestOptIn(channel, step_label=label, line=line) if channel else None

    def reauthorize_request(self, body: Any, line: int, where: str, label: str) -> ReauthorizeRequest | None:
        settings = self.settings(body, line, where, "reauthorize_request", ("channel",))
        channel = self.channel(settings, "channel", where) if settings is not None else None
        return ReauthorizeRequest(channel, step_label=label, line=line) if channel else None

    def channel_set(
        self, body: Any, line: int, where: str, kind: str
    ) -> tuple[bool, frozenset[Channel] | None]:
        """(ok, channels): channels None means every channel."""
        settings = self.settings(body, line, where, kind, ("channels",))
        if settings is None:
            return False, None
        if "channels" not in settings:
            self.error(settings.line, where, f"missing 'channels' ({_CHANNELS_HELP})")
            return False, None
        value, value_line = settings["channels"], settings.line_of("channels")
        if value == "all":
            return True, None
        listed = value if isinstance(value, _Seq) else [value]
        if not listed:
            self.error(value_line, where, f"'channels' lists no channel ({_CHANNELS_HELP})")
            return False, None
        channels = [self.channel_value(item, value_line, where) for item in listed]
        if None in channels:
            return False, None
        return True, frozenset(c for c in channels if c is not None)

    def opt_out(self, body: Any, line: int, where: str, label: str) -> OptOut | None:
        ok, channels = self.channel_set(body, line, where, "opt_out")
        return OptOut(channels, step_label=label, line=line) if ok else None

    def set_dnd(self, body: Any, line: int, where: str, label: str) -> SetDnd | None:
        ok, channels = self.channel_set(body, line, where, "set_dnd")
        return SetDnd(channels, step_label=label, line=line) if ok else None

    def remove_from_flows(self, body: Any, line: int, where: str, label: str) -> RemoveFromFlows | None:
        if body is None:
            return RemoveFromFlows(step_label=label, line=line)
        settings = self.settings(body, line, where, "remove_from_flows", ("except_this",))
        if settings is None:
            return None
        except_this = settings.get("except_this", False)
        if not isinstance(except_this, bool):
            self.error(settings.line_of("except_this"), where,
                       f"'except_this' must be true or false, found {_type_name(except_this)}")
            return None
        return RemoveFromFlows(except_this, step_label=label, line=line)

    def webhook(self, body: Any, line: int, where: str, label: str) -> Webhook | None:
        settings = self.settings(body, line, where, "webhook", ("url", "body"))
        if settings is None:
            return None
        url = self.text(settings, "url", where)
        if url is not None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                self.error(settings.line_of("url"), where,
                           f"webhook url '{url}' must be an http:// or https:// address with a host")
                url = None
        payload = settings.get("body", {})
        if not isinstance(payload, dict):
            self.error(settings.line_of("body"), where,
                       f"'body' must be a mapping (sent as a JSON object), found {_type_name(payload)}")
            return None
        return Webhook(url, _plain(payload), step_label=label, line=line) if url else None

    def if_step(self, item: _Map, body: Any, line: int, where: str, path: str, label: str) -> IfStep | None:
        condition = self.condition(body, line, where)
        branches: dict[str, tuple[Step, ...]] = {"then": (), "else": ()}
        for key in branches:
            value = item.get(key, ())
            if isinstance(value, _Seq):
                branches[key] = self.block(value, f"{path}.{key}")
            elif value != ():
                found = _type_name(value)
                self.error(item.line_of(key), where, f"'{key}' must be a list of steps, found {found}")
        if not item.get("then") and not item.get("else"):
            self.error(line, where, "an 'if' needs steps under 'then' or 'else'")
        if condition is None:
            return None
        return IfStep(condition, branches["then"], branches["else"], step_label=label, line=line)

    def condition(self, body: Any, line: int, where: str) -> Condition | None:
        kinds = ("consent", "contact", "event")
        mapping = self.mapping(body, line, where, "the condition of 'if'")
        if mapping is None:
            return None
        found = [key for key in mapping if key in kinds]
        self.only_keys(mapping, kinds, where, "condition")
        if len(found) != 1:
            if len(found) > 1:
                self.error(mapping.line, where, f"an 'if' tests one thing; found {_quoted(found)} "
                                                "(nest a second 'if' under 'then')")
            elif not mapping:
                self.error(line, where, f"the condition of 'if' is empty (expected {_one_of(kinds)})")
            return None
        kind = found[0]
        value, value_line = mapping[kind], mapping.line_of(kind)
        if kind != "consent":
            fields = self.equalities(value, value_line, where, f"'{kind}'")
            if fields is None:
                return None
            cls = ContactCondition if kind == "contact" else EventCondition
            return cls(equalities(fields))
        settings = self.settings(value, value_line, where, "consent", ("channel", "state"))
        if settings is None:
            return None
        channel = self.channel(settings, "channel", where)
        if "state" not in settings:
            self.error(settings.line, where, "missing 'state'")
            return None
        raw = settings["state"]
        listed = raw if isinstance(raw, _Seq) else [raw]
        if not listed:
            self.error(settings.line_of("state"), where, "'state' lists no state")
            return None
        states = [self.choice(s, [s.value for s in State], "consent state", settings.line_of("state"), where)
                  for s in listed]
        if channel is None or None in states:
            return None
        return ConsentCondition(channel, frozenset(State(s) for s in states if s))

    # --- reachability

    def check_reachability(
        self, block: Sequence[Step], blocked: dict[Channel, str]
    ) -> tuple[dict[Channel, str], str | None]:
        """Walk a block the way every run would: report a step after the flow has certainly ended,
        and a message on a channel the flow itself has certainly opted out or put on DND.

        `blocked` maps a channel to why it is closed. Returns the channels closed after the block
        and, when every path through it ends the flow, why.
        """
        ended: str | None = None
        for step in block:
            if ended is not None:
                self.error(step.line, _where(step), f"unreachable: {ended}")
                break
            if isinstance(step, IfStep):
                after_then, then_ended = self.check_reachability(step.then, dict(blocked))
                after_else, else_ended = self.check_reachability(step.otherwise, dict(blocked))
                if then_ended and else_ended:
                    ended = f"every branch of {_where(step)} ends the flow"
                elif then_ended or else_ended:
                    blocked = after_else if then_ended else after_then
                else:
                    blocked = {c: why for c, why in after_then.items() if c in after_else}
                continue
            channel = channel_of(step)
            if channel is not None and channel in blocked:
                self.error(step.line, _where(step),
                           f"unreachable in effect: {blocked[channel]}, so this {_message_kind(step)} "
                           "could never go out")
            if isinstance(step, OptOut | SetDnd):
                closed = "opted out" if isinstance(step, OptOut) else "put on do-not-disturb"
                for closed_channel in step.channels or Channel:
                    blocked.setdefault(closed_channel, f"{closed_channel} was {closed} at {_where(step)}")
            if ends_enrolment(step):
                ended = f"the flow has ended at {_where(step)}"
        return blocked, ended


def _duration(value: Any) -> timedelta | None:
    if not isinstance(value, str):
        return None
    short = _DURATION.match(value.strip())
    if short:
        return int(short[1]) * _UNIT[short[2]]
    iso = _ISO_DURATION.match(value.strip())
    if not iso or value.strip() in ("P", "PT") or value.strip().endswith("T"):
        return None
    weeks, days, hours, minutes, seconds = (int(part or 0) for part in iso.groups())
    return timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes, seconds=seconds)


# ------------------------------------------------------------------------------------- loading


def _check_text(
    text: str, file: str, known_templates: Collection[str]
) -> tuple[Flow | None, list[FlowError], int | None]:
    """Everything load_flow_text finds, plus the line of the flow's name (for duplicate names)."""
    checker = _FileChecker(file, known_templates)
    loader = _FlowYamlLoader(text)
    try:
        doc = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context
        checker.error(line, None, f"YAML syntax error: {problem} (check the indentation and quoting "
                                  "on this line and the one above)")
        return None, checker.errors, None
    finally:
        loader.dispose()
    if doc is None:
        checker.error(None, None, "the file is empty")
        return None, checker.errors, None
    for line, key in loader.duplicate_keys:
        checker.error(line, None, f"duplicate key '{key}' (YAML would silently keep only the last one)")
    version = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    flow, name_line = checker.flow(doc, version)
    errors = sorted(checker.errors, key=lambda error: error.line or 0)
    return flow, errors, name_line


def load_flow_text(text: str, file: str, known_templates: Collection[str]) -> Flow:
    """Parse and validate one flow. Raises FlowValidationError listing every problem in it."""
    flow, errors, _ = _check_text(text, file, known_templates)
    if errors or flow is None:
        raise FlowValidationError(errors)
    return flow


def content_templates(flows_dir: Path) -> dict[str, Path]:
    """The drip content templates shipped beside the flows: `templates/welcome_1.j2` is
    `welcome_1`, `templates/promo/spring.j2` is `promo/spring`."""
    root = flows_dir / CONTENT_TEMPLATE_DIR
    if not root.is_dir():
        return {}
    return {
        path.relative_to(root).with_suffix("").as_posix(): path
        for path in sorted(root.rglob(f"*{CONTENT_TEMPLATE_SUFFIX}"))
    }


def _flow_files(path: Path) -> tuple[list[Path], Path]:
    if path.is_dir():
        files = sorted({file for pattern in FLOW_FILE_PATTERNS for file in path.glob(pattern)})
        return files, path
    return [path], path.parent


def load_flows(path: Path, known_templates: Collection[str]) -> dict[str, Flow]:
    """Load a directory of flows (its `*.yaml`/`*.yml`) or a single file, by flow name.

    Templates are `known_templates` plus the content templates under `<flows dir>/templates/`.
    Raises FlowValidationError with every file's errors; two flows with one name are an error.
    """
    if not path.exists():
        raise FlowValidationError([FlowError(str(path), None, None, "no such file or directory")])
    files, flows_dir = _flow_files(path)
    known = frozenset(known_templates) | content_templates(flows_dir).keys()
    flows: dict[str, Flow] = {}
    errors: list[FlowError] = []
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            errors.append(FlowError(str(file), None, None, "the file is not UTF-8 text"))
            continue
        flow, file_errors, name_line = _check_text(text, str(file), known)
        errors.extend(file_errors)
        if flow is None:
            continue
        if flow.name in flows:
            first = flows[flow.name].source_file
            errors.append(
                FlowError(str(file), name_line, None, f"flow name '{flow.name}' is already used by {first}")
            )
            continue
        flows[flow.name] = flow
    if errors:
        raise FlowValidationError(errors)
    return flows


def validate_path(path: Path, known_templates: Collection[str]) -> list[FlowError]:
    """Every problem in a directory of flows or one flow file; an empty list when all is well."""
    try:
        load_flows(path, known_templates)
    except FlowValidationError as exc:
        return exc.errors
    return []


class FlowDirectory:
    """The flows of one directory on disk, and the content templates beside them (`None`, or a
    path that is no directory: no flows). The flow engine's `FlowSource`."""

    def __init__(self, path: Path | None) -> None:
        self.path = path if path is not None and path.is_dir() else None
        self._content = content_templates(self.path) if self.path is not None else {}
        self._environment = _ContentEnvironment(undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                                                autoescape=False)
        self._compiled: dict[str, Template] = {}

    def known_templates(self) -> set[str]:
        """The names a flow may render: the packaged templates and the content templates here."""
        return set(TEMPLATE_NAMES) | set(self._content)

    def load_all(self) -> dict[str, Flow]:
        """Every flow of the directory, or `FlowValidationError` naming each problem: the server
        refuses to start on an invalid flow rather than run half of them."""
        return load_flows(self.path, TEMPLATE_NAMES) if self.path is not None else {}

    def load_text(self, text: str, file: str) -> Flow:
        return load_flow_text(text, file, self.known_templates())

    def source_of(self, flow: Flow) -> str:
        path = Path(flow.source_file)
        return path.read_text(encoding="utf-8") if path.is_file() else ""

    def render_content(self, name: str, variables: Mapping[str, object]) -> str | None:
        """A content template rendered in the flows' sandbox (None: no such template); compiled
        on first use and kept."""
        template = self._compiled.get(name)
        if template is None:
            path = self._content.get(name)
            if path is None:
                return None
            template = self._compiled[name] = self._environment.from_string(path.read_text(encoding="utf-8"))
        return str(template.render(**variables)).strip()


class _ContentEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox of the flows' content templates, whose templates see the globals as one dict.

    Jinja chains a template's globals onto the environment's (a `ChainMap`) and flattens that
    chain twice per render, which is half the cost of rendering a short text. Nothing changes
    these globals after the templates are built, so a flat copy renders the same text."""

    def make_globals(self, d: MutableMapping[str, Any] | None) -> MutableMapping[str, Any]:
        return {**self.globals, **(d or {})}
