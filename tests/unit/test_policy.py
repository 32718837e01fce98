"""The send policy: every rule of `decide`, with real phone numbers and real time-zone data.

The policy takes `now` as an argument, so plain aware datetimes stand in for the clock.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from optflow.domain.model import Channel, DndSettings, InvalidInput, Mode, Purpose, State
from optflow.domain.policy import (
    CONTINENTAL_US_ZONES,
    DEBT_COLLECTION_CALL_CAP,
    Allow,
    Defer,
    DeferCode,
    Deny,
    DenyCode,
    FrequencyCap,
    MessageKind,
    PolicySettings,
    Recipient,
    SendRequest,
    decide,
    local_window,
    next_open_moment,
    region_for,
    time_zones_for,
)

NEW_YORK = "+12125550100"
SAN_FRANCISCO = "+14155552671"
HONOLULU = "+18085550100"
MIAMI = "+13055550100"  # the geocoder says "Florida"
CONNECTICUT = "+12035550100"
RHODE_ISLAND = "+14015550100"
AUSTIN = "+15125550100"
TOLL_FREE = "+18005550100"  # 42 zones, from Pacific/Guam (UTC+10) to Pacific/Pago_Pago (UTC-11)
EMAIL = "pat@example.net"

NY = ZoneInfo("America/New_York")
LA = ZoneInfo("America/Los_Angeles")
HI = ZoneInfo("Pacific/Honolulu")
CHICAGO = ZoneInfo("America/Chicago")

ANSWERS = (MessageKind.OPT_OUT_CONFIRMATION, MessageKind.HELP_REPLY)
NOT_OPTED_OUT_STATES = (State.UNKNOWN, State.REQUESTED, State.OPTED_IN, State.REAUTH_DUE)

# Wednesday 14 January 2026, 13:00 in New York: inside every window used below.
WEDNESDAY_1PM_NY = datetime(2026, 1, 14, 13, 0, tzinfo=NY)


def local(zone: tzinfo, year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=zone)


def request(**overrides: Any) -> SendRequest:
    values: dict[str, Any] = {
        "channel": Channel.TEXT,
        "address": NEW_YORK,
        "purpose": Purpose.CONVERSATIONAL,
        "now": WEDNESDAY_1PM_NY,
        "consent_state": State.OPTED_IN,
    }
    values.update(overrides)
    return SendRequest(**values)


def recipient(**overrides: Any) -> Recipient:
    return Recipient(dnd=overrides.pop("dnd", DndSettings()), **overrides)


def settings(mode: Mode = Mode.CONSENT, **overrides: Any) -> PolicySettings:
    return PolicySettings(modes={channel: mode for channel in Channel}, **overrides)


def deny_code(decision: object) -> str:
    assert isinstance(decision, Deny), decision
    return decision.code


def defer_until(decision: object) -> datetime:
    assert isinstance(decision, Defer), decision
    return decision.until


# --- opt-out ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind", [MessageKind.NORMAL, MessageKind.OPT_IN_REQUEST, MessageKind.OPT_IN_CONFIRMATION, MessageKind.PIN]
)
@pytest.mark.parametrize("purpose", list(Purpose))
@pytest.mark.parametrize("mode", list(Mode))
def test_opted_out_denies_every_kind_and_purpose_in_every_mode(
    kind: MessageKind, purpose: Purpose, mode: Mode
) -> None:
    decision = decide(
        request(kind=kind, purpose=purpose, consent_state=State.OPTED_OUT), recipient(), settings(mode)
    )
    assert deny_code(decision) == DenyCode.OPTED_OUT == "opted_out"


def test_help_reply_goes_to_an_opted_out_contact_on_dnd_at_night_over_its_cap() -> None:
    three_am = local(NY, 2026, 1, 14, 3)
    calls = [three_am - timedelta(hours=h) for h in range(1, 8)]
    decision = decide(
        request(
            kind=MessageKind.HELP_REPLY,
            channel=Channel.CALL,
            consent_state=State.OPTED_OUT,
            now=three_am,
            recent_sends=calls,
        ),
        recipient(dnd=DndSettings(all_channels=True), marketing_allowed=False),
        settings(caps=(DEBT_COLLECTION_CALL_CAP,)),
    )
    assert decision == Allow()


@pytest.mark.parametrize("age", [timedelta(0), timedelta(minutes=4, seconds=59), timedelta(minutes=5)])
def test_opt_out_confirmation_goes_within_five_minutes(age: timedelta) -> None:
    decision = decide(
        request(
            kind=MessageKind.OPT_OUT_CONFIRMATION,
            consent_state=State.OPTED_OUT,
            opted_out_at=WEDNESDAY_1PM_NY - age,
        ),
        recipient(),
        settings(),
    )
    assert decision == Allow()


def test_opt_out_confirmation_is_refused_after_five_minutes() -> None:
    decision = decide(
        request(
            kind=MessageKind.OPT_OUT_CONFIRMATION,
            consent_state=State.OPTED_OUT,
            opted_out_at=WEDNESDAY_1PM_NY - timedelta(minutes=5, seconds=1),
        ),
        recipient(),
        settings(),
    )
    assert deny_code(decision) == "confirmation_window_passed"


def test_opt_out_confirmation_without_an_opt_out_time_is_refused() -> None:
    decision = decide(
        request(kind=MessageKind.OPT_OUT_CONFIRMATION, consent_state=State.OPTED_OUT, opted_out_at=None),
        recipient(),
        settings(),
    )
    assert deny_code(decision) == "confirmation_window_passed"
    assert isinstance(decision, Deny) and "unknown" in decision.reason


def test_opt_out_confirmation_goes_once() -> None:
    first = request(
        kind=MessageKind.OPT_OUT_CONFIRMATION,
        consent_state=State.OPTED_OUT,
        opted_out_at=WEDNESDAY_1PM_NY - timedelta(minutes=1),
    )
    assert decide(first, recipient(), settings()) == Allow()
    second = replace(first, opt_out_confirmation_sent=True, now=first.now + timedelta(seconds=10))
    assert deny_code(decide(second, recipient(), settings())) == "confirmation_already_sent"


@pytest.mark.parametrize("state", NOT_OPTED_OUT_STATES)
def test_opt_out_confirmation_needs_an_opt_out(state: State) -> None:
    decision = decide(
        request(kind=MessageKind.OPT_OUT_CONFIRMATION, consent_state=state, opted_out_at=WEDNESDAY_1PM_NY),
        recipient(),
        settings(Mode.AUTO),
    )
    assert deny_code(decision) == "not_opted_out"


def test_opt_out_confirmation_ignores_dnd_quiet_hours_and_caps() -> None:
    three_am = local(NY, 2026, 1, 14, 3)
    decision = decide(
        request(
            kind=MessageKind.OPT_OUT_CONFIRMATION,
            channel=Channel.CALL,
            consent_state=State.OPTED_OUT,
            opted_out_at=three_am - timedelta(minutes=2),
            now=three_am,
            recent_sends=[three_am - timedelta(hours=h) for h in range(1, 8)],
        ),
        recipient(dnd=DndSettings(all_channels=True)),
        settings(caps=(DEBT_COLLECTION_CALL_CAP,)),
    )
    assert decision == Allow()


# --- do-not-disturb -----------------------------------------------------------------------------


def test_dnd_on_one_channel_blocks_that_channel_only() -> None:
    on_text = recipient(dnd=DndSettings(channels=frozenset({Channel.TEXT})))
    assert deny_code(decide(request(channel=Channel.TEXT), on_text, settings(Mode.AUTO))) == "dnd"
    assert decide(request(channel=Channel.CALL), on_text, settings(Mode.AUTO)) == Allow()


@pytest.mark.parametrize(
    "kind", [MessageKind.NORMAL, MessageKind.OPT_IN_REQUEST, MessageKind.OPT_IN_CONFIRMATION, MessageKind.PIN]
)
@pytest.mark.parametrize("purpose", list(Purpose))
def test_a_suppressed_address_gets_nothing_the_business_starts_whatever_its_consent(
    kind: MessageKind, purpose: Purpose
) -> None:
    suppressed = request(kind=kind, purpose=purpose, consent_state=State.OPTED_IN, suppression="litigator list")
    decision = decide(suppressed, recipient(), settings(Mode.AUTO))
    assert deny_code(decision) == DenyCode.SUPPRESSED == "suppressed"
    assert isinstance(decision, Deny) and "litigator list" in decision.reason


def test_a_suppressed_address_still_gets_the_answers_carriers_require() -> None:
    help_reply = request(kind=MessageKind.HELP_REPLY, consent_state=State.OPTED_IN, suppression="complaint")
    assert decide(help_reply, recipient(), settings(Mode.AUTO)) == Allow()


@pytest.mark.parametrize("channel", list(Channel))
@pytest.mark.parametrize(
    "kind", [MessageKind.NORMAL, MessageKind.OPT_IN_REQUEST, MessageKind.OPT_IN_CONFIRMATION, MessageKind.PIN]
)
def test_dnd_on_all_channels_blocks_every_outbound_kind_whatever_the_consent(
    channel: Channel, kind: MessageKind
) -> None:
    address = EMAIL if channel is Channel.EMAIL else NEW_YORK
    decision = decide(
        request(channel=channel, address=address, kind=kind, consent_state=State.OPTED_IN),
        recipient(dnd=DndSettings(all_channels=True)),
        settings(Mode.AUTO),
    )
    assert deny_code(decision) == "dnd"


def test_opt_out_is_reported_before_dnd() -> None:
    decision = decide(
        request(consent_state=State.OPTED_OUT), recipient(dnd=DndSettings(all_channels=True)), settings()
    )
    assert deny_code(decision) == "opted_out"


# --- consent, modes and marketing ---------------------------------------------------------------


@pytest.mark.parametrize("purpose", [Purpose.CONVERSATIONAL, Purpose.TRANSACTIONAL])
def test_consent_mode_needs_an_opt_in(purpose: Purpose) -> None:
    def code(state: State) -> str | None:
        decision = decide(request(purpose=purpose, consent_state=state), recipient(), settings(Mode.CONSENT))
        return decision.code if isinstance(decision, Deny) else None

    assert code(State.OPTED_IN) is None
    assert code(State.UNKNOWN) == "no_consent"
    assert code(State.REQUESTED) == "no_consent"
    assert code(State.REAUTH_DUE) == "reauth_due"


def test_a_channel_without_a_mode_runs_in_consent_mode() -> None:
    text_only_auto = PolicySettings(modes={Channel.TEXT: Mode.AUTO})
    assert (
        decide(request(channel=Channel.TEXT, consent_state=State.UNKNOWN), recipient(), text_only_auto)
        == Allow()
    )
    assert (
        deny_code(
            decide(request(channel=Channel.CALL, consent_state=State.UNKNOWN), recipient(), text_only_auto)
        )
        == "no_consent"
    )


@pytest.mark.parametrize("mode", [Mode.DISCLAIMER, Mode.AUTO])
@pytest.mark.parametrize("purpose", [Purpose.CONVERSATIONAL, Purpose.TRANSACTIONAL])
@pytest.mark.parametrize("state", NOT_OPTED_OUT_STATES)
def test_disclaimer_and_auto_modes_let_non_marketing_messages_flow(
    mode: Mode, purpose: Purpose, state: State
) -> None:
    assert decide(request(purpose=purpose, consent_state=state), recipient(), settings(mode)) == Allow()


@pytest.mark.parametrize("mode", list(Mode))
def test_marketing_needs_an_opt_in_in_every_mode(mode: Mode) -> None:
    def code(state: State) -> str | None:
        decision = decide(
            request(purpose=Purpose.MARKETING, consent_state=state), recipient(), settings(mode)
        )
        return decision.code if isinstance(decision, Deny) else None

    assert code(State.OPTED_IN) is None
    assert code(State.UNKNOWN) == "no_consent"
    assert code(State.REQUESTED) == "no_consent"
    assert code(State.REAUTH_DUE) == "reauth_due"


@pytest.mark.parametrize("mode", list(Mode))
def test_declined_marketing_blocks_marketing_but_not_other_messages(mode: Mode) -> None:
    declined = recipient(marketing_allowed=False)
    marketing = decide(request(purpose=Purpose.MARKETING), declined, settings(mode))
    assert deny_code(marketing) == "marketing_declined"
    for purpose in (Purpose.CONVERSATIONAL, Purpose.TRANSACTIONAL):
        assert decide(request(purpose=purpose), declined, settings(mode)) == Allow()


@pytest.mark.parametrize("state", NOT_OPTED_OUT_STATES)
def test_opt_in_request_goes_in_any_state_but_opted_out(state: State) -> None:
    decision = decide(
        request(kind=MessageKind.OPT_IN_REQUEST, consent_state=state), recipient(), settings(Mode.CONSENT)
    )
    assert decision == Allow()


@pytest.mark.parametrize("kind", [MessageKind.PIN, MessageKind.OPT_IN_CONFIRMATION])
@pytest.mark.parametrize("state", NOT_OPTED_OUT_STATES)
def test_pin_and_opt_in_confirmation_go_unless_opted_out(kind: MessageKind, state: State) -> None:
    assert decide(request(kind=kind, consent_state=state), recipient(), settings(Mode.CONSENT)) == Allow()


# --- quiet hours: time zones and windows --------------------------------------------------------


def test_time_zones_come_from_the_number() -> None:
    nobody = recipient()
    assert time_zones_for(NEW_YORK, Channel.TEXT, nobody) == ("America/New_York",)
    assert time_zones_for(SAN_FRANCISCO, Channel.CALL, nobody) == ("America/Los_Angeles",)
    assert time_zones_for(HONOLULU, Channel.WHATSAPP, nobody) == ("Pacific/Honolulu",)
    assert time_zones_for(HONOLULU, Channel.CHAT, nobody) == ("Pacific/Honolulu",)
    toll_free = time_zones_for(TOLL_FREE, Channel.TEXT, nobody)
    assert len(toll_free) == 42
    assert {"Pacific/Guam", "Pacific/Pago_Pago", "America/St_Johns"} <= set(toll_free)


def test_a_stored_time_zone_wins_over_the_number_unless_unknown() -> None:
    assert time_zones_for(NEW_YORK, Channel.TEXT, recipient(time_zone="America/Denver")) == (
        "America/Denver",
    )
    assert time_zones_for(NEW_YORK, Channel.TEXT, recipient(time_zone="Mars/Olympus")) == (
        "America/New_York",
    )


def test_addresses_that_cannot_be_placed_get_the_continental_us_zones() -> None:
    nobody = recipient()
    assert time_zones_for(EMAIL, Channel.EMAIL, nobody) == CONTINENTAL_US_ZONES
    assert time_zones_for("+15550100", Channel.TEXT, nobody) == CONTINENTAL_US_ZONES  # Etc/Unknown
    assert time_zones_for("user-8812", Channel.CHAT, nobody) == CONTINENTAL_US_ZONES
    assert time_zones_for(EMAIL, Channel.EMAIL, recipient(time_zone="Pacific/Honolulu")) == (
        "Pacific/Honolulu",
    )


def test_the_state_comes_from_the_contact_else_from_the_area_code() -> None:
    nobody = recipient()
    assert region_for(MIAMI, Channel.TEXT, nobody) == "FL"  # geocoder: "Florida"
    assert region_for(SAN_FRANCISCO, Channel.TEXT, nobody) == "CA"  # geocoder: "San Francisco, CA"
    assert region_for(TOLL_FREE, Channel.TEXT, nobody) is None
    assert region_for("+16715550100", Channel.TEXT, nobody) is None  # Guam: not a US state
    assert region_for(EMAIL, Channel.EMAIL, nobody) is None
    assert region_for(MIAMI, Channel.TEXT, recipient(region=" ct ")) == "CT"


def test_local_window_follows_the_state() -> None:
    day = date(2026, 1, 14)
    assert local_window("America/New_York", None, day) == (
        local(NY, 2026, 1, 14, 8),
        local(NY, 2026, 1, 14, 21),
    )
    assert local_window("America/New_York", "FL", day) == (
        local(NY, 2026, 1, 14, 8),
        local(NY, 2026, 1, 14, 20),
    )
    assert local_window("America/New_York", "CT", day) == (
        local(NY, 2026, 1, 14, 9),
        local(NY, 2026, 1, 14, 20),
    )
    opens, _ = local_window("America/New_York", None, day) or (None, None)
    assert opens is not None and opens.tzinfo is UTC


def test_a_local_day_that_never_happened_has_no_window() -> None:
    # Samoa skipped 30 December 2011 when it crossed the date line: every wall time of that day
    # is missing, so reading the boundaries on the safe side leaves nothing.
    assert local_window("Pacific/Apia", None, date(2011, 12, 30)) is None
    assert local_window("Pacific/Apia", None, date(2011, 12, 29)) is not None
    assert local_window("Pacific/Apia", None, date(2011, 12, 31)) is not None


# --- quiet hours: decisions ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "zone"),
    [(NEW_YORK, NY), (SAN_FRANCISCO, LA), (HONOLULU, HI)],
)
def test_federal_window_in_the_recipients_local_time(address: str, zone: ZoneInfo) -> None:
    def decision_at(hour: int, minute: int = 0) -> object:
        return decide(
            request(address=address, now=local(zone, 2026, 7, 15, hour, minute)), recipient(), settings()
        )

    assert decision_at(8) == Allow()
    assert decision_at(20, 59) == Allow()
    assert defer_until(decision_at(7, 59)) == local(zone, 2026, 7, 15, 8)
    assert defer_until(decision_at(21)) == local(zone, 2026, 7, 16, 8)
    assert defer_until(decision_at(23, 30)) == local(zone, 2026, 7, 16, 8)


def test_defer_is_in_utc_and_names_quiet_hours_and_the_local_time() -> None:
    decision = decide(request(now=local(NY, 2026, 1, 14, 21, 30)), recipient(), settings())
    assert isinstance(decision, Defer)
    assert decision.until.tzinfo is UTC
    assert decision.until == datetime(2026, 1, 15, 13, 0, tzinfo=UTC)
    assert decision.codes == (DeferCode.QUIET_HOURS,)
    assert "quiet hours" in decision.reason
    assert "Wed 21:30 in America/New_York" in decision.reason
    assert "08:00–21:00" in decision.reason


def test_florida_window_ends_at_eight_pm() -> None:
    at_8_30_pm = decide(request(address=MIAMI, now=local(NY, 2026, 1, 14, 20, 30)), recipient(), settings())
    assert defer_until(at_8_30_pm) == local(NY, 2026, 1, 15, 8)
    assert isinstance(at_8_30_pm, Defer) and "FL" in at_8_30_pm.reason
    assert (
        decide(request(address=MIAMI, now=local(NY, 2026, 1, 14, 19, 59)), recipient(), settings()) == Allow()
    )


def test_connecticut_window_starts_at_nine() -> None:
    at_8_30 = decide(request(address=CONNECTICUT, now=local(NY, 2026, 1, 14, 8, 30)), recipient(), settings())
    assert defer_until(at_8_30) == local(NY, 2026, 1, 14, 9)
    at_8_05_pm = decide(
        request(address=CONNECTICUT, now=local(NY, 2026, 1, 14, 20, 5)), recipient(), settings()
    )
    assert defer_until(at_8_05_pm) == local(NY, 2026, 1, 15, 9)


def test_the_contacts_state_wins_over_the_area_code() -> None:
    decision = decide(request(now=local(NY, 2026, 1, 14, 20, 30)), recipient(region="fl"), settings())
    assert defer_until(decision) == local(NY, 2026, 1, 15, 8)


def test_the_contacts_time_zone_wins_over_the_area_code() -> None:
    nine_thirty_pm_in_new_york = local(NY, 2026, 1, 14, 21, 30)  # 18:30 in Los Angeles
    los_angeles = recipient(time_zone="America/Los_Angeles")
    assert decide(request(now=nine_thirty_pm_in_new_york), los_angeles, settings()) == Allow()


def test_rhode_island_has_shorter_weekends() -> None:
    friday_6_30_pm = local(NY, 2026, 1, 16, 18, 30)
    assert defer_until(
        decide(request(address=RHODE_ISLAND, now=friday_6_30_pm), recipient(), settings())
    ) == local(NY, 2026, 1, 17, 10)
    saturday_5_30_pm = local(NY, 2026, 1, 17, 17, 30)
    assert defer_until(
        decide(request(address=RHODE_ISLAND, now=saturday_5_30_pm), recipient(), settings())
    ) == local(NY, 2026, 1, 18, 10)
    sunday_4_pm = local(NY, 2026, 1, 18, 16)
    assert decide(request(address=RHODE_ISLAND, now=sunday_4_pm), recipient(), settings()) == Allow()


def test_texas_sundays_start_at_noon() -> None:
    sunday_11_am = local(CHICAGO, 2026, 1, 18, 11)
    assert defer_until(decide(request(address=AUSTIN, now=sunday_11_am), recipient(), settings())) == (
        local(CHICAGO, 2026, 1, 18, 12)
    )
    saturday_9_30_am = local(CHICAGO, 2026, 1, 17, 9, 30)
    assert decide(request(address=AUSTIN, now=saturday_9_30_am), recipient(), settings()) == Allow()


def test_toll_free_number_gets_the_window_open_in_all_its_zones() -> None:
    # In January the 42 zones share 22:00-00:30 UTC: 08:00 in Guam to 21:00 in St John's.
    def decision_at(moment: datetime) -> object:
        return decide(request(address=TOLL_FREE, now=moment), recipient(), settings())

    noon_utc = datetime(2026, 1, 14, 12, 0, tzinfo=UTC)  # 07:00 in New York: fine there, not in Guam
    deferred = decision_at(noon_utc)
    assert defer_until(deferred) == datetime(2026, 1, 14, 22, 0, tzinfo=UTC)
    assert isinstance(deferred, Defer) and "42 time zones" in deferred.reason
    assert decision_at(datetime(2026, 1, 14, 23, 0, tzinfo=UTC)) == Allow()
    assert decision_at(datetime(2026, 1, 15, 0, 29, tzinfo=UTC)) == Allow()
    assert defer_until(decision_at(datetime(2026, 1, 15, 0, 30, tzinfo=UTC))) == datetime(
        2026, 1, 15, 22, 0, tzinfo=UTC
    )


def test_a_day_with_no_common_window_is_skipped() -> None:
    # Texas rules on a toll-free number: when Saturday evening in St John's is Sunday morning in
    # Guam, Guam waits for Sunday noon while St John's closes at 21:00 Saturday, so nothing is
    # open on that UTC day; the next common window is Sunday evening UTC (Monday 09:00 in Guam).
    saturday_evening = datetime(2026, 1, 10, 22, 30, tzinfo=UTC)
    decision = decide(request(address=TOLL_FREE, now=saturday_evening), recipient(region="TX"), settings())
    assert defer_until(decision) == datetime(2026, 1, 11, 23, 0, tzinfo=UTC)
    assert next_open_moment(
        time_zones_for(TOLL_FREE, Channel.TEXT, recipient()), "TX", datetime(2026, 1, 9, 23, 30, tzinfo=UTC)
    ) == datetime(2026, 1, 9, 23, 30, tzinfo=UTC)  # the Friday-evening window was still open


def test_no_common_window_at_all_is_refused() -> None:
    # Rhode Island's 09:00-18:00 in Guam and in St John's never overlap.
    decision = decide(request(address=TOLL_FREE), recipient(region="RI"), settings())
    assert deny_code(decision) == "no_sending_window"


def test_email_without_a_time_zone_gets_the_continental_window() -> None:
    # 08:00 in Los Angeles to 21:00 in New York.
    def decision_at(moment: datetime) -> object:
        return decide(request(channel=Channel.EMAIL, address=EMAIL, now=moment), recipient(), settings())

    assert defer_until(decision_at(local(NY, 2026, 1, 14, 10, 30))) == local(LA, 2026, 1, 14, 8)
    assert decision_at(local(NY, 2026, 1, 14, 11)) == Allow()
    assert decision_at(local(NY, 2026, 1, 14, 20, 59)) == Allow()
    assert defer_until(decision_at(local(NY, 2026, 1, 14, 21))) == local(LA, 2026, 1, 15, 8)


def text_at(now: datetime) -> object:
    """The decision on an ordinary text to the New York number at `now`, with the default settings."""
    return decide(request(now=now), recipient(), settings())


def test_new_york_spring_forward() -> None:
    # 8 March 2026: clocks jump from 02:00 EST to 03:00 EDT; 08:00 that morning is 12:00 UTC.
    saturday_night = local(NY, 2026, 3, 7, 21, 30)  # 02:30 UTC on the 8th, still EST
    assert defer_until(text_at(saturday_night)) == local(UTC, 2026, 3, 8, 12)
    before_the_jump = local(UTC, 2026, 3, 8, 6, 30)  # 01:30 EST
    assert defer_until(text_at(before_the_jump)) == local(UTC, 2026, 3, 8, 12)
    assert text_at(local(UTC, 2026, 3, 9, 0, 59)) == Allow()  # 20:59 EDT on the 8th
    assert defer_until(text_at(local(UTC, 2026, 3, 9, 1))) == local(UTC, 2026, 3, 9, 12)


def test_new_york_fall_back() -> None:
    # 1 November 2026: clocks go back from 02:00 EDT to 01:00 EST; 08:00 that morning is 13:00 UTC.
    saturday_night = local(NY, 2026, 10, 31, 21, 30)  # 01:30 UTC on the 1st, still EDT
    assert defer_until(text_at(saturday_night)) == local(UTC, 2026, 11, 1, 13)
    first_1_30_am = local(UTC, 2026, 11, 1, 5, 30)  # 01:30 EDT
    second_1_30_am = local(UTC, 2026, 11, 1, 6, 30)  # 01:30 EST
    for moment in (first_1_30_am, second_1_30_am):
        assert defer_until(text_at(moment)) == local(UTC, 2026, 11, 1, 13)
    assert text_at(local(UTC, 2026, 11, 2, 1, 59)) == Allow()  # 20:59 EST on the 1st
    assert defer_until(text_at(local(UTC, 2026, 11, 2, 2))) == local(UTC, 2026, 11, 2, 13)


def test_quiet_hours_can_be_switched_off_or_limited() -> None:
    three_am = local(NY, 2026, 1, 14, 3)
    assert decide(request(now=three_am), recipient(), settings(quiet_hours=False)) == Allow()
    marketing_only = settings(quiet_hours_purposes=frozenset({Purpose.MARKETING}))
    assert decide(request(now=three_am), recipient(), marketing_only) == Allow()
    assert isinstance(
        decide(request(now=three_am, purpose=Purpose.MARKETING), recipient(), marketing_only), Defer
    )
    calls_only = settings(quiet_hours_channels=frozenset({Channel.CALL}))
    assert decide(request(now=three_am), recipient(), calls_only) == Allow()
    assert isinstance(decide(request(now=three_am, channel=Channel.CALL), recipient(), calls_only), Defer)


def test_quiet_hours_hold_opt_in_requests_but_not_answers_to_the_customer() -> None:
    three_am = local(NY, 2026, 1, 14, 3)
    assert isinstance(
        decide(request(now=three_am, kind=MessageKind.OPT_IN_REQUEST), recipient(), settings()), Defer
    )
    for kind in (MessageKind.PIN, MessageKind.OPT_IN_CONFIRMATION, MessageKind.HELP_REPLY):
        assert decide(request(now=three_am, kind=kind), recipient(), settings()) == Allow()


def test_now_must_be_aware() -> None:
    with pytest.raises(InvalidInput):
        decide(request(now=datetime(2026, 1, 14, 13, 0)), recipient(), settings())


# --- frequency caps -----------------------------------------------------------------------------


def _calls(first: datetime, count: int, every: timedelta) -> list[datetime]:
    return [first + i * every for i in range(count)]


def test_seven_calls_in_seven_days_defer_the_eighth_until_the_first_ages_out() -> None:
    first = local(NY, 2026, 1, 12, 10)  # Monday 10:00
    calls = _calls(first, 7, timedelta(hours=20))
    now = local(NY, 2026, 1, 18, 12)
    capped = settings(caps=(DEBT_COLLECTION_CALL_CAP,))
    decision = decide(request(channel=Channel.CALL, recent_sends=calls, now=now), recipient(), capped)
    assert isinstance(decision, Defer)
    assert decision.until == first + timedelta(days=7)
    assert decision.until.tzinfo is UTC
    assert decision.codes == (DeferCode.FREQUENCY_CAP,)
    assert "reg_f_7_in_7" in decision.reason
    assert (
        decide(request(channel=Channel.CALL, recent_sends=calls[1:], now=now), recipient(), capped) == Allow()
    )
    at_age_out = first + timedelta(days=7)
    assert (
        decide(request(channel=Channel.CALL, recent_sends=calls, now=at_age_out), recipient(), capped)
        == Allow()
    )


def test_a_cap_counts_only_its_channels_and_purposes() -> None:
    now = local(NY, 2026, 1, 14, 13)
    sends = _calls(now - timedelta(hours=10), 7, timedelta(hours=1))
    capped = settings(caps=(DEBT_COLLECTION_CALL_CAP,))
    assert decide(request(channel=Channel.TEXT, recent_sends=sends, now=now), recipient(), capped) == Allow()
    marketing_cap = FrequencyCap(
        limit=1,
        window=timedelta(days=1),
        channels=frozenset({Channel.TEXT}),
        purposes=frozenset({Purpose.MARKETING}),
        name="one_promo_a_day",
    )
    only_marketing = settings(caps=(marketing_cap,))
    assert decide(request(recent_sends=sends, now=now), recipient(), only_marketing) == Allow()
    assert defer_until(
        decide(request(purpose=Purpose.MARKETING, recent_sends=sends, now=now), recipient(), only_marketing)
    ) == sends[-1] + timedelta(days=1)


def test_with_more_sends_than_the_limit_enough_must_age_out() -> None:
    now = local(NY, 2026, 1, 14, 13)
    three_a_day = FrequencyCap(limit=3, window=timedelta(days=1), channels=frozenset({Channel.TEXT}))
    sends = _calls(now - timedelta(hours=5), 5, timedelta(hours=1))  # 08:00 .. 12:00
    decision = decide(request(recent_sends=sends, now=now), recipient(), settings(caps=(three_a_day,)))
    assert defer_until(decision) == sends[2] + timedelta(days=1)  # 10:00 tomorrow leaves two


@pytest.mark.parametrize("reverse", [False, True])
def test_when_several_caps_hold_the_latest_wins(reverse: bool) -> None:
    now = local(NY, 2026, 1, 14, 13)
    sends = [local(NY, 2026, 1, 14, 11), local(NY, 2026, 1, 14, 12)]
    two_in_three_hours = FrequencyCap(
        limit=2, window=timedelta(hours=3), channels=frozenset({Channel.TEXT}), name="two_in_3h"
    )  # free at 14:00, when the 11:00 send leaves
    one_in_150_minutes = FrequencyCap(
        limit=1, window=timedelta(minutes=150), channels=frozenset({Channel.TEXT}), name="one_in_150m"
    )  # free at 14:30, when the 12:00 send leaves
    caps = (two_in_three_hours, one_in_150_minutes)
    decision = decide(
        request(recent_sends=sends, now=now), recipient(), settings(caps=caps[::-1] if reverse else caps)
    )
    assert isinstance(decision, Defer)
    assert decision.until == local(NY, 2026, 1, 14, 14, 30)
    assert decision.codes == (DeferCode.FREQUENCY_CAP,)
    assert "two_in_3h" in decision.reason and "one_in_150m" in decision.reason


def test_a_cap_that_no_longer_holds_is_not_named() -> None:
    now = local(NY, 2026, 1, 14, 13)
    sends = [local(NY, 2026, 1, 14, 11), local(NY, 2026, 1, 14, 12)]
    two_in_90_minutes = FrequencyCap(
        limit=2, window=timedelta(minutes=90), channels=frozenset({Channel.TEXT}), name="two_in_90m"
    )  # the 11:00 send already left it
    two_in_three_hours = FrequencyCap(
        limit=2, window=timedelta(hours=3), channels=frozenset({Channel.TEXT}), name="two_in_3h"
    )
    decision = decide(
        request(recent_sends=sends, now=now),
        recipient(),
        settings(caps=(two_in_90_minutes, two_in_three_hours)),
    )
    assert isinstance(decision, Defer)
    assert decision.until == local(NY, 2026, 1, 14, 14)
    assert "two_in_3h" in decision.reason and "two_in_90m" not in decision.reason


def deferred_call_at_noon_on_the_19th(first_call: datetime) -> Defer:
    """A call at 12:00 on Monday 19 January, after seven calls 12 hours apart from `first_call`,
    under Regulation F's seven-in-seven-days cap."""
    calls = _calls(first_call, 7, timedelta(hours=12))
    decision = decide(
        request(channel=Channel.CALL, recent_sends=calls, now=local(NY, 2026, 1, 19, 12)),
        recipient(),
        settings(caps=(DEBT_COLLECTION_CALL_CAP,)),
    )
    assert isinstance(decision, Defer), decision
    return decision


