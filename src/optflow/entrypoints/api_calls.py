"""Diallers and the bounce mailbox: /api/v1/checks, /api/v1/attempts, /api/v1/bounces/dsn.

optflow does not dial. A dialler asks before each call whether the policy allows it now (the
same decision a send gets: consent and mode, do-not-contact, DND, quiet hours in the callee's
time, frequency caps such as Reg F's 7 calls in 7 days) and reports each call it placed, which
then counts against the caps; an agent's "do not call me" outcome is an opt-out of calls.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import Field, model_validator
from sanic import Blueprint, Request
from sanic.response import HTTPResponse
from sanic_ext.extensions.openapi import openapi

from ..domain import commands as c
from ..domain import mail_feedback
from ..domain.addresses import PHONE_CHANNELS, normalize_phone
from ..domain.model import Channel, InvalidInput, Purpose, State
from ..domain.policy import Allow, Defer
from ..service_layer.delivery_signals import AttemptResult, MailFeedbackResult, check_call
from ..service_layer.unit_of_work import UnitOfWork
from .api_common import caller_of, handle, read_body, respond, route, system_of
from .errors import ApiError
from .schemas import Address, ApiModel, Id

TAG = "diallers"
# A check may ask about a moment a little in the past (clocks differ) or in the future.
CHECK_PAST_TOLERANCE = timedelta(minutes=5)
CHECK_HORIZON = timedelta(days=31)
REPORT_MEDIA_TYPES = ("message/rfc822", "application/octet-stream")
# The outcomes `delivery_signals.CALL_OUTCOMES` knows, as the schema's enum (a test holds them equal).
CallOutcome = Literal["connected", "no_answer", "busy", "voicemail", "failed", "wrong_number", "do_not_call"]


class _Callee(ApiModel):
    contact_id: Id | None = Field(default=None, description="The contact called; with `number`, one of theirs.")
    number: Address | None = Field(default=None, description="The number called (E.164); default: the "
                                                             "contact's first phone number.")

    @model_validator(mode="after")
    def _someone(self) -> _Callee:
        if self.contact_id is None and self.number is None:
            raise ValueError("give contact_id or number (or both)")
        return self


class CheckIn(_Callee):
    channel: Channel = Field(default=Channel.CALL, description="`call` (default), `text` or `whatsapp`.")
    purpose: Purpose = Purpose.TRANSACTIONAL
    at: datetime | None = Field(default=None, description="The moment asked about; default now. Not more than 5 "
                                                          "minutes in the past. Without an offset: UTC.")


class CheckOut(ApiModel):
    decision: Literal["allow", "defer", "deny"]
    until: datetime | None = Field(description="`defer`: the earliest moment the call may be placed.")
    reason: str | None = Field(description="Why not now, in words (`defer`, `deny`).")
    code: str | None = Field(description="`deny`: the refusal's code (`opted_out`, `no_consent`, `dnd`, ...); "
                                         "`defer`: `quiet_hours` and/or `frequency_cap`.")
    number: str
    contact_id: int | None
    consent_state: State


class AttemptIn(_Callee):
    outcome: CallOutcome = Field(description="`do_not_call`: the person asked not to be called (an opt-out).")
    placed_at: datetime | None = Field(default=None, description="When the call was placed; default now. "
                                                                 "Without an offset: UTC.")
    purpose: Purpose = Purpose.TRANSACTIONAL
    note: str | None = Field(default=None, max_length=500)


class AttemptOut(ApiModel):
    message_id: int
    contact_id: int | None
    number: str
    consent_state: State = Field(description="The number's call consent after the attempt.")


class BouncesOut(ApiModel):
    bounced: int
    complained: int
    unchanged: int = Field(description="Already on do-not-contact with that reason.")
    invalid: int = Field(description="Reported addresses that are not email addresses.")


def _aware(moment: datetime | None, now: datetime) -> datetime:
    if moment is None:
        return now
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _number(uow: UnitOfWork, org_id: int, body: _Callee) -> str:
    """The number called: the one given (E.164), or the contact's first phone number."""
    if body.number is not None:
        return normalize_phone(body.number)
    assert body.contact_id is not None
    uow.contacts.get(org_id, body.contact_id)
    phones = [a.value for a in uow.contacts.addresses(body.contact_id) if a.kind == "phone"]
    if not phones:
        raise InvalidInput(f"contact {body.contact_id} has no phone number", code="no_address")
    return phones[0]


