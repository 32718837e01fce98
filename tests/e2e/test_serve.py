"""`optflow serve` as a user runs it: from an empty directory with nothing configured, through the
banner's own curl command, the scheduler's deliveries, and a clean stop on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from twilio.request_validator import RequestValidator

from optflow.bootstrap import bootstrap
from optflow.config import Config
from optflow.domain import commands as c
from optflow.domain.model import Actor, ActorKind, Channel

pytestmark = pytest.mark.e2e

HANG_GUARD_S = 60  # not a property under test: only how long a hung server may hold the suite
CONFIG_PREFIXES = ("OPTFLOW_", "TWILIO_", "SMTP_", "CHAT_", "DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR")


@dataclass
class Serve:
    process: subprocess.Popen[bytes]
    base_url: str
    cwd: Path
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def optflow_command() -> list[str]:
    script = Path(sys.executable).parent / "optflow"
    return [str(script)] if script.exists() else [sys.executable, "-m", "optflow"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(cwd: Path, *args: str) -> Serve:
    """`optflow serve` in `cwd` with none of optflow's configuration in its environment."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(CONFIG_PREFIXES)}
    env["TMPDIR"] = str(cwd)  # so the test can see the metrics directory come and go
    log = cwd / "serve.log"
    process = subprocess.Popen([*optflow_command(), "serve", "--port", str(port), *args], cwd=cwd, env=env,
                               stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    serve = Serve(process, f"http://127.0.0.1:{port}", cwd, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError("optflow serve exited:\n" + serve.output())
        try:
            if httpx.get(serve.base_url + "/healthz", timeout=1).status_code == 200:
                return serve
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    stop(serve)
    raise AssertionError("optflow serve did not answer /healthz within 30 s:\n" + serve.output())


def stop(serve: Serve) -> None:
    """The test's own cleanup: the whole process group, whatever the test did before."""
    if serve.process.poll() is None:
        os.killpg(serve.process.pid, signal.SIGKILL)
        serve.process.wait()


def descendants(pid: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def banner_command(output: str) -> str:
    match = re.search(r"# a customer texts STOP.*?\n(.*?)\n\s*# health", output, re.S)
    assert match, "no curl command in the banner:\n" + output
    return match.group(1)


def default_org_token(cwd: Path) -> str:
    system = bootstrap(Config(database_url=f"sqlite:///{cwd / 'optflow.db'}"), create_schema=False)
    try:
        with system.bus.uow() as uow:
            token = uow.orgs.settings(1).twilio_auth_token
    finally:
        system.close()
    assert token
    return token


def test_serve_works_from_an_empty_directory_and_stops_on_sigterm(tmp_path: Path) -> None:
    serve = start(tmp_path, "--workers", "2")
    try:
        banner = serve.output()
        assert "first run: created org 1" in banner and "admin API token (shown once): of_" in banner
        # The banner names the console and the first admin's sign-in, which works.
        assert f"console: {serve.base_url}/console " in banner
        person = re.search(r"console sign-in: (\S+) with password \(shown once\): (\S+)", banner)
        assert person, banner
        with httpx.Client(base_url=serve.base_url, timeout=15) as browser:
            form = browser.get("/console/sign-in")
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
            assert csrf, form.text
            signed_in = browser.post("/console/sign-in", data={"csrf_token": csrf.group(1), "email": person.group(1),
                                                               "password": person.group(2)})
            assert signed_in.status_code == 303, signed_in.text
            assert "admin" in browser.get("/console/contacts").text

        # The banner's own command, pasted into a shell: signed at startup, so no dev flag needed.
        answer = subprocess.run(["bash", "-c", banner_command(banner)], capture_output=True, text=True, timeout=15)
        assert answer.returncode == 0, answer.stderr
        assert answer.stdout.startswith('<?xml version="1.0" encoding="UTF-8"?><Response><Message>'), answer.stdout
        assert "unsubscribed" in answer.stdout

        # Two workers, one webhook: whichever worker answers the scrape counts it exactly once.
        for _ in range(4):
            metrics = httpx.get(serve.base_url + "/metrics", timeout=5).text
            assert 'optflow_webhook_duration_seconds_count{route="twilio_sms"} 1.0' in metrics
            assert 'optflow_messages_received_total{channel="text",intent="opt_out"} 1.0' in metrics

        # An agent's opt-out queues a confirmation in the outbox; the scheduler process sends it
        # through the console sender, which writes it to the log.
        system = bootstrap(Config(database_url=f"sqlite:///{tmp_path / 'optflow.db'}"), create_schema=False)
        try:
            contact = system.bus.handle(c.CreateContact(org_id=1, name="Lee", phones=("+14155550142",))).contact_id
            agent = Actor(ActorKind.AGENT, "1")
            system.bus.handle(c.RecordOptIn(org_id=1, contact_id=contact, channel=Channel.TEXT, actor=agent,
                                            method="verbal"))
            system.bus.handle(c.OptOut(org_id=1, contact_id=contact, channel=Channel.TEXT, actor=agent))
        finally:
            system.close()
        deadline = time.monotonic() + HANG_GUARD_S  # a hang guard, not a measure of speed
        while "to +14155550142 |" not in serve.output() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "to +14155550142 |" in serve.output(), "the scheduler did not deliver the outbox:\n" + serve.output()

        children = descendants(serve.process.pid)
        assert len(children) >= 3, children  # two workers and the scheduler, at least
        assert list(tmp_path.glob("optflow-metrics-*")), "no metrics directory while running"
        serve.process.send_signal(signal.SIGTERM)  # to the main process only, as a service manager does
        # What is tested is that it stops, cleanly and completely; how fast depends on the machine's
        # load, so the limits below only keep a hang from blocking the suite.
        try:
            status = serve.process.wait(timeout=HANG_GUARD_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"optflow serve still running {HANG_GUARD_S} s after SIGTERM:\n"
                                 + serve.output()) from None
        assert status == 0, serve.output()
        deadline = time.monotonic() + HANG_GUARD_S
        while any(alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in children if alive(pid)], "workers or the scheduler outlived optflow serve"
        assert not list(tmp_path.glob("optflow-metrics-*")), "the metrics directory was left behind"
    finally:
        stop(serve)


def test_signatures_are_checked_over_the_public_url(tmp_path: Path) -> None:
    """Behind a proxy Twilio signs the public URL, not the one the server sees."""
    public = "https://sms.example.com/optflow"
    serve = start(tmp_path, "--workers", "1", "--no-scheduler", "--public-url", public)
    try:
        validator = RequestValidator(default_org_token(tmp_path))
        params = {"From": "+14155550143", "To": "+12025550123", "Body": "HELP", "MessageSid": "SM" + "1" * 32}
        url = serve.base_url + "/webhooks/twilio/sms"
        for signed_url, status in ((public + "/webhooks/twilio/sms", 200), (url, 403)):
            headers = {"X-Twilio-Signature": validator.compute_signature(signed_url, params)}
            assert httpx.post(url, data=params, headers=headers, timeout=10).status_code == status, signed_url
    finally:
        stop(serve)


def test_dev_skip_signatures_accepts_unsigned_webhooks_and_says_so(tmp_path: Path) -> None:
    serve = start(tmp_path, "--workers", "1", "--no-scheduler", "--dev-skip-signatures")
    try:
        params = {"From": "+14155550144", "To": "+12025550123", "Body": "STOP", "MessageSid": "SM" + "2" * 32}
        response = httpx.post(serve.base_url + "/webhooks/twilio/sms", data=params, timeout=10)
        assert response.status_code == 200 and "<Message>" in response.text
        output = serve.output()
        assert "WARNING: --dev-skip-signatures" in output  # in the banner
        assert "webhook signatures are NOT checked" in output  # and from the worker at startup
    finally:
        stop(serve)
