"""The ceiling of the inbound scenario: a bare Sanic route that parses the same Twilio form and
answers TwiML of the same size as optflow's average answer, with nothing behind it (no signature
check, no database). Same Sanic, same number of workers, same load; run as its own process:
`python -m bench.bare_server --port 8001 --workers 2 --reply-bytes 180`."""

from __future__ import annotations

import argparse
import functools
from typing import Any

from sanic import Request, Sanic
from sanic.response import HTTPResponse, text
from sanic.worker.loader import AppLoader
from twilio.twiml.messaging_response import MessagingResponse

EMPTY_TWIML = len(MessagingResponse().to_xml())


def create_bare_app(reply_bytes: int) -> Sanic:
    app = Sanic("optflow_bench_ceiling")
    app.config.REQUEST_MAX_SIZE = 64 * 1024
    reply_text = "x" * max(0, reply_bytes - EMPTY_TWIML - len("<Message></Message>"))

    @app.post("/webhooks/twilio/sms")
    async def twilio_sms(request: Request) -> HTTPResponse:
        form: Any = request.get_form(keep_blank_values=True) or {}
        if not (form.get("From") and form.get("To") and form.get("MessageSid")):
            return text("missing field", status=400)
        reply = MessagingResponse()
        if reply_text and form.get("Body") is not None:
            reply.message(reply_text)
        return HTTPResponse(reply.to_xml(), content_type="text/xml; charset=utf-8")

    @app.get("/healthz")
    async def healthz(request: Request) -> HTTPResponse:
        return text("ok")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--reply-bytes", type=int, default=0, help="size of the TwiML answer")
    args = parser.parse_args()
    loader = AppLoader(factory=functools.partial(create_bare_app, args.reply_bytes))
    app = loader.load()
    app.prepare(host="127.0.0.1", port=args.port, workers=args.workers, access_log=False, motd=False)
    Sanic.serve(primary=app, app_loader=loader)


if __name__ == "__main__":
    main()
