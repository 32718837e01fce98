"""Take the screenshots of docs/console.md from a real `optflow serve` and Debian's Chromium, so
they show the console as it is: `make screenshots` (or `python scripts/console_screenshots.py`).

A fresh SQLite database in a temporary directory gets a demo org, an agent with a console sign-in
and one contact with some history (through the message bus, as the API would make it); then the
browser signs in and photographs each screen into docs/console/.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from optflow.adapters.senders import ConsoleSender
from optflow.bootstrap import bootstrap
from optflow.config import Config
from optflow.domain import commands as c
from optflow.domain.model import Actor, ActorKind, Channel
from optflow.domain.records import MessageStatus
from optflow.service_layer import admin, console_auth

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "console"
EMAIL, PASSWORD = "dana@example.com", "screenshots-password"
ADMIN_EMAIL = "ada@example.com"  # an admin (same password), for the admin, supervisor and report screens
ORG_NUMBER = "+12025550123"
PHONE, CUSTOMER_EMAIL = "+14155552671", "rosa.diaz@example.com"


def _demo(database_url: str) -> int:
    """The demo org, person and contact. Returns the contact's id."""
    # The outbox is delivered here, once, to a sender that prints into a buffer: the demo's texts
    # get delivery reports, and nothing is printed.
    system = bootstrap(Config(database_url=database_url, flows_dir=REPO / "flows"), sender=ConsoleSender(io.StringIO()))
    try:
        now = datetime.now(UTC)
        with system.uows() as uow:
            org_id = admin.create_org(uow, "Northwind Motors", now, numbers=(ORG_NUMBER,),
                                      settings={"quiet_hours": False, "program_name": "Northwind alerts"})
            dana = admin.add_agent(uow, org_id, "Dana Whitfield", "agent", now)
            console_auth.set_sign_in(uow, org_id, dana.id, EMAIL, PASSWORD)
            ada = admin.add_agent(uow, org_id, "Ada Okafor", "admin", now)
            console_auth.set_sign_in(uow, org_id, ada.id, ADMIN_EMAIL, PASSWORD)
            uow.commit()
        agent = Actor(ActorKind.AGENT, str(dana.id), "agent")
        bus = system.bus
        contact_id = bus.handle(c.CreateContact(org_id, name="Rosa Díaz", phones=(PHONE,),
                                                emails=(CUSTOMER_EMAIL,))).contact_id
        bus.handle(c.RecordOptIn(org_id, contact_id, Channel.CALL, agent, method="phone_call",
                                 occurred_at=now - timedelta(days=12), evidence="Recorded call, ticket 4471"))
        bus.handle(c.RecordOptIn(org_id, contact_id, Channel.EMAIL, agent, method="web_form",
                                 occurred_at=now - timedelta(days=30), evidence="Newsletter form"))
        bus.handle(c.SendMessage(org_id, contact_id, Channel.TEXT, "Hi Rosa, your service is booked for Friday.",
                                 agent))
        bus.handle(c.ReceiveInbound(Channel.TEXT, PHONE, ORG_NUMBER, "YES", provider_id="SM" + "1" * 32))
        # The held text went out after the YES and was delivered; a reminder did not reach the
        # phone (Twilio 30003: unreachable); a dialler's call was not answered; the email bounced.
        _deliver(system, org_id, contact_id, "delivered")
        bus.handle(c.SendMessage(org_id, contact_id, Channel.TEXT, "Reminder: your service is tomorrow at 9:00.",
                                 agent))
        _deliver(system, org_id, contact_id, "undelivered", "30003")
        bus.handle(c.RecordCallAttempt(org_id, PHONE, agent, placed_at=now - timedelta(hours=2), outcome="no_answer",
                                       contact_id=contact_id))
        bus.handle(c.ReportMailFeedback(org_id, (c.MailFeedback(CUSTOMER_EMAIL, complaint=False,
                                                                evidence="550 5.1.1 mailbox unavailable"),),
                                        source="bounce mailbox"))
        bus.handle(c.UpdateContact(org_id, contact_id, language="es"))
        bus.handle(c.EnrollContact(org_id, contact_id, "welcome_drip", agent))
        # For the supervisors' queues: a text from a number no contact has, and a message held until YES.
        bus.handle(c.ReceiveInbound(Channel.TEXT, "+14155550188", ORG_NUMBER, "Hi, is my car ready?",
                                    provider_id="SM" + "2" * 32))
        lee = bus.handle(c.CreateContact(org_id, name="Lee Chen", phones=("+14155550177",))).contact_id
        bus.handle(c.SendMessage(org_id, lee, Channel.TEXT, "Your quote for the brake job is ready.", agent))
        return contact_id
    finally:
        system.close()


