"""`zrelay status` on S3 targets against the real lab and SeaweedFS: in-sync, behind, broken, unreachable;
s3-push and s3-restore recorded in the state store (last run, live transfer).

Every test writes under its own key prefix and its own datasets and removes both at the end; the
"unreachable" target points at http://127.0.0.1:1, where nothing listens, so no shared server is stopped.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.integration.helpers import REPO, make_dataset, write, write_inventory
from zrelay.inventory import load_inventory
from zrelay.state import StateStore, StoreView, read_view
from zrelay.status.report import TargetReport, targets_of
from zrelay.tui.detail import detail_for
from zrelay.tui.model import build_matrix
from zrelay.tui.query import ThreadedQuerier

pytestmark = [pytest.mark.lab]

DEAD = "http://127.0.0.1:1"


class World:
    """One test's dataset, key prefix, inventory and state store, and the real CLI to run against them."""

    def __init__(self, lab: Any, s3: Any, tmp: Path, host: str = "nas1", recursive: bool = False) -> None:
        self.lab, self.s3, self.host = lab, s3, host
        self.name = lab.unique("ss3")
        self.src = f"{lab.pools[host]}/{self.name}"
        self.endpoint = f"{host}:{self.src}"
        self.prefix = s3.prefix(self.name)
        self.state = tmp / "state.db"
        self.created: list[tuple[str, str]] = [(host, self.src)]
        self.mib = 0  # MiB of data the test wrote, when it matters
        targets = {"offsite": s3.target(self.prefix),
                   "dead": {**s3.target(self.prefix), "endpoint": DEAD}}
        self.inventory = write_inventory(tmp / "inv.yml", lab, [
            {"source": self.endpoint, "recursive": recursive, "targets": ["s3:offsite"]},
            {"name": f"{self.name}-dead", "source": self.endpoint, "targets": ["s3:dead"]}],
            settings={"s3_targets": targets})

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "zrelay", "-i", str(self.inventory), "--state", str(self.state), *args]

    def env(self) -> dict[str, str]:
        env = dict(os.environ, **self.s3.env)
        env.pop("ZRELAY_INVENTORY", None)
        return env

    def zrelay(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=timeout, cwd=REPO,
                           env=self.env())
        assert "Traceback" not in r.stderr, r.stderr
        return r

    def ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        r = self.zrelay(*args)
        assert r.returncode == 0, f"zrelay {' '.join(args)} → {r.returncode}\n{r.stdout}\n{r.stderr}"
        return r

    def status(self, *patterns: str) -> tuple[int, dict[str, dict], float]:
        """(exit code, rows by target, seconds) of ``status --json``."""
        started = time.monotonic()
        r = self.zrelay("status", "--json", *patterns)
        seconds = time.monotonic() - started
        rows = json.loads(r.stdout)
        return r.returncode, {row["target"]: row for row in rows}, seconds

    def matrix(self, monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, str], dict[tuple[str, str], TargetReport]]:
        """The TUI's matrix cells of the source dataset (location → state), queried as the TUI does."""
        for key, value in self.s3.env.items():
            monkeypatch.setenv(key, value)
        inventory = load_inventory(self.inventory)
        reports: dict[tuple[str, str], TargetReport] = {}
        finished = threading.Event()
        querier = ThreadedQuerier(inventory)
        try:
            querier.submit(targets_of(inventory.jobs), lambda r: reports.__setitem__(r.key, r), finished.set, True)
            assert finished.wait(120), "the TUI's queries did not finish"
        finally:
            querier.close()
        matrix = build_matrix(inventory.jobs, reports, StoreView(read_at=0))
        return {loc: matrix.cells[(self.endpoint, loc)].state for loc in matrix.locations}, reports

    def cleanup(self) -> None:
        for host, ds in reversed(self.created):
            try:
                self.lab.destroy(host, ds)
            except Exception:  # noqa: BLE001 - best effort; the test's own result matters
                pass
        self.s3.cleanup(self.prefix)


@pytest.fixture
def world(lab: Any, s3: Any, tmp_path: Path) -> Iterator[World]:
    w = World(lab, s3, tmp_path)
    try:
        yield w
    finally:
        w.cleanup()


