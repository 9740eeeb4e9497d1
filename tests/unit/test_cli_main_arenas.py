"""The command line caps glibc's malloc arenas, unless the user set MALLOC_ARENA_MAX.

The memory it saves is measured by the s3-memory benchmark; this checks the decision.
ctypes.CDLL is replaced by a recorder: calling the real mallopt here would change the
test process's allocator for every later test.
"""

from __future__ import annotations

import ctypes
import sys
import pytest

from zrelay.cli import main as cli_main


class _Libc:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return 1


def _fake_libc(monkeypatch: pytest.MonkeyPatch) -> _Libc:
    libc = _Libc()
    monkeypatch.setattr(ctypes, "CDLL", lambda name: libc)
    return libc


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's arenas")
def test_two_arenas_unless_the_user_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    libc = _fake_libc(monkeypatch)
    cli_main._limit_malloc_arenas()
    assert libc.calls == [(-8, 2)]          # M_ARENA_MAX
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    libc = _fake_libc(monkeypatch)
    cli_main._limit_malloc_arenas()
    assert libc.calls == []


def test_only_the_command_line_tunes_its_process(monkeypatch: pytest.MonkeyPatch) -> None:
    called: list[int] = []
    monkeypatch.setattr(cli_main, "_limit_malloc_arenas", lambda: called.append(1))
    with pytest.raises(SystemExit):
        cli_main.main(["--no-such-option"])    # an in-process caller: its process is not ours
    assert called == []
    monkeypatch.setattr(sys, "argv", ["zrelay", "--no-such-option"])
    with pytest.raises(SystemExit):
        cli_main.main()
    assert called == [1]
