"""The TUI without the lab (Pilot): start-up with a big fleet, hung and refused hosts, keys, the store feed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import yaml

from tests.tui.conftest import cell_text, wait_until
from zrelay.events import JobFinished, JobStarted, Outcome, TransferFinished, TransferProgress, TransferStarted
from zrelay.inventory import load_inventory
from zrelay.state import Recorder
from zrelay.tui.app import ZrelayApp
from zrelay.tui.views import HelpScreen, HostsView, MatrixView


def fleet_inventory(tmp_path: Path, port: int, hosts: int = 50) -> Path:
    """``hosts`` hosts that hang every SSH handshake (the silent server) for the whole test (a connect timeout
    of 300 s), in jobs between each pair; and a job between two hosts that refuse at once, gone and ghost."""
    names = [f"h{i:02d}" for i in range(hosts)]
    hung = {"address": "127.0.0.1", "port": port, "ssh_options": {"ConnectTimeout": 300}}
    doc = {
        "all": {"vars": {"user": "root"},
                "hosts": {**{n: dict(hung) for n in names},
                          "gone": {"address": "127.0.0.10"}, "ghost": {"address": "127.0.0.9"}}},
        "zrelay": {"jobs": [{"source": f"{names[i]}:tank/d", "targets": [f"{names[i + 1]}:tank/d"]}
                            for i in range(0, hosts, 2)]
                   + [{"source": "gone:tank/e", "targets": ["ghost:tank/e"]}]},
    }
    path = tmp_path / "fleet.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_first_paint_with_50_hosts_and_no_host_blocks_the_ui(tmp_path: Path, silent_server) -> None:
    """No host delays the first frame or a key; how fast they come is measured by bench/tui.py, not here."""
    asyncio.run(_first_paint(tmp_path, silent_server[1]))


async def _first_paint(tmp_path: Path, port: int) -> None:
    app = ZrelayApp(load_inventory(fleet_inventory(tmp_path, port)), store_path=tmp_path / "state.db")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.first_paint_seconds is not None, 30, "the first frame")
        hosts = app.query_one(HostsView).table
        assert len(hosts.row_keys) == 52
        # gone and ghost refuse at once; the 50 others hang in their handshakes: that job's cell must not wait
        def ghost_unreachable() -> bool:
            cell = app.matrix.cells.get(("gone:tank/e", "ghost"))
            return cell is not None and cell.state == "unreachable"

        await wait_until(pilot, ghost_unreachable, 60, "gone → ghost to be unreachable")
        assert cell_text(hosts, "h:h01", "state") == "… checking"
        # the UI answers keys while 50 handshakes hang: the tab changes while they still hang
        await pilot.press("2")
        await pilot.pause()
        assert app.active_tab == "matrix"
        matrix = app.query_one(MatrixView).table
        await wait_until(pilot, lambda: cell_text(matrix, "gone:tank/e", "l:ghost") == "? unreachable", 30,
                         "the matrix to show ghost")
        assert cell_text(matrix, "h00:tank/d", "l:h01") == "… checking", "the hung hosts are still hanging"
        await pilot.press("q")
    assert not app.is_running


def test_transfers_of_other_processes_appear_live(tmp_path: Path, scenario) -> None:  # type: ignore[no-untyped-def]
    asyncio.run(_other_process(tmp_path, scenario))


async def _other_process(tmp_path: Path, scenario) -> None:  # type: ignore[no-untyped-def]
    """A recorder writing into the store (as cron's sync would) shows up in the hosts view and leaves it."""
    store = tmp_path / "live.db"
    app = scenario()
    app.store_path = store
    from zrelay.state import read_view
    app.store_reader = lambda: read_view(store)
    target, stream = "vault:backup/vm", "tank/vm@zrelay_1 (full)"
    async with app.run_test(size=(120, 30)) as pilot:
        hosts = app.query_one(HostsView).table
        rec = Recorder(store, "sync", ["sync", "vm"]).start()
        try:
            rec.handle(JobStarted("vm", "nas1:tank/vm", target))
            rec.handle(TransferStarted("vm", target, "nas1", "vault", stream, 400 * 2**20))
            rec.handle(TransferProgress("vm", target, stream, 100 * 2**20, 400 * 2**20, 50 * 2**20))
            key = None

            def row_shown() -> bool:
                nonlocal key
                key = next((k for k in hosts.row_keys if k.startswith("t:nas1:")), None)
                return key is not None and cell_text(hosts, key, "progress").endswith("25%")

            await wait_until(pilot, row_shown, 5, "the transfer row")
            assert key is not None
            assert cell_text(hosts, key, "rate") == "50.0 MiB/s" and cell_text(hosts, key, "eta") == "6s"
            assert cell_text(hosts, key, "bytes") == "100.0 MiB/400.0 MiB"
            rec.handle(TransferProgress("vm", target, stream, 300 * 2**20, 400 * 2**20, 50 * 2**20))
            await wait_until(pilot, lambda: cell_text(hosts, key, "progress").endswith("75%"), 5, "progress")
            rec.handle(TransferFinished("vm", target, stream, 400 * 2**20, 8.0, True))
            rec.handle(JobFinished("vm", "nas1:tank/vm", target, Outcome.OK, "", 400 * 2**20, 8.0))
            # a job that finished within a run that goes on is news: the app asks the hosts about that job
            submitted = app.querier.submitted  # type: ignore[attr-defined]
            await wait_until(pilot, lambda: submitted[-1] == [("vm", target)], 10, "vm to be asked again")
            await wait_until(pilot, lambda: not any(k.startswith("t:") for k in hosts.row_keys), 10,
                             "the row to go")
        finally:
            rec.close(0)
        # the run ended: every host is asked again
        await wait_until(pilot, lambda: len(submitted[-1]) == len(app.pairs), 10, "every pair to be asked again")


def test_keys_help_filter_tabs_and_quit(scenario) -> None:  # type: ignore[no-untyped-def]
    asyncio.run(_keys(scenario))


async def _keys(scenario) -> None:  # type: ignore[no-untyped-def]
    app = scenario()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        app.redraw()
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("2", "slash", "d", "a", "t", "a")
        await pilot.pause(0.4)
        matrix = app.query_one(MatrixView).table
        assert matrix.row_keys == ["nas1:tank/data", "nas1:tank/data/db"]
        hosts = app.query_one(HostsView).table
        assert hosts.row_keys == [], "no host name contains 'data'"
        await pilot.press("escape")
        await pilot.pause(0.4)
        assert len(matrix.row_keys) == 4 and app.filter_text == ""
        await pilot.press("3")
        assert app.active_tab == "detail"
        await pilot.press("1")
        assert app.active_tab == "hosts"
        await pilot.press("s")  # the cursor is on nas1, which has jobs: sync starts for host nas1
        await pilot.pause()
        await pilot.press("q")
    assert app.return_code in (0, None)


def test_sync_without_a_selection_warns(scenario) -> None:  # type: ignore[no-untyped-def]
    async def run() -> None:
        app = scenario(command_prefix=["false"])
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            app.redraw()
            await pilot.pause()
            hosts = app.query_one(HostsView).table
            hosts.move_cursor(row=hosts.row_keys.index("h:ghost"))  # ghost is only ever a target
            await pilot.press("s")
            await pilot.pause()
            assert app.notices[-1][0] == "warning" and not app.launched
            hosts.move_cursor(row=hosts.row_keys.index("h:nas2"))
            await pilot.press("s")
            await wait_until(pilot, lambda: bool(app.finished), 10, "the worker to end")
            [proc] = app.finished
            assert (proc.command, proc.pattern, proc.returncode) == ("sync", "nas2", 1)
            severity, title, _message = app.notices[-1]
            assert severity == "error" and title == "zrelay sync nas2 failed (exit 1)"
    asyncio.run(run())


def test_a_launched_run_that_found_its_target_busy_is_a_warning(scenario) -> None:  # type: ignore[no-untyped-def]
    """Exit 75 is the lock at work (another zrelay holds a target): said as such, not as a failure."""
    script = "echo 'busy: another zrelay (pid 4242) is replicating nas2:tank/x -> vault:backup/x' >&2; exit 75"

    async def run() -> None:
        app = scenario(command_prefix=["sh", "-c", script, "sh"])
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            app.redraw()
            await pilot.pause()
            hosts = app.query_one(HostsView).table
            hosts.move_cursor(row=hosts.row_keys.index("h:nas2"))
            await pilot.press("s")
            await wait_until(pilot, lambda: bool(app.finished), 10, "the worker to end")
            [proc] = app.finished
            assert proc.returncode == 75
            severity, title, message = app.notices[-1]
            assert severity == "warning" and title == "zrelay sync nas2: skipped, another zrelay holds a target"
            assert "pid 4242" in message
    asyncio.run(run())


def test_refresh_keeps_the_cursor(scenario) -> None:  # type: ignore[no-untyped-def]
    async def run() -> None:
        app = scenario()
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("2")
            await pilot.pause()
            app.redraw()
            matrix = app.query_one(MatrixView).table
            matrix.move_cursor(row=2, column=1)
            await pilot.press("r")
            await pilot.pause(0.4)
            app.redraw()
            assert (matrix.cursor_row, matrix.cursor_column) == (2, 1)
            assert matrix.selected_key() == "nas1:tank/vm"
    asyncio.run(run())
