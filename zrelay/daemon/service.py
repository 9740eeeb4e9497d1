"""``zrelay daemon``: the loop that keeps the fleet true without anyone typing a command.

Once a second (or sooner, when a run ends or a signal comes) the loop asks the timetable
(zrelay.lifecycle.timetable, pure) which runs are due and which the budgets allow, starts them
(zrelay.daemon.runs: the one engine, as the commands run it), and writes the timetable into the
state store (zrelay.daemonstate) for ``status``, the TUI and ``run-now``. Every
``survey_every`` seconds it lists every target (as ``status`` does) for the TUI's matrix and the
metrics (lag, RPO, coverage).

Connections live as long as the daemon (a no-change cycle costs listings only); a host that
drops is reconnected by the next run that needs it, host keys verified as always.

Signals: SIGTERM (and SIGINT) stop starting runs, let the running ones finish for up to
``stop_timeout`` seconds, then cancel them (streams stop; targets are left as they were or
resumable) and exit 0. SIGHUP reloads the inventory: validated first; a broken one is logged
(file:line:column) and the one in force stays.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import signal
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from zrelay.daemon.logs import EventLog
from zrelay.daemon.metrics import DaemonMetrics, MetricsServer
from zrelay.daemon.notify import RunReport, notify
from zrelay.daemon.runs import RunResult, run_one
from zrelay.daemonstate import DaemonStore, ScheduleRow
from zrelay.drillstate import last_drills
from zrelay.engine import Fleet
from zrelay.errors import ZrelayError
from zrelay.events import Event, JobFinished, Outcome, TransferFinished, TransferProgress, TransferStarted
from zrelay.inventory import Inventory, load_inventory
from zrelay.inventory.model import Host, Job
from zrelay.lifecycle import timetable
from zrelay.lifecycle.timetable import Entry, History, Key

#: Seconds between looks at the timetable and the run-now requests (a request waits at most this).
TICK = 1.0
#: A persistent connection sends an SSH keepalive this often unless the inventory sets
#: ServerAliveInterval: a silently dropped connection is noticed before a run needs it.
KEEPALIVE = 30


def with_keepalive(inventory: Inventory) -> Inventory:
    """The inventory with ``ServerAliveInterval`` set on every host that has none."""
    hosts: dict[str, Host] = {}
    for name, host in inventory.hosts.items():
        if "ServerAliveInterval" in host.ssh_options:
            hosts[name] = host
        else:
            hosts[name] = dataclasses.replace(host, ssh_options={**host.ssh_options,
                                                                 "ServerAliveInterval": KEEPALIVE})
    return dataclasses.replace(inventory, hosts=hosts)


def history_dict(history: History) -> dict[str, Any]:
    return dataclasses.asdict(history)


def history_from(data: dict[str, Any]) -> History:
    names = {f.name for f in dataclasses.fields(History)}
    return History(**{k: v for k, v in data.items() if k in names})


class Daemon:
    """One daemon over one inventory file (reloaded on SIGHUP)."""

    def __init__(self, inventory_path: Path, inventory: Inventory, *, state_path: Path, log: EventLog,
                 metrics_address: str | None = None) -> None:
        self.inventory_path = inventory_path
        self.inventory = with_keepalive(inventory)
        self.settings = inventory.settings.daemon
        self.state_path = state_path
        self.log = log
        self.metrics = DaemonMetrics()
        self.metrics_address = metrics_address if metrics_address is not None else self.settings.metrics
        self.server: MetricsServer | None = None
        self.entries: list[Entry] = timetable.entries(inventory)
        self.histories: dict[Key, History] = {}
        self.running: dict[Key, tuple[asyncio.Task[RunResult], tuple[str, ...]]] = {}
        self.fleet = Fleet(self.inventory)
        self._old_fleets: list[tuple[Fleet, set[asyncio.Task[RunResult]]]] = []
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._reload = False
        self._survey: asyncio.Task[None] | None = None
        self._last_survey = 0.0
        self._notices: set[asyncio.Future[None]] = set()
        self._surveyed: dict[tuple[str, str], dict[str, Any]] = {}   # (job, target) → survey entry
        self._transfers: dict[tuple[str, str, str], int] = {}
        self.store: DaemonStore | None = None

    # --- the loop ----------------------------------------------------------------------

    async def serve(self) -> int:
        """Run until SIGTERM/SIGINT; 0 when stopped by a signal, as a service manager expects."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop, signum)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        self.store = store = DaemonStore(self.state_path)
        self.histories = {key: history_from(data) for key, data in store.histories().items()}
        if self.metrics_address:
            self.server = MetricsServer(self.metrics, self.metrics_address)
            host, port = self.server.start()
            self.log.info("metrics endpoint listening", address=f"{host}:{port}")
        store.register(str(self.inventory_path), self.metrics_address)
        self.metrics.inventory_loaded(True, time.time())
        self.log.info("daemon started", inventory=str(self.inventory_path), runs=len(self.entries),
                      jobs=len(self.inventory.jobs), hosts=len(self.inventory.hosts))
        try:
            while not self._stop.is_set():
                wake_at = self.tick(time.time())
                self._wake.clear()
                delay = TICK if wake_at is None else min(TICK, max(0.0, wake_at - time.time()))
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=max(delay, 0.05))
                except asyncio.TimeoutError:
                    pass
            await self.shutdown()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
            if self.server is not None:
                self.server.stop()
            store.stopped()
            store.close()
        return 0

    def stop(self, signum: int | None = None) -> None:
        if not self._stop.is_set():
            name = signal.Signals(signum).name if signum is not None else "stop"
            self.log.info(f"{name}: stopping", running=len(self.running),
                          stop_timeout=f"{self.settings.stop_timeout}s")
        self._stop.set()
        self._wake.set()

    def reload(self) -> None:
        self._reload = True
        self._wake.set()

    def tick(self, now: float) -> float | None:
        """One look at the timetable: reload if asked, serve run-now, start what is due.
        Returns when the next run is due (None: nothing planned)."""
        assert self.store is not None
        if self._reload:
            self._reload = False
            self._do_reload(now)
        self._take_requests(now)
        running = {key: hosts for key, (_, hosts) in self.running.items()}
        choice = timetable.choose(self.entries, self.histories, running, now, self.settings)
        for entry in choice.start:
            self._start(entry, now)
        self._save_schedule(now)
        if self._survey is None and now - self._last_survey >= self.settings.survey_every:
            self._last_survey = now
            self._survey = asyncio.create_task(self.survey())
            self._survey.add_done_callback(lambda _t: setattr(self, "_survey", None))
        return choice.wake_at

    def _start(self, entry: Entry, now: float) -> None:
        job = next(j for j in self.inventory.jobs if j.name == entry.job)
        self.histories[entry.key] = timetable.started(self.histories.get(entry.key, History()), now)
        self.metrics.run_started(entry.job, entry.kind)
        self.log.info("run started", job=entry.job, kind=entry.kind, why=entry.schedule.text)
        task = asyncio.create_task(run_one(self.inventory, job, entry.kind, self.fleet,
                                           state_path=self.state_path, events=self._event,
                                           lock_wait=self.settings.lock_wait))
        self.running[entry.key] = (task, entry.hosts)
        task.add_done_callback(functools.partial(self._finished, entry))

    def _finished(self, entry: Entry, task: asyncio.Task[RunResult]) -> None:
        self.running.pop(entry.key, None)
        now = time.time()
        if task.cancelled():
            result = RunResult(entry.job, entry.kind, Outcome.FAILED,
                               "stopped by the daemon's shutdown", (), 0,
                               self.histories.get(entry.key, History()).last_started or now, now, "stopped")
        elif (exc := task.exception()) is not None:
            result = RunResult(entry.job, entry.kind, Outcome.FAILED,
                               f"{type(exc).__name__}: {exc}", (), 0, now, now, type(exc).__name__)
        else:
            result = task.result()
        outcome = result.outcome.value
        self.histories[entry.key] = timetable.finished(self.histories.get(entry.key, History()), outcome,
                                                       result.message, now, park=result.parked)
        self.metrics.run_finished(entry.job, entry.kind, outcome, result.seconds, result.nbytes, now,
                                  result.error_kind)
        log = self.log.error if outcome in ("failed", "refused") else self.log.info
        log("run finished", job=entry.job, kind=entry.kind, outcome=outcome, bytes=result.nbytes,
            seconds=round(result.seconds, 1), **({"error": result.message} if result.message
                                                 and outcome not in ("ok", "noop") else {}))
        report = RunReport(entry.job, entry.kind, result.targets, outcome, result.nbytes, result.seconds,
                           result.message if outcome not in ("ok", "noop") else "", result.started,
                           result.finished)
        if not task.cancelled():
            notice = asyncio.ensure_future(notify(self.settings.notify, report,
                                                  lambda line: self.log.warning(line)))
            self._notices.add(notice)
            notice.add_done_callback(self._notices.discard)
            if entry.kind != "snapshot":
                self._survey_after(entry.job)
        self._wake.set()

    def _event(self, event: Event) -> None:
        """Engine events: one log line per stream start/end and result; bytes for the metrics."""
        if isinstance(event, (TransferStarted, TransferFinished, JobFinished)):
            self.log.event(event)
        if isinstance(event, TransferStarted):
            self._transfers[(event.job, event.target, event.stream)] = 0
        elif isinstance(event, TransferProgress):
            key = (event.job, event.target, event.stream)
            self.metrics.transfer(event.job, event.target, event.done - self._transfers.get(key, 0))
            self._transfers[key] = event.done
        elif isinstance(event, TransferFinished):
            key = (event.job, event.target, event.stream)
            self.metrics.transfer(event.job, event.target, event.done - self._transfers.pop(key, 0))
        self.metrics.transfers_running(len(self._transfers))

    # --- run-now, the schedule, the survey ------------------------------------------------

    def _take_requests(self, now: float) -> None:
        assert self.store is not None
        for request in self.store.take_requests(now):
            keys = self.matching(request.patterns, request.kinds)
            for key in keys:
                self.histories[key] = timetable.requested(self.histories.get(key, History()), now)
            answer = (f"{len(keys)} run(s) requested: " + ", ".join(f"{j} {k}" for j, k in keys)
                      if keys else "no scheduled run matches")
            self.store.answer(request.id, answer)
            self.log.info("run-now", patterns=" ".join(request.patterns) or "*", answer=answer)

    def matching(self, patterns: Iterable[str], kinds: Iterable[str]) -> list[Key]:
        """The entries of the jobs ``patterns`` names (all: none given), of ``kinds`` (all: none)."""
        patterns, kinds = list(patterns), set(kinds)
        try:
            jobs = {j.name for j in self.inventory.jobs_matching(patterns)}
        except ZrelayError:
            return []
        return [e.key for e in self.entries if e.job in jobs and (not kinds or e.kind in kinds)]

    def _save_schedule(self, now: float) -> None:
        assert self.store is not None
        rows = []
        for entry in self.entries:
            history = self.histories.get(entry.key, History())
            leader = self.histories.get((entry.job, entry.schedule.follows)) if entry.schedule.follows else None
            nxt = timetable.next_run(entry, history, leader, now, self.settings)
            running = entry.key in self.running
            self.metrics.next_run(entry.job, entry.kind, nxt.at)
            rows.append(ScheduleRow(entry.job, entry.kind, entry.schedule.text, nxt.at,
                                    "running" if running else nxt.reason, running, history_dict(history)))
        self.store.save_schedule(rows)
        self.store.heartbeat(now)

    async def survey(self, jobs: Sequence[Job] | None = None) -> None:
        """List targets (as ``status`` does) for the TUI's matrix and the lag and RPO metrics:
        every job's, with every host's datasets for the coverage metric; or, after a run, only
        ``jobs``' targets, merged into the last survey (so the matrix follows each run)."""
        from zrelay.status.audit import breaches, coverage
        from zrelay.status.collect import collect_reports
        from zrelay.status.hosts import list_datasets
        from zrelay.status.report import annotate_drill
        from zrelay.status.survey import survey_dict

        inventory, fleet = self.inventory, self.fleet.for_run()
        whole = jobs is None
        try:
            reports, listed = await asyncio.gather(
                collect_reports(fleet, inventory.jobs if jobs is None else jobs),
                asyncio.gather(*(list_datasets(fleet, h) for h in (inventory.hosts if whole else ()))))
        except ZrelayError as exc:
            self.log.warning("survey failed", error=str(exc))
            return
        finally:
            await fleet.close()
        now = time.time()
        drills = last_drills(self.state_path)   # each target's newest drill: its metrics, the TUI's rows
        fresh = {(r.job.name, str(r.target)): survey_dict(dataclasses.replace(r, row=annotate_drill(r.row, drills)))
                 for r in reports}
        if whole:
            self._surveyed = fresh
        else:
            self._surveyed.update(fresh)
        rows = list(self._surveyed.values())
        if self.store is not None:
            self.store.save_survey(rows, now)
        self.metrics.target_status(rows, now)
        if not whole:
            return
        found = {h: v for h, v in listed if isinstance(v, dict)}
        unprotected = sum(len(c.unprotected) for c in coverage(found, inventory.jobs).values())
        self.metrics.audit(unprotected, len(breaches([r.row for r in reports])))
        self.log.info("survey", targets=len(rows), unprotected=unprotected,
                      unreachable_hosts=len(listed) - len(found))

    def _survey_after(self, job_name: str) -> None:
        """A run changed what its job's targets hold: list them again (not during a full survey)."""
        job = next((j for j in self.inventory.jobs if j.name == job_name), None)
        if job is None or self._stop.is_set() or not job.targets:
            return
        task = asyncio.ensure_future(self.survey([job]))
        self._notices.add(task)
        task.add_done_callback(self._notices.discard)

    # --- reload and shutdown --------------------------------------------------------------

    def _do_reload(self, now: float) -> None:
        try:
            inventory = load_inventory(self.inventory_path)
        except ZrelayError as exc:
            self.log.error("SIGHUP: inventory refused, the one in force stays", error=str(exc))
            self.metrics.inventory_loaded(False, now)
            if self.store is not None:
                self.store.loaded(False, str(exc), now)
            return
        old = self.fleet
        self._old_fleets.append((old, {task for task, _ in self.running.values()}))
        self.inventory = with_keepalive(inventory)
        self.settings = inventory.settings.daemon
        self.entries = timetable.entries(inventory)
        self.fleet = Fleet(self.inventory)
        keys = {e.key for e in self.entries}
        # a reload is the user's answer to a refused run: every parked run may try again
        self.histories = {k: dataclasses.replace(h, parked=None) for k, h in self.histories.items() if k in keys}
        self.metrics.retain_jobs(j.name for j in inventory.jobs)
        names = {j.name for j in inventory.jobs}
        self._surveyed = {key: row for key, row in self._surveyed.items() if key[0] in names}
        self.metrics.inventory_loaded(True, now)
        if self.store is not None:
            self.store.loaded(True, "", now)
        self.log.info("SIGHUP: inventory reloaded", runs=len(self.entries), jobs=len(inventory.jobs))
        asyncio.ensure_future(self._close_when_done())

    async def _close_when_done(self) -> None:
        """Close the fleets of earlier inventories once the runs that use them have ended."""
        for fleet, tasks in list(self._old_fleets):
            if tasks:
                await asyncio.wait(tasks)
            self._old_fleets.remove((fleet, tasks))
            await fleet.close()

    async def shutdown(self) -> None:
        tasks = [task for task, _ in self.running.values()]
        if tasks:
            self.log.info("waiting for running runs", runs=len(tasks), timeout=f"{self.settings.stop_timeout}s")
            done, pending = await asyncio.wait(tasks, timeout=self.settings.stop_timeout)
            for task in pending:
                task.cancel()
            if pending:
                self.log.warning("stop timeout: interrupting runs (targets stay as they were or resumable)",
                                 runs=len(pending))
                await asyncio.wait(pending)
        if self._survey is not None:
            self._survey.cancel()
            await asyncio.gather(self._survey, return_exceptions=True)
        if self._notices:
            await asyncio.wait(self._notices, timeout=self.settings.notify.timeout + 5)
        if self.store is not None:
            self._save_schedule(time.time())
        for fleet, _ in self._old_fleets:
            await fleet.close()
        await self.fleet.close()
        self.log.info("daemon stopped")
