"""What every REST route shares: reading and validating bodies and query strings, documenting the
route in the OpenAPI document, and turning rows into response bodies.

Status codes for bad input, everywhere:
- 400: the body is not JSON, or a value has the wrong JSON type (a string where a number goes);
- 413: the body is over the size limit (Sanic refuses it before any handler runs);
- 415: a body that is not `application/json`;
- 422: well-formed JSON the rules refuse (unknown channel, missing field, invalid phone number).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import date
from typing import Any, TypeVar

from pydantic import ValidationError
from sanic import Request
from sanic.response import HTTPResponse
from sanic.response import json as json_response
from sanic_ext.extensions.openapi import openapi

from ..bootstrap import System
from ..domain.addresses import channels_for_kind
from ..domain.commands import Command
from ..domain.model import Consent, NotFound
from ..domain.records import Enrollment, Message
from ..service_layer.handlers import ActionResult
from ..service_layer.unit_of_work import UnitOfWork
from .auth import RANK, Caller, require
from .errors import ApiError
from .schemas import (
    MAX_ID,
    ActionOut,
    AddressOut,
    ApiModel,
    ConsentOut,
    ContactOut,
    DndOut,
    EnrollmentOut,
    EnrollmentStepOut,
    ErrorOut,
    MessageOut,
)

M = TypeVar("M", bound=ApiModel)
E = TypeVar("E", bound=enum.StrEnum)
Handler = Callable[..., Any]

SECURITY_SCHEME = "token"
JSON_TYPES = ("application/json", "application/merge-patch+json")


ERROR_DESCRIPTIONS = {
    400: "Malformed JSON, or a value of the wrong type.",
    401: "No valid API token (send `Authorization: Bearer <token>`).",
    403: "Your role may not do this.",
    404: "No such contact, message or enrolment in your organisation.",
    409: "Refused by the consent rules; `error.code` says why (e.g. `opted_out`, `dnd`).",
    413: "The body is larger than the server accepts.",
    415: "The body is not JSON.",
    422: "Valid JSON that breaks a rule: `error.message` names the field.",
}


# ------------------------------------------------------------------------------------ request side


def system_of(request: Request) -> System:
    system: System = request.app.ctx.system
    return system


def caller_of(request: Request) -> Caller:
    caller: Caller = request.ctx.caller
    return caller


def _is_type_error(error: Mapping[str, Any]) -> bool:
    """Whether a pydantic error means "not JSON, or the wrong JSON type" (400) rather than "the
    value breaks a rule" (422): `json_invalid`, `string_type`, `int_type`, `datetime_parsing` ..."""
    kind = str(error["type"])
    if kind in ("enum", "literal_error"):  # the choices are strings: anything else is the wrong type
        return not isinstance(error.get("input"), str)
    return kind == "json_invalid" or kind.endswith(("_type", "_parsing"))


def describe_errors(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error["loc"]) or "body"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def read_body(request: Request, model: type[M]) -> M:
    """The request body validated against `model`, or the right 4xx saying what is wrong."""
    body = request.body or b""
    if not body.strip():
        raise ApiError(400, "body_required", "this request needs a JSON body")
    media_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if media_type not in JSON_TYPES and not media_type.endswith("+json"):
        raise ApiError(415, "unsupported_media_type",
                       f"send the body as JSON with 'Content-Type: application/json', not {media_type or 'nothing'!r}")
    try:
        return model.model_validate_json(body, strict=True)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if any(_is_type_error(e) for e in errors):
            raise ApiError(400, "bad_request", describe_errors(exc)) from None
        raise ApiError(422, "invalid_input", describe_errors(exc)) from None


def path_id(value: int, what: str) -> int:
    """Ids outside the database's range name no row: 404 rather than a driver overflow."""
    if not 1 <= value <= MAX_ID:
        raise NotFound(f"no {what} with id {value}", code=f"{what}_not_found")
    return value


_INTEGER = re.compile(r"-?[0-9]+")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def query_value(request: Request, name: str) -> str | None:
    """A query parameter as sent: None when absent, "" when sent empty (`?to=`)."""
    value = request.get_args(keep_blank_values=True).get(name)
    return None if value is None else str(value)


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = query_value(request, name)
    if raw is None:
        return default
    if not _INTEGER.fullmatch(raw):
        raise ApiError(400, "bad_request", f"{name} must be an integer, not {raw!r}")
    value = int(raw)
    if not low <= value <= high:
        raise ApiError(422, "invalid_input", f"{name} must be between {low} and {high}")
    return value


def query_bool(request: Request, name: str, default: bool) -> bool:
    raw = query_value(request, name)
    if raw is None:
        return default
    if raw not in ("true", "false"):
        raise ApiError(422, "invalid_input", f"{name} must be true or false, not {raw[:40]!r}")
    return raw == "true"


def query_choice(request: Request, name: str, choices: type[E]) -> E | None:
    """One value of the string enum `choices`, or None when the parameter is absent."""
    raw = query_value(request, name)
    if raw is None:
        return None
    try:
        return choices(raw)
    except ValueError:
        allowed = ", ".join(str(choice.value) for choice in choices)
        raise ApiError(422, "invalid_input", f"{name} must be one of {allowed}, not {raw[:40]!r}") from None


def query_date(request: Request, name: str) -> date | None:
    raw = query_value(request, name)
    if raw is None:
        return None
    try:
        if not _DATE.fullmatch(raw):
            raise ValueError(raw)
        return date.fromisoformat(raw)
    except ValueError:
        raise ApiError(400, "bad_request", f"{name} must be a date like 2027-03-01, not {raw!r}") from None


# ------------------------------------------------------------------------------------ documentation


