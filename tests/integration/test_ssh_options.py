"""ssh_options from the inventory reach the lab's sshd as asyncssh keywords: ConnectTimeout in OpenSSH's
time format and ``Compression: no`` (as inventory/example.yml has it) used to end every connection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.helpers import make_dataset, one_line_error, snapshots, write_inventory, zrelay

pytestmark = pytest.mark.lab


def test_status_and_sync_with_connect_timeout_and_compression_no(lab, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    name = lab.unique("so")
    src, dst = f"{lab.pools['nas1']}/{name}", f"{lab.pools['vault']}/{name}"
    make_dataset(lab, "nas1", src, snaps=["zrelay_1"])
    options: dict[str, dict[str, object]] = {
        "nas1": {"ConnectTimeout": "5s", "Compression": False, "ServerAliveInterval": "1m"},
        "vault": {"ConnectTimeout": 5, "Compression": False},
    }
    inv = write_inventory(tmp_path / "inv.yml", lab, [{"source": f"nas1:{src}", "targets": [f"vault:{dst}"]}],
                          hosts={host: {"ssh_options": opts} for host, opts in options.items()})
    state = str(tmp_path / "state.db")

    checked = zrelay("inventory", "validate", inventory=inv)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    before = zrelay("--state", state, "status", "--json", inventory=inv)
    assert before.returncode == 0 and "Traceback" not in before.stderr, before.stderr
    [row] = json.loads(before.stdout)
    assert (row["state"], row["source_newest"]) == ("missing", "zrelay_1"), row

    sync = zrelay("--state", state, "sync", "--json", inventory=inv)
    assert sync.returncode == 0, sync.stderr + sync.stdout
    assert [r["outcome"] for r in json.loads(sync.stdout)] == ["ok"]
    assert snapshots(lab, "vault", dst) == snapshots(lab, "nas1", src)

    after = zrelay("--state", state, "status", "--json", inventory=inv)
    assert after.returncode == 0, after.stderr
    [row] = json.loads(after.stdout)
    assert (row["state"], row["common_base"]) == ("in-sync", "zrelay_1"), row


def test_a_bad_ssh_option_stops_before_connecting(lab, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Refused by the inventory check, the same line status prints: nothing connects, exit 2."""
    inv = write_inventory(tmp_path / "inv.yml", lab, [], hosts={"nas1": {"ssh_options": {"ConnectTimeout": "5 sec"}}})
    for args in (("inventory", "validate"), ("status",)):
        proc = zrelay(*args, inventory=inv)
        one_line_error(proc)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "ssh_options.ConnectTimeout: '5 sec' is not a time in seconds" in proc.stdout + proc.stderr
