"""Load for the inbound scenarios: a file of pre-signed Twilio webhook requests, and a load
generator in a separate process that replays it over 64 keep-alive connections to 127.0.0.1.

The generator is `wrk` (Debian's package) with `bench/inbound.lua`; where wrk is missing and
cannot be installed, a bounded Python generator (`bench.pyload`) takes its place, and the report
says so (it is slower than wrk, so it may become the bottleneck of the ceiling run).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import random
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from twilio.request_validator import RequestValidator

from .datasets import ORG_NUMBER, TWILIO_TOKEN, contact_number
from .procs import find_or_install

BENCH_DIR = Path(__file__).resolve().parent
WEBHOOK_PATH = "/webhooks/twilio/sms"

# The traffic mix: 70% ordinary replies, 15% STOP and its variants, 10% YES, 5% HELP.
ORDINARY = ("Can you call me after 5?", "What time is my appointment tomorrow?", "Thanks!", "ok",
            "Is the car ready yet?", "I'll be there at 3", "Sounds good, see you then",
            "Could you send me the quote again?", "Running 10 minutes late", "Do you have it in blue?",
            "who is this?", "Yes I got the paperwork, thank you", "Can we move it to Friday?",
            "I'll stop by tomorrow morning", "How much is the payment this month?")
STOPS = ("STOP", "stop", "Stop.", "STOPALL", "UNSUBSCRIBE", "please stop texting me", "Cancel", "QUIT", "🛑",
         "End", "remove me from your list", "alto")
YESES = ("YES", "yes", "Yes!", "YES ", "y e s")
HELPS = ("HELP", "help", "Help?", "INFO")
MIX = ((0.70, ORDINARY), (0.15, STOPS), (0.10, YESES), (0.05, HELPS))


def pick_body(rng: random.Random) -> str:
    roll = rng.random()
    for share, bodies in MIX:
        if roll < share:
            return rng.choice(bodies)
        roll -= share
    return rng.choice(ORDINARY)


def twilio_params(sender: str, body: str, sid: str) -> dict[str, str]:
    """A form as Twilio posts it for an inbound SMS (every field it sends for a plain text)."""
    return {
        "ToCountry": "US", "ToState": "DC", "SmsMessageSid": sid, "NumMedia": "0", "ToCity": "WASHINGTON",
        "FromZip": "94105", "SmsSid": sid, "FromState": "CA", "SmsStatus": "received", "FromCity": "SAN FRANCISCO",
        "Body": body, "FromCountry": "US", "To": ORG_NUMBER, "ToZip": "20001", "NumSegments": "1",
        "MessageSid": sid, "AccountSid": "AC" + "5" * 32, "From": sender, "ApiVersion": "2010-04-01",
    }


def signature(url: str, params: dict[str, str], token: str = TWILIO_TOKEN) -> str:
    """Twilio's X-Twilio-Signature: HMAC-SHA1 over the URL and the sorted name+value pairs."""
    payload = url + "".join(name + params[name] for name in sorted(params))
    return base64.b64encode(hmac.new(token.encode(), payload.encode(), hashlib.sha1).digest()).decode()


def write_requests(path: Path, url: str, count: int, contacts: int, *, seed: int, sid_prefix: str) -> None:
    """`count` requests from numbers among contacts 1..`contacts`, each with a unique MessageSid,
    signed over `url` (the server's public URL of the webhook)."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for n in range(count):
            sid = f"SM{sid_prefix}{n:0{32 - len(sid_prefix)}x}"
            params = twilio_params(contact_number(rng.randint(1, contacts)), pick_body(rng), sid)
            signed = signature(url, params)
            if n == 0 and not RequestValidator(TWILIO_TOKEN).validate(url, params, signed):
                raise AssertionError("the benchmark signs webhooks differently from the twilio library")
            out.write(f"{signed}\t{urlencode(params)}\n")


@dataclass
class LoadResult:
    tool: str
    duration_s: float
    requests: int  # responses received
    status_errors: int  # responses that were not 2xx/3xx
    socket_errors: int
    timeouts: int
    wrapped: int  # times a connection ran out of distinct requests and started over
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def ok(self) -> int:
        return self.requests - self.status_errors

    @property
    def rate(self) -> float:
        return self.ok / self.duration_s if self.duration_s else 0.0

    def as_dict(self) -> dict[str, object]:
        return {**self.__dict__, "ok": self.ok, "rate": round(self.rate, 1)}


def find_wrk(install: bool = True) -> str | None:
    """wrk's path; installs Debian's package when missing and allowed (root with apt-get)."""
    return find_or_install("wrk", ("wrk",)) if install else shutil.which("wrk")


def run_load(base_url: str, requests_file: Path, *, connections: int, duration: float, wrk: str | None,
             threads: int = 1) -> LoadResult:
    """Replay `requests_file` against the webhook for `duration` seconds from another process."""
    url = base_url + WEBHOOK_PATH
    if wrk:
        env = {**os.environ, "OPTFLOW_BENCH_REQUESTS": str(requests_file), "OPTFLOW_BENCH_THREADS": str(threads)}
        command = [wrk, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", "10s",
                   "-s", str(BENCH_DIR / "inbound.lua"), url]
        tool = "wrk"
    else:
        env = dict(os.environ)
        command = [sys.executable, "-m", "bench.pyload", "--url", url, "--requests", str(requests_file),
                   "--connections", str(connections), "--duration", str(duration)]
        tool = "python"
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=duration + 120,
                              cwd=BENCH_DIR.parent, check=False)
    for line in finished.stdout.splitlines():
        if line.startswith("OPTFLOW_BENCH_JSON "):
            data = json.loads(line.split(" ", 1)[1])
            return LoadResult(
                tool=tool, duration_s=data["duration_us"] / 1e6, requests=data["requests"],
                status_errors=data["status_errors"],
                socket_errors=data["connect_errors"] + data["read_errors"] + data["write_errors"],
                timeouts=data["timeouts"], wrapped=data["wrapped"], p50_ms=data["p50_us"] / 1000,
                p90_ms=data["p90_us"] / 1000, p99_ms=data["p99_us"] / 1000, max_ms=data["max_us"] / 1000,
            )
    raise RuntimeError(f"the load generator gave no result (exit {finished.returncode}):\n"
                       f"{finished.stdout[-2000:]}\n{finished.stderr[-2000:]}")
