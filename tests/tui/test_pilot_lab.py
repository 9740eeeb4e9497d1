"""The TUI against the lab (Pilot): a store filled by a real sync, real host queries, a real worker process."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.helpers import make_dataset, write, write_inventory, zrelay
from tests.tui.conftest import cell_text, footer_keys, wait_until
from zrelay.inventory import load_inventory
from zrelay.tui.app import NO_S3_TARGET, ZrelayApp
from zrelay.tui.views import DetailView, HostsView, MatrixView

pytestmark = pytest.mark.lab


@dataclass
class Lab:
    inv: Path
    state: Path
    name: str

    def row(self, case: str) -> str:
        return f"nas2:tank/{self.name}{case}" if case == "e" else f"nas1:tank/{self.name}{case}"

    def app(self) -> ZrelayApp:
        return ZrelayApp(load_inventory(self.inv), store_path=self.state)


@pytest.fixture(scope="module")
def fleet(lab, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """a: in sync on vault, unreachable on ghost; b: behind 1; c: diverged; e: 512 MiB on nas2, never synced
    (large enough that its sync runs for seconds, so that the UI can show it moving)."""
    tmp = tmp_path_factory.mktemp("tui")
    name = lab.unique("tui")
    try:
        for case in "abc":
            make_dataset(lab, "nas1", f"tank/{name}{case}", snaps=["zrelay_1"])
        make_dataset(lab, "nas2", f"tank/{name}e", mib=512, snaps=["zrelay_1"])
        jobs = [{"source": f"nas1:tank/{name}a", "targets": [f"vault:backup/{name}a", f"ghost:tank/{name}a"]}]
        jobs += [{"source": f"nas1:tank/{name}{c}", "targets": [f"vault:backup/{name}{c}"]} for c in "bc"]
        jobs += [{"source": f"nas2:tank/{name}e", "targets": [f"nas2:tank/replica/{name}e"]}]
        inv = write_inventory(tmp / "inv.yml", lab, jobs, hosts={"ghost": {"address": "127.0.0.9"}})
        state = tmp / "state.db"
        first = zrelay("--state", str(state), "sync", "--json", *(f"nas1:tank/{name}{c}" for c in "abc"),
                       inventory=inv)
        outcomes = sorted(r["outcome"] for r in json.loads(first.stdout))
        assert outcomes == ["failed", "ok", "ok", "ok"], first.stderr  # only the ghost target fails
        write(lab, "nas1", f"tank/{name}b", "more")
        lab.run("nas1", "zfs", "snapshot", f"tank/{name}b@zrelay_2")
        lab.run("vault", "zfs", "snapshot", f"backup/{name}c@local-only")
        write(lab, "nas1", f"tank/{name}c", "more")
        lab.run("nas1", "zfs", "snapshot", f"tank/{name}c@zrelay_2")
        yield Lab(inv, state, name)
    finally:
        for case in "abc":
            lab.destroy("nas1", f"tank/{name}{case}")
            lab.destroy("vault", f"backup/{name}{case}")
        lab.destroy("nas2", f"tank/replica/{name}e")
        lab.destroy("nas2", f"tank/{name}e")


def test_matrix_shows_each_state(fleet: Lab) -> None:
    asyncio.run(_matrix_shows_each_state(fleet))


async def _matrix_shows_each_state(fleet: Lab) -> None:
    app = fleet.app()
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: not app.pending, 90, "every host to answer")
        await pilot.press("2")
        await pilot.pause(0.4)
        table = app.query_one(MatrixView).table
        expect = {("a", "vault"): "✓ in-sync", ("a", "ghost"): "? unreachable", ("b", "vault"): "↓ behind 1",
                  ("c", "vault"): "✗ diverged", ("e", "nas2"): "∅ missing"}
        for (case, location), text in expect.items():
            assert cell_text(table, fleet.row(case), f"l:{location}") == text, (case, location)
        assert cell_text(table, fleet.row("b"), "l:ghost") == "·"  # not a target of that job
        hosts = app.query_one(HostsView).table
        assert cell_text(hosts, "h:ghost", "state") == "? unreachable"
        assert "127.0.0.9" in cell_text(hosts, "h:ghost", "error")
        assert cell_text(hosts, "h:vault", "state") == "✓ reachable"


def test_selecting_a_cell_opens_the_aligned_detail(fleet: Lab) -> None:
    asyncio.run(_selecting_a_cell_opens_the_aligned_detail(fleet))


async def _selecting_a_cell_opens_the_aligned_detail(fleet: Lab) -> None:
    app = fleet.app()
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: not app.pending, 90, "every host to answer")
        await pilot.press("2")
        await pilot.pause(0.4)
        table = app.query_one(MatrixView).table
        table.move_cursor(row=table.row_keys.index(fleet.row("c")), column=1)  # column 1: vault
        await pilot.press("enter")
        await pilot.pause(0.4)
        assert app.active_tab == "detail"
        detail = app.query_one(DetailView).table
        labels = [c.label.plain for c in detail.columns.values()]
        assert labels == ["guid", "nas1 (source)", "vault (diverged)"]
        rows = [tuple(cell_text(detail, key, col) for col in ("c0", "c1")) for key in detail.row_keys]
        assert rows == [("◆ zrelay_1", "◆ zrelay_1"), ("  ·", "✗ local-only"), ("  zrelay_2", "  ·")]
        await pilot.press("escape")
        assert app.active_tab == "matrix"


def test_sync_key_runs_a_worker_process_and_shows_its_progress(fleet: Lab) -> None:
    asyncio.run(_sync_key_runs_a_worker_process_and_shows_its_progress(fleet))


async def _sync_key_runs_a_worker_process_and_shows_its_progress(fleet: Lab) -> None:
    app = fleet.app()
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: not app.pending, 90, "every host to answer")
        await pilot.press("2")
        await pilot.pause(0.4)
        table = app.query_one(MatrixView).table
        table.move_cursor(row=table.row_keys.index(fleet.row("e")), column=3)  # column 3: nas2
        await pilot.press("s")
        await wait_until(pilot, lambda: bool(app.launched) or bool(app.finished), 10, "the worker to start")
        hosts = app.query_one(HostsView).table
        seen: list[tuple[str, ...]] = []

        def progress_row() -> bool:
            for key in hosts.row_keys:
                if key.startswith("t:nas2:"):
                    cells = tuple(c.plain if hasattr(c, "plain") else str(c) for c in hosts.cells_of(key) or ())
                    if cells and cells[3].endswith("iB/s"):  # bytes are moving
                        seen.append(cells)
            return bool(seen)

        await wait_until(pilot, progress_row, 60, "a transfer row in the hosts view")
        row = seen[0]
        assert f"tank/{fleet.name}e" in row[0] and "→ nas2" in row[0] and "sync pid" in row[1]
        await wait_until(pilot, lambda: bool(app.finished), 120, "the worker to finish")
        [proc] = app.finished
        assert (proc.command, proc.pattern, proc.returncode) == ("sync", fleet.row("e"), 0), proc.output
        await wait_until(pilot, lambda: not any(k.startswith("t:") for k in hosts.row_keys), 10,
                         "the transfer row to go")
        await wait_until(pilot, lambda: cell_text(table, fleet.row("e"), "l:nas2") == "✓ in-sync", 60,
                         "the matrix to show the target in sync")


def test_push_key_is_off_where_no_job_has_an_s3_target(fleet: Lab) -> None:
    asyncio.run(_push_key_is_off_where_no_job_has_an_s3_target(fleet))


async def _push_key_is_off_where_no_job_has_an_s3_target(fleet: Lab) -> None:
    """`p` on a job without S3 targets: greyed out with the reason in the footer, no process, the UI stays up."""
    app = fleet.app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2")
        await pilot.pause(0.3)
        assert footer_keys(app)["p"] == (NO_S3_TARGET, False)
        await pilot.press("p")
        await pilot.pause(1)
        assert not app.launched and not app.finished
        assert app.is_running


def test_a_snapshot_taken_outside_zrelay_shows_without_a_key_press(lab, tmp_path: Path) -> None:
    asyncio.run(_snapshot_outside_zrelay(lab, tmp_path))


async def _snapshot_outside_zrelay(lab, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """In sync; then a snapshot is taken behind zrelay's back (cron, sanoid): the timer's refresh shows the target
    behind, nobody presses r."""
    name = lab.unique("tuitimer")
    src, dst = f"{lab.pools['nas1']}/{name}", f"{lab.pools['vault']}/{name}"
    make_dataset(lab, "nas1", src, snaps=["zrelay_1"])
    try:
        inv = write_inventory(tmp_path / "inv.yml", lab, [{"source": f"nas1:{src}", "targets": [f"vault:{dst}"]}])
        state = tmp_path / "state.db"
        first = zrelay("--state", str(state), "sync", inventory=inv)
        assert first.returncode == 0, first.stderr
        app = ZrelayApp(load_inventory(inv), store_path=state, refresh_interval=2)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("2")
            table = app.query_one(MatrixView).table
            row = f"nas1:{src}"
            await wait_until(pilot, lambda: row in table.row_keys and cell_text(table, row, "l:vault") == "✓ in-sync",
                             90, "the target in sync")
            await asyncio.to_thread(lab.zfs, "nas1", "snapshot", f"{src}@zrelay_2")
            await wait_until(pilot, lambda: cell_text(table, row, "l:vault") == "↓ behind 1", 120,
                             "the timer's refresh to show the new snapshot")
            assert app.full_refreshes >= 2
    finally:
        lab.destroy("vault", dst)
        lab.destroy("nas1", src)
