"""Inbound webhooks: Twilio SMS/WhatsApp, signed chat gateways, and one-click unsubscribe.

Each route authenticates the caller, turns the request into a command, hands it to the bus
(through `app.ctx.commands` for customer messages) and renders the answer. De-duplication,
classification, the consent transition and the reply all happen in the service layer.
"""

from __future__ import annotations

import hmac
import html
import json
import logging
import secrets
import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

from sanic import Blueprint, Request, Sanic
from sanic.request import RequestParameters
from sanic.response import HTTPResponse
from sanic.response import html as html_response
from sanic.response import json as json_response
from sanic_ext import openapi
from twilio.request_validator import RequestValidator

from ..bootstrap import System
from ..config import TWILIO_STATUS_PATH, Config
from ..domain import commands as c
from ..domain import mail_feedback
from ..domain.addresses import normalize_for_channel
from ..domain.model import Actor, ActorKind, Channel, InvalidInput, NotFound
from ..domain.settings import OrgSettings
from ..domain.signatures import verify_webhook_signature
from ..domain.text import storable
from ..domain.tokens import UnsubscribeTarget, read_token
from ..service_layer.delivery_signals import DeliveryReportResult, MailFeedbackResult
from ..service_layer.handlers import InboundResult
from .api_common import query_value
from .errors import ApiError
from .schemas import MAX_ID

log = logging.getLogger("optflow.webhooks")

TWILIO_PATH = "/webhooks/twilio/sms"
CHAT_PATH = "/webhooks/chat"
TWILIO_SIGNATURE_HEADER = "X-Twilio-Signature"
CHAT_SIGNATURE_HEADER = "X-Optflow-Signature"
WHATSAPP_PREFIX = "whatsapp:"
ONE_CLICK_ACTOR = Actor(ActorKind.SYSTEM, "one-click")
ONE_CLICK_METHOD = "one_click_unsubscribe"
CHAT_CHANNELS = {"chat": Channel.CHAT, "whatsapp": Channel.WHATSAPP}
# Form fields that must come once: with two `Body` or `From` values, which one the signature,
# the classifier and the stored record each took would depend on the parser.
SINGLE_VALUED_TWILIO_FIELDS = ("Body", "From", "To", "MessageSid", "OptOutType")
DEMO_CUSTOMER_NUMBER = "+14155550100"
STATUS_FIELDS = ("MessageSid", "MessageStatus", "ErrorCode", "From", "To")


