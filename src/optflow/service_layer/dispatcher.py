"""Delivering the outbox: claim due rows, check each one right before it goes, send, record.

The guarantees, and how they are kept:

- **Nothing goes after an opt-out is stored.** Each message is checked by the policy, on fresh
  rows, in a short transaction right before it is handed to the provider, and that transaction
  moves the row from `sending` to `handed_over` only if it is still `sending` under this
  dispatcher's claim. An opt-out cancels `queued` and `sending` rows (locking them), so either
  the opt-out commits first and the hand-over finds the row cancelled, or the hand-over commits
  first and the message was on its way before the opt-out was stored. A handed-over message
  cannot be called back.
- **A message is handed to a provider once.** Every claim has a random token stored on its
  rows; hand-overs and recorded outcomes only take effect on rows that still carry it. The
  lease (`not_before` of a claimed row) is renewed while the batch is being sent, so only a
  dispatcher that died or hung loses it; its unsent rows are then claimed again by another, its
  handed-over rows are not sent again but marked failed with an unknown outcome. Providers that
  can drop a repeated request are given a key stable across retries (`OutboundMessage.id`).
- **Frequency caps hold at send time.** The hand-over check counts what was handed over, so a
  burst queued together cannot all go; with a cap, the contact's row is locked for the check
  (on PostgreSQL) so that two dispatchers cannot both take the last place.

Sending happens outside any transaction: a slow provider never holds a database lock.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from ..domain import commands as c
from ..domain.consent_rules import AddressSignal, Door
from ..domain.model import Actor, ActorKind, Channel, Purpose
from ..domain.outbound import (
    OutboundMessage,
    PermanentSendError,
    RecipientUndeliverable,
    RecipientUnsubscribed,
    TransientSendError,
)
from ..domain.policy import Allow, Decision, Defer, MessageKind
from ..domain.records import Message, MessageStatus
from ..domain.tokens import unsubscribe_url
from . import delivery_signals, late_replies
from .handlers import Services, opt_out_address, policy_decision, policy_settings
from .ports import Sender
from .unit_of_work import UnitOfWork, UnitOfWorkFactory

log = logging.getLogger("optflow.dispatcher")

LEASE = timedelta(minutes=10)
RENEW_AFTER = LEASE / 5  # a claim's lease is renewed at the first hand-over this long after the last renewal
CARRIER = Actor(ActorKind.SYSTEM, "carrier")
MAX_ATTEMPTS = 8


@dataclass
class DeliveryReport:
    sent: int = 0
    denied: int = 0
    deferred: int = 0
    retried: int = 0
    failed: int = 0
    opted_out_by_carrier: int = 0
    withdrawn: int = 0  # claimed, then cancelled by an opt-out or claimed by another dispatcher
    errors: list[str] = field(default_factory=list)

    @property
    def handled(self) -> int:
        return self.sent + self.denied + self.deferred + self.retried + self.failed + self.withdrawn


@dataclass
class _Claim:
    token: str
    rows: list[Message]
    renewed_at: datetime
    uows: UnitOfWorkFactory  # its units of work read org settings once for the claimed batch
    # The claimed opt-out confirmations: the consent learns when one of them was sent.
    confirmations: frozenset[int] = frozenset()


# An outbox row's id and the columns that record how its hand-over to the provider ended.
_Outcome = tuple[int, dict[str, object]]


def backoff(attempts: int) -> timedelta:
    return min(timedelta(seconds=30 * 2 ** max(attempts - 1, 0)), timedelta(hours=1))


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Dispatcher:
    def __init__(self, uows: UnitOfWorkFactory, services: Services, sender: Sender, unsubscribe_secret: str,
                 public_url: str, clock: Callable[[], datetime] = _utc_now, *,
                 status_callback_url: str | None = None) -> None:
        """`clock` times each hand-over and the lease renewals while a batch is being sent.
        `status_callback_url`: where Twilio reports the delivery of each text and WhatsApp
        message (the message's id is added to it); None: no reports asked for."""
        self.status_callback_url = status_callback_url
        self.uows = uows
        self.services = services
        self.sender = sender
        self.unsubscribe_secret = unsubscribe_secret
        self.public_url = public_url.rstrip("/")
        self.clock = clock

    def unsubscribe_url(self, org_id: int, address: str, channel: Channel) -> str:
        return unsubscribe_url(self.public_url, self.unsubscribe_secret, org_id, address, channel)

    def run(self, now: datetime, batch: int = 200, max_batches: int = 50) -> DeliveryReport:
        """Deliver everything due at `now`, in claimed batches."""
        report = DeliveryReport()
        with self.uows() as uow:
            uow.messages.expire_leases(now)
            uow.commit()
        for _ in range(max_batches):
            claim = self._claim(now, batch)
            outcome: _Outcome | None = None
            for row in claim.rows:
                try:
                    message = self._hand_over(claim, row, report, outcome)
                except Exception as exc:  # one row's failure must not leave the rest claimed for a lease
                    self._put_back(claim, row, outcome, exc, report)
                    outcome = None
                    continue
                outcome = None
                if message is not None:
                    outcome = self._send(message, claim.token, row.attempts + 1, report)
            if outcome is not None:
                with self.uows() as uow:
                    self._record(uow, claim, outcome)
                    uow.commit()
            if len(claim.rows) < batch:
                break
        return report

    def _claim(self, now: datetime, limit: int) -> _Claim:
        token = secrets.token_hex(16)
        with self.uows() as uow:
            rows = uow.messages.claim_due(now, limit, uow.skip_locked, token, now + LEASE)
            uow.commit()
        confirmations = frozenset(row.id for row in rows if row.kind is MessageKind.OPT_OUT_CONFIRMATION)
        return _Claim(token, rows, renewed_at=now, uows=self.uows.sharing_orgs(), confirmations=confirmations)

    def _hand_over(self, claim: _Claim, row: Message, report: DeliveryReport,
                   previous: _Outcome | None) -> OutboundMessage | None:
        """Check one claimed row against the policy on fresh data and, if it may go and is still
        this claim's and not cancelled, mark it handed over, in one short transaction. The
        message to send, or None. The transaction also records the `previous` message's outcome
        (one commit per message instead of two)."""
        moment = self.clock()
        with claim.uows() as uow:
            if previous is not None:
                self._record(uow, claim, previous)
            if moment - claim.renewed_at >= RENEW_AFTER:
                uow.messages.renew_lease(claim.token, moment + LEASE)
                claim.renewed_at = moment
            decision = self._decide(uow, row, moment)
            message_id = row.id
            if isinstance(decision, Allow):
                taken = uow.messages.hand_over(message_id, claim.token, moment, moment + LEASE)
            elif isinstance(decision, Defer):
                taken = uow.messages.release(message_id, claim.token, status=MessageStatus.QUEUED,
                                             claim_token=None, not_before=decision.until, last_error=decision.reason)
                report.deferred += taken
            else:
                taken = uow.messages.release(message_id, claim.token, status=MessageStatus.DENIED,
                                             last_error=decision.reason)
                report.denied += taken
            uow.commit()
        if not taken:
            report.withdrawn += 1
            return None
        return self._outbound(row) if isinstance(decision, Allow) else None

    def _put_back(self, claim: _Claim, row: Message, previous: _Outcome | None, error: Exception,
                  report: DeliveryReport) -> None:
        """The check before `row`'s hand-over failed: it goes back to the queue, to be tried again
        after the retry backoff (it was not handed over), and the previous message's outcome, which
        that check's transaction would have recorded, is recorded now."""
        log.exception("checking message %s before its hand-over failed; it is queued again", row.id)
        report.errors.append(f"message {row.id}: {type(error).__name__}: {error}")
        try:
            with self.uows() as uow:
                if previous is not None:
                    self._record(uow, claim, previous)
                uow.messages.release(row.id, claim.token, status=MessageStatus.QUEUED, claim_token=None,
                                     not_before=self.clock() + backoff(1), last_error=f"{type(error).__name__}")
                uow.commit()
        except Exception:  # the database itself: the lease's expiry queues the rows again
            log.exception("could not queue message %s again; its lease will", row.id)

    def _decide(self, uow: UnitOfWork, row: Message, now: datetime) -> Decision:
        org_id = row.org_id
        settings = uow.orgs.settings(org_id)
        channel, kind = row.channel, row.kind
        # With a cap on this channel, the contact's row is locked so that concurrent hand-overs
        # to the contact count each other's sends.
        capped = any(channel in cap.channels for cap in policy_settings(settings).caps)
        contact = uow.contacts.get(org_id, row.contact_id, lock=capped) if row.contact_id else None
        consent = uow.consents.get(org_id, row.address, channel)
        # An opt-out confirmation goes only while none has reached the customer: one answered in
        # a webhook meanwhile (a second STOP) makes a queued one redundant.
        template = json.loads(row.template_json)["name"] if row.template_json else None
        return policy_decision(uow, settings, contact, consent, row.purpose, kind, now, at_hand_over=True,
                               template=template)

    def _outbound(self, row: Message) -> OutboundMessage:
        unsubscribe = None
        if row.channel is Channel.EMAIL and row.purpose is Purpose.MARKETING:
            unsubscribe = self.unsubscribe_url(row.org_id, row.address, row.channel)
        callback = None
        if self.status_callback_url and row.channel in (Channel.TEXT, Channel.WHATSAPP):
            callback = f"{self.status_callback_url}?message={row.id}"
        template = json.loads(row.template_json) if row.template_json else None
        return OutboundMessage(
            id=row.id, org_id=row.org_id, channel=row.channel, to=row.address, body=row.body, purpose=row.purpose,
            subject=row.subject or None, unsubscribe_url=unsubscribe, status_callback=callback,
            content_sid=template["content_sid"] if template else None,
            content_variables=json.dumps(template["variables"]) if template else None,
        )

    def _send(self, message: OutboundMessage, token: str, attempts: int, report: DeliveryReport) -> _Outcome | None:
        """Hand the message to the provider; the outcome to record under the claim's token (None:
        recorded already). A failure clears `sent_at`: caps count only what a provider may have
        taken. `attempts` counts this one."""
        try:
            result = self.sender.send(message)
        except RecipientUnsubscribed as exc:
            self._carrier_opt_out(message, token, str(exc))
            report.opted_out_by_carrier += 1
            report.failed += 1
            return None
        except RecipientUndeliverable as exc:
            self._undeliverable(message, token, exc)
            report.failed += 1
            return None
        except TransientSendError as exc:
            return self._retry_or_fail(message, attempts, str(exc), report)
        except PermanentSendError as exc:
            report.failed += 1
            report.errors.append(f"message {message.id}: {exc}")
            return message.id, {"status": MessageStatus.FAILED, "sent_at": None, "last_error": str(exc)}
        except Exception as exc:  # an adapter bug must not stop the other messages
            log.exception("sender crashed on message %s", message.id)
            return self._retry_or_fail(message, attempts, f"{type(exc).__name__}: {exc}", report)
        report.sent += 1
        return message.id, {"status": MessageStatus.SENT, "provider_id": result.provider_id, "last_error": None}

    def _retry_or_fail(self, message: OutboundMessage, attempts: int, error: str, report: DeliveryReport) -> _Outcome:
        if attempts >= MAX_ATTEMPTS:
            report.failed += 1
            return message.id, {"status": MessageStatus.FAILED, "sent_at": None,
                                "last_error": f"gave up after {attempts} attempts: {error}"}
        report.retried += 1
        return message.id, {"status": MessageStatus.QUEUED, "sent_at": None, "claim_token": None,
                            "not_before": self.clock() + backoff(attempts), "last_error": error}

    def _record(self, uow: UnitOfWork, claim: _Claim, outcome: _Outcome) -> None:
        message_id, values = outcome
        if not uow.messages.record(message_id, claim.token, **values):
            log.warning("message %s: its claim was taken over, or the provider reported on it first; the "
                        "outcome was not recorded", message_id)
        elif values.get("status") is MessageStatus.SENT and message_id in claim.confirmations:
            late_replies.note_sent(uow, message_id, self.clock())

    def _undeliverable(self, message: OutboundMessage, token: str, error: RecipientUndeliverable) -> None:
        """The provider says the address cannot take messages (an SMTP 550, Twilio 30004-30006):
        the address goes on do-not-contact for the channel, in the transaction recording the failure."""
        now = self.clock()
        with self.uows() as uow:
            uow.messages.record(message.id, token, status=MessageStatus.FAILED, sent_at=None, last_error=str(error),
                                error_code=error.code)
            delivery_signals.mark_address(uow, message.org_id, AddressSignal(
                Door.BOUNCE if message.channel is Channel.EMAIL else Door.CARRIER, CARRIER, message.to,
                message.channel, error.reason, evidence=str(error)[:500], source_message_id=f"message:{message.id}"),
                now)
            uow.commit()

    def _carrier_opt_out(self, message: OutboundMessage, token: str, error: str) -> None:
        """The provider says the recipient unsubscribed (Twilio 21610): that is an opt-out."""
        now = self.clock()
        with self.uows() as uow:
            uow.messages.record(message.id, token, status=MessageStatus.FAILED, sent_at=None, last_error=error)
            opt_out_address(c.OptOutAddress(
                message.org_id, message.to, message.channel, CARRIER, method="carrier", evidence=error[:500],
                door=Door.CARRIER, source_message_id=f"message:{message.id}"), uow, self.services, now)
            self.services.publish(uow, now)
            uow.commit()
