"""The schema, declared once with SQLModel.

SQLModel gives readable table classes for the schema and for admin paths; hot paths use the same
tables through SQLAlchemy Core (`Model.__table__`), which measured ~4x cheaper per insert.
Every lookup the service layer makes has an index here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, DateTime, Dialect, ForeignKey, Index, Integer, Table, Text, UniqueConstraint, false
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel


class UtcDateTime(TypeDecorator[datetime]):
    """Stores UTC without a zone (the same on SQLite and PostgreSQL) and hands back aware UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; pass aware UTC")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC)

    # On SQLite a datetime is text. SQLAlchemy converts it in two steps (this class, then its
    # SQLite DATETIME type, which parses with a regular expression); one step writes the same
    # text and reads it ~3x faster, and a message stores and reads some fifteen of them.

    def bind_processor(self, dialect: Dialect) -> Any:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)
        return _sqlite_text

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)
        return _sqlite_datetime


class _LastConversion:
    """The last value converted and its result, as one pair (swapped atomically, so threads never
    see a value with another's result). A message or a flow step stores the same `now` five to
    ten times, and rows read together often share their times."""

    __slots__ = ("pair",)

    def __init__(self) -> None:
        self.pair: tuple[Any, Any] = (None, None)


_last_text, _last_datetime = _LastConversion(), _LastConversion()


def _sqlite_text(value: datetime | None) -> str | None:
    """The text SQLAlchemy's SQLite DATETIME stores, `YYYY-MM-DD HH:MM:SS.ffffff`, for aware UTC."""
    if value is None:
        return None
    given, text = _last_text.pair
    if value == given:  # the same instant (naive and aware values are never equal)
        return str(text)
    if value.tzinfo is None:
        raise ValueError("naive datetime given to the database; pass aware UTC")
    text = value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    _last_text.pair = (value, text)
    return text


def _sqlite_datetime(value: str | None) -> datetime | None:
    if value is None:
        return None
    given, result = _last_datetime.pair
    if value != given:
        result = datetime.fromisoformat(value).replace(tzinfo=UTC)
        _last_datetime.pair = (value, result)
    return result  # type: ignore[no-any-return]


def _table(model: type[SQLModel]) -> Table:
    table: Table = model.__table__  # type: ignore[attr-defined]  # set by SQLModel's metaclass
    return table


class OrgRow(SQLModel, table=True):
    __tablename__ = "orgs"
    id: int | None = Field(default=None, primary_key=True)
    name: str
    parent_id: int | None = Field(default=None, foreign_key="orgs.id", index=True)
    settings_json: str = Field(default="{}", sa_column=Column(Text, nullable=False, default="{}"))
    created_at: datetime = Field(sa_type=UtcDateTime)


class OrgNumberRow(SQLModel, table=True):
    """The org's own numbers and sender addresses: inbound messages find their org by `To`."""

    __tablename__ = "org_numbers"
    id: int | None = Field(default=None, primary_key=True)
    org_id: int = Field(foreign_key="orgs.id", index=True)
    number: str = Field(unique=True)
    # An employee's own line (Movius's MultiLine): customers who write to it are writing to them.
    agent_id: int | None = Field(default=None, sa_column=Column(
        Integer, ForeignKey("agents.id", name="fk_org_numbers_agent_id"), nullable=True))


class AgentRow(SQLModel, table=True):
    __tablename__ = "agents"
    __table_args__ = (UniqueConstraint("email", name="uq_agents_email"),)
    id: int | None = Field(default=None, primary_key=True)
    org_id: int = Field(foreign_key="orgs.id", index=True)
    name: str
    role: str  # agent | supervisor | admin
    token_hash: str = Field(unique=True)
    created_at: datetime = Field(sa_type=UtcDateTime)
    expires_at: datetime | None = Field(default=None, sa_type=UtcDateTime)  # None: never
    revoked_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    last_used_at: datetime | None = Field(default=None, sa_type=UtcDateTime)  # to the TOKEN_USE_PRECISION
    # The console's sign-in: a person's email (lower case, unique) and the argon2 hash of their password.
    email: str | None = None
    password_hash: str | None = None


