"""Request and response bodies of the REST API, as pydantic models.

They serve twice: the API validates every request body against them (strictly: a JSON string is
never taken for a number or a boolean), and sanic-ext publishes their JSON schemas as the
components of the OpenAPI document, so the document cannot drift from what the code accepts.

The published schemas are OpenAPI 3.0 (what sanic-ext emits), which says "may be null" with
`nullable: true` rather than JSON Schema's `{"type": "null"}`; `ApiModel` converts.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.json_schema import DEFAULT_REF_TEMPLATE, GenerateJsonSchema, JsonSchemaMode

from ..domain.model import Channel, Mode, Purpose, State
from ..domain.settings import CapSetting, OrgSettings, PinPath

# Database ids are signed 64-bit integers; anything outside can name no row.
MAX_ID = 2**63 - 1

Id = Annotated[int, Field(ge=1, le=MAX_ID)]
Name = Annotated[str, Field(max_length=200)]
Text = Annotated[str, Field(max_length=2000)]
Address = Annotated[str, Field(min_length=1, max_length=320)]
Phone = Annotated[str, Field(min_length=1, max_length=64)]
Email = Annotated[str, Field(min_length=1, max_length=320)]
Method = Annotated[str, Field(min_length=1, max_length=64)]
TimeZone = Annotated[str, Field(max_length=64)]
# A US state code (for state quiet-hour rules); empty clears it on PATCH.
Region = Annotated[str, Field(pattern=r"^([A-Za-z]{2})?$")]
Language = Literal["en", "es", "fr", "pt"]


def _openapi30(node: Any) -> Any:
    """Rewrite a pydantic (JSON Schema 2020-12) schema into the OpenAPI 3.0 dialect."""
    if isinstance(node, list):
        return [_openapi30(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _openapi30(value) for key, value in node.items()}
    variants = node.get("anyOf")
    if isinstance(variants, list) and {"type": "null"} in variants:
        rest = [v for v in variants if v != {"type": "null"}]
        del node["anyOf"]
        if len(rest) == 1 and "$ref" in rest[0]:
            node["allOf"] = rest
        elif len(rest) == 1:
            node = {**rest[0], **node}
        else:
            node["anyOf"] = rest
        node["nullable"] = True
        if isinstance(node.get("enum"), list) and None not in node["enum"]:
            node["enum"] = [*node["enum"], None]  # OpenAPI 3.0.3: an enum must list null to allow it
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(node.get(bound), int | float) and not isinstance(node.get(bound), bool):
            node[plain] = node[bound]
            node[bound] = True
    if "const" in node:
        node["enum"] = [node.pop("const")]
    return node


class OpenApi30Schema(GenerateJsonSchema):
    def generate(self, schema: Any, mode: JsonSchemaMode = "validation") -> dict[str, Any]:
        return dict(_openapi30(super().generate(schema, mode)))


class ApiModel(BaseModel):
    """Base of every API body: unknown keys are refused (a typo never silently does nothing)."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def model_json_schema(  # type: ignore[override]
        cls, by_alias: bool | None = None, ref_template: str = DEFAULT_REF_TEMPLATE,
        schema_generator: type[GenerateJsonSchema] = OpenApi30Schema, mode: JsonSchemaMode = "validation",
        **kwargs: Any,
    ) -> dict[str, Any]:
        return super().model_json_schema(by_alias=by_alias, ref_template=ref_template,
                                         schema_generator=schema_generator, mode=mode, **kwargs)


# ------------------------------------------------------------------------------------ errors


class ErrorDetail(ApiModel):
    code: str = Field(description="Stable, machine-readable reason, e.g. `opted_out`, `dnd`, `invalid_phone`.")
    message: str = Field(description="What went wrong, in words a person can act on.")


class ErrorOut(ApiModel):
    error: ErrorDetail


# ------------------------------------------------------------------------------------ contacts


