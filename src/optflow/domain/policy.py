"""The send policy: may this message go now? One pure function, `decide`, answers for every
outbound message: drips, agent sends and the outbox dispatcher all ask it, nothing sends
around it.

The checks run in a fixed order, and the first refusal wins:

1. opt-out (and the two answers an opted-out contact may still get: the opt-out confirmation,
   once and within five minutes, and the reply to HELP);
2. the suppression list (an address never to be messaged, whatever its consent says), then
   do-not-contact: the address cannot or must not get messages on the channel (a bounce, a
   complaint, a carrier's block; `delivery.Undeliverable`);
3. do-not-disturb;
4. consent, the org's mode on the channel, and marketing permission;
5. WhatsApp's 24-hour window: free-form only within 24 hours of the customer's last message,
   approved templates only outside it;
6. reasons to wait: frequency caps, then quiet hours in the recipient's local time (a free-form
   WhatsApp message that would wait past its window is refused instead).

Only messages the business starts (`NORMAL`, `OPT_IN_REQUEST`) ever wait: the others answer
something the customer just sent, so holding them back would break the answer (an opt-out
confirmation held overnight misses its five minutes).

Quiet hours are computed in absolute time so they stay right across DST changes and across
zones: each zone's window is laid out in its local wall time for each local date, converted to
UTC, and a number that may be in several zones gets only the moments inside the window of every
one of them. Which zones and which US state apply is explained on `time_zones_for` and
`region_for`.

Nothing here reads the clock (time comes in as `SendRequest.now`) or does IO beyond the
phone-number and time-zone metadata that ship with `phonenumbers` and `tzdata`; those lookups
are cached because `decide` runs for every message at dispatch.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as phone_time_zones

from .addresses import PHONE_CHANNELS
from .model import Channel, DndSettings, InvalidInput, Mode, Purpose, State


class MessageKind(enum.StrEnum):
    NORMAL = "normal"  # conversational / transactional / marketing content
    OPT_IN_REQUEST = "opt_in_request"  # asking for consent (also the reauth request)
    OPT_IN_CONFIRMATION = "opt_in_confirmation"
    OPT_OUT_CONFIRMATION = "opt_out_confirmation"
    HELP_REPLY = "help_reply"
    PIN = "pin"


class DenyCode(enum.StrEnum):
    """Stable machine codes of `Deny` (a StrEnum, so `deny.code == "opted_out"` holds)."""

    OPTED_OUT = "opted_out"
    DND = "dnd"
    NO_CONSENT = "no_consent"
    MARKETING_DECLINED = "marketing_declined"
    REAUTH_DUE = "reauth_due"
    NOT_OPTED_OUT = "not_opted_out"  # an opt-out confirmation to someone who did not opt out
    CONFIRMATION_ALREADY_SENT = "confirmation_already_sent"
    CONFIRMATION_WINDOW_PASSED = "confirmation_window_passed"
    NO_SENDING_WINDOW = "no_sending_window"  # quiet hours leave no moment in the coming week
    SUPPRESSED = "suppressed"  # the address is on the org's suppression list
    # The address is on do-not-contact for the channel (the reasons of `delivery.Undeliverable`).
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    CARRIER_BLOCKED = "carrier_blocked"
    UNKNOWN_NUMBER = "unknown_number"
    NOT_TEXTABLE = "not_textable"
    # WhatsApp: free-form only within 24 hours of the customer's last message; templates outside.
    OUTSIDE_WHATSAPP_WINDOW = "outside_whatsapp_window"
    TEMPLATE_NOT_APPROVED = "template_not_approved"


class DeferCode(enum.StrEnum):
    QUIET_HOURS = "quiet_hours"
    FREQUENCY_CAP = "frequency_cap"


OPT_OUT_CONFIRMATION_WINDOW = timedelta(minutes=5)
# Meta's customer service window: a customer's message opens it for 24 hours.
WHATSAPP_WINDOW = timedelta(hours=24)

# The answers that go even to an opted-out (or suppressed) address: carriers require the HELP
# reply, and the customer's own STOP gets its one confirmation.
ANSWERS_AN_OPTED_OUT_CONTACT_GETS = frozenset({MessageKind.OPT_OUT_CONFIRMATION, MessageKind.HELP_REPLY})

# Kinds the business starts. The others answer the customer's own message and never wait.
_DEFERRABLE_KINDS = frozenset({MessageKind.NORMAL, MessageKind.OPT_IN_REQUEST})


@dataclass(frozen=True)
class FrequencyCap:
    limit: int  # at most `limit` sends ...
    window: timedelta  # ... in any rolling window of this length
    channels: frozenset[Channel]  # counted per contact on these channels
    purposes: frozenset[Purpose] = frozenset(Purpose)
    name: str = ""  # e.g. "reg_f_7_in_7"

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise InvalidInput(f"frequency cap {self.name!r}: the limit must be at least 1")
        if self.window <= timedelta(0):
            raise InvalidInput(f"frequency cap {self.name!r}: the window must be longer than zero")

    def applies_to(self, channel: Channel, purpose: Purpose) -> bool:
        return channel in self.channels and purpose in self.purposes


# CFPB Regulation F, 12 CFR 1006.14(b)(2): more than 7 calls in 7 consecutive days is presumed
# harassment, so the 8th call waits until the oldest of the 7 leaves the rolling window.
DEBT_COLLECTION_CALL_CAP = FrequencyCap(
    limit=7, window=timedelta(days=7), channels=frozenset({Channel.CALL}), name="reg_f_7_in_7"
)


@dataclass(frozen=True)
class PolicySettings:
    """The org's settings, already resolved with inheritance."""

    modes: Mapping[Channel, Mode]  # Mode.CONSENT for channels not listed
    quiet_hours: bool = True
    quiet_hours_purposes: frozenset[Purpose] = frozenset(Purpose)
    quiet_hours_channels: frozenset[Channel] = frozenset(Channel)
    caps: tuple[FrequencyCap, ...] = ()
    whatsapp_templates: frozenset[str] = frozenset()  # names of the org's approved WhatsApp templates

    def mode(self, channel: Channel) -> Mode:
        return self.modes.get(channel, Mode.CONSENT)


