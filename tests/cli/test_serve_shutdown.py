"""`optflow serve` treats Sanic's shutdown race (its manager raising after the workers stopped) as
a normal stop, and nothing else."""

from __future__ import annotations

import pytest

from optflow.entrypoints.cli import _sanic_shutdown_race


def _get_process_states() -> None:  # named like Sanic's function that raises
    raise AttributeError("'str' object has no attribute 'get'")


def shutdown_signal() -> None:
    raise TypeError("'NoneType' object is not a mapping")


def caught(func: object) -> BaseException:
    with pytest.raises(Exception) as info:
        func()  # type: ignore[operator]
    return info.value


def test_the_race_is_recognised() -> None:
    assert _sanic_shutdown_race(caught(_get_process_states))
    while_stopping = AttributeError("raised while handling the shutdown error")
    while_stopping.__context__ = caught(shutdown_signal)
    assert _sanic_shutdown_race(while_stopping)


def test_other_errors_are_not() -> None:
    def create_app() -> None:
        raise AttributeError("a real bug")

    assert not _sanic_shutdown_race(caught(create_app))