class ContactIn(ApiModel):
    name: Name = ""
    phones: list[Phone] = Field(default_factory=list, max_length=20,
                                description="Phone numbers in any common format; stored as E.164.")
    emails: list[Email] = Field(default_factory=list, max_length=20)
    time_zone: TimeZone | None = Field(default=None, description="IANA zone, e.g. America/Chicago.")
    region: Region | None = Field(default=None, description="US state code, for state quiet-hour rules.")
    fields: dict[str, Any] = Field(default_factory=dict, description="Your own data about the contact.")
    marketing_allowed: bool = True
    language: Language | None = Field(default=None, description="ISO 639-1 code the contact is answered in; "
                                                                 "learned from their messages when not set.")


class ContactUpsertIn(ApiModel):
    """A CRM's view of one contact. A key left out leaves what optflow has; `null` clears the
    name, time zone or region. Addresses are only ever added (one of another contact is refused).
    `marketing_allowed` changes are kept in the ledger, with the caller as the actor."""

    name: Name | None = None
    phones: list[Phone] = Field(default_factory=list, max_length=20)
    emails: list[Email] = Field(default_factory=list, max_length=20)
    time_zone: TimeZone | None = None
    region: Region | None = None
    fields: dict[str, Any] | None = Field(default=None, description="Replaces the whole object.")
    marketing_allowed: bool | None = Field(default=None, description="\"Opt in to future marketing\": given or "
                                                                    "declined.")


class ContactPatch(ApiModel):
    """Only the keys present change; a key set to null clears it. Addresses are only ever added
    here (a number that was reassigned gets its consent reset, it is not removed)."""

    name: Name | None = None
    time_zone: TimeZone | None = None
    region: Region | None = None
    fields: dict[str, Any] | None = Field(default=None, description="Replaces the whole object.")
    language: Language | None = Field(default=None, description="en, es, fr or pt; null: not known.")
    add_phones: list[Phone] = Field(default_factory=list, max_length=20)
    add_emails: list[Email] = Field(default_factory=list, max_length=20)


class AddressOut(ApiModel):
    kind: str = Field(description="`phone` or `email`.")
    value: str
    active: bool | None = Field(default=None, description="A phone record's Active flag: set by the last opt-in "
                                                          "of its calls or texts, cleared by the last opt-out; "
                                                          "null for an email.")
    do_not_call: bool | None = Field(default=None, description="A phone record's Do-Not-Call flag: the "
                                                               "opposite of `active` once either was recorded; "
                                                               "null for an email.")


class ConsentOut(ApiModel):
    channel: Channel
    address: str
    state: State
    awaiting_pin: bool = Field(description="The customer said YES and the org waits for the PIN.")
    method: str | None
    requested_at: datetime | None
    opted_in_at: datetime | None = Field(description="When the current consent was given (reauth clock).")
    opted_out_at: datetime | None
    do_not_contact: str | None = Field(default=None, description="The address cannot or must not get messages on "
                                       "this channel, whatever the state: `bounced`, `complained`, "
                                       "`carrier_blocked`, `unknown_number`, `not_textable`.")
    do_not_contact_at: datetime | None = None


class DndOut(ApiModel):
    all_channels: bool
    channels: list[Channel]


class ContactOut(ApiModel):
    id: int
    name: str
    time_zone: str | None
    region: str | None
    language: str | None = Field(description="The language the contact is answered in when their message "
                                             "does not say (set, or learned from what they wrote).")
    fields: dict[str, Any]
    active: bool = Field(description="Reachable by calls: set by an opt-in on calls, cleared by an opt-out "
                                     "(each phone record has its own flags too, in `addresses`).")
    do_not_call: bool
    marketing_allowed: bool
    dnd: DndOut
    addresses: list[AddressOut]
    consents: list[ConsentOut] = Field(description="One entry per address and channel it can be reached on.")
    created_at: datetime
    updated_at: datetime
    external_id: str | None = Field(default=None, description="The contact's key in your CRM (see the upsert).")


class ContactListOut(ApiModel):
    contacts: list[ContactOut]
    limit: int
    offset: int


# ------------------------------------------------------------------------------------ agent actions


class ChannelIn(ApiModel):
    channel: Channel
    address: Address | None = Field(default=None, description="Which of the contact's addresses; default "
                                                              "the first that fits the channel.")


