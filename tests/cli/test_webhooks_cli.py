"""`optflow webhooks`: register a CRM's endpoint, see its events' delivery log with every attempt,
redeliver one; bad input gets one clear line. Real processes, a real receiver on 127.0.0.1 that
verifies signatures with the `standardwebhooks` library."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from conftest import run_cli as optflow
from fakes.event_receiver import EventReceiver


def test_add_deliver_log_and_redeliver(tmp_path: Path) -> None:
    assert optflow(tmp_path, "init").returncode == 0
    with EventReceiver(failures=1) as receiver:
        added = optflow(tmp_path, "webhooks", "add", receiver.url, "--events", "consent.changed,marketing.changed",
                        "--description", "CRM")
        assert added.returncode == 0, added.stderr
        match = re.search(r"signing secret \(Standard Webhooks\): (whsec_\S+)", added.stdout)
        assert match, added.stdout
        receiver.secret = match.group(1)
        assert optflow(tmp_path, "webhooks", "secret", "1").stdout.strip() == receiver.secret
        listing = optflow(tmp_path, "webhooks", "list").stdout
        assert "consent.changed,marketing.changed" in listing and receiver.url in listing and "active" in listing

        assert optflow(tmp_path, "contacts", "add", "--name", "Sam", "--phone", "+14155552671").returncode == 0
        changed = optflow(tmp_path, "consent", "marketing-off", "1", "--as", "1")
        assert changed.returncode == 0, changed.stderr
        dnd = optflow(tmp_path, "consent", "dnd-on", "1", "--channel", "call", "--as", "1")
        assert dnd.returncode == 0, dnd.stderr  # not an event this endpoint wants

        now = datetime.now(UTC)
        first = optflow(tmp_path, "run-due", "--at", now.isoformat())
        assert "webhooks: 0 delivered, 1 to retry" in first.stdout, first.stdout
        second = optflow(tmp_path, "run-due", "--at", (now + timedelta(seconds=30)).isoformat())
        assert "webhooks: 1 delivered" in second.stdout, second.stdout

        log = optflow(tmp_path, "webhooks", "deliveries", "1", "--payload")
        assert log.returncode == 0, log.stderr
        lines = log.stdout.splitlines()
        assert re.fullmatch(r"delivery 1  marketing\.changed  optflow-ledger-1-\d+  delivered", lines[0]), lines
        assert re.fullmatch(r"    attempt 1  \S+ \S+  500", lines[1]) and re.fullmatch(r"    attempt 2  \S+ \S+  200",
                                                                                          lines[2]), lines
        assert '"marketing_allowed": false' in lines[3]

        again = optflow(tmp_path, "webhooks", "redeliver", "1")
        assert again.returncode == 0 and "queued delivery 2 of event optflow-ledger-1-" in again.stdout, again.stderr
        assert "1 delivered" in optflow(tmp_path, "run-due").stdout
    assert [event.answered for event in receiver.received] == [500, 200, 200]
    assert all(event.verified for event in receiver.received), [event.error for event in receiver.received]
    assert len({event.webhook_id for event in receiver.received}) == 1

    removed = optflow(tmp_path, "webhooks", "remove", "1")
    assert removed.returncode == 0 and "removed endpoint 1" in removed.stdout
    assert "crm/consent-events" not in optflow(tmp_path, "webhooks", "list").stdout
    assert "delivery 2" in optflow(tmp_path, "webhooks", "deliveries", "1").stdout  # the log stays


def test_webhooks_input_errors_are_one_clear_line(tmp_path: Path) -> None:
    assert optflow(tmp_path, "init").returncode == 0
    for args, message in (
        (("add", "ftp://crm.example/x"), "must be an http:// or https:// address"),
        (("add", "https://crm.example/x", "--events", "consent.changed,lead.created"),
         "unknown event type(s) 'lead.created'"),
        (("add", "https://crm.example/x", "--events", " , "), "name one or more of"),
        (("redeliver", "999"), "no event delivery 999"),
        (("deliveries", "7"), "no event endpoint 7"),
        (("remove", "7"), "no event endpoint 7"),
    ):
        result = optflow(tmp_path, "webhooks", *args)
        assert result.returncode in (1, 2), result.stdout
        assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