@dataclass(frozen=True)
class Recipient:
    """What the policy knows of the contact."""

    dnd: DndSettings
    marketing_allowed: bool = True
    time_zone: str | None = None  # IANA zone stored on the contact; wins over the number
    region: str | None = None  # US state code ("FL", "CT", ...) from the contact's address


@dataclass(frozen=True)
class SendRequest:
    channel: Channel
    address: str  # E.164 phone number or email address
    purpose: Purpose
    now: datetime  # aware
    consent_state: State
    kind: MessageKind = MessageKind.NORMAL
    opted_out_at: datetime | None = None
    opt_out_confirmation_sent: bool = False
    # The contact's other messages on the channels of the caps that apply to this request: those
    # handed to a provider (at that moment) and, when deciding whether to queue one more, those
    # queued or claimed but not sent yet, at the first moment each may go (possibly after `now`).
    # At least those inside the largest cap window; older ones are ignored.
    recent_sends: Sequence[datetime] = ()
    # Why the address is on the org's suppression list for this channel; None: it is not.
    suppression: str | None = None
    # The (address, channel) is on do-not-contact with this reason (a bounce, a carrier's block).
    do_not_contact: str | None = None
    # WhatsApp only: when the customer last wrote on WhatsApp (None: never), and the name of the
    # approved template the message is (None: free-form text).
    last_customer_message_at: datetime | None = None
    template: str | None = None


@dataclass(frozen=True)
class Allow:
    pass


@dataclass(frozen=True)
class Defer:
    until: datetime  # aware UTC: the earliest moment the message may go
    reason: str
    codes: tuple[DeferCode, ...] = ()  # every kind of wait that contributed to `until`


@dataclass(frozen=True)
class Deny:
    reason: str
    code: str  # a DenyCode


Decision = Allow | Defer | Deny


def decide(request: SendRequest, recipient: Recipient, settings: PolicySettings) -> Decision:
    """May `request` go now? See the module docstring for the order of the checks."""
    if request.now.utcoffset() is None:
        raise InvalidInput("SendRequest.now must be timezone-aware")
    refusal = _opt_out_rules(request)
    if refusal is not None:
        return refusal
    if request.kind in ANSWERS_AN_OPTED_OUT_CONTACT_GETS:
        return Allow()
    if request.suppression is not None:
        return Deny(f"the address is on the suppression list ({request.suppression})", DenyCode.SUPPRESSED)
    if request.do_not_contact:
        return Deny(f"the address is on do-not-contact for {request.channel.value}: {request.do_not_contact}",
                    request.do_not_contact)
    if recipient.dnd.blocks(request.channel):
        scope = "every channel" if recipient.dnd.all_channels else request.channel.value
        return Deny(f"the contact is on do-not-disturb for {scope}", DenyCode.DND)
    refusal = _consent_rules(request, recipient, settings)
    if refusal is not None:
        return refusal
    if request.kind not in _DEFERRABLE_KINDS:
        return Allow()
    refusal = _whatsapp_rules(request, settings)
    if refusal is not None:
        return refusal
    decision = _waiting_rules(request, recipient, settings)
    closes = _whatsapp_window_end(request)
    if isinstance(decision, Defer) and closes is not None and decision.until >= closes:
        return Deny(f"{decision.reason}; by then the 24-hour WhatsApp window (until {closes:%Y-%m-%d %H:%M} UTC) "
                    "has closed, and outside it only an approved template may go", DenyCode.OUTSIDE_WHATSAPP_WINDOW)
    return decision


