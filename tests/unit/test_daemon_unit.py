"""The systemd unit for ``zrelay daemon``: what it runs, how it stops and reloads, contrib's copy."""

from __future__ import annotations

from pathlib import Path

import pytest

from zrelay.daemon import unit
from zrelay.errors import UsageError
from zrelay.inventory.service import DaemonSettings

REPO = Path(__file__).resolve().parents[2]


def directives(text: str) -> dict[str, dict[str, list[str]]]:
    """section -> key -> every value, in order (systemd allows a key more than once)."""
    out: dict[str, dict[str, list[str]]] = {}
    section = ""
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            out.setdefault(section, {})
            continue
        key, _, value = line.partition("=")
        out[section].setdefault(key, []).append(value)
    return out


def test_contrib_file_is_the_default_unit() -> None:
    assert (REPO / "contrib" / "zrelay.service").read_text() == unit.unit_text()


def test_default_unit_runs_the_daemon_and_stops_and_reloads_it_as_it_expects() -> None:
    d = directives(unit.unit_text())
    assert set(d) == {"Unit", "Service", "Install"}
    s = d["Service"]
    assert s["ExecStart"] == ["/usr/local/bin/zrelay daemon"]
    assert s["Type"] == ["simple"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["KillSignal"] == ["SIGTERM"] and s["KillMode"] == ["mixed"]
    # systemd waits longer than the daemon gives its streams, so the daemon ends them itself
    assert int(s["TimeoutStopSec"][0]) > DaemonSettings().stop_timeout
    assert (s["Restart"], s["RestartSec"]) == (["on-failure"], ["30"])
    assert s["StandardOutput"] == ["journal"]
    assert sorted(s["Environment"]) == ["PYTHONUNBUFFERED=1", "ZRELAY_STATE=/var/lib/zrelay/state.db"]
    assert s["StateDirectory"] == ["zrelay"]
    assert s["ReadWritePaths"] == ["/var/lib/zrelay /run/lock"]
    assert (s["NoNewPrivileges"], s["ProtectSystem"], s["PrivateTmp"]) == (["yes"], ["full"], ["yes"])
    assert "PrivateDevices" not in s and "User" not in s
    assert d["Unit"]["After"] == ["network-online.target"] and d["Unit"]["Wants"] == ["network-online.target"]
    assert d["Install"]["WantedBy"] == ["multi-user.target"]


def test_inventory_and_program_paths_are_absolute(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    s = directives(unit.unit_text("bin/zrelay", "inv/zrelay.yml"))["Service"]
    assert s["ExecStart"] == [f"{tmp_path}/bin/zrelay -i {tmp_path}/inv/zrelay.yml daemon"]
    s = directives(unit.unit_text("/opt/zrelay/bin/zrelay", "/etc/zrelay/zrelay.yml"))["Service"]
    assert s["ExecStart"] == ["/opt/zrelay/bin/zrelay -i /etc/zrelay/zrelay.yml daemon"]


@pytest.mark.parametrize("path, written", [
    ("/srv/my tools/zrelay", '"/srv/my tools/zrelay"'),
    ("/srv/50%/zrelay", "/srv/50%%/zrelay"),
    ("/srv/$HOME/zrelay", "/srv/$HOME/zrelay"),  # no variables in the program itself
    ('/srv/a"b\\c/zrelay', '"/srv/a\\"b\\\\c/zrelay"'),
    ("/srv/a;b/zrelay", '"/srv/a;b/zrelay"'),
])
def test_paths_are_written_as_systemd_reads_them(path: str, written: str) -> None:
    """Specifiers (%), variables ($), blanks and quotes would otherwise change the command."""
    s = directives(unit.unit_text(path, path + ".yml"))["Service"]
    quoted_inv = unit.systemd_arg(path + ".yml", "inventory")
    assert s["ExecStart"] == [f"{written} -i {quoted_inv} daemon"]


def test_a_dollar_in_an_argument_is_not_a_variable() -> None:
    assert unit.systemd_arg("/etc/$HOME/z 1%.yml", "inventory") == '"/etc/$$HOME/z 1%%.yml"'
    assert unit.systemd_arg("/opt/$HOME/zrelay", "zrelay program", program=True) == "/opt/$HOME/zrelay"


@pytest.mark.parametrize("zrelay_path, inventory, message", [
    ("/usr/bin/zre\nlay", None, "zrelay program '/usr/bin/zre\\nlay': a control character"),
    ("/usr/bin/zrelay", "/etc/z\x1b.yml", "inventory '/etc/z\\x1b.yml': a control character"),
    ("", None, "zrelay program for the unit's ExecStart is empty"),
    ("/usr/bin/zrelay", "", "inventory for the unit's ExecStart is empty"),
])
def test_unwritable_paths_are_usage_errors(zrelay_path: str, inventory: str | None, message: str) -> None:
    with pytest.raises(UsageError) as exc:
        unit.unit_text(zrelay_path, inventory)
    assert message in str(exc.value) and "\n" not in str(exc.value)
