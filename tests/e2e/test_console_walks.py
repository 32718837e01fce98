"""Each seed product's workflow, walked through the console in a real browser (Debian's
Chromium), with axe-core on the pages it passes. Waits are on locators, never on time."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from playwright.sync_api import expect

from e2e.conftest import Console, Library, Server, fresh_number
from e2e.helpers import api_org
from optflow.domain import commands as c
from optflow.domain.model import Channel


def new_contact(page: Any, name: str, phone: str | None = None, email: str | None = None) -> int:
    """Create a contact through the form; the browser ends on its page. Returns its id."""
    page.get_by_role("link", name="Contacts", exact=True).click()
    page.get_by_role("link", name="New contact").click()
    page.get_by_label("Name").fill(name)
    if phone:
        page.get_by_label("Phone number").fill(phone)
    if email:
        page.get_by_label("Email address").fill(email)
    page.get_by_role("button", name="Create contact").click()
    expect(page.get_by_role("status")).to_have_text("Contact created.")
    match = re.search(r"/console/contacts/([0-9]+)$", page.url)
    assert match, page.url
    return int(match.group(1))


def channel_row(page: Any, label: str) -> Any:
    """The section of one channel (Texts, Calls, Email ...) on the contact page."""
    return page.locator("section.channel").filter(has=page.get_by_role("heading", name=re.compile(f"^{label} ")))


def email_row(page: Any, email: str) -> Any:
    """The Email channel's section in the card of one email address."""
    card = page.locator("section.card").filter(has=page.get_by_role("heading", name=f"Email {email}", exact=True))
    return card.locator("section.channel")


def fits_width(page: Any, width: int) -> bool:
    """Whether the page is no wider than the window (nothing to scroll sideways)."""
    return bool(page.evaluate("document.documentElement.scrollWidth") <= width + 1)


def phone_flags(page: Any, phone: str) -> Any:
    """The Active and Do-Not-Call flags in the header of one phone number's card."""
    return page.locator("section.card").filter(
        has=page.get_by_role("heading", name=f"Phone {phone}", exact=True)).locator(".card-head .flags")


def record(page: Any, label: str, action: str, *, date: str, time: str, method: str, evidence: str) -> None:
    """Open the channel's "Opt In" or "Opt Out" form, fill the date, time, method and evidence, submit."""
    row = channel_row(page, label)
    row.locator("summary", has_text=f"{action} {label}").click()
    form = row.locator("details[open] form")
    form.get_by_label(re.compile("^Date")).fill(date)
    form.get_by_label(re.compile("^Time")).fill(time)
    form.get_by_label("Method").select_option(method)
    form.get_by_label(re.compile("^Evidence")).fill(evidence)
    form.get_by_role("button", name=f"{action} {label}").click()