def _whatsapp_window_end(request: SendRequest) -> datetime | None:
    """When the free-form window of a free-form WhatsApp message closes; None when no window
    applies (another channel, or a template)."""
    if request.channel is not Channel.WHATSAPP or request.template is not None:
        return None
    last = request.last_customer_message_at
    return (last + WHATSAPP_WINDOW).astimezone(UTC) if last is not None else None


def _whatsapp_rules(request: SendRequest, settings: PolicySettings) -> Deny | None:
    """A message the business starts on WhatsApp: free-form only within 24 hours of the customer's
    last message; outside it only one of the org's approved templates."""
    if request.channel is not Channel.WHATSAPP:
        return None
    if request.template is not None:
        if request.template not in settings.whatsapp_templates:
            return Deny(f"{request.template!r} is not one of the org's approved WhatsApp templates",
                        DenyCode.TEMPLATE_NOT_APPROVED)
        return None
    last = request.last_customer_message_at
    if last is None:
        return Deny("the customer never wrote on WhatsApp, so only an approved template may go",
                    DenyCode.OUTSIDE_WHATSAPP_WINDOW)
    if request.now - last >= WHATSAPP_WINDOW:
        return Deny(f"the customer last wrote on WhatsApp at {last.astimezone(UTC):%Y-%m-%d %H:%M} UTC, more than "
                    "24 hours ago; outside that window only an approved template may go",
                    DenyCode.OUTSIDE_WHATSAPP_WINDOW)
    return None


def _opt_out_rules(request: SendRequest) -> Deny | None:
    """Opt-out beats everything but the HELP reply and the one opt-out confirmation."""
    kind = request.kind
    if kind is MessageKind.HELP_REPLY:
        return None  # carriers require an answer to HELP, opted out or not
    if kind is MessageKind.OPT_OUT_CONFIRMATION:
        if request.consent_state is not State.OPTED_OUT:
            return Deny(
                f"an opt-out confirmation needs an opted-out consent, not {request.consent_state.value}",
                DenyCode.NOT_OPTED_OUT,
            )
        if request.opt_out_confirmation_sent:
            return Deny("the opt-out confirmation was already sent once", DenyCode.CONFIRMATION_ALREADY_SENT)
        if request.opted_out_at is None:
            return Deny(
                "the moment of the opt-out is unknown, so the 5-minute window cannot be shown",
                DenyCode.CONFIRMATION_WINDOW_PASSED,
            )
        if request.now - request.opted_out_at > OPT_OUT_CONFIRMATION_WINDOW:
            return Deny(
                "the opt-out confirmation may only go within 5 minutes of the opt-out",
                DenyCode.CONFIRMATION_WINDOW_PASSED,
            )
        return None
    if request.consent_state is State.OPTED_OUT:
        return Deny(f"the contact opted out on {request.channel.value}", DenyCode.OPTED_OUT)
    return None


def _consent_rules(request: SendRequest, recipient: Recipient, settings: PolicySettings) -> Deny | None:
    """Consent, mode and marketing. Opted-out was refused before this point."""
    if request.kind is not MessageKind.NORMAL:
        # An opt-in request asks for consent; the PIN and the opt-in confirmation follow the
        # customer's YES. None of them needs consent already given.
        return None
    state = request.consent_state
    if request.purpose is Purpose.MARKETING:
        if not recipient.marketing_allowed:
            return Deny("the contact declined marketing messages", DenyCode.MARKETING_DECLINED)
        return _needs_opt_in(state, "marketing needs an opt-in")
    if settings.mode(request.channel) is Mode.CONSENT:
        return _needs_opt_in(state, f"{request.channel.value} runs in consent mode, which needs an opt-in")
    return None  # disclaimer and auto modes let conversational and transactional messages flow


