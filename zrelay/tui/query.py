"""Host queries for the TUI, on a private event loop in a background thread.

Why a thread with its own loop: SSH handshakes and listing parses cost CPU,
and an unreachable host costs up to the connect timeout; neither may ever
delay a keypress or a repaint. The UI thread only receives finished reports
(through a thread-safe callback) and can cancel a refresh that is still
waiting on slow hosts. S3 targets are read on the same loop (boto3 calls in
threads), so a dead endpoint only ever delays its own cells.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from dataclasses import replace
from typing import Any, Callable, Protocol, Sequence

from zrelay.inventory.model import Inventory, Job, Target
from zrelay.status.report import TargetReport, failed_report

Deliver = Callable[[TargetReport], None]
Done = Callable[[], None]


class Querier(Protocol):
    """What the app needs to inspect targets; tests give it canned reports."""

    def submit(self, pairs: Sequence[tuple[Job, Target]], deliver: Deliver, done: Done, full: bool) -> None: ...

    def close(self) -> None: ...


class ThreadedQuerier:
    """Inspects targets with a fresh Fleet per refresh; a new full refresh cancels the previous one."""

    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._full: concurrent.futures.Future[None] | None = None

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever, name="zrelay-tui-status",
                                            daemon=True)
            self._thread.start()
        return self._loop

    def submit(self, pairs: Sequence[tuple[Job, Target]], deliver: Deliver, done: Done, full: bool) -> None:
        loop = self._ensure_loop()
        if full and self._full is not None:
            self._full.cancel()
        future = asyncio.run_coroutine_threadsafe(self._run(list(pairs), deliver, done), loop)
        if full:
            self._full = future

    async def _run(self, pairs: list[tuple[Job, Target]], deliver: Deliver, done: Done) -> None:
        from zrelay.engine import Fleet  # here, not at import: the UI paints before asyncssh loads
        from zrelay.status.collect import inspect
        from zrelay.status.lifecycle import lifecycle_of, row_lifecycle
        from zrelay.status.s3 import S3Access

        fleet = Fleet(self.inventory)
        access = S3Access()  # one client and endpoint probe per S3 target and refresh
        lifecycles: dict[str, asyncio.Future[dict[str, Any] | None]] = {}   # once per job and refresh

        async def one(job: Job, target: Target) -> None:
            try:
                report = await inspect(fleet, job, target, access=access)
                if job.lifecycle.snapshot is not None or job.lifecycle.keep:
                    if job.name not in lifecycles:
                        lifecycles[job.name] = asyncio.ensure_future(lifecycle_of(fleet, job))
                    summary = await lifecycles[job.name]
                    report = replace(report, row=replace(report.row, lifecycle=row_lifecycle(summary, str(target))))
                deliver(report)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must show as a cell, not kill the refresh
                deliver(failed_report(job, target, "error", f"{type(exc).__name__}: {exc}", time.time()))

        try:
            await asyncio.gather(*(one(j, t) for j, t in pairs))
        finally:
            closing = asyncio.ensure_future(fleet.close())
            with contextlib.suppress(Exception, asyncio.CancelledError):  # best effort: this refresh is over
                await asyncio.wait_for(closing, timeout=5)
            done()

    def close(self) -> None:
        """Cancel what is still waiting on hosts, let it close its connections, stop the loop."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._loop = self._thread = None

        async def shutdown() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=3)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout=4)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=2)
        if not thread.is_alive():
            loop.close()
