"""The console's pages for employees' notes, supervisors, admins, reports and flows, through the
real server: role checks on the server (an agent gets 403 on admin pages and actions), CSRF,
inline validation errors, and the actions going through the same service functions as the API."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import httpx

from e2e.conftest import PEOPLE, Library, Server, sign_in_form_token, signed_in_client
from optflow.domain import commands as c
from optflow.domain.model import Actor, ActorKind, Channel, Mode

ADMIN_PAGES = ("/console/admin/settings", "/console/admin/templates", "/console/admin/people")
SUPERVISOR_PAGES = ("/console/queues", "/console/reports")
ADMIN_ACTIONS = ("/console/admin/settings", "/console/admin/templates", "/console/admin/templates/preview",
                 "/console/admin/people", "/console/admin/people/1/role", "/console/admin/people/1/password",
                 "/console/admin/people/1/revoke")


def settings_of(library: Library, org_id: int):  # type: ignore[no-untyped-def]
    with library.system.bus.uow(read_only=True) as uow:
        return uow.orgs.settings(org_id)


def test_an_agent_gets_403_on_admin_and_supervisor_pages_and_actions(server: Server, library: Library) -> None:
    before = settings_of(library, server.org_id)
    with signed_in_client(server, "agent") as (client, csrf):
        for path in (*ADMIN_PAGES, *SUPERVISOR_PAGES):
            assert client.get(path).status_code == 403, path
        for path in (*ADMIN_ACTIONS, "/console/queues/unassociated/1/link"):
            answer = client.post(path, data={"csrf_token": csrf, "group_text": "on", "name": "Eve", "role": "admin",
                                             "email": "eve@e2e.test", "source": "x"})
            assert answer.status_code == 403, path
        for path in ("/console/inbox", "/console/flows", "/console/flows/welcome_drip"):
            assert client.get(path).status_code == 200, path
    with signed_in_client(server, "supervisor") as (client, csrf):
        for path in ADMIN_PAGES:
            assert client.get(path).status_code == 403, path
        assert client.post("/console/admin/people", data={"csrf_token": csrf, "name": "Eve", "role": "admin",
                                                          "email": "eve2@e2e.test"}).status_code == 403
        for path in SUPERVISOR_PAGES:
            assert client.get(path).status_code == 200, path
    assert settings_of(library, server.org_id) == before


def test_a_form_without_its_csrf_token_is_refused(server: Server, library: Library) -> None:
    with signed_in_client(server, "admin") as (client, _csrf):
        answer = client.post("/console/admin/settings", data={"program_name": "Hijacked"})
        assert answer.status_code == 403 and "security token" in answer.text
        assert client.post("/console/admin/people", data={"name": "Eve", "role": "admin",
                                                          "email": "eve3@e2e.test"}).status_code == 403
    assert settings_of(library, server.org_id).program_name != "Hijacked"


def _settings_form(client: httpx.Client, org_id: int | None = None) -> dict[str, str]:
    """Every field of the settings page as the browser would send it (checkboxes: only the ticked)."""
    page = client.get("/console/admin/settings" + (f"?org={org_id}" if org_id else "")).text
    form = page[page.index('action="/console/admin/settings"'):]
    fields: dict[str, str] = {}
    for tag in re.findall(r"<input [^>]+>", form):
        name = re.search(r'name="([^"]+)"', tag)
        if not name:
            continue
        if 'type="checkbox"' in tag:
            if " checked" in tag:
                fields[name[1]] = "on"
            continue
        value = re.search(r'value="([^"]*)"', tag)
        fields[name[1]] = value[1] if value else ""
    for name, body in re.findall(r'<textarea id="[^"]+" name="([^"]+)"[^>]*>([^<]*)</textarea>', form):
        fields[name] = body
    for name, options in re.findall(r'<select id="[^"]+" name="([^"]+)"[^>]*>(.*?)</select>', form, re.S):
        chosen = re.search(r'<option value="([^"]*)" selected>', options) or re.search(r'<option value="([^"]*)"',
                                                                                       options)
        fields[name] = chosen[1] if chosen else ""
    return fields


def test_group_messaging_is_refused_in_consent_mode_beside_the_field_and_nothing_is_saved(
        server: Server, library: Library) -> None:
    org = library.new_org()
    email, password = library.add_person(org.id, "admin")
    with signed_in_client(server, person=(email, password)) as (client, _):
        form = _settings_form(client)
        assert form["mode_text"] == "consent"
        refused = client.post("/console/admin/settings", data={**form, "group_text": "on",
                                                               "program_name": "Changed too"})
        assert refused.status_code == 422
        error = re.search(r'<p class="field-error" id="err-group_messaging" role="alert">([^<]+)</p>', refused.text)
        assert error and "group messaging cannot be enabled on text while it runs in consent mode" in error[1]
        assert 'id="group_text" name="group_text" checked aria-invalid="true"' in refused.text  # as sent
        assert settings_of(library, org.id).group_messaging == {}
        assert settings_of(library, org.id).program_name != "Changed too"  # nothing of the form was saved

        saved = client.post("/console/admin/settings", data={**form, "group_text": "on", "mode_text": "disclaimer"})
        assert saved.status_code == 303
        after = settings_of(library, org.id)
        assert after.group_messaging[Channel.TEXT] is True and after.mode(Channel.TEXT) is Mode.DISCLAIMER

        clash = client.post("/console/admin/settings", data={**_settings_form(client), "keywords": "en opt_out: yes"})
        assert clash.status_code == 422 and 'id="err-keywords"' in clash.text and "yes" in clash.text
        bad_number = client.post("/console/admin/settings", data={**_settings_form(client), "pin_ttl_minutes": "ten"})
        assert bad_number.status_code == 422 and "&#39;ten&#39; is not a whole number" in bad_number.text


def test_a_sub_organisation_is_edited_by_its_parents_admin_and_inherits_the_rest(
        server: Server, library: Library) -> None:
    from optflow.service_layer import admin

    parent = library.new_org(program_name="Parent programme")
    with library.system.bus.uow() as uow:
        child = admin.create_org(uow, "Branch", datetime.now(UTC), parent_id=parent.id)
        uow.commit()
    email, password = library.add_person(parent.id, "admin")
    with signed_in_client(server, person=(email, password)) as (client, _):
        form = _settings_form(client, child)
        assert form["program_name"] == "Parent programme"
        assert client.post("/console/admin/settings", data={**form, "help_contact": "call 555"}).status_code == 303
        with library.system.bus.uow(read_only=True) as uow:
            assert uow.orgs.own_settings(child) == {"help_contact": "call 555"}  # the rest still inherited
        assert client.get(f"/console/admin/settings?org={server.org_id}").status_code == 404  # not under it


def test_template_preview_uses_the_sandbox_and_says_what_is_wrong(server: Server, library: Library) -> None:
    with signed_in_client(server, "admin") as (client, csrf):
        name = "customer/help"
        source = "Help from {{ org_name }}, {{ contact_name }}"
        ok = client.post("/console/admin/templates/preview", headers={"HX-Request": "true"},
                         data={"csrf_token": csrf, "name": name, "source": source})
        assert ok.status_code == 200 and "Help from E2E Motors, Alex Sample" in ok.text and "field-error" not in ok.text
        bad = client.post("/console/admin/templates/preview", headers={"HX-Request": "true"},
                          data={"csrf_token": csrf, "name": name, "source": "{{ ''.__class__.__mro__ }}"})
        assert bad.status_code == 200 and 'class="field-error"' in bad.text
        refused = client.post("/console/admin/templates", data={"csrf_token": csrf, "name": name,
                                                               "source": "{{ unknown_thing }}"})
        assert refused.status_code == 422 and "unknown variable" in refused.text
        whole_page = client.post("/console/admin/templates/preview", data={"csrf_token": csrf, "name": name,
                                                                          "source": "Plain {{ org_name }}"})
        assert whole_page.status_code == 200 and "<h1>Message templates" in whole_page.text
        saved = client.post("/console/admin/templates", data={"csrf_token": csrf, "name": name,
                                                             "source": "Ask {{ help_contact }}"})
        assert saved.status_code == 303
        assert settings_of(library, server.org_id).templates[name] == "Ask {{ help_contact }}"
        cleared = client.post("/console/admin/templates", data={"csrf_token": csrf, "name": name, "source": ""})
        assert cleared.status_code == 303 and name not in settings_of(library, server.org_id).templates


def test_an_admin_adds_a_person_who_can_then_sign_in_and_changes_their_role(server: Server, library: Library) -> None:
    email = f"new.{library.new_number()[1:]}@e2e.test"
    with signed_in_client(server, "admin") as (client, csrf):
        added = client.post("/console/admin/people", data={"csrf_token": csrf, "name": "Newbie", "role": "agent",
                                                           "email": email})
        assert added.status_code == 200
        password = re.search(r'<code id="new-password">([^<]+)</code>', added.text)
        assert password
        with library.system.bus.uow(read_only=True) as uow:
            person = uow.agents.by_email(email)
        assert person is not None and person.role == "agent"
        changed = client.post(f"/console/admin/people/{person.id}/role",
                              data={"csrf_token": csrf, "role": "supervisor"})
        assert changed.status_code == 303
        revoked = client.post(f"/console/admin/people/{person.id}/revoke", data={"csrf_token": csrf})
        assert revoked.status_code == 303
        with library.system.bus.uow(read_only=True) as uow:
            after = uow.agents.get(person.id)
        assert after is not None and after.role == "supervisor" and after.revoked_at is not None
        with library.system.bus.uow(read_only=True) as uow:
            me = uow.agents.by_email(PEOPLE["admin"][0])
        assert me is not None
        mine = client.post(f"/console/admin/people/{me.id}/role", data={"csrf_token": csrf, "role": "agent"})
        assert mine.status_code == 409 and "yourself" in mine.text
    with httpx.Client(base_url=server.base_url, timeout=15) as client:
        token = sign_in_form_token(client)
        assert client.post("/console/sign-in", data={"csrf_token": token, "email": email,
                                                     "password": password[1]}).status_code == 303


def test_the_inbox_queues_reports_and_flows_pages(server: Server, library: Library) -> None:
    org = library.new_org()
    email, password = library.add_person(org.id, "supervisor", name="Sue")
    with library.system.bus.uow(read_only=True) as uow:
        sue = uow.agents.by_email(email)
    assert sue is not None
    phone = library.new_number()
    contact = library.handle(c.CreateContact(org.id, name="Pat", phones=(phone,))).contact_id
    library.handle(c.SendMessage(org.id, contact, Channel.TEXT, "Your quote is ready",
                                 Actor(ActorKind.AGENT, str(sue.id), "supervisor")))
    stranger = library.new_number()
    server.sms(stranger, "who is this?", To=org.number)
    with signed_in_client(server, person=(email, password)) as (client, _):
        inbox = client.get("/console/inbox")
        assert inbox.status_code == 200 and "1 unread" in inbox.text and "Your message is held" in inbox.text
        queues = client.get("/console/queues")
        assert "who is this?" in queues.text and "held until the customer replies YES" in queues.text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', queues.text)[1]  # type: ignore[index]
        message_id = library.messages(org.id, stranger)[0]["id"]
        linked = client.post(f"/console/queues/unassociated/{message_id}/link", data={"csrf_token": csrf,
                                                                                     "contact": phone})
        assert linked.status_code == 303
        assert library.messages(org.id, stranger)[0]["contact_id"] == contact
        reports = client.get("/console/reports")
        assert reports.status_code == 200 and '<svg class="chart"' in reports.text and "<title" in reports.text
        csv = client.get("/console/reports?format=csv")
        assert csv.headers["content-type"].startswith("text/csv")
        assert csv.text.splitlines()[0] == "period_start,opt_ins,opt_outs,requests,reauthorizations"
        assert client.get("/console/reports?from=2026-13-01").status_code == 422
        flow = client.get("/console/flows/welcome_drip", params={"contact": phone})
        assert flow.status_code == 200 and "Dry run" in flow.text and "End:" in flow.text
        assert client.get("/console/flows/no_such_flow").status_code == 404


def test_passwords_are_never_in_the_people_page_unless_just_made(server: Server) -> None:
    with signed_in_client(server, "admin") as (client, _):
        page = client.get("/console/admin/people").text
        assert PEOPLE["agent"][1] not in page and "argon2" not in page and 'id="new-password"' not in page