def _needs_opt_in(state: State, why: str) -> Deny | None:
    if state is State.OPTED_IN:
        return None
    if state is State.REAUTH_DUE:
        return Deny(f"{why}, and the consent is due for re-authorisation", DenyCode.REAUTH_DUE)
    return Deny(f"{why}; the consent is {state.value}", DenyCode.NO_CONSENT)


def _waiting_rules(request: SendRequest, recipient: Recipient, settings: PolicySettings) -> Decision:
    """Frequency caps, then quiet hours.

    A cap's threshold is a moment from which on every later moment is allowed too (see
    `_cap_threshold`), so after the caps the candidate is the latest threshold; quiet hours then
    move it to their next opening, which every cap still allows. One pass therefore yields a
    moment that satisfies all of them (the earliest one when no planned sends are counted).
    """
    now = request.now.astimezone(UTC)
    until = now
    reasons: list[str] = []
    codes: list[DeferCode] = []
    for cap in settings.caps:
        if not cap.applies_to(request.channel, request.purpose):
            continue
        threshold, counted = _cap_threshold(cap, request.recent_sends, now)
        if threshold > now:
            reasons.append(
                f"frequency cap {cap.name or 'unnamed'}: {counted} sends in the last "
                f"{_describe_span(cap.window)} (limit {cap.limit}); the next may go at "
                f"{threshold:%Y-%m-%d %H:%M} UTC"
            )
            until = max(until, threshold)
    if reasons:
        codes.append(DeferCode.FREQUENCY_CAP)
    if _quiet_hours_apply(request, settings):
        zones = time_zones_for(request.address, request.channel, recipient)
        region = region_for(request.address, request.channel, recipient)
        opening = next_open_moment(zones, region, until)
        if opening is None:
            return Deny(
                f"quiet hours leave no moment in the next week that is inside the window in all of "
                f"{len(zones)} possible time zones{_region_label(region)}",
                DenyCode.NO_SENDING_WINDOW,
            )
        if opening > until:
            reasons.append(_quiet_hours_reason(zones, region, until, opening))
            codes.append(DeferCode.QUIET_HOURS)
            until = opening
    if until == now:
        return Allow()
    return Defer(until=until, reason="; ".join(reasons), codes=tuple(codes))


def _quiet_hours_apply(request: SendRequest, settings: PolicySettings) -> bool:
    return (
        settings.quiet_hours
        and request.purpose in settings.quiet_hours_purposes
        and request.channel in settings.quiet_hours_channels
    )


def _cap_threshold(
    cap: FrequencyCap, recent_sends: Sequence[datetime], now: datetime
) -> tuple[datetime, int]:
    """A moment at or after `now` when one more send keeps every rolling window under the cap
    (a send exactly `window` old has left it), and how many sends are counted now.

    With only past sends it is the earliest such moment. Planned sends (after `now`) are counted
    too: if at least `limit` moments lie after `now - window`, the answer is the moment the
    `limit`-th newest of them is `window` old. A window containing that moment, or any later
    one, begins no earlier than that `limit`-th newest send and so leaves it and all older ones
    out: it holds at most `limit - 1` of the others, whenever the planned ones go. (An earlier
    allowed moment may exist between planned sends; it is not searched for.)"""
    counted = sorted(sent for sent in recent_sends if sent > now - cap.window)
    if len(counted) < cap.limit:
        return now, len(counted)
    # Enough of the oldest must age out that `limit - 1` remain.
    return (counted[len(counted) - cap.limit] + cap.window).astimezone(UTC), len(counted)


# --- quiet hours -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DailyWindow:
    """Local wall-clock times between which messages may go: opens <= t < closes."""

    opens: time
    closes: time

    def __and__(self, other: DailyWindow) -> DailyWindow:
        return DailyWindow(max(self.opens, other.opens), min(self.closes, other.closes))

    def __str__(self) -> str:
        return f"{self.opens:%H:%M}–{self.closes:%H:%M}"


def _hours(opens: int, closes: int) -> DailyWindow:
    return DailyWindow(time(opens), time(closes))


# 47 CFR 64.1200(c)(1) and Regulation F 1006.6(b)(1)(i): 8 a.m. to 9 p.m. at the recipient.
FEDERAL_WINDOW = _hours(8, 21)