class OptInRequestIn(ChannelIn):
    quick: bool = Field(default=False, description="The customer's YES opts in without a PIN step.")


class ManualOptInIn(ChannelIn):
    method: Method = Field(description="How consent was obtained: one of the org's `consent_methods`.")
    occurred_at: datetime | None = Field(default=None, description="When consent was given; default now. "
                                                                    "A date-time without offset is UTC.")
    evidence: Text | None = None


class PinIn(ChannelIn):
    pin: str = Field(min_length=1, max_length=20, description="The code the customer read out.")


class OptOutIn(ApiModel):
    """An opt-out the customer asked for outside optflow (a call, a letter), with the form's date,
    time and method. Never refused for its method: an opt-out is recorded whatever it is called."""

    channel: Channel | None = None
    address: Address | None = None
    all_channels: bool = Field(default=False, description="Every channel of every address of the contact.")
    method: Annotated[str, Field(min_length=1, max_length=64, pattern=r"\S")] | None = Field(
        default=None, description="How the customer opted out (e.g. `phone_call`, `letter`); default `agent`.")
    occurred_at: datetime | None = Field(default=None, description="When the customer opted out; default now. "
                                                                    "A date-time without offset is UTC; "
                                                                    "never in the future.")
    evidence: Text | None = None


class ResetIn(ChannelIn):
    evidence: Text | None = None


class DndIn(ApiModel):
    on: bool
    channels: list[Channel] = Field(default_factory=list, max_length=len(Channel))
    all_channels: bool = False


class MarketingIn(ApiModel):
    allowed: bool


class ActionOut(ApiModel):
    contact_id: int
    channel: Channel | None
    state: State | None = Field(description="The consent state of the channel after the action.")
    status: str = Field(description="What happened, e.g. `requested`, `opted_in`, `dnd_on`.")
    message_id: int | None = Field(description="The message the action queued, if any.")
    detail: str | None
    contact: ContactOut


class LedgerEntryOut(ApiModel):
    seq: int
    channel: str
    address: str
    from_state: str
    to_state: str
    trigger: str
    method: str | None
    actor_kind: str
    actor_id: str | None
    source_message_id: str | None
    evidence: str | None
    occurred_at: datetime = Field(description="When the customer consented or opted out.")
    recorded_at: datetime = Field(description="When optflow recorded it.")
    mode: str | None = Field(description="The mode the org ran the channel in when the entry was written: kept "
                                         "beside the entry, outside its hash; null on entries written before "
                                         "optflow kept it and on those that are not consent changes.")
    hash: str


class LedgerOut(ApiModel):
    entries: list[LedgerEntryOut]


class MessageOut(ApiModel):
    id: int
    contact_id: int | None
    direction: str = Field(description="`in` or `out`.")
    audience: str = Field(description="`customer` or `employee` (notes to the agent).")
    channel: str
    address: str
    body: str
    subject: str | None
    purpose: str
    kind: str
    status: str
    intent: str | None
    created_at: datetime
    not_before: datetime | None
    sent_at: datetime | None
    last_error: str | None


class MessageListOut(ApiModel):
    messages: list[MessageOut]


class EnrollmentStepOut(ApiModel):
    step: str
    outcome: str
    at: datetime


class EnrollmentOut(ApiModel):
    id: int
    flow: str
    flow_version: str
    status: str = Field(description="`active`, `paused`, `done` or `cancelled`.")
    next_run_at: datetime | None
    started_at: datetime
    ended_at: datetime | None
    end_reason: str | None
    steps: list[EnrollmentStepOut]


class EnrollmentListOut(ApiModel):
    enrollments: list[EnrollmentOut]


class EnrollIn(ApiModel):
    flow: str = Field(min_length=1, max_length=100, description="The flow's name.")
    data: dict[str, Any] = Field(default_factory=dict, description="Event data the flow's steps may use.")


# ------------------------------------------------------------------------------------ messages, events


