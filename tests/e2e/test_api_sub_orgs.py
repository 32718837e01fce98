"""Movius's parent orgs over the running server's API (issue 12, item 8: "Movius"): a parent org's
admin manages its sub-orgs (list, create, read and change their settings), and the consent report
of a parent counts its sub-orgs' entries, each under the mode it was made under, with the mode
filter."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import httpx
import pytest

from e2e.helpers import API, ApiOrg, api_org, error_code
from optflow.adapters.unit_of_work import SqlUnitOfWork
from optflow.domain import commands as c
from optflow.domain.model import Actor, ActorKind, Channel
from optflow.service_layer import admin

if TYPE_CHECKING:
    from e2e.conftest import Library, Server

pytestmark = pytest.mark.e2e


def _create(client: httpx.Client, library: Library, **body: object) -> httpx.Response:
    return client.post(f"{API}/sub-orgs", json={"name": "Acme West", "numbers": [library.new_number()], **body})


def _token_in(library: Library, org_id: int, role: str) -> str:
    with SqlUnitOfWork(library.system.engine) as uow:
        token = admin.add_agent(uow, org_id, f"{role} of {org_id}", role, datetime.now(UTC)).token
        uow.commit()
    return token


def _client(server: Server, token: str) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, timeout=15, headers={"Authorization": f"Bearer {token}"})


def test_movius_a_parent_orgs_admin_creates_lists_reads_and_changes_its_sub_orgs(
        server: Server, library: Library) -> None:
    parent = api_org(server, library)
    number = library.new_number()
    with parent.client("admin") as client:
        created = client.post(f"{API}/sub-orgs", json={
            "name": "Acme West", "numbers": [f"({number[2:5]}) {number[5:8]}-{number[8:]}"],
            "settings": {"modes": {"text": "disclaimer"}, "program_name": "Acme West alerts"}})
        assert created.status_code == 201, created.text
        sub = created.json()
        listed = client.get(f"{API}/sub-orgs").json()
        read = client.get(f"{API}/sub-orgs/{sub['org_id']}/settings")
        changed = client.patch(f"{API}/sub-orgs/{sub['org_id']}/settings",
                               json={"modes": {"text": "auto"}, "program_name": None})
        parents_own = client.get(f"{API}/settings").json()
    assert created.headers["location"] == f"{API}/sub-orgs/{sub['org_id']}/settings"
    assert (sub["name"], sub["numbers"]) == ("Acme West", [number])
    assert sub["settings"]["modes"] == {"text": "disclaimer"}
    assert sub["settings"]["program_name"] == "Acme West alerts"
    assert sub["settings"]["twilio_auth_token"] == "********"  # inherited from the parent, never shown
    assert [(o["id"], o["name"], o["parent_id"], o["numbers"]) for o in listed["sub_orgs"]] == [
        (sub["org_id"], "Acme West", parent.org.id, [number])]
    assert read.status_code == 200 and read.json() == sub
    assert changed.status_code == 200, changed.text
    assert changed.json()["settings"]["modes"] == {"text": "auto"}
    # The sub-org's own program name is gone: the parent's applies again.
    assert changed.json()["settings"]["program_name"] == parents_own["settings"]["program_name"]
    assert parents_own["settings"]["modes"] == {}  # the parent's own settings are untouched


def test_movius_a_sub_orgs_settings_are_validated_as_an_orgs_own(server: Server, library: Library) -> None:
    parent = api_org(server, library)
    with parent.client("admin") as client:
        sub = _create(client, library).json()["org_id"]
        at = f"{API}/sub-orgs/{sub}/settings"
        group_in_consent = client.patch(at, json={"group_messaging": {"text": True}})
        bad_template = client.patch(at, json={"templates": {"customer/help": "{{ nope("}})
        bad_keyword = client.patch(at, json={"keywords": {"en": {"opt_out": ["yes"]}}})
        bad_mode = client.patch(at, json={"modes": {"text": "sometimes"}})
        created_bad = _create(client, library, settings={"templates": {"customer/help": "{{ nope("}})
        no_name = client.post(f"{API}/sub-orgs", json={"name": " ", "numbers": []})
        bad_number = client.post(f"{API}/sub-orgs", json={"name": "West", "numbers": ["not a number"]})
        taken = client.post(f"{API}/sub-orgs", json={"name": "West", "numbers": [parent.org.number]})
        still = client.get(at).json()
        listed = client.get(f"{API}/sub-orgs").json()["sub_orgs"]
    for refused in (group_in_consent, bad_template, bad_keyword, bad_mode, created_bad, no_name, bad_number):
        assert refused.status_code == 422, refused.text
    assert "group" in group_in_consent.json()["error"]["message"]
    assert taken.status_code == 409 and error_code(taken) == "number_taken"
    assert still["settings"]["modes"] == {} and "customer/help" not in still["settings"]["templates"]
    assert [o["id"] for o in listed] == [sub]  # nothing refused was created


def test_movius_only_the_parents_admins_manage_its_sub_orgs(server: Server, library: Library) -> None:
    parent = api_org(server, library)
    other = api_org(server, library)
    with parent.client("admin") as client:
        sub = _create(client, library).json()["org_id"]
        own_org = client.get(f"{API}/sub-orgs/{parent.org.id}/settings")
        unknown = client.get(f"{API}/sub-orgs/999999/settings")
        out_of_range = client.get(f"{API}/sub-orgs/99999999999999999999/settings")
    for role in ("agent", "supervisor"):
        with parent.client(role) as client:
            for method, path in (("GET", "/sub-orgs"), ("POST", "/sub-orgs"), ("GET", f"/sub-orgs/{sub}/settings"),
                                 ("PATCH", f"/sub-orgs/{sub}/settings")):
                response = client.request(method, API + path, json={"name": "x"} if method == "POST" else (
                    {} if method == "PATCH" else None))
                assert response.status_code == 403, (role, method, path)
                assert error_code(response) == "forbidden"
    with other.client("admin") as client:
        elsewhere = client.get(f"{API}/sub-orgs/{sub}/settings")
        elsewhere_patch = client.patch(f"{API}/sub-orgs/{sub}/settings", json={"modes": {"text": "auto"}})
        others_list = client.get(f"{API}/sub-orgs").json()["sub_orgs"]
    with _client(server, _token_in(library, sub, "admin")) as client:
        upwards = client.get(f"{API}/sub-orgs/{parent.org.id}/settings")
        subs_own = client.get(f"{API}/settings")
    for missing in (own_org, unknown, out_of_range, elsewhere, elsewhere_patch, upwards):
        assert missing.status_code == 404, missing.text
    assert error_code(elsewhere) == "org_not_found"
    assert others_list == []
    assert subs_own.status_code == 200 and subs_own.json()["org_id"] == sub


def _record_text_opt_in(library: Library, org_id: int) -> int:
    with SqlUnitOfWork(library.system.engine) as uow:
        agent = admin.add_agent(uow, org_id, "Lee", "agent", datetime.now(UTC))
        uow.commit()
    contact = library.handle(c.CreateContact(org_id, name="Kim", phones=(library.new_number(),))).contact_id
    library.handle(c.RecordOptIn(org_id, contact, Channel.TEXT, Actor(ActorKind.AGENT, str(agent.id), "agent"),
                                 method="web_form"))
    return int(contact)


def _report(parent: ApiOrg, **params: str) -> httpx.Response:
    with parent.client("supervisor") as client:
        return client.get(f"{API}/reports/consent", params=params)


def test_movius_a_parent_orgs_report_counts_its_sub_orgs_under_their_modes_and_filters_by_mode(
        server: Server, library: Library) -> None:
    parent = api_org(server, library)
    with parent.client("admin") as client:
        sub = _create(client, library, name="Acme West", settings={"modes": {"text": "disclaimer"}}).json()["org_id"]
    parents_contact = _record_text_opt_in(library, parent.org.id)
    _record_text_opt_in(library, sub)
    with parent.client("admin") as client:  # the parent changes its mode afterwards: its opt-in stays "consent"
        assert client.patch(f"{API}/settings", json={"modes": {"text": "auto"}}).status_code == 200
        [entry] = client.get(f"{API}/contacts/{parents_contact}/ledger").json()["entries"]
    assert (entry["trigger"], entry["mode"]) == ("record_opt_in", "consent")

    report = _report(parent).json()
    assert report["totals"]["opt_ins"] == 2
    assert {row["mode"]: row["opt_ins"] for row in report["by_mode"]} == {"consent": 1, "disclaimer": 1}
    assert [(row["org_id"], row["opt_ins"]) for row in report["by_org"]] == [(parent.org.id, 1), (sub, 1)]
    assert report["entries_without_mode"] == 0 and report["note"] is None and report["mode"] is None
    assert {(row["mode"], row["method"]) for row in report["by_method"]} == {
        ("consent", "web_form"), ("disclaimer", "web_form")}

    disclaimer = _report(parent, mode="disclaimer").json()
    assert disclaimer["mode"] == "disclaimer" and disclaimer["totals"]["opt_ins"] == 1
    assert [(row["org_id"], row["opt_ins"]) for row in disclaimer["by_org"]] == [(parent.org.id, 0), (sub, 1)]
    assert _report(parent, mode="auto").json()["totals"]["opt_ins"] == 0
    alone = _report(parent, include_sub_orgs="false").json()
    assert alone["totals"]["opt_ins"] == 1 and [row["org_id"] for row in alone["by_org"]] == [parent.org.id]

    as_csv = _report(parent, format="csv", mode="consent")
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert [(r["org"], r["channel"], r["mode"], r["method"], r["opt_ins"]) for r in rows if r["method"] != "*"] == [
        ("*", "text", "consent", "web_form", "1")]
    assert [r["opt_ins"] for r in rows if (r["org"], r["channel"]) == ("*", "*")] == ["1"]

    unknown_mode, bad_flag = _report(parent, mode="sometimes"), _report(parent, include_sub_orgs="yes")
    assert unknown_mode.status_code == 422 and "mode" in unknown_mode.json()["error"]["message"]
    assert bad_flag.status_code == 422