def webhooks_blueprint() -> Blueprint:
    bp = Blueprint("webhooks")

    @bp.before_server_start
    async def warn_when_unsigned(app: Sanic, _: Any = None) -> None:
        if app.ctx.config.skip_signature_check:
            log.warning("webhook signatures are NOT checked (--dev-skip-signatures): anyone who can reach "
                        "this server can opt contacts in and out; never run like this in production")

    @bp.on_request
    async def start_timer(request: Request) -> None:
        request.ctx.started = time.perf_counter()

    @bp.on_response
    async def record_timing(request: Request, response: HTTPResponse) -> None:
        started = getattr(request.ctx, "started", None)
        if started is not None and request.route is not None:
            request.app.ctx.metrics.webhook_answered(request.route.name.rpartition(".")[2], response.status,
                                                     time.perf_counter() - started)

    @bp.post(TWILIO_PATH, name="twilio_sms")
    @openapi.exclude()
    async def twilio_sms(request: Request) -> HTTPResponse:
        """Twilio's inbound message webhook (SMS, and WhatsApp when `From` starts with
        `whatsapp:`). Answers TwiML: one <Message> per reply."""
        # Twilio signs every parameter it sends, empty ones included.
        form: RequestParameters = request.get_form(keep_blank_values=True) or RequestParameters()
        _refuse_repeated_fields(form)
        to = _required(form, "To")
        config: Config = request.app.ctx.config

        def check(settings: OrgSettings) -> None:
            if not config.skip_signature_check:
                _check_twilio_signature(request, settings.twilio_auth_token or config.twilio_auth_token, form)

        org_id, _ = request.app.ctx.orgs.authenticated(_e164(to), check)
        # Signed as received; stored only once made storable (a NUL must not lose a STOP).
        sender = storable(_required(form, "From"))
        body = storable(_required(form, "Body"))
        channel = Channel.WHATSAPP if sender.lower().startswith(WHATSAPP_PREFIX) else Channel.TEXT
        result: InboundResult = await request.app.ctx.commands.submit(c.ReceiveInbound(
            channel=channel, from_address=sender, to_address=storable(to), body=body,
            provider_id=storable(form.get("MessageSid") or "") or None,
            opt_out_type=storable(form.get("OptOutType") or "") or None, org_id=org_id), request.ctx.started)
        return HTTPResponse(twiml_replies(result.replies), content_type="text/xml; charset=utf-8")

    @bp.post(CHAT_PATH, name="chat")
    @openapi.exclude()
    async def chat(request: Request) -> HTTPResponse:
        """A chat or WhatsApp gateway's inbound message: JSON signed with X-Optflow-Signature."""
        media_type = (request.headers.get("content-type") or "").partition(";")[0].strip().lower()
        if media_type != "application/json" and not media_type.endswith("+json"):
            raise ApiError(415, "unsupported_media_type", "send the message as application/json")
        config: Config = request.app.ctx.config
        signature = request.headers.get(CHAT_SIGNATURE_HEADER)
        if not signature and not config.skip_signature_check:
            raise ApiError(403, "forbidden", f"missing {CHAT_SIGNATURE_HEADER} header")
        message = _chat_message(request.body)

        def check(settings: OrgSettings) -> None:
            if not config.skip_signature_check:
                _check_chat_signature(settings.chat_secret or config.chat_webhook_secret, request.body, signature)

        org_id, _ = request.app.ctx.orgs.authenticated(_e164(message.to), check)
        result: InboundResult = await request.app.ctx.commands.submit(c.ReceiveInbound(
            channel=message.channel, from_address=message.sender, to_address=message.to, body=message.text,
            provider_id=message.message_id, org_id=org_id), request.ctx.started)
        return json_response({"intent": result.intent.value, "state": result.state.value,
                              "replies": list(result.replies), "duplicate": result.duplicate})

    @bp.post(TWILIO_STATUS_PATH, name="twilio_status")
    @openapi.exclude()
    async def twilio_status(request: Request) -> HTTPResponse:
        """Twilio's delivery report on a message we sent (its StatusCallback), signed like the
        inbound webhook; `From` is the org's own number. The message is found by our id in the
        query (`?message=`, set by the dispatcher) or else by `MessageSid`."""
        form: RequestParameters = request.get_form(keep_blank_values=True) or RequestParameters()
        _refuse_repeated_fields(form, STATUS_FIELDS)
        sender = _required(form, "From")
        config: Config = request.app.ctx.config

        def check(settings: OrgSettings) -> None:
            if not config.skip_signature_check:
                _check_twilio_signature(request, settings.twilio_auth_token or config.twilio_auth_token, form)

        org_id, _ = request.app.ctx.orgs.authenticated(_e164(sender), check)
        message = query_value(request, "message")
        if message is not None and not (message.isdigit() and 1 <= int(message) <= MAX_ID):
            raise ApiError(400, "bad_request", "the query parameter message must be a message id")
        error_code = storable(form.get("ErrorCode") or "").strip() or None
        result: DeliveryReportResult = await request.app.ctx.commands.submit(c.RecordDeliveryStatus(
            org_id, storable(_required(form, "MessageSid"))[:64], storable(_required(form, "MessageStatus"))[:40],
            error_code[:20] if error_code else None, int(message) if message is not None else None))
        return json_response({"message_id": result.message_id, "status": result.status.value})

    @bp.post("/webhooks/email/<org_id:int>", name="email_events")
    @openapi.exclude()
    async def email_events(request: Request, org_id: int) -> HTTPResponse:
        """A mail provider's bounce and complaint events (generic, SendGrid, Amazon SES or SNS,
        Postmark JSON), signed with the org's `email_events_secret` in X-Optflow-Signature."""
        config: Config = request.app.ctx.config
        settings = _org_settings(request, org_id)
        if not config.skip_signature_check:
            if not settings.email_events_secret:
                raise ApiError(403, "forbidden", "email events are not set up for this org (no email_events_secret)")
            if not verify_webhook_signature(settings.email_events_secret, request.body,
                                            request.headers.get(CHAT_SIGNATURE_HEADER)):
                raise ApiError(403, "forbidden", f"missing or invalid {CHAT_SIGNATURE_HEADER}")
        source, items = mail_feedback.from_provider_json(request.body)
        result: MailFeedbackResult = await request.app.ctx.commands.submit(
            c.ReportMailFeedback(org_id, tuple(items), source))
        return json_response({"format": source, "bounced": result.bounced, "complained": result.complained,
                              "unchanged": result.unchanged, "invalid": len(result.invalid)})

    @bp.get("/unsubscribe/<token:str>", name="unsubscribe_page")
    @openapi.exclude()
    async def unsubscribe_page(request: Request, token: str) -> HTTPResponse:
        """The page behind an unsubscribe link. A GET changes nothing (mail scanners open links);
        the button POSTs to the same URL."""
        system: System = request.app.ctx.system
        found = _unsubscribe_target(system, token)
        if found is None:
            return _invalid_link_page()
        target, org_name = found
        return _confirm_page(target, org_name)

    @bp.post("/unsubscribe/<token:str>", name="unsubscribe")
    @openapi.exclude()
    async def unsubscribe(request: Request, token: str) -> HTTPResponse:
        """RFC 8058 one-click unsubscribe (and the page's own button). The signed token is the only
        credential; any POST to it opts out, because mail scanners prefetch with GET, never POST."""
        system: System = request.app.ctx.system
        found = _unsubscribe_target(system, token)
        if found is None:
            return _invalid_link_page()
        target, org_name = found
        everything = _form_value(request, "scope") == "all"
        marketing_only = await unsubscribe_address(request, target, marketing_only=not everything)
        return _done_page(target, org_name, marketing_only=marketing_only)

    return bp