def test_collect_opt_in_calls_flags_log_opt_out_texts_and_text_reauth(console: Console, library: Library,
                                                                      server: Server) -> None:
    page = console.sign_in("agent")
    phone = fresh_number()
    contact_id = new_contact(page, "Colin Collect", phone)
    assert page.evaluate("() => typeof window.htmx") == "object"  # the vendored htmx runs under the CSP
    console.assert_accessible(page)
    contact_flags, number_flags = page.locator("#flags"), phone_flags(page, phone)
    expect(contact_flags).to_contain_text("Active: no")
    expect(number_flags).to_have_text(re.compile(r"Active: no\s+Do not call: no"))

    # Opt in calls with a past date and a method: the flags flip, the contact's and the number's.
    record(page, "Calls", "Opt In", date="2026-11-02", time="14:30", method="phone_call",
           evidence="Said yes on the recorded call of 2 November")
    expect(page.get_by_role("status")).to_have_text("Opted in (Calls).")
    expect(contact_flags).to_contain_text("Active: yes")
    expect(contact_flags).to_contain_text("Do not call: no")
    expect(number_flags).to_have_text(re.compile(r"Active: yes\s+Do not call: no"))
    calls = channel_row(page, "Calls")
    expect(calls.get_by_role("heading")).to_contain_text("opted in")
    expect(calls).to_contain_text("2026-11-02 14:30 UTC")
    expect(calls).to_contain_text("phone call")
    expect(calls).to_contain_text("agent one")

    # Texts: opted in on paper, then Text Reauth asks the customer to confirm it.
    record(page, "Texts", "Opt In", date="2026-10-01", time="09:00", method="paper_form", evidence="Form 17")
    expect(page.get_by_role("status")).to_have_text("Opted in (Texts).")
    channel_row(page, "Texts").get_by_role("button", name="Text Reauth").click()
    expect(page.get_by_role("status")).to_have_text("Re-authorisation request sent (Texts).")
    sent = library.messages(server.org_id, phone, direction="out", audience="customer")
    assert [(m["channel"], m["kind"]) for m in sent] == [("text", "opt_in_request")], sent

    # Opt out of texts with its own date and method.
    record(page, "Texts", "Opt Out", date="2026-11-20", time="08:15", method="verbal",
           evidence="Asked on the phone to stop texts")
    expect(page.get_by_role("status")).to_have_text("Opted out (Texts).")
    texts = channel_row(page, "Texts")
    expect(texts.get_by_role("heading")).to_contain_text("opted out")
    expect(texts).to_contain_text("2026-11-20 08:15 UTC")
    expect(texts).to_contain_text("verbal")
    # The number's own flags follow its latest call or text consent, the opt-out of texts; the
    # contact's follow the calls channel, still opted in.
    expect(number_flags).to_have_text(re.compile(r"Active: no\s+Do not call: yes"))
    expect(contact_flags).to_contain_text("Active: yes")
    # A button that may not be used says why (the consent rules' own words).
    expect(texts.get_by_role("button", name="Opt In Texts")).to_be_disabled()
    expect(texts).to_contain_text("only the customer can reopen it")
    console.assert_accessible(page)

    # The log shows every change, with when it was given and when it was recorded.
    page.get_by_role("link", name="Consent history").click()
    timeline = page.locator("ol.timeline")
    expect(timeline).to_contain_text("call · " + phone + ": unknown → opted in")
    expect(timeline).to_contain_text("2026-11-02 14:30 UTC")
    opted_out = timeline.locator("li", has_text="text · " + phone + ": opted in → opted out")
    expect(opted_out).to_contain_text("2026-11-20 08:15 UTC")
    expect(opted_out).to_contain_text("verbal")
    expect(opted_out).to_contain_text("Asked on the phone to stop texts")
    console.assert_accessible(page)
    with page.expect_download() as download:
        page.get_by_role("link", name="Proof of consent (CSV)").click()
    csv_text = Path(download.value.path()).read_text(encoding="utf-8")
    assert csv_text.splitlines()[0].startswith("seq,recorded_at,occurred_at,address,channel")
    assert "paper_form" in csv_text and "phone_call" in csv_text
    page.goto(console.url(f"/console/contacts/{contact_id}/proof"))
    expect(page.get_by_role("heading", name="Proof of consent")).to_be_visible()
    expect(page.locator("table").last).to_contain_text("Said yes on the recorded call of 2 November")
    console.assert_accessible(page)


def test_ace_opt_in_request_then_the_customers_yes_then_the_pin(console: Console, library: Library,
                                                                server: Server) -> None:
    org = api_org(server, library, pin_required=True)
    page = console.sign_in(person=library.add_person(org.org.id))
    phone = fresh_number()
    new_contact(page, "Ace Customer", phone)
    texts = channel_row(page, "Texts")
    texts.get_by_role("button", name="Send Opt-In Request (Texts)").click()
    expect(page.get_by_role("status")).to_have_text("Opt-in request sent (Texts).")
    expect(texts.get_by_role("heading")).to_contain_text("requested")
    expect(texts.get_by_role("button", name="Enter PIN (Texts)")).to_be_disabled()
    expect(texts).to_contain_text("no PIN is awaited")

    # The customer's YES arrives through the signed Twilio webhook; optflow texts them a PIN.
    answer = org.sms(phone, "YES")
    assert answer.status_code == 200, answer.text
    pins = [m for m in library.messages(org.org.id, phone, direction="out") if m["kind"] == "pin"]
    assert len(pins) == 1
    pin = re.search(r"\b([0-9]{4,8})\b", pins[0]["body"])
    assert pin, pins[0]["body"]
    page.reload()
    expect(texts.get_by_role("heading")).to_contain_text("awaiting PIN")
    console.assert_accessible(page)

    # A wrong PIN is refused with the reason; the right one opts the customer in.
    wrong = "0000" if pin.group(1) != "0000" else "1111"
    texts.get_by_label("PIN the customer read out").fill(wrong)
    texts.get_by_role("button", name="Enter PIN").click()
    expect(page.get_by_role("alert")).to_contain_text("Refused:")
    texts.get_by_label("PIN the customer read out").fill(pin.group(1))
    texts.get_by_role("button", name="Enter PIN").click()
    expect(page.get_by_role("status")).to_have_text("Opted in (Texts).")
    expect(texts.get_by_role("heading")).to_contain_text("opted in")
    expect(texts).to_contain_text("pin")


