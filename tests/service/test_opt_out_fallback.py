"""The opt-out fallback stores only what cannot fail: on SQLite and on PostgreSQL, a STOP whose
handling crashed is still recorded, even when its text is one PostgreSQL refuses (a NUL), and
the provider's retry of it is recognised."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import DataError

from conftest import Clock, RecordingSender, make_system
from optflow.adapters import orm
from optflow.adapters.templates import Rendered, TemplateRenderer
from optflow.bootstrap import System
from optflow.domain import commands as c
from optflow.domain.model import Channel, State
from optflow.entrypoints.inbound_batcher import InboundBatcher
from optflow.service_layer import admin

ORG_NUMBER = "+12025550123"
CUSTOMER = "+14155550142"


class BrokenRenderer(TemplateRenderer):
    """Every template fails: a stand-in for a bug anywhere in the reply pipeline."""

    def render(self, name: str, variables: Mapping[str, object], override: str | None = None,
               language: str = "en") -> Rendered:
        raise RuntimeError("the template engine fell over")


@pytest.fixture
def broken(engine: Engine, clock: Clock, sender: RecordingSender) -> System:
    system = make_system(engine, clock, sender)
    with system.bus.uow() as uow:
        org_id = admin.create_org(uow, "Acme", clock(), numbers=(ORG_NUMBER,), settings={"quiet_hours": False})
        uow.commit()
    system.bus.handle(c.CreateContact(org_id, name="Pat", phones=(CUSTOMER,)))
    system.services.renderer = BrokenRenderer(system.config.template_dir)
    return system


def stop(body: str, sid: str) -> c.ReceiveInbound:
    """Unsanitised on purpose: the fallback must cope with text that reached it as received."""
    return c.ReceiveInbound(Channel.TEXT, CUSTOMER, ORG_NUMBER, body, provider_id=sid)


def state(system: System) -> State:
    with system.bus.uow(read_only=True) as uow:
        org_id = uow.orgs.find_by_number(ORG_NUMBER)
        assert org_id is not None
        return uow.consents.get(org_id, CUSTOMER, Channel.TEXT).state


def inbound(system: System) -> int:
    with system.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(orm.messages).where(
            orm.messages.c.direction == "in")).scalar_one())


@pytest.mark.parametrize(("body", "sid"), [
    pytest.param("STOP\x00", "SM-nul-body", id="nul-in-body"),
    pytest.param("STOP", "SM-nul-sid\x00", id="nul-in-sid"),
])
def test_the_bus_fallback_records_the_opt_out_and_the_message(broken: System, body: str, sid: str) -> None:
    # SQLite stores the NUL and the broken template fails; PostgreSQL refuses the NUL first.
    with pytest.raises((RuntimeError, DataError)):
        broken.bus.handle(stop(body, sid))
    assert state(broken) is State.OPTED_OUT
    assert inbound(broken) == 1
    with contextlib.suppress(RuntimeError, DataError):  # the provider's retry stores nothing twice
        broken.bus.handle(stop(body, sid))
    assert inbound(broken) == 1


async def test_the_group_commit_fallback_records_the_opt_out(broken: System) -> None:
    batcher = InboundBatcher(broken)
    batcher.start()
    try:
        with pytest.raises((RuntimeError, DataError)):
            await batcher.submit(stop("\x00STOP", "SM-batched"))
    finally:
        await batcher.close()
    assert state(broken) is State.OPTED_OUT
    assert inbound(broken) == 1
