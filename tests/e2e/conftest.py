"""End-to-end fixtures: the real `optflow serve` in a subprocess on 127.0.0.1, driven over HTTP.

The database is prepared through the library before the server starts (org with a known Twilio
auth token and chat secret, one token per role); each test then makes its own contacts with
fresh phone numbers so tests never see each other's state.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text
from twilio.request_validator import RequestValidator

from optflow.adapters import db, orm
from optflow.bootstrap import System, bootstrap
from optflow.config import Config
from optflow.domain.commands import Command
from optflow.domain.model import Actor, ActorKind, Channel, Consent
from optflow.service_layer import admin, console_auth
from optflow.service_layer.unit_of_work import UnitOfWork

REPO = Path(__file__).resolve().parents[2]
TWILIO_TOKEN = "e2e-twilio-auth-token-0123456789"
CHAT_SECRET = "e2e-chat-secret"
ORG_NUMBER = "+12025550123"
ROLES = ("agent", "supervisor", "admin")
# Each role's console sign-in (email, password) in the shared org.
PEOPLE = {role: (f"{role}@e2e.test", f"e2e-password-of-{role}") for role in ROLES}
_numbers = itertools.count(100)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fresh_number() -> str:
    """A valid, unused US number for one test (415-555-01xx style numbers are valid)."""
    n = next(_numbers)
    return f"+1415{(2000000 + n * 7) % 10000000:07d}"


@dataclass
class Server:
    base_url: str
    org_id: int
    tokens: dict[str, str]
    database_url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    twilio_token: str = TWILIO_TOKEN
    chat_secret: str = CHAT_SECRET
    org_number: str = ORG_NUMBER
    _sids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def client(self, role: str | None = "agent") -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=15)

    def next_sid(self) -> str:
        return f"SM{next(self._sids):032x}"

    def twilio_post(self, params: dict[str, str], *, path: str = "/webhooks/twilio/sms",
                    signature: str | None = None, sign_params: dict[str, str] | None = None) -> httpx.Response:
        """POST a form like Twilio does, signed over the public URL with the org's token."""
        url = self.base_url + path
        sig = signature if signature is not None else RequestValidator(self.twilio_token).compute_signature(
            url, sign_params if sign_params is not None else params)
        headers = {"X-Twilio-Signature": sig} if sig else {}
        with httpx.Client(timeout=15) as client:
            return client.post(url, data=params, headers=headers)

    def sms(self, from_number: str, body: str, sid: str | None = None, **extra: str) -> httpx.Response:
        params = {"From": from_number, "To": self.org_number, "Body": body, "MessageSid": sid or self.next_sid(),
                  "AccountSid": "AC" + "0" * 32, "NumMedia": "0", **extra}
        return self.twilio_post(params)