class ConsoleSessionRow(SQLModel, table=True):
    """A person signed in to the console. The cookie carries a random token; only its hash is
    stored, so a copy of the database signs nobody in. Deleting the row signs the person out."""

    __tablename__ = "console_sessions"
    id: int | None = Field(default=None, primary_key=True)
    agent_id: int = Field(foreign_key="agents.id", index=True)
    token_hash: str = Field(unique=True)
    created_at: datetime = Field(sa_type=UtcDateTime)
    last_seen_at: datetime = Field(sa_type=UtcDateTime)
    expires_at: datetime = Field(sa_type=UtcDateTime)


class SignInFailureRow(SQLModel, table=True):
    """Failed console sign-ins counted per key: an account (the hash of its email) or an IP address."""

    __tablename__ = "sign_in_failures"
    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True)
    failures: int = 0
    last_failure_at: datetime = Field(sa_type=UtcDateTime)


class ContactRow(SQLModel, table=True):
    __tablename__ = "contacts"
    # An external id (the CRM's own key of the contact) is unique within its org; NULLs are not
    # compared, so any number of contacts may have none.
    __table_args__ = (UniqueConstraint("org_id", "external_id", name="uq_contact_org_external_id"),)
    id: int | None = Field(default=None, primary_key=True)
    org_id: int = Field(foreign_key="orgs.id", index=True)
    name: str = ""
    time_zone: str | None = None
    region: str | None = None
    fields_json: str = Field(default="{}", sa_column=Column(Text, nullable=False, default="{}"))
    active: bool = False
    do_not_call: bool = False
    marketing_allowed: bool = True
    dnd_all: bool = False
    dnd_channels: str = ""  # comma-separated channels
    created_at: datetime = Field(sa_type=UtcDateTime)
    updated_at: datetime = Field(sa_type=UtcDateTime)
    language: str | None = None  # ISO 639-1 code the contact is answered in (domain/languages.py)
    external_id: str | None = None  # the contact's key in the business's CRM (upsert by external id)


class AddressRow(SQLModel, table=True):
    __tablename__ = "addresses"
    __table_args__ = (UniqueConstraint("org_id", "value", name="uq_address_org_value"),)
    id: int | None = Field(default=None, primary_key=True)
    org_id: int = Field(foreign_key="orgs.id")
    contact_id: int = Field(foreign_key="contacts.id", index=True)
    kind: str  # phone | email
    value: str  # E.164 or normalised email
    # A phone record's own Active and Do-Not-Call (Collect!'s): set by the last opt-in or opt-out
    # of its calls or texts. Unused on emails.
    active: bool = Field(default=False, sa_column_kwargs={"server_default": false()})
    do_not_call: bool = Field(default=False, sa_column_kwargs={"server_default": false()})


class ConsentRow(SQLModel, table=True):
    """One consent machine instance: (org, address, channel). Keyed by address, not contact, so
    an opt-out from a number that belongs to no contact yet is still kept."""

    __tablename__ = "consents"
    __table_args__ = (
        UniqueConstraint("org_id", "address", "channel", name="uq_consent_org_address_channel"),
        Index("ix_consents_state_opted_in_at", "state", "opted_in_at"),
        Index("ix_consents_state_requested_at", "state", "requested_at"),
    )
    id: int | None = Field(default=None, primary_key=True)
    org_id: int = Field(foreign_key="orgs.id")
    contact_id: int | None = Field(default=None, foreign_key="contacts.id", index=True)
    address: str
    channel: str
    state: str = "unknown"
    awaiting_pin: bool = False
    opted_in_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    requested_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    opted_out_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    method: str | None = None
    version: int = 0
    opt_out_confirmation_sent: bool = False
    pin_hash: str | None = None
    pin_expires_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    pin_attempts: int = 0
    updated_at: datetime = Field(sa_type=UtcDateTime)
    # The address cannot or must not get messages on this channel, whatever the consent says: a
    # permanent bounce, a spam complaint, a carrier's "blocked", "unknown number" or "landline"
    # (`domain.delivery.Undeliverable`); None: nothing known against it. Not a customer opt-out.
    do_not_contact: str | None = None
    do_not_contact_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