class TemplateIn(ApiModel):
    name: str = Field(min_length=1, max_length=200, description="The name the org registered in "
                                                                "`whatsapp_templates` (an approved template).")
    variables: dict[Annotated[str, Field(max_length=50)], Annotated[str, Field(max_length=1000)]] = Field(
        default_factory=dict, max_length=50, description='e.g. `{"1": "Alex", "2": "Friday"}`.')


class MessageIn(ApiModel):
    contact_id: Id
    channel: Channel
    body: str = Field(default="", max_length=5000, description="The text; may be left out for a WhatsApp template.")
    purpose: Purpose = Purpose.CONVERSATIONAL
    subject: str | None = Field(default=None, max_length=300, description="Email only.")
    address: Address | None = None
    template: TemplateIn | None = Field(default=None, description="WhatsApp only: an approved template instead of "
                                                                  "free text (the only kind allowed outside the "
                                                                  "24 hours after the customer's last message).")

    @model_validator(mode="after")
    def _body_or_template(self) -> MessageIn:
        if not self.body and self.template is None:
            raise ValueError("give a body, or a template for WhatsApp")
        return self


class SendOut(ApiModel):
    message_id: int
    contact_id: int
    channel: Channel
    status: str = Field(description="`queued`, `deferred` (quiet hours, caps) or `held` (until the "
                                    "customer's YES; the opt-in request went out).")
    state: State | None
    detail: str | None


class EventIn(ApiModel):
    name: str = Field(min_length=1, max_length=100, description="e.g. `payment_plan.created`.")
    contact_id: Id
    data: dict[str, Any] = Field(default_factory=dict, description="e.g. `{\"stage\": \"discontinued\"}`.")


class EventOut(ApiModel):
    name: str
    contact_id: int
    status: str
    detail: str | None
    enrollments: list[EnrollmentOut] = Field(description="The enrolments the event started, with the "
                                                          "steps they already ran.")


class UnassociatedListOut(ApiModel):
    messages: list[MessageOut]


class LinkIn(ApiModel):
    contact_id: Id


# ------------------------------------------------------------------------------------ settings


class AgentOut(ApiModel):
    """An agent and the state of its API token (the token itself is shown only when created)."""

    id: int
    name: str
    role: Literal["agent", "supervisor", "admin", "integration"]
    created_at: datetime
    last_used_at: datetime | None = Field(description="Within an hour; null if never used.")
    expires_at: datetime | None = Field(description="Null: never expires.")
    revoked_at: datetime | None
    active: bool = Field(description="Whether the token works now: neither revoked nor expired.")


class AgentListOut(ApiModel):
    agents: list[AgentOut]


class AgentPatch(ApiModel):
    """When the token stops working: a date-time with a time zone (a past one stops it now),
    or null for never."""

    expires_at: datetime | None = Field(description="A date-time (without offset: UTC), or null for never.")


class SettingsOut(ApiModel):
    org_id: int
    name: str
    numbers: list[str]
    settings: OrgSettings = Field(description="Resolved (inherited and defaulted). Secrets read `********`.")


Label = Annotated[str, Field(max_length=200)]
Secret = Annotated[str, Field(max_length=200)]
# A consent method or keyword: some text that is not only spaces.
Word = Annotated[str, Field(min_length=1, max_length=100, pattern=r"\S")]
class KeywordAdditions(ApiModel):
    """One language's extra keywords, per intent; null removes the org's own for that intent.
    (An object with these three keys rather than a map keyed by intent, so that the schema says
    which keys there are.)"""

    opt_out: list[Word] | None = None
    opt_in: list[Word] | None = None
    help: list[Word] | None = None
TemplateSid = Annotated[str, Field(pattern=r"^HX[0-9A-Za-z]{1,62}$")]