def _start(tmp: Path, extra_env: dict[str, str] | None = None, database_url: str | None = None) -> Server:
    """Serve a fresh database: a SQLite file in `tmp`, or `database_url` emptied first."""
    database_url = database_url or f"sqlite:///{tmp / 'e2e.db'}"
    engine = db.make_engine(database_url)
    db.create_schema(engine)
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            names = ", ".join(t.name for t in orm.metadata.sorted_tables)
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    now = datetime.now(UTC)
    with UnitOfWork(engine) as uow:
        org_id = admin.create_org(uow, "E2E Motors", now, numbers=(ORG_NUMBER,), settings={
            "twilio_auth_token": TWILIO_TOKEN, "chat_secret": CHAT_SECRET, "quiet_hours": False,
            "program_name": "E2E Motors alerts"})
        tokens = {}
        for role in ROLES:
            person = admin.add_agent(uow, org_id, f"{role} one", role, now)
            tokens[role] = person.token
            console_auth.set_sign_in(uow, org_id, person.id, *PEOPLE[role])
        uow.commit()
    engine.dispose()
    port = free_port()
    log_path = tmp / "server.log"
    env = {**os.environ, "OPTFLOW_FLOWS_DIR": str(REPO / "flows"), **(extra_env or {})}
    process = subprocess.Popen(
        [sys.executable, "-m", "optflow", "--database", database_url, "serve", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        stdout=log_path.open("wb"), stderr=subprocess.STDOUT, env=env, cwd=tmp,
        start_new_session=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("optflow serve exited:\n" + log_path.read_text())
        try:
            if httpx.get(base_url + "/healthz", timeout=1).status_code == 200:
                return Server(base_url, org_id, tokens, database_url, process, log_path)
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    _stop(process)
    raise RuntimeError("optflow serve did not answer /healthz within 30 s:\n" + log_path.read_text())


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = _start(tmp_path_factory.mktemp("e2e"))
    yield srv
    _stop(srv.process)


@pytest.fixture
def number() -> str:
    return fresh_number()


@pytest.fixture
def agent(server: Server) -> Iterator[httpx.Client]:
    """An API client of the shared org, with an agent's token."""
    with server.client("agent") as client:
        yield client


@pytest.fixture
def supervisor(server: Server) -> Iterator[httpx.Client]:
    """An API client of the shared org, with a supervisor's token."""
    with server.client("supervisor") as client:
        yield client


@pytest.fixture
def admin_client(server: Server) -> Iterator[httpx.Client]:
    """An API client of the shared org, with an admin's token."""
    with server.client("admin") as client:
        yield client


@dataclass(frozen=True)
class TestOrg:
    """An org made for one test, with its own texting number and one agent."""

    __test__ = False  # not a test class, whatever its name says
    id: int
    number: str
    agent: Actor


@dataclass
class Library:
    """optflow as a library on the running server's database: how tests set up state the HTTP
    surface does not (yet) offer, and how they look at what the server wrote."""

    system: System

    def new_number(self) -> str:
        return fresh_number()

    def handle(self, command: Command) -> Any:
        return self.system.bus.handle(command)

    def new_org(self, **settings: Any) -> TestOrg:
        """An org with the e2e Twilio token and chat secret, no quiet hours (tests run at any
        hour), and `settings` on top. The running server reads settings per request."""
        number = fresh_number()
        now = datetime.now(UTC)
        with UnitOfWork(self.system.engine) as uow:
            org_id = admin.create_org(uow, f"Org {number}", now, numbers=(number,), settings={
                "twilio_auth_token": TWILIO_TOKEN, "chat_secret": CHAT_SECRET, "quiet_hours": False, **settings})
            agent = admin.add_agent(uow, org_id, "Dana", "agent", now)
            uow.commit()
        return TestOrg(org_id, number, Actor(ActorKind.AGENT, str(agent.id)))

    def add_person(self, org_id: int, role: str = "agent", name: str = "Dana") -> tuple[str, str]:
        """A person of `org_id` with a console sign-in: (email, password)."""
        email, password = f"{role}.{fresh_number()[1:]}@e2e.test", "e2e-password-long-enough"
        with UnitOfWork(self.system.engine) as uow:
            agent = admin.add_agent(uow, org_id, name, role, datetime.now(UTC))
            console_auth.set_sign_in(uow, org_id, agent.id, email, password)
            uow.commit()
        return email, password

    def consent(self, org_id: int, address: str, channel: Channel = Channel.TEXT) -> Consent:
        with UnitOfWork(self.system.engine) as uow:
            return uow.consents.get(org_id, address, channel)

    def ledger(self, org_id: int, address: str) -> list[dict[str, Any]]:
        with UnitOfWork(self.system.engine) as uow:
            return [row for row in uow.ledger.entries(org_id) if row["address"] == address]

    def messages(self, org_id: int, address: str, **where: Any) -> list[dict[str, Any]]:
        """Messages to and from `address` (and notes to the employee about it), oldest first."""
        query = select(orm.messages).where(orm.messages.c.org_id == org_id, orm.messages.c.address == address)
        for column, value in where.items():
            query = query.where(orm.messages.c[column] == value)
        with self.system.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query.order_by(orm.messages.c.id)).mappings()]