class LedgerRow(SQLModel, table=True):
    """Append-only. `hash` = HMAC-SHA256 under the ledger key `key_id` (kept outside the
    database) of prev_hash + canonical content; entries older than ledger keys have no `key_id`
    and a plain SHA-256. `seq` is contiguous per org, so an edited, reordered or deleted entry
    breaks the chain (see `domain/ledger.py` and `optflow ledger verify`)."""

    __tablename__ = "ledger"
    __table_args__ = (
        UniqueConstraint("org_id", "seq", name="uq_ledger_org_seq"),
        Index("ix_ledger_org_contact", "org_id", "contact_id"),
        Index("ix_ledger_org_address", "org_id", "address"),
        Index("ix_ledger_org_recorded", "org_id", "recorded_at"),
    )
    id: int | None = Field(default=None, primary_key=True)
    org_id: int = Field(foreign_key="orgs.id")
    seq: int
    contact_id: int | None = None
    channel: str
    address: str
    from_state: str
    to_state: str
    trigger: str
    method: str | None = None
    actor_kind: str
    actor_id: str | None = None
    source_message_id: str | None = None
    evidence: str | None = Field(default=None, sa_column=Column(Text))
    occurred_at: datetime = Field(sa_type=UtcDateTime)
    recorded_at: datetime = Field(sa_type=UtcDateTime)
    prev_hash: str
    hash: str
    key_id: str | None = None
    # The mode (`consent`, `disclaimer`, `auto`) the org ran the entry's channel in when the entry
    # was written, for the reports. Not hashed (`domain/ledger.HASHED_FIELDS`), so chains written
    # before it verify unchanged; empty on those older entries and on entries that are not
    # consent transitions (DND, marketing, suppression, do-not-contact, damage).
    mode: str | None = None


class LedgerHeadRow(SQLModel, table=True):
    """The last entry of each org's chain. Locked (`FOR UPDATE`) while appending, so concurrent
    writers on PostgreSQL extend the chain one at a time; it also reveals a deleted tail."""

    __tablename__ = "ledger_heads"
    org_id: int = Field(primary_key=True, foreign_key="orgs.id")
    seq: int = 0
    hash: str = ""


