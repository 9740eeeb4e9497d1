"""A long-lived fleet (the daemon's) keeps its last listings' parsed states and plans between runs;
what changed between two runs, on either side, is still seen by the next one."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.integration.helpers import make_dataset, snapshots, write_inventory
from zrelay.engine import Engine, Fleet, SyncOptions
from zrelay.inventory import load_inventory


def test_runs_of_a_long_lived_fleet_see_every_change_between_them(lab: Any, tmp_path: Path) -> None:
    name = lab.unique()
    src, dst = f"{lab.pools['nas1']}/{name}", f"{lab.pools['vault']}/{name}"
    kids = ("a", "b", "c")   # three siblings: served from one listing of their parent
    for kid in kids:
        make_dataset(lab, "nas1", f"{src}/{kid}", mib=1, snaps=["zrelay_1"])
    inv = load_inventory(str(write_inventory(tmp_path / "inv.yml", lab, [
        {"name": kid, "source": f"nas1:{src}/{kid}", "targets": [f"vault:{dst}/{kid}"]} for kid in kids])))

    async def cycles() -> list[dict[str, str]]:
        parent = Fleet(inv)
        seen: list[dict[str, str]] = []

        async def cycle() -> None:
            run = parent.for_run()
            try:
                async with Engine(inv, fleet=run) as engine:
                    results = await engine.sync(inv.jobs, SyncOptions())
            finally:
                await run.close()
            seen.append({r.job: r.outcome.value for r in results})
        try:
            await cycle()                                          # full sends
            await cycle()                                          # nothing changed
            lab.zfs("nas1", "snapshot", f"{src}/b@zrelay_2")      # the source moved on
            await cycle()
            await cycle()
            lab.destroy("vault", f"{dst}/c")                       # a target went away behind its back
            await cycle()
            await cycle()
        finally:
            await parent.close()
        return seen

    seen = asyncio.run(cycles())
    assert seen == [
        {"a": "ok", "b": "ok", "c": "ok"},
        {"a": "noop", "b": "noop", "c": "noop"},
        {"a": "noop", "b": "ok", "c": "noop"},
        {"a": "noop", "b": "noop", "c": "noop"},
        {"a": "noop", "b": "noop", "c": "ok"},
        {"a": "noop", "b": "noop", "c": "noop"},
    ], seen
    for kid in kids:
        assert snapshots(lab, "vault", f"{dst}/{kid}") == snapshots(lab, "nas1", f"{src}/{kid}")