@pytest.fixture(scope="session")
def library(server: Server) -> Iterator[Library]:
    system = bootstrap(Config(database_url=server.database_url, flows_dir=REPO / "flows"), create_schema=False)
    yield Library(system)
    system.close()


# ---------------------------------------------------------------- a real browser (Debian's Chromium)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _require_browser() -> None:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser tests: Debian's chromium is not installed")
        pytest.skip("no chromium here (apt-get install chromium)")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        yield chromium
        chromium.close()


# ---------------------------------------------------------------- the console, signed in


AXE = Path(__file__).with_name("vendor") / "axe-core" / "axe.min.js"


def sign_in_form_token(client: httpx.Client) -> str:
    """Open the sign-in page (which sets its CSRF cookie) and return the form's token."""
    page = client.get("/console/sign-in")
    assert page.status_code == 200
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token
    return token.group(1)


@contextlib.contextmanager
def signed_in_client(server: Server, role: str = "agent", person: tuple[str, str] | None = None,
                     ) -> Iterator[tuple[httpx.Client, str]]:
    """An HTTP client with a console session of `role` in the shared org (or of `person`: email,
    password from `Library.add_person`), and the session's CSRF token (read from a page): for
    tests of what the server answers, without a browser."""
    with httpx.Client(base_url=server.base_url, timeout=15) as client:
        yield _signed_in(client, person or PEOPLE[role])


def _signed_in(client: httpx.Client, person: tuple[str, str]) -> tuple[httpx.Client, str]:
    token = sign_in_form_token(client)
    email, password = person
    answer = client.post("/console/sign-in", data={"csrf_token": token, "email": email, "password": password})
    assert answer.status_code == 303, answer.text
    page = client.get("/console/contacts")
    assert page.status_code == 200
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf
    return client, csrf.group(1)


@dataclass
class Console:
    """Opens console pages in the browser as a person of the shared org (signed in through the
    real sign-in form), and checks pages with axe-core."""

    server: Server
    browser: Any
    pages: list[Any] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # the browser's console errors (a script failing, a CSP refusal)

    def sign_in(self, role: str = "agent", *, person: tuple[str, str] | None = None, width: int = 1280) -> Any:
        """A new browser context (its own cookies) signed in as `role` of the shared org, or as
        `person` (email, password: `Library.add_person`), on the contacts page."""
        context = self.browser.new_context(viewport={"width": width, "height": 900})
        page = context.new_page()
        self.pages.append(page)
        page.on("console", lambda message: self.errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.goto(self.server.base_url + "/console/sign-in")
        email, password = person or PEOPLE[role]
        page.get_by_label("Email").fill(email)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("heading", name="Contacts", exact=True).wait_for()
        return page

    def anonymous(self) -> Any:
        """A page of a new browser context with no session."""
        context = self.browser.new_context()
        page = context.new_page()
        self.pages.append(page)
        return page

    def url(self, path: str) -> str:
        return self.server.base_url + path

    @staticmethod
    def serious_violations(page: Any) -> list[dict[str, Any]]:
        """axe-core's serious and critical findings on the page as it is now."""
        if not page.evaluate("() => typeof window.axe !== 'undefined'"):
            # Evaluated through the DevTools protocol: the console's CSP forbids inline scripts.
            page.evaluate(AXE.read_text(encoding="utf-8"))
        result = page.evaluate("async () => (await window.axe.run(document)).violations")
        return [{"id": v["id"], "impact": v["impact"], "help": v["help"],
                 "nodes": [n["target"] for n in v["nodes"]][:5]}
                for v in result if v["impact"] in ("serious", "critical")]

    def assert_accessible(self, page: Any) -> None:
        violations = self.serious_violations(page)
        assert not violations, violations

    def close(self) -> None:
        for page in self.pages:
            page.context.close()
        assert not self.errors, self.errors


@pytest.fixture
def console(server: Server, browser: Any) -> Iterator[Console]:
    """`console.sign_in("agent")` gives a browser page signed in to the console."""
    helper = Console(server, browser)
    yield helper
    helper.close()
