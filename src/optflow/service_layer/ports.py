"""Ports the service layer owns: what it needs from the outside, as protocols the adapters fulfil.

The renderer is here; the unit of work's repositories, the senders and the clock are the next
to move (see the import contracts in pyproject.toml)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from ..domain.languages import DEFAULT_LANGUAGE


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
