"""The console's sign-in, sessions, CSRF and role checks, through the real server."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta

import httpx
from playwright.sync_api import expect
from sqlalchemy import select, update

from e2e.conftest import PEOPLE, Console, Library, Server, fresh_number, sign_in_form_token, signed_in_client
from optflow.adapters import orm

CONSOLE = "/console"


def test_the_console_needs_a_session(server: Server) -> None:
    answer = httpx.get(server.base_url + CONSOLE + "/contacts?q=x", timeout=10)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/sign-in?next=%2Fconsole%2Fcontacts%3Fq%3Dx"
    for path, to in (("/", "/console/contacts"), ("/console", "/console/contacts"), ("/console/", "/console/contacts"),
                     ("/admin", "/console/admin/settings")):
        answer = httpx.get(server.base_url + path, timeout=10)
        assert (answer.status_code, answer.headers["location"]) == (303, to), path


def test_sign_in_sets_a_safe_cookie_and_sign_out_ends_the_session(server: Server) -> None:
    with httpx.Client(base_url=server.base_url, timeout=15) as client:
        token = sign_in_form_token(client)
        email, password = PEOPLE["agent"]
        answer = client.post(CONSOLE + "/sign-in", data={"csrf_token": token, "email": email.upper(),
                                                         "password": password, "next": "/console/contacts/new"})
        assert answer.status_code == 303 and answer.headers["location"] == "/console/contacts/new"
        cookie = next(h for h in answer.headers.get_list("set-cookie") if h.startswith("optflow_session="))
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/console" in cookie
        session = client.cookies["optflow_session"]
        page = client.get(CONSOLE + "/contacts")
        assert page.status_code == 200 and "agent one" in page.text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert csrf
        assert client.post(CONSOLE + "/sign-out", data={"csrf_token": csrf.group(1)}).status_code == 303
    # The old cookie names no session any more (the row is gone, not only the cookie).
    again = httpx.get(server.base_url + CONSOLE + "/contacts", cookies={"optflow_session": session}, timeout=10)
    assert again.status_code == 303 and again.headers["location"].startswith("/console/sign-in")


def test_sign_in_goes_back_only_to_console_pages(server: Server) -> None:
    with httpx.Client(base_url=server.base_url, timeout=15) as client:
        token = sign_in_form_token(client)
        email, password = PEOPLE["agent"]
        answer = client.post(CONSOLE + "/sign-in", data={"csrf_token": token, "email": email, "password": password,
                                                         "next": "//evil.example/console/x"})
        assert answer.headers["location"] == "/console/contacts"


def test_a_wrong_password_is_refused_then_slowed(server: Server, library: Library) -> None:
    org = library.new_org()
    email, _ = library.add_person(org.id)
    with httpx.Client(base_url=server.base_url, timeout=15) as client:
        token = sign_in_form_token(client)
        statuses = []
        for _ in range(4):
            answer = client.post(CONSOLE + "/sign-in", data={"csrf_token": token, "email": email,
                                                             "password": "not the password"})
            statuses.append(answer.status_code)
        assert statuses == [401, 401, 401, 401] and "wrong email or password" in answer.text
        # The fourth failure made the account wait 15 s: an attempt meanwhile, even with the
        # right password, is answered 429 with Retry-After and the password is not checked.
        answer = client.post(CONSOLE + "/sign-in", data={"csrf_token": token, "email": email,
                                                         "password": "e2e-password-long-enough"})
        assert answer.status_code == 429
        assert int(answer.headers["retry-after"]) >= 1
        assert "try again in" in answer.text


def test_a_form_without_its_csrf_token_is_refused(server: Server) -> None:
    with signed_in_client(server) as (client, csrf):
        refused = client.post(CONSOLE + "/contacts", data={"name": "No Token"})
        assert refused.status_code == 403 and "security token" in refused.text
        wrong = client.post(CONSOLE + "/contacts", data={"name": "Wrong Token", "csrf_token": "x" * 64})
        assert wrong.status_code == 403
        done = client.post(CONSOLE + "/contacts", data={"name": "With Token", "csrf_token": csrf})
        assert done.status_code == 303 and re.fullmatch(r"/console/contacts/[0-9]+", done.headers["location"])
    # The sign-in form has its own token, tied to a cookie.
    email, password = PEOPLE["agent"]
    bare = httpx.post(server.base_url + CONSOLE + "/sign-in", data={"email": email, "password": password}, timeout=10)
    assert bare.status_code == 403


def _digest(client: httpx.Client) -> str:
    """What the database keeps of the client's session token."""
    return hashlib.sha256(client.cookies["optflow_session"].encode()).hexdigest()


