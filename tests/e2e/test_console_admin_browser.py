"""The console's pages for notes, supervisors, admins, reports and flows in a real browser
(Debian's Chromium through Playwright): the Movius walk's end (the employee's inbox shows the
notes; the group-messaging switch is refused in consent mode), and axe-core on every page, at
375 px wide too. Every wait is on a locator, never on time."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import expect

from e2e.conftest import Console, Library, Server
from optflow.domain import commands as c
from optflow.domain.model import Actor, ActorKind, Channel, State


def _signed_in_person(console: Console, library: Library, org_id: int, role: str, name: str,
                      width: int = 1280) -> tuple[Any, int]:
    email, password = library.add_person(org_id, role, name=name)
    with library.system.bus.uow(read_only=True) as uow:
        person = uow.agents.by_email(email)
    assert person is not None
    return console.sign_in(person=(email, password), width=width), person.id


def test_movius_the_employees_inbox_shows_the_notes(console: Console, library: Library, server: Server) -> None:
    """Consent mode: the employee's first message is held and the opt-in request goes out; the
    customer's YES arrives through the signed webhook; the held message goes, and the employee's
    inbox shows both notes, unread, until they are marked read."""
    org = library.new_org()
    page, agent_id = _signed_in_person(console, library, org.id, "agent", "Morgan", width=375)
    phone = library.new_number()
    contact = library.handle(c.CreateContact(org.id, name="Pat", phones=(phone,))).contact_id
    held = library.handle(c.SendMessage(org.id, contact, Channel.TEXT, "Your quote is ready",
                                        Actor(ActorKind.AGENT, str(agent_id), "agent")))
    assert held.status == "held"
    assert server.sms(phone, "YES", To=org.number).status_code == 200
    assert library.consent(org.id, phone).state is State.OPTED_IN

    page.reload()
    menu = page.get_by_role("navigation", name="Main")
    expect(menu.get_by_role("link", name="Inbox 2 unread")).to_be_visible()  # on every page
    menu.get_by_role("link", name="Inbox").click()
    expect(page.get_by_role("heading", name="Inbox 2 unread")).to_be_visible()
    notes = page.get_by_role("list", name="Notes").get_by_role("listitem")
    expect(notes).to_have_count(2)
    expect(notes.nth(0)).to_contain_text("Pat opted in to text messages.")
    expect(notes.nth(1)).to_contain_text("Your message is held and will be delivered once they reply YES.")
    console.assert_accessible(page)
    notes.nth(0).get_by_role("button", name="Mark read (the note").click()
    expect(page.get_by_role("heading", name="Inbox 1 unread")).to_be_visible()
    page.get_by_role("button", name="Mark all read").click()
    expect(page.get_by_role("heading", name="Inbox 0 unread")).to_be_visible()
    expect(page.get_by_role("status")).to_contain_text("1 note marked read.")
    expect(menu.get_by_role("link", name="Inbox", exact=True)).to_be_visible()  # no count left


def test_movius_the_group_messaging_switch_is_refused_in_consent_mode(console: Console, library: Library) -> None:
    org = library.new_org()
    page, _ = _signed_in_person(console, library, org.id, "admin", "Ada")
    page.get_by_role("link", name="Settings").click()
    expect(page.get_by_role("heading", name=f"Settings of Org {org.number}")).to_be_visible()
    expect(page.get_by_label("Text", exact=True)).to_have_value("consent")
    page.get_by_label("Group messaging on text").check()
    page.get_by_role("button", name="Save settings").click()
    error = page.locator("#err-group_messaging")
    expect(error).to_contain_text("group messaging cannot be enabled on text while it runs in consent mode")
    expect(page.get_by_label("Group messaging on text")).to_be_checked()  # the form as it was sent
    expect(page.get_by_label("Group messaging on text")).to_have_attribute("aria-describedby", "err-group_messaging")
    console.assert_accessible(page)
    with library.system.bus.uow(read_only=True) as uow:
        assert uow.orgs.settings(org.id).group_messaging == {}
    # The refused form is answered 422 on purpose; the browser logs that status as an error.
    console.errors[:] = [e for e in console.errors if "status of 422" not in e]

    page.get_by_label("Text", exact=True).select_option("disclaimer")
    page.get_by_role("button", name="Save settings").click()
    expect(page.get_by_role("status")).to_contain_text("Settings saved.")
    expect(page.get_by_label("Group messaging on text")).to_be_checked()


def test_admin_and_supervisor_pages_are_accessible_at_375_px(console: Console, library: Library,
                                                            server: Server) -> None:
    org = library.new_org()
    phone = library.new_number()
    library.handle(c.CreateContact(org.id, name="Pat", phones=(phone,)))
    server.sms(library.new_number(), "hello?", To=org.number)
    page, _ = _signed_in_person(console, library, org.id, "admin", "Ada", width=375)
    for path, heading in [("/console/queues", "Queues"), ("/console/reports", "Reports"),
                          ("/console/flows", "Flows"), ("/console/admin/people", "People"),
                          ("/console/admin/templates", f"Message templates of Org {org.number}")]:
        page.goto(console.url(path))
        expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
        console.assert_accessible(page)
        assert page.evaluate("document.documentElement.scrollWidth") <= 375 + 1, path

    page.goto(console.url("/console/flows/welcome_drip"))
    page.get_by_label("Contact (number, phone or email)").fill(phone)
    page.get_by_role("button", name="Dry run").click()
    steps = page.get_by_role("list", name="Steps of the dry run")
    expect(steps).to_contain_text("request opt in")
    expect(steps).to_contain_text("would like to reach you")
    console.assert_accessible(page)

    page.goto(console.url("/console/admin/templates?name=customer/help"))
    page.get_by_label("The org's text").fill("Help is at {{ help_contact }} for {{ contact_name }}")
    expect(page.locator("#preview")).to_contain_text("for Alex Sample")  # htmx swapped the preview in
    page.get_by_label("The org's text").fill("{{ nope }}")
    expect(page.locator("#preview")).to_contain_text("unknown variable 'nope'")
    console.assert_accessible(page)