class SettingsPatch(ApiModel):
    """A JSON merge patch (RFC 7396) of the org's own settings: present keys replace, objects
    merge key by key, null removes the org's own value (the inherited or default one applies).
    The bounds below are those of the settings themselves; rules across settings (group messaging
    needs a channel out of consent mode) and template overrides are checked on the result."""

    program_name: Label | None = None
    help_contact: Label | None = None
    message_frequency: Label | None = None
    business_type: Label | None = None
    modes: dict[Channel, Mode | None] | None = Field(default=None, description="Per channel: consent, "
                                                                              "disclaimer or auto.")
    pin_required: bool | None = None
    request_interval_hours: Annotated[int, Field(ge=1, le=24 * 365)] | None = Field(
        default=None, description="Hours before another opt-in request may go to an address that was "
                                  "asked and has not answered (default 24).")
    discontinued_stages: Annotated[list[Word], Field(max_length=50)] | None = Field(
        default=None, description="CRM pipeline stage names that mean discontinued (any case).")
    pin_paths: Annotated[list[PinPath], Field(max_length=3)] | None = Field(
        default=None, description="With `pin_required`: which opt-in requests' YES needs the PIN (`agent`, "
                                  "`supervisor_link`, `flow`); default only an agent's own.")
    pin_ttl_minutes: Annotated[int, Field(ge=1, le=24 * 60)] | None = None
    pin_max_attempts: Annotated[int, Field(ge=1, le=20)] | None = None
    stop_applies_to_all_channels: bool | None = None
    consent_methods: Annotated[list[Word], Field(min_length=1, max_length=50)] | None = Field(
        default=None, description="The methods a manual opt-in may name.")
    keywords: dict[str, KeywordAdditions | None] | None = Field(
        default=None, description="Per language code (e.g. `es`), per intent: extra keywords.")
    keywords_by_country: dict[
        Annotated[str, Field(pattern=r"^[A-Za-z]{2}$")],
        dict[str, KeywordAdditions | None] | None,
    ] | None = Field(default=None, description="Per country code (ISO 3166, e.g. `MX`), per language, per "
                                               "intent: extra keywords for senders whose number is of that "
                                               "country only.")
    templates: dict[str, str | None] | None = Field(
        default=None, description="Template overrides: by name (e.g. `customer/help`) in the org's default "
                                  "language, by name and language (e.g. `customer/help.es`) in another.")
    default_language: Language | None = Field(
        default=None, description="The language of texts to a customer whose language is not known (default en).")
    reauth_days: dict[Channel, Annotated[int, Field(ge=1, le=36_500)] | None] | None = Field(
        default=None, description="Contact control rules: days after which a consent must be renewed.")
    request_lapse_days: Annotated[int, Field(ge=1, le=3650)] | None = None
    quiet_hours: bool | None = None
    quiet_hours_purposes: list[Purpose] | None = None
    caps: list[CapSetting] | None = None
    preset: Literal["none", "debt_collection"] | None = None
    group_messaging: dict[Channel, bool | None] | None = None
    twilio_auth_token: Secret | None = None
    chat_secret: Secret | None = None
    unsubscribe_secret: Secret | None = None
    email_events_secret: Secret | None = None
    whatsapp_templates: dict[Label, TemplateSid | None] | None = Field(
        default=None, description="Approved WhatsApp templates: name to Twilio Content SID (HX...).")


class SubOrgIn(ApiModel):
    """A new sub-org of the caller's org: it inherits the org's settings key by key, and its own
    `settings` (the same keys and rules as `PATCH /settings`) override them."""

    name: Annotated[str, Field(min_length=1, max_length=200, pattern=r"\S")]
    numbers: list[Phone] = Field(default_factory=list, max_length=20,
                                 description="Its texting numbers, in any common format; stored as E.164.")
    settings: SettingsPatch | None = None


class SubOrgOut(ApiModel):
    id: int
    name: str
    parent_id: int = Field(description="The org it belongs to (the caller's org, or a sub-org under it).")
    numbers: list[str]
    created_at: datetime


class SubOrgListOut(ApiModel):
    sub_orgs: list[SubOrgOut] = Field(description="Every org under the caller's, at every level, oldest first.")


# ------------------------------------------------------------------------------------ reports


class ReportCounts(ApiModel):
    opt_ins: int
    opt_outs: int
    requests: int
    reauthorizations: int


class ConversionCounts(ReportCounts):
    requested_addresses: int = Field(description="Distinct addresses asked for consent in the period.")
    converted: int = Field(description="Of those, how many opted in after the request.")
    conversion_rate: float | None = Field(description="converted / requested_addresses; null if none.")


