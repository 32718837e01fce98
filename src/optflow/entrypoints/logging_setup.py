"""Logs: one JSON object per line on stderr (`optflow serve`, `optflow worker`) or readable lines
(the other commands), through structlog, for optflow's own loggers and every library's alike.

Every line passes `redact`: phone numbers and email addresses anywhere in it are masked, and
fields that carry message text (`body`, `text`, `evidence`, `reply`, ...) are left out unless
`OPTFLOW_LOG_BODIES=1`. A line logged while an HTTP request is handled carries its `request_id`
(`bind_request_id`).
"""

from __future__ import annotations

import logging
import re
import sys
import uuid
from collections.abc import Mapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from ..domain.redaction import mask_text

REQUEST_ID_HEADER = "X-Request-ID"
BODY_FIELDS = frozenset({"body", "bodies", "text", "evidence", "reply", "replies", "message_body"})
OMITTED = "[omitted]"
# Libraries that narrate every step at INFO (each state callback, each job run).
CHATTY_LIBRARIES = ("transitions", "apscheduler.executors", "apscheduler.scheduler")
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+/=-]{0,127}")


class Redactor:
    """The structlog processor that keeps personal data out of log lines."""

    def __init__(self, log_bodies: bool = False) -> None:
        self.log_bodies = log_bodies

    def __call__(self, _logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
        return self._clean(event_dict)  # type: ignore[no-any-return]

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            return mask_text(value)
        if isinstance(value, Mapping):
            return {key: OMITTED if self._is_body(key, item) else self._clean(item) for key, item in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self._clean(item) for item in value]
        if isinstance(value, int | float | bool) or value is None:
            return value
        if isinstance(value, BaseException | logging.LogRecord):
            return value  # rendered (and then masked) by format_exc_info / the formatter
        return mask_text(str(value))

    def _is_body(self, key: Any, item: Any) -> bool:
        return not self.log_bodies and isinstance(key, str) and key.lower() in BODY_FIELDS and item is not None


_OURS = "optflow_handler"


class _CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is at the time of each record (test runners swap it)."""

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def _drop_internal_keys(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    event_dict.pop("_record", None)
    event_dict.pop("_from_structlog", None)
    return event_dict


def configure_logging(*, json: bool, level: int | str = logging.WARNING, log_bodies: bool = False,
                      stream: TextIO | None = None) -> None:
    """Send every logger's records through structlog's processors to `stream` (stderr). Safe to
    call again (each Sanic worker and the scheduler process call it when they start)."""
    redact = Redactor(log_bodies)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
    ]
    renderer: Processor = (structlog.processors.JSONRenderer() if json
                           else structlog.dev.ConsoleRenderer(colors=False))
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[_drop_internal_keys, structlog.processors.format_exc_info, redact, renderer],
    )
    handler: logging.Handler = logging.StreamHandler(stream) if stream is not None else _CurrentStderr()
    handler.setFormatter(formatter)
    setattr(handler, _OURS, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("sanic.root", "sanic.error", "sanic.access", "sanic.server", "sanic.websockets"):
        # Sanic's own handlers (when it configured them) would write plain text past ours.
        sanic_logger = logging.getLogger(name)
        for old in list(sanic_logger.handlers):
            sanic_logger.removeHandler(old)
        sanic_logger.propagate = True
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def request_id_from(header: str | None) -> str:
    """The caller's request id when it looks like one (letters, digits, `._:+/=-`, at most 128
    characters), else a new one: a header is never copied into logs unchecked."""
    if header and _SANE_REQUEST_ID.fullmatch(header.strip()):
        return header.strip()
    return uuid.uuid4().hex


def bind_request_id(request_id: str) -> None:
    """From now on in this task, every log line carries `request_id`."""
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id)


def forget_request_id() -> None:
    structlog.contextvars.clear_contextvars()
