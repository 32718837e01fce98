"""Consent events out: what a CRM or DMS receives for each entry of the consent ledger.

Every change of who may be contacted is a ledger entry (consent transitions, DND, marketing
permission), so the events are made from the entries as they are chained, with their sequence
number: whichever door a change came through, the fallback opt-out included, it becomes an event.
Pure: the adapter that writes the ledger hands in the entries and the contacts' external ids.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .ledger import DAMAGE_TRIGGER

CONSENT_CHANGED = "consent.changed"
DND_CHANGED = "dnd.changed"
MARKETING_CHANGED = "marketing.changed"
EVENT_TYPES = (CONSENT_CHANGED, DND_CHANGED, MARKETING_CHANGED)

# An event is tried for this long after it was queued (or redelivered), then marked failed.
DELIVERY_WINDOW = timedelta(days=1)
_NOT_EVENTS = frozenset({DAMAGE_TRIGGER})  # the ledger's records of its own damage


@dataclass(frozen=True)
class OutboundEvent:
    """One event: its type, its id (`webhook-id`, unique per org and stable), the key that orders
    it among the contact's events, and its JSON body exactly as it is signed and sent."""

    type: str
    id: str
    ordering_key: str
    payload: str


def event_type_of(trigger: str) -> str | None:
    """The event type of a ledger entry's trigger; None for entries that are no change of consent."""
    if trigger in _NOT_EVENTS:
        return None
    if trigger.startswith("dnd_"):
        return DND_CHANGED
    if trigger.startswith("marketing_"):
        return MARKETING_CHANGED
    return CONSENT_CHANGED


def event_id(org_id: int, seq: int) -> str:
    return f"optflow-ledger-{org_id}-{seq}"


def ordering_key(contact_id: int | None, address: str) -> str:
    """Events with the same key reach an endpoint in the order of the ledger. A change to an
    address that belongs to no contact yet (a STOP from an unknown number) is ordered by address."""
    return f"contact:{contact_id}" if contact_id is not None else f"address:{address}"


def _time(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _dnd(label: str) -> dict[str, Any]:
    """`dnd:all`, `dnd:none` or `dnd:text,email` (how the ledger records DND) as an object."""
    value = label.removeprefix("dnd:")
    if value == "all":
        return {"all_channels": True, "channels": []}
    return {"all_channels": False, "channels": [] if value in ("", "none") else value.split(",")}


def event_for_entry(entry: Mapping[str, Any], external_id: str | None) -> OutboundEvent | None:
    """The event of one chained ledger entry (a row of `ledger`, with its `seq`), or None."""
    kind = event_type_of(entry["trigger"])
    if kind is None:
        return None
    contact_id = entry["contact_id"]
    data: dict[str, Any] = {
        "org_id": entry["org_id"],
        "ledger_seq": entry["seq"],
        "contact": None if contact_id is None else {"id": contact_id, "external_id": external_id},
        "channel": entry["channel"],
        "address": entry["address"] or None,
        "from_state": entry["from_state"],
        "to_state": entry["to_state"],
        "trigger": entry["trigger"],
        "method": entry["method"],
        "actor": {"kind": entry["actor_kind"], "id": entry["actor_id"]},
        "evidence": entry["evidence"],
        "source_message_id": entry["source_message_id"],
        "occurred_at": _time(entry["occurred_at"]),
        "recorded_at": _time(entry["recorded_at"]),
    }
    if kind == DND_CHANGED:
        data["dnd"] = _dnd(entry["to_state"])
    elif kind == MARKETING_CHANGED:
        data["marketing_allowed"] = entry["to_state"] == "marketing:on"
    body = {"type": kind, "timestamp": _time(entry["recorded_at"]), "data": data}
    return OutboundEvent(kind, event_id(entry["org_id"], entry["seq"]), ordering_key(contact_id, entry["address"]),
                         json.dumps(body, ensure_ascii=False, separators=(",", ":")))