def test_market_center_stop_dnd_discontinued_and_an_automation_removed(console: Console, library: Library,
                                                                       server: Server) -> None:
    org = api_org(server, library)
    page = console.sign_in(person=library.add_person(org.org.id), width=375)  # a phone's width
    phone, email = fresh_number(), f"mc{fresh_number()[1:]}@example.com"
    contact_id = new_contact(page, "Mia Market", phone, email)
    record(page, "Texts", "Opt In", date="2026-11-01", time="10:00", method="web_form", evidence="Signup form")
    expect(page.get_by_role("status")).to_have_text("Opted in (Texts).")
    record(page, "Email", "Opt In", date="2026-11-01", time="10:00", method="web_form", evidence="Signup form")
    expect(page.get_by_role("status")).to_have_text("Opted in (Email).")

    # An automation, removed after a confirmation.
    with org.client() as api:
        enrolled = api.post(f"/api/v1/contacts/{contact_id}/enrollments", json={"flow": "welcome_drip"})
        assert enrolled.status_code == 201, enrolled.text
    page.get_by_role("link", name="Automations").click()
    page.get_by_role("link", name="Remove from welcome_drip").click()
    console.assert_accessible(page)
    page.get_by_role("button", name="Yes, remove from welcome_drip").click()
    expect(page.get_by_role("status")).to_have_text("Removed from the automation.")
    expect(page.get_by_text("None.")).to_be_visible()

    # STOP by text ends texts, not email.
    assert org.sms(phone, "STOP").status_code == 200
    page.get_by_role("link", name="Consent", exact=True).click()
    expect(channel_row(page, "Texts").get_by_role("heading")).to_contain_text("opted out")
    expect(channel_row(page, "Email").get_by_role("heading")).to_contain_text("opted in")

    # Do not disturb on every channel.
    page.get_by_role("button", name="Do Not Disturb (all channels)").click()
    expect(page.get_by_text("Do not disturb (all channels): on")).to_be_visible()
    console.assert_accessible(page)

    # The opportunity moves to "discontinued": the flow opts out of everything.
    with org.client() as api:
        event = api.post("/api/v1/events", json={"name": "pipeline.stage_changed", "contact_id": contact_id,
                                                  "data": {"stage": "discontinued"}})
        assert event.status_code == 202, event.text
    page.reload()
    expect(channel_row(page, "Email").get_by_role("heading")).to_contain_text("opted out")
    page.get_by_role("link", name="Consent history").click()
    expect(page.locator("ol.timeline")).to_contain_text("email · " + email + ": opted in → opted out")


def test_autoplay_marketing_off_a_bulk_flow_skips_the_contact_a_reply_still_goes(
        console: Console, library: Library, server: Server) -> None:
    org = api_org(server, library)
    page = console.sign_in(person=library.add_person(org.org.id))
    phone = fresh_number()
    contact_id = new_contact(page, "Otto Autoplay", phone)
    record(page, "Texts", "Opt In", date="2026-11-01", time="10:00", method="web_form", evidence="Signup form")
    expect(page.get_by_role("status")).to_have_text("Opted in (Texts).")
    page.get_by_role("button", name="Marketing off").click()
    expect(page.get_by_role("status")).to_have_text("Marketing off.")
    expect(page.get_by_text("Marketing: off")).to_be_visible()

    # The marketing drip comes to its first text a day later and skips this contact.
    with org.client() as api:
        enrolled = api.post(f"/api/v1/contacts/{contact_id}/enrollments", json={"flow": "welcome_drip"})
        assert enrolled.status_code == 201, enrolled.text
    library.system.flows.run_due(library.system.uows, datetime.now(UTC) + timedelta(days=1, hours=1))
    assert not [m for m in library.messages(org.org.id, phone, direction="out") if m["purpose"] == "marketing"]
    page.get_by_role("link", name="Automations").click()
    page.get_by_text("Steps run").click()
    expect(page.locator("ol.steps")).to_contain_text("skipped")
    expect(page.locator("ol.steps")).to_contain_text("marketing")

    # A one-to-one message still goes.
    page.get_by_role("link", name="Conversation").click()
    page.get_by_role("textbox", name="Message").fill("Your car is ready for pick-up.")
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_role("status")).to_have_text("Sent to the outbox.")
    expect(page.locator("li.msg-outbound").last).to_contain_text("Your car is ready for pick-up.")
    console.assert_accessible(page)


