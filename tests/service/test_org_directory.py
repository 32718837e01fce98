"""A web worker remembers which org owns a number, and its settings, for a moment; a request that
fails its signature check against remembered settings is checked again against fresh ones."""

from __future__ import annotations

import pytest

from conftest import ORG_NUMBER, new_org
from optflow.bootstrap import System
from optflow.domain.model import NotFound
from optflow.domain.settings import OrgSettings
from optflow.entrypoints.errors import ApiError
from optflow.entrypoints.org_directory import OrgDirectory
from optflow.service_layer import admin

OTHER_NUMBER = "+12025550177"


class Ticks:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def set_token(system: System, org: int, token: str) -> None:
    with system.bus.uow() as uow:
        admin.update_settings(uow, system.services.renderer, org, {"twilio_auth_token": token})
        uow.commit()


def accept(settings: OrgSettings) -> None:
    """A request every settings accept."""


def requires(token: str) -> object:
    def check(settings: OrgSettings) -> None:
        if settings.twilio_auth_token != token:
            raise ApiError(403, "forbidden", "invalid signature")
    return check


def test_settings_are_remembered_for_a_moment_then_read_again(system: System) -> None:
    org = new_org(system, twilio_auth_token="first")
    ticks = Ticks()
    directory = OrgDirectory(system.bus, remember_s=1.0, clock=ticks)
    assert directory.authenticated(ORG_NUMBER, accept)[1].twilio_auth_token == "first"
    set_token(system, org, "second")
    ticks.now += 0.9
    assert directory.authenticated(ORG_NUMBER, accept)[1].twilio_auth_token == "first"
    ticks.now += 0.1
    assert directory.authenticated(ORG_NUMBER, accept)[1].twilio_auth_token == "second"


def test_a_rotated_token_is_accepted_at_once(system: System) -> None:
    org = new_org(system, twilio_auth_token="old")
    directory = OrgDirectory(system.bus, clock=Ticks())
    assert directory.authenticated(ORG_NUMBER, requires("old"))[0] == org
    set_token(system, org, "new")
    org_id, settings = directory.authenticated(ORG_NUMBER, requires("new"))
    assert (org_id, settings.twilio_auth_token) == (org, "new")
    assert directory.authenticated(ORG_NUMBER, accept)[1].twilio_auth_token == "new"  # and remembered


def test_a_request_failing_against_fresh_settings_is_refused(system: System) -> None:
    new_org(system, twilio_auth_token="right")
    directory = OrgDirectory(system.bus, clock=Ticks())
    with pytest.raises(ApiError):
        directory.authenticated(ORG_NUMBER, requires("wrong"))  # read fresh, then refused
    directory.authenticated(ORG_NUMBER, accept)
    with pytest.raises(ApiError):
        directory.authenticated(ORG_NUMBER, requires("wrong"))  # remembered, read again, refused


def test_unknown_numbers_are_not_remembered(system: System) -> None:
    org = new_org(system)
    directory = OrgDirectory(system.bus, clock=Ticks())
    with pytest.raises(NotFound):
        directory.authenticated(OTHER_NUMBER, accept)
    with system.bus.uow() as uow:
        admin.add_number(uow, org, OTHER_NUMBER)
        uow.commit()
    assert directory.authenticated(OTHER_NUMBER, accept)[0] == org
