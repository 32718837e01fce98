"""The REST API under /api/v1: agents, supervisors and admins of one org, by API token.

Each route turns its request into a command for the message bus (or a read through a unit of
work) and its result into JSON; the routes live in `api_contacts`, `api_org` and `api_events`, what they
share in `api_common`, their bodies in `schemas`. Everything is scoped to the caller's org.
"""

from __future__ import annotations

from sanic import Blueprint
from sanic_ext.extensions.openapi.builders import SpecificationBuilder

from . import api_calls, api_contacts, api_events, api_imports, api_org
from .api_common import SECURITY_SCHEME

URL_PREFIX = "/api/v1"


def api_blueprint() -> Blueprint:
    SpecificationBuilder().add_security_scheme(
        SECURITY_SCHEME, "http", scheme="bearer",
        description="An API token from `optflow agents add` (or the first run of `optflow serve`).")
    bp = Blueprint("api_v1", url_prefix=URL_PREFIX)
    api_contacts.register(bp)
    api_org.register(bp)
    api_imports.register(bp)
    api_events.register(bp)
    api_calls.register(bp)
    return bp
