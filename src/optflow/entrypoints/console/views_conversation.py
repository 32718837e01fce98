"""The conversation with a contact: messages both ways with their status and its reason, and the
agent's own message, answered at once with the policy's decision (sent, held, deferred, refused)."""

from __future__ import annotations

from datetime import datetime

from sanic import Blueprint, Request
from sanic.response import HTTPResponse

from ...domain import commands as c
from ...domain.delivery import error_meaning
from ...domain.model import Channel, DomainError
from ...domain.records import Audience, Direction, Message, MessageStatus
from ..api_common import handle, system_of
from .security import CONSOLE_PREFIX, ConsoleRefusal, Person, flash, form_value, page, render, see_other
from .views_contact import CHANNEL_LABELS

MAX_BODY_CHARS = 1600


def status_reason(message: Message, now: datetime) -> str:
    """The message's status in words, with its reason where it has one. A queued message waits
    ("deferred") only while its time is ahead: a held message released at the YES is just queued."""
    status = message.status
    if status is MessageStatus.HELD:
        return "held until the customer replies YES"
    if status is MessageStatus.QUEUED and message.not_before is not None and message.not_before > now:
        return f"deferred until {message.not_before:%Y-%m-%d %H:%M} UTC"
    if status is MessageStatus.DIALLED:  # a dialler's call: its outcome is kept as the provider's status
        outcome = (message.provider_status or "").replace("_", " ")
        return f"dialled: {outcome}" if outcome else "dialled"
    words = status.value.replace("_", " ")
    if status in (MessageStatus.DENIED, MessageStatus.FAILED, MessageStatus.CANCELLED,
                  MessageStatus.UNDELIVERED) and message.last_error:
        words = f"{words}: {message.last_error}"
    elif message.error_code:
        words = f"{words} (error {message.error_code})"
    meaning = error_meaning(message.error_code)
    return f"{words}; {meaning}" if meaning else words


def register(bp: Blueprint) -> None:
    @bp.get("/contacts/<contact_id:int>/conversation")
    @page("agent")
    async def conversation(request: Request, person: Person, contact_id: int) -> HTTPResponse:
        system = system_of(request)
        now = system.clock()
        with system.bus.uow(read_only=True) as uow:
            contact = uow.contacts.get(person.org_id, contact_id)
            rows = list(reversed(uow.messages.for_contact(person.org_id, contact_id, limit=200)))
            addresses = uow.contacts.addresses(contact_id)
        channels = [Channel.TEXT, Channel.WHATSAPP] if any(a.kind == "phone" for a in addresses) else []
        if any(a.kind == "email" for a in addresses):
            channels.append(Channel.EMAIL)
        return render(request, "console/conversation.html", title=f"Conversation with {contact.name or 'contact'}",
                      contact=contact, messages=[(m, status_reason(m, now)) for m in rows], channels=channels,
                      labels=CHANNEL_LABELS, tab="conversation", Direction=Direction, Audience=Audience,
                      max_body=MAX_BODY_CHARS)

    @bp.post("/contacts/<contact_id:int>/conversation")
    @page("agent")
    async def send(request: Request, person: Person, contact_id: int) -> HTTPResponse:
        back = see_other(f"{CONSOLE_PREFIX}/contacts/{contact_id}/conversation")
        body = form_value(request, "body")
        if len(body) > MAX_BODY_CHARS:
            raise ConsoleRefusal(422, "Message too long", f"a message has at most {MAX_BODY_CHARS} characters")
        try:
            channel = Channel(form_value(request, "channel") or Channel.TEXT.value)
        except ValueError:
            raise ConsoleRefusal(422, "Invalid channel", "say which channel to write on") from None
        subject = form_value(request, "subject").strip() or None
        try:
            result = await handle(request, c.SendMessage(person.org_id, contact_id, channel, body, person.actor,
                                                         subject=subject))
        except DomainError as exc:
            return flash(request, back, f"Not sent: {exc}", "error")
        words = {"queued": "Sent to the outbox.", "deferred": "Deferred:", "held": "Held:"}
        notice = " ".join(x for x in (words.get(result.status, result.status), result.detail) if x)
        return flash(request, back, notice, "ok" if result.status == "queued" else "warning")
