"""Shared pieces of the TUI tests: waiting on a running app, canned reports, a fixed scenario."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

import pytest
import yaml

from zrelay.inventory import load_inventory
from zrelay.inventory.model import Endpoint, Inventory, Job, S3Ref, Target
from zrelay.plan import plan, plan_recursive
from zrelay.state import StoreView, TaskRow, Totals, TransferRow
from zrelay.status.hosts import report_from_plans
from zrelay.status.report import TargetReport, failed_report, not_checked
from zrelay.tui.query import Deliver, Done
from zrelay.zfs.model import DatasetState, Snapshot

NOW = 1_750_000_000.0  # every time in the fixed scenario is relative to this


async def wait_until(pilot, condition: Callable[[], bool], timeout: float = 30.0,  # type: ignore[no-untyped-def]
                     what: str = "condition") -> None:
    """Let the app run until ``condition()`` holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await pilot.pause(0.1)


def cell_text(table, row: str, column: str) -> str:  # type: ignore[no-untyped-def]
    value = table.get_cell(row, column)
    return value.plain if hasattr(value, "plain") else str(value)


def screen_text(app) -> str:  # type: ignore[no-untyped-def]
    """What the terminal shows now, as plain text (one line per row)."""
    return "\n".join(strip.text.rstrip() for strip in app.screen._compositor.render_strips())


def footer_keys(app) -> dict[str, tuple[str, bool]]:  # type: ignore[no-untyped-def]
    """The footer's keys as shown: key → (description, enabled)."""
    from textual.widgets._footer import FooterKey

    return {k.key: (k.description, not k._disabled) for k in app.screen.query(FooterKey)}


class CannedQuerier:
    """Answers from a dict at once; keys it does not know stay 'checking' forever."""

    def __init__(self, reports: dict[tuple[str, str], TargetReport]) -> None:
        self.reports = reports
        self.submitted: list[list[tuple[str, str]]] = []

    def submit(self, pairs: Sequence[tuple[Job, Target]], deliver: Deliver, done: Done, full: bool) -> None:
        keys = [(j.name, str(t)) for j, t in pairs]
        self.submitted.append(keys)
        for key in keys:
            if key in self.reports:
                deliver(self.reports[key])

    def close(self) -> None:
        pass


def _ds(name: str, *snaps: tuple[str, int], age: int = 0) -> DatasetState:
    return DatasetState(name, True, tuple(Snapshot(name, n, g, i + 1, int(NOW) - age - 3600 * (len(snaps) - i))
                                          for i, (n, g) in enumerate(snaps)))


def scenario_inventory(tmp_path: Path) -> Inventory:
    doc = {
        "all": {"vars": {"user": "root"}, "hosts": {
            "nas1": {"address": "10.0.0.1"}, "nas2": {"address": "10.0.0.2"},
            "vault": {"address": "10.0.0.3"}, "ghost": {"address": "10.0.0.9"}}},
        "zrelay": {
            "s3_targets": {"offsite": {"bucket": "zrelay-offsite", "endpoint": "http://127.0.0.1:1"}},
            "jobs": [
                {"name": "data", "source": "nas1:tank/data", "recursive": True, "snapshots": {"prefix": "zrelay_"},
                 "targets": ["vault:backup/nas1/data", "nas2:tank/replica/data", "s3:offsite"]},
                {"name": "vm", "source": "nas1:tank/vm", "targets": ["vault:backup/vm"]},
                {"name": "home", "source": "nas2:tank/home", "targets": ["vault:backup/home", "ghost:tank/home"]},
            ]}}
    path = tmp_path / "zrelay.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_inventory(path)


