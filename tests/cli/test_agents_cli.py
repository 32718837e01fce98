"""`optflow agents`: tokens with an expiry, listed without the token, revoked and expired from the
command line; bad input gets one clear line."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import run_cli as optflow


def token_of(output: str) -> str:
    match = re.search(r"API token \(shown once\): (\S+)", output)
    assert match, output
    return match.group(1)


def test_agents_add_list_revoke_and_expire(tmp_path: Path) -> None:
    assert optflow(tmp_path, "init").returncode == 0
    added = optflow(tmp_path, "agents", "add", "Dana", "--expires-in", "90d")
    assert added.returncode == 0, added.stderr
    token = token_of(added.stdout)
    assert "the token expires at" in added.stdout
    other = optflow(tmp_path, "agents", "add", "Lee", "--role", "supervisor")
    listing = optflow(tmp_path, "agents", "list").stdout
    assert token not in listing and token_of(other.stdout) not in listing
    [dana] = [line for line in listing.splitlines() if line.endswith("Dana")]
    assert "active" in dana and "never" in dana  # never used; it does expire
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\dZ\s+active", dana)
    dana_id = dana.split()[0]

    revoked = optflow(tmp_path, "agents", "revoke", dana_id)
    assert revoked.returncode == 0 and "revoked the token of Dana" in revoked.stdout
    [dana] = [line for line in optflow(tmp_path, "agents", "list").stdout.splitlines() if line.endswith("Dana")]
    assert "revoked" in dana

    [lee] = [line for line in optflow(tmp_path, "agents", "list").stdout.splitlines() if line.endswith("Lee")]
    expired = optflow(tmp_path, "agents", "expire", lee.split()[0], "--at", "2020-01-01T00:00:00Z")
    assert expired.returncode == 0, expired.stderr
    [lee] = [line for line in optflow(tmp_path, "agents", "list").stdout.splitlines() if line.endswith("Lee")]
    assert "expired" in lee
    assert "never" in optflow(tmp_path, "agents", "expire", lee.split()[0], "--never").stdout


def test_agents_input_errors_are_one_clear_line(tmp_path: Path) -> None:
    assert optflow(tmp_path, "init").returncode == 0
    bad = optflow(tmp_path, "agents", "add", "Dana", "--expires-in", "soon")
    assert bad.returncode == 2 and "not a duration like 90d" in bad.stderr and "Traceback" not in bad.stderr
    missing = optflow(tmp_path, "agents", "revoke", "4242")
    assert missing.returncode == 1 and "no agent with id 4242" in missing.stderr and "Traceback" not in missing.stderr
    neither = optflow(tmp_path, "agents", "expire", "1")
    assert neither.returncode == 2 and "exactly one of --in, --at and --never" in neither.stderr


def _signs_in(tmp_path: Path, email: str, password: str) -> bool:
    from datetime import UTC, datetime

    from optflow.adapters import db
    from optflow.service_layer import console_auth
    from optflow.service_layer.unit_of_work import UnitOfWork

    engine = db.make_engine(f"sqlite:///{tmp_path / 'cli.db'}")
    try:
        with UnitOfWork(engine) as uow:
            console_auth.sign_in(uow, email, password, "127.0.0.1", datetime.now(UTC))
        return True
    except console_auth.SignInRefused:
        return False
    finally:
        engine.dispose()


def test_people_get_a_console_sign_in_from_the_command_line(tmp_path: Path) -> None:
    first = optflow(tmp_path, "init")
    match = re.search(r"console sign-in: (\S+) with password \(shown once\): (\S+)", first.stdout)
    assert first.returncode == 0 and match, first.stdout
    assert _signs_in(tmp_path, match.group(1), match.group(2))

    added = optflow(tmp_path, "agents", "add", "Dana", "--email", "Dana@Example.com", "--password-stdin",
                    stdin="a long enough password\n")
    assert added.returncode == 0, added.stderr
    assert "console sign-in: dana@example.com with the password given" in added.stdout
    assert "a long enough password" not in added.stdout
    assert _signs_in(tmp_path, "dana@example.com", "a long enough password")
    dana_id = re.search(r"\(id ([0-9]+)\)", added.stdout).group(1)  # type: ignore[union-attr]

    reset = optflow(tmp_path, "agents", "password", dana_id, "--email", "dana@example.com")
    generated = re.search(r"with password \(shown once\): (\S+)", reset.stdout)
    assert reset.returncode == 0 and generated, reset.stderr
    assert not _signs_in(tmp_path, "dana@example.com", "a long enough password")
    assert _signs_in(tmp_path, "dana@example.com", generated.group(1))

    short = optflow(tmp_path, "agents", "add", "Lee", "--email", "lee@example.com", "--password-stdin", stdin="short\n")
    assert short.returncode == 1 and "at least 12 characters" in short.stderr and "Traceback" not in short.stderr
    taken = optflow(tmp_path, "agents", "add", "Lee", "--email", "DANA@example.com")
    assert taken.returncode == 1 and "already signs in" in taken.stderr
    assert "Lee" not in optflow(tmp_path, "agents", "list").stdout  # nothing half-made