class MessageRow(SQLModel, table=True):
    """Every message in and out. Outbound rows with status `queued` are the outbox."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("org_id", "direction", "provider_id", name="uq_message_provider_id"),
        Index("ix_messages_outbox", "status", "not_before"),
        Index("ix_messages_org_contact", "org_id", "contact_id"),
        Index("ix_messages_org_address_channel", "org_id", "address", "channel", "direction"),
    )
    id: int | None = Field(default=None, primary_key=True)
    org_id: int = Field(foreign_key="orgs.id")
    contact_id: int | None = None
    direction: str  # in | out
    audience: str = "customer"  # customer | employee
    channel: str
    address: str  # the customer's address
    org_address: str | None = None  # the org's number / sender
    body: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    subject: str | None = None
    purpose: str = "conversational"
    kind: str = "normal"  # optflow.domain.policy.MessageKind
    # received|held|delivered|unassociated|queued|sending|handed_over|sent|failed|denied|cancelled|replied
    status: str
    intent: str | None = None
    provider_id: str | None = None
    reply_text: str | None = Field(default=None, sa_column=Column(Text))
    agent_id: int | None = None
    enrollment_id: int | None = None
    not_before: datetime | None = Field(default=None, sa_type=UtcDateTime)  # while sending: the lease's end
    # The random token of the dispatcher's claim that holds the row (sending, handed_over): its
    # hand-over and the record of its outcome only take effect while the row still carries it.
    claim_token: str | None = None
    attempts: int = 0
    last_error: str | None = None
    created_at: datetime = Field(sa_type=UtcDateTime)
    sent_at: datetime | None = Field(default=None, sa_type=UtcDateTime)  # outbound: handed to the provider
    # The provider's own last word on delivery (Twilio's MessageStatus from its status callback)
    # and its error code; once the provider has spoken, the dispatcher's record no longer moves
    # the status (a late "sent" must not overwrite "delivered").
    provider_status: str | None = None
    error_code: str | None = None
    # A WhatsApp template message: {"name", "variables", "content_sid"} as JSON; None: free-form.
    template_json: str | None = Field(default=None, sa_column=Column(Text))


class FlowVersionRow(SQLModel, table=True):
    """Each version of a flow an enrolment ever started on: enrolments finish on their version."""

    __tablename__ = "flow_versions"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_flow_version"),)
    id: int | None = Field(default=None, primary_key=True)
    name: str
    version: str
    source_file: str
    source: str = Field(sa_column=Column(Text, nullable=False))
    loaded_at: datetime = Field(sa_type=UtcDateTime)


class EnrollmentRow(SQLModel, table=True):
    __tablename__ = "enrollments"
    __table_args__ = (
        Index("ix_enrollments_due", "status", "next_run_at"),
        Index("ix_enrollments_contact", "contact_id", "status"),
    )
    id: int | None = Field(default=None, primary_key=True)
    org_id: int = Field(foreign_key="orgs.id")
    contact_id: int = Field(foreign_key="contacts.id")
    flow_name: str
    flow_version: str
    pc: int = 0
    status: str = "active"  # active | paused | done | cancelled
    next_run_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    event_json: str = Field(default="{}", sa_column=Column(Text, nullable=False, default="{}"))
    started_at: datetime = Field(sa_type=UtcDateTime)
    ended_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    end_reason: str | None = None


class EnrollmentStepRow(SQLModel, table=True):
    """The history of an enrolment: one row per executed step."""

    __tablename__ = "enrollment_steps"
    id: int | None = Field(default=None, primary_key=True)
    enrollment_id: int = Field(foreign_key="enrollments.id", index=True)
    pc: int
    step: str
    outcome: str
    at: datetime = Field(sa_type=UtcDateTime)


class EventEndpointRow(SQLModel, table=True):
    """A receiver of the org's consent events (`consent.changed`, `dnd.changed`,
    `marketing.changed`): a CRM or DMS kept in step. Its Standard Webhooks secret is not stored:
    it is derived from the webhook key (kept outside the database, `adapters/secrets.py`) and
    `secret_salt`, so a copy of the database cannot sign or forge events."""

    __tablename__ = "event_endpoints"
    id: int | None = Field(default=None, primary_key=True)
    org_id: int = Field(foreign_key="orgs.id", index=True)
    url: str = Field(sa_column=Column(Text, nullable=False))
    description: str = ""
    event_types: str  # comma-separated event types it receives
    active: bool = True
    secret_salt: str  # with the webhook key, derives the endpoint's secret; a new salt rotates it
    created_at: datetime = Field(sa_type=UtcDateTime)
    removed_at: datetime | None = Field(default=None, sa_type=UtcDateTime)  # removed: kept for its log


class WebhookDeliveryRow(SQLModel, table=True):
    """The outbox of webhooks: a flow's `webhook` steps, and consent events to the org's event
    endpoints (`endpoint_id` set). Written in the transaction of the change, POSTed by the
    scheduler's delivery job outside any transaction, signed (Standard Webhooks), retried with
    backoff. A table of its own rather than `messages`: a webhook goes to a system, not to a
    person, so it has no address, consent or policy check, and its own retry rules.

    Consent events to one endpoint go in order per contact: a row waits while an earlier row of
    its endpoint with the same `ordering_key` is queued or being sent."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_endpoint_order", "endpoint_id", "ordering_key", "status"),
    )
    id: int | None = Field(default=None, primary_key=True)
    org_id: int = Field(foreign_key="orgs.id")
    enrollment_id: int | None = Field(default=None, index=True)
    url: str = Field(sa_column=Column(Text, nullable=False))
    payload: str = Field(sa_column=Column(Text, nullable=False))  # the JSON body, exactly as signed and sent
    status: str = "queued"  # queued | sending (leased until next_attempt_at) | delivered | failed
    attempts: int = 0
    next_attempt_at: datetime = Field(sa_type=UtcDateTime)
    last_status: int | None = None  # the receiver's last HTTP status; None: no answer
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(sa_type=UtcDateTime)
    delivered_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    endpoint_id: int | None = None  # the event endpoint (event_endpoints.id); None: a flow's webhook
    event_type: str | None = None  # consent.changed | dnd.changed | marketing.changed
    event_id: str | None = None  # the event's `webhook-id`, the same on retries and redeliveries
    ordering_key: str | None = None  # `contact:<id>` (or `address:<address>`): delivered in order per key
    give_up_at: datetime | None = Field(default=None, sa_type=UtcDateTime)  # no retry after; None: by count


class WebhookAttemptRow(SQLModel, table=True):
    """The delivery log: one row per POST of a webhook delivery, with what came back."""

    __tablename__ = "webhook_attempts"
    id: int | None = Field(default=None, primary_key=True)
    delivery_id: int = Field(foreign_key="webhook_deliveries.id", index=True)
    attempt: int  # 1 for the first POST of the delivery
    attempted_at: datetime = Field(sa_type=UtcDateTime)
    status_code: int | None = None  # None: no answer (refused, timed out)
    error: str | None = Field(default=None, sa_column=Column(Text))


