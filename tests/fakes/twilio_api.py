"""A loopback stand-in for Twilio's Messages API, for tests and the benchmark.

It speaks just enough of `POST /2010-04-01/Accounts/{AccountSid}/Messages.json` for the real
`twilio` client: Basic auth, the form fields To / From / MessagingServiceSid / Body, a 201 with a
message resource, and Twilio-shaped JSON errors. It also models the two behaviours optflow must
cope with: Twilio's own opt-out list (numbers in `unsubscribed` get error 21610, as after a
recipient texts STOP to Twilio) and outages (`fail_next`).

    with FakeTwilioApi() as twilio:
        sender = TwilioSender(twilio.account_sid, twilio.auth_token, from_number="+15005550006",
                              base_url=twilio.base_url)
        ...
        assert [r.to for r in twilio.sent] == ["+14155550100"]

`sent` records every request to the Messages endpoint, refused ones included (check
`status`), so a test can prove that nothing was even attempted for an address; `accepted` holds
only the messages answered with 201.

Run as a program (`python -m fakes.twilio_api --journal FILE` with tests/ on the path), it serves
until SIGTERM, prints its base URL and credentials as one JSON line on stdout, and appends every
request it answers to FILE as a JSON line with the time it arrived: the multinode benchmark
counts the deliveries of three optflow nodes this way, from outside their processes.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import re
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, TextIO
from urllib.parse import parse_qsl

from fakes.loopback import LoopbackHttpServer, LoopbackHttpService, QuietHttpHandler

TEST_ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
TEST_AUTH_TOKEN = "fake-twilio-auth-token"
API_VERSION = "2010-04-01"
UNSUBSCRIBED_RECIPIENT = 21610

_MESSAGES_PATH = re.compile(rf"/{API_VERSION}/Accounts/(?P<sid>[^/]+)/Messages\.json")
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")


@dataclass(frozen=True)
class FakeTwilioRequest:
    """One request the fake received, and how it answered."""

    method: str
    path: str
    form: dict[str, str]
    status: int
    sid: str | None = None  # the message sid, when the message was accepted

    @property
    def to(self) -> str | None:
        return self.form.get("To")

    @property
    def from_(self) -> str | None:
        return self.form.get("From")

    @property
    def messaging_service_sid(self) -> str | None:
        return self.form.get("MessagingServiceSid")

    @property
    def body(self) -> str | None:
        return self.form.get("Body")

    @property
    def status_callback(self) -> str | None:
        return self.form.get("StatusCallback")


@dataclass
class _Reply:
    status: int
    payload: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    sid: str | None = None


class FakeTwilioApi(LoopbackHttpService):
    """Runs on 127.0.0.1 on a free port from `start()` (or `with`) until `stop()`.

    `response_delay` (seconds) holds every answer back, to exercise client timeouts or to give
    a benchmark a realistic provider latency. `unsubscribed` holds `To` values exactly as sent
    (so "whatsapp:+1..." and "+1..." are different entries).
    """

    def __init__(
        self,
        account_sid: str = TEST_ACCOUNT_SID,
        auth_token: str = TEST_AUTH_TOKEN,
        response_delay: float = 0.0,
    ) -> None:
        super().__init__(_Handler, thread_name="fake-twilio")
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.response_delay = response_delay
        self.unsubscribed: set[str] = set()
        self.refused: dict[str, int] = {}  # `To` -> the error code its create call gets (30004, 30005, ...)
        self.sent: list[FakeTwilioRequest] = []
        self.journal: TextIO | None = None  # every request as a JSON line, when set
        self._lock = threading.Lock()
        self._failures_left = 0
        self._failure_status = HTTPStatus.INTERNAL_SERVER_ERROR

    @property
    def base_url(self) -> str:
        return self.origin

    @property
    def accepted(self) -> list[FakeTwilioRequest]:
        with self._lock:
            return [request for request in self.sent if request.status == HTTPStatus.CREATED]

    def fail_next(self, count: int, status: int = HTTPStatus.INTERNAL_SERVER_ERROR) -> None:
        """Answer the next `count` requests with `status` (500, 503, 429...) before any check."""
        with self._lock:
            self._failures_left = count
            self._failure_status = HTTPStatus(status)

    def handle(self, method: str, path: str, authorization: str | None, form: dict[str, str],
               client_port: int | None = None) -> _Reply:
        """Decide the answer to one request and record it (called from the server's threads);
        `client_port`, the caller's port, goes to the journal only."""
        match = _MESSAGES_PATH.fullmatch(path)
        if match is None:
            return _error(HTTPStatus.NOT_FOUND, 20404, "No such resource in this fake")
        with self._lock:
            arrived = time.time()
            reply = self._decide(method, match["sid"], authorization, form)
            self.sent.append(FakeTwilioRequest(method, path, form, reply.status, reply.sid))
            if self.journal is not None:
                self.journal.write(json.dumps({"at": arrived, "to": form.get("To"), "body": form.get("Body"),
                                               "status": int(reply.status), "sid": reply.sid,
                                               "client_port": client_port}) + "\n")
                self.journal.flush()
        return reply

    def _decide(self, method: str, path_sid: str, authorization: str | None, form: dict[str, str]) -> _Reply:
        if self._failures_left > 0:
            self._failures_left -= 1
            return _outage(self._failure_status)
        if not self._authorized(path_sid, authorization):
            reply = _error(HTTPStatus.UNAUTHORIZED, 20003, "Credentials were missing or wrong")
            reply.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
            return reply
        if method != "POST":
            return _error(HTTPStatus.METHOD_NOT_ALLOWED, 20004, "Only POST is modelled by this fake")
        to = form.get("To", "")
        if not to:
            return _error(HTTPStatus.BAD_REQUEST, 21604, "The To parameter is required")
        if not (form.get("From") or form.get("MessagingServiceSid")):
            return _error(HTTPStatus.BAD_REQUEST, 21603, "Either From or MessagingServiceSid is required")
        if not (form.get("Body") or form.get("ContentSid")):
            return _error(HTTPStatus.BAD_REQUEST, 21602, "The Body parameter is required")
        if not _E164.fullmatch(to.removeprefix("whatsapp:")):
            return _error(HTTPStatus.BAD_REQUEST, 21211, f"The To number {to} is not a valid phone number")
        if to in self.unsubscribed:
            return _error(
                HTTPStatus.BAD_REQUEST, UNSUBSCRIBED_RECIPIENT, "The recipient has opted out of this sender"
            )
        if to in self.refused:
            return _error(HTTPStatus.BAD_REQUEST, self.refused[to], "The carrier refused this number")
        sid = "SM" + uuid.uuid4().hex
        return _Reply(HTTPStatus.CREATED, self._message_resource(sid, form), sid=sid)

    def _authorized(self, path_sid: str, authorization: str | None) -> bool:
        if path_sid != self.account_sid or authorization is None:
            return False
        scheme, _, encoded = authorization.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return user == self.account_sid and password == self.auth_token

    def _message_resource(self, sid: str, form: dict[str, str]) -> dict[str, Any]:
        now = datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{sid}.json"
        from_number = form.get("From")
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": form.get("Body", ""),
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": from_number,
            "messaging_service_sid": form.get("MessagingServiceSid"),
            "num_media": "0",
            "num_segments": "1",
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            # Twilio answers "accepted" when a messaging service still has to pick the number.
            "status": "queued" if from_number else "accepted",
            "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
            "to": form["To"],
            "uri": uri,
        }