def test_a_cap_that_ends_at_night_waits_for_the_morning() -> None:
    # The cap releases at 22:30 on the 19th, in quiet hours.
    decision = deferred_call_at_noon_on_the_19th(first_call=local(NY, 2026, 1, 12, 22, 30))
    assert decision.until == local(NY, 2026, 1, 20, 8)
    assert decision.codes == (DeferCode.FREQUENCY_CAP, DeferCode.QUIET_HOURS)
    assert "reg_f_7_in_7" in decision.reason and "quiet hours" in decision.reason


def test_a_cap_that_ends_by_day_needs_no_quiet_hours() -> None:
    decision = deferred_call_at_noon_on_the_19th(first_call=local(NY, 2026, 1, 12, 15))
    assert decision.until == local(NY, 2026, 1, 19, 15)
    assert decision.codes == (DeferCode.FREQUENCY_CAP,)


def test_answers_to_the_customer_are_never_capped() -> None:
    now = local(NY, 2026, 1, 14, 13)
    sends = _calls(now - timedelta(hours=10), 7, timedelta(hours=1))
    capped = settings(caps=(DEBT_COLLECTION_CALL_CAP,))
    for kind in (MessageKind.PIN, MessageKind.OPT_IN_CONFIRMATION, MessageKind.HELP_REPLY):
        assert (
            decide(request(channel=Channel.CALL, kind=kind, recent_sends=sends, now=now), recipient(), capped)
            == Allow()
        )
    assert isinstance(
        decide(
            request(channel=Channel.CALL, kind=MessageKind.OPT_IN_REQUEST, recent_sends=sends, now=now),
            recipient(),
            capped,
        ),
        Defer,
    )


