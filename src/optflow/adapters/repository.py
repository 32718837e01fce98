"""Repositories over one SQLAlchemy Core connection (the unit of work's transaction).

Core rather than ORM sessions: every inbound message passes through here, and a Core statement
costs a fraction of a Session round trip (see DESIGN.md, "Performance"). The statements of the
hot paths are built once, at import, with bound parameters: building a statement and computing
its cache key costs several times more than running it (docs/performance.md).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, delete, func, insert, literal, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ..domain import ledger as ledger_chain
from ..domain.model import Channel, Consent, DndSettings, Mode, NotFound, State, TransitionRecord
from ..domain.records import (
    HANDED_OVER,
    NOT_HANDED_OVER,
    Address,
    Agent,
    Audience,
    Contact,
    Direction,
    Message,
    MessageStatus,
    Org,
)
from ..domain.settings import OrgSettings, resolve
from . import event_outbox, ledger_files, orm
from .prepared import READ_AHEAD_CHUNK, Prepared, bind_list, bind_values, in_chunks
from .records import ADDRESS, AGENT, CONTACT, MESSAGE, ORG

Row = dict[str, Any]
log = logging.getLogger("optflow.ledger")


def new_id(result: Any) -> int:
    """The primary key of the row an INSERT just created."""
    return int(result.inserted_primary_key[0])


def _row(result: Any) -> Row | None:
    mapping = result.mappings().first()
    return dict(mapping) if mapping is not None else None


# Prebuilt statements. Parameters of WHERE clauses are prefixed with `w_` so they never clash
# with the column names an UPDATE takes its SET clause from (the other keys of the parameters).
_ORG = Prepared(select(orm.orgs).where(orm.orgs.c.id == bindparam("w_id")))
_ORG_BY_NUMBER = Prepared(select(orm.org_numbers.c.org_id).where(orm.org_numbers.c.number == bindparam("w_number")))
# Only rows whose flags differ: most consent changes leave them as they were, and a row rewritten
# with its own values still costs its page in the commit.
_SET_PHONE_FLAGS = Prepared(update(orm.addresses).where(
    orm.addresses.c.org_id == bindparam("w_org_id"), orm.addresses.c.value == bindparam("w_value"),
    or_(orm.addresses.c.active != bindparam("w_active"), orm.addresses.c.do_not_call != bindparam("w_do_not_call"))))
_LINE_OWNER = Prepared(select(orm.org_numbers.c.agent_id).where(orm.org_numbers.c.number == bindparam("w_number")))
_AGENT = Prepared(select(orm.agents).where(orm.agents.c.id == bindparam("w_id")))
_CONTACT_SELECT = select(orm.contacts).where(and_(orm.contacts.c.id == bindparam("w_id"),
                                                  orm.contacts.c.org_id == bindparam("w_org_id")))
_CONTACT = Prepared(_CONTACT_SELECT)
_CONTACT_LOCKED = Prepared(_CONTACT_SELECT.with_for_update())
_UPDATE_CONTACT = Prepared(update(orm.contacts).where(orm.contacts.c.id == bindparam("w_id")))
_CONTACT_BY_ADDRESS = Prepared(select(orm.addresses.c.contact_id).where(and_(
    orm.addresses.c.org_id == bindparam("w_org_id"), orm.addresses.c.value == bindparam("w_value"))))
_CONTACT_AT_ADDRESS = Prepared(select(orm.contacts).join_from(
    orm.addresses, orm.contacts, orm.addresses.c.contact_id == orm.contacts.c.id).where(and_(
        orm.addresses.c.org_id == bindparam("w_org_id"), orm.addresses.c.value == bindparam("w_value"))))
_UNREAD = object()


@functools.lru_cache(maxsize=16)
def _contacts_at_addresses(count: int) -> Prepared:
    return Prepared(select(orm.addresses.c.value, *orm.contacts.c).join_from(
        orm.addresses, orm.contacts, orm.addresses.c.contact_id == orm.contacts.c.id).where(
        orm.addresses.c.org_id == bindparam("w_org_id"), orm.addresses.c.value.in_(bind_list("w_value", count))))


_ADDRESSES = Prepared(select(orm.addresses).where(orm.addresses.c.contact_id == bindparam("w_contact_id")) \
    .order_by(orm.addresses.c.id))
_CONSENT_SELECT = select(orm.consents).where(and_(
    orm.consents.c.org_id == bindparam("w_org_id"), orm.consents.c.address == bindparam("w_address"),
    orm.consents.c.channel == bindparam("w_channel")))
_CONSENT = Prepared(_CONSENT_SELECT)
_CONSENT_LOCKED = Prepared(_CONSENT_SELECT.with_for_update())
_INSERT_CONSENT = Prepared(insert(orm.consents))
_UPDATE_CONSENT = Prepared(update(orm.consents).where(orm.consents.c.id == bindparam("w_id")))
_LEDGER_HEAD_LOCKED = Prepared(select(orm.ledger_heads).where(orm.ledger_heads.c.org_id == bindparam("w_org_id")) \
    .with_for_update())
_UPDATE_LEDGER_HEAD = Prepared(update(orm.ledger_heads).where(orm.ledger_heads.c.org_id == bindparam("w_org_id")))
_LAST_LEDGER_ENTRY = Prepared(select(orm.ledger.c.seq, orm.ledger.c.hash).where(
    orm.ledger.c.org_id == bindparam("w_org_id")).order_by(orm.ledger.c.seq.desc()).limit(1))
# Ledger entries go in with ON CONFLICT DO NOTHING: a head row wound back below the entries
# present makes the new entries' seqs collide, and the count of rows written tells so at no
# extra statement, where a failed INSERT would abort the transaction and lose the opt-out in it.
# One driver `executemany` (SQLAlchemy's insert of many rows with RETURNING cost ~10 µs a row).
_INSERT_LEDGER_ENTRIES = {
    dialect: Prepared(insert_for(orm.ledger).on_conflict_do_nothing(index_elements=["org_id", "seq"]))
    for dialect, insert_for in (("sqlite", sqlite_insert), ("postgresql", postgresql_insert))
}
# The entries of this transaction that went in before a collision was seen: found by their hash,
# which chains the whole history before them and so is no older entry's.
_LEDGER_IDS_FROM = Prepared(select(orm.ledger.c.id, orm.ledger.c.hash).where(
    orm.ledger.c.org_id == bindparam("w_org_id"), orm.ledger.c.seq > bindparam("w_seq")))
# A missing head row is re-created this way so that two transactions finding it missing at once
# (PostgreSQL) queue on the new row instead of one failing on the primary key.
_INSERT_LEDGER_HEAD_IF_MISSING = {
    dialect: Prepared(insert_for(orm.ledger_heads).on_conflict_do_nothing(index_elements=["org_id"]))
    for dialect, insert_for in (("sqlite", sqlite_insert), ("postgresql", postgresql_insert))
}
_INSERT_MESSAGE = Prepared(insert(orm.messages))
# An inbound message is inserted unless its provider's id is already stored (a replay): one
# statement instead of a look-up and an insert. The construct is each dialect's own.
_INSERT_NEW_INBOUND = {
    dialect: Prepared(insert_for(orm.messages).on_conflict_do_nothing(
        index_elements=["org_id", "direction", "provider_id"]).returning(orm.messages.c.id))
    for dialect, insert_for in (("sqlite", sqlite_insert), ("postgresql", postgresql_insert))
}
_MESSAGE = Prepared(select(orm.messages).where(orm.messages.c.id == bindparam("w_id")))
_UPDATE_MESSAGE = Prepared(update(orm.messages).where(orm.messages.c.id == bindparam("w_id")))
_INBOUND_BY_PROVIDER_ID = Prepared(select(orm.messages).where(and_(
    orm.messages.c.org_id == bindparam("w_org_id"), orm.messages.c.direction == Direction.IN,
    orm.messages.c.provider_id == bindparam("w_provider_id"))))
_OUTBOUND_BY_PROVIDER_ID = Prepared(select(orm.messages).where(and_(
    orm.messages.c.org_id == bindparam("w_org_id"), orm.messages.c.direction == Direction.OUT,
    orm.messages.c.provider_id == bindparam("w_provider_id"))))
_HELD = Prepared(select(orm.messages).where(and_(
    orm.messages.c.org_id == bindparam("w_org_id"), orm.messages.c.address == bindparam("w_address"),
    orm.messages.c.channel == bindparam("w_channel"), orm.messages.c.status == MessageStatus.HELD,
)).order_by(orm.messages.c.id))

_LAST_INBOUND = Prepared(select(func.max(orm.messages.c.created_at)).where(and_(
    orm.messages.c.org_id == bindparam("w_org_id"), orm.messages.c.address == bindparam("w_address"),
    orm.messages.c.channel == bindparam("w_channel"), orm.messages.c.direction == Direction.IN)))


@functools.lru_cache(maxsize=128)
def _consents_for_addresses(count: int) -> Prepared:
    return Prepared(select(orm.consents).where(and_(
        orm.consents.c.org_id == bindparam("w_org_id"), orm.consents.c.address.in_(bind_list("w_address", count)),
    )).order_by(orm.consents.c.id))


# The life of an outbound row in the outbox (see service_layer/dispatcher.py and
# `domain.records.MessageStatus`): only NOT_HANDED_OVER rows can still be stopped; a handed-over
# row cannot be called back.


def status_in(statuses: Iterable[MessageStatus]) -> Any:
    """`messages.status IN (...)` with each value bound on its own, which `Prepared` can run."""
    return orm.messages.c.status.in_([literal(status.value) for status in statuses])


@functools.lru_cache(maxsize=8)
def _queued_for(count: int) -> Prepared:
    """Locked (on PostgreSQL), so a dispatcher's hand-over of one of them waits for the opt-out
    that cancels it and then finds it cancelled; a row it handed over first no longer matches."""
    return Prepared(select(orm.messages.c.id).where(and_(
        orm.messages.c.org_id == bindparam("w_org_id"), orm.messages.c.address == bindparam("w_address"),
        orm.messages.c.direction == Direction.OUT, status_in(NOT_HANDED_OVER),
        orm.messages.c.channel.in_(bind_list("w_channel", count)),
    )).with_for_update())


@functools.lru_cache(maxsize=16)
def _recent_sends(count: int, with_planned: bool) -> Prepared:
    m = orm.messages.c
    handed_over = and_(status_in(HANDED_OVER), m.sent_at >= bindparam("w_since"))
    return Prepared(select(m.status, m.not_before, m.sent_at).where(and_(
        m.org_id == bindparam("w_org_id"), m.contact_id == bindparam("w_contact_id"), m.direction == Direction.OUT,
        m.audience == Audience.CUSTOMER, m.channel.in_(bind_list("w_channel", count)),
        or_(handed_over, status_in(NOT_HANDED_OVER)) if with_planned else handed_over,
    )))


def send_moments(rows: Iterable[Mapping[str, Any]], planned_from: datetime | None) -> list[datetime]:
    """The moments frequency caps count for these rows (status, not_before, sent_at): a handed-over
    row at its `sent_at`; with `planned_from`, a queued row at the first moment it may go (its
    `not_before`, or `planned_from` if that is later) and a claimed row at `planned_from`."""
    moments = []
    for row in rows:
        status = row["status"]
        if status == MessageStatus.QUEUED:
            if planned_from is not None:
                not_before = row["not_before"]
                moments.append(not_before if not_before is not None and not_before > planned_from else planned_from)
        elif status == MessageStatus.SENDING:
            if planned_from is not None:
                moments.append(planned_from)
        elif row["sent_at"] is not None:
            moments.append(row["sent_at"])
    return moments


_HAND_OVER = Prepared(update(orm.messages).where(and_(
    orm.messages.c.id == bindparam("w_id"), orm.messages.c.claim_token == bindparam("w_token"),
    orm.messages.c.status == MessageStatus.SENDING,
)).values(status=MessageStatus.HANDED_OVER, attempts=orm.messages.c.attempts + 1))
_RELEASE = Prepared(update(orm.messages).where(and_(
    orm.messages.c.id == bindparam("w_id"), orm.messages.c.claim_token == bindparam("w_token"),
    orm.messages.c.status == MessageStatus.SENDING,
)))
# Once the provider reported on a message (its status callback can arrive before the dispatcher
# records the hand-over's outcome), its report stands and the dispatcher's record changes nothing.
_RECORD = Prepared(update(orm.messages).where(and_(
    orm.messages.c.id == bindparam("w_id"), orm.messages.c.claim_token == bindparam("w_token"),
    orm.messages.c.provider_status.is_(None),
)))
_RENEW = Prepared(update(orm.messages).where(and_(
    status_in((MessageStatus.SENDING, MessageStatus.HANDED_OVER)), orm.messages.c.claim_token == bindparam("w_token"),
)))


class OrgMemo:
    """Org rows and resolved settings already read in a transaction. One inbound message needs
    its org's row for the settings and again for every message it renders; the group-commit
    batcher shares one memo among all the messages of its transaction. Only `OrgRepository`'s
    own writes change orgs, and they empty it."""

    def __init__(self) -> None:
        self.rows: dict[int, Org] = {}
        self.settings: dict[int, OrgSettings] = {}
        self.line_owners: dict[str, int | None] = {}  # number -> the agent whose own line it is

    def clear(self) -> None:
        self.rows.clear()
        self.settings.clear()
        self.line_owners.clear()


class OrgRepository:
    def __init__(self, conn: Connection, memo: OrgMemo | None = None) -> None:
        self.conn = conn
        self._memo = memo if memo is not None else OrgMemo()

    def get(self, org_id: int) -> Org:
        row = self._memo.rows.get(org_id)
        if row is None:
            row = _ORG.record(self.conn, {"w_id": org_id}, ORG)
            if row is None:
                raise NotFound(f"no org with id {org_id}", code="org_not_found")
            self._memo.rows[org_id] = row
        return row

    def first_id(self) -> int | None:
        return self.conn.execute(select(func.min(orm.orgs.c.id))).scalar()

    def all(self) -> list[Org]:
        return [ORG(r) for r in self.conn.execute(select(orm.orgs).order_by(orm.orgs.c.id))]

    def create(self, name: str, now: datetime, parent_id: int | None = None,
               settings: Mapping[str, Any] | None = None) -> int:
        raw = dict(settings or {})
        if parent_id is not None:
            self.get(parent_id)
        self._validate(parent_id, raw)
        org_id = new_id(self.conn.execute(insert(orm.orgs).values(
            name=name, parent_id=parent_id, settings_json=json.dumps(raw), created_at=now)
        ))
        self.conn.execute(insert(orm.ledger_heads).values(org_id=org_id, seq=0, hash=ledger_chain.GENESIS))
        return int(org_id)

    def raw_chain(self, org_id: int) -> list[dict[str, Any]]:
        """Own settings of the org and its ancestors, root first."""
        chain: list[dict[str, Any]] = []
        seen: set[int] = set()
        current: int | None = org_id
        while current is not None and current not in seen:
            seen.add(current)
            row = self.get(current)
            chain.append(row.own_settings())
            current = row.parent_id
        return list(reversed(chain))

    def _validate(self, parent_id: int | None, own: Mapping[str, Any]) -> OrgSettings:
        parents = self.raw_chain(parent_id) if parent_id is not None else []
        return resolve([*parents, own])

    def settings(self, org_id: int) -> OrgSettings:
        settings = self._memo.settings.get(org_id)
        if settings is None:
            settings = self._memo.settings[org_id] = _cached_resolve(json.dumps(self.raw_chain(org_id), sort_keys=True))
        return settings

    def own_settings(self, org_id: int) -> dict[str, Any]:
        return self.get(org_id).own_settings()

    def replace_settings(self, org_id: int, own: Mapping[str, Any]) -> OrgSettings:
        """Validate the resulting settings (with inheritance) before storing anything."""
        row = self.get(org_id)
        resolved = self._validate(row.parent_id, own)
        for child in self.conn.execute(select(orm.orgs.c.id).where(orm.orgs.c.parent_id == org_id)).scalars():
            resolve([*self.raw_chain(org_id)[:-1], own, *self.raw_chain(child)[-1:]])
        self.conn.execute(update(orm.orgs).where(orm.orgs.c.id == org_id).values(settings_json=json.dumps(dict(own))))
        self._memo.clear()
        return resolved

    def add_number(self, org_id: int, number: str, agent_id: int | None = None) -> None:
        self._memo.line_owners.pop(number, None)
        self.conn.execute(insert(orm.org_numbers).values(org_id=org_id, number=number, agent_id=agent_id))

    def number_owner(self, number: str) -> int | None:
        """The agent whose own line `number` is (None: the org's shared number, or no number of ours)."""
        if number not in self._memo.line_owners:
            self._memo.line_owners[number] = _LINE_OWNER.scalar(self.conn, {"w_number": number})
        return self._memo.line_owners[number]

    def numbers(self, org_id: int) -> list[str]:
        q = select(orm.org_numbers.c.number).where(orm.org_numbers.c.org_id == org_id).order_by(orm.org_numbers.c.id)
        return list(self.conn.execute(q).scalars())

    def find_by_number(self, number: str) -> int | None:
        return _ORG_BY_NUMBER.scalar(self.conn, {"w_number": number})


_RESOLVE_CACHE: dict[str, OrgSettings] = {}


def _cached_resolve(chain_json: str) -> OrgSettings:
    """Settings validation costs far more than reading the rows; reuse results per content."""
    settings = _RESOLVE_CACHE.get(chain_json)
    if settings is None:
        if len(_RESOLVE_CACHE) > 1024:
            _RESOLVE_CACHE.clear()
        settings = resolve(json.loads(chain_json))
        _RESOLVE_CACHE[chain_json] = settings
    return settings


class AgentRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def create(self, org_id: int, name: str, role: str, token_hash: str, now: datetime,
               expires_at: datetime | None = None) -> int:
        return new_id(self.conn.execute(
            insert(orm.agents).values(org_id=org_id, name=name, role=role, token_hash=token_hash, created_at=now,
                                      expires_at=expires_at)
        ))

    def in_org(self, org_id: int, agent_id: int) -> Agent:
        row = self.get(agent_id)
        if row is None or row.org_id != org_id:
            raise NotFound(f"no agent with id {agent_id}", code="agent_not_found")
        return row

    def update(self, agent_id: int, **values: Any) -> None:
        self.conn.execute(update(orm.agents).where(orm.agents.c.id == agent_id).values(**values))

    def by_token_hash(self, token_hash: str) -> Agent | None:
        row = self.conn.execute(select(orm.agents).where(orm.agents.c.token_hash == token_hash)).first()
        return AGENT(row) if row is not None else None

    def get(self, agent_id: int) -> Agent | None:
        return _AGENT.record(self.conn, {"w_id": agent_id}, AGENT)

    def by_email(self, email: str) -> Agent | None:
        """The person who signs in to the console with `email` (lower case)."""
        row = self.conn.execute(select(orm.agents).where(orm.agents.c.email == email)).first()
        return AGENT(row) if row is not None else None

    def for_org(self, org_id: int) -> list[Agent]:
        q = select(orm.agents).where(orm.agents.c.org_id == org_id).order_by(orm.agents.c.id)
        return [AGENT(r) for r in self.conn.execute(q)]


class ContactRepository:
    """Contacts and their addresses. A contact's addresses, once read, stay for the rest of the
    unit of work (a flow step reads them up to three times) until this repository adds one."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._addresses: dict[int, list[Address]] = {}
        self._at: dict[tuple[int, str], Contact | None] = {}  # (org id, address) -> contact, read ahead

    def create(self, org_id: int, now: datetime, name: str = "", time_zone: str | None = None,
               region: str | None = None, fields: Mapping[str, Any] | None = None,
               marketing_allowed: bool = True, language: str | None = None,
               external_id: str | None = None) -> int:
        return new_id(self.conn.execute(insert(orm.contacts).values(
            org_id=org_id, name=name, time_zone=time_zone, region=region, language=language,
            fields_json=json.dumps(dict(fields or {})), marketing_allowed=marketing_allowed,
            created_at=now, updated_at=now, external_id=external_id,
        )))

    def by_external_id(self, org_id: int, external_id: str, *, lock: bool = False) -> Contact | None:
        """The contact the business's CRM knows as `external_id`; `lock` holds its row (PostgreSQL)."""
        query = select(orm.contacts).where(and_(orm.contacts.c.org_id == org_id,
                                                orm.contacts.c.external_id == external_id))
        row = self.conn.execute(query.with_for_update() if lock else query).first()
        return CONTACT(row) if row is not None else None

    def get(self, org_id: int, contact_id: int, *, lock: bool = False) -> Contact:
        """The contact; `lock` holds its row until the transaction ends (PostgreSQL)."""
        row = (_CONTACT_LOCKED if lock else _CONTACT).record(self.conn, {"w_id": contact_id, "w_org_id": org_id},
                                                              CONTACT)
        if row is None:
            raise NotFound(f"no contact with id {contact_id}", code="contact_not_found")
        return row

    def update(self, contact_id: int, now: datetime, **values: Any) -> None:
        if self._at:
            self._at = {key: found for key, found in self._at.items() if found is None or found.id != contact_id}
        if "fields" in values:
            values["fields_json"] = json.dumps(values.pop("fields"))
        _UPDATE_CONTACT.execute(self.conn, {"w_id": contact_id, "updated_at": now, **values})

    def set_dnd(self, contact_id: int, now: datetime, dnd: DndSettings) -> None:
        self.update(contact_id, now, dnd_all=dnd.all_channels,
                    dnd_channels=",".join(sorted(c.value for c in dnd.channels)))

    def find_by_address(self, org_id: int, value: str) -> int | None:
        return _CONTACT_BY_ADDRESS.scalar(self.conn, {"w_org_id": org_id, "w_value": value})

    def at_address(self, org_id: int, value: str) -> Contact | None:
        """The contact one of whose addresses is `value` (in normal form)."""
        found = self._at.get((org_id, value), _UNREAD)
        if found is not _UNREAD:
            return found  # type: ignore[return-value]
        return _CONTACT_AT_ADDRESS.record(self.conn, {"w_org_id": org_id, "w_value": value}, CONTACT)

    def read_ahead(self, org_id: int, values: Sequence[str]) -> list[int]:
        """Find the contacts at many addresses in one statement (a batch's senders), for
        `at_address`; the ids of those found. Kept until this repository changes the contact
        or gives the address to a contact (`add_address`)."""
        wanted = [value for value in values if (org_id, value) not in self._at]
        for chunk in in_chunks(wanted, READ_AHEAD_CHUNK):
            self._at.update(((org_id, value), None) for value in chunk)
            for row in _contacts_at_addresses(len(chunk)).records(
                    self.conn, {"w_org_id": org_id, **bind_values("w_value", chunk)}, tuple):
                self._at[(org_id, row[0])] = CONTACT(row[1:])
        return [contact.id for (org, _), contact in self._at.items() if org == org_id and contact is not None]

    def forget_reads(self) -> None:
        """A savepoint rolled back: contacts and addresses read since may no longer be as read."""
        self._at.clear()
        self._addresses.clear()

    def add_address(self, org_id: int, contact_id: int, kind: str, value: str) -> None:
        self._addresses.pop(contact_id, None)
        self._at.pop((org_id, value), None)
        self.conn.execute(insert(orm.addresses).values(org_id=org_id, contact_id=contact_id, kind=kind, value=value))

    def set_phone_flags(self, org_id: int, value: str, *, active: bool, do_not_call: bool) -> None:
        """A phone record's own Active and Do-Not-Call (no row changes for a number no contact has)."""
        if _SET_PHONE_FLAGS.execute(self.conn, {"w_org_id": org_id, "w_value": value, "active": active,
                                                "do_not_call": do_not_call, "w_active": active,
                                                "w_do_not_call": do_not_call}):
            self._addresses.clear()

    def addresses(self, contact_id: int) -> list[Address]:
        rows = self._addresses.get(contact_id)
        if rows is None:
            rows = self._addresses[contact_id] = _ADDRESSES.records(self.conn, {"w_contact_id": contact_id}, ADDRESS)
        return list(rows)

    def search(self, org_id: int, *, address: str | None = None, name: str | None = None,
               external_id: str | None = None, limit: int = 50, offset: int = 0) -> list[Contact]:
        q = select(orm.contacts).where(orm.contacts.c.org_id == org_id)
        if external_id is not None:
            q = q.where(orm.contacts.c.external_id == external_id)
        if address:
            q = q.where(orm.contacts.c.id.in_(
                select(orm.addresses.c.contact_id).where(
                    and_(orm.addresses.c.org_id == org_id, orm.addresses.c.value == address)
                )
            ))
        if name:
            q = q.where(orm.contacts.c.name.ilike(f"%{name}%"))
        q = q.order_by(orm.contacts.c.id).limit(limit).offset(offset)
        return [CONTACT(r) for r in self.conn.execute(q)]


_CONSENT_FIELDS = (
    "state", "awaiting_pin", "opted_in_at", "requested_at", "opted_out_at", "method", "version",
    "opt_out_confirmation_sent", "pin_hash", "pin_expires_at", "pin_attempts", "contact_id", "do_not_contact",
    "do_not_contact_at",
)


# Enum members by stored value: a dict look-up costs a fraction of calling the Enum class.
_CHANNELS = {channel.value: channel for channel in Channel}
_STATES = {state.value: state for state in State}


def _stored_values(consent: Consent) -> dict[str, Any]:
    """The values of a consent's row that `ConsentRepository.save` writes (its key aside)."""
    values = {name: getattr(consent, name) for name in _CONSENT_FIELDS}
    values["state"] = State(consent.state).value
    return values


_CONSENT_COLUMNS = ("id", "org_id", "contact_id", "address", "channel", "state", "awaiting_pin", "opted_in_at",
                    "requested_at", "opted_out_at", "method", "version", "opt_out_confirmation_sent", "pin_hash",
                    "pin_expires_at", "pin_attempts", "updated_at", "do_not_contact", "do_not_contact_at")
if tuple(orm.consents.c.keys()) != _CONSENT_COLUMNS:
    raise TypeError(f"consents' columns changed: {tuple(orm.consents.c.keys())}; update _consent")


def _consent(v: Sequence[Any]) -> Consent:
    """A consent from a full row's values in column order (`_CONSENT_COLUMNS`): no dict per row."""
    return Consent(
        channel=_CHANNELS[v[4]], address=v[3], state=_STATES[v[5]], awaiting_pin=bool(v[6]), opted_in_at=v[7],
        requested_at=v[8], opted_out_at=v[9], method=v[10], id=v[0], contact_id=v[2], org_id=v[1], version=v[11],
        opt_out_confirmation_sent=bool(v[12]), pin_hash=v[13], pin_expires_at=v[14], pin_attempts=v[15],
        do_not_contact=v[17], do_not_contact_at=v[18],
    )


class ConsentRepository:
    """Consents. `save` writes only the columns that changed since the consent was read (or last
    saved) through this repository: an UPDATE of all of them rewrote the entries of every index
    on the table (state and its dates) even when only a flag changed, as when an opt-out's
    confirmation is marked sent right after the opt-out itself."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._stored: dict[int, dict[str, Any]] = {}  # consent id -> its row's values as last read or written
        # read ahead: the row's values (`_CONSENT_COLUMNS`), or None for no row
        self._ahead: dict[tuple[int, str, Channel], list[Any] | None] = {}

    def get(self, org_id: int, address: str, channel: Channel, *, lock: bool = False) -> Consent:
        """The stored consent, or a new `unknown` one (saved by `save`)."""
        values = self._ahead.get((org_id, address, channel), _UNREAD)
        if values is _UNREAD:
            values = (_CONSENT_LOCKED if lock else _CONSENT).record(
                self.conn, {"w_org_id": org_id, "w_address": address, "w_channel": channel.value}, list)
        if values is None:
            return Consent(channel=channel, address=address, org_id=org_id)
        return self._read(_consent(values))  # type: ignore[arg-type]

    def read_ahead(self, org_id: int, wanted: Sequence[tuple[str, Channel]]) -> None:
        """Read the consents of many (address, channel) in one statement (a batch's senders),
        for `get`; each is kept until it is saved. Not used for a locking `get` on PostgreSQL,
        whose row locks must not be taken early (nor is anything read ahead there)."""
        if self.conn.dialect.name == "postgresql":
            return
        keys = [(org_id, address, channel) for address, channel in dict.fromkeys(wanted)
                if (org_id, address, channel) not in self._ahead]
        for chunk in in_chunks((address for _, address, _ in keys), READ_AHEAD_CHUNK):
            params = {"w_org_id": org_id, **bind_values("w_address", chunk)}
            for values in _consents_for_addresses(len(chunk)).records(self.conn, params, list):
                self._ahead[(org_id, values[3], _CHANNELS[values[4]])] = values
        for key in keys:
            self._ahead.setdefault(key, None)

    def save(self, consent: Consent, now: datetime) -> None:
        if consent.org_id is None:
            self._ahead.clear()
        else:
            self._ahead.pop((consent.org_id, consent.address, consent.channel), None)
        values = _stored_values(consent)
        if consent.id is None:
            consent.id = _INSERT_CONSENT.insert(self.conn, {
                "org_id": consent.org_id, "address": consent.address, "channel": consent.channel.value,
                **values, "updated_at": now,
            })
        else:
            stored = self._stored.get(consent.id)
            changed = values if stored is None else {name: value for name, value in values.items()
                                                     if stored[name] != value}
            if not changed:
                return
            _UPDATE_CONSENT.execute(self.conn, {"w_id": consent.id, **changed, "updated_at": now})
        self._stored[consent.id] = values

    def _read(self, consent: Consent) -> Consent:
        assert consent.id is not None
        self._stored[consent.id] = _stored_values(consent)
        return consent

    def forget_reads(self) -> None:
        """Rows may hold other values than last read or written here (a savepoint rolled back):
        the next save of each consent writes every column, and each is read again."""
        self._stored.clear()
        self._ahead.clear()

    def for_addresses(self, org_id: int, addresses: Sequence[str]) -> list[Consent]:
        if not addresses:
            return []
        params = {"w_org_id": org_id, **bind_values("w_address", addresses)}
        # Not remembered for `save` (their saves write every column): the flow batches read
        # hundreds at a time and change few.
        return _consents_for_addresses(len(addresses)).records(self.conn, params, _consent)

    def attach_contact(self, org_id: int, address: str, contact_id: int) -> None:
        self.forget_reads()  # rows changed behind the consents read
        self.conn.execute(update(orm.consents).where(and_(
            orm.consents.c.org_id == org_id, orm.consents.c.address == address
        )).values(contact_id=contact_id))

    def due_for_expiry(self, org_id: int, channel: Channel, opted_in_before: datetime, limit: int) -> list[Consent]:
        q = select(orm.consents).where(and_(
            orm.consents.c.state == State.OPTED_IN.value, orm.consents.c.opted_in_at < opted_in_before,
            orm.consents.c.org_id == org_id, orm.consents.c.channel == channel.value,
        )).order_by(orm.consents.c.opted_in_at).limit(limit)
        return [_consent(row) for row in self.conn.execute(q)]

    def due_for_lapse(self, org_id: int, requested_before: datetime, limit: int) -> list[Consent]:
        q = select(orm.consents).where(and_(
            orm.consents.c.state == State.REQUESTED.value, orm.consents.c.requested_at < requested_before,
            orm.consents.c.org_id == org_id,
        )).order_by(orm.consents.c.requested_at).limit(limit)
        return [_consent(row) for row in self.conn.execute(q)]


_LEDGER_COLUMNS = tuple(column.name for column in orm.ledger.columns if column.name != "id")


class LedgerQueue:
    """Ledger entries appended in a transaction and not yet written: `LedgerRepository.flush`
    writes them, in order, just before the transaction commits.

    Why: every entry extends its org's hash chain, so writing one means locking the chain's head
    row, reading it and updating it. Done entry by entry, each transition cost three statements,
    and on PostgreSQL a group commit held the head's lock from its first transition to its end,
    so the web workers' group commits took turns (and could deadlock with consent row locks
    taken in the other order). Queued, a transaction locks each head once, at its very end, and
    inserts all its entries in one statement."""

    def __init__(self) -> None:
        self.entries: list[Row] = []


class LedgerRepository:
    """The consent ledger. Appends are queued (`LedgerQueue`) and written by `flush`, which the
    unit of work calls before it commits; reading the ledger flushes first."""

    def __init__(self, conn: Connection, queue: LedgerQueue | None = None) -> None:
        self.conn = conn
        self.queue = queue if queue is not None else LedgerQueue()

    def append(self, org_id: int, contact_id: int | None, record: TransitionRecord, mode: Mode | None = None) -> None:
        """Queue the entry of a consent transition; `mode`: the mode the org ran the channel in
        (stored beside the entry for the reports, outside its hash)."""
        self.append_change(
            org_id, contact_id, channel=record.channel.value, address=record.address,
            from_state=State(record.from_state).value, to_state=State(record.to_state).value,
            trigger=record.trigger.value, method=record.method, actor_kind=record.actor.kind.value,
            actor_id=record.actor.id, source_message_id=record.source_message_id,
            evidence=record.evidence, occurred_at=record.occurred_at, recorded_at=record.recorded_at,
            mode=mode.value if mode is not None else None,
        )

    def append_change(self, org_id: int, contact_id: int | None, **change: Any) -> None:
        """Queue one entry for the org's chain. Also used for contact-level changes that are not
        consent transitions (DND, marketing permission), with their own trigger names."""
        self.queue.entries.append({"org_id": org_id, "contact_id": contact_id, **change})

    def flush(self) -> None:
        """Write the queued entries: per org, lock the chain's head, chain the entries onto it in
        the order they were appended, insert them, and move the head. Keyed with the newest
        ledger key of the engine (`ledger_files.attached`).

        A damaged chain never stops the entries (opt-outs among them) from being written: a
        missing head row, or one behind the entries present, is repaired from the last entry
        present, and a `DAMAGE_TRIGGER` entry is chained in first saying what was found, so that
        `verify` and the metrics show it. An ERROR is logged.

        The consent events of the entries are queued for the org's event endpoints here too
        (`event_outbox.queue_events`), once each entry has its sequence number."""
        entries, self.queue.entries = self.queue.entries, []
        if not entries:
            return
        files = ledger_files.attached(self.conn)
        key = files.keyring.signing if files is not None else None
        by_org: dict[int, list[Row]] = {}
        for entry in entries:
            by_org.setdefault(entry["org_id"], []).append(entry)
        insert_entries = _INSERT_LEDGER_ENTRIES[self.conn.dialect.name]
        for org_id, appended in sorted(by_org.items()):
            head = _LEDGER_HEAD_LOCKED.first(self.conn, {"w_org_id": org_id})
            if head is None:
                head, damage = self._recreate_head(org_id)
                if damage:
                    appended = [self._damage_entry(org_id, ledger_chain.HEAD_MISSING, damage, appended[0]), *appended]
            rows = _chained(head["seq"], head["hash"], appended, key)
            written = insert_entries.executemany(self.conn, rows)
            if written < len(rows):
                ours = {row["hash"] for row in rows}
                inserted = [found["id"] for found in _LEDGER_IDS_FROM.rows(self.conn, {"w_org_id": org_id,
                                                                                      "w_seq": head["seq"]})
                            if found["hash"] in ours]
                rows = self._chain_past_collision(org_id, head["seq"], inserted, appended, key)
            _UPDATE_LEDGER_HEAD.execute(self.conn, {"w_org_id": org_id, "seq": rows[-1]["seq"],
                                                    "hash": rows[-1]["hash"]})
            event_outbox.queue_events(self.conn, org_id, rows)

    def _recreate_head(self, org_id: int) -> tuple[Row, str | None]:
        """The head row was missing: re-create it at the last entry present and lock it. Also
        what the damage was, or None if another transaction re-created the row first."""
        last = _LAST_LEDGER_ENTRY.first(self.conn, {"w_org_id": org_id})
        seq, last_hash = (last["seq"], last["hash"]) if last else (0, ledger_chain.GENESIS)
        created = _INSERT_LEDGER_HEAD_IF_MISSING[self.conn.dialect.name].execute(
            self.conn, {"org_id": org_id, "seq": seq, "hash": last_hash})
        head = _LEDGER_HEAD_LOCKED.first(self.conn, {"w_org_id": org_id})
        assert head is not None
        if not created:
            return head, None
        where = f"chained onto the last entry present, seq {seq}" if seq else "no entries were present either"
        return head, f"the chain's head row was missing (deleted?); {where}"

    def _chain_past_collision(self, org_id: int, head_seq: int, inserted_ids: list[int], appended: list[Row],
                              key: ledger_chain.LedgerKey | None) -> list[Row]:
        """The head row was behind the entries present (wound back?), so some new entries
        collided with old ones: take back those that went in, and chain everything onto the
        last entry present, after an entry recording the damage. Returns the rows written."""
        if inserted_ids:
            self.conn.execute(delete(orm.ledger).where(orm.ledger.c.id.in_(inserted_ids)))
        last = _LAST_LEDGER_ENTRY.first(self.conn, {"w_org_id": org_id})
        assert last is not None  # a collision needs an entry to collide with
        damage = (f"the chain's head row said seq {head_seq} but entries up to seq {last['seq']} were present "
                  f"(head rolled back?); chained onto seq {last['seq']}")
        marked = [self._damage_entry(org_id, ledger_chain.HEAD_BEHIND, damage, appended[0]), *appended]
        rows = _chained(last["seq"], last["hash"], marked, key)
        self.conn.execute(insert(orm.ledger), rows)
        return rows

    @staticmethod
    def _damage_entry(org_id: int, kind: str, description: str, first: Row) -> Row:
        """The entry recording damage found at commit time, timed like the entry it precedes.
        Logged at ERROR: the ledger needs an operator (no addresses or contents in the log)."""
        log.error("ledger damage in org %s: %s; the entries of this transaction were written and the damage "
                  "is recorded in the chain (see `optflow ledger verify`)", org_id, description)
        return {"org_id": org_id, "contact_id": None, "channel": "ledger", "address": "", "from_state": "",
                "to_state": "", "trigger": ledger_chain.DAMAGE_TRIGGER, "method": kind, "actor_kind": "system",
                "actor_id": None, "source_message_id": None, "evidence": description,
                "occurred_at": first["recorded_at"], "recorded_at": first["recorded_at"]}

    def for_contact(self, org_id: int, contact_id: int, addresses: Iterable[str] = ()) -> list[Row]:
        self.flush()
        cond = orm.ledger.c.contact_id == contact_id
        addrs = list(addresses)
        if addrs:
            cond = or_(cond, orm.ledger.c.address.in_(addrs))
        q = select(orm.ledger).where(and_(orm.ledger.c.org_id == org_id, cond)).order_by(orm.ledger.c.seq)
        return [dict(r) for r in self.conn.execute(q).mappings()]

    def entries(self, org_id: int, since: datetime | None = None, until: datetime | None = None) -> list[Row]:
        self.flush()
        q = select(orm.ledger).where(orm.ledger.c.org_id == org_id)
        if since is not None:
            q = q.where(orm.ledger.c.recorded_at >= since)
        if until is not None:
            q = q.where(orm.ledger.c.recorded_at < until)
        return [dict(r) for r in self.conn.execute(q.order_by(orm.ledger.c.seq)).mappings()]

    def verify(self, org_id: int, checkpoints: Sequence[ledger_chain.Checkpoint] = ()) -> ledger_chain.ChainReport:
        """Check the org's chain with the engine's ledger keys, against its head row and the
        given (signature-checked) checkpoints of the org."""
        self.flush()
        head = _row(self.conn.execute(select(orm.ledger_heads).where(orm.ledger_heads.c.org_id == org_id)))
        rows = self.conn.execute(
            select(orm.ledger).where(orm.ledger.c.org_id == org_id).order_by(orm.ledger.c.seq, orm.ledger.c.id)
        ).mappings()
        files = ledger_files.attached(self.conn)
        return ledger_chain.verify_chain(
            org_id, (dict(r) for r in rows), head["seq"] if head else None, head["hash"] if head else None,
            files.keyring if files is not None else None, checkpoints,
        )

    def chain_end(self, org_id: int) -> tuple[int, str, int]:
        """(seq, hash, number of entries) of the org's chain as the table holds it."""
        self.flush()
        last = _LAST_LEDGER_ENTRY.first(self.conn, {"w_org_id": org_id})
        count = self.conn.execute(select(func.count()).where(orm.ledger.c.org_id == org_id)).scalar() or 0
        return (last["seq"], last["hash"], int(count)) if last else (0, ledger_chain.GENESIS, 0)


def _chained(seq: int, prev_hash: str, entries: list[Row], key: ledger_chain.LedgerKey | None) -> list[Row]:
    """The rows of `entries` chained after (seq, prev_hash), hashed under `key` (None: unkeyed)."""
    key_id = key.key_id if key is not None else None
    rows = []
    for entry in entries:
        seq += 1
        row = {name: entry.get(name) for name in _LEDGER_COLUMNS}
        row.update(seq=seq, prev_hash=prev_hash, key_id=key_id)
        row["hash"] = prev_hash = ledger_chain.entry_hash(prev_hash, row, key)
        rows.append(row)
    return rows


class MessageRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add(self, **values: Any) -> int:
        return _INSERT_MESSAGE.insert(self.conn, values)

    def add_inbound(self, **values: Any) -> int | None:
        """Store an inbound message; None, storing nothing, when a message with the same
        `provider_id` is already stored (de-duplication by the unique constraint)."""
        new_id = _INSERT_NEW_INBOUND[self.conn.dialect.name].scalar(self.conn, {"direction": Direction.IN, **values})
        return int(new_id) if new_id is not None else None

    def get(self, message_id: int) -> Message | None:
        return _MESSAGE.record(self.conn, {"w_id": message_id}, MESSAGE)

    def find_inbound(self, org_id: int, provider_id: str) -> Message | None:
        return _INBOUND_BY_PROVIDER_ID.record(self.conn, {"w_org_id": org_id, "w_provider_id": provider_id}, MESSAGE)

    def find_outbound(self, org_id: int, provider_id: str) -> Message | None:
        """The outbound message the provider knows by `provider_id` (a delivery report's subject)."""
        return _OUTBOUND_BY_PROVIDER_ID.record(self.conn, {"w_org_id": org_id, "w_provider_id": provider_id}, MESSAGE)

    def set(self, message_id: int, **values: Any) -> None:
        _UPDATE_MESSAGE.execute(self.conn, {"w_id": message_id, **values})

    def held(self, org_id: int, address: str, channel: Channel) -> list[Message]:
        params = {"w_org_id": org_id, "w_address": address, "w_channel": channel.value}
        return _HELD.records(self.conn, params, MESSAGE)

    def has_outbound(self, org_id: int, address: str, channel: Channel) -> bool:
        q = select(orm.messages.c.id).where(and_(
            orm.messages.c.org_id == org_id, orm.messages.c.address == address,
            orm.messages.c.channel == channel.value, orm.messages.c.direction == Direction.OUT,
            orm.messages.c.audience == Audience.CUSTOMER,
            orm.messages.c.status.in_((*NOT_HANDED_OVER, MessageStatus.HANDED_OVER, MessageStatus.SENT,
                                       MessageStatus.REPLIED)),
        )).limit(1)
        return self.conn.execute(q).first() is not None

    def recent_sends(self, org_id: int, contact_id: int, channels: Iterable[Channel],
                     since: datetime, *, planned_from: datetime | None = None) -> list[datetime]:
        """The moments of the messages to the contact on these channels that frequency caps count:
        those handed to a provider at or after `since`; with `planned_from` (deciding whether to
        queue one more), also those still queued or claimed, at the first moment each may go
        (`send_moments`)."""
        values = [c.value for c in channels]
        params = {"w_org_id": org_id, "w_contact_id": contact_id, "w_since": since, **bind_values("w_channel", values)}
        return send_moments(_recent_sends(len(values), planned_from is not None).rows(self.conn, params), planned_from)

    def last_inbound_at(self, org_id: int, address: str, channel: Channel) -> datetime | None:
        """When the customer at `address` last wrote on `channel` (None: never)."""
        last: datetime | None = _LAST_INBOUND.scalar(
            self.conn, {"w_org_id": org_id, "w_address": address, "w_channel": channel.value})
        return last

    def for_contact(self, org_id: int, contact_id: int, limit: int = 100) -> list[Message]:
        q = select(orm.messages).where(and_(
            orm.messages.c.org_id == org_id, orm.messages.c.contact_id == contact_id
        )).order_by(orm.messages.c.id.desc()).limit(limit)
        return [MESSAGE(r) for r in self.conn.execute(q)]

    def unassociated(self, org_id: int) -> list[Message]:
        q = select(orm.messages).where(and_(
            orm.messages.c.org_id == org_id, orm.messages.c.status == MessageStatus.UNASSOCIATED
        )).order_by(orm.messages.c.id)
        return [MESSAGE(r) for r in self.conn.execute(q)]

    def queued_for(self, org_id: int, address: str, channels: Iterable[Channel]) -> list[int]:
        """Outbound rows to `address` on these channels that were not handed to a provider yet:
        queued, or claimed by a dispatcher (`sending`). They are locked until the transaction
        ends, so an opt-out that cancels them wins against a concurrent hand-over."""
        values = [c.value for c in channels]
        params = {"w_org_id": org_id, "w_address": address, **bind_values("w_channel", values)}
        return [row["id"] for row in _queued_for(len(values)).rows(self.conn, params)]

    def inline_replies(self, org_id: int, inbound_id: int, address: str, channel: Channel) -> list[Message]:
        """The replies recorded as given in the webhook's answer to inbound message `inbound_id`:
        `replied` rows to its sender stored after it and before the sender's next message."""
        m = orm.messages.c
        following = select(func.min(m.id)).where(and_(
            m.org_id == org_id, m.address == address, m.channel == channel.value, m.direction == Direction.IN,
            m.id > inbound_id)).scalar_subquery()
        q = select(orm.messages).where(and_(
            m.org_id == org_id, m.address == address, m.channel == channel.value, m.direction == Direction.OUT,
            m.audience == Audience.CUSTOMER, m.status == MessageStatus.REPLIED, m.id > inbound_id,
            or_(following.is_(None), m.id < following),
        )).order_by(m.id)
        return [MESSAGE(r) for r in self.conn.execute(q)]

    def claim_due(self, now: datetime, limit: int, skip_locked: bool, token: str,
                  lease_until: datetime) -> list[Message]:
        """Claim up to `limit` due queued rows for one dispatcher: `sending`, marked with its
        `token`, leased until `lease_until` (kept in `not_before`). The rows as they were."""
        q = select(orm.messages).where(and_(
            orm.messages.c.status == MessageStatus.QUEUED,
            or_(orm.messages.c.not_before.is_(None), orm.messages.c.not_before <= now),
        )).order_by(orm.messages.c.id).limit(limit)
        if skip_locked:
            q = q.with_for_update(skip_locked=True)
        rows = [MESSAGE(r) for r in self.conn.execute(q)]
        _UPDATE_MESSAGE.executemany(self.conn, [
            {"w_id": row.id, "status": MessageStatus.SENDING, "claim_token": token, "not_before": lease_until}
            for row in rows
        ])
        return rows

    def hand_over(self, message_id: int, token: str, now: datetime, lease_until: datetime) -> bool:
        """Mark a claimed row as handed to the provider, if it is still `sending` under this
        claim's `token` (an opt-out cancels claimed rows; an expired lease lets another
        dispatcher claim them). Whether it was."""
        return _HAND_OVER.execute(self.conn, {
            "w_id": message_id, "w_token": token, "sent_at": now, "not_before": lease_until,
        }) == 1

    def release(self, message_id: int, token: str, **values: Any) -> bool:
        """Change a claimed row that is not handed over (denied, deferred), if still this claim's."""
        return _RELEASE.execute(self.conn, {"w_id": message_id, "w_token": token, **values}) == 1

    def record(self, message_id: int, token: str, **values: Any) -> bool:
        """Record the outcome of a hand-over, if the row still carries the claim's `token`."""
        return _RECORD.execute(self.conn, {"w_id": message_id, "w_token": token, **values}) == 1

    def renew_lease(self, token: str, lease_until: datetime) -> None:
        """Extend the lease of every row the claim still holds."""
        _RENEW.execute(self.conn, {"w_token": token, "not_before": lease_until})

    def expire_leases(self, now: datetime) -> None:
        """Rows whose lease ran out (their dispatcher died or hung): claimed rows are queued again
        for another claim; handed-over rows may have reached the provider, so they are not sent
        again but marked failed with an unknown outcome (`sent_at` kept: caps count them). Their
        token stays, so their dispatcher, if alive, still records the real outcome."""
        m = orm.messages.c
        self.conn.execute(update(orm.messages).where(and_(m.status == MessageStatus.SENDING, m.not_before <= now))
                          .values(status=MessageStatus.QUEUED, claim_token=None))
        self.conn.execute(update(orm.messages).where(and_(m.status == MessageStatus.HANDED_OVER, m.not_before <= now))
                          .values(status=MessageStatus.FAILED,
                                  last_error="outcome unknown: the dispatcher stopped while "
                                  "handing this message to the provider; it was not sent again"))
