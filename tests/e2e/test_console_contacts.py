"""The console's contact list: one search box for a name, phone number or email, pages, each
channel's consent as a badge; creating and editing a contact (through the bus, like the API)."""

from __future__ import annotations

import re
import secrets

from e2e.conftest import Server, fresh_number, signed_in_client


def test_search_by_name_phone_or_email_with_pages_and_badges(server: Server) -> None:
    tag = "Searchable" + secrets.token_hex(3)
    with signed_in_client(server) as (client, csrf):
        ids = []
        for n in range(26):
            answer = client.post("/console/contacts", data={"csrf_token": csrf, "name": f"{tag} {n:02d}"})
            assert answer.status_code == 303
            ids.append(answer.headers["location"])
        phone, email = fresh_number(), f"{tag.lower()}@example.com"
        client.post("/console/contacts", data={"csrf_token": csrf, "name": "Phone Person", "phone": phone,
                                               "email": email})

        first = client.get("/console/contacts", params={"q": tag.lower()})
        assert first.text.count(f">{tag} ") == 25 and "Next page" in first.text and "Previous page" not in first.text
        second = client.get("/console/contacts", params={"q": tag, "offset": "25"})
        assert second.text.count(f">{tag} ") == 1 and f">{tag} 25<" in second.text and "Previous page" in second.text

        national = f"({phone[2:5]}) {phone[5:8]}-{phone[8:]}"  # the same number as people type it
        by_phone = client.get("/console/contacts", params={"q": national})
        assert ">Phone Person<" in by_phone.text and tag not in by_phone.text.split("<h2")[1]
        assert "text: unknown" in by_phone.text and "email: unknown" in by_phone.text  # a badge per channel
        by_email = client.get("/console/contacts", params={"q": email.upper()})
        assert ">Phone Person<" in by_email.text
        nothing = client.get("/console/contacts", params={"q": "+1 415 000"})
        assert "No contact found." in nothing.text


def test_create_and_edit_a_contact_with_clear_errors(server: Server) -> None:
    with signed_in_client(server) as (client, csrf):
        bad = client.post("/console/contacts", data={"csrf_token": csrf, "name": "Bad Phone", "phone": "12"})
        assert bad.status_code == 422 and "is not a valid phone number" in bad.text and 'value="Bad Phone"' in bad.text
        created = client.post("/console/contacts", data={"csrf_token": csrf, "name": "Eddie Edit",
                                                         "phone": fresh_number()})
        contact = created.headers["location"]
        assert re.fullmatch(r"/console/contacts/[0-9]+", contact)
        form = client.get(contact + "/edit")
        assert 'value="Eddie Edit"' in form.text
        saved = client.post(contact + "/edit", data={"csrf_token": csrf, "name": "Edwina Edit",
                                                     "email": "edwina@example.com", "time_zone": "America/Chicago"})
        assert saved.status_code == 303 and saved.headers["location"] == contact
        page = client.get(contact)
        assert "Edwina Edit" in page.text and "Email edwina@example.com" in page.text
        assert "Contact saved." in page.text  # the flash notice, shown once
        assert "Contact saved." not in client.get(contact).text
        assert "(America/Chicago)" in page.text  # dates in the opt-in forms are in the contact's zone
        zone = client.post(contact + "/edit", data={"csrf_token": csrf, "name": "Edwina Edit",
                                                    "time_zone": "Mars/Base"})
        assert zone.status_code == 422


def api_language(server: Server, contact_id: int) -> str | None:
    with server.client() as api:
        language: str | None = api.get(f"/api/v1/contacts/{contact_id}").json()["language"]
    return language


def test_the_contacts_language_is_shown_and_set_in_the_form(server: Server) -> None:
    with signed_in_client(server) as (client, csrf):
        contact = client.post("/console/contacts", data={"csrf_token": csrf, "name": "Lucía Lang",
                                                         "phone": fresh_number(), "language": "es"}
                              ).headers["location"]
        contact_id = int(contact.rsplit("/", 1)[1])
        assert "Language: Spanish" in client.get(contact).text
        form = client.get(contact + "/edit").text
        assert '<option value="es" selected>Spanish</option>' in form  # saving the form untouched keeps it
        client.post(contact + "/edit", data={"csrf_token": csrf, "name": "Lucía Lang", "language": "pt"})
        assert "Language: Portuguese" in client.get(contact).text
        assert api_language(server, contact_id) == "pt"
        bad = client.post(contact + "/edit", data={"csrf_token": csrf, "name": "Lucía Lang", "language": "klingon"})
        assert bad.status_code == 422 and "language must be one of en, es, fr, pt" in bad.text
        client.post(contact + "/edit", data={"csrf_token": csrf, "name": "Lucía Lang", "language": ""})
        assert "Language: not known" in client.get(contact).text
        assert api_language(server, contact_id) is None