@pytest.mark.parametrize(("limit", "window"), [(0, timedelta(days=1)), (3, timedelta(0))])
def test_a_cap_needs_a_positive_limit_and_window(limit: int, window: timedelta) -> None:
    with pytest.raises(InvalidInput):
        FrequencyCap(limit=limit, window=window, channels=frozenset({Channel.CALL}))


# --- do-not-contact and WhatsApp's window (issue 12) -------------------------------------------


@pytest.mark.parametrize("reason", ["bounced", "complained", "carrier_blocked", "unknown_number", "not_textable"])
@pytest.mark.parametrize("kind", [MessageKind.NORMAL, MessageKind.OPT_IN_REQUEST, MessageKind.PIN])
def test_an_address_on_do_not_contact_gets_nothing_the_business_starts(reason: str, kind: MessageKind) -> None:
    decision = decide(request(do_not_contact=reason, kind=kind), recipient(), settings(Mode.AUTO))
    assert deny_code(decision) == reason and reason in decision.reason  # type: ignore[union-attr]


def test_do_not_contact_does_not_silence_the_answers_to_the_customers_own_message() -> None:
    assert decide(request(do_not_contact="not_textable", kind=MessageKind.HELP_REPLY), recipient(),
                  settings()) == Allow()


WHATSAPP = {"channel": Channel.WHATSAPP, "now": WEDNESDAY_1PM_NY}


