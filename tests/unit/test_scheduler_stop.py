"""The scheduler process's SIGTERM/SIGINT handler, which may run twice: a terminal's Ctrl-C
signals every process of its group, and `optflow serve` passes the signal on to the scheduler too."""

from __future__ import annotations

from apscheduler.schedulers.background import BackgroundScheduler

from optflow.entrypoints.scheduler import stopper


def test_a_second_signal_finds_the_scheduler_stopped_and_does_nothing() -> None:
    scheduler = BackgroundScheduler()
    scheduler.start()
    stop = stopper(scheduler)

    stop()
    stop()  # shutting down a stopped scheduler raises SchedulerNotRunningError

    assert not scheduler.running
