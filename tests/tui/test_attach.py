"""The TUI attached to a running daemon (Pilot, no lab): the survey instead of SSH, the schedule, run-now.

The test process registers itself as the daemon in a temporary state store and writes the
schedule and the survey as the daemon does. Every host of the inventory is a documentation
address (192.0.2.x): nothing may connect, and every socket connect is refused and recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from tests.tui.conftest import NOW, cell_text, footer_keys, scenario_reports, screen_text, wait_until
from zrelay.daemonstate import DaemonStore, ScheduleRow
from zrelay.inventory import load_inventory
from zrelay.inventory.model import Inventory
from zrelay.plan import plan
from zrelay.status.hosts import report_from_plans
from zrelay.status.survey import survey_dict
from zrelay.tui.app import ZrelayApp
from zrelay.tui.attach import (NOT_SURVEYED, SurveyQuerier, last_run_text, live_daemon, next_run_text,
                               schedule_columns, schedule_order)
from zrelay.tui.views import HelpScreen, HostsView, MatrixView, ScheduleView
from zrelay.zfs.model import DatasetState, Snapshot


def attach_inventory(tmp_path: Path) -> Inventory:
    """The fixed scenario's jobs (tests/tui/conftest.py) on documentation addresses, plus a job the
    daemon's survey does not have (``new``)."""
    hosts = {"nas1": "192.0.2.1", "nas2": "192.0.2.2", "vault": "192.0.2.3", "ghost": "192.0.2.9"}
    doc = {
        "all": {"vars": {"user": "root", "ssh_options": {"ConnectTimeout": 300}},
                "hosts": {h: {"address": a} for h, a in hosts.items()}},
        "zrelay": {
            "s3_targets": {"offsite": {"bucket": "zrelay-offsite", "endpoint": "http://192.0.2.50:9000"}},
            "jobs": [
                {"name": "data", "source": "nas1:tank/data", "recursive": True, "snapshots": {"prefix": "zrelay_"},
                 "targets": ["vault:backup/nas1/data", "nas2:tank/replica/data", "s3:offsite"]},
                {"name": "vm", "source": "nas1:tank/vm", "targets": ["vault:backup/vm"]},
                {"name": "home", "source": "nas2:tank/home", "targets": ["vault:backup/home", "ghost:tank/home"]},
                {"name": "new", "source": "nas2:tank/new", "targets": ["vault:backup/new"]},
            ]}}
    path = tmp_path / "zrelay.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_inventory(path)


SCHEDULED = time.time()   # when the schedule was written: the apps' clock stands still there


def schedule(now: float) -> list[ScheduleRow]:
    ok = {"last_outcome": "ok", "last_finished": now - 200, "failures": 0}
    return [
        ScheduleRow("vm", "sync", "every 15m", now + 252, "every 15m", False, ok),
        ScheduleRow("data", "snapshot", "every 1h", now - 5, "due", False, {}),
        ScheduleRow("home", "sync", "after snapshot", None, "follows home snapshot", False,
                    {"last_outcome": "failed", "last_finished": now - 40, "failures": 3}),
        ScheduleRow("data", "sync", "*/5 * * * *", now + 30, "running", True, ok),
    ]


