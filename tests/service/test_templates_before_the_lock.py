"""An admin's template never runs while the database's write lock is held (issue 10, hole 5).

The probe: an override that took 34.6 s to compile held SQLite's write lock, and every STOP
meanwhile waited 48-50 s. Renders are bounded now (tests/unit/test_templates.py); here, a web
worker's group commit renders the org's overrides before it takes the write lock, so another
writer can still write at the moment each override runs."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from conftest import ORG_NUMBER, another_writer_can_write, new_agent, new_org, texts_through_a_worker
from optflow.adapters.templates import Rendered, TemplateRenderer
from optflow.bootstrap import System
from optflow.domain import commands as c
from optflow.domain.model import Actor, ActorKind, Channel, State

PHONE = "+14155552671"
OVERRIDES = {
    "customer/opt_out_confirmation": "{{ org_name }}: no more texts. Reply {{ start_word }} to come back.",
    "employee/contact_opted_out": "{{ contact_name }} said stop ({{ reason }}).",
    "customer/help": "{{ org_name }} help: call {{ help_contact }}.",
}


class LockProbe(TemplateRenderer):
    """The real renderer; each time it runs an org's override it tries to start a write
    transaction of its own on the same database file (no waiting) and notes whether it could."""

    def __init__(self, template_dir: Path | None, database: str) -> None:
        super().__init__(template_dir)
        self.database = database
        self.overrides: list[tuple[str, bool]] = []  # (template, could another writer write?)

    def render(self, name: str, variables: Mapping[str, object], override: str | None = None,
               language: str = "en") -> Rendered:
        if override is not None:
            self.overrides.append((name, another_writer_can_write(self.database)))
        return super().render(name, variables, override, language)


def probed(system: System, templates: dict[str, str] = OVERRIDES) -> LockProbe:
    org = new_org(system, templates=templates)
    agent = Actor(ActorKind.AGENT, str(new_agent(system, org).id), "agent")
    contact = system.bus.handle(c.CreateContact(org, name="Sam", phones=(PHONE,))).contact_id
    system.bus.handle(c.RecordOptIn(org, contact, Channel.TEXT, agent, method="paper_form"))
    database = system.engine.url.database
    assert database is not None
    probe = LockProbe(system.config.template_dir, database)
    system.services.renderer = probe
    return probe


async def test_the_group_commit_renders_the_orgs_templates_before_it_takes_the_write_lock(system: System) -> None:
    probe = probed(system)
    stop, help_ = await texts_through_a_worker(system, ("STOP", "SMstop1"), ("HELP", "SMhelp1"), phone=PHONE)
    assert stop.state is State.OPTED_OUT
    assert stop.replies == ("Acme: no more texts. Reply START to come back.",)
    assert help_.replies[0].startswith("Acme help: call")
    assert {name for name, _ in probe.overrides} == set(OVERRIDES)
    assert all(free for _, free in probe.overrides), probe.overrides


def test_the_probe_sees_a_render_inside_the_transaction(system: System) -> None:
    """Without the pre-render (a batch of one through the bus, as the CLI runs), the override runs
    inside the write transaction, and the probe says so: the test above can fail."""
    probe = probed(system)
    system.bus.handle(c.ReceiveInbound(Channel.TEXT, PHONE, ORG_NUMBER, "STOP", "SMstop2"))
    assert probe.overrides and not any(free for _, free in probe.overrides)


SPANISH_OVERRIDES = {
    "customer/opt_out_confirmation.es": "{{ org_name }}: no le escribiremos más. {{ start_word }} para volver.",
    "customer/help.es": "Ayuda de {{ org_name }}: {{ help_contact }}.",
    **OVERRIDES,
}


async def test_the_overrides_of_the_customers_language_are_rendered_before_the_write_lock(system: System) -> None:
    """The pre-render reads the language as the handler does: AYUDA and ALTO get the Spanish
    overrides, rendered before the lock; the note to the employee is in the org's language."""
    probe = probed(system, SPANISH_OVERRIDES)
    help_, stop = await texts_through_a_worker(system, ("AYUDA", "SMayuda1"), ("ALTO", "SMalto1"), phone=PHONE)
    assert help_.replies == ("Ayuda de Acme: llame o escriba al +12025550123.",)  # the default HELP contact, in Spanish
    assert stop.replies == ("Acme: no le escribiremos más. START para volver.",)
    assert {name for name, _ in probe.overrides} == {"customer/help", "customer/opt_out_confirmation",
                                                     "employee/contact_opted_out"}
    assert all(free for _, free in probe.overrides), probe.overrides