# ------------------------------------------------------------------------------------- Twilio


def twiml_replies(replies: Sequence[str]) -> str:
    """TwiML answering with one <Message> per reply, byte for byte what the twilio library's
    `MessagingResponse` writes (a test compares them), at a tenth of its cost: building an
    ElementTree per webhook took ~4% of a worker's time under load."""
    if not replies:
        return '<?xml version="1.0" encoding="UTF-8"?><Response />'
    messages = "".join(f"<Message>{escape(text)}</Message>" if text else "<Message />" for text in replies)
    return f'<?xml version="1.0" encoding="UTF-8"?><Response>{messages}</Response>'


def _required(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name)
    if value is None:
        raise ApiError(400, "missing_field", f"the form field {name!r} is required")
    return str(value)


def _refuse_repeated_fields(form: RequestParameters, fields: Sequence[str] = SINGLE_VALUED_TWILIO_FIELDS) -> None:
    """400 for a form that repeats a single-valued field, before anything is looked up or stored
    (`form.get` would quietly take the first value)."""
    repeated = [name for name in fields if len(form.getlist(name) or ()) > 1]
    if repeated:
        raise ApiError(400, "repeated_field", f"the form field{'s' if len(repeated) > 1 else ''} "
                                              f"{', '.join(map(repr, repeated))} must appear only once")


def _org_settings(request: Request, org_id: int) -> OrgSettings:
    """An org's settings, 404 for an id no org has."""
    system: System = request.app.ctx.system
    if not 1 <= org_id <= MAX_ID:
        raise NotFound(f"no org {org_id}", code="org_not_found")
    with system.bus.uow(read_only=True) as uow:
        uow.orgs.get(org_id)
        return uow.orgs.settings(org_id)


def _e164(number: str) -> str:
    """An org's number as the webhook names it (E.164, with or without `whatsapp:`), in E.164."""
    return normalize_for_channel(number, Channel.TEXT)


def public_url_of(request: Request, config: Config) -> str:
    """The URL the provider called and signed: the configured public base URL, the path and the
    query string as received. Behind a proxy or TLS terminator `request.url` is a different URL."""
    return config.public_url.rstrip("/") + request.raw_url.decode("utf-8", "replace")


def _check_twilio_signature(request: Request, auth_token: str | None, form: Mapping[str, Any]) -> None:
    signature = request.headers.get(TWILIO_SIGNATURE_HEADER)
    if not signature:
        raise ApiError(403, "forbidden", f"missing {TWILIO_SIGNATURE_HEADER} header")
    if not auth_token:
        raise ApiError(403, "forbidden", "no Twilio auth token is configured for this number's org")
    url = public_url_of(request, request.app.ctx.config)
    validator = RequestValidator(auth_token)
    values = _AllValues(form)
    # The exact URL first: `validate` always signs two variants of it (with and without a port).
    if not (hmac.compare_digest(validator.compute_signature(url, values).encode(), signature.encode())
            or validator.validate(url, values, signature)):
        log.warning("rejected a Twilio webhook with a wrong signature (signed URL should be %s)", url)
        raise ApiError(403, "forbidden", f"invalid {TWILIO_SIGNATURE_HEADER}")


