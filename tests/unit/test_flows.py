"""The pure step logic of drip flows: compilation, reachability, conditions, waits, triggers."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from optflow.domain.flows import (
    ConsentCondition,
    ContactCondition,
    EventCondition,
    ExitCondition,
    ExitKind,
    Facts,
    Flow,
    FlowTrigger,
    IfStep,
    Jump,
    JumpUnless,
    OptOut,
    ReauthorizeRequest,
    Reenroll,
    RemoveFromFlows,
    RequestOptIn,
    Send,
    SetDnd,
    Step,
    TriggerKind,
    WaitFor,
    WaitUntil,
    Webhook,
    compile_program,
    evaluate,
    exit_matches,
    may_enroll,
    next_wait_until,
    only_sends_until_wait,
    plan_reads_conditions,
    plan_step,
    remaining_channels,
    trigger_matches,
)
from optflow.domain.model import Channel, InvalidInput, Purpose, State

NEW_YORK = "America/New_York"
TEXT_OPTED_IN = ConsentCondition(Channel.TEXT, frozenset({State.OPTED_IN}))
VIP = ContactCondition((("vip", True),))


def text(template: str) -> Send:
    return Send(Channel.TEXT, template, Purpose.MARKETING)


def email(template: str) -> Send:
    return Send(Channel.EMAIL, template, Purpose.MARKETING, "Hello")


LEAD_CREATED = FlowTrigger(TriggerKind.EVENT, "lead.created")


def make_flow(
    steps: list[Step],
    trigger: FlowTrigger = LEAD_CREATED,
    reenroll: str = Reenroll.NEVER,
    exit_when: tuple[ExitCondition, ...] = (),
) -> Flow:
    return Flow(
        name="test_flow",
        description="",
        trigger=trigger,
        purpose=Purpose.MARKETING,
        reenroll=reenroll,
        exit_when=exit_when,
        program=compile_program(steps),
    )


def facts(
    consents: dict[Channel, State] | None = None,
    contact: dict[str, object] | None = None,
    event: dict[str, object] | None = None,
    time_zone: str | None = None,
) -> Facts:
    return Facts(consents or {}, contact or {}, event or {}, time_zone)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# ------------------------------------------------------------------------------------ compiling


def test_if_then_else_compiles_to_a_conditional_jump_and_a_jump_over_the_else_block() -> None:
    program = compile_program(
        [IfStep(TEXT_OPTED_IN, then=(text("a"), text("b")), otherwise=(text("d"),)), text("e")]
    )
    assert program == (
        JumpUnless(TEXT_OPTED_IN, 4),
        text("a"),
        text("b"),
        Jump(5),
        text("d"),
        text("e"),
    )


def test_if_without_else_needs_no_jump_and_if_without_then_jumps_over_nothing() -> None:
    assert compile_program([IfStep(VIP, then=(text("a"),)), text("b")]) == (
        JumpUnless(VIP, 2),
        text("a"),
        text("b"),
    )
    assert compile_program([IfStep(VIP, otherwise=(text("a"),)), text("b")]) == (
        JumpUnless(VIP, 2),
        Jump(3),
        text("a"),
        text("b"),
    )


def test_nested_ifs_compile_with_targets_in_the_flat_program() -> None:
    inner = IfStep(VIP, then=(text("vip"),), otherwise=(text("regular"),))
    outer = IfStep(TEXT_OPTED_IN, then=(WaitFor(timedelta(days=1)), inner), otherwise=(email("mail"),))
    program = compile_program([outer, text("last")])
    assert program == (
        JumpUnless(TEXT_OPTED_IN, 7),  # 0
        WaitFor(timedelta(days=1)),  # 1
        JumpUnless(VIP, 5),  # 2
        text("vip"),  # 3
        Jump(6),  # 4
        text("regular"),  # 5
        Jump(8),  # 6: end of the outer then-block
        email("mail"),  # 7
        text("last"),  # 8
    )


def test_jumps_carry_the_label_and_line_of_their_if_step() -> None:
    step = IfStep(VIP, then=(text("a"),), otherwise=(text("b"),), step_label="check_vip", line=7)
    branch, _, skip, _ = compile_program([step])
    assert (branch.step_label, branch.line) == ("check_vip", 7)
    assert (skip.step_label, skip.line) == ("check_vip", 7)


@pytest.mark.parametrize("bad", [Jump(0), Jump(3), JumpUnless(VIP, 0)])
def test_a_flow_refuses_jumps_that_do_not_go_forward_within_the_program(bad: Jump | JumpUnless) -> None:
    with pytest.raises(InvalidInput, match="jumps must go forward"):
        Flow("f", "", FlowTrigger(TriggerKind.MANUAL), Purpose.MARKETING, "never", (), (bad, text("a")))


def test_a_flow_refuses_an_unknown_reenroll_policy() -> None:
    with pytest.raises(InvalidInput, match="unknown reenroll policy 'once'"):
        make_flow([text("a")], reenroll="once")


def test_flow_channels_are_every_channel_a_message_step_uses() -> None:
    flow = make_flow(
        [
            RequestOptIn(Channel.TEXT),
            IfStep(VIP, then=(email("a"),)),
            ReauthorizeRequest(Channel.WHATSAPP),
            OptOut(frozenset({Channel.CALL})),
            SetDnd(None),
            Webhook("https://crm.example.com/hook", {"a": 1}),
        ]
    )
    assert flow.channels == {Channel.TEXT, Channel.EMAIL, Channel.WHATSAPP}


def test_flows_are_hashable_even_with_a_nested_webhook_body() -> None:
    def flow() -> Flow:
        return make_flow([Webhook("https://crm.example.com/hook", {"nested": {"a": [1, 2]}})])

    assert len({flow(), flow()}) == 1


# --------------------------------------------------------------------------- remaining channels


def test_remaining_channels_follow_both_branches_and_shrink_as_the_flow_advances() -> None:
    flow = make_flow(
        [
            text("a"),  # 0
            WaitFor(timedelta(days=1)),  # 1
            IfStep(VIP, then=(email("b"),), otherwise=(Send(Channel.WHATSAPP, "c", Purpose.MARKETING),)),
            WaitFor(timedelta(days=1)),  # 6
            Webhook("https://crm.example.com/hook"),  # 7
        ]
    )
    assert remaining_channels(flow, 0) == {Channel.TEXT, Channel.EMAIL, Channel.WHATSAPP}
    assert remaining_channels(flow, 1) == {Channel.EMAIL, Channel.WHATSAPP}
    assert remaining_channels(flow, 3) == {Channel.EMAIL}  # inside the then-block
    assert remaining_channels(flow, 5) == {Channel.WHATSAPP}  # inside the else-block
    assert remaining_channels(flow, 6) == frozenset()
    assert remaining_channels(flow, len(flow.program)) == frozenset()


def test_remaining_channels_stop_where_remove_from_flows_ends_the_enrolment() -> None:
    ending = make_flow([IfStep(VIP, then=(RemoveFromFlows(),)), text("after")])
    assert remaining_channels(ending, 0) == {Channel.TEXT}  # the else path still texts
    assert remaining_channels(ending, 1) == frozenset()  # past the branch: the flow is over
    carrying_on = make_flow([RemoveFromFlows(except_this=True), text("after")])
    assert remaining_channels(carrying_on, 0) == {Channel.TEXT}


@pytest.mark.parametrize("pc", [-1, 2])
def test_remaining_channels_refuse_a_pc_outside_the_program(pc: int) -> None:
    with pytest.raises(InvalidInput, match="no step"):
        remaining_channels(make_flow([text("a")]), pc)


# -------------------------------------------------------------------------------------- evaluate


def test_consent_condition_reads_the_channel_state_and_a_missing_consent_is_unknown() -> None:
    not_yet = ConsentCondition(Channel.TEXT, frozenset({State.UNKNOWN, State.REQUESTED}))
    assert evaluate(TEXT_OPTED_IN, facts({Channel.TEXT: State.OPTED_IN}))
    assert not evaluate(TEXT_OPTED_IN, facts({Channel.TEXT: State.REAUTH_DUE, Channel.EMAIL: State.OPTED_IN}))
    assert evaluate(not_yet, facts({}))
    assert evaluate(not_yet, facts({Channel.TEXT: State.REQUESTED}))
    assert not evaluate(not_yet, facts({Channel.TEXT: State.OPTED_OUT}))


def test_contact_condition_needs_every_field_equal() -> None:
    spanish_vip = ContactCondition((("language", "es"), ("vip", True)))
    assert evaluate(spanish_vip, facts(contact={"vip": True, "language": "es", "name": "Ana"}))
    assert not evaluate(spanish_vip, facts(contact={"vip": True, "language": "en"}))
    assert not evaluate(spanish_vip, facts(contact={"vip": True}))  # a missing field never matches


def test_true_is_not_one_and_false_is_not_zero() -> None:
    assert not evaluate(VIP, facts(contact={"vip": 1}))
    assert not evaluate(ContactCondition((("score", 0),)), facts(contact={"score": False}))
    assert evaluate(ContactCondition((("score", 0),)), facts(contact={"score": 0}))


def test_event_condition_reads_the_event_data_not_the_contact() -> None:
    from_web = EventCondition((("source", "web"),))
    assert evaluate(from_web, facts(event={"source": "web"}, contact={"source": "phone"}))
    assert not evaluate(from_web, facts(event={"source": "phone"}, contact={"source": "web"}))


# ------------------------------------------------------------------------------------------ waits


def test_hours_are_elapsed_time_even_across_the_spring_forward_change() -> None:
    # 2026-03-08 01:30 EST; clocks jump from 02:00 to 03:00, so two hours later it is 04:30 EDT.
    start = utc(2026, 3, 8, 6, 30)
    assert next_wait_until(WaitFor(timedelta(hours=2)), start, NEW_YORK) == utc(2026, 3, 8, 8, 30)


def test_a_day_keeps_the_local_wall_time_across_spring_forward_so_it_lasts_23_hours() -> None:
    start = utc(2026, 3, 7, 15, 0)  # Saturday 10:00 EST
    end = next_wait_until(WaitFor(timedelta(days=1)), start, NEW_YORK)
    assert end == utc(2026, 3, 8, 14, 0)  # Sunday 10:00 EDT
    assert end - start == timedelta(hours=23)


def test_a_day_keeps_the_local_wall_time_across_fall_back_so_it_lasts_25_hours() -> None:
    start = utc(2026, 10, 31, 14, 0)  # Saturday 10:00 EDT
    end = next_wait_until(WaitFor(timedelta(days=1)), start, NEW_YORK)
    assert end == utc(2026, 11, 1, 15, 0)  # Sunday 10:00 EST
    assert end - start == timedelta(hours=25)


def test_days_and_hours_mix_calendar_days_with_elapsed_hours() -> None:
    start = utc(2026, 3, 7, 15, 0)  # Saturday 10:00 EST
    end = next_wait_until(WaitFor(timedelta(days=1, hours=12)), start, NEW_YORK)
    assert end == utc(2026, 3, 9, 2, 0)  # Sunday 10:00 EDT + 12 h = 22:00 EDT


def test_without_a_time_zone_a_day_is_24_hours_of_utc() -> None:
    start = utc(2026, 3, 7, 15, 0)
    assert next_wait_until(WaitFor(timedelta(days=1)), start, None) == utc(2026, 3, 8, 15, 0)


def test_a_day_that_lands_in_the_skipped_hour_moves_forward_by_the_gap() -> None:
    start = utc(2026, 3, 7, 7, 30)  # Saturday 02:30 EST; Sunday 02:30 does not exist
    assert next_wait_until(WaitFor(timedelta(days=1)), start, NEW_YORK) == utc(2026, 3, 8, 7, 30)  # 03:30 EDT


def test_wait_until_weekday_and_time_is_the_next_such_local_time_across_dst() -> None:
    monday_ten = WaitUntil(0, time(10, 0))
    saturday_before_change = utc(2026, 3, 7, 17, 0)  # Saturday 12:00 EST
    assert next_wait_until(monday_ten, saturday_before_change, NEW_YORK) == utc(2026, 3, 9, 14, 0)  # EDT
    saturday_before_fall_back = utc(2026, 10, 31, 16, 0)  # Saturday 12:00 EDT
    assert next_wait_until(monday_ten, saturday_before_fall_back, NEW_YORK) == utc(2026, 11, 2, 15, 0)  # EST


def test_wait_until_on_the_same_weekday_is_today_before_the_time_and_next_week_after_it() -> None:
    monday_ten = WaitUntil(0, time(10, 0))
    monday_nine = utc(2026, 1, 5, 14, 0)  # Monday 09:00 EST
    assert next_wait_until(monday_ten, monday_nine, NEW_YORK) == utc(2026, 1, 5, 15, 0)
    monday_ten_utc = utc(2026, 1, 5, 15, 0)
    assert next_wait_until(monday_ten, monday_ten_utc, NEW_YORK) == monday_ten_utc  # right now: no wait
    one_minute_later = utc(2026, 1, 5, 15, 1)
    assert next_wait_until(monday_ten, one_minute_later, NEW_YORK) == utc(2026, 1, 12, 15, 0)


def test_wait_until_uses_the_contacts_local_date_not_the_utc_date() -> None:
    # 2026-01-06 03:00 UTC is still Monday 22:00 in New York: the next 09:00 is Tuesday's.
    late_monday = utc(2026, 1, 6, 3, 0)
    assert next_wait_until(WaitUntil(None, time(9, 0)), late_monday, NEW_YORK) == utc(2026, 1, 6, 14, 0)
    assert next_wait_until(WaitUntil(None, time(9, 0)), late_monday, None) == utc(2026, 1, 6, 9, 0)


def test_wait_until_a_skipped_time_moves_forward_and_a_repeated_time_means_the_first() -> None:
    before_change = utc(2026, 3, 8, 5, 0)  # Sunday 00:00 EST
    assert next_wait_until(WaitUntil(None, time(2, 30)), before_change, NEW_YORK) == utc(2026, 3, 8, 7, 30)
    before_fall_back = utc(2026, 11, 1, 4, 0)  # Sunday 00:00 EDT; 01:30 happens twice
    first_half_past_one = utc(2026, 11, 1, 5, 30)  # 01:30 EDT
    assert next_wait_until(WaitUntil(None, time(1, 30)), before_fall_back, NEW_YORK) == first_half_past_one


def test_waits_answer_in_utc_and_refuse_a_naive_now_or_an_unknown_zone() -> None:
    local_now = datetime(2026, 1, 5, 9, 0, tzinfo=ZoneInfo("Europe/Paris"))
    assert next_wait_until(WaitFor(timedelta(hours=1)), local_now, NEW_YORK).tzinfo is UTC
    with pytest.raises(InvalidInput, match="timezone-aware"):
        next_wait_until(WaitFor(timedelta(hours=1)), datetime(2026, 1, 5, 9, 0), NEW_YORK)
    with pytest.raises(InvalidInput, match="unknown time zone"):
        next_wait_until(WaitFor(timedelta(hours=1)), utc(2026, 1, 5), "Mars/Olympus_Mons")


# ------------------------------------------------------------------------------------- planning


def test_plan_step_walks_a_flow_action_by_action_and_wait_by_wait() -> None:
    flow = make_flow(
        [
            RequestOptIn(Channel.TEXT),
            WaitFor(timedelta(days=1)),
            IfStep(TEXT_OPTED_IN, then=(text("welcome"),), otherwise=(email("fallback"),)),
        ]
    )
    now = utc(2026, 1, 5, 15, 0)
    first = plan_step(flow, 0, facts(), now)
    assert (first.action, first.next_pc, first.wake_at, first.finished) == (
        RequestOptIn(Channel.TEXT), 1, None, False,
    )
    waiting = plan_step(flow, 1, facts(), now)
    assert (waiting.action, waiting.next_pc, waiting.wake_at, waiting.finished) == (
        None, 2, utc(2026, 1, 6, 15, 0), False,
    )
    opted_in = plan_step(flow, 2, facts({Channel.TEXT: State.OPTED_IN}), now)
    assert (opted_in.action, opted_in.finished) == (text("welcome"), True)
    not_opted_in = plan_step(flow, 2, facts({Channel.TEXT: State.REQUESTED}), now)
    assert (not_opted_in.action, not_opted_in.finished) == (email("fallback"), True)


def test_plan_step_says_finished_only_when_no_action_or_wait_can_follow() -> None:
    flow = make_flow([text("a"), IfStep(VIP, then=(text("vip"),))])
    after_first = plan_step(flow, 0, facts(), utc(2026, 1, 5))
    assert not after_first.finished  # the `if` may still send, depending on facts then
    done = plan_step(flow, after_first.next_pc, facts(contact={"vip": False}), utc(2026, 1, 5))
    assert (done.action, done.wake_at, done.finished, done.next_pc) == (None, None, True, len(flow.program))


def test_plan_step_wakes_a_weekday_wait_in_the_contacts_zone() -> None:
    flow = make_flow([WaitUntil(1, time(10, 0)), text("a")])
    plan = plan_step(flow, 0, facts(time_zone=NEW_YORK), utc(2026, 1, 5, 15, 0))  # Monday 10:00 EST
    assert plan.wake_at == utc(2026, 1, 6, 15, 0)


def test_remove_from_flows_finishes_the_enrolment_unless_except_this() -> None:
    ending = make_flow([RemoveFromFlows(), text("never")])
    plan = plan_step(ending, 0, facts(), utc(2026, 1, 5))
    assert (plan.action, plan.finished) == (RemoveFromFlows(), True)
    carrying_on = make_flow([RemoveFromFlows(except_this=True), text("next")])
    plan = plan_step(carrying_on, 0, facts(), utc(2026, 1, 5))
    assert (plan.action, plan.finished, plan.next_pc) == (RemoveFromFlows(except_this=True), False, 1)


# Programs with every branch shape, each `if` on its own contact field (c0, c1, ...), so every
# path through a program is one some contact takes and the facts can be enumerated.
def condition(n: int) -> ContactCondition:
    return ContactCondition(((f"c{n}", True),))


BRANCHY_FLOWS = [
    make_flow([text("a"), IfStep(condition(0), then=(text("b"),))]),
    make_flow([IfStep(condition(0), then=(text("a"),), otherwise=(IfStep(condition(1), then=(WaitFor(
        timedelta(days=1)),)),)), IfStep(condition(2)), text("b")]),
    make_flow([text("a"), IfStep(condition(0), then=(IfStep(condition(1), then=(text("b"),)),),
                                 otherwise=(text("c"),)), text("d")]),
    make_flow([IfStep(condition(0), then=(text("a"),)), IfStep(condition(1), otherwise=(text("b"),))]),
    make_flow([RemoveFromFlows(except_this=True), IfStep(condition(0), then=(RemoveFromFlows(except_this=True),))]),
]


def every_facts(flow: Flow) -> list[Facts]:
    fields = sorted({key for i in flow.program if isinstance(i, JumpUnless)
                     for key, _ in getattr(i.condition, "equals", ())})
    return [facts(contact=dict(zip(fields, values, strict=True)))
            for values in itertools.product((False, True), repeat=len(fields))]


@pytest.mark.parametrize("flow", BRANCHY_FLOWS)
def test_an_action_is_the_last_exactly_when_no_contact_could_meet_another_action_or_wait(flow: Flow) -> None:
    now = utc(2026, 1, 5)
    checked = 0
    for pc in range(len(flow.program)):
        for some in every_facts(flow):
            plan = plan_step(flow, pc, some, now)
            if plan.action is None:
                continue
            afterwards = [plan_step(flow, plan.next_pc, other, now) for other in every_facts(flow)]
            assert plan.finished == all(p.action is None and p.wake_at is None for p in afterwards), (pc, some)
            checked += 1
    assert checked


class WatchedFields(dict[str, object]):
    """Contact fields that note whether a condition looked at them."""

    read = False

    def get(self, key: str, default: object = None) -> object:
        self.read = True
        return super().get(key, default)


@pytest.mark.parametrize("flow", BRANCHY_FLOWS)
def test_plan_reads_conditions_says_whether_planning_from_a_pc_looks_at_the_facts(flow: Flow) -> None:
    answers = []
    for pc in range(len(flow.program) + 1):
        fields = WatchedFields()
        plan_step(flow, pc, Facts({}, fields, {}, None), utc(2026, 1, 5))
        assert plan_reads_conditions(flow, pc) == fields.read, pc
        answers.append(fields.read)
    assert True in answers and False in answers


def sends_until_wait_by_walking(flow: Flow, pc: int) -> bool:
    """The same question answered the slow way: follow every branch until a wait or the end."""
    seen, pending = set(), [pc]
    while pending:
        at = pending.pop()
        if at in seen or at >= len(flow.program):
            continue
        seen.add(at)
        instruction = flow.program[at]
        if isinstance(instruction, Jump):
            pending.append(instruction.target)
        elif isinstance(instruction, JumpUnless):
            pending.extend((at + 1, instruction.target))
        elif isinstance(instruction, Send):
            pending.append(at + 1)
        elif not isinstance(instruction, WaitFor | WaitUntil):
            return False
    return True


@pytest.mark.parametrize("flow", [*BRANCHY_FLOWS, make_flow([text("a"), WaitFor(timedelta(days=1)), OptOut()]),
                                  make_flow([IfStep(condition(0), then=(OptOut(),)), text("a")])])
def test_only_sends_until_wait_follows_every_branch_to_the_next_wait(flow: Flow) -> None:
    answers = [only_sends_until_wait(flow, pc) for pc in range(len(flow.program) + 1)]
    assert answers == [sends_until_wait_by_walking(flow, pc) for pc in range(len(flow.program) + 1)]
    assert not only_sends_until_wait(flow, -1) and not only_sends_until_wait(flow, len(flow.program) + 1)


@pytest.mark.parametrize("pc", [-1, 3])
def test_plan_reads_conditions_refuses_a_pc_outside_the_program(pc: int) -> None:
    with pytest.raises(InvalidInput, match="no step"):
        plan_reads_conditions(make_flow([text("a"), text("b")]), pc)


# ----------------------------------------------------------------------- triggers, exits, reentry


def test_event_trigger_matches_its_name_and_every_when_filter() -> None:
    flow = make_flow(
        [text("a")],
        trigger=FlowTrigger(
            TriggerKind.EVENT,
            "pipeline.stage_changed",
            when=(("pipeline", "sales"), ("stage", "discontinued")),
        ),
    )
    data = {"stage": "discontinued", "pipeline": "sales", "by": "agent 7"}
    assert trigger_matches(flow, "event", "pipeline.stage_changed", data)
    assert not trigger_matches(flow, "event", "pipeline.stage_changed", {**data, "stage": "won"})
    assert not trigger_matches(flow, "event", "pipeline.stage_changed", {"stage": "discontinued"})
    assert not trigger_matches(flow, "event", "lead.created", data)
    assert not trigger_matches(flow, "consent", "pipeline.stage_changed", data)


def test_consent_trigger_matches_the_state_and_its_channel_when_it_names_one() -> None:
    text_reauth = make_flow([text("a")], trigger=FlowTrigger(TriggerKind.CONSENT, "reauth_due", Channel.TEXT))
    assert trigger_matches(text_reauth, "consent", "reauth_due", {"channel": "text"})
    assert trigger_matches(text_reauth, "consent", State.REAUTH_DUE, {"channel": Channel.TEXT})
    assert not trigger_matches(text_reauth, "consent", "reauth_due", {"channel": "email"})
    assert not trigger_matches(text_reauth, "consent", "reauth_due", {})
    assert not trigger_matches(text_reauth, "consent", "opted_in", {"channel": "text"})
    any_channel = make_flow([text("a")], trigger=FlowTrigger(TriggerKind.CONSENT, "opted_in"))
    assert trigger_matches(any_channel, "consent", "opted_in", {"channel": "email"})


def test_keyword_trigger_compares_the_whole_message_ignoring_case_and_spacing() -> None:
    flow = make_flow([text("a")], trigger=FlowTrigger(TriggerKind.KEYWORD, "free trial", Channel.TEXT))
    assert trigger_matches(flow, "keyword", "  Free   TRIAL ", {"channel": "text"})
    assert not trigger_matches(flow, "keyword", "free trial please", {"channel": "text"})
    assert not trigger_matches(flow, "keyword", "free trial", {"channel": "whatsapp"})


def test_manual_trigger_answers_only_manual_enrolment() -> None:
    manual = make_flow([text("a")], trigger=FlowTrigger(TriggerKind.MANUAL))
    assert trigger_matches(manual, "manual", "", {})
    assert not trigger_matches(manual, "event", "lead.created", {})
    assert not trigger_matches(make_flow([text("a")]), "manual", "", {})
    with pytest.raises(InvalidInput, match="unknown trigger kind"):
        trigger_matches(manual, "webhook", "", {})


def test_exit_conditions_match_replies_events_and_consent_states() -> None:
    flow = make_flow(
        [text("a")],
        exit_when=(
            ExitCondition(ExitKind.REPLIED),
            ExitCondition(ExitKind.EVENT, "deal.won", when=(("pipeline", "sales"),)),
            ExitCondition(ExitKind.CONSENT, "opted_in", Channel.TEXT),
        ),
    )
    assert exit_matches(flow, "contact_replied", None, {})
    assert exit_matches(flow, "event", "deal.won", {"pipeline": "sales"})
    assert not exit_matches(flow, "event", "deal.won", {"pipeline": "service"})
    assert exit_matches(flow, "consent", "opted_in", {"channel": "text"})
    assert not exit_matches(flow, "consent", "opted_in", {"channel": "email"})
    assert not exit_matches(make_flow([text("a")]), "contact_replied", None, {})
    with pytest.raises(InvalidInput, match="unknown exit kind"):
        exit_matches(flow, "replied", None, {})


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        # (no enrolment yet, one active, one ended, one active and one ended)
        (Reenroll.NEVER, (True, False, False, False)),
        (Reenroll.AFTER_EXIT, (True, False, True, False)),
        (Reenroll.ALWAYS, (True, True, True, True)),
    ],
)
def test_reenroll_policies(policy: Reenroll, expected: tuple[bool, bool, bool, bool]) -> None:
    flow = make_flow([text("a")], reenroll=policy)
    cases = [(False, False), (True, False), (False, True), (True, True)]
    assert tuple(may_enroll(flow, has_active=a, has_ended=e) for a, e in cases) == expected