def scenario_reports(inv: Inventory) -> dict[tuple[str, str], TargetReport]:
    """data: vault in sync at the root, child behind 2; nas2 diverged; S3 not checked.
    vm: vault missing (a full send is running, see scenario_view). home: vault in sync, ghost unreachable."""
    jobs = {j.name: j for j in inv.jobs}
    src_data = {"tank/data": _ds("tank/data", ("hourly_1", 101), ("zrelay_1", 1), ("zrelay_2", 2), ("zrelay_3", 3)),
                "tank/data/db": _ds("tank/data/db", ("zrelay_1", 11), ("zrelay_2", 12), ("zrelay_3", 13))}
    vault_data = {"backup/nas1/data": _ds("backup/nas1/data", ("zrelay_1", 1), ("zrelay_2", 2), ("zrelay_3", 3)),
                  "backup/nas1/data/db": _ds("backup/nas1/data/db", ("zrelay_1", 11))}
    nas2_data = {"tank/replica/data": _ds("tank/replica/data", ("zrelay_1", 1), ("manual", 77), ("zrelay_2", 78)),
                 "tank/replica/data/db": _ds("tank/replica/data/db", ("zrelay_1", 11), ("zrelay_2", 12),
                                             ("zrelay_3", 13))}
    out: dict[tuple[str, str], TargetReport] = {}

    def add(job: Job, target: Target, src: dict, dst: dict) -> None:
        assert isinstance(target, Endpoint)
        if job.recursive:
            plans = plan_recursive(src, dst, job.source.dataset, target.dataset, select=job.select)
        else:
            plans = [plan(src[job.source.dataset], dst.get(target.dataset, DatasetState.absent(target.dataset)),
                          select=job.select)]
        out[(job.name, str(target))] = report_from_plans(job, target, plans, src, dst, NOW)

    data = jobs["data"]
    add(data, data.targets[0], src_data, vault_data)
    add(data, data.targets[1], src_data, nas2_data)
    out[("data", "s3:offsite")] = not_checked(data, S3Ref("offsite"), NOW)
    vm = jobs["vm"]
    add(vm, vm.targets[0], {"tank/vm": _ds("tank/vm", ("zrelay_1", 21))}, {})
    home = jobs["home"]
    add(home, home.targets[0], {"tank/home": _ds("tank/home", ("zrelay_1", 31))},
        {"backup/home": _ds("backup/home", ("zrelay_1", 31))})
    out[("home", "ghost:tank/home")] = failed_report(
        home, home.targets[1], "unreachable", "ghost: cannot connect to 10.0.0.9:22: Connection refused", NOW, "ghost")
    return out


def scenario_view() -> StoreView:
    """A full send of tank/vm to vault at 60 %, and nas2's last error (a refused sync five minutes ago)."""
    transfer = TransferRow(7, 3, "vm", "vault:backup/vm", "tank/vm@zrelay_1 (full)", "nas1", "vault",
                           estimate=2 * 1024**3, done=int(1.2 * 1024**3), rate=85 * 1024**2, started=NOW - 15,
                           updated=NOW - 0.2, finished=None, ok=None, pid=4242, command="sync")
    refused = TaskRow(5, 2, "data", "nas1:tank/data", "nas2:tank/replica/data", NOW - 400, NOW - 300,
                      "diverged", "", "refused", "diverged tank/replica/data: @manual, @zrelay_2 (refused)", 0, 1.0,
                      "nas2")
    ok = TaskRow(6, 2, "home", "nas2:tank/home", "vault:backup/home", NOW - 400, NOW - 390, "noop", "", "noop", "",
                 0, 1.0, None)
    return StoreView(read_at=NOW, active=(transfer,),
                     last_results={("data", "nas2:tank/replica/data"): refused, ("home", "vault:backup/home"): ok},
                     totals={("home", "vault:backup/home"): Totals("home", "vault:backup/home", 0, 1, 0, NOW - 390,
                                                                    "noop", NOW - 390)},
                     host_errors={"nas2": refused})


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time is UTC: the bar's "as of HH:MM:SS" must not depend on the machine's time zone."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def scenario(tmp_path: Path, utc: None):  # type: ignore[no-untyped-def]
    """A ready-to-run app on the fixed scenario: no hosts, no store, a frozen clock (UTC)."""
    from zrelay.tui.app import ZrelayApp

    inv = scenario_inventory(tmp_path)
    reports = scenario_reports(inv)

    def make(**kw) -> ZrelayApp:  # type: ignore[no-untyped-def]
        view = scenario_view()
        return ZrelayApp(inv, store_path=tmp_path / "state.db", clock=lambda: NOW,
                         querier=CannedQuerier(reports), store_reader=lambda: view, **kw)
    return make


@pytest.fixture
def silent_server() -> Iterator[tuple[str, int]]:
    """A TCP port that accepts connections and never says a word: a host that hangs an SSH handshake."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(512)
    try:
        yield sock.getsockname()
    finally:
        sock.close()