def route(role: str, *, ok: tuple[int, type[ApiModel] | dict[str, Any], str], body: type[ApiModel] | None = None,
          errors: Iterable[int] = (), params: Iterable[openapi.definitions.Parameter] = (),
          tag: str) -> Callable[[Handler], Handler]:
    """Authorise the caller (`role` or higher) and document the route: its body, its answer and
    every error status it can give."""
    statuses = {401, *errors}
    if RANK[role] > RANK["agent"]:
        statuses.add(403)
    if body is not None:
        statuses |= {400, 413, 415, 422}
    status, content, description = ok

    def decorate(handler: Handler) -> Handler:
        wrapped = require(role)(handler)
        wrapped = openapi.tag(tag)(wrapped)
        wrapped = openapi.secured(SECURITY_SCHEME)(wrapped)
        media = content if isinstance(content, dict) else {"application/json": openapi.Component(content)}
        wrapped = openapi.response(status, media, description)(wrapped)
        for code in sorted(statuses):
            wrapped = openapi.response(code, {"application/json": openapi.Component(ErrorOut)},
                                       ERROR_DESCRIPTIONS[code])(wrapped)
        for param in params:
            wrapped = openapi.parameter(parameter=param)(wrapped)
        if body is not None:
            wrapped = openapi.body({"application/json": openapi.Component(body)}, required=True)(wrapped)
        return wrapped

    return decorate


def id_param(name: str, description: str) -> openapi.definitions.Parameter:
    return openapi.definitions.Parameter(name, openapi.Long(minimum=1, maximum=MAX_ID), "path",
                                         description=description, required=True)


def query_param(name: str, schema: Any, description: str) -> openapi.definitions.Parameter:
    return openapi.definitions.Parameter(name, schema, "query", description=description, required=False)


def respond(model: ApiModel, status: int = 200, headers: Mapping[str, str] | None = None) -> HTTPResponse:
    return json_response(model.model_dump(mode="json"), status=status, headers=dict(headers or {}))


async def handle(request: Request, command: Command) -> Any:
    """Run a command through the worker's group commit (`CommandGateway`): the transaction design
    of the webhooks, and the event loop never waits for the database's write lock."""
    return await request.app.ctx.commands.submit(command)


async def run_action(request: Request, command: Command, contact_id: int, *,
                     hide_channel: bool = False) -> HTTPResponse:
    """Run an agent action through the bus and answer with its outcome and the contact after it
    (`hide_channel`: the action was on every channel, so no one channel and state is its result)."""
    system = system_of(request)
    result: ActionResult = await handle(request, command)
    with system.bus.uow(read_only=True) as uow:
        contact = contact_out(uow, caller_of(request).org_id, contact_id)
    return respond(ActionOut(
        contact_id=result.contact_id, channel=None if hide_channel else result.channel,
        state=None if hide_channel else result.state, status=result.status, message_id=result.message_id,
        detail=result.detail, contact=contact,
    ))


# ------------------------------------------------------------------------------------ views of rows


def _consent_out(consent: Consent) -> ConsentOut:
    return ConsentOut(channel=consent.channel, address=consent.address, state=consent.state,
                      awaiting_pin=consent.awaiting_pin, method=consent.method, requested_at=consent.requested_at,
                      opted_in_at=consent.opted_in_at, opted_out_at=consent.opted_out_at,
                      do_not_contact=consent.do_not_contact, do_not_contact_at=consent.do_not_contact_at)


def contact_out(uow: UnitOfWork, org_id: int, contact_id: int) -> ContactOut:
    """The contact with its addresses and the consent of every (address, channel) it can be
    reached on (`unknown` where nothing was ever recorded)."""
    row = uow.contacts.get(org_id, contact_id)
    dnd = row.dnd
    addresses = uow.contacts.addresses(contact_id)
    stored = {(k.address, k.channel): k for k in uow.consents.for_addresses(org_id, [a.value for a in addresses])}
    consents = []
    for address in addresses:
        for channel in channels_for_kind(address.kind):
            default = Consent(channel=channel, address=address.value)
            consents.append(stored.pop((address.value, channel), default))
    consents.extend(stored.values())  # e.g. chat consents on a phone number
    return ContactOut(
        id=row.id, name=row.name, time_zone=row.time_zone, region=row.region, language=row.language,
        fields=row.fields(), active=row.active, do_not_call=row.do_not_call, marketing_allowed=row.marketing_allowed,
        dnd=DndOut(all_channels=dnd.all_channels, channels=sorted(dnd.channels)),
        addresses=[AddressOut(kind=a.kind, value=a.value, **a.phone_flags()) for a in addresses],
        consents=[_consent_out(k) for k in consents],
        created_at=row.created_at, updated_at=row.updated_at, external_id=row.external_id,
    )


def message_out(row: Message) -> MessageOut:
    return MessageOut(
        id=row.id, contact_id=row.contact_id, direction=row.direction, audience=row.audience,
        channel=row.channel, address=row.address, body=row.body, subject=row.subject,
        purpose=row.purpose, kind=row.kind, status=row.status, intent=row.intent,
        created_at=row.created_at, not_before=row.not_before, sent_at=row.sent_at,
        last_error=row.last_error,
    )


def enrollment_out(uow: UnitOfWork, row: Enrollment) -> EnrollmentOut:
    return EnrollmentOut(
        id=row.id, flow=row.flow_name, flow_version=row.flow_version, status=row.status,
        next_run_at=row.next_run_at, started_at=row.started_at, ended_at=row.ended_at,
        end_reason=row.end_reason,
        steps=[EnrollmentStepOut(step=s["step"], outcome=s["outcome"], at=s["at"])
               for s in uow.enrollments.history(row.id)],
    )