def test_free_form_whatsapp_needs_the_customers_message_within_24_hours() -> None:
    never = decide(request(**WHATSAPP), recipient(), settings())
    assert deny_code(never) == DenyCode.OUTSIDE_WHATSAPP_WINDOW
    inside = request(**WHATSAPP, last_customer_message_at=WEDNESDAY_1PM_NY - timedelta(hours=23, minutes=59))
    assert decide(inside, recipient(), settings()) == Allow()
    closed = replace(inside, last_customer_message_at=WEDNESDAY_1PM_NY - timedelta(hours=24))
    assert deny_code(decide(closed, recipient(), settings())) == DenyCode.OUTSIDE_WHATSAPP_WINDOW
    assert deny_code(decide(replace(closed, kind=MessageKind.OPT_IN_REQUEST), recipient(), settings())) \
        == DenyCode.OUTSIDE_WHATSAPP_WINDOW
    assert decide(replace(closed, kind=MessageKind.OPT_IN_CONFIRMATION), recipient(), settings()) == Allow()


def test_only_an_approved_template_goes_outside_the_window() -> None:
    approved = settings(whatsapp_templates=frozenset({"reminder"}))
    assert decide(request(**WHATSAPP, template="reminder"), recipient(), approved) == Allow()
    assert deny_code(decide(request(**WHATSAPP, template="promo"), recipient(), approved)) \
        == DenyCode.TEMPLATE_NOT_APPROVED


def test_a_whatsapp_message_that_quiet_hours_push_past_its_window_is_refused_now() -> None:
    late_evening = local(NY, 2026, 1, 14, 20, 50)  # 20:50 in New York: the window shuts at 21:00
    wrote = late_evening - timedelta(hours=14)  # the customer's window closes at 06:50 tomorrow, before 08:00
    pending = request(**{**WHATSAPP, "now": local(NY, 2026, 1, 14, 21, 30)}, last_customer_message_at=wrote)
    assert deny_code(decide(pending, recipient(), settings())) == DenyCode.OUTSIDE_WHATSAPP_WINDOW
    recent = replace(pending, last_customer_message_at=local(NY, 2026, 1, 14, 21, 0))
    assert isinstance(decide(recent, recipient(), settings()), Defer)  # open until 21:00 tomorrow
