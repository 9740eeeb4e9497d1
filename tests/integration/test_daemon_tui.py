"""``zrelay tui`` attached to a real ``zrelay daemon`` on the lab, in a real terminal (tmux).

The daemon syncs one job every 10 s and surveys every 5 s; the TUI, started with the same state
store, attaches: its bar names the daemon, its Schedule tab shows the job's next run, a large
stream the daemon runs appears as a live row, the matrix follows the daemon's surveys, and `n`
reaches the daemon. Both are stopped by PID (SIGTERM for the daemon). The frame with the live
stream is kept in bench/results/tui-attached.txt (``ZRELAY_TUI_FRAME``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

from tests.integration.helpers import REPO, make_dataset, snapshots, write, write_inventory
from tests.tui.test_terminal import RATE, Tmux, needs_tmux, tmux, zrelay_argv  # noqa: F401  (tmux: a fixture)
from zrelay.daemonstate import DaemonStore

#: ``ZRELAY_TUI_FRAME=bench/results/tui-attached.txt`` keeps the frame with the live stream there.
FRAME_ENV = "ZRELAY_TUI_FRAME"
DEADLINE = 120.0


def until(what: str, check: Callable[[], Any], proc: subprocess.Popen[str], log: Path,
          deadline: float = DEADLINE) -> Any:
    """``check()``'s first true value; fails naming ``what`` with the daemon's log."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        if proc.poll() is not None:
            break
        time.sleep(0.3)
    raise AssertionError(f"{what}: not within {deadline:g}s (daemon exit {proc.poll()})\n{log.read_text()}")


def lines_with(screen: str, *words: str) -> list[str]:
    return [line for line in screen.splitlines() if all(w in line for w in words)]


@needs_tmux
def test_tui_attached_to_the_daemon_shows_its_schedule_streams_and_survey(lab, tmux: Tmux, tmp_path: Path) -> None:
    name = lab.unique("dtui")
    src, dst = f"tank/{name}", f"{lab.pools['vault']}/{name}"
    make_dataset(lab, "nas1", src, snaps=["zrelay_1"])
    state, log = tmp_path / "state.db", tmp_path / "daemon.log"
    job = {"name": name, "source": f"nas1:{src}", "targets": [f"vault:{dst}"], "schedule": {"sync": "10s"}}
    inv = write_inventory(tmp_path / "inv.yml", lab, [job], settings={"daemon": {"survey_every": "5s"}})
    out = log.open("w")
    daemon = subprocess.Popen([*zrelay_argv(inv, state, "daemon", "--metrics", "127.0.0.1:0")], cwd=REPO,
                              stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        until("the first sync", lambda: [n for n, _ in snapshots(lab, "vault", dst)] == ["zrelay_1"]
              if lab.exists("vault", dst) else False, daemon, log)

        def surveyed() -> bool:
            with DaemonStore(state, readonly=True) as store:
                got = store.survey()
            return got is not None and any(r["job"] == name and r["state"] == "in-sync" for r in got[1])
        until("a survey with the job in sync", surveyed, daemon, log)

        # pytest's environment says COLUMNS=80 LINES=24, which textual would take over the terminal's size
        tmux.start(["env", "-u", "COLUMNS", "-u", "LINES", *zrelay_argv(inv, state, "tui")], width=160, height=30)
        screen = tmux.wait_for(lambda s: f"attached to zrelay daemon pid {daemon.pid} (inventory inv.yml)" in s
                               and "matrix as of" in s, 60, "the bar naming the daemon")
        assert "✓ reachable" in screen, "the hosts' states come from the survey"

        tmux.keys("4")
        screen = tmux.wait_for(lambda s: any(re.search(r"\b(in \d+(\.\d)?s|due|running)\b", line)
                                             for line in lines_with(s, name, "sync", "every 10s")),
                               60, "the schedule with the job's next run")
        assert lines_with(screen, f"pid {daemon.pid}", "inventory", str(inv)), "the daemon in the schedule's title"

        # a large stream: the daemon's next sync sends it; the hosts view shows it live
        write(lab, "nas1", src, "big", mib=lab.mib(256))
        lab.run("nas1", "zfs", "snapshot", f"{src}@zrelay_2")
        tmux.keys("1")
        screen = tmux.wait_for(lambda s: any(RATE.search(line) for line in lines_with(s, src, "→ vault", "daemon sync")),
                               120, "the daemon's stream as a live row, bytes moving")
        if os.environ.get(FRAME_ENV):   # the frame kept in bench/results: written only when asked
            Path(os.environ[FRAME_ENV]).write_text(screen)
        until("zrelay_2 on the target", lambda: [n for n, _ in snapshots(lab, "vault", dst)]
              == ["zrelay_1", "zrelay_2"], daemon, log, 300)

        # the matrix follows the daemon's surveys; `n` asks the daemon to run the selected job
        tmux.keys("2")
        tmux.wait_for(lambda s: bool(lines_with(s, f"nas1:{src}", "✓ in-sync")), 120, "the matrix in sync")
        tmux.keys("n")
        until("the daemon to take the run-now request",
              lambda: re.search(rf"run-now patterns={re.escape(name)} answer=\"1 run\(s\) requested: "
                                rf"{re.escape(name)} sync\"", log.read_text()), daemon, log, 60)
        tmux.wait_for(lambda s: "1 run(s) requested" in s, 30, "the daemon's answer in the TUI")
        tmux.keys("q")
        tmux.wait_for(lambda s: "r Refresh" not in s, 30, "the TUI to quit")
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
        try:
            code = daemon.wait(timeout=90)
        except subprocess.TimeoutExpired:
            daemon.kill()
            code = daemon.wait()
        out.close()
        lab.destroy("vault", dst)
        lab.destroy("nas1", src)
    assert code == 0, log.read_text()