# Stricter state windows, by weekday (Monday first), from shared/reference/compliance-and-peers.md.
# They apply on top of the federal window to every purpose quiet hours cover. Holidays are not
# modelled.
STATE_WINDOWS: Mapping[str, tuple[DailyWindow, ...]] = {
    "FL": (_hours(8, 20),) * 7,
    "MD": (_hours(8, 20),) * 7,
    "MS": (_hours(8, 20),) * 7,
    "NJ": (_hours(8, 20),) * 7,
    "OK": (_hours(8, 20),) * 7,
    "CT": (_hours(9, 20),) * 7,
    "RI": (_hours(9, 18),) * 5 + (_hours(10, 17),) * 2,  # weekends shorter
    "TX": (_hours(9, 21),) * 6 + (_hours(12, 21),),  # Sunday from noon
}

_STATE_NAMES = {
    "Florida": "FL",
    "Maryland": "MD",
    "Mississippi": "MS",
    "New Jersey": "NJ",
    "Oklahoma": "OK",
    "Connecticut": "CT",
    "Rhode Island": "RI",
    "Texas": "TX",
}

# Where an address cannot be placed (email without a stored zone, an unknown number) the
# recipient may be anywhere in the continental US: only the moments inside the window in all of
# these zones are used. New York and Los Angeles bound it; Phoenix (no DST) never narrows it
# further but is listed so the set is what it says.
CONTINENTAL_US_ZONES = (
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Phoenix",
    "America/Los_Angeles",
)

# A week covers every weekday pattern; one more day covers starting late on the last one.
_SEARCH_HORIZON = timedelta(days=8)


def daily_window(region: str | None, weekday: int) -> DailyWindow:
    """The window in force in `region` (a US state code or None) on `weekday` (Monday is 0)."""
    state = STATE_WINDOWS.get(region) if region else None
    return FEDERAL_WINDOW & state[weekday] if state else FEDERAL_WINDOW


@functools.lru_cache(maxsize=4096)
def local_window(zone: str, region: str | None, day: date) -> tuple[datetime, datetime] | None:
    """The moments of local date `day` in `zone` when messages may go, as aware UTC
    (opens, closes), closes excluded; None when the window is empty that day.

    A boundary that falls in a DST gap or overlap is read on the safe side: the window opens at
    the later of the two readings of an ambiguous or missing wall time and closes at the earlier.
    """
    window = daily_window(region, day.weekday())
    tz = _zone(zone)
    opens = max(_wall_time_readings(day, window.opens, tz))
    closes = min(_wall_time_readings(day, window.closes, tz))
    return (opens, closes) if opens < closes else None