class _AllValues(dict[str, list[str]]):
    """A parsed form as the twilio library reads repeated parameters (`getall`). Sanic's form has
    only `getlist`, and the library tries `getall` first: one AttributeError raised and caught per
    form field, on every webhook."""

    def __init__(self, form: Mapping[str, Any]) -> None:
        super().__init__((name, list(values) if isinstance(values, list) else [values])
                         for name, values in form.items())

    def getall(self, name: str) -> list[str]:
        return self[name]


# ------------------------------------------------------------------------------------- chat


@dataclass(frozen=True)
class ChatMessage:
    channel: Channel
    sender: str
    to: str
    text: str
    message_id: str


CHAT_FIELDS = ("channel", "from", "to", "text", "message_id")


class _JsonObject(dict[str, Any]):
    """A decoded JSON object that remembers which keys it had more than once (`json` keeps the last)."""

    repeated: frozenset[str] = frozenset()


def _json_object(pairs: list[tuple[str, Any]]) -> _JsonObject:
    obj = _JsonObject(pairs)
    if len(obj) < len(pairs):
        names = [name for name, _ in pairs]
        obj.repeated = frozenset(name for name in obj if names.count(name) > 1)
    return obj


def _chat_message(raw: bytes) -> ChatMessage:
    try:
        payload = json.loads(raw, object_pairs_hook=_json_object)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, "bad_request", f"the body is not valid JSON: {exc}") from None
    if not isinstance(payload, _JsonObject):
        raise ApiError(400, "bad_request", "the body must be a JSON object")
    repeated = [name for name in CHAT_FIELDS if name in payload.repeated]
    if repeated:
        raise ApiError(400, "repeated_field", f"the field{'s' if len(repeated) > 1 else ''} "
                                              f"{', '.join(map(repr, repeated))} must appear only once")
    fields: dict[str, str] = {}
    for name in CHAT_FIELDS:
        value = payload.get(name)
        if name == "message_id" and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise ApiError(400, "missing_field", f"the field {name!r} is required and must be a string")
        fields[name] = value
    channel = CHAT_CHANNELS.get(fields["channel"].strip().lower())
    if channel is None:
        raise InvalidInput(f"unsupported channel {fields['channel']!r}: use chat or whatsapp", code="unknown_channel")
    if not fields["message_id"].strip():
        raise InvalidInput("message_id must not be empty: it is how a retried message is recognised",
                           code="invalid_message_id")
    return ChatMessage(channel, storable(fields["from"]), storable(fields["to"]), storable(fields["text"]),
                       storable(fields["message_id"]))


def _check_chat_signature(secret: str | None, body: bytes, signature: str | None) -> None:
    if not secret:
        raise ApiError(403, "forbidden", "chat webhooks are not set up for this number's org (no chat_secret)")
    if not verify_webhook_signature(secret, body, signature):
        raise ApiError(403, "forbidden", f"invalid {CHAT_SIGNATURE_HEADER}")


# ------------------------------------------------------------------------------------- unsubscribe


def _unsubscribe_target(system: System, token: str) -> tuple[UnsubscribeTarget, str] | None:
    """The target of a genuine token and its org's name; None for a forged or stale link."""
    try:
        target = read_token(system.secret, token)
    except InvalidInput:
        return None
    with system.bus.uow(read_only=True) as uow:
        try:
            org = uow.orgs.get(target.org_id)
        except NotFound:
            return None
    return target, str(org.name)


def _form_value(request: Request, name: str) -> str:
    """A field of a urlencoded POST ("" when absent or the body is no form)."""
    try:
        form = request.form
    except Exception:  # a body that is no form: RFC 8058 asks for one field, nothing else counts
        return ""
    value = form.get(name) if form else None
    return value.strip().lower() if isinstance(value, str) else ""


async def unsubscribe_address(request: Request, target: UnsubscribeTarget, *, marketing_only: bool = False) -> bool:
    """Act on the link, once (a mail provider may POST twice): on email, unless the person asked
    for everything, end marketing only (`consent_rules.unsubscribe_ends_marketing_only`);
    otherwise opt the address out on the token's channel. True when only marketing ended."""
    result = await request.app.ctx.commands.submit(c.OptOutAddress(
        target.org_id, target.address, target.channel, ONE_CLICK_ACTOR, method=ONE_CLICK_METHOD,
        evidence="unsubscribe link (RFC 8058 one-click POST)" if marketing_only
        else "unsubscribe link: stop everything on the channel", marketing_only=marketing_only))
    return getattr(result, "status", None) == "marketing_off"


