"""Signals and dead runs: SIGTERM stops a sync like Ctrl-C; a killed sync shows as abandoned.

Each run is frozen (SIGSTOP) while its stream is in flight before the signal,
so the signal lands mid-stream however fast the machine is.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from tests.integration.helpers import (REPO, default_sigint, fingerprint, make_dataset, snapshots, write,
                                       write_inventory, zrelay)
from zrelay.state import StateStore, read_view


def _ignore_sigint() -> None:
    """As a script's ``cmd &`` starts it: SIGINT ignored, so asyncio installs no handler of its own."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _in_flight(lab, tmp_path: Path, preexec: Callable[[], None] = default_sigint,  # type: ignore[no-untyped-def]
               *args: str) -> tuple[str, str, Path, Path, str, subprocess.Popen[str]]:
    """A job synced once, then a big incremental whose sync is frozen mid-stream."""
    name = lab.unique()
    src, dst = f"tank/{name}", f"backup/{name}"
    make_dataset(lab, "nas1", src, snaps=["zrelay_1"])
    inv = write_inventory(tmp_path / "inv.yml", lab, [{"source": f"nas1:{src}", "targets": [f"vault:{dst}"]}])
    state = tmp_path / "state.db"
    first = zrelay("sync", inventory=inv, env={"ZRELAY_STATE": str(state)})
    assert first.returncode == 0, first.stdout + first.stderr
    write(lab, "nas1", src, "big", mib=lab.mib(200))
    lab.run("nas1", "zfs", "snapshot", f"{src}@zrelay_2")
    before = fingerprint(lab, "vault", dst)
    proc = subprocess.Popen([sys.executable, "-m", "zrelay", "-i", str(inv), "--state", str(state), "sync", *args],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=preexec)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if any(t.pid == proc.pid and t.done > 0 for t in read_view(state).active):
            proc.send_signal(signal.SIGSTOP)
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the sync ended before it could be signalled mid-stream"
    return src, dst, inv, state, before, proc


def _receive_gone(lab, dst: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 30
    while lab.run("vault", "pgrep", "-f", f"zfs receive .*{dst}", check=False).returncode == 0:
        assert time.monotonic() < deadline, "zfs receive still running after the sync ended"
        time.sleep(0.2)


@pytest.mark.parametrize("preexec", [default_sigint, _ignore_sigint], ids=["sigint-default", "sigint-ignored"])
def test_sigterm_stops_the_sync_like_ctrl_c(lab, tmp_path: Path, preexec: Callable[[], None]) -> None:
    src, dst, inv, state, before, proc = _in_flight(lab, tmp_path, preexec, "--json")
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGCONT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, (proc.returncode, out, err)
    assert err.strip().splitlines() == [
        "zrelay: terminated (SIGTERM): transfers in flight were stopped, targets left as they were (or resumable)"]
    # recorded as interrupted, not left running
    with StateStore(state) as store:
        run = store.runs()[0]
        [task] = store.tasks(run_id=run.id)
    assert run.pid == proc.pid and run.finished is not None and run.exit_code == 143 and not run.alive
    assert task.outcome == "failed" and task.message == "interrupted by SIGTERM before this target finished"
    # the target is as it was (OpenZFS may keep a resume token: same snapshots) and the next sync completes
    _receive_gone(lab, dst)
    assert fingerprint(lab, "vault", dst) == before
    again = zrelay("sync", inventory=inv, env={"ZRELAY_STATE": str(state)})
    assert again.returncode == 0, again.stdout + again.stderr
    assert snapshots(lab, "vault", dst) == snapshots(lab, "nas1", src)


def test_killed_sync_shows_as_abandoned_in_status(lab, tmp_path: Path) -> None:
    src, dst, inv, state, before, proc = _in_flight(lab, tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    _receive_gone(lab, dst)
    status = zrelay("status", "--json", inventory=inv, env={"ZRELAY_STATE": str(state)})
    assert "Traceback" not in status.stderr
    [row] = json.loads(status.stdout)
    last = row["last_run"]
    assert last["outcome"] == "abandoned", last    # not the run before it, "ok"
    assert last["pid"] == proc.pid and last["message"].startswith(f"abandoned (pid {proc.pid} gone since ")
    table = zrelay("status", inventory=inv, env={"ZRELAY_STATE": str(state), "COLUMNS": "200"})
    assert f"abandoned (pid {proc.pid} gone since " in table.stdout, table.stdout
    assert fingerprint(lab, "vault", dst) == before
    # the next run writes the abandoned one down for good and replicates
    again = zrelay("sync", inventory=inv, env={"ZRELAY_STATE": str(state)})
    assert again.returncode == 0, again.stdout + again.stderr
    with StateStore(state) as store:
        killed = next(r for r in store.runs() if r.pid == proc.pid)
        assert killed.finished is not None and not killed.alive
        [task] = store.tasks(run_id=killed.id)
    assert task.outcome == "abandoned" and f"pid {proc.pid} gone since" in task.message