def _wall_time_readings(day: date, wall_time: time, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """Both PEP 495 readings (fold 0 and 1) of a local wall time, in UTC. They differ only when
    the wall time is ambiguous (clocks went back) or missing (clocks went forward)."""
    return (
        datetime.combine(day, wall_time, tzinfo=tz).astimezone(UTC),
        datetime.combine(day, wall_time.replace(fold=1), tzinfo=tz).astimezone(UTC),
    )


def _open_moment_in_zone(zone: str, region: str | None, at: datetime) -> datetime | None:
    """The earliest moment at or after `at` inside `zone`'s window; None if the horizon holds none."""
    day = at.astimezone(_zone(zone)).date()
    last_day = day + _SEARCH_HORIZON
    while day <= last_day:
        window = local_window(zone, region, day)
        if window is not None and at < window[1]:
            return max(at, window[0])
        day += timedelta(days=1)
    return None


def next_open_moment(zones: Sequence[str], region: str | None, at: datetime) -> datetime | None:
    """The earliest moment at or after `at` (aware) that is inside the window of every zone,
    or None when there is none within a week (zones too far apart for a short state window).

    Each zone moves the candidate to its own next opening until no zone moves it; a moment
    inside all windows is never skipped, because no zone moves past its own next open moment.
    Progress is strictly forward, and the horizon bounds the loop.
    """
    candidate = at.astimezone(UTC)
    limit = candidate + _SEARCH_HORIZON
    while candidate <= limit:
        moved = False
        for zone in zones:
            opening = _open_moment_in_zone(zone, region, candidate)
            if opening is None:
                return None
            if opening > candidate:
                candidate, moved = opening, True
        if not moved:
            return candidate
    return None


def time_zones_for(address: str, channel: Channel, recipient: Recipient) -> tuple[str, ...]:
    """The IANA zones the recipient may be in, every one of which quiet hours must respect.

    1. `recipient.time_zone` when it names a real zone (an unknown name is ignored);
    2. for a phone number (text, call, WhatsApp; chat when the address is E.164), the zones of
       its prefix from `phonenumbers` (one for most numbers, 42 for US toll-free numbers);
    3. otherwise, and for numbers whose zone is unknown, `CONTINENTAL_US_ZONES`.
    """
    if recipient.time_zone and _is_known_zone(recipient.time_zone):
        return (recipient.time_zone,)
    if _is_phone(address, channel):
        zones = _zones_for_number(address)
        if zones:
            return zones
    return CONTINENTAL_US_ZONES


def region_for(address: str, channel: Channel, recipient: Recipient) -> str | None:
    """The US state whose stricter window applies, or None for the federal window alone.

    `recipient.region` (from the contact's postal address) wins. Otherwise the state comes from
    the number's area code through the `phonenumbers` geocoder, which names either a place
    ("San Francisco, CA") or a whole state ("Florida"). Area codes travel with ported and mobile
    numbers, so this is a proxy, the one regulators and carriers use when nothing better is
    known. Toll-free and non-US numbers and email addresses give no state.
    """
    if recipient.region:
        return recipient.region.strip().upper()
    if _is_phone(address, channel):
        return _state_for_number(address)
    return None


def _is_phone(address: str, channel: Channel) -> bool:
    return channel in PHONE_CHANNELS or (channel is Channel.CHAT and address.startswith("+"))


@functools.lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@functools.lru_cache(maxsize=1024)
def _is_known_zone(name: str) -> bool:
    try:
        _zone(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


@functools.lru_cache(maxsize=65536)
def _parse_number(address: str) -> phonenumbers.PhoneNumber | None:
    """The parsed number, valid or not: `phonenumbers` places an invalid number nowhere (zone
    'Etc/Unknown', no description), which is what the callers need."""
    try:
        return phonenumbers.parse(address, None)
    except phonenumbers.NumberParseException:
        return None


@functools.lru_cache(maxsize=65536)
def _zones_for_number(address: str) -> tuple[str, ...]:
    """The number's zones that tzdata knows; () when there are none. This drops 'Etc/Unknown',
    which `phonenumbers` gives invalid numbers, and any name newer than the installed tzdata."""
    number = _parse_number(address)
    if number is None:
        return ()
    return tuple(zone for zone in phone_time_zones.time_zones_for_number(number) if _is_known_zone(zone))


@functools.lru_cache(maxsize=65536)
def _state_for_number(address: str) -> str | None:
    number = _parse_number(address)
    if number is None or phonenumbers.region_code_for_number(number) != "US":
        return None
    # Imported here: the geocoder's data takes about 0.3 s to load, which importers of the
    # domain should not pay until a number actually needs placing.
    from phonenumbers import geocoder

    place = geocoder.description_for_number(number, "en")
    if place in _STATE_NAMES:
        return _STATE_NAMES[place]
    _, comma, suffix = place.rpartition(", ")
    return suffix if comma and len(suffix) == 2 and suffix.isupper() else None


# --- wording -----------------------------------------------------------------------------------


def _quiet_hours_reason(zones: Sequence[str], region: str | None, at: datetime, opening: datetime) -> str:
    """Names the first zone that is outside its window at `at`, its local time, its window and
    when the message may go, in that zone's local time."""
    zone = next(z for z in zones if _open_moment_in_zone(z, region, at) != at)
    tz = _zone(zone)
    local_at = at.astimezone(tz)
    local_opening = opening.astimezone(tz)
    window = daily_window(region, local_at.weekday())
    scope = _region_label(region) or " (federal)"
    spread = (
        f"; the number may be in any of {len(zones)} time zones and a message goes only when "
        f"every one of them is inside its window"
        if len(zones) > 1
        else ""
    )
    return (
        f"quiet hours: it is {local_at:%a %H:%M} in {zone}, outside {window}{scope}{spread}; "
        f"the message may go at {local_opening:%a %Y-%m-%d %H:%M} {zone} time ({opening:%H:%M} UTC)"
    )


def _region_label(region: str | None) -> str:
    return f" ({region} rules)" if region in STATE_WINDOWS else ""


def _describe_span(span: timedelta) -> str:
    if span % timedelta(days=1) == timedelta(0):
        return f"{span.days} days" if span.days != 1 else "1 day"
    if span % timedelta(hours=1) == timedelta(0):
        hours = span // timedelta(hours=1)
        return f"{hours} hours" if hours != 1 else "1 hour"
    return f"{span // timedelta(minutes=1)} minutes"
