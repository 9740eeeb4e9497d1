"""The matrix stays true without a key press: a refresh on a timer, and one as soon as any run ends."""

from __future__ import annotations

import asyncio
from pathlib import Path

from textual.widgets import Static

from tests.tui.conftest import (NOW, CannedQuerier, _ds, cell_text, scenario_inventory, scenario_reports,
                                scenario_view, wait_until)
from zrelay.events import JobFinished, JobStarted, Outcome
from zrelay.plan import plan
from zrelay.state import Recorder, read_view
from zrelay.status.hosts import report_from_plans
from zrelay.status.report import TargetReport
from zrelay.tui.app import ZrelayApp
from zrelay.tui.views import MatrixView


def _home_behind(reports: dict[tuple[str, str], TargetReport]) -> TargetReport:
    """What the hosts say about home → vault once cron took @zrelay_2 on nas2 (the target still has @zrelay_1)."""
    old = reports[("home", "vault:backup/home")]
    src = {"tank/home": _ds("tank/home", ("zrelay_1", 31), ("zrelay_2", 32))}
    dst = {"backup/home": _ds("backup/home", ("zrelay_1", 31))}
    return report_from_plans(old.job, old.target, [plan(src["tank/home"], dst["backup/home"], select=old.job.select)],
                             src, dst, NOW + 60)


def _fresh(app: ZrelayApp) -> str:
    return str(app.query_one("#bar-fresh", Static).render())


def test_a_snapshot_taken_outside_zrelay_shows_without_a_key_press(tmp_path: Path, utc: None) -> None:
    asyncio.run(_timer(tmp_path))


async def _timer(tmp_path: Path) -> None:
    inv = scenario_inventory(tmp_path)
    reports = scenario_reports(inv)
    querier = CannedQuerier(dict(reports))
    now = [NOW]  # 15:06:40 UTC
    view = scenario_view()
    app = ZrelayApp(inv, store_path=tmp_path / "state.db", clock=lambda: now[0], querier=querier,
                    store_reader=lambda: view, refresh_interval=0.5)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("2")
        matrix = app.query_one(MatrixView).table
        await wait_until(pilot, lambda: app.as_of is not None, 10, "every answer")
        await wait_until(pilot, lambda: _fresh(app) == "as of 15:06:40", 10, "the bar to say how current it is")
        assert cell_text(matrix, "nas2:tank/home", "l:vault") == "✓ in-sync"

        # cron took a snapshot on nas2; ghost stays silent from now on (its host hangs)
        now[0] = NOW + 60
        querier.reports[("home", "vault:backup/home")] = _home_behind(reports)
        del querier.reports[("home", "ghost:tank/home")]
        await wait_until(pilot, lambda: cell_text(matrix, "nas2:tank/home", "l:vault") == "↓ behind 1", 30,
                         "the timer's refresh to show the new snapshot")
        # every other answer is new, ghost's is still the old one: the screen is as of the older, and says
        # that a refresh is under way
        await wait_until(pilot, lambda: _fresh(app) == "refreshing 5/6 · as of 15:06:40", 10, "the marker")
        refreshes = app.full_refreshes
        await pilot.pause(1.5)  # three timer periods
        assert app.full_refreshes == refreshes, "the timer must not cancel a refresh that waits on a slow host"

        querier.reports[("home", "ghost:tank/home")] = reports[("home", "ghost:tank/home")]
        await pilot.press("r")  # r does not wait: it asks again at once
        await wait_until(pilot, lambda: _fresh(app) == "as of 15:07:40", 10, "the refresh to end")
        assert app.is_running


def test_a_run_that_ends_in_another_process_refreshes_every_host(tmp_path: Path, scenario) -> None:  # type: ignore[no-untyped-def]
    asyncio.run(_run_ended(tmp_path, scenario))


async def _run_ended(tmp_path: Path, scenario) -> None:  # type: ignore[no-untyped-def]
    """cron's ``zrelay sync`` of a job this view does not show (another inventory, the same store) ends: no
    result of ours changes, yet what it did on the hosts must show at once, not at the next timer tick."""
    store = tmp_path / "live.db"
    app = scenario(refresh_interval=None, poll_interval=0.1)
    app.store_reader = lambda: read_view(store)
    async with app.run_test(size=(120, 30)) as pilot:
        submitted = app.querier.submitted
        await wait_until(pilot, lambda: app.store_reads > 2 and len(submitted) == 1, 10, "the first refresh")
        rec = Recorder(store, "sync", ["sync", "other"]).start()
        try:
            rec.handle(JobStarted("other", "nas1:tank/other", "vault:backup/other"))
            await pilot.pause(0.5)
            assert len(submitted) == 1, "a run that starts changes nothing yet"
            rec.handle(JobFinished("other", "nas1:tank/other", "vault:backup/other", Outcome.OK, "", 0, 0.1))
        finally:
            rec.close(0)
        assert read_view(store).last_run_end is not None
        every = sorted((j.name, str(t)) for j, t in app.pairs)
        await wait_until(pilot, lambda: len(submitted) == 2 and sorted(submitted[-1]) == every, 10,
                         "every pair to be asked again")
        await pilot.pause(0.5)
        assert len(submitted) == 2, "one ended run, one refresh"


def test_refresh_option_of_the_command(tmp_path: Path) -> None:
    """``zrelay tui --refresh SECONDS``: a number ≥ 0 (0: no timer); anything else is a one-line usage error."""
    import subprocess
    import sys

    from zrelay.cli.main import build_parser
    from zrelay.tui.app import REFRESH_INTERVAL

    parser = build_parser("tui")
    assert parser.parse_args(["tui"]).refresh == REFRESH_INTERVAL
    assert parser.parse_args(["tui", "--refresh", "5"]).refresh == 5.0
    assert parser.parse_args(["tui", "--refresh", "0"]).refresh == 0.0
    for bad in ("-1", "soon", "nan", "inf"):
        r = subprocess.run([sys.executable, "-m", "zrelay", "tui", "--refresh", bad], capture_output=True, text=True,
                           cwd=tmp_path, timeout=60)
        assert r.returncode == 2, (bad, r.stderr)
        assert r.stderr.count("\n") == 1 and "--refresh" in r.stderr and "Traceback" not in r.stderr, r.stderr