def test_in_sync_behind_broken_and_an_unreachable_endpoint(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    lab, s3 = world.lab, world.s3
    make_dataset(lab, world.host, world.src, snaps=["s1", "s2"])
    pushed = json.loads(world.ok("s3-push", "--target", "offsite", "--json").stdout)
    assert [r["outcome"] for r in pushed] == ["ok"]

    code, rows, seconds = world.status()
    offsite, dead = rows["s3:offsite"], rows["s3:dead"]
    assert (offsite["state"], offsite["behind"], offsite["lag_seconds"]) == ("in-sync", 0, 0)
    assert (offsite["common_base"], offsite["target_newest"], offsite["source_newest"]) == ("s2", "s2", "s2")
    assert (offsite["target_kind"], offsite["location"], offsite["message"]) == ("s3", "s3:offsite", "")
    info = offsite["s3"]
    assert (info["chains"], info["sends"], info["broken_chains"], info["restorable_newest"]) == (1, 2, 0, "s2")
    assert info["url"] == f"s3://{s3.bucket}/{world.prefix}zrelay/v1/" and info["stored_bytes"] > 0
    last = offsite["last_run"]
    assert last is not None and last["outcome"] == "ok" and last["bytes"] == info["stored_bytes"]
    assert offsite["bytes_total"] == last["bytes"] and offsite["last_success_at"] == last["finished_at"]
    # nothing listens on the dead endpoint: one line naming the target and the endpoint, fast
    assert dead["state"] == "unreachable" and dead["target_kind"] == "s3"
    assert "s3:dead" in dead["message"] and DEAD in dead["message"] and "\n" not in dead["message"]
    assert dead["s3"]["url"] and dead["s3"]["chains"] is None
    assert code == 1, "unreachable alerts"
    assert seconds < 30, f"status took {seconds:.1f} s with a dead S3 endpoint"
    code, only, _ = world.status(world.endpoint)
    assert code == 1 and set(only) == {"s3:offsite", "s3:dead"}
    cells, reports = world.matrix(monkeypatch)
    assert cells == {"s3:offsite": "in-sync", "s3:dead": "unreachable"}
    detail = detail_for(world.endpoint, reports.values())
    assert detail is not None and detail.columns == (world.endpoint, "s3:offsite", "s3:dead")
    assert [c.name for row in detail.rows for c in row.cells[1:2] if c] == ["s1", "s2"]

    write(lab, world.host, world.src, "more")
    lab.run(world.host, "zfs", "snapshot", f"{world.src}@s3")
    _, rows, _ = world.status()
    behind = rows["s3:offsite"]
    assert (behind["state"], behind["behind"], behind["source_newest"], behind["common_base"]) == \
        ("behind", 1, "s3", "s2")
    assert behind["lag_seconds"] is not None and behind["lag_seconds"] >= 0 and "@s2 → @s3" in behind["message"]

    world.ok("s3-push", "--target", "offsite")
    _, rows, _ = world.status()
    assert rows["s3:offsite"]["state"] == "in-sync" and rows["s3:offsite"]["s3"]["sends"] == 3

    # out of band, the stream of the middle incremental (@s2) disappears: @s2 and @s3 cannot be restored
    middle = [k for k in s3.keys(world.prefix) if "/@s2/" in k and "/stream." in k]
    assert len(middle) == 1
    s3.client().delete_object(Bucket=s3.bucket, Key=middle[0])
    code, rows, _ = world.status()
    broken = rows["s3:offsite"]
    assert broken["state"] == "broken" and code == 1
    assert "@s2, @s3 cannot be restored" in broken["message"] and middle[0] in broken["message"]
    assert broken["s3"]["broken_chains"] == 1 and broken["s3"]["restorable_newest"] == "s1"
    assert broken["common_base"] == "s1" and broken["target_newest"] == "s3"
    assert world.matrix(monkeypatch)[0]["s3:offsite"] == "broken"

    table = world.zrelay("status")
    assert table.returncode == 1
    assert "broken" in table.stdout and "unreachable" in table.stdout


def test_restore_is_recorded_under_the_dataset_it_writes(world: World) -> None:
    lab = world.lab
    make_dataset(lab, world.host, world.src, snaps=["s1", "s2"])
    world.ok("s3-push", "--target", "offsite")
    dest = f"{lab.pools['vault']}/{world.name}r"
    world.created.append(("vault", dest))
    world.ok("s3-restore", "offsite", world.endpoint, "--to", f"vault:{dest}")
    with StateStore(world.state, readonly=True) as store:
        view = store.view()
        commands = [row[0] for row in store.db.execute("SELECT command FROM runs ORDER BY id")]
    assert commands == ["s3-push", "s3-restore"]
    restore = view.last_results[(world.endpoint, f"vault:{dest}")]
    assert (restore.outcome, restore.source) == ("ok", "s3:offsite") and restore.bytes > 0
    push = view.last_results[(world.endpoint, "s3:offsite")]
    assert push.outcome == "ok" and push.plan_kind == "full"
    # a second restore has nothing to do, and says so in the history
    world.ok("s3-restore", "offsite", world.endpoint, "--to", f"vault:{dest}")
    again = read_view(world.state).last_results[(world.endpoint, f"vault:{dest}")]
    assert again.outcome == "noop" and again.id != restore.id


def test_recursive_job_counts_every_child_dataset(lab: Any, s3: Any, tmp_path: Path) -> None:
    tree = World(lab, s3, tmp_path, recursive=True)
    try:
        make_dataset(lab, tree.host, tree.src, snaps=["s1"])
        make_dataset(lab, tree.host, f"{tree.src}/child", snaps=["s1"])
        pushed = json.loads(tree.ok("s3-push", "--target", "offsite", "--json").stdout)
        assert [r["dataset"] for r in pushed] == [tree.endpoint, f"{tree.endpoint}/child"]
        _, rows, _ = tree.status()
        row = rows["s3:offsite"]
        assert (row["state"], row["datasets"], row["s3"]["chains"], row["s3"]["sends"]) == ("in-sync", 2, 2, 2)
        assert row["last_run"]["outcome"] == "ok" and row["last_run"]["bytes"] == row["s3"]["stored_bytes"]
        with StateStore(tree.state, readonly=True) as store:
            tasks = store.db.execute("SELECT job, target FROM tasks").fetchall()
        assert tasks == [(tree.endpoint, "s3:offsite")], "one task per job and target, like sync"
        lab.run(tree.host, "zfs", "snapshot", f"{tree.src}/child@s2")
        _, rows, _ = tree.status()
        row = rows["s3:offsite"]
        assert (row["state"], row["behind"], row["datasets"]) == ("behind", 1, 2)
        assert row["message"].startswith(f"{tree.endpoint}/child: ") and "@s1 → @s2" in row["message"]
    finally:
        tree.cleanup()


@pytest.fixture
def big(lab: Any, s3: Any, tmp_path: Path) -> Iterator[World]:
    """256 MiB of random data (64 MiB on the OpenZFS tier) on nas2 (the pool with most room), so a push
    lasts long enough for its progress to reach the store (written twice a second) on a fast machine."""
    w = World(lab, s3, tmp_path, host="nas2")
    w.mib = lab.mib(256, minimum=16)
    try:
        make_dataset(lab, "nas2", w.src, mib=w.mib, snaps=["s1"])
        yield w
    finally:
        w.cleanup()


def test_a_running_push_shows_in_status(big: World) -> None:
    """The push is paused (SIGSTOP) mid-stream while status runs, so the check does not race the upload."""
    push = subprocess.Popen(big.argv("s3-push", "--target", "offsite", "--compression", "none",
                                     "--part-size", "5M", "--concurrency", "1"),
                            cwd=REPO, env=big.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: dict | None = None
    try:
        deadline = time.monotonic() + 120
        while push.poll() is None and time.monotonic() < deadline:
            active = read_view(big.state).active
            if active and active[0].done > 0:
                os.kill(push.pid, signal.SIGSTOP)
                try:
                    code, rows, _ = big.status(big.endpoint)
                    seen = rows["s3:offsite"]
                finally:
                    os.kill(push.pid, signal.SIGCONT)
                break
            time.sleep(0.05)
    finally:
        _out, err = push.communicate(timeout=300)
    assert push.returncode == 0, err
    assert seen is not None, "the upload never showed up in the store"
    assert seen["state"] == "running" and seen["planned_state"] == "missing", seen
    t = seen["transfer"]
    assert t["command"] == "s3-push" and t["pid"] == push.pid and t["bytes"] > 0
    assert t["source_host"] == "nas2" and t["target_host"] == "s3:offsite" and big.src in t["stream"]
    _, rows, _ = big.status(big.endpoint)
    done = rows["s3:offsite"]
    assert done["state"] == "in-sync" and done["transfer"] is None and done["last_run"]["outcome"] == "ok"
    assert done["last_run"]["bytes"] >= big.mib * 1024 * 1024
