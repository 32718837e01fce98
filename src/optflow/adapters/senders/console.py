"""The default sender: prints each message instead of delivering it.

Calls are the exception: a printed call was not made, so a call message fails with the reason
(`not_dialled`) instead of reading `sent`. optflow does not dial; diallers use the pre-call check.

It lets `optflow serve` run with no provider configured, and shows a developer what would
have gone out. Message text is JSON-quoted so that each message stays on exactly one line.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from typing import TextIO

from optflow.domain.model import Channel
from optflow.domain.redaction import mask_address

from .base import OutboundMessage, PermanentSendError, Sender, SendResult

logger = logging.getLogger(__name__)


class ConsoleSender(Sender):
    channels = frozenset(Channel)

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream  # None: whatever sys.stdout is at send time
        self._lock = threading.Lock()  # one whole line per message, even from several threads

    def send(self, message: OutboundMessage) -> SendResult:
        if message.channel is Channel.CALL:
            # Printing a call is not placing it: the row must not read `sent`, and frequency
            # caps must not count a call nobody made.
            raise PermanentSendError(
                "optflow does not place calls: a dialler asks POST /api/v1/checks before each call and "
                "records it with POST /api/v1/attempts (docs/integrations.md)", code="not_dialled")
        line = format_console_line(message)
        logger.info("console channel printed outbox message %s to %s", message.id, mask_address(message.to))
        stream = self._stream if self._stream is not None else sys.stdout
        with self._lock:
            stream.write(line + "\n")
            stream.flush()
        return SendResult(provider_id=f"console-{message.id}")


def format_console_line(message: OutboundMessage) -> str:
    parts = [
        f"outbox #{message.id}",
        f"org {message.org_id}",
        f"{message.channel.value}/{message.purpose.value}",
        f"to {message.to}",
    ]
    if message.sender is not None:
        parts.append(f"from {message.sender}")
    if message.subject is not None:
        parts.append(f"subject {_quoted(message.subject)}")
    parts.append(_quoted(message.body))
    return " | ".join(parts)


def _quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)