def test_movius_the_first_message_is_held_until_yes_then_goes_and_the_employee_sees_the_notes(
        console: Console, library: Library, server: Server) -> None:
    org = api_org(server, library)  # texts in consent mode (the default)
    page = console.sign_in(person=library.add_person(org.org.id))
    phone = fresh_number()
    new_contact(page, "Maya Movius", phone)
    page.get_by_role("link", name="Conversation").click()
    page.get_by_role("textbox", name="Message").fill("Hi, this is Sam about your lease renewal.")
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_role("status")).to_contain_text("Held: held until the customer replies YES")
    first = page.locator("li.msg-outbound", has_text="about your lease renewal")
    expect(first.locator(".status")).to_have_text("held until the customer replies YES")
    console.assert_accessible(page)

    assert org.sms(phone, "YES").status_code == 200
    page.reload()
    expect(first.locator(".status")).not_to_have_text("held until the customer replies YES")
    expect(page.locator("li.msg-inbound")).to_contain_text("YES")
    expect(page.locator("li.msg-employee").first).to_be_visible()
    held = [m for m in library.messages(org.org.id, phone, direction="out", audience="customer")
            if "lease renewal" in m["body"]]
    assert [m["status"] for m in held] != ["held"], held


def night_zone(now: datetime) -> str:
    """A fixed-offset zone where it is between 03:00 and 04:00 at `now` (inside quiet hours)."""
    offset = (3 - now.hour) % 24
    if offset > 12:
        offset -= 24
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{-offset:+d}"  # Etc/GMT+3 is UTC-3


def test_the_conversation_shows_the_policys_answer_deferred_by_quiet_hours_and_denied_after_opt_out(
        console: Console, library: Library, server: Server) -> None:
    org = api_org(server, library, quiet_hours=True)
    page = console.sign_in(person=library.add_person(org.org.id))
    phone = fresh_number()
    contact_id = new_contact(page, "Nina Night", phone)
    with org.client() as api:
        assert api.patch(f"/api/v1/contacts/{contact_id}", json={"time_zone": night_zone(datetime.now(UTC))}
                         ).status_code == 200
    page.reload()
    record(page, "Texts", "Opt In", date="", time="", method="verbal", evidence="On the phone just now")
    expect(page.get_by_role("status")).to_have_text("Opted in (Texts).")

    page.get_by_role("link", name="Conversation").click()
    page.get_by_role("textbox", name="Message").fill("Your appointment is confirmed.")
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_role("status")).to_contain_text("Deferred:")
    expect(page.get_by_role("status")).to_contain_text("quiet hours")
    expect(page.locator("li.msg-outbound", has_text="appointment is confirmed").locator(".status")
           ).to_contain_text("deferred until")

    assert org.sms(phone, "STOP").status_code == 200
    page.get_by_role("textbox", name="Message").fill("One more thing")
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_role("alert")).to_contain_text("Not sent:")
    expect(page.get_by_role("alert")).to_contain_text("opted out")
    assert not [m for m in library.messages(org.org.id, phone, direction="out") if m["body"] == "One more thing"]
    console.assert_accessible(page)


