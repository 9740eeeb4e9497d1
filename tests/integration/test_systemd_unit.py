"""The daemon's systemd unit as systemd itself reads it (``systemd-analyze verify``).

The unit test checks what the unit says; this one checks that systemd accepts
every line of it without a warning, and finds the programs it names, also when
their paths need quoting or escaping.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from zrelay.daemon.unit import unit_text

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")

pytestmark = pytest.mark.skipif(SYSTEMD_ANALYZE is None,
                                reason="systemd-analyze not installed (Debian: apt-get install systemd; "
                                       "`make deps` does)")


def zrelay_program() -> Path:
    """The zrelay console script of the Python running the tests (the venv's)."""
    beside = Path(sys.executable).parent / "zrelay"
    found = beside if beside.exists() else shutil.which("zrelay")
    if found is None:
        pytest.skip("no zrelay program installed beside this Python or on PATH")
    return Path(found)


def verify(unit: Path) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no", str(unit)], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


def about(r: subprocess.CompletedProcess[str], unit: Path) -> list[str]:
    """verify's complaints about this unit (it may also mention units of the machine it runs on)."""
    return [line for line in (r.stdout + r.stderr).splitlines() if unit.name in line or str(unit) in line]


def test_systemd_accepts_the_unit_without_a_warning(tmp_path: Path) -> None:
    inventory = tmp_path / "zrelay.yml"
    inventory.write_text("all: {}\n")
    unit = tmp_path / "zrelay.service"
    unit.write_text(unit_text(str(zrelay_program()), str(inventory)))
    r = verify(unit)
    assert r.returncode == 0 and not about(r, unit), r.stdout + r.stderr


def test_systemd_finds_a_program_whose_path_needs_quoting(tmp_path: Path) -> None:
    """A blank, a % and a $ in the path: written wrongly, systemd would look for another file."""
    odd = tmp_path / "my tools 100% $HOME"
    odd.mkdir()
    (odd / "zrelay").symlink_to(zrelay_program())
    unit = tmp_path / "zrelay.service"
    unit.write_text(unit_text(str(odd / "zrelay")))
    r = verify(unit)
    assert r.returncode == 0 and not about(r, unit), r.stdout + r.stderr


def test_a_missing_program_is_what_verify_reports(tmp_path: Path) -> None:
    """The check above can fail: a unit naming a program that is not there is refused."""
    unit = tmp_path / "zrelay.service"
    unit.write_text(unit_text(str(tmp_path / "no-such-zrelay")))
    r = verify(unit)
    assert r.returncode != 0 and any("no-such-zrelay" in line for line in about(r, unit)), r.stdout + r.stderr
