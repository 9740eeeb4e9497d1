"""`zrelay tui` in a real terminal (tmux) while another process syncs a 200+ MiB snapshot."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.integration.helpers import REPO, make_dataset, write_inventory
from tests.tui.test_pilot import fleet_inventory

RATE = re.compile(r"\d+(\.\d+)? [KMG]iB/s")

needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


class Tmux:
    """One private tmux server (its own socket), so nothing else's sessions are touched."""

    def __init__(self) -> None:
        self.socket = f"zrelay-test-{os.getpid()}-{time.monotonic_ns()}"

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=30)

    def start(self, command: list[str], width: int = 120, height: int = 32) -> None:
        line = " ".join(_quote(a) for a in command)
        r = self.run("new-session", "-d", "-s", "tui", "-x", str(width), "-y", str(height), "-c", str(REPO),
                     f"env TERM=xterm-256color {line}; sleep 60")
        assert r.returncode == 0, r.stderr

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "tui").stdout

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", "tui", *keys)

    def wait_for(self, check: Callable[[str], bool], timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if check(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; screen:\n{text}")
            time.sleep(0.1)

    def kill(self) -> None:
        self.run("kill-server")


def _quote(arg: str) -> str:
    return arg if re.fullmatch(r"[\w./:=-]+", arg) else "'" + arg.replace("'", "'\\''") + "'"


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    t = Tmux()
    try:
        yield t
    finally:
        t.kill()


def zrelay_argv(inv: Path, state: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "zrelay", "-i", str(inv), "--state", str(state), *args]


@needs_tmux
@pytest.mark.lab
def test_tui_shows_another_process_transferring(lab, tmux: Tmux, tmp_path: Path) -> None:
    name = lab.unique("term")
    src, dst = f"tank/{name}", f"tank/replica/{name}"
    make_dataset(lab, "nas2", src, mib=224, snaps=["zrelay_1"])  # nas2: the lab pool with room
    try:
        inv = write_inventory(tmp_path / "inv.yml", lab, [{"source": f"nas2:{src}", "targets": [f"nas2:{dst}"]}])
        state = tmp_path / "state.db"
        tmux.start(zrelay_argv(inv, state, "tui"))
        tmux.wait_for(lambda s: "hosts" in s and "✓ reachable" in s, 60, "the hosts to answer")

        sync = subprocess.Popen(zrelay_argv(inv, state, "sync"), cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            def progress(screen: str) -> bool:
                return any(src in line and "→ nas2" in line and RATE.search(line) for line in screen.splitlines())

            screen = tmux.wait_for(progress, 120, "a progress row with a rate")
        finally:
            out, err = sync.communicate(timeout=600)
        assert sync.returncode == 0, err
        row = next(line for line in screen.splitlines() if src in line and "→ nas2" in line)
        assert f"sync pid {sync.pid}" in row and ("█" in row or "░" in row), row

        tmux.wait_for(lambda s: src not in s, 20, "the finished transfer to leave the hosts view")
        tmux.keys("2")
        tmux.wait_for(lambda s: any(f"nas2:{src}" in line and "✓ in-sync" in line for line in s.splitlines()),
                      60, "the matrix to show the completed state")
        tmux.keys("q")
        tmux.wait_for(lambda s: "r Refresh" not in s, 15, "the app to quit")
    finally:
        lab.destroy("nas2", dst)
        lab.destroy("nas2", src)


@needs_tmux
def test_real_terminal_with_50_hung_hosts(tmux: Tmux, tmp_path: Path, silent_server) -> None:
    """In a real terminal, with 50 hosts that hang their handshakes: the first frame, then every host checking,
    and `q` ends the app. How fast is measured by bench/tui.py (timing limits here fail on a loaded machine)."""
    inv = fleet_inventory(tmp_path, silent_server[1])
    tmux.start(zrelay_argv(inv, tmp_path / "state.db", "tui"), width=80, height=24)
    tmux.wait_for(lambda s: "52 hosts" in s, 60, "the first frame")
    screen = tmux.wait_for(lambda s: "checking" in s and "r Refresh" in s, 30, "the hosts to be checking")
    assert "h00" in screen
    tmux.keys("q")
    tmux.wait_for(lambda s: "r Refresh" not in s, 30, "the app to quit despite hung hosts")