def test_without_javascript_every_form_still_works(console: Console) -> None:
    page = console.sign_in("agent", javascript=False)
    phone = fresh_number()
    contact_id = new_contact(page, "Noah Noscript", phone)
    record(page, "Calls", "Opt In", date="2026-11-03", time="11:00", method="verbal", evidence="At the desk")
    expect(page.get_by_role("status")).to_have_text("Opted in (Calls).")
    page.get_by_role("button", name="Do Not Disturb (Texts)").click()
    expect(page.get_by_role("status")).to_have_text("Do not disturb on (text).")
    page.goto(console.url(f"/console/contacts/{contact_id}/conversation"))
    page.get_by_role("textbox", name="Message").fill("Hello")
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_role("alert")).to_contain_text("Not sent:")  # do not disturb
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def test_do_not_contact_marks_with_their_reasons_a_supervisor_lifts_a_bounce_never_a_complaint(
        console: Console, library: Library, server: Server) -> None:
    org = api_org(server, library)
    phone = fresh_number()
    bounced, complained = f"b{phone[1:]}@example.com", f"c{phone[1:]}@example.com"
    contact_id = library.handle(c.CreateContact(org.org.id, name="Dora Dnc", phones=(phone,),
                                                emails=(bounced, complained))).contact_id
    library.handle(c.ReportMailFeedback(org.org.id, (
        c.MailFeedback(bounced, complaint=False, evidence="550 5.1.1 no such user"),
        c.MailFeedback(complained, complaint=True, evidence="feedback loop report")), source="test"))
    library.handle(c.AddSuppression(org.org.id, org.org.agent, phone, "on the national do-not-call list",
                                    channel=Channel.TEXT))
    with org.client() as dialler:
        call = dialler.post("/api/v1/attempts", json={"number": phone, "outcome": "no_answer"})
        assert call.status_code == 201, call.text

    # An agent sees each mark with its reason, and why lifting it is not theirs to do.
    agent = console.sign_in(person=library.add_person(org.org.id), width=375)
    agent.goto(console.url(f"/console/contacts/{contact_id}"))
    bounce_row = email_row(agent, bounced)
    expect(bounce_row.get_by_role("heading")).to_contain_text("do not contact")
    expect(bounce_row).to_contain_text("the email address bounced permanently")
    expect(bounce_row.locator("dd").nth(1)).to_have_text("–")  # the consent's method: the mark is no consent
    expect(bounce_row.get_by_role("button", name="Lift do-not-contact (Email)")).to_be_disabled()
    expect(bounce_row).to_contain_text("only a supervisor can take an address off do-not-contact")
    texts = channel_row(agent, "Texts")
    expect(texts.get_by_role("heading")).to_contain_text("suppressed")
    expect(texts).to_contain_text("on the national do-not-call list")
    console.assert_accessible(agent)
    assert fits_width(agent, 375)
    # The contact's language, set in the edit form (at a phone's width too).
    agent.get_by_role("link", name="Edit").click()
    agent.get_by_label(re.compile("^Language")).select_option("Spanish")
    console.assert_accessible(agent)
    assert fits_width(agent, 375)
    agent.get_by_role("button", name="Save").click()
    expect(agent.get_by_role("status")).to_have_text("Contact saved.")
    expect(agent.locator("#flags")).to_contain_text("Language: Spanish")
    agent.get_by_role("link", name="Conversation").click()
    expect(agent.locator("li.msg-outbound", has_text="call placed by a dialler").locator(".status")
           ).to_have_text("dialled: no answer")
    console.assert_accessible(agent)
    assert fits_width(agent, 375)

    # A supervisor lifts the bounce with evidence; the complaint stays, and the page says why.
    supervisor = console.sign_in(person=library.add_person(org.org.id, "supervisor"))
    supervisor.goto(console.url(f"/console/contacts/{contact_id}"))
    complaint_row = email_row(supervisor, complained)
    expect(complaint_row).to_contain_text("the recipient reported our email as spam")
    expect(complaint_row.get_by_role("button", name="Lift do-not-contact (Email)")).to_be_disabled()
    expect(complaint_row).to_contain_text("complained about our messages; only a reset")
    bounce_row = email_row(supervisor, bounced)
    bounce_row.locator("summary", has_text="Lift do-not-contact").click()
    bounce_row.get_by_label(re.compile("why the address can take messages again")).fill(
        "The customer says the mailbox works again")
    console.assert_accessible(supervisor)
    bounce_row.get_by_role("button", name="Lift do-not-contact (Email)").click()
    expect(supervisor.get_by_role("status")).to_have_text("Do-not-contact lifted (Email).")
    expect(email_row(supervisor, bounced).get_by_role("heading")).not_to_contain_text("do not contact")
    assert library.consent(org.org.id, bounced, Channel.EMAIL).do_not_contact is None
    assert library.consent(org.org.id, complained, Channel.EMAIL).do_not_contact == "complained"
    lifted = [e for e in library.ledger(org.org.id, bounced) if e["trigger"] == "do_not_contact_off"]
    assert [e["evidence"] for e in lifted] == ["The customer says the mailbox works again"]