class SuppressionRow(SQLModel, table=True):
    """An address never to be messaged, whatever its consent says (a litigator list, a
    complaint, a number the business must not text). The policy refuses every message to it but
    the HELP reply and the one opt-out confirmation; `channel` is a channel or `all`."""

    __tablename__ = "suppressions"
    __table_args__ = (UniqueConstraint("org_id", "address", "channel", name="uq_suppression_org_address_channel"),)
    id: int | None = Field(default=None, primary_key=True)
    org_id: int = Field(foreign_key="orgs.id")
    address: str  # E.164 or normalised email
    channel: str = "all"
    reason: str = Field(sa_column=Column(Text, nullable=False))
    actor_kind: str
    actor_id: str | None = None
    created_at: datetime = Field(sa_type=UtcDateTime)


class ImportJobRow(SQLModel, table=True):
    """A CSV import sent through the API: stored with its file, processed by the scheduler in
    batches (`rows_done` is how far it got, so a restarted run goes on from there), its rejected
    rows in `import_rejects`. The file is emptied once the job has finished."""

    __tablename__ = "import_jobs"
    __table_args__ = (Index("ix_import_jobs_status", "status"),)
    id: int | None = Field(default=None, primary_key=True)
    org_id: int = Field(foreign_key="orgs.id", index=True)
    agent_id: int | None = Field(default=None, foreign_key="agents.id")
    kind: str  # consents | suppressions
    status: str = "queued"  # queued | running (leased until lease_until) | done | failed
    source: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    header_json: str = Field(default="[]", sa_column=Column(Text, nullable=False, default="[]"))
    rows_total: int = 0
    rows_done: int = 0
    imported: int = 0
    skipped: int = 0
    rejected: int = 0
    error: str | None = Field(default=None, sa_column=Column(Text))
    lease_until: datetime | None = Field(default=None, sa_type=UtcDateTime)
    created_at: datetime = Field(sa_type=UtcDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


class ImportRejectRow(SQLModel, table=True):
    """A row of an API import that was rejected: its line in the file, why, and its fields."""

    __tablename__ = "import_rejects"
    id: int | None = Field(default=None, primary_key=True)
    import_id: int = Field(foreign_key="import_jobs.id", index=True)
    line: int
    reason: str = Field(sa_column=Column(Text, nullable=False))
    fields_json: str = Field(sa_column=Column(Text, nullable=False))


class NoteReadRow(SQLModel, table=True):
    """Which employee has read which note to employees (a `messages` row with audience
    `employee`): a note addressed to nobody in particular is read by each person on their own."""

    __tablename__ = "note_reads"
    agent_id: int = Field(primary_key=True, foreign_key="agents.id")
    message_id: int = Field(primary_key=True, foreign_key="messages.id")
    read_at: datetime = Field(sa_type=UtcDateTime)


orgs = _table(OrgRow)
org_numbers = _table(OrgNumberRow)
agents = _table(AgentRow)
contacts = _table(ContactRow)
addresses = _table(AddressRow)
consents = _table(ConsentRow)
ledger = _table(LedgerRow)
ledger_heads = _table(LedgerHeadRow)
messages = _table(MessageRow)
flow_versions = _table(FlowVersionRow)
enrollments = _table(EnrollmentRow)
enrollment_steps = _table(EnrollmentStepRow)
event_endpoints = _table(EventEndpointRow)
webhook_deliveries = _table(WebhookDeliveryRow)
suppressions = _table(SuppressionRow)
import_jobs = _table(ImportJobRow)
import_rejects = _table(ImportRejectRow)
webhook_attempts = _table(WebhookAttemptRow)
note_reads = _table(NoteReadRow)
console_sessions = _table(ConsoleSessionRow)
sign_in_failures = _table(SignInFailureRow)
metadata = SQLModel.metadata


class AppMetaRow(SQLModel, table=True):
    """Installation-wide values shared by every process (e.g. the token-signing secret)."""

    __tablename__ = "app_meta"
    key: str = Field(primary_key=True)
    value: str


app_meta = _table(AppMetaRow)