def register(bp: Blueprint) -> None:
    @bp.post("/checks")
    @route("agent", body=CheckIn, ok=(200, CheckOut, "The policy's answer."), errors=(404,), tag=TAG)
    async def check(request: Request) -> HTTPResponse:
        """May this call (or message) go now? A dialler asks before each call.

        The answer comes from the policy every send gets: `deny` with the reason (opted out, no
        consent, do-not-contact, DND, ...), `defer` until a moment (quiet hours in the callee's
        time, frequency caps such as Reg F's 7 calls in 7 days, counting the calls reported to
        `/attempts`), or `allow`. Nothing is stored.
        """
        body = read_body(request, CheckIn)
        caller = caller_of(request)
        system = system_of(request)
        now = system.clock()
        at = _aware(body.at, now)
        if not now - CHECK_PAST_TOLERANCE <= at <= now + CHECK_HORIZON:
            raise InvalidInput("at must be between 5 minutes ago and 31 days ahead", code="invalid_time")
        if body.channel not in PHONE_CHANNELS:
            raise InvalidInput("checks are for calls, texts and WhatsApp: a number's channels", code="invalid_channel")
        with system.bus.uow(read_only=True) as uow:
            number = _number(uow, caller.org_id, body)
            decision = check_call(uow, caller.org_id, number, body.contact_id, body.channel, body.purpose, at)
            contact_id = body.contact_id if body.contact_id is not None else uow.contacts.find_by_address(
                caller.org_id, number)
            state = uow.consents.get(caller.org_id, number, body.channel).state
        if isinstance(decision, Allow):
            answer = CheckOut(decision="allow", until=None, reason=None, code=None, number=number,
                              contact_id=contact_id, consent_state=state)
        elif isinstance(decision, Defer):
            answer = CheckOut(decision="defer", until=decision.until, reason=decision.reason,
                              code=",".join(decision.codes) or None, number=number, contact_id=contact_id,
                              consent_state=state)
        else:
            answer = CheckOut(decision="deny", until=None, reason=decision.reason, code=decision.code, number=number,
                              contact_id=contact_id, consent_state=state)
        return respond(answer)

    @bp.post("/attempts")
    @route("agent", body=AttemptIn, ok=(201, AttemptOut, "Recorded."), errors=(404,), tag=TAG)
    async def attempt(request: Request) -> HTTPResponse:
        """Record a call a dialler placed (connected or not).

        It counts against the frequency caps from `placed_at` on, like a message handed to a
        provider. The outcome `do_not_call` opts the number out of calls, with the calling agent
        (the token's) as actor and method `verbal`.
        """
        body = read_body(request, AttemptIn)
        caller = caller_of(request)
        system = system_of(request)
        now = system.clock()
        placed_at = _aware(body.placed_at, now)
        with system.bus.uow(read_only=True) as uow:
            number = _number(uow, caller.org_id, body)
        result: AttemptResult = await handle(request, c.RecordCallAttempt(
            caller.org_id, number, caller.actor, placed_at, body.outcome, body.purpose, body.contact_id, body.note))
        return respond(AttemptOut(message_id=result.message_id, contact_id=result.contact_id, number=number,
                                  consent_state=result.state), 201)

    @bp.post("/bounces/dsn")
    @openapi.body({media: {"schema": {"type": "string", "format": "binary"}} for media in REPORT_MEDIA_TYPES},
                  required=True)
    @route("supervisor", ok=(200, BouncesOut, "What the report changed."), errors=(400, 413, 415, 422),
           tag="bounces")
    async def bounce_report(request: Request) -> HTTPResponse:
        """The bounce mailbox over HTTP: one RFC 822 message (`Content-Type: message/rfc822`, or
        `application/octet-stream` for clients that cannot name it).

        An RFC 3464 delivery status notification (or a bounce in a known non-standard format)
        puts each permanently failed address on email do-not-contact (`bounced`); an RFC 5965
        ARF report is a spam complaint (an opt-out of email, marked `complained`). Temporary
        failures change nothing.
        """
        media_type = (request.headers.get("content-type") or "").partition(";")[0].strip().lower()
        if media_type not in REPORT_MEDIA_TYPES and (request.body or b"").strip():
            raise ApiError(415, "unsupported_media_type", "send the bounce as Content-Type: message/rfc822")
        items = mail_feedback.from_report(request.body or b"")
        caller = caller_of(request)
        result: MailFeedbackResult = await handle(request, c.ReportMailFeedback(
            caller.org_id, tuple(items), "bounce_mailbox"))
        return respond(BouncesOut(bounced=result.bounced, complained=result.complained, unchanged=result.unchanged,
                                  invalid=len(result.invalid)))

