"""Text from outside made storable.

PostgreSQL refuses the NUL character in text, and a lone UTF-16 surrogate (which JSON's `\\ud800`
escapes and lenient decoders can produce) cannot be encoded as UTF-8 at all; SQLite takes both.
A STOP must never fail to be stored because of one such character, so everything a webhook
receives goes through `storable` before it reaches the service layer: each of those characters
becomes U+FFFD (the replacement character), which keeps the evidence that something was there
and leaves classification working (`STOP\\x00` is still an opt-out).
"""

from __future__ import annotations

import re

REPLACEMENT = "\ufffd"
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str) -> str:
    """`text` with NUL and lone surrogates replaced by U+FFFD; any other text unchanged."""
    if text.isascii() and "\x00" not in text:  # nearly every message: no scan, no copy
        return text
    return _UNSTORABLE.sub(REPLACEMENT, text)