class ChannelReport(ConversionCounts):
    channel: Channel
    mode: Mode = Field(description="The channel's mode in the org's current settings (the entries are counted "
                                   "under the mode each was written under: `by_mode`).")


class ModeReport(ConversionCounts):
    mode: Mode


class MethodReport(ReportCounts):
    channel: Channel
    mode: Mode = Field(description="The mode the entries were written under.")
    method: str | None = Field(description="e.g. keyword, pin, paper_form; null for requests.")


class OrgReport(ConversionCounts):
    org_id: int
    name: str


class ConsentReportOut(ApiModel):
    date_from: str = Field(description="First day included (UTC).")
    date_to: str = Field(description="Last day included (UTC).")
    mode: Mode | None = Field(description="Only entries written under this mode were counted; null: every mode.")
    totals: ConversionCounts
    by_channel: list[ChannelReport]
    by_mode: list[ModeReport] = Field(description="By the mode each entry was written under.")
    by_method: list[MethodReport]
    by_org: list[OrgReport] = Field(description="The org first, then each sub-org counted (`include_sub_orgs`).")
    entries_without_mode: int = Field(description="Counted entries written before the ledger kept the mode: "
                                                  "counted under their channel's current mode in their org.")
    note: str | None = Field(description="What the reader should know about the counts, if anything.")


# ------------------------------------------------------------------------------------ imports


class ImportOut(ApiModel):
    id: int
    kind: Literal["consents", "suppressions"]
    status: Literal["queued", "running", "done", "failed"]
    rows_total: int = Field(description="Rows in the file (after its header).")
    rows_done: int = Field(description="Rows dealt with so far: progress is rows_done / rows_total.")
    imported: int
    skipped: int = Field(description="Rows already on record (a consent since that date, an address suppressed).")
    rejected: int = Field(description="Rows refused; `GET /imports/{id}/rejects` has them with their reasons.")
    error: str | None = Field(description="Why the job stopped, if it failed.")
    created_at: datetime
    finished_at: datetime | None


# ------------------------------------------------------------------------------------ consent events out

EventType = Literal["consent.changed", "dnd.changed", "marketing.changed"]


class EventEndpointIn(ApiModel):
    """A receiver of consent events (your CRM or DMS)."""

    url: Annotated[str, Field(min_length=1, max_length=2000)] = Field(
        description="http:// or https:// address the events are POSTed to.")
    event_types: list[EventType] = Field(min_length=1, max_length=3, description="Which events it receives.")
    description: Annotated[str, Field(max_length=200)] = ""


class EventEndpointPatch(ApiModel):
    active: bool = Field(description="False pauses it: no events are queued for it until it is active again.")


class EventEndpointOut(ApiModel):
    id: int
    url: str
    description: str
    event_types: list[str]
    active: bool
    created_at: datetime


class EventEndpointSecretOut(EventEndpointOut):
    secret: str = Field(description="The Standard Webhooks secret (`whsec_...`) to verify its events with.")


class EventEndpointRemovedOut(ApiModel):
    id: int
    failed_deliveries: int = Field(description="Its deliveries not yet made, now marked failed.")


class EventEndpointListOut(ApiModel):
    endpoints: list[EventEndpointOut]


class WebhookAttemptOut(ApiModel):
    attempt: int
    attempted_at: datetime
    status_code: int | None = Field(description="The receiver's HTTP status; null when it did not answer.")
    error: str | None


class EventDeliveryOut(ApiModel):
    id: int
    endpoint_id: int
    event_id: str = Field(description="The event's `webhook-id`: the same on every attempt and redelivery.")
    event_type: str
    status: Literal["queued", "sending", "delivered", "failed"]
    attempts: list[WebhookAttemptOut] = Field(description="The delivery log, oldest first.")
    next_attempt_at: datetime | None = Field(description="When it is tried next (queued only).")
    give_up_at: datetime | None
    last_status: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    payload: dict[str, Any] = Field(description="The event, as it is sent.")


class EventDeliveryListOut(ApiModel):
    deliveries: list[EventDeliveryOut]
