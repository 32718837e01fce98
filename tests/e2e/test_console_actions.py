"""Contact-page actions not walked in the browser tests, checked over HTTP: each goes through the
bus and comes back as a notice."""

from __future__ import annotations

import re

from e2e.conftest import Library, Server, fresh_number, signed_in_client
from e2e.helpers import api_org
from optflow.domain import commands as c
from optflow.domain.model import Channel, State


def notice(page_text: str) -> str:
    found = re.search(r'<div class="notice notice-\w+" role="\w+">([^<]*)</div>', page_text)
    assert found, page_text
    return found.group(1)


def test_quick_opt_in_needs_no_pin_and_dnd_marketing_switch_per_channel(server: Server, library: Library) -> None:
    org = api_org(server, library, pin_required=True)
    phone = fresh_number()
    with signed_in_client(server, person=library.add_person(org.org.id)) as (client, csrf):
        contact = client.post("/console/contacts", data={"csrf_token": csrf, "name": "Quinn Quick", "phone": phone}
                              ).headers["location"]
        form = {"csrf_token": csrf, "channel": "text", "address": phone}
        assert client.post(contact + "/actions/quick-opt-in", data=form).status_code == 303
        assert notice(client.get(contact).text) == "Opt-in request sent (Texts)."
        assert org.sms(phone, "YES").status_code == 200
        assert library.consent(org.org.id, phone).state is State.OPTED_IN  # no PIN step after a quick request

        client.post(contact + "/actions/dnd", data={**form, "channel": "whatsapp", "on": "on"})
        page = client.get(contact).text
        assert notice(page) == "Do not disturb on (whatsapp)."
        assert "Do Not Disturb off (WhatsApp)" in page and "Do Not Disturb off (Texts)" not in page
        client.post(contact + "/actions/marketing", data={"csrf_token": csrf})
        assert "Marketing: off" in client.get(contact).text
        client.post(contact + "/actions/marketing", data={"csrf_token": csrf, "allowed": "on"})
        assert "Marketing: on" in client.get(contact).text
        missing = client.post(contact + "/actions/no-such-action", data={"csrf_token": csrf})
        assert missing.status_code == 404
        bad_date = client.post(contact + "/actions/opt-in", data={**form, "method": "verbal", "date": "2026-13-45"})
        assert bad_date.status_code == 422 and "is not a date and time" in bad_date.text
        assert library.consent(org.org.id, phone, Channel.WHATSAPP).state is State.UNKNOWN


def test_lifting_do_not_contact_is_a_supervisors_and_never_for_a_complaint(server: Server, library: Library) -> None:
    org = api_org(server, library)
    phone = fresh_number()
    bounced, complained = f"b{phone[1:]}@example.com", f"c{phone[1:]}@example.com"
    contact_id = library.handle(c.CreateContact(org.org.id, name="Lia Lift", emails=(bounced, complained))).contact_id
    library.handle(c.ReportMailFeedback(org.org.id, (c.MailFeedback(bounced, complaint=False),
                                                     c.MailFeedback(complained, complaint=True)), source="test"))
    contact = f"/console/contacts/{contact_id}"
    lift = {"channel": "email", "address": bounced, "evidence": "The mailbox works again"}
    with signed_in_client(server, person=library.add_person(org.org.id)) as (client, csrf):
        refused = client.post(contact + "/actions/do-not-contact-lift", data={**lift, "csrf_token": csrf})
        assert refused.status_code == 403  # whatever the page showed
    assert library.consent(org.org.id, bounced, Channel.EMAIL).do_not_contact == "bounced"
    with signed_in_client(server, person=library.add_person(org.org.id, "supervisor")) as (client, csrf):
        no_reason = client.post(contact + "/actions/do-not-contact-lift",
                                data={**lift, "evidence": " ", "csrf_token": csrf})
        assert no_reason.status_code == 303 and "Refused:" in notice(client.get(contact).text)
        client.post(contact + "/actions/do-not-contact-lift", data={**lift, "address": complained, "csrf_token": csrf})
        assert "complained about our messages" in notice(client.get(contact).text)
        client.post(contact + "/actions/do-not-contact-lift", data={**lift, "csrf_token": csrf})
        assert notice(client.get(contact).text) == "Do-not-contact lifted (Email)."
    assert library.consent(org.org.id, bounced, Channel.EMAIL).do_not_contact is None
    assert library.consent(org.org.id, complained, Channel.EMAIL).do_not_contact == "complained"