@pytest.fixture
def no_connect(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every socket connect is refused and recorded: attached, nothing may reach a host."""
    attempts: list[Any] = []

    def refuse(self: socket.socket, address: Any) -> None:
        attempts.append(address)
        raise ConnectionRefusedError(f"test: no connection to {address}")

    def refuse_ex(self: socket.socket, address: Any) -> int:
        attempts.append(address)
        return 111

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse_ex)
    return attempts


Daemon = tuple[Path, Inventory, DaemonStore]


@pytest.fixture
def daemon(tmp_path: Path, utc: None) -> Iterator[Daemon]:
    """A state store in which this process is the live daemon, with a schedule made at SCHEDULED
    and a survey made at NOW."""
    inv = attach_inventory(tmp_path)
    path = tmp_path / "state.db"
    store = DaemonStore(path)
    store.register(str(inv.path), "127.0.0.1:9811")
    store.save_schedule(schedule(SCHEDULED))
    store.save_survey([survey_dict(r) for r in scenario_reports(inv).values()], now=NOW)
    try:
        yield path, inv, store
    finally:
        store.close()


def test_attached_the_survey_answers_and_nothing_connects(daemon: Daemon, no_connect: list[Any]) -> None:
    asyncio.run(_survey_answers(*daemon, no_connect))


async def _survey_answers(path: Path, inv: Inventory, store: DaemonStore, attempts: list[Any]) -> None:
    info = live_daemon(path)
    assert info is not None and info.pid == os.getpid()
    app = ZrelayApp(inv, store_path=path, attach=info, refresh_interval=None, daemon_interval=0.2,
                    clock=lambda: SCHEDULED)
    assert isinstance(app.querier, SurveyQuerier)
    async with app.run_test(size=(120, 32)) as pilot:
        await wait_until(pilot, lambda: app.survey is not None and app.survey.at == NOW and not app.pending, 10,
                         "the survey to be served")
        await pilot.press("2")
        matrix = app.query_one(MatrixView).table
        await wait_until(pilot, lambda: "nas1:tank/data/db" in matrix.row_keys, 5, "the matrix")
        app.redraw()
        assert cell_text(matrix, "nas1:tank/data/db", "l:vault") == "↓ behind 2"
        assert cell_text(matrix, "nas1:tank/data", "l:nas2") == "✗ diverged"
        assert cell_text(matrix, "nas2:tank/home", "l:ghost") == "? unreachable"
        assert cell_text(matrix, "nas1:tank/vm", "l:vault") == "∅ missing"
        assert cell_text(matrix, "nas2:tank/new", "l:vault") == "○ not checked", "a job the survey lacks"
        assert app.reports[("new", "vault:backup/new")].row.message == NOT_SURVEYED
        hosts = app.query_one(HostsView).table
        assert cell_text(hosts, "h:ghost", "state") == "? unreachable"
        assert cell_text(hosts, "h:nas1", "state") == "✓ reachable"
        text = screen_text(app)
        assert f"attached to zrelay daemon pid {os.getpid()} (zrelay.yml)" in text
        assert "matrix as of 15:06:40" in text   # NOW in UTC
        assert app.title.endswith("— matrix as of 15:06:40")

        # the daemon surveys again: vm is in sync now; the matrix follows without a key press
        vm = next(j for j in inv.jobs if j.name == "vm")
        snaps = DatasetState("tank/vm", True, (Snapshot("tank/vm", "zrelay_1", 21, 1, int(NOW)),))
        target = DatasetState("backup/vm", True, (Snapshot("backup/vm", "zrelay_1", 21, 1, int(NOW)),))
        synced = report_from_plans(vm, vm.targets[0], [plan(snaps, target)],  # type: ignore[arg-type]
                                   {"tank/vm": snaps}, {"backup/vm": target}, NOW + 300)
        reports = {**scenario_reports(inv), ("vm", "vault:backup/vm"): synced}
        store.save_survey([survey_dict(r) for r in reports.values()], now=NOW + 300)
        await wait_until(pilot, lambda: app.survey is not None and app.survey.at == NOW + 300, 10,
                         "the new survey to be read")
        await wait_until(pilot, lambda: cell_text(matrix, "nas1:tank/vm", "l:vault") == "✓ in-sync", 5,
                         "vm in sync")
        await wait_until(pilot, lambda: "matrix as of 15:11:40" in screen_text(app), 5, "the new time")
        assert app.survey is not None and app.survey.reads == 2, "the survey is parsed once per survey, not once per poll"
        await pilot.press("q")
    assert attempts == [], "attached, nothing connects"


def test_the_schedule_tab_lists_every_run_by_next_run(daemon: Daemon, no_connect: list[Any]) -> None:
    asyncio.run(_schedule_tab(*daemon))


async def _schedule_tab(path: Path, inv: Inventory, store: DaemonStore) -> None:
    app = ZrelayApp(inv, store_path=path, attach=live_daemon(path), refresh_interval=None, daemon_interval=0.2,
                    clock=lambda: SCHEDULED)
    async with app.run_test(size=(120, 32)) as pilot:
        await wait_until(pilot, lambda: app.daemon_view is not None, 10, "the daemon's tables")
        await pilot.press("4")
        assert app.active_tab == "schedule"
        table = app.query_one(ScheduleView).table
        await wait_until(pilot, lambda: len(table.row_keys) == 4, 5, "the schedule rows")
        app.redraw()
        assert table.row_keys == ["s:sync:data", "s:snapshot:data", "s:sync:vm", "s:sync:home"]
        assert cell_text(table, "s:sync:data", "next") == "running"
        assert cell_text(table, "s:snapshot:data", "next") == "due"
        assert cell_text(table, "s:sync:vm", "next") == "in 4m12s"
        assert cell_text(table, "s:sync:home", "next") == "—"
        assert cell_text(table, "s:sync:home", "last") == "failed ×3 40s ago"
        assert cell_text(table, "s:snapshot:data", "last") == "—"
        assert cell_text(table, "s:sync:home", "reason") == "follows home snapshot"
        assert cell_text(table, "s:sync:vm", "schedule") == "every 15m"
        title = str(app.query_one(ScheduleView).title.render())
        assert f"pid {os.getpid()}" in title and str(inv.path) in title
        # a refused reload is said where the schedule is
        store.loaded(False, "zrelay.yml:4:7: unknown key 'shedule'")
        await wait_until(pilot, lambda: "unknown key 'shedule'" in screen_text(app), 5, "the refused reload")
        await pilot.press("q")


def test_n_asks_the_daemon_to_run_the_selected_job(daemon: Daemon, no_connect: list[Any]) -> None:
    asyncio.run(_run_now(*daemon))


async def _run_now(path: Path, inv: Inventory, store: DaemonStore) -> None:
    app = ZrelayApp(inv, store_path=path, attach=live_daemon(path), refresh_interval=None, daemon_interval=0.2,
                    clock=lambda: SCHEDULED)
    async with app.run_test(size=(120, 32)) as pilot:
        await wait_until(pilot, lambda: app.daemon_view is not None and not app.pending, 10, "the daemon")
        await wait_until(pilot, lambda: footer_keys(app).get("n") == ("Run now", True), 5, "`n` in the footer")
        await pilot.press("4")
        table = app.query_one(ScheduleView).table
        await wait_until(pilot, lambda: len(table.row_keys) == 4, 5, "the schedule rows")
        table.move_cursor(row=table.row_keys.index("s:sync:vm"))
        await pilot.press("n")
        await wait_until(pilot, lambda: bool(app.run_now_requests), 5, "the request")
        [request] = store.take_requests()
        assert (request.patterns, request.kinds) == (("vm",), ())
        assert app.notices[-1][2] == f"asked the zrelay daemon to run vm now (request {request.id})"
        store.answer(request.id, "1 run(s) requested: vm sync")
        await wait_until(pilot, lambda: app.notices[-1][2] == "1 run(s) requested: vm sync", 5, "the answer")
        assert app.notices[-1][1] == "zrelay daemon, run vm now" and not app.run_now_requests
        # from the matrix: the cell's job
        await pilot.press("2")
        matrix = app.query_one(MatrixView).table
        await wait_until(pilot, lambda: "nas2:tank/home" in matrix.row_keys, 5, "the matrix")
        matrix.move_cursor(row=matrix.row_keys.index("nas2:tank/home"), column=1)
        await pilot.press("n")
        await wait_until(pilot, lambda: bool(app.run_now_requests), 5, "the second request")
        [request] = store.take_requests()
        assert request.patterns == ("home",)
        await pilot.press("q")


def test_a_stopped_daemon_is_said_and_its_requests_are_not_waited_for(daemon: Daemon, no_connect: list[Any]) -> None:
    asyncio.run(_stopped(*daemon))


async def _stopped(path: Path, inv: Inventory, store: DaemonStore) -> None:
    app = ZrelayApp(inv, store_path=path, attach=live_daemon(path), refresh_interval=None, daemon_interval=0.2,
                    clock=lambda: SCHEDULED)
    async with app.run_test(size=(120, 32)) as pilot:
        await wait_until(pilot, lambda: app.daemon_view is not None and not app.pending, 10, "the daemon")
        await pilot.press("4")
        await pilot.press("n")   # the cursor is on the first row: data
        await wait_until(pilot, lambda: bool(app.run_now_requests), 5, "the request")
        store.stopped()
        await wait_until(pilot, lambda: not app.run_now_requests, 5, "the request to be given up")
        assert app.notices[-1][0] == "warning" and "is not running" in app.notices[-1][2]
        await wait_until(pilot, lambda: f"daemon pid {os.getpid()} stopped" in screen_text(app), 5, "the bar")
        assert "is not running" in screen_text(app)   # the schedule's title
        await pilot.press("q")


@pytest.mark.parametrize("width", [80, 120, 200])
def test_attached_reads_at_80_120_200_columns(daemon: Daemon, no_connect: list[Any], width: int) -> None:
    asyncio.run(_widths(*daemon, width))


async def _widths(path: Path, inv: Inventory, store: DaemonStore, width: int) -> None:
    app = ZrelayApp(inv, store_path=path, attach=live_daemon(path), refresh_interval=None, daemon_interval=0.2,
                    clock=lambda: SCHEDULED)
    async with app.run_test(size=(width, 24)) as pilot:
        await wait_until(pilot, lambda: app.daemon_view is not None and not app.pending, 10, "the daemon")
        await pilot.press("4")
        table = app.query_one(ScheduleView).table
        await wait_until(pilot, lambda: len(table.row_keys) == 4, 5, "the schedule rows")
        app.redraw()
        await pilot.pause()
        text = screen_text(app)
        bar = text.splitlines()[0]
        assert ("as of 15:06:40" if width == 80 else "matrix as of 15:06:40") in bar
        label = {80: f"daemon pid {os.getpid()} │",
                 120: f"attached to zrelay daemon pid {os.getpid()} (zrelay.yml)",
                 200: f"attached to zrelay daemon pid {os.getpid()} (inventory zrelay.yml)"}[width]
        assert label in bar and "4 hosts (1 unreachable)" in bar
        assert "0 transfers" in bar, "the whole bar"
        # every column of the schedule on screen, no horizontal scrolling
        assert table.virtual_size.width <= table.scrollable_content_region.width
        row = next(line for line in text.splitlines() if " home " in line and "sync" in line)
        assert "failed ×3 40s ago" in row and "after snapshot" in row and "follows home" in row
        assert "n Run now" in text.splitlines()[-1]
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        help_lines = screen_text(app).splitlines()
        assert any("ask the zrelay daemon to run the selected job now" in line for line in help_lines)
        assert any("Detail, Schedule" in line for line in help_lines)
        await pilot.press("q")


def test_without_a_daemon_nothing_changes(tmp_path: Path, utc: None) -> None:
    """No daemon (or a stopped one): no Schedule tab, no `n`, the hosts are asked as before."""
    inv = attach_inventory(tmp_path)
    path = tmp_path / "state.db"
    assert live_daemon(path) is None, "no store"
    with DaemonStore(path) as store:
        assert live_daemon(path) is None, "a store without a daemon"
        store.register(str(inv.path), None)
        assert live_daemon(path) is not None
        store.stopped()
        assert live_daemon(path) is None, "a stopped daemon"

    async def run() -> None:
        from tests.tui.conftest import CannedQuerier
        app = ZrelayApp(inv, store_path=path, querier=CannedQuerier(scenario_reports(inv)), refresh_interval=None)
        async with app.run_test(size=(120, 32)) as pilot:
            await wait_until(pilot, lambda: "r" in footer_keys(app), 10, "the footer")
            assert not app.attached and app.survey is None
            assert "n" not in footer_keys(app)
            assert not app.query(ScheduleView)
            await pilot.press("4", "n")
            assert app.active_tab == "hosts" and not app.run_now_requests
            assert "attached" not in screen_text(app)
            await pilot.press("q")
    asyncio.run(run())


def test_not_attached_the_hosts_are_asked(daemon: Daemon, no_connect: list[Any]) -> None:
    """With a live daemon but without attaching (``--no-attach``), the hosts are asked as before: the
    guard above sees those connects, so its silence when attached means something."""
    path, inv, _store = daemon

    async def run() -> None:
        app = ZrelayApp(inv, store_path=path, refresh_interval=None)
        async with app.run_test(size=(120, 32)) as pilot:
            await wait_until(pilot, lambda: len(no_connect) >= 3, 30, "the hosts to be asked")
            assert not isinstance(app.querier, SurveyQuerier)
            await wait_until(pilot, lambda: app.reports.get(("vm", "vault:backup/vm")) is not None, 30, "vm")
            assert app.reports[("vm", "vault:backup/vm")].row.state == "unreachable"
            await pilot.press("q")
    asyncio.run(run())
    assert {a[0] for a in no_connect if isinstance(a, tuple)} >= {"192.0.2.1", "192.0.2.2", "192.0.2.3"}


def test_the_cli_attaches_to_a_live_daemon_with_its_inventory(daemon: Daemon, monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    """``zrelay tui`` attaches (the daemon's inventory unless -i); ``--no-attach`` asks the hosts."""
    from zrelay.cli import tui

    path, inv, _store = daemon
    seen: list[tuple[bool, Path]] = []
    monkeypatch.setattr(ZrelayApp, "run", lambda self: seen.append((self.attached, self.inventory.path)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ZRELAY_INVENTORY", raising=False)
    other = tmp_path / "other"
    other.mkdir()
    other_inv = attach_inventory(other).path

    def args(**kw: Any) -> argparse.Namespace:
        return argparse.Namespace(**{"inventory": None, "state": str(path), "patterns": [], "refresh": 0.0,
                                     "no_attach": False, **kw})
    assert tui.run(args()) == 0
    assert tui.run(args(inventory=str(other_inv))) == 0
    assert tui.run(args(inventory=str(other_inv), no_attach=True)) == 0
    assert seen == [(True, inv.path), (True, other_inv), (False, other_inv)]


# --- the schedule's words, without an app ---------------------------------------------------


def test_next_and_last_run_texts() -> None:
    now = 1000.0
    row = ScheduleRow("j", "sync", "every 15m", now + 252, "", False, {})
    assert next_run_text(row, now) == "in 4m12s"
    assert next_run_text(replace(row, next_at=now + 4.2), now) == "in 5s"
    assert next_run_text(replace(row, next_at=now + 45), now) == "in 45s"
    assert next_run_text(replace(row, next_at=now + 7380), now) == "in 2h03m"
    assert next_run_text(replace(row, next_at=now), now) == "due"
    assert next_run_text(replace(row, next_at=None), now) == "—"
    assert next_run_text(replace(row, running=True), now) == "running"
    assert last_run_text({"last_outcome": "noop", "last_finished": now - 90}, now).plain == "noop 90s ago"
    assert last_run_text({"last_outcome": "busy", "last_finished": now - 600, "failures": 2}, now).plain \
        == "busy ×2 10m ago"
    assert last_run_text({"last_outcome": "refused", "failures": 2}, now).plain == "refused"


def test_schedule_order_and_columns_fit() -> None:
    rows = schedule(1000.0)
    assert [(r.job, r.kind) for r in schedule_order(rows)] == [
        ("data", "sync"), ("data", "snapshot"), ("vm", "sync"), ("home", "sync")]
    for width in (80, 120, 200):
        columns = schedule_columns(rows, width)
        assert sum(w + 2 for _k, _l, w in columns) + 2 <= width, "padding and the scrollbar included"
        assert dict((k, w) for k, _l, w in columns)["reason"] >= 12


def test_the_daemons_streams_say_daemon_in_the_hosts_view(tmp_path: Path) -> None:
    """A daemon's run is recorded as ``daemon sync``: the row says so within its column (the pid is
    the daemon's, which the bar names); other processes' rows keep their pid."""
    from zrelay.state import StoreView, TransferRow
    from zrelay.tui.model import HOST_COLUMNS, HostState, host_rows

    inv = attach_inventory(tmp_path)
    rows = [TransferRow(i, 3, "vm", "vault:backup/vm", "tank/vm@zrelay_1 (full)", "nas1", "vault", estimate=None,
                        done=0, rate=0.0, started=NOW, updated=NOW, finished=None, ok=None, pid=4242 + i,
                        command=command) for i, command in enumerate(("daemon sync", "sync"))]
    shown = host_rows(inv, {"nas1": HostState("reachable")}, StoreView(read_at=NOW, active=tuple(rows)), NOW)
    states = [str(cells[1]) for key, cells in shown if key.startswith("t:nas1:")]
    assert states == ["daemon sync", "sync pid 4243"]
    width = next(c[2] for c in HOST_COLUMNS if c[0] == "state" and len(c) > 2)
    assert all(len(s) <= width for s in states)