def _error(status: HTTPStatus, code: int, message: str) -> _Reply:
    return _Reply(
        status,
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": int(status),
        },
    )


def _outage(status: HTTPStatus) -> _Reply:
    code = 20429 if status == HTTPStatus.TOO_MANY_REQUESTS else 20500
    return _error(status, code, f"Simulated outage: {status.phrase}")


class _Handler(QuietHttpHandler):
    server: LoopbackHttpServer[FakeTwilioApi]

    def do_POST(self) -> None:
        self._answer()

    def do_GET(self) -> None:
        self._answer()

    def _answer(self) -> None:
        form = dict(parse_qsl(self.read_body().decode("utf-8"), keep_blank_values=True))
        path = self.path.split("?", 1)[0]
        fake = self.server.service
        reply = fake.handle(self.command, path, self.headers.get("Authorization"), form, self.client_address[1])
        if fake.response_delay:
            time.sleep(fake.response_delay)
        self.send_json(reply.status, json.dumps(reply.payload).encode("utf-8"), reply.headers)


def main(argv: list[str] | None = None) -> None:
    """Serve the fake on 127.0.0.1 until SIGTERM or SIGINT, journaling every request."""
    parser = argparse.ArgumentParser(prog="python -m fakes.twilio_api", description=main.__doc__)
    parser.add_argument("--journal", required=True, help="file to append one JSON line per request to")
    parser.add_argument("--response-delay", type=float, default=0.0, help="seconds each answer is held back")
    args = parser.parse_args(argv)
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    with open(args.journal, "a", encoding="utf-8") as journal, \
            FakeTwilioApi(response_delay=args.response_delay) as fake:
        fake.journal = journal
        print(json.dumps({"base_url": fake.base_url, "account_sid": fake.account_sid,
                          "auth_token": fake.auth_token}), flush=True)
        stopped.wait()


if __name__ == "__main__":
    main()
