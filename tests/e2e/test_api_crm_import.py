"""CRM changes in and bulk imports through the running server: the upsert by external id with an
integration's token, and an import job the scheduler processes, with its progress and rejects."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from e2e.conftest import _start, _stop
from e2e.helpers import API, error_code
from optflow.adapters.unit_of_work import SqlUnitOfWork
from optflow.service_layer import admin

if TYPE_CHECKING:
    from e2e.conftest import Library, Server

pytestmark = pytest.mark.e2e


@pytest.fixture
def crm(server: Server, library: Library) -> Iterator[httpx.Client]:
    """A client with an integration's token (a CRM's sync) in the server's org."""
    with SqlUnitOfWork(library.system.engine) as uow:
        token = admin.add_agent(uow, server.org_id, "HubSpot sync", "integration", datetime.now(UTC)).token
        uow.commit()
    with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=15) as client:
        yield client


def ledger_of(library: Library, org_id: int, contact_id: int) -> list[dict[str, Any]]:
    with SqlUnitOfWork(library.system.engine) as uow:
        return [row for row in uow.ledger.entries(org_id) if row["contact_id"] == contact_id]


def test_upsert_by_external_id_creates_updates_and_changes_nothing_twice(
        server: Server, library: Library, crm: httpx.Client) -> None:
    phone = library.new_number()
    key = f"0031x{phone[-6:]}/A"  # a CRM id with a slash, URL-encoded
    path = f"{API}/contacts/by-external-id/{key.replace('/', '%2F')}"
    created = crm.put(path, json={"name": "Lead", "phones": [phone], "marketing_allowed": False})
    assert created.status_code == 201, created.text
    contact = created.json()
    assert (contact["external_id"], contact["marketing_allowed"]) == (key, False)
    [entry] = ledger_of(library, server.org_id, contact["id"])
    assert (entry["trigger"], entry["actor_kind"]) == ("marketing_off", "integration")

    updated = crm.put(path, json={"name": "Lead Person", "marketing_allowed": True, "emails": ["lead@example.com"]})
    assert updated.status_code == 200, updated.text
    assert updated.json()["name"] == "Lead Person" and len(updated.json()["addresses"]) == 2
    again = crm.put(path, json={"name": "Lead Person", "marketing_allowed": True, "emails": ["lead@example.com"]})
    assert again.status_code == 200 and again.json()["updated_at"] == updated.json()["updated_at"]
    assert [e["trigger"] for e in ledger_of(library, server.org_id, contact["id"])] == ["marketing_off",
                                                                                        "marketing_on"]

    found = crm.get(f"{API}/contacts", params={"external_id": key})
    assert [c["id"] for c in found.json()["contacts"]] == [contact["id"]]


@pytest.mark.parametrize(("key", "body", "status", "code"), [
    ("x" * 201, {}, 422, "invalid_external_id"),
    ("%20padded", {}, 422, "invalid_external_id"),
    ("ok", {"phones": ["not a number"]}, 422, None),
    ("%FF", {}, 422, "invalid_external_id"),
    ("%00", {}, 422, "invalid_external_id"),
    ("ok", {"marketing_allowed": "yes"}, 400, None),
])
def test_upsert_refuses_bad_input_with_a_4xx(crm: httpx.Client, key: str, body: dict[str, Any], status: int,
                                             code: str | None) -> None:
    response = crm.put(f"{API}/contacts/by-external-id/{key}", json=body)
    assert response.status_code == status, response.text
    if code:
        assert error_code(response) == code


