"""The flow loader: the shipped flows, every kind of broken flow (file, line, step, wording), the
YAML dialect, and the examples in docs/flows.md."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import shutil
from datetime import time, timedelta
from pathlib import Path

import pytest
from jinja2 import Environment, meta

from optflow.adapters.flow_loader import (
    FlowError,
    FlowValidationError,
    content_templates,
    load_flow_text,
    load_flows,
    validate_path,
)
from optflow.adapters.templates import COMMON_VARIABLES
from optflow.domain.flows import (
    ConsentCondition,
    ExitCondition,
    ExitKind,
    Flow,
    FlowTrigger,
    Instruction,
    Jump,
    JumpUnless,
    OptOut,
    RemoveFromFlows,
    RequestOptIn,
    Send,
    SetDnd,
    TriggerKind,
    WaitFor,
    WaitUntil,
    Webhook,
    trigger_matches,
)
from optflow.domain.model import Channel, Purpose, State

ROOT = Path(__file__).resolve().parents[2]
FLOWS = ROOT / "flows"
BROKEN = Path("tests/fixtures/broken_flows")  # relative, so messages read as a person sees them
KNOWN = frozenset({"welcome_1", "welcome_2", "welcome_email", "customer/help", "employee/contact_opted_in"})


@pytest.fixture
def in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


def unlocated(program: tuple[Instruction, ...]) -> list[Instruction]:
    return [dataclasses.replace(instruction, step_label="", line=None) for instruction in program]


def load(body: str, known: frozenset[str] = KNOWN) -> Flow:
    return load_flow_text(body, "flows/test.yaml", known)


def errors_of(body: str) -> list[str]:
    with pytest.raises(FlowValidationError) as caught:
        load(body)
    return [str(error) for error in caught.value.errors]


HEADER = "name: test\ntrigger: {event: lead.created}\n"


# ------------------------------------------------------------------------------- shipped flows


def test_the_shipped_flows_load_with_only_their_own_content_templates() -> None:
    flows = load_flows(FLOWS, known_templates=())
    assert sorted(flows) == ["discontinued", "payment_plan_opt_in", "reauth_reminder", "welcome_drip"]
    for name, flow in flows.items():
        source = FLOWS / f"{name}.yaml"
        assert flow.source_file == str(source)
        assert flow.version == hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    assert validate_path(FLOWS, ()) == []


def test_welcome_drip() -> None:
    flow = load_flows(FLOWS, ())["welcome_drip"]
    assert flow.trigger == FlowTrigger(TriggerKind.EVENT, "lead.created")
    assert (flow.purpose, flow.reenroll) == (Purpose.MARKETING, "never")
    assert flow.exit_when == (ExitCondition(ExitKind.REPLIED), ExitCondition(ExitKind.EVENT, "deal.won"))
    assert flow.channels == {Channel.TEXT, Channel.EMAIL}
    may_ask = ConsentCondition(Channel.TEXT, frozenset({State.UNKNOWN, State.REQUESTED}))
    opted_in = ConsentCondition(Channel.TEXT, frozenset({State.OPTED_IN}))
    assert unlocated(flow.program) == [
        JumpUnless(may_ask, 2),
        RequestOptIn(Channel.TEXT),
        WaitFor(timedelta(days=1)),
        JumpUnless(opted_in, 7),
        Send(Channel.TEXT, "welcome_1", Purpose.MARKETING),
        WaitFor(timedelta(days=2)),
        Send(Channel.TEXT, "welcome_2", Purpose.MARKETING),
        WaitUntil(1, time(10, 0)),
        Send(Channel.EMAIL, "welcome_email", Purpose.MARKETING, "Welcome, and what happens next"),
    ]
    assert [(i.step_label, i.line) for i in flow.program][:2] == [
        ("ask_for_text_consent", 14),
        ("steps[0].then[0]", 16),
    ]


def test_payment_plan_opt_in_asks_again_only_if_still_not_opted_in() -> None:
    flow = load_flows(FLOWS, ())["payment_plan_opt_in"]
    not_settled = ConsentCondition(
        Channel.TEXT, frozenset({State.UNKNOWN, State.REQUESTED, State.REAUTH_DUE})
    )
    opted_in = ConsentCondition(Channel.TEXT, frozenset({State.OPTED_IN}))
    assert unlocated(flow.program) == [
        JumpUnless(not_settled, 6),
        RequestOptIn(Channel.TEXT),
        WaitFor(timedelta(days=2)),
        JumpUnless(opted_in, 5),
        Jump(6),
        RequestOptIn(Channel.TEXT),
    ]
    assert flow.program[5].step_label == "reminder"
    assert flow.purpose is Purpose.TRANSACTIONAL


def test_reauth_reminder_starts_on_text_reauth_due() -> None:
    flow = load_flows(FLOWS, ())["reauth_reminder"]
    assert trigger_matches(flow, "consent", "reauth_due", {"channel": "text"})
    assert not trigger_matches(flow, "consent", "reauth_due", {"channel": "email"})
    assert flow.exit_when == (ExitCondition(ExitKind.CONSENT, "opted_in", Channel.TEXT),)
    assert [type(i).__name__ for i in flow.program] == [
        "ReauthorizeRequest", "WaitFor", "JumpUnless", "ReauthorizeRequest",
    ]


def test_discontinued_opts_out_sets_dnd_and_removes_from_flows_on_that_stage_only() -> None:
    flow = load_flows(FLOWS, ())["discontinued"]
    assert unlocated(flow.program) == [OptOut(None), SetDnd(None), RemoveFromFlows()]
    assert trigger_matches(flow, "event", "pipeline.stage_changed", {"stage": "discontinued", "from": "won"})
    assert not trigger_matches(flow, "event", "pipeline.stage_changed", {"stage": "won"})


def test_the_shipped_content_templates_use_only_variables_every_message_has() -> None:
    templates = content_templates(FLOWS)
    assert set(templates) == {"welcome_1", "welcome_2", "welcome_email"}
    for name, path in templates.items():
        used = meta.find_undeclared_variables(Environment().parse(path.read_text(encoding="utf-8")))
        assert used <= COMMON_VARIABLES, name


# --------------------------------------------------------------------------------- broken flows

EXPECTED: dict[str, list[str]] = {
    "bad_channels.yaml": [
        "{file}:4: steps[0] (opt_out): 'channels' lists no channel "
        "(write 'all' or a list such as [text, email])",
        "{file}:5: steps[1] (set_dnd): unknown channel 'fax' (expected text, call, email, whatsapp or chat)",
    ],
    "bad_condition.yaml": [
        "{file}:5: steps[0] (if): missing 'state'",
        "{file}:9: steps[1] (if): an 'if' tests one thing; found 'contact' and 'event' "
        "(nest a second 'if' under 'then')",
    ],
    "bad_duration.yaml": [
        "{file}:4: steps[0] (wait): cannot read '2 days' as a duration: write a number and a unit "
        "(30m, 2h, 3d, 1w) or ISO 8601 such as P3D or PT12H",
    ],
    "bad_name.yaml": [
        "{file}:1: name 'Welcome Drip' may only use lowercase letters, digits, '_' and '-', at most 100 of "
        "them (such as 'welcome_drip')",
    ],
    "bad_remove_from_flows.yaml": [
        "{file}:4: steps[0] (remove_from_flows): 'except_this' must be true or false, found 'yes'",
    ],
    "bad_wait_until.yaml": [
        "{file}:6: steps[0] (wait): unknown weekday 'mondey' (did you mean 'monday'?)",
        "{file}:7: steps[0] (wait): bad time '25:00': write 24-hour local time in quotes, such as \"09:30\"",
    ],
    "bad_webhook_body.yaml": [
        "{file}:6: steps[0] (webhook): 'body' must be a mapping (sent as a JSON object), found a list",
    ],
    "bad_webhook_url.yaml": [
        "{file}:5: steps[0] (webhook): webhook url 'ftp://crm.example.com/hooks' must be an http:// or "
        "https:// address with a host",
    ],
    "bad_when.yaml": [
        "{file}:5: trigger: 'stage' in 'when' must be a single value to compare with, found a list",
    ],
    "duplicate_key.yaml": [
        "{file}:5: duplicate key 'wait' (YAML would silently keep only the last one)",
    ],
    "duplicate_step_id.yaml": [
        "{file}:6: steps[1]: step id 'first' is already used by steps[0]",
    ],
    "employee_template.yaml": [
        "{file}:4: steps[0] (send): template 'employee/contact_opted_in' is written for employees; "
        "a flow sends to the contact",
    ],
    "empty.yaml": [
        "{file}: the file is empty",
    ],
    "empty_steps.yaml": [
        "{file}:3: 'steps' must list at least one step, found an empty list",
    ],
    "if_without_branches.yaml": [
        "{file}:4: steps[0] (if): an 'if' needs steps under 'then' or 'else'",
    ],
    "marketing_call.yaml": [
        "{file}:5: steps[0] (send): flows cannot place marketing calls: an automated marketing call needs "
        "the contact's prior express written consent, which optflow does not record; use purpose: "
        "transactional for a service call, or another channel",
    ],
    "misindented_settings.yaml": [
        "{file}:4: steps[0] (send): 'send' takes settings as a mapping (channel, template, purpose, "
        "subject); found nothing",
        "{file}:5: steps[0] (send): 'channel' is not a step type; if it is a setting of 'send', indent it "
        "under 'send'",
        "{file}:6: steps[0] (send): 'template' is not a step type; if it is a setting of 'send', indent it "
        "under 'send'",
    ],
    "missing_step_field.yaml": [
        "{file}:5: steps[1] (send): missing 'template'",
    ],
    "missing_steps.yaml": [
        "{file}:1: missing 'steps'",
    ],
    "missing_subject.yaml": [
        "{file}:4: steps[0] (send): an email needs a 'subject'",
    ],
    "no_action.yaml": [
        "{file}:4: first_text: this step has no action (expected wait, send, request_opt_in, "
        "reauthorize_request, opt_out, set_dnd, remove_from_flows, webhook or if)",
    ],
    "not_a_mapping.yaml": [
        "{file}:1: a flow file holds one mapping (name, trigger, steps, ...); found a list",
    ],
    "not_utf8.yaml": [
        "{file}: the file is not UTF-8 text",
    ],
    "reserved_keyword.yaml": [
        "{file}:3: trigger: keyword 'STOP' is reserved: every inbound message like it is an opt-out, so a "
        "flow cannot start on it",
    ],
    "several_errors.yaml": [
        "{file}:4: unknown purpose 'promo' (expected marketing or transactional)",
        "{file}:6: steps[0] (wait): cannot read 'soon' as a duration: write a number and a unit "
        "(30m, 2h, 3d, 1w) or ISO 8601 such as P3D or PT12H",
        "{file}:7: steps[1] (send): unknown channel 'sms' (did you mean 'text'?)",
        "{file}:7: steps[1] (send): unknown template 'welcom_1' (did you mean 'welcome_1'?)",
        "{file}:10: steps[2].then[0] (webhook): webhook url 'mailto:team@example.com' must be an http:// "
        "or https:// address with a host",
    ],
    "step_not_mapping.yaml": [
        "{file}:4: steps[0]: a step is written 'type: settings', such as 'wait: 2d'; found 'wait 2d'",
    ],
    "subject_not_email.yaml": [
        "{file}:7: steps[0] (send): 'subject' is only for email",
    ],
    "then_without_if.yaml": [
        "{file}:5: steps[0] (wait): 'then' only goes with 'if'",
    ],
    "trigger_field.yaml": [
        "{file}:4: trigger: unknown field 'when' in a keyword trigger (expected keyword or channel)",
    ],
    "two_actions.yaml": [
        "{file}:4: steps[0]: a step does one thing; found 'send' and 'wait' (start each with its own '- ')",
    ],
    "two_trigger_kinds.yaml": [
        "{file}:3: trigger: a trigger has one kind; found 'event' and 'keyword'",
    ],
    "unknown_channel.yaml": [
        "{file}:5: steps[0] (send): unknown channel 'sms' (did you mean 'text'?)",
    ],
    "unknown_consent_state.yaml": [
        "{file}:3: trigger: unknown consent state 'opted-in' (did you mean 'opted_in'?)",
    ],
    "unknown_exit.yaml": [
        "{file}:4: exit_when[0]: unknown exit condition 'contact_replies' (did you mean 'contact_replied'?)",
    ],
    "unknown_purpose.yaml": [
        "{file}:3: unknown purpose 'promotional' (expected marketing or transactional)",
    ],
    "unknown_reenroll.yaml": [
        "{file}:3: unknown reenroll policy 'once' (expected never, after_exit or always)",
    ],
    "unknown_setting.yaml": [
        "{file}:3: unknown setting 'exit_whan' (did you mean 'exit_when'?)",
    ],
    "unknown_step_field.yaml": [
        "{file}:4: steps[0] (send): missing 'template'",
        "{file}:6: steps[0] (send): unknown field 'templat' in 'send' (did you mean 'template'?)",
    ],
    "unknown_step_type.yaml": [
        "{file}:5: steps[1]: unknown step type 'sned' (did you mean 'send'?)",
    ],
    "unknown_template.yaml": [
        "{file}:5: steps[1] (send): unknown template 'welcom_1' (did you mean 'welcome_1'?)",
    ],
    "unknown_trigger.yaml": [
        "{file}:3: trigger: unknown trigger 'evnt' (did you mean 'event'?)",
    ],
    "unreachable_after_branches.yaml": [
        "{file}:10: steps[1] (send): unreachable: every branch of steps[0] (if) ends the flow",
    ],
    "unreachable_after_dnd.yaml": [
        "{file}:9: steps[1] (request_opt_in): unreachable in effect: text was put on do-not-disturb at "
        "steps[0].then[0] (set_dnd), so this opt-in request could never go out",
    ],
    "unreachable_after_end.yaml": [
        "{file}:5: steps[1] (wait): unreachable: the flow has ended at steps[0] (remove_from_flows)",
    ],
    "unreachable_after_opt_out.yaml": [
        "{file}:7: steps[2] (send): unreachable in effect: text was opted out at opt_out_everywhere "
        "(opt_out), so this message could never go out",
    ],
    "wrong_type.yaml": [
        "{file}:2: 'description' must be text, found a list",
    ],
    "yaml_syntax.yaml": [
        "{file}:5: YAML syntax error: expected <block end>, but found '<block sequence start>' "
        "(check the indentation and quoting on this line and the one above)",
    ],
    "zero_wait.yaml": [
        "{file}:4: steps[0] (wait): a wait must be longer than zero",
    ],
}


def expected_for(name: str) -> list[str]:
    return [message.format(file=BROKEN / name) for message in EXPECTED[name]]


def test_every_broken_fixture_has_its_expected_messages_and_every_expectation_a_fixture() -> None:
    assert sorted(path.name for path in (ROOT / BROKEN).glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.usefixtures("in_repo")
def test_broken_flow_is_reported_with_file_line_and_step(name: str) -> None:
    errors = validate_path(BROKEN / name, KNOWN)
    assert [str(error) for error in errors] == expected_for(name)
    with pytest.raises(FlowValidationError) as caught:
        load_flows(BROKEN / name, KNOWN)
    assert caught.value.errors == errors


@pytest.mark.usefixtures("in_repo")
def test_loading_a_directory_reports_every_files_errors_at_once() -> None:
    with pytest.raises(FlowValidationError) as caught:
        load_flows(BROKEN, KNOWN)
    assert [str(error) for error in caught.value.errors] == [
        message for name in sorted(EXPECTED) for message in expected_for(name)
    ]
    assert str(caught.value).splitlines() == [str(error) for error in caught.value.errors]


@pytest.mark.usefixtures("in_repo")
def test_two_flows_with_one_name_are_an_error_naming_both_files() -> None:
    folder = BROKEN / "duplicate_names"
    assert [str(error) for error in validate_path(folder, KNOWN)] == [
        f"{folder / 'second.yaml'}:2: flow name 'same_name' is already used by {folder / 'first.yaml'}"
    ]


def test_error_structure_and_wording_without_line_or_step() -> None:
    error = FlowError("flows/x.yaml", 12, "steps[3] (send)", "unknown template 'welcom_1'")
    assert str(error) == "flows/x.yaml:12: steps[3] (send): unknown template 'welcom_1'"
    no_line = FlowError("flows/x.yaml", None, None, "the file is empty")
    assert str(no_line) == "flows/x.yaml: the file is empty"
    assert str(FlowError("flows/x.yaml", 3, None, "missing 'steps'")) == "flows/x.yaml:3: missing 'steps'"


def test_a_missing_path_is_an_error() -> None:
    assert [str(e) for e in validate_path(ROOT / "no_such_flows", KNOWN)] == [
        f"{ROOT / 'no_such_flows'}: no such file or directory"
    ]


# ---------------------------------------------------------------------------------- the language


@pytest.mark.parametrize(
    ("written", "duration"),
    [
        ("30m", timedelta(minutes=30)),
        ("2h", timedelta(hours=2)),
        ("3d", timedelta(days=3)),
        ("1w", timedelta(weeks=1)),
        ("P3D", timedelta(days=3)),
        ("P2W", timedelta(weeks=2)),
        ("PT12H", timedelta(hours=12)),
        ("PT90M", timedelta(minutes=90)),
        ("P1DT12H", timedelta(days=1, hours=12)),
    ],
)
def test_durations(written: str, duration: timedelta) -> None:
    flow = load(HEADER + f"steps:\n  - wait: {written}\n")
    assert unlocated(flow.program) == [WaitFor(duration)]


@pytest.mark.parametrize(
    "written", ["2 days", "3", "1.5h", "-1d", "1y", "P", "PT", "P1DT", "P1M", "p3d", "'3D'"]
)
def test_unreadable_durations(written: str) -> None:
    messages = errors_of(HEADER + f"steps:\n  - wait: {written}\n")
    assert len(messages) == 1
    assert messages[0].startswith("flows/test.yaml:4: steps[0] (wait): cannot read ")


def test_wait_until_with_and_without_weekday() -> None:
    flow = load(
        HEADER
        + "steps:\n"
        + '  - wait: {until: {weekday: Friday, time: "17:30"}}\n'
        + "  - wait: {until: {time: 9:05}}\n"  # unquoted: still a time, never the base-60 number 545
    )
    assert unlocated(flow.program) == [WaitUntil(4, time(17, 30)), WaitUntil(None, time(9, 5))]


def test_yes_no_on_off_are_words_and_only_true_false_are_booleans() -> None:
    flow = load(
        "name: test\n"
        "trigger: {event: lead.created, when: {answer: yes, plan: on, code: 010, vip: true, score: 3}}\n"
        "steps:\n  - wait: 1d\n"
    )
    assert dict(flow.trigger.when) == {"answer": "yes", "plan": "on", "code": "010", "vip": True, "score": 3}
    keyword = load("name: test\ntrigger: {keyword: 'No'}\nsteps:\n  - wait: 1d\n")
    assert keyword.trigger == FlowTrigger(TriggerKind.KEYWORD, "no")


def test_defaults_and_explicit_settings() -> None:
    flow = load(HEADER + "steps:\n  - send: {channel: text, template: welcome_1}\n")
    assert (flow.description, flow.purpose, flow.reenroll) == ("", Purpose.MARKETING, "never")
    assert flow.exit_when == ()
    transactional = load(
        "name: test\ndescription: Reminders.\ntrigger: manual\npurpose: transactional\nreenroll: always\n"
        "steps:\n"
        "  - send: {channel: text, template: welcome_1}\n"
        "  - send: {channel: text, template: welcome_2, purpose: marketing}\n"
    )
    assert transactional.trigger == FlowTrigger(TriggerKind.MANUAL)
    assert [i.purpose for i in transactional.program if isinstance(i, Send)] == [
        Purpose.TRANSACTIONAL, Purpose.MARKETING,
    ]
    assert (transactional.description, transactional.reenroll) == ("Reminders.", "always")


def test_an_empty_trigger_says_which_kinds_exist() -> None:
    assert errors_of("name: test\ntrigger: {}\nsteps:\n  - wait: 1d\n") == [
        "flows/test.yaml:2: trigger: the trigger is empty (expected event, consent, keyword or manual)"
    ]


@pytest.mark.parametrize(
    ("keyword", "meaning"), [("Arrêt", "an opt-out"), ("unstop", "an opt-in"), ("info", "a request for help")]
)
def test_keyword_triggers_cannot_take_over_what_the_classifier_reads_as_consent_or_help(
    keyword: str, meaning: str
) -> None:
    assert errors_of(f"name: test\ntrigger: {{keyword: {keyword}}}\nsteps:\n  - wait: 1d\n") == [
        f"flows/test.yaml:2: trigger: keyword '{keyword}' is reserved: every inbound message like it is "
        f"{meaning}, so a flow cannot start on it"
    ]


def test_a_transactional_call_is_allowed() -> None:
    flow = load(HEADER + "purpose: transactional\nsteps:\n  - send: {channel: call, template: welcome_1}\n")
    assert flow.channels == {Channel.CALL}


def test_consent_and_exit_settings() -> None:
    flow = load(
        "name: test\ntrigger: {consent: opted_out, channel: email}\n"
        "exit_when:\n  - contact_replied\n  - {event: deal.won, when: {pipeline: sales}}\n"
        "  - {consent: opted_in}\n"
        "steps:\n  - webhook: {url: 'https://crm.example.com/hook'}\n"
    )
    assert flow.trigger == FlowTrigger(TriggerKind.CONSENT, "opted_out", Channel.EMAIL)
    assert flow.exit_when == (
        ExitCondition(ExitKind.REPLIED),
        ExitCondition(ExitKind.EVENT, "deal.won", when=(("pipeline", "sales"),)),
        ExitCondition(ExitKind.CONSENT, "opted_in"),
    )


def test_step_ids_become_labels_and_webhook_bodies_are_plain_json_data() -> None:
    flow = load(
        HEADER + "steps:\n"
        "  - id: tell_crm\n"
        "    webhook:\n"
        "      url: https://crm.example.com/hook\n"
        "      body: {status: new, tags: [lead, web], nested: {n: 1}}\n"
    )
    (hook,) = flow.program
    assert isinstance(hook, Webhook)
    assert (hook.step_label, hook.line) == ("tell_crm", 5)  # the line of the action
    assert hook.body == {"status": "new", "tags": ["lead", "web"], "nested": {"n": 1}}
    assert type(hook.body) is dict
    assert type(hook.body["tags"]) is list and type(hook.body["nested"]) is dict


def test_channel_lists_and_single_channels_for_opt_out_and_dnd() -> None:
    flow = load(
        HEADER + "steps:\n"
        "  - opt_out: {channels: [text, email]}\n"
        "  - set_dnd: {channels: call}\n"
        "  - remove_from_flows: {except_this: true}\n"
        "  - remove_from_flows:\n"
    )
    assert unlocated(flow.program) == [
        OptOut(frozenset({Channel.TEXT, Channel.EMAIL})),
        SetDnd(frozenset({Channel.CALL})),
        RemoveFromFlows(except_this=True),
        RemoveFromFlows(),
    ]


def test_a_send_on_a_channel_the_flow_did_not_close_is_fine_after_an_opt_out() -> None:
    flow = load(
        HEADER + "steps:\n"
        "  - opt_out: {channels: [text]}\n"
        "  - send: {channel: email, template: welcome_email, subject: Hi}\n"
    )
    assert flow.channels == {Channel.EMAIL}


def test_a_send_after_an_opt_out_in_only_one_branch_is_reachable() -> None:
    flow = load(
        HEADER + "steps:\n"
        "  - if: {contact: {unhappy: true}}\n"
        "    then:\n"
        "      - opt_out: {channels: all}\n"
        "  - send: {channel: text, template: welcome_1}\n"
    )
    assert flow.channels == {Channel.TEXT}


def test_after_an_if_whose_one_branch_ends_the_flow_only_the_other_branch_counts() -> None:
    assert errors_of(
        HEADER + "steps:\n"
        "  - if: {contact: {vip: true}}\n"
        "    then:\n"
        "      - remove_from_flows: {}\n"
        "    else:\n"
        "      - opt_out: {channels: [text]}\n"
        "  - send: {channel: text, template: welcome_1}\n"
    ) == [
        "flows/test.yaml:9: steps[1] (send): unreachable in effect: text was opted out at "
        "steps[0].else[0] (opt_out), so this message could never go out"
    ]


def test_yaml_anchors_and_merge_keys_work() -> None:
    flow = load(
        HEADER + "steps:\n"
        "  - send: &first {channel: text, template: welcome_1}\n"
        "  - send: {<<: *first, template: welcome_2}\n"
    )
    assert [i.template for i in flow.program if isinstance(i, Send)] == ["welcome_1", "welcome_2"]


def test_the_version_is_the_start_of_the_sha256_of_the_text() -> None:
    body = HEADER + "steps:\n  - wait: 1d\n"
    assert load(body).version == hashlib.sha256(body.encode()).hexdigest()[:16]
    assert load(body + "# a comment changes the version\n").version != load(body).version


# ------------------------------------------------------------------------- files and templates


def test_content_templates_are_named_by_their_path_under_templates(tmp_path: Path) -> None:
    (tmp_path / "templates" / "promo").mkdir(parents=True)
    (tmp_path / "templates" / "welcome_1.j2").write_text("Hi")
    (tmp_path / "templates" / "promo" / "spring.j2").write_text("Spring")
    (tmp_path / "templates" / "notes.txt").write_text("not a template")
    assert content_templates(tmp_path) == {
        "welcome_1": tmp_path / "templates" / "welcome_1.j2",
        "promo/spring": tmp_path / "templates" / "promo" / "spring.j2",
    }
    assert content_templates(tmp_path / "nowhere") == {}


def test_a_directory_loads_yaml_and_yml_files_with_its_own_templates(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "hello.j2").write_text("Hello")
    steps = "trigger: manual\nsteps:\n  - send: {channel: %s, template: %s}\n"
    (tmp_path / "a.yaml").write_text("name: a\n" + steps % ("text", "hello"))
    (tmp_path / "b.yml").write_text("name: b\n" + steps % ("chat", "help"))
    (tmp_path / "README.md").write_text("not a flow")
    assert sorted(load_flows(tmp_path, known_templates={"help"})) == ["a", "b"]
    assert list(load_flows(tmp_path / "a.yaml", known_templates=())) == ["a"]  # a file: templates beside it
    assert validate_path(tmp_path / "b.yml", ()) == [
        FlowError(str(tmp_path / "b.yml"), 4, "steps[0] (send)", "unknown template 'help'")
    ]


def test_copying_a_shipped_flow_under_a_new_name_keeps_it_valid(tmp_path: Path) -> None:
    shutil.copytree(FLOWS, tmp_path / "flows")
    copy = tmp_path / "flows" / "welcome_copy.yaml"
    original = (FLOWS / "welcome_drip.yaml").read_text()
    copy.write_text(original.replace("name: welcome_drip", "name: welcome_copy"))
    assert "welcome_copy" in load_flows(tmp_path / "flows", ())


# ----------------------------------------------------------------------------------------- docs


def docs_examples() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", (ROOT / "docs" / "flows.md").read_text(encoding="utf-8"), re.S)


def test_the_docs_have_yaml_examples() -> None:
    assert len(docs_examples()) >= 8


@pytest.mark.parametrize("index", range(len(docs_examples())))
def test_every_yaml_example_in_the_docs_loads(index: int) -> None:
    known = content_templates(FLOWS).keys()
    flow = load_flow_text(docs_examples()[index], f"docs/flows.md example {index}", known)
    assert flow.program
