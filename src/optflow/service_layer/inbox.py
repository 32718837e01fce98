"""Employees' inboxes: the notes optflow writes for employees (an opt-in request went out, the
contact opted in or out, a held customer message is delivered now), per person, with what they
have not read yet.

A note is for the person it names (`handlers.notify_employee` decides whom) or, naming nobody,
for every person of the org; each person reads it on their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from ..domain.model import InvalidInput
from ..domain.records import Note
from .unit_of_work import UnitOfWork

PAGE_SIZE = 50


@dataclass(frozen=True)
class Inbox:
    notes: list[Note]
    unread: int  # of all the person's notes, not only this page's
    page: int
    has_more: bool


def inbox(uow: UnitOfWork, org_id: int, agent_id: int, *, unread_only: bool = False, page: int = 1,
          page_size: int = PAGE_SIZE) -> Inbox:
    """One page of the person's notes, newest first."""
    if page < 1:
        raise InvalidInput("pages are numbered from 1", code="invalid_page")
    uow.agents.in_org(org_id, agent_id)
    notes = uow.inbox.notes(org_id, agent_id, unread_only=unread_only, limit=page_size + 1,
                            offset=(page - 1) * page_size)
    return Inbox(notes[:page_size], uow.inbox.unread_count(org_id, agent_id), page, len(notes) > page_size)


def unread_count(uow: UnitOfWork, org_id: int, agent_id: int) -> int:
    return uow.inbox.unread_count(org_id, agent_id)


def mark_read(uow: UnitOfWork, org_id: int, agent_id: int, message_ids: Sequence[int] | None,
              now: datetime) -> int:
    """Mark some of the person's notes (None: every one) read; returns how many were unread. Ids
    of notes that are not the person's are ignored: nobody marks another person's notes."""
    uow.agents.in_org(org_id, agent_id)
    return uow.inbox.mark_read(org_id, agent_id, message_ids, now)