def wait_for(client: httpx.Client, location: str) -> dict[str, Any]:
    """The import once the server's scheduler has finished it."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        job = client.get(location).json()
        if job["status"] in ("done", "failed"):
            return dict(job)
        time.sleep(0.2)
    raise AssertionError(f"the import did not finish: {job}")


def test_an_import_job_runs_off_the_request_with_progress_rejects_and_no_second_effect(
        server: Server, library: Library, agent: httpx.Client) -> None:
    first, second = library.new_number(), library.new_number()
    body = ("external_id,name,phone,channel,state,method,occurred_at,evidence\n"
            f"J-1,Ann,{first},text,opted_in,web_form,2026-01-15T08:00:00Z,signup form\n"
            f"J-2,Bob,{second},text,opted_out,,2026-02-01,\n"
            "J-3,Cy,12,text,opted_in,web_form,2026-01-15,\n")
    posted = agent.post(f"{API}/imports", params={"kind": "consents"}, content=body,
                        headers={"Content-Type": "text/csv"})
    assert posted.status_code == 202, posted.text
    assert posted.json()["rows_total"] == 3
    job = wait_for(agent, posted.headers["Location"])
    assert (job["status"], job["rows_done"], job["imported"], job["skipped"], job["rejected"]) == ("done", 3, 2, 0, 1)
    assert library.consent(server.org_id, first).opted_in_at == datetime(2026, 1, 15, 8, tzinfo=UTC)
    [entry] = library.ledger(server.org_id, first)
    assert entry["occurred_at"] == datetime(2026, 1, 15, 8, tzinfo=UTC) and entry["actor_kind"] == "agent"

    rejects = agent.get(posted.headers["Location"] + "/rejects")
    assert rejects.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(rejects.text)))
    assert rows[0][:3] == ["rejected_line", "rejected_reason", "external_id"]
    assert [(row[0], row[2]) for row in rows[1:]] == [("4", "J-3")]

    multipart = agent.post(f"{API}/imports", params={"kind": "consents"},
                           files={"file": ("consents.csv", body.encode(), "text/csv")})
    assert multipart.status_code == 202, multipart.text
    again = wait_for(agent, multipart.headers["Location"])
    assert (again["imported"], again["skipped"], again["rejected"]) == (0, 2, 1)
    assert len(library.ledger(server.org_id, first)) == 1 and len(library.ledger(server.org_id, second)) == 1


@pytest.mark.parametrize(("params", "content", "content_type", "status", "code"), [
    ({"kind": "consents"}, b"phone,channel\n+14155550100,text\n", "text/csv", 422, "invalid_input"),
    ({"kind": "consents"}, b"phone,channel,state,occurred_at\n\xe9\n", "text/csv", 422, "not_utf8"),
    ({"kind": "consents"}, b"", "text/csv", 422, "invalid_input"),
    ({"kind": "other"}, b"phone,reason\n1,x\n", "text/csv", 422, "invalid_kind"),
    ({"kind": "suppressions"}, b'{"phone": 1}', "application/json", 415, "unsupported_media_type"),
])
def test_an_import_that_cannot_be_read_is_refused_at_once(agent: httpx.Client, params: dict[str, str],
                                                          content: bytes, content_type: str, status: int,
                                                          code: str) -> None:
    response = agent.post(f"{API}/imports", params=params, content=content, headers={"Content-Type": content_type})
    assert response.status_code == status, response.text
    assert error_code(response) == code


def test_an_import_of_another_org_is_not_found(agent: httpx.Client) -> None:
    response = agent.get(f"{API}/imports/999999")
    assert response.status_code == 404 and error_code(response) == "import_not_found"


def test_an_import_may_be_larger_than_a_json_body_up_to_its_own_limit(tmp_path: Path) -> None:
    """The API's bodies stop at 64 KiB; an import streams up to OPTFLOW_MAX_IMPORT_BYTES."""
    server = _start(tmp_path, {"OPTFLOW_MAX_IMPORT_BYTES": "100000"})
    try:
        row = "+14155550100,,,a reason long enough to fill the file a little faster than a short one\n"
        header = "phone,email,channel,reason\n"
        fits = header + row * (80_000 // len(row))
        with server.client("agent") as client:
            accepted = client.post(f"{API}/imports", params={"kind": "suppressions"}, content=fits,
                                   headers={"Content-Type": "text/csv"})
            assert accepted.status_code == 202, accepted.text
            assert accepted.json()["rows_total"] == 80_000 // len(row)
            too_big = client.post(f"{API}/imports", params={"kind": "suppressions"},
                                  content=header + row * (120_000 // len(row)), headers={"Content-Type": "text/csv"})
            assert too_big.status_code == 413 and error_code(too_big) == "payload_too_large"
    finally:
        _stop(server.process)