def test_an_expired_session_goes_back_to_sign_in(server: Server, library: Library) -> None:
    with signed_in_client(server) as (client, csrf):
        with library.system.engine.begin() as conn:
            conn.execute(update(orm.console_sessions).where(orm.console_sessions.c.token_hash == _digest(client))
                         .values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
        answer = client.get(CONSOLE + "/contacts")
        assert answer.status_code == 303 and answer.headers["location"].startswith("/console/sign-in?next=")
        posted = client.post(CONSOLE + "/contacts", data={"name": "Late", "csrf_token": csrf})
        assert posted.status_code == 401 and "Sign in again" in posted.text


def test_sign_in_in_a_browser_is_accessible(console: Console) -> None:
    page = console.anonymous()
    page.goto(console.url(CONSOLE + "/sign-in"))
    console.assert_accessible(page)
    # With the keyboard alone: the skip link first, then the form's fields in order, Enter submits.
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Tab")  # the "optflow" link
    page.keyboard.press("Tab")
    expect(page.get_by_label("Email")).to_be_focused()
    email, password = PEOPLE["agent"]
    page.keyboard.type(email)
    page.keyboard.press("Tab")
    expect(page.get_by_label("Password")).to_be_focused()
    page.keyboard.type(password)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Contacts", exact=True)).to_be_visible()
    signed_in = console.sign_in("agent", width=375)
    console.assert_accessible(signed_in)
    signed_in.get_by_role("button", name="Sign out").click()
    signed_in.get_by_role("heading", name="Sign in").wait_for()


def test_an_agent_gets_403_on_a_supervisors_action_even_without_the_button(server: Server,
                                                                          library: Library) -> None:
    phone = fresh_number()
    with signed_in_client(server, "agent") as (agent, csrf):
        created = agent.post(CONSOLE + "/contacts", data={"name": "Role Test", "phone": phone, "csrf_token": csrf})
        contact = created.headers["location"]
        page = agent.get(contact)
        assert "only a supervisor can reset a consent" in page.text  # the button says why it is off
        form = {"channel": "text", "address": phone, "evidence": "number reassigned", "csrf_token": csrf}
        refused = agent.post(contact + "/actions/reset", data=form)
        assert refused.status_code == 403 and "needs the supervisor role" in refused.text
    with signed_in_client(server, "supervisor") as (supervisor, csrf):
        form["csrf_token"] = csrf
        done = supervisor.post(contact + "/actions/reset", data=form)
        assert done.status_code == 303
    entries = library.ledger(server.org_id, phone)
    assert [e["trigger"] for e in entries] == ["reset"]
    assert entries[0]["evidence"] == "number reassigned"


def test_console_pages_load_only_their_own_assets_and_stay_out_of_the_api_document(server: Server) -> None:
    with signed_in_client(server) as (client, _):
        page = client.get(CONSOLE + "/contacts")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assets = [s for s in sources if s.endswith((".js", ".css"))]
        assert assets == ["/console/static/console.css", "/console/static/vendor/htmx/htmx.min.js"], sources
        assert all(s.startswith(("/", "#", "data:")) and not s.startswith("//") for s in sources), sources
        for asset in assets:
            answer = client.get(asset)
            assert answer.status_code == 200 and len(answer.content) > 1000, asset
    spec = httpx.get(server.base_url + "/docs/openapi.json", timeout=10).json()
    assert not [path for path in spec["paths"] if path.startswith("/console") or path == "/"]


def test_a_session_in_use_stays_and_an_idle_one_ends(server: Server, library: Library) -> None:
    with signed_in_client(server) as (client, _):
        table = orm.console_sessions
        with library.system.engine.connect() as conn:
            row_id = conn.execute(select(table.c.id).where(table.c.token_hash == _digest(client))).scalar_one()

        def seen(minutes_ago: int) -> None:
            with library.system.engine.begin() as conn:
                conn.execute(update(table).where(table.c.id == row_id).values(
                    last_seen_at=datetime.now(UTC) - timedelta(minutes=minutes_ago)))

        seen(100)  # used 100 minutes ago: still live, and this request counts as use
        assert client.get(CONSOLE + "/contacts").status_code == 200
        with library.system.engine.connect() as conn:
            last_seen = conn.execute(select(table.c.last_seen_at).where(table.c.id == row_id)).scalar_one()
        assert datetime.now(UTC) - last_seen < timedelta(minutes=5)
        seen(121)  # over two hours without a request
        answer = client.get(CONSOLE + "/contacts")
        assert answer.status_code == 303 and answer.headers["location"].startswith("/console/sign-in")
