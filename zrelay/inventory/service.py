"""How ``zrelay daemon`` runs the fleet, as the user wrote it: run schedules, windows, retries, notices.

Plain data, no I/O. The loader builds these from the ``zrelay.daemon:`` section, each job's
``schedule:`` key and each S3 target's ``push:`` key; ``zrelay.lifecycle.timetable`` decides
with them (what is due, what may start), the daemon (zrelay.daemon) runs what it decides.
"""

from __future__ import annotations

from dataclasses import dataclass

from zrelay.inventory.policy import CronSpec

#: The kinds of run the daemon schedules per job, in the order one cycle of a job does them.
#: A drill (a full restore into ``drill_to``, zrelay.engine.drill) runs only where a job schedules it.
KINDS = ("snapshot", "sync", "prune", "s3-push", "drill")

#: A job's runs without a schedule of their own (and not following another kind) run this often.
DEFAULT_EVERY = 900
DEFAULT_METRICS = "127.0.0.1:9811"


@dataclass(frozen=True, slots=True)
class RunSchedule:
    """When one kind of run of a job starts.

    ``every``: seconds after the previous start of the same run; ``cron``: on each tick (UTC);
    with both, whichever comes first. ``follows``: a kind of the same job; this run starts
    after each successful run of that kind (sync after snapshot, prune after sync).
    Missed times (the daemon was down) give one run, not one per missed time.
    ``text``: as the user wrote it (or how the default was chosen), for messages.
    """

    every: int | None = None
    cron: CronSpec | None = None
    follows: str | None = None
    text: str = ""


@dataclass(frozen=True, slots=True)
class Window:
    """Runs of ``kinds`` that touch a host of ``group`` start only between ``start`` and ``end``.

    Minutes after midnight UTC; ``end`` before ``start`` wraps past midnight (22:00-06:00).
    A run that is running when the window closes is not stopped.
    """

    group: str
    start: int
    end: int
    kinds: tuple[str, ...] = KINDS
    text: str = ""

    def is_open(self, minute_of_day: int) -> bool:
        if self.start == self.end:
            return True
        if self.start < self.end:
            return self.start <= minute_of_day < self.end
        return minute_of_day >= self.start or minute_of_day < self.end


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """After a failed run: again after ``first`` s, doubling each time up to ``max`` s, at most
    ``attempts`` times; then the next regular time. A refused plan is never retried by itself."""

    first: int = 30
    max: int = 1800
    attempts: int = 8

    def delay(self, failures: int) -> int | None:
        """Seconds before the retry after the ``failures``-th failure in a row; None: no more retries."""
        if failures < 1 or failures > self.attempts:
            return None
        return min(self.max, self.first * 2 ** min(failures - 1, 30))


@dataclass(frozen=True, slots=True)
class Notify:
    """Commands run on this machine after runs, and a webhook.

    ``on_failure`` / ``on_success`` / ``on_refused``: an argv (list) or a shell line (string, run
    with ``sh -c``), with the run's job, kind, target, outcome, bytes and error in ``ZRELAY_*``
    environment variables, stopped after ``timeout`` s. ``webhook``: a URL that gets a JSON POST
    per finished run (``webhook_on``: which outcomes), retried ``webhook_retries`` times.
    """

    on_failure: tuple[str, ...] | str | None = None
    on_success: tuple[str, ...] | str | None = None
    on_refused: tuple[str, ...] | str | None = None
    timeout: int = 60
    webhook: str | None = None
    webhook_on: tuple[str, ...] = ("failed", "refused")
    webhook_retries: int = 3
    webhook_timeout: int = 10


@dataclass(frozen=True, slots=True)
class DaemonSettings:
    """The ``zrelay.daemon:`` section.

    ``jitter``: each job's scheduled times move by a fixed amount in [0, jitter) s, the same for
    a job and kind on every restart, so a fleet's runs do not all start on the same second.
    ``max_running``: runs at once over the fleet; ``per_host``: runs at once touching one host
    (as source or target); ``group_limits``: (group, N) — runs at once touching any host of the
    group (a branch office's hosts sharing one uplink). ``metrics``: ``ADDRESS:PORT`` of the Prometheus endpoint, None: off.
    ``stop_timeout``: seconds SIGTERM waits for running streams before interrupting them.
    ``survey_every``: seconds between the daemon's listings of every target (status, matrix,
    metrics) when no run has listed them.
    """

    jitter: int = 0
    max_running: int = 4
    per_host: int = 2
    group_limits: tuple[tuple[str, int], ...] = ()
    windows: tuple[Window, ...] = ()
    retry: RetryPolicy = RetryPolicy()
    notify: Notify = Notify()
    metrics: str | None = DEFAULT_METRICS
    stop_timeout: int = 30
    survey_every: int = 300
    lock_wait: int = 3600