def _channel_words(channel: Channel) -> str:
    return {Channel.EMAIL: "emails", Channel.CALL: "calls", Channel.TEXT: "text messages",
            Channel.WHATSAPP: "WhatsApp messages", Channel.CHAT: "chat messages"}[channel]


def _confirm_page(target: UnsubscribeTarget, org_name: str) -> HTTPResponse:
    if target.channel is Channel.EMAIL:
        return _page("Unsubscribe", f"""
<h1>Stop these emails?</h1>
<p>Stop marketing emails from <strong>{html.escape(org_name)}</strong> to
<strong>{html.escape(target.address)}</strong>: you still get receipts and other messages about
what you bought or asked for. Or stop every email from them.</p>
<form method="post">
  <input type="hidden" name="List-Unsubscribe" value="One-Click">
  <button type="submit" name="scope" value="marketing">Stop marketing emails</button>
  <button type="submit" name="scope" value="all">Stop all emails</button>
</form>""")
    return _page("Unsubscribe", f"""
<h1>Stop these messages?</h1>
<p>Press the button to stop {_channel_words(target.channel)} from <strong>{html.escape(org_name)}</strong>
to <strong>{html.escape(target.address)}</strong>.</p>
<form method="post">
  <input type="hidden" name="List-Unsubscribe" value="One-Click">
  <button type="submit">Unsubscribe</button>
</form>""")


def _done_page(target: UnsubscribeTarget, org_name: str, *, marketing_only: bool = False) -> HTTPResponse:
    if marketing_only:
        return _page("Unsubscribed", f"""
<h1>You are unsubscribed from marketing emails</h1>
<p>{html.escape(target.address)} will get no more marketing emails from
<strong>{html.escape(org_name)}</strong>; receipts and other messages about what you bought or asked
for still come. You can close this page.</p>""")
    return _page("Unsubscribed", f"""
<h1>You are unsubscribed</h1>
<p>{html.escape(target.address)} will get no more {_channel_words(target.channel)} from
<strong>{html.escape(org_name)}</strong>. You can close this page.</p>""")


def _invalid_link_page() -> HTTPResponse:
    return _page("Link not valid", """
<h1>This link does not work</h1>
<p>It may have been cut short or changed. Copy the whole link from the message, or reply STOP
to a text message from the sender.</p>""", status=404)


def _page(title: str, content: str, status: int = 200) -> HTTPResponse:
    return html_response(f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;line-height:1.5}}
button{{font-size:1rem;padding:.6rem 1.2rem}}</style></head>
<body>{content}
</body></html>
""", status=status)


# ------------------------------------------------------------------------------------- banner


def curl_example(system: System, config: Config) -> str:
    """Ready-to-paste commands for the startup banner: a Twilio-style STOP for the default org,
    signed now with that org's auth token over the public URL, and a health check."""
    base = config.public_url.rstrip("/")
    health = f"curl -sS {shlex.quote(base + '/healthz')}"
    with system.bus.uow(read_only=True) as uow:
        org_id = uow.orgs.first_id()
        numbers = uow.orgs.numbers(org_id) if org_id is not None else []
        token = (uow.orgs.settings(org_id).twilio_auth_token if org_id is not None else None) \
            or config.twilio_auth_token
    if not numbers:
        return f"  {health}\n  (no org with a number yet: run `optflow init` to post a test message)"
    url = base + TWILIO_PATH
    params = {"From": DEMO_CUSTOMER_NUMBER, "To": numbers[0], "Body": "STOP",
              "MessageSid": "SM" + secrets.token_hex(16), "AccountSid": "AC" + "0" * 32}
    lines = [f"curl -sS -X POST {shlex.quote(url)}"]
    if token:
        signature = RequestValidator(token).compute_signature(url, params)
        lines.append(f"-H {shlex.quote(f'{TWILIO_SIGNATURE_HEADER}: {signature}')}")
    lines.extend(f"--data-urlencode {shlex.quote(f'{key}={value}')}" for key, value in params.items())
    post = " \\\n    ".join(lines)
    note = "" if token else "\n  (the org has no Twilio auth token, so this is unsigned: it works only with " \
                            "--dev-skip-signatures)"
    return f"  # a customer texts STOP to {numbers[0]}; the answer is TwiML\n  {post}{note}\n" \
           f"  # health\n  {health}"
