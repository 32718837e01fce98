"""Ports the service layer owns: what it needs from the outside, as protocols the adapters fulfil
(the unit of work and its repositories have modules of their own: unit_of_work.py,
repositories.py). The import contracts in pyproject.toml keep the service layer off the adapters."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Protocol

from ..domain.flows import Flow
from ..domain.languages import DEFAULT_LANGUAGE
from ..domain.ledger import Checkpoint, Keyring
from ..domain.model import Channel
from ..domain.outbound import OutboundMessage, PostOutcome, SendResult


class RenderedText(Protocol):
    @property
    def text(self) -> str: ...


class Renderer(Protocol):
    """Renders the messages of `domain.templates.TEMPLATE_NAMES` in one of
    `domain.languages.SUPPORTED_LANGUAGES`: an org's override when it works, else the packaged
    text, else a built-in one. Never raises for a known name; bounded."""

    def render(self, name: str, variables: Mapping[str, object], override: str | None = None,
               language: str = DEFAULT_LANGUAGE) -> RenderedText:
        """`override` is the org's text for `language`; the packaged text is taken in `language`
        (English when the template is not translated)."""
        ...

    def check_override(self, name: str, source: str) -> str | None:
        """None when an org's template may be saved, else what is wrong with it."""


class Sender(Protocol):
    """One outbound channel: `send` returns once the provider accepted the message, or raises a
    `domain.outbound.SendError` (transient: try again later; permanent: give up on the row)."""

    channels: frozenset[Channel]

    def send(self, message: OutboundMessage) -> SendResult: ...

    def close(self) -> None: ...


class WebhookPoster(Protocol):
    """POSTs one webhook delivery, signed (with an event endpoint's own secret when its salt is
    given); never raises for what the receiver did."""

    def post(self, url: str, webhook_id: str, at: datetime, body: bytes,
             secret_salt: str | None = None) -> PostOutcome: ...

    def endpoint_secret(self, secret_salt: str) -> str:
        """The Standard Webhooks secret (`whsec_...`) of the event endpoint with this salt."""

    def close(self) -> None: ...


class LedgerFiles(Protocol):
    """The installation's ledger keys and its file of signed checkpoints (outside the database,
    so that a copy of the database alone can neither forge nor hide a change)."""

    @property
    def keyring(self) -> Keyring: ...
    @property
    def key_file(self) -> Path | None: ...
    @property
    def checkpoint_file(self) -> Path | None: ...

    def read_checkpoints(self) -> list[tuple[int, Checkpoint | str]]: ...

    def append_checkpoints(self, checkpoints: list[Checkpoint]) -> None: ...


class FlowSource(Protocol):
    """Where the flows come from: their YAML (to store with an enrolment, and to rebuild an old
    version from it) and the content templates beside them."""

    def load_text(self, text: str, file: str) -> Flow:
        """One flow from its YAML; `domain.flows.FlowValidationError` naming every problem."""

    def source_of(self, flow: Flow) -> str:
        """The YAML the flow was loaded from ("" when its file is gone)."""

    def render_content(self, name: str, variables: Mapping[str, object]) -> str | None:
        """A content template rendered in the flows' sandbox (None: no such template)."""
