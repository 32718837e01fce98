"""Replies that can no longer go back in the webhook's answer.

A reply normally travels in the answer to the provider's webhook and is recorded as `replied`.
But Twilio waits 15 s for that answer: when the caller has hung up (the request went away) or
the answer would leave after the reply budget, nobody would get the reply. Then its rows become
ordinary outbox rows (`queued`), which the dispatcher sends through the provider's API after
asking the policy again (an opt-out confirmation passes only within 5 minutes of the opt-out),
and the webhook is answered with no reply. An opt-out confirmation is then not counted as sent
until the provider accepted it (`note_sent`).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime

from ..domain.policy import MessageKind
from ..domain.records import MessageStatus
from .handlers import InboundResult
from .unit_of_work import UnitOfWork

log = logging.getLogger("optflow.inbound")

REPLY_BUDGET_S = 10.0  # Twilio gives up on a webhook after 15 s; answer well within that


def send_through_api(uow: UnitOfWork, result: InboundResult, now: datetime) -> int:
    """Turn the inline replies to `result`'s message into queued outbox rows; returns how many.
    The stored answer of the message becomes empty, so a provider's retry of the webhook does
    not carry the replies too."""
    rows = uow.messages.inline_replies(result.org_id, result.message_id, result.address, result.channel)
    for row in rows:
        uow.messages.set(row.id, status=MessageStatus.QUEUED, sent_at=None, not_before=now)
        if row.kind is MessageKind.OPT_OUT_CONFIRMATION:
            consent = uow.consents.get(result.org_id, result.address, result.channel, lock=True)
            consent.opt_out_confirmation_sent = False
            uow.consents.save(consent, now)
    uow.messages.set(result.message_id, reply_text=json.dumps([]))
    return len(rows)


def note_sent(uow: UnitOfWork, message_id: int, now: datetime) -> None:
    """The provider accepted outbox row `message_id`: if it is an opt-out confirmation, the
    consent now records that its one confirmation was sent."""
    row = uow.messages.get(message_id)
    if row is None or row.kind is not MessageKind.OPT_OUT_CONFIRMATION:
        return
    consent = uow.consents.get(row.org_id, row.address, row.channel, lock=True)
    if not consent.opt_out_confirmation_sent:
        consent.opt_out_confirmation_sent = True
        uow.consents.save(consent, now)
