"""Handlers spoken to in commands, on a real SQLite file, with a fake sender and a hand-moved clock."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from conftest import ORG_NUMBER, Clock, RecordingSender, new_agent, new_org
from optflow.adapters import orm
from optflow.bootstrap import System
from optflow.domain import commands as c
from optflow.domain.model import (
    Actor,
    ActorKind,
    Channel,
    DomainError,
    Intent,
    InvalidInput,
    NotFound,
    Purpose,
    State,
    TransitionRefused,
)
from optflow.domain.settings import resolve
from optflow.service_layer.handlers import policy_settings

PHONE = "+14155552671"  # San Francisco
EMAIL = "sam@example.com"


@pytest.fixture
def org(system: System) -> int:
    return new_org(system)


@pytest.fixture
def agent(system: System, org: int) -> Actor:
    return Actor(ActorKind.AGENT, str(new_agent(system, org).id))


@pytest.fixture
def contact(system: System, org: int) -> int:
    return system.bus.handle(c.CreateContact(org, name="Sam", phones=(PHONE,), emails=(EMAIL,))).contact_id


def sms(system: System, body: str, sid: str | None = None, frm: str = PHONE, **kw: object) -> object:
    return system.bus.handle(c.ReceiveInbound(Channel.TEXT, frm, ORG_NUMBER, body, sid, **kw))  # type: ignore[arg-type]


def state(system: System, org: int, address: str = PHONE, channel: Channel = Channel.TEXT) -> State:
    with system.bus.uow() as uow:
        return uow.consents.get(org, address, channel).state


def messages(system: System, **where: object) -> list[dict[str, object]]:
    query = select(orm.messages).order_by(orm.messages.c.id)
    for key, value in where.items():
        query = query.where(getattr(orm.messages.c, key) == value)
    with system.engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def ledger(system: System, org: int) -> list[dict[str, object]]:
    with system.bus.uow() as uow:
        return uow.ledger.entries(org)


def test_request_then_yes_opts_in_and_tells_both(system: System, org: int, agent: Actor, contact: int,
                                                 sender: RecordingSender) -> None:
    result = system.bus.handle(c.RequestOptIn(org, contact, Channel.TEXT, agent))
    assert result.state is State.REQUESTED
    system.dispatcher.run(system.clock())
    assert "Reply YES" in sender.to(PHONE)[0].body
    reply = sms(system, "Yes", "SM1")
    assert reply.intent is Intent.OPT_IN and reply.state is State.OPTED_IN
    assert "Reply HELP for help, STOP to opt out" in reply.replies[0]
    notes = [m["body"] for m in messages(system, audience="employee")]
    assert any("opted in" in str(n) for n in notes) and any("request sent" in str(n).lower() for n in notes)
    assert [e["trigger"] for e in ledger(system, org)] == ["request_opt_in", "accept"]


def test_duplicate_provider_id_is_processed_once(system: System, org: int, contact: int) -> None:
    first = sms(system, "STOP", "SMdup")
    again = sms(system, "STOP", "SMdup")
    assert again.duplicate and again.replies == first.replies
    assert len(ledger(system, org)) == 1
    assert len(messages(system, direction="in")) == 1


@pytest.mark.parametrize("written", [PHONE, "(415) 555-2671", "415.555.2671", "whatsapp:" + PHONE])
def test_a_contact_is_found_however_the_number_is_written(system: System, org: int, contact: int,
                                                          written: str) -> None:
    result = sms(system, "STOP", "SMw", frm=written)
    assert result.contact_id == contact and result.address == PHONE
    assert state(system, org) is State.OPTED_OUT


def test_an_unknown_sender_written_as_e164_is_still_checked(system: System, org: int) -> None:
    """Only numbers found among the stored (checked) ones skip parsing; an invalid one is refused."""
    with pytest.raises(InvalidInput, match="not a valid phone number"):
        sms(system, "STOP", "SMbad", frm="+10005550100")
    stranger = sms(system, "STOP", "SMok", frm="+14155550199")
    assert stranger.contact_id is None and state(system, org, "+14155550199") is State.OPTED_OUT


def test_opt_out_type_wins_over_the_body(system: System, org: int, contact: int) -> None:
    result = sms(system, "whatever you say", "SM9", opt_out_type="STOP")
    assert result.intent is Intent.OPT_OUT and state(system, org) is State.OPTED_OUT


def test_stop_applies_to_its_channel_only_by_default(system: System, org: int, agent: Actor, contact: int) -> None:
    system.bus.handle(c.RecordOptIn(org, contact, Channel.EMAIL, agent, method="web_form"))
    system.bus.handle(c.RecordOptIn(org, contact, Channel.TEXT, agent, method="web_form"))
    sms(system, "stop", "SM1")
    assert state(system, org) is State.OPTED_OUT
    assert state(system, org, EMAIL, Channel.EMAIL) is State.OPTED_IN


def test_org_may_make_stop_apply_to_every_channel(system: System, agent: Actor) -> None:
    org = new_org(system, "Strict", "+12025550188", stop_applies_to_all_channels=True)
    contact = system.bus.handle(c.CreateContact(org, phones=("+14155550111",), emails=("a@example.com",))).contact_id
    system.bus.handle(c.RecordOptIn(org, contact, Channel.EMAIL, agent, method="web_form"))
    system.bus.handle(c.ReceiveInbound(Channel.TEXT, "+14155550111", "+12025550188", "STOP", "SMx"))
    for address, channel in (("+14155550111", Channel.TEXT), ("+14155550111", Channel.CALL),
                             ("a@example.com", Channel.EMAIL)):
        assert state(system, org, address, channel) is State.OPTED_OUT


def test_opt_out_confirmation_goes_once(system: System, org: int, contact: int) -> None:
    first = sms(system, "STOP", "SM1")
    second = sms(system, "stop!!", "SM2")
    assert len(first.replies) == 1 and second.replies == ()
    assert len(ledger(system, org)) == 2, "the second STOP is still recorded"


def test_agent_opt_out_confirmation_only_within_five_minutes(system: System, org: int, agent: Actor, contact: int,
                                                             sender: RecordingSender, clock: Clock) -> None:
    system.bus.handle(c.RecordOptIn(org, contact, Channel.TEXT, agent, method="verbal"))
    system.bus.handle(c.OptOut(org, contact, Channel.TEXT, agent))
    clock.advance(minutes=6)
    report = system.dispatcher.run(clock())
    assert sender.to(PHONE) == [] and report.denied == 1


def test_agent_opt_out_confirmation_is_sent_inside_the_window(system: System, org: int, agent: Actor, contact: int,
                                                              sender: RecordingSender, clock: Clock) -> None:
    system.bus.handle(c.RecordOptIn(org, contact, Channel.TEXT, agent, method="verbal"))
    system.bus.handle(c.OptOut(org, contact, Channel.TEXT, agent))
    clock.advance(minutes=2)
    system.dispatcher.run(clock())
    assert len(sender.to(PHONE)) == 1 and "START" in sender.to(PHONE)[0].body


def test_agent_cannot_request_opt_in_after_opt_out_and_nothing_is_queued(system: System, org: int, agent: Actor,
                                                                         contact: int) -> None:
    sms(system, "STOP", "SM1")
    before = messages(system)
    with pytest.raises(TransitionRefused) as refused:
        system.bus.handle(c.RequestOptIn(org, contact, Channel.TEXT, agent))
    assert refused.value.code == "opted_out"
    assert messages(system) == before


def test_customer_writing_first_reopens_an_opt_out(system: System, org: int, contact: int) -> None:
    sms(system, "STOP", "SM1")
    result = sms(system, "hi, I have a question about my car", "SM2")
    assert result.state is State.REQUESTED and "YES" in result.replies[0]


def test_stop_between_queue_and_send_blocks_the_message(system: System, org: int, agent: Actor, contact: int,
                                                        sender: RecordingSender) -> None:
    system.bus.handle(c.RecordOptIn(org, contact, Channel.TEXT, agent, method="verbal"))
    system.bus.handle(c.SendMessage(org, contact, Channel.TEXT, "Your car is ready", agent))
    sms(system, "stop texting me please", "SM1")
    system.dispatcher.run(system.clock())
    assert not any("car is ready" in m.body for m in sender.sent)


def test_dispatcher_rechecks_policy_even_for_rows_queued_directly(system: System, org: int, agent: Actor,
                                                                  contact: int, sender: RecordingSender) -> None:
    system.bus.handle(c.RecordOptIn(org, contact, Channel.TEXT, agent, method="verbal"))
    sms(system, "STOP", "SM1")
    with system.engine.begin() as conn:  # a message that slipped into the outbox by any other path
        conn.execute(orm.messages.insert().values(
            org_id=org, contact_id=contact, direction="out", channel="text", address=PHONE, body="promo",
            purpose="marketing", kind="normal", status="queued", not_before=system.clock(),
            created_at=system.clock()))
    report = system.dispatcher.run(system.clock())
    assert not any(m.body == "promo" for m in sender.sent) and report.denied == 1


def test_consent_mode_holds_the_employee_first_message_until_yes(system: System, org: int, agent: Actor,
                                                                 contact: int, sender: RecordingSender) -> None:
    held = system.bus.handle(c.SendMessage(org, contact, Channel.TEXT, "Your quote is ready", agent))
    assert held.status == "held"
    system.dispatcher.run(system.clock())
    assert [("YES" in m.body) for m in sender.to(PHONE)] == [True]
    sms(system, "YES", "SM1")
    system.dispatcher.run(system.clock())
    assert sender.to(PHONE)[-1].body == "Your quote is ready"


def test_consent_mode_holds_the_customer_first_message_from_the_employee(system: System, org: int,
                                                                         contact: int) -> None:
    first = sms(system, "Is the blue car still for sale?", "SM1")
    assert first.state is State.REQUESTED and "YES" in first.replies[0]
    inbound = messages(system, direction="in")[0]
    assert inbound["status"] == "held"
    sms(system, "yes", "SM2")
    assert messages(system, direction="in")[0]["status"] == "delivered"
    notes = [str(m["body"]) for m in messages(system, audience="employee")]
    assert any("blue car" in n for n in notes)


def test_disclaimer_mode_first_message_carries_the_notice(system: System, agent: Actor,
                                                          sender: RecordingSender) -> None:
    org = new_org(system, "Open", "+12025550177", modes={"text": "disclaimer"})
    contact = system.bus.handle(c.CreateContact(org, phones=("+14155550122",))).contact_id
    system.bus.handle(c.SendMessage(org, contact, Channel.TEXT, "Hello from the dealership", agent))
    system.bus.handle(c.SendMessage(org, contact, Channel.TEXT, "Second message", agent))
    system.dispatcher.run(system.clock())
    bodies = [m.body for m in sender.to("+14155550122")]
    assert "STOP" in bodies[0] and bodies[0].startswith("Hello from the dealership")
    assert bodies[1] == "Second message"


def test_auto_mode_opts_in_on_creation_with_method_auto(system: System) -> None:
    org = new_org(system, "Auto", "+12025550166", modes={"text": "auto"}, business_type="utility")
    contact = system.bus.handle(c.CreateContact(org, phones=("+14155550133",))).contact_id
    assert state(system, org, "+14155550133") is State.OPTED_IN
    entry = ledger(system, org)[-1]
    assert entry["method"] == "auto" and entry["contact_id"] == contact


def test_pin_wrong_then_right(system: System, agent: Actor) -> None:
    org = new_org(system, "Pinned", "+12025550155", pin_required=True, pin_max_attempts=3)
    contact = system.bus.handle(c.CreateContact(org, phones=("+14155550144",))).contact_id
    system.bus.handle(c.RequestOptIn(org, contact, Channel.TEXT, agent))
    reply = system.bus.handle(c.ReceiveInbound(Channel.TEXT, "+14155550144", "+12025550155", "YES", "SMp"))
    assert "123456" in reply.replies[0] and reply.state is State.REQUESTED
    with pytest.raises(DomainError) as wrong:
        system.bus.handle(c.ConfirmPin(org, contact, Channel.TEXT, agent, pin="000000"))
    assert wrong.value.code == "pin_wrong" and "2 attempts left" in str(wrong.value)
    result = system.bus.handle(c.ConfirmPin(org, contact, Channel.TEXT, agent, pin="123456"))
    assert result.state is State.OPTED_IN


def test_pin_attempts_are_limited_and_pins_expire(system: System, agent: Actor, clock: Clock) -> None:
    org = new_org(system, "Pinned", "+12025550155", pin_required=True, pin_max_attempts=2, pin_ttl_minutes=10)
    contact = system.bus.handle(c.CreateContact(org, phones=("+14155550144",))).contact_id
    system.bus.handle(c.RequestOptIn(org, contact, Channel.TEXT, agent))
    system.bus.handle(c.ReceiveInbound(Channel.TEXT, "+14155550144", "+12025550155", "YES", "SMp"))
    for _ in range(2):
        with pytest.raises(DomainError):
            system.bus.handle(c.ConfirmPin(org, contact, Channel.TEXT, agent, pin="999999"))
    with pytest.raises(DomainError) as locked:
        system.bus.handle(c.ConfirmPin(org, contact, Channel.TEXT, agent, pin="123456"))
    assert locked.value.code == "pin_locked"
    system.bus.handle(c.ReceiveInbound(Channel.TEXT, "+14155550144", "+12025550155", "YES", "SMq"))
    clock.advance(minutes=11)
    with pytest.raises(DomainError) as expired:
        system.bus.handle(c.ConfirmPin(org, contact, Channel.TEXT, agent, pin="123456"))
    assert expired.value.code == "pin_expired"


def test_quick_opt_in_skips_the_pin(system: System, agent: Actor) -> None:
    org = new_org(system, "Pinned", "+12025550155", pin_required=True)
    contact = system.bus.handle(c.CreateContact(org, phones=("+14155550144",))).contact_id
    system.bus.handle(c.RequestOptIn(org, contact, Channel.TEXT, agent, quick=True))
    reply = system.bus.handle(c.ReceiveInbound(Channel.TEXT, "+14155550144", "+12025550155", "YES", "SMp"))
    assert reply.state is State.OPTED_IN


def test_call_consent_drives_active_and_do_not_call(system: System, org: int, agent: Actor, contact: int) -> None:
    system.bus.handle(c.RecordOptIn(org, contact, Channel.CALL, agent, method="verbal"))
    with system.bus.uow() as uow:
        row = uow.contacts.get(org, contact)
    assert row.active and not row.do_not_call
    system.bus.handle(c.OptOut(org, contact, Channel.CALL, agent))
    with system.bus.uow() as uow:
        row = uow.contacts.get(org, contact)
    assert not row.active and row.do_not_call


def test_dnd_on_all_channels_blocks_everything(system: System, org: int, agent: Actor, contact: int) -> None:
    for channel in (Channel.TEXT, Channel.EMAIL):
        system.bus.handle(c.RecordOptIn(org, contact, channel, agent, method="verbal"))
    system.bus.handle(c.SetDnd(org, contact, agent, on=True, all_channels=True))
    for channel in (Channel.TEXT, Channel.EMAIL):
        with pytest.raises(TransitionRefused) as refused:
            system.bus.handle(c.SendMessage(org, contact, channel, "hello", agent, purpose=Purpose.TRANSACTIONAL))
        assert refused.value.code == "dnd"
    assert ledger(system, org)[-1]["trigger"] == "dnd_on"


def test_marketing_declined_still_gets_conversational(system: System, org: int, agent: Actor, contact: int) -> None:
    system.bus.handle(c.RecordOptIn(org, contact, Channel.TEXT, agent, method="verbal"))
    system.bus.handle(c.SetMarketing(org, contact, agent, allowed=False))
    with pytest.raises(TransitionRefused) as refused:
        system.bus.handle(c.SendMessage(org, contact, Channel.TEXT, "50% off", agent, purpose=Purpose.MARKETING))
    assert refused.value.code == "marketing_declined"
    assert system.bus.handle(c.SendMessage(org, contact, Channel.TEXT, "Your car is ready", agent)).status == "queued"


def test_carrier_unsubscribed_answer_is_an_opt_out(system: System, org: int, agent: Actor, contact: int,
                                                   sender: RecordingSender) -> None:
    system.bus.handle(c.RecordOptIn(org, contact, Channel.TEXT, agent, method="verbal"))
    system.bus.handle(c.SendMessage(org, contact, Channel.TEXT, "hello", agent))
    sender.unsubscribed.add(PHONE)
    report = system.dispatcher.run(system.clock())
    assert report.opted_out_by_carrier == 1 and state(system, org) is State.OPTED_OUT
    entry = ledger(system, org)[-1]
    assert (entry["trigger"], entry["method"], entry["actor_id"]) == ("opt_out", "carrier", "carrier")


def test_transient_failures_are_retried_with_backoff(system: System, org: int, agent: Actor, contact: int,
                                                     sender: RecordingSender, clock: Clock) -> None:
    system.bus.handle(c.RecordOptIn(org, contact, Channel.TEXT, agent, method="verbal"))
    system.bus.handle(c.SendMessage(org, contact, Channel.TEXT, "hello", agent))
    sender.transient_failures = 1
    assert system.dispatcher.run(clock()).retried == 1
    assert system.dispatcher.run(clock()).sent == 0, "not before the backoff"
    clock.advance(seconds=31)
    assert system.dispatcher.run(clock()).sent == 1


def test_broken_template_override_does_not_block_the_opt_out(system: System) -> None:
    org = new_org(system, "Broken", "+12025550199")
    with system.engine.begin() as conn:  # stored behind validation's back, as an old bad row would be
        conn.execute(orm.orgs.update().where(orm.orgs.c.id == org).values(
            settings_json='{"templates": {"customer/opt_out_confirmation": "{{ nope }"}}'))
    result = system.bus.handle(c.ReceiveInbound(Channel.TEXT, PHONE, "+12025550199", "STOP", "SMb"))
    assert result.state is State.OPTED_OUT and "START" in result.replies[0]


def test_opt_out_survives_a_crash_in_the_rest_of_the_pipeline(system: System, org: int, contact: int,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from optflow.service_layer import handlers

    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("notification service down")

    monkeypatch.setattr(handlers, "notify_employee", explode)
    with pytest.raises(RuntimeError):
        sms(system, "STOP", "SMcrash")
    assert state(system, org) is State.OPTED_OUT
    assert ledger(system, org)[-1]["trigger"] == "opt_out"
    monkeypatch.undo()
    retry = sms(system, "STOP", "SMcrash")  # the provider retries after the error
    assert retry.duplicate and [e["trigger"] for e in ledger(system, org)] == ["opt_out"]


def test_unknown_number_goes_to_the_unassociated_queue_and_linking_requests_opt_in(
        system: System, org: int, agent: Actor, sender: RecordingSender) -> None:
    result = sms(system, "hello?", "SMu", frm="+14155550199")
    assert result.contact_id is None
    queued = messages(system, status="unassociated")
    assert len(queued) == 1
    contact = system.bus.handle(c.CreateContact(org, name="New")).contact_id
    system.bus.handle(c.LinkUnassociated(org, int(queued[0]["id"]), contact, agent))
    assert state(system, org, "+14155550199") is State.REQUESTED
    system.dispatcher.run(system.clock())
    assert "YES" in sender.to("+14155550199")[0].body


def test_reauth_request_and_yes_restart_the_clock(system: System, org: int, agent: Actor, contact: int,
                                                  clock: Clock) -> None:
    system.bus.handle(c.RecordOptIn(org, contact, Channel.TEXT, agent, method="verbal"))
    clock.advance(days=200)
    system.bus.handle(c.SendReauthRequest(org, contact, Channel.TEXT, agent))
    sms(system, "YES", "SMr")
    with system.bus.uow() as uow:
        assert uow.consents.get(org, PHONE, Channel.TEXT).opted_in_at == clock()
    assert ledger(system, org)[-1]["trigger"] == "reauthorize"


def test_bad_input_names_the_problem_and_changes_nothing(system: System, org: int, agent: Actor,
                                                        contact: int) -> None:
    before = (messages(system), ledger(system, org))
    with pytest.raises(InvalidInput) as bad_number:
        system.bus.handle(c.CreateContact(org, phones=("not a number",)))
    assert "not a number" in str(bad_number.value)
    with pytest.raises(InvalidInput) as no_method:
        system.bus.handle(c.RecordOptIn(org, contact, Channel.TEXT, agent, method=""))
    assert no_method.value.code == "method_required"
    with pytest.raises(NotFound) as unknown:
        system.bus.handle(c.RequestOptIn(org, 9999, Channel.TEXT, agent))
    assert "9999" in str(unknown.value)
    with pytest.raises(InvalidInput) as bad_zone:
        system.bus.handle(c.CreateContact(org, phones=("+14155550100",), time_zone="Mars/Olympus"))
    assert "Mars/Olympus" in str(bad_zone.value)
    assert (messages(system), ledger(system, org)) == before
    with system.bus.uow() as uow:
        assert len(uow.contacts.search(org)) == 1


def test_sweeps_expire_old_consents_and_lapse_unanswered_requests(system: System, agent: Actor,
                                                                  clock: Clock) -> None:
    from optflow.service_layer.sweeps import sweep_consents

    org = new_org(system, "Aging", "+12025550144", reauth_days={"text": 180}, request_lapse_days=30)
    old = system.bus.handle(c.CreateContact(org, phones=("+14155550155",))).contact_id
    asked = system.bus.handle(c.CreateContact(org, phones=("+14155550166",))).contact_id
    system.bus.handle(c.RecordOptIn(org, old, Channel.TEXT, agent, method="verbal"))
    system.bus.handle(c.RequestOptIn(org, asked, Channel.TEXT, agent))
    clock.advance(days=29)
    assert sweep_consents(system.uows, system.services, clock()).lapsed == 0
    clock.advance(days=2)
    report = sweep_consents(system.uows, system.services, clock())
    assert (report.expired, report.lapsed) == (0, 1)
    assert state(system, org, "+14155550166") is State.UNKNOWN
    clock.advance(days=150)
    assert sweep_consents(system.uows, system.services, clock()).expired == 1
    assert state(system, org, "+14155550155") is State.REAUTH_DUE


def test_stop_works_even_with_broken_stored_keywords(system: System) -> None:
    org = new_org(system, "Odd", "+12025550111")
    with system.engine.begin() as conn:  # stored behind validation's back
        conn.execute(orm.orgs.update().where(orm.orgs.c.id == org).values(
            settings_json='{"keywords": {"en": {"not_an_intent": ["x"]}}}'))
    result = system.bus.handle(c.ReceiveInbound(Channel.TEXT, PHONE, "+12025550111", "STOP", "SMk"))
    assert result.state is State.OPTED_OUT


def test_keyword_additions_are_checked_before_they_are_stored(system: System, org: int) -> None:
    from optflow.service_layer.admin import update_settings

    with system.bus.uow() as uow, pytest.raises(InvalidInput) as refused:
        update_settings(uow, system.services.renderer, org, {"keywords": {"en": {"not_an_intent": ["x"]}}})
    assert "not_an_intent" in str(refused.value)
    with system.bus.uow() as uow:
        update_settings(uow, system.services.renderer, org, {"keywords": {"es": {"opt_out": ["baja"]}}})
        uow.commit()
    assert sms(system, "BAJA", "SMbaja").intent is Intent.OPT_OUT


def test_no_confirmation_for_a_channel_never_used_or_an_opt_out_by_the_system(
        system: System, org: int, agent: Actor, contact: int, sender: RecordingSender) -> None:
    system.bus.handle(c.RecordOptIn(org, contact, Channel.TEXT, agent, method="verbal"))
    system.bus.handle(c.OptOut(org, contact, Channel.TEXT, agent, all_channels=True))
    system.dispatcher.run(system.clock())
    assert [(m.channel, m.to) for m in sender.sent] == [(Channel.TEXT, PHONE)], "email had no consent to end"
    other = system.bus.handle(c.CreateContact(org, phones=("+14155550177",))).contact_id
    system.bus.handle(c.RecordOptIn(org, other, Channel.TEXT, agent, method="verbal"))
    system.bus.handle(c.OptOut(org, other, Channel.TEXT, Actor(ActorKind.SYSTEM, "flow:x")))
    system.dispatcher.run(system.clock())
    assert sender.to("+14155550177") == []


def test_policy_settings_are_built_once_per_settings_object_and_never_mixed_up() -> None:
    quiet, loud = resolve([{"quiet_hours": True}]), resolve([{"quiet_hours": False}])
    assert policy_settings(quiet) is policy_settings(quiet)
    assert policy_settings(quiet).quiet_hours is True and policy_settings(loud).quiet_hours is False
    for _ in range(300):  # the memo is bounded; settings seen again are still right
        assert policy_settings(resolve([{"quiet_hours": False}])).quiet_hours is False
    assert policy_settings(quiet).quiet_hours is True
