"""The message bus: every command is handled in one unit of work and committed once.

It also keeps the promise that matters most: an opt-out is never lost. If handling an inbound
message fails for any reason that is not a business refusal (a broken template, a bug, a
database hiccup) and the message asks to stop, the opt-out alone is recorded in a fresh
transaction before the error goes on.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError, OperationalError

from ..domain import commands as c
from ..domain.addresses import normalize_for_channel
from ..domain.model import DomainError, Intent, NotFound
from ..domain.records import Audience, Direction, MessageStatus
from ..domain.redaction import mask_address
from ..domain.text import storable
from .handlers import HANDLERS, Services, classify_inbound, inbound_revocation, revoke
from .unit_of_work import UnitOfWork

log = logging.getLogger("optflow.bus")

RETRIES = 3
FALLBACK_BODY_CHARS = 1600  # the longest SMS Twilio delivers; the fallback keeps no more


Handler = Callable[..., Any]


class MessageBus:
    """Runs commands: `handlers` maps each command type to its handler (handlers.HANDLERS and the
    flow engine's); the events a handler raises go to `services.subscribers` before the commit."""

    def __init__(self, engine: Engine, services: Services, clock: Callable[[], datetime],
                 handlers: Mapping[type, Handler] | None = None) -> None:
        self.engine = engine
        self.services = services
        self.clock = clock
        self.handlers: dict[type, Handler] = {**HANDLERS, **(handlers or {})}

    def uow(self, *, read_only: bool = False) -> UnitOfWork:
        """A unit of work on the bus's engine; `read_only` for lookups (see `UnitOfWork`)."""
        return UnitOfWork(self.engine, read_only=read_only)

    def handle(self, command: c.Command, now: datetime | None = None) -> Any:
        handler = self._handler(command)
        for attempt in range(1, RETRIES + 1):
            at = now or self.clock()
            try:
                with self.uow() as uow:
                    try:
                        result = handler(command, uow, self.services, at)
                        self.services.publish(uow, at)
                    except DomainError:
                        if uow.commit_on_error:
                            uow.commit()
                        raise
                    uow.commit()
                return result
            except DomainError:
                raise
            except (IntegrityError, OperationalError) as exc:
                # A concurrent writer created the same row (or held the lock): run again on
                # fresh reads. A replayed webhook then finds its own first copy.
                if attempt == RETRIES:
                    self._save_opt_out(command, at, exc)
                    raise
                log.warning("retrying %s after %s", type(command).__name__, exc.__class__.__name__)
                time.sleep(0.01 * attempt)
            except Exception as exc:
                self._save_opt_out(command, at, exc)
                raise
        raise AssertionError("unreachable")

    def handle_in(self, uow: UnitOfWork, command: c.Command, now: datetime) -> Any:
        """Run a command inside a transaction the caller owns (group commit, flows)."""
        result = self._handler(command)(command, uow, self.services, now)
        self.services.publish(uow, now)
        return result

    def _handler(self, command: c.Command) -> Handler:
        try:
            return self.handlers[type(command)]
        except KeyError:
            raise TypeError(f"no handler for {type(command).__name__}") from None

    def _save_opt_out(self, command: c.Command, now: datetime, error: BaseException) -> None:
        if not isinstance(command, c.ReceiveInbound):
            return
        try:
            save_opt_out_only(self.engine, self.services, command, now)
        except Exception:
            log.exception("could not record the opt-out of %s after %r", mask_address(command.from_address), error)


def save_opt_out_only(engine: Engine, services: Services, command: c.ReceiveInbound, now: datetime) -> bool:
    """The last line of defence: record an inbound opt-out with nothing but the machine and the
    ledger (no templates, no replies, no flows), in a transaction of its own. True if an opt-out
    was recorded."""
    with UnitOfWork(engine) as uow:
        recorded = record_opt_out_only(uow, services, command, now)
        if recorded:
            uow.commit()
    if recorded:
        log.error("recorded the opt-out of %s on %s through the fallback path", mask_address(command.from_address),
                  command.channel.value)
    return recorded


def record_opt_out_only(uow: UnitOfWork, services: Services, command: c.ReceiveInbound, now: datetime) -> bool:
    """`save_opt_out_only` inside the caller's unit of work (the group-commit batcher runs it in
    a savepoint of the batch's transaction); the caller commits. True if it is an opt-out.

    It is the inbound handler's opt-out decision itself (`handlers.revoke`, the same consent rules,
    the same scope across channels) with rendering switched off: no templates, no replies, no
    notes. The events go to their subscribers (flows end the contact's enrolments) in a savepoint
    of their own: should that fail too, the opt-out still stands, and the policy refuses every
    step a flow might still take on the closed channels."""
    org_id = command.org_id
    if org_id is None:
        org_id = uow.orgs.find_by_number(normalize_for_channel(command.to_address, command.channel))
        if org_id is None:
            raise NotFound(f"no org owns {command.to_address!r}", code="unknown_number")
    settings = uow.orgs.settings(org_id)
    if classify_inbound(services, settings, command.body, command.opt_out_type).intent is not Intent.OPT_OUT:
        return False
    address = normalize_for_channel(command.from_address, command.channel)
    contact = uow.contacts.at_address(org_id, address)
    # Only what cannot fail is stored: text made storable and cut short (see domain/text.py).
    body, provider_id = storable(command.body[:FALLBACK_BODY_CHARS]), storable(command.provider_id or "") or None
    stored = dataclasses.replace(command, body=body, provider_id=provider_id)
    revoke(uow, services, org_id, contact, inbound_revocation(address, stored, provider_id), now,
           render_messages=False)
    try:
        with uow.savepoint():
            services.publish(uow, now)
    except Exception:
        uow.events.clear()
        log.exception("the fallback recorded an opt-out but could not take the contact out of its flows")
    if provider_id and uow.messages.find_inbound(org_id, provider_id) is None:
        # Keep the message too, so the provider's retry of it is recognised as a duplicate; in a
        # savepoint of its own, so that even a failure here cannot take the opt-out with it.
        try:
            with uow.savepoint():
                uow.messages.add(org_id=org_id, contact_id=contact.id if contact else None, direction=Direction.IN,
                                 audience=Audience.CUSTOMER, channel=command.channel.value, address=address,
                                 org_address=storable(command.to_address), body=body,
                                 status=MessageStatus.RECEIVED,
                                 intent=Intent.OPT_OUT.value, provider_id=provider_id, reply_text="[]",
                                 created_at=now)
        except Exception:
            log.exception("the fallback recorded the opt-out but could not store its message")
    return True
