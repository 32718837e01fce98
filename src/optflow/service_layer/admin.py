"""Administration: orgs, their numbers and settings, agents and their tokens."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from ..domain.addresses import normalize_for_channel
from ..domain.keywords import KeywordTable
from ..domain.languages import HELP_BY_NUMBER
from ..domain.model import Channel, DomainError, InvalidInput, NotFound, TransitionRefused
from ..domain.records import Agent, Org
from ..domain.settings import OrgSettings
from ..domain.templates import TEMPLATE_NAMES, parse_override_key
from .console_auth import set_sign_in
from .ports import Renderer
from .unit_of_work import UnitOfWork, UnitOfWorkFactory

ROLES = ("agent", "supervisor", "admin")  # people, from least to most allowed
# Another system's token (a CRM's sync): an agent's rights, recorded in the ledger as the integration.
INTEGRATION_ROLE = "integration"
TOKEN_ROLES = (*ROLES, INTEGRATION_ROLE)
DEFAULT_ADMIN_EMAIL = "admin@localhost"  # the first run's admin signs in to the console with it
# How often a token's `last_used_at` is written: once an hour at most, not on every request
# (on SQLite every write takes the database's one writer lock).
TOKEN_USE_PRECISION = timedelta(hours=1)


class TokenRefused(DomainError):
    """An API token that exists but may no longer be used."""

    code = "token_refused"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class NewAgent:
    id: int
    org_id: int
    name: str
    role: str
    token: str  # shown once; only its hash is stored
    email: str | None = None  # the console sign-in, when one was set up
    password: str | None = None  # shown once (a generated one); only its argon2 hash is stored


class SettingsRefused(InvalidInput):
    """Settings that do not validate. `problems` maps each setting (its top-level key, or
    "settings" for the whole) to what is wrong with it, so a form can say it beside the field."""

    def __init__(self, message: str, problems: Mapping[str, list[str]], code: str = "invalid_settings") -> None:
        super().__init__(message, code=code)
        self.problems = dict(problems)


def settings_error(exc: ValidationError) -> SettingsRefused:
    parts = []
    problems: dict[str, list[str]] = {}
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "settings"
        parts.append(f"{where}: {error['msg']}")
        key = str(error["loc"][0]) if error["loc"] else "settings"
        detail = ".".join(str(p) for p in error["loc"][1:])
        message = str(error["msg"]).removeprefix("Value error, ")
        problems.setdefault(key, []).append(f"{detail}: {message}" if detail else message)
    return SettingsRefused("invalid settings: " + "; ".join(parts), problems)


def check_templates(renderer: Renderer, templates: Mapping[str, str]) -> None:
    """Every override must render: keyed by template name (the org's default language) or by
    `<name>.<language>` ("customer/help.es")."""
    for key, source in templates.items():
        name, _ = parse_override_key(key)
        problem = renderer.check_override(name, source)
        if problem:
            raise InvalidInput(f"template {key}: {problem}", code="invalid_template")


def check_keywords(keywords: Mapping[str, Any], by_country: Mapping[str, Any] | None = None) -> None:
    """Org keyword additions, and those for senders of one country on top of them, must build a
    classifier table: a bad entry stored now would break every inbound message of the org later,
    STOP included."""
    if not isinstance(keywords, Mapping):
        raise SettingsRefused("keywords must map languages to intents to words",
                              {"keywords": ["keywords must map languages to intents to words"]})
    try:
        table = KeywordTable.default().with_additions(keywords)
    except DomainError as exc:
        raise SettingsRefused(str(exc), {"keywords": [str(exc)]}, code=exc.code) from None
    if by_country is None:
        return
    if not isinstance(by_country, Mapping):
        message = "keywords_by_country must map country codes to languages to intents to words"
        raise SettingsRefused(message, {"keywords_by_country": [message]})
    for country, additions in by_country.items():
        if not isinstance(additions, Mapping):
            message = f"keywords_by_country: {country}: expected a mapping of language -> intent -> words"
            raise SettingsRefused(message, {"keywords_by_country": [message]})
        try:
            table.with_additions(additions)
        except DomainError as exc:
            message = f"keywords_by_country: {country}: {exc}"
            raise SettingsRefused(message, {"keywords_by_country": [message]}, code=exc.code) from None


def customer_facing_defaults(name: str, numbers: Sequence[str]) -> dict[str, str]:
    """What customers read of a new top-level org until an admin words it: the program is named
    after the org, and HELP points to the org's own number (the built-in defaults, "optflow
    messages" and "reply HELP", tell a customer nothing)."""
    wording = {"program_name": f"{name.strip()} messages"}
    if numbers:
        wording["help_contact"] = HELP_BY_NUMBER.format(normalize_for_channel(numbers[0], Channel.TEXT))
    return wording


def create_org(uow: UnitOfWork, name: str, now: datetime, parent_id: int | None = None,
               settings: Mapping[str, Any] | None = None, numbers: tuple[str, ...] = ()) -> int:
    if not name.strip():
        raise InvalidInput("an org needs a name", code="name_required")
    if parent_id is None:  # a sub-org inherits its parent's wording
        settings = {**customer_facing_defaults(name, numbers), **(settings or {})}
    check_keywords((settings or {}).get("keywords") or {}, (settings or {}).get("keywords_by_country") or {})
    try:
        org_id = uow.orgs.create(name.strip(), now, parent_id, settings)
    except ValidationError as exc:
        raise settings_error(exc) from None
    for number in numbers:
        add_number(uow, org_id, number)
    return org_id


def add_number(uow: UnitOfWork, org_id: int, number: str, agent_id: int | None = None) -> str:
    """Add a texting number to the org; with `agent_id`, as that employee's own line: the texts
    customers get on it speak in the employee's name."""
    value = normalize_for_channel(number, Channel.TEXT)
    owner = uow.orgs.find_by_number(value)
    if owner is not None:
        raise TransitionRefused(f"{value} already belongs to org {owner}", code="number_taken")
    if agent_id is not None:
        agent = uow.agents.get(agent_id)
        if agent is None or agent.org_id != org_id:
            raise InvalidInput(f"org {org_id} has no agent {agent_id}", code="unknown_agent")
    uow.orgs.add_number(org_id, value, agent_id)
    return value


def update_settings(uow: UnitOfWork, renderer: Renderer, org_id: int, changes: Mapping[str, Any],
                    replace: bool = False) -> OrgSettings:
    """Apply `changes` to the org's own settings (key by key unless `replace`), validating the
    result with inheritance before anything is stored."""
    own = {} if replace else uow.orgs.own_settings(org_id)
    own.update(changes)
    check_templates(renderer, own.get("templates") or {})
    check_keywords(own.get("keywords") or {}, own.get("keywords_by_country") or {})
    try:
        return uow.orgs.replace_settings(org_id, own)
    except ValidationError as exc:
        raise settings_error(exc) from None


def add_agent(uow: UnitOfWork, org_id: int, name: str, role: str, now: datetime,
              expires_at: datetime | None = None) -> NewAgent:
    if role not in TOKEN_ROLES:
        raise InvalidInput(f"unknown role {role!r}: use one of {', '.join(TOKEN_ROLES)}", code="unknown_role")
    if not name.strip():
        raise InvalidInput("an agent needs a name", code="name_required")
    uow.orgs.get(org_id)
    token = "of_" + secrets.token_urlsafe(24)
    if expires_at is not None and expires_at <= now:
        raise InvalidInput("a new token must expire in the future", code="invalid_expiry")
    agent_id = uow.agents.create(org_id, name.strip(), role, token_hash(token), now, expires_at)
    return NewAgent(agent_id, org_id, name.strip(), role, token)


def check_token(agent: Agent, now: datetime) -> None:
    """Raise `TokenRefused` saying why if the token of `agent` was revoked or has expired."""
    if agent.revoked_at is not None:
        raise TokenRefused(f"this API token was revoked at {agent.revoked_at:%Y-%m-%d %H:%M} UTC; "
                           "ask an admin for a new one", code="token_revoked")
    if agent.expires_at is not None and now >= agent.expires_at:
        raise TokenRefused(f"this API token expired at {agent.expires_at:%Y-%m-%d %H:%M} UTC; "
                           "ask an admin for a new one", code="token_expired")


def token_use_is_stale(agent: Agent, now: datetime) -> bool:
    """Whether the agent's `last_used_at` is due to be written (see `TOKEN_USE_PRECISION`)."""
    last = agent.last_used_at
    return last is None or now - last >= TOKEN_USE_PRECISION


def record_token_use(uow: UnitOfWork, agent_id: int, now: datetime) -> None:
    uow.agents.update(agent_id, last_used_at=now)


def revoke_agent(uow: UnitOfWork, org_id: int, agent_id: int, now: datetime) -> Agent:
    """Revoke the agent's token for good (revoking twice keeps the first time). Returns the agent."""
    row = uow.agents.in_org(org_id, agent_id)
    if row.revoked_at is None:
        uow.agents.update(agent_id, revoked_at=now)
    return uow.agents.in_org(org_id, agent_id)


def set_agent_expiry(uow: UnitOfWork, org_id: int, agent_id: int, expires_at: datetime | None) -> Agent:
    """Set when the agent's token stops working (None: never; a past time: it stops now). A
    revoked token stays revoked. Returns the agent."""
    row = uow.agents.in_org(org_id, agent_id)
    if row.revoked_at is not None:
        raise TransitionRefused(f"the token of agent {agent_id} is revoked; create a new agent instead",
                                code="token_revoked")
    uow.agents.update(agent_id, expires_at=expires_at)
    return uow.agents.in_org(org_id, agent_id)


def ensure_default_setup(uows: UnitOfWorkFactory, now: datetime, org_name: str, number: str,
                         wording: Mapping[str, str] | None = None) -> NewAgent | None:
    """First run: a default org with a demo number and an admin with an API token and a console
    sign-in (a generated password). Returns the new admin, or None when the installation already
    has an org. `wording` (program_name, help_contact) replaces what `customer_facing_defaults`
    derives from the name and number."""
    with uows() as uow:
        if uow.orgs.first_id() is not None:
            return None
        org_id = create_org(uow, org_name, now, numbers=(number,),
                            settings={"twilio_auth_token": secrets.token_hex(16), **(wording or {})})
        admin = add_agent(uow, org_id, "admin", "admin", now)
        password = secrets.token_urlsafe(12)
        set_sign_in(uow, org_id, admin.id, DEFAULT_ADMIN_EMAIL, password)
        uow.commit()
        return replace(admin, email=DEFAULT_ADMIN_EMAIL, password=password)


def orgs_under(uow: UnitOfWork, org_id: int) -> list[Org]:
    """The org and its sub-organisations (all levels down), the org first: what its admins manage."""
    everything = uow.orgs.all()
    children: dict[int | None, list[Org]] = {}
    for org in everything:
        children.setdefault(org.parent_id, []).append(org)
    found = [uow.orgs.get(org_id)]
    for org in found:
        found.extend(child for child in children.get(org.id, []) if child not in found)
    return found


def managed_org(uow: UnitOfWork, org_id: int, wanted: int) -> Org:
    """`wanted` if it is the org or one of its sub-organisations, else NotFound (another
    installation's org is none of an admin's business, not even its existence)."""
    for org in orgs_under(uow, org_id):
        if org.id == wanted:
            return org
    raise NotFound(f"no org {wanted} under org {org_id}", code="org_not_found")


def managed_sub_org(uow: UnitOfWork, org_id: int, wanted: int) -> Org:
    """`wanted` if it is one of the org's sub-organisations (at any level), else NotFound: the
    org itself is not its own sub-org, and an org elsewhere is none of its admins' business."""
    if wanted != org_id:
        for org in orgs_under(uow, org_id)[1:]:
            if org.id == wanted:
                return org
    raise NotFound(f"no sub-org {wanted} under org {org_id}", code="org_not_found")


def create_sub_org(uow: UnitOfWork, renderer: Renderer, parent_id: int, name: str, now: datetime,
                   settings: Mapping[str, Any], numbers: Sequence[str] = ()) -> int:
    """A sub-org of `parent_id`, its own `settings` validated as an org's own are
    (`update_settings`: templates, keywords, the whole with inheritance)."""
    check_templates(renderer, settings.get("templates") or {})
    return create_org(uow, name, now, parent_id=parent_id, settings=settings, numbers=tuple(numbers))


def set_role(uow: UnitOfWork, org_id: int, agent_id: int, role: str) -> Agent:
    if role not in ROLES:
        raise InvalidInput(f"unknown role {role!r}: use one of {', '.join(ROLES)}", code="unknown_role")
    uow.agents.in_org(org_id, agent_id)
    uow.agents.update(agent_id, role=role)
    return uow.agents.in_org(org_id, agent_id)


# Sample data of a template preview: the org's own names and texts, and a made-up contact.
PREVIEW_SAMPLE: Mapping[str, object] = {
    "contact_name": "Alex Sample", "employee_name": "Sam Lee", "stop_word": "STOP", "start_word": "START",
    "help_word": "HELP", "yes_word": "YES", "pin": "482913", "pin_valid_minutes": 10,
    "held_message": "Is the car ready?", "unsubscribe_url": "https://example.com/u/sample", "reason": 'replied "stop"',
}


@dataclass(frozen=True)
class TemplatePreview:
    text: str  # what the customer or employee would read
    problem: str | None  # why the override may not be saved (the text is then the one used instead)


def preview_template(uow: UnitOfWork, renderer: Renderer, org_id: int, name: str, source: str,
                     channel: Channel = Channel.TEXT) -> TemplatePreview:
    """Render an override (empty: the packaged text) on sample data with the org's names, through
    the same sandboxed, bounded renderer and the same check as saving it."""
    if name not in TEMPLATE_NAMES:
        raise InvalidInput(f"unknown template {name!r}", code="unknown_template")
    settings = uow.orgs.settings(org_id)
    variables = {**PREVIEW_SAMPLE, "org_name": uow.orgs.get(org_id).name, "program_name": settings.program_name,
                 "help_contact": settings.help_contact, "message_frequency": settings.message_frequency,
                 "channel": channel.value}
    problem = renderer.check_override(name, source) if source.strip() else None
    override = source if source.strip() and problem is None else None
    return TemplatePreview(renderer.render(name, variables, override).text, problem)


def save_template(uow: UnitOfWork, renderer: Renderer, org_id: int, name: str, source: str) -> OrgSettings:
    """Set the org's override of `name` (empty: remove it, the packaged text applies again)."""
    if name not in TEMPLATE_NAMES:
        raise InvalidInput(f"unknown template {name!r}", code="unknown_template")
    templates = dict(uow.orgs.own_settings(org_id).get("templates") or {})
    if source.strip():
        templates[name] = source
    else:
        templates.pop(name, None)
    return update_settings(uow, renderer, org_id, {"templates": templates})