def _deliver(system: Any, org_id: int, contact_id: int, status: str, error_code: str | None = None) -> None:
    """Hand what is due in the outbox to the sender, then report each text it sent as `status`,
    as Twilio's status callback would."""
    system.dispatcher.run(datetime.now(UTC))
    with system.uows() as uow:
        sent = [m for m in uow.messages.for_contact(org_id, contact_id)
                if m.status == MessageStatus.SENT and m.provider_status is None]
    for message in sent:
        system.bus.handle(c.RecordDeliveryStatus(org_id, message.provider_id or "", status, error_code,
                                                 message_id=message.id))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(database_url: str, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {**os.environ, "OPTFLOW_FLOWS_DIR": str(REPO / "flows")}
    process = subprocess.Popen(
        [sys.executable, "-m", "optflow", "--database", database_url, "serve", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1", "--no-scheduler"],
        stdout=(workdir / "server.log").open("wb"), stderr=subprocess.STDOUT, env=env, cwd=workdir,
        start_new_session=True)
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("optflow serve exited:\n" + (workdir / "server.log").read_text())
        try:
            if httpx.get(base_url + "/healthz", timeout=1).status_code == 200:
                return process, base_url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGTERM)
    raise SystemExit("optflow serve did not start")


# (file name, what it shows, how to get there from a signed-in page, viewport width)
Step = Callable[[Any, str, int], None]


def _go(path: str) -> Step:
    def step(page: Any, base_url: str, contact_id: int) -> None:
        page.goto(base_url + path.format(contact=contact_id))
        page.get_by_role("heading").first.wait_for()
    return step


def _refused_group_messaging(page: Any, base_url: str, contact_id: int) -> None:
    _go("/console/admin/settings")(page, base_url, contact_id)
    page.get_by_label("Group messaging on text").check()
    page.get_by_role("button", name="Save settings").click()
    page.locator("#err-group_messaging").wait_for()


def _template_preview(page: Any, base_url: str, contact_id: int) -> None:
    _go("/console/admin/templates?name=customer/help")(page, base_url, contact_id)
    page.get_by_label("The org's text").fill("{{ program_name }}: for help call {{ help_contact }}. "
                                             "Reply {{ stop_word }} to opt out, {{ contact_name }}.")
    page.locator("#preview", has_text="Alex Sample").wait_for()


def _open_opt_in_form(page: Any, base_url: str, contact_id: int) -> None:
    _go("/console/contacts/{contact}")(page, base_url, contact_id)
    page.locator("summary", has_text="Opt In Texts").click()


# (file name, what it shows, how to get there, viewport width[, who signs in: default Dana, an agent])
SCREENS: list[tuple[Any, ...]] = [
    ("sign-in.png", "Sign in", _go("/console/sign-in"), 1100),
    ("contacts.png", "Contacts: search and consent badges", _go("/console/contacts"), 1100),
    ("contact.png", "The contact page", _go("/console/contacts/{contact}"), 1100),
    ("contact-opt-in-form.png", "Opt In Texts with date, time, method and evidence", _open_opt_in_form, 1100),
    ("contact-phone.png", "The contact page at 375 px", _go("/console/contacts/{contact}"), 375),
    ("contact-form.png", "Editing a contact, its language", _go("/console/contacts/{contact}/edit"), 1100),
    ("conversation.png", "Conversation", _go("/console/contacts/{contact}/conversation"), 1100),
    ("history.png", "Consent history", _go("/console/contacts/{contact}/history"), 1100),
    ("proof.png", "Proof of consent (printable)", _go("/console/contacts/{contact}/proof"), 1100),
    ("automations.png", "Automations", _go("/console/contacts/{contact}/automations"), 1100),
    ("inbox.png", "The employee's inbox", _go("/console/inbox"), 1100),
    ("queues.png", "Supervisors' queues", _go("/console/queues"), 1100, ADMIN_EMAIL),
    ("reports.png", "Reports", _go("/console/reports"), 1100, ADMIN_EMAIL),
    ("flows.png", "Flows", _go("/console/flows"), 1100, ADMIN_EMAIL),
    ("flow-dry-run.png", "A flow's dry run", _go(f"/console/flows/welcome_drip?contact=%2B{PHONE[1:]}#dry-run"),
     1100, ADMIN_EMAIL),
    ("settings.png", "Org settings, group messaging refused", _refused_group_messaging, 1100, ADMIN_EMAIL),
    ("settings-phone.png", "Org settings at 375 px", _go("/console/admin/settings"), 375, ADMIN_EMAIL),
    ("templates.png", "Template override with its preview", _template_preview, 1100, ADMIN_EMAIL),
    ("people.png", "People", _go("/console/admin/people"), 1100, ADMIN_EMAIL),
]


def main() -> None:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        database_url = f"sqlite:///{workdir / 'screenshots.db'}"
        contact_id = _demo(database_url)
        process, base_url = _serve(database_url, workdir)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, headless=True,
                                            args=["--headless", "--no-sandbox", "--disable-gpu"])
                for name, _, step, width, *who in SCREENS:
                    context = browser.new_context(viewport={"width": width, "height": 800})
                    page = context.new_page()
                    if name != "sign-in.png":
                        page.goto(base_url + "/console/sign-in")
                        page.get_by_label("Email").fill(who[0] if who else EMAIL)
                        page.get_by_label("Password").fill(PASSWORD)
                        page.get_by_role("button", name="Sign in").click()
                        page.wait_for_url(re.compile(r".*/console/contacts$"))
                    step(page, base_url, contact_id)
                    page.screenshot(path=str(OUT / name), full_page=True)
                    context.close()
                    print(f"wrote docs/console/{name}")
                browser.close()
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
