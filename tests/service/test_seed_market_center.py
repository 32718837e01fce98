"""Market Center's "Discontinued Process" stage (issue 12, item 8: "Market Center").

Moving a contact's opportunity to the Discontinued Process stage must opt them out of every
channel, switch on do-not-disturb everywhere and take them out of automations: the shipped
`discontinued` flow, on `pipeline.stage_changed`. Stage names are the CRM's own: they match
without regard to case, and through the org's list of names that mean "discontinued"."""

from __future__ import annotations

import pytest

from conftest import new_org
from optflow.bootstrap import System
from optflow.domain import commands as c
from optflow.domain.model import Channel, State

PHONE = "+14155552671"
EMAIL = "sam@example.com"


def _discontinue(system: System, org: int, stage: str) -> tuple[str, dict[Channel, State], bool]:
    contact = system.bus.handle(c.CreateContact(org, name="Sam", phones=(PHONE,), emails=(EMAIL,))).contact_id
    result = system.bus.handle(c.RecordEvent(org, "pipeline.stage_changed", contact, {"stage": stage}))
    with system.bus.uow() as uow:
        states = {ch: uow.consents.get(org, EMAIL if ch is Channel.EMAIL else PHONE, ch).state
                  for ch in (Channel.TEXT, Channel.CALL, Channel.EMAIL)}
        dnd_all = uow.contacts.get(org, contact).dnd.all_channels
    return str(result.detail), states, dnd_all


@pytest.mark.parametrize("stage", ["Discontinued Process", "discontinued process", "DISCONTINUED",
                                   "  Discontinued   Process "])
def test_market_center_the_discontinued_process_stage_ends_all_communication(system: System, stage: str) -> None:
    org = new_org(system)
    detail, states, dnd_all = _discontinue(system, org, stage)
    assert detail == "enrolled in 1 flow(s)"
    assert set(states.values()) == {State.OPTED_OUT} and dnd_all


def test_market_center_an_org_names_its_own_discontinued_stages(system: System) -> None:
    org = new_org(system, discontinued_stages=["Lost - do not contact"])
    detail, states, _ = _discontinue(system, org, "lost - DO NOT contact")
    assert detail == "enrolled in 1 flow(s)" and set(states.values()) == {State.OPTED_OUT}
    other = new_org(system, "Other", "+12025550177", discontinued_stages=["Lost - do not contact"])
    assert _discontinue(system, other, "Qualified")[0] == "no flow matched"
