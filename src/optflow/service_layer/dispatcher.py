"""Delivering the outbox: claim due rows, ask the policy again, send, record the outcome.

A STOP may arrive between the moment a message was queued and the moment it goes, so the
policy is asked once more at send time, on fresh rows, and a refusal is final. Sending happens
outside any transaction: a slow provider never holds a database lock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, update

from ..adapters import orm
from ..adapters.senders import (
    OutboundMessage,
    PermanentSendError,
    RecipientUnsubscribed,
    Sender,
    TransientSendError,
)
from ..domain.machine import TransitionContext
from ..domain.model import Actor, ActorKind, Channel, Purpose, State, Trigger
from ..domain.policy import Allow, Defer, MessageKind
from ..domain.tokens import UnsubscribeTarget, make_token
from . import late_replies
from .handlers import Services, policy_decision, transition
from .unit_of_work import UnitOfWork

log = logging.getLogger("optflow.dispatcher")

LEASE = timedelta(minutes=10)
MAX_ATTEMPTS = 8


@dataclass
class DeliveryReport:
    sent: int = 0
    denied: int = 0
    deferred: int = 0
    retried: int = 0
    failed: int = 0
    opted_out_by_carrier: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def handled(self) -> int:
        return self.sent + self.denied + self.deferred + self.retried + self.failed


def backoff(attempts: int) -> timedelta:
    return min(timedelta(seconds=30 * 2 ** max(attempts - 1, 0)), timedelta(hours=1))


class Dispatcher:
    def __init__(self, engine: Engine, services: Services, sender: Sender, unsubscribe_secret: str,
                 public_url: str) -> None:
        self.engine = engine
        self.services = services
        self.sender = sender
        self.unsubscribe_secret = unsubscribe_secret
        self.public_url = public_url.rstrip("/")

    def unsubscribe_url(self, org_id: int, address: str, channel: Channel) -> str:
        token = make_token(self.unsubscribe_secret, UnsubscribeTarget(org_id, address, channel))
        return f"{self.public_url}/unsubscribe/{token}"

    def run(self, now: datetime, batch: int = 200, max_batches: int = 50) -> DeliveryReport:
        """Deliver everything due at `now`, in batches."""
        report = DeliveryReport()
        self._recover_stale_leases(now)
        for _ in range(max_batches):
            claimed = self._claim(now, batch, report)
            if not claimed and report.handled == 0:
                break
            for message in claimed:
                self._send(message, now, report)
            if len(claimed) < batch:
                break
        return report

    def _recover_stale_leases(self, now: datetime) -> None:
        """A process that died while sending leaves rows in `sending`; after the lease they are
        queued again (at-least-once: a provider that did accept them may see them twice)."""
        with self.engine.begin() as conn:
            conn.execute(update(orm.messages).where(and_(
                orm.messages.c.status == "sending", orm.messages.c.not_before <= now,
            )).values(status="queued"))

    def _claim(self, now: datetime, limit: int, report: DeliveryReport) -> list[OutboundMessage]:
        ready: list[OutboundMessage] = []
        with UnitOfWork(self.engine) as uow:
            for row in uow.messages.claim_due(now, limit, uow.skip_locked):
                org_id = row["org_id"]
                settings = uow.orgs.settings(org_id)
                channel = Channel(row["channel"])
                consent = uow.consents.get(org_id, row["address"], channel)
                contact = uow.contacts.get(org_id, row["contact_id"]) if row["contact_id"] else None
                kind = MessageKind(row["kind"])
                decision = policy_decision(
                    uow, settings, contact, consent, Purpose(row["purpose"]), kind, now,
                    confirmation_sent=False if kind is MessageKind.OPT_OUT_CONFIRMATION else None,
                )
                if isinstance(decision, Allow):
                    uow.messages.set(row["id"], status="sending", not_before=now + LEASE,
                                     attempts=row["attempts"] + 1)
                    ready.append(self._outbound(row, channel))
                elif isinstance(decision, Defer):
                    uow.messages.set(row["id"], not_before=decision.until, last_error=decision.reason)
                    report.deferred += 1
                else:
                    uow.messages.set(row["id"], status="denied", last_error=decision.reason)
                    report.denied += 1
            uow.commit()
        return ready

    def _outbound(self, row: dict[str, Any], channel: Channel) -> OutboundMessage:
        purpose = Purpose(str(row["purpose"]))
        unsubscribe = None
        if channel is Channel.EMAIL and purpose is Purpose.MARKETING:
            unsubscribe = self.unsubscribe_url(int(str(row["org_id"])), str(row["address"]), channel)
        return OutboundMessage(
            id=int(str(row["id"])), org_id=int(str(row["org_id"])), channel=channel, to=str(row["address"]),
            body=str(row["body"]), purpose=purpose, subject=(row["subject"] and str(row["subject"])) or None,
            unsubscribe_url=unsubscribe,
        )

    def _send(self, message: OutboundMessage, now: datetime, report: DeliveryReport) -> None:
        try:
            result = self.sender.send(message)
        except RecipientUnsubscribed as exc:
            self._carrier_opt_out(message, now, str(exc))
            report.opted_out_by_carrier += 1
            report.failed += 1
            return
        except TransientSendError as exc:
            self._retry_or_fail(message, now, str(exc), report)
            return
        except PermanentSendError as exc:
            self._finish(message.id, status="failed", last_error=str(exc))
            report.failed += 1
            report.errors.append(f"message {message.id}: {exc}")
            return
        except Exception as exc:  # an adapter bug must not stop the other messages
            log.exception("sender crashed on message %s", message.id)
            self._retry_or_fail(message, now, f"{type(exc).__name__}: {exc}", report)
            return
        with UnitOfWork(self.engine) as uow:
            uow.messages.set(message.id, status="sent", sent_at=now, provider_id=result.provider_id, last_error=None)
            late_replies.note_sent(uow, message.id, now)
            uow.commit()
        report.sent += 1

    def _retry_or_fail(self, message: OutboundMessage, now: datetime, error: str, report: DeliveryReport) -> None:
        with UnitOfWork(self.engine) as uow:
            row = uow.messages.get(message.id)
            attempts = int(row["attempts"]) if row else MAX_ATTEMPTS
            if attempts >= MAX_ATTEMPTS:
                uow.messages.set(message.id, status="failed", last_error=f"gave up after {attempts} attempts: {error}")
                report.failed += 1
            else:
                uow.messages.set(message.id, status="queued", not_before=now + backoff(attempts), last_error=error)
                report.retried += 1
            uow.commit()

    def _finish(self, message_id: int, **values: object) -> None:
        with UnitOfWork(self.engine) as uow:
            uow.messages.set(message_id, **values)
            uow.commit()

    def _carrier_opt_out(self, message: OutboundMessage, now: datetime, error: str) -> None:
        """The provider says the recipient unsubscribed (Twilio 21610): that is an opt-out."""
        with UnitOfWork(self.engine) as uow:
            uow.messages.set(message.id, status="failed", last_error=error)
            consent = uow.consents.get(message.org_id, message.to, message.channel, lock=True)
            if consent.state is not State.OPTED_OUT:
                transition(uow, self.services, consent, Trigger.OPT_OUT, TransitionContext(
                    actor=Actor(ActorKind.SYSTEM, "carrier"), now=now, method="carrier",
                    evidence=error[:500], source_message_id=f"message:{message.id}",
                ), consent.contact_id)
            uow.commit()
