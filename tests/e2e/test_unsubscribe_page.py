"""The one-click unsubscribe page in a real browser (Debian's Chromium driven by Playwright):
opening the link changes nothing; pressing "Stop all emails" opts the address out."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from optflow.adapters import db, orm
from optflow.adapters.unit_of_work import SqlUnitOfWork
from optflow.domain import commands as c
from optflow.domain.model import Actor, ActorKind, Channel, State
from optflow.domain.tokens import UnsubscribeTarget, make_token


def _state(database_url: str, org_id: int, email: str) -> State:
    engine = db.make_engine(database_url)
    try:
        with SqlUnitOfWork(engine) as uow:
            return uow.consents.get(org_id, email, Channel.EMAIL).state
    finally:
        engine.dispose()


def test_one_click_page_confirms_before_anything_changes(server, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from optflow.bootstrap import bootstrap
    from optflow.config import Config

    email = f"reader{datetime.now(UTC).timestamp():.0f}@example.com"
    system = bootstrap(Config(database_url=server.database_url), create_schema=False)
    try:
        contact = system.bus.handle(c.CreateContact(server.org_id, name="Reader", emails=(email,))).contact_id
        system.bus.handle(c.RecordOptIn(server.org_id, contact, Channel.EMAIL, Actor(ActorKind.AGENT, "1"),
                                        method="web_form"))
        with system.engine.connect() as conn:
            secret = conn.execute(select(orm.app_meta.c.value).where(orm.app_meta.c.key == "secret")).scalar()
    finally:
        system.close()
    token = make_token(str(secret), UnsubscribeTarget(server.org_id, email, Channel.EMAIL))
    page = browser.new_page()  # type: ignore[attr-defined]
    response = page.goto(f"{server.base_url}/unsubscribe/{token}")
    assert response.status == 200
    page.screenshot(path=str(tmp_path / "before.png"), full_page=True)
    assert _state(server.database_url, server.org_id, email) is State.OPTED_IN, "a GET must change nothing"
    buttons = page.locator("button")
    # Marketing email's link: stop marketing only (receipts still come), or every email.
    assert [buttons.nth(i).inner_text() for i in range(buttons.count())] == ["Stop marketing emails",
                                                                               "Stop all emails"]
    buttons.nth(1).click()
    page.wait_for_load_state()
    page.screenshot(path=str(tmp_path / "after.png"), full_page=True)
    assert _state(server.database_url, server.org_id, email) is State.OPTED_OUT
    assert "unsubscribed" in page.content().lower()
    forged = page.goto(f"{server.base_url}/unsubscribe/{token[:-4]}AAAA")
    assert forged.status in (400, 404)
    page.close()
