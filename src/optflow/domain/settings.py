"""An org's settings: validated data, inherited from the parent org key by key.

Stored as JSON on the org row holding only what the org set itself; `resolve` merges the chain
from the root down, so a sub-organisation inherits everything it does not override.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from .addresses import is_country_code
from .machine import DEFAULT_CONSENT_METHODS
from .model import Channel, Mode, Purpose

# The paths of an opt-in request a PIN may be asked on (`consent_rules.RequestPath` but quick).
PinPath = Literal["agent", "supervisor_link", "flow"]


class CapSetting(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = ""
    limit: int = Field(ge=1, le=10_000)
    window_hours: float = Field(gt=0, le=24 * 366)
    channels: list[Channel] = Field(min_length=1)
    purposes: list[Purpose] = Field(default_factory=lambda: list(Purpose))

    @property
    def window(self) -> timedelta:
        return timedelta(hours=self.window_hours)


DEBT_COLLECTION_CAP = CapSetting(
    name="reg_f_7_in_7", limit=7, window_hours=7 * 24, channels=[Channel.CALL]
)


class OrgSettings(BaseModel):
    """Every setting with its default. Unknown keys are refused so a typo never silently
    does nothing."""

    model_config = ConfigDict(extra="forbid")

    program_name: str = "optflow messages"
    help_contact: str = "reply HELP"
    message_frequency: str = "Msg frequency varies"
    business_type: str = "general"
    modes: dict[Channel, Mode] = Field(default_factory=dict)
    pin_required: bool = False
    # With `pin_required`: the paths of an opt-in request whose YES needs the PIN. By default
    # only an agent's own request (the agent waits for the customer to read the PIN out); a
    # supervisor's link of an unknown number and a flow's request (a payment plan's) opt in on
    # YES alone, as ACE does. A quick opt-in never needs one.
    pin_paths: list[PinPath] = Field(default_factory=lambda: list[PinPath](["agent"]))
    pin_ttl_minutes: int = Field(default=10, ge=1, le=24 * 60)
    pin_max_attempts: int = Field(default=5, ge=1, le=20)
    stop_applies_to_all_channels: bool = False
    consent_methods: list[str] = Field(default_factory=lambda: list(DEFAULT_CONSENT_METHODS))
    keywords: dict[str, dict[str, list[str]]] = Field(default_factory=dict)
    # Country code ("MX") -> language -> intent -> entries: keywords for senders of that country only.
    keywords_by_country: dict[str, dict[str, dict[str, list[str]]]] = Field(default_factory=dict)
    # Template name -> override in the default language; "<name>.<language>" -> override in that language.
    templates: dict[str, str] = Field(default_factory=dict)
    default_language: Literal["en", "es", "fr", "pt"] = "en"
    reauth_days: dict[Channel, int] = Field(default_factory=dict)
    request_lapse_days: int = Field(default=30, ge=1, le=3650)
    # How long after an opt-in request another may go to the same address while it waits for an
    # answer (an agent pressing the button again, a flow's reminder): one request, not four in a row.
    request_interval_hours: int = Field(default=24, ge=1, le=24 * 365)
    quiet_hours: bool = True
    quiet_hours_purposes: list[Purpose] = Field(default_factory=lambda: list(Purpose))
    caps: list[CapSetting] = Field(default_factory=list)
    preset: Literal["none", "debt_collection"] = "none"
    group_messaging: dict[Channel, bool] = Field(default_factory=dict)
    # The CRM's pipeline stage names that mean "discontinued" (no more communication): a
    # `pipeline.stage_changed` event to one of them starts the `discontinued` flow.
    discontinued_stages: list[str] = Field(default_factory=lambda: ["discontinued", "Discontinued Process"])
    twilio_auth_token: str | None = None
    chat_secret: str | None = None
    unsubscribe_secret: str | None = None
    # The HMAC key of the email events webhook (bounces and complaints from a mail provider).
    email_events_secret: str | None = None
    # The org's WhatsApp templates that Meta approved, by name: the Twilio Content SID (HX...)
    # each is sent as. Outside the 24-hour window only these may go.
    whatsapp_templates: dict[str, str] = Field(default_factory=dict)

    @field_validator("consent_methods")
    @classmethod
    def _methods_not_empty(cls, value: list[str]) -> list[str]:
        cleaned = [m.strip() for m in value if m.strip()]
        if not cleaned:
            raise ValueError("at least one consent method is needed")
        return cleaned

    @field_validator("keywords_by_country")
    @classmethod
    def _known_countries(cls, value: dict[str, Any]) -> dict[str, Any]:
        known: dict[str, Any] = {}
        for code, additions in value.items():
            country = code.strip().upper()
            if not is_country_code(country):
                raise ValueError(f"{code!r} is not a country code such as 'MX' or 'US' (ISO 3166)")
            if country in known:
                raise ValueError(f"{country} is given twice")
            known[country] = additions
        return known

    @field_validator("reauth_days")
    @classmethod
    def _positive_periods(cls, value: dict[Channel, int]) -> dict[Channel, int]:
        for channel, days in value.items():
            if days < 1:
                raise ValueError(f"re-authorisation period for {channel.value} must be at least 1 day")
        return value

    @field_validator("group_messaging")
    @classmethod
    def _group_messaging_needs_no_consent_mode(cls, value: dict[Channel, bool],
                                               info: ValidationInfo) -> dict[Channel, bool]:
        """A field's validator (`modes` is validated before it), so the refusal names the field."""
        modes: dict[Channel, Mode] = info.data.get("modes") or {}
        for channel, enabled in value.items():
            if enabled and modes.get(channel, Mode.CONSENT) is Mode.CONSENT:
                raise ValueError(
                    f"group messaging cannot be enabled on {channel.value} while it runs in consent mode"
                )
        return value

    @field_validator("whatsapp_templates")
    @classmethod
    def _template_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name, content_sid in value.items():
            if not name.strip() or len(name) > 200:
                raise ValueError("a WhatsApp template needs a name of 1 to 200 characters")
            if not (content_sid.startswith("HX") and 2 < len(content_sid) <= 64 and content_sid.isalnum()):
                raise ValueError(f"WhatsApp template {name!r}: give its Twilio Content SID (HX...)")
        return value

    def mode(self, channel: Channel) -> Mode:
        return self.modes.get(channel, Mode.CONSENT)

    def reauth_period(self, channel: Channel) -> timedelta | None:
        days = self.reauth_days.get(channel)
        return timedelta(days=days) if days else None

    def effective_caps(self) -> list[CapSetting]:
        caps = list(self.caps)
        if self.preset == "debt_collection" and not any(c.name == DEBT_COLLECTION_CAP.name for c in caps):
            caps.append(DEBT_COLLECTION_CAP)
        return caps


def merge(chain: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Merge raw settings from the root org down to the org itself. Mappings merge key by key
    (so a sub-org may override one template or one channel's mode); other values replace."""
    merged: dict[str, Any] = {}
    for raw in chain:
        for key, value in raw.items():
            if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
    return merged


def resolve(chain: Iterable[Mapping[str, Any]]) -> OrgSettings:
    return OrgSettings.model_validate(merge(chain))
