"""The lab with more hosts: ``zfslab.py up --hosts N`` beside nas1/nas2/vault, in groups.

The daemon's tests need many hosts that really run at once; the lab's own three
must stay exactly as they are while extra hosts come and go (other test
sessions use them at the same time).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.labfixture import REPO, load_zfslab
from zrelay.inventory.load import load_inventory, loads_inventory
from zrelay.inventory.model import Inventory

FUSE_ONLY = pytest.mark.skipif(
    os.environ.get("ZRELAY_LAB", "").strip().lower() == "openzfs",
    reason="the N-host lab is zfs-fuse only (namespaces on 127.0.0.N:22); the OpenZFS tier has two guests")


@pytest.fixture(scope="module")
def z() -> ModuleType:
    return load_zfslab()


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "lab" / "zfslab.py"), *args], capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL, env=env)


def comparable(inv: Inventory) -> dict[str, Any]:
    """What an inventory means, without where each line came from."""
    return {
        "hosts": {n: dataclasses.replace(h, origin=None, var_sources={}, setting_sources={})
                  for n, h in inv.hosts.items()},
        "groups": {n: (g.hosts, g.children, dict(g.vars)) for n, g in inv.groups.items()},
        "jobs": [dataclasses.replace(j, origin=None) for j in inv.jobs],
        "settings": inv.settings,
    }


# -- without the lab: names, addresses, groups, the generated inventory, bad arguments


def test_extra_hosts_addresses_and_stable_groups(z: ModuleType) -> None:
    assert z.host_spec("nas1") == ("127.0.0.2", "tank") and z.host_spec("vault") == ("127.0.0.4", "backup")
    assert z.host_spec("h04") == ("127.0.0.5", "tank")
    assert z.host_spec("h99") == ("127.0.0.100", "tank")
    for bad in ("h03", "h100", "h4", "x04", "nas9"):
        with pytest.raises(z.LabError, match="unknown host"):
            z.host_spec(bad)
    # the group follows the host's number, not how many hosts run: h07 is in site_b in a lab of 7 or 9
    assert [z.host_group(f"h{n:02d}") for n in range(4, 10)] == ["site_a", "site_b"] * 3
    assert [z.host_group(h) for h in z.HOSTS] == ["storage", "storage", "vaults"]


def test_generated_inventory_of_three_hosts_means_inventory_lab_yml(
        z: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default lab's generated inventory says what inventory/lab.yml says (they cannot drift)."""
    monkeypatch.setenv("ZRELAY_LAB_DIR", z.DEFAULT_DIR)
    generated = loads_inventory(z.inventory_text(list(z.HOSTS)), "/lab/inventory.yml")
    assert comparable(generated) == comparable(load_inventory(REPO / "inventory" / "lab.yml"))


def test_generated_inventory_puts_extra_hosts_in_their_groups(
        z: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ZRELAY_LAB_DIR", str(tmp_path / "lab"))
    inv = loads_inventory(z.inventory_text([*z.HOSTS, "h04", "h05", "h06"]), "/lab/inventory.yml")
    assert inv.groups["site_a"].hosts == ("h04", "h06") and inv.groups["site_b"].hosts == ("h05",)
    assert inv.groups["storage"].hosts == ("nas1", "nas2") and inv.groups["vaults"].hosts == ("vault",)
    h05 = inv.hosts["h05"]
    assert (h05.address, h05.port, h05.user) == ("127.0.0.6", 22, "root")
    assert h05.known_hosts == str(tmp_path / "lab" / "known_hosts")
    assert h05.identity_file == str(tmp_path / "lab" / "id_ed25519")
    assert len(inv.jobs) == len(load_inventory(REPO / "inventory" / "lab.yml").jobs)
    # no empty group when only one parity runs
    inv = loads_inventory(z.inventory_text([*z.HOSTS, "h05"]), "/lab/inventory.yml")
    assert "site_a" not in inv.groups and inv.groups["site_b"].hosts == ("h05",)


@pytest.mark.parametrize("args, message", [
    (["up", "--hosts", "2"], "--hosts 2: must be 3 to 99"),
    (["up", "--hosts", "100"], "--hosts 100: must be 3 to 99"),
    (["up", "--hosts", "five"], "--hosts 'five': not a whole number"),
    (["up", "--hosts", "5", "nas1"], "give --hosts N or HOST names, not both"),
    (["down", "--only-extra", "nas1"], "'nas1' is not an extra host (h04..h99); stop-host nas1 stops it"),
    (["down", "h04"], "HOST names go with --only-extra"),
])
def test_bad_arguments_exit_2_with_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    """Refused before anything starts or stops (the lab directory is not even created)."""
    r = cli(*args, env=dict(os.environ, ZRELAY_LAB_DIR=str(tmp_path / "lab")))
    assert r.returncode == 2, r.stderr
    assert message in r.stderr.splitlines()[-1], r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "lab").exists()


# -- on the fuse lab: two extra hosts up and down while the usual three keep running


def ssh_zfs_list(lab: Any, address: str, known_hosts: Path | None = None) -> subprocess.CompletedProcess[str]:
    extra = ["-o", f"UserKnownHostsFile={known_hosts}"] if known_hosts else []
    return subprocess.run(["ssh", "-F", str(lab.ssh_config), *extra, address, "zfs list -H -o name"],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


@FUSE_ONLY
@pytest.mark.lab
def test_two_extra_hosts_up_in_their_groups_then_down_alone(lab: Any, z: ModuleType, tmp_path: Path) -> None:
    before = {h: s for h, s in lab.status().items()}
    usual = {h: before[h]["pids"] for h in lab.hosts}
    assert all(before[h]["state"] == "up" for h in lab.hosts)
    # the next two extra hosts after any another session runs (theirs are left alone)
    top = max([z.FIRST_EXTRA - 1, *(z.extra_number(h) for h in before if h not in lab.hosts)])
    new = [z.extra_name(top + 1), z.extra_name(top + 2)]
    try:
        r = cli("up", "--hosts", str(top + 2))
        assert r.returncode == 0, r.stderr
        assert all(f"{h}: already up" in r.stderr for h in lab.hosts), r.stderr
        st = json.loads(cli("status", "--json").stdout)
        inv = load_inventory(st["inventory"])
        known = {line.split()[0]: line.split()[2] for line in lab.known_hosts.read_text().splitlines()}
        for h in new:
            addr = z.host_spec(h)[0]
            assert st["hosts"][h]["state"] == "up" and st["hosts"][h]["address"] == addr, st["hosts"][h]
            assert st["hosts"][h]["group"] == z.host_group(h)
            # ssh_config checks the host key strictly against the lab's known_hosts, by address and by name
            for name in (addr, h):
                r = ssh_zfs_list(lab, name)
                assert (r.returncode, r.stdout.split()) == (0, ["tank"]), r.stderr
            host_key = (lab.dir / h / "ssh_host_ed25519_key.pub").read_text().split()[1]
            assert known[addr] == host_key
            # the zrelay inventory has it, in its group
            assert inv.hosts[h].address == addr and inv.hosts[h].known_hosts == str(lab.known_hosts)
            assert h in inv.groups[z.host_group(h)].hosts
        assert {g for h in new for g in inv.hosts[h].groups} == {"site_a", "site_b"}
        # a wrong key for an extra host's address is refused: the key really is checked
        bad = tmp_path / "known_hosts"
        bad.write_text(f"{z.host_spec(new[0])[0]} ssh-ed25519 {known[z.host_spec(new[1])[0]]}\n")
        r = ssh_zfs_list(lab, z.host_spec(new[0])[0], known_hosts=bad)
        assert r.returncode == 255 and "host key" in r.stderr.lower(), r.stderr
    finally:
        r = cli("down", "--only-extra", *new)
    assert r.returncode == 0, r.stderr
    after = lab.status()
    assert not set(new) & set(after)
    assert {h: after[h]["pids"] for h in lab.hosts} == usual  # the usual three never restarted
    assert all(after[h]["state"] == "up" for h in lab.hosts)
    addresses = [line.split()[0] for line in lab.known_hosts.read_text().splitlines()]
    assert not {z.host_spec(h)[0] for h in new} & set(addresses)
    assert not set(new) & set(load_inventory(lab.dir / "inventory.yml").hosts)
    for h in new:
        assert not z.tcp_accepts(z.host_spec(h)[0])  # its sshd is gone
    for h in lab.hosts:
        r = ssh_zfs_list(lab, lab.hosts[h])
        assert r.returncode == 0 and lab.pools[h] in r.stdout.split(), r.stderr


@FUSE_ONLY
@pytest.mark.lab
def test_down_stops_extra_hosts_of_its_lab_directory(z: ModuleType, tmp_path: Path) -> None:
    """A lab of its own (another directory, only two extra hosts): `down` finds them by their pid files."""
    problems = z.preflight()
    if problems:
        pytest.skip("zfs-fuse lab unavailable: " + "; ".join(problems))
    env = dict(os.environ, ZRELAY_LAB_DIR=str(tmp_path / "lab"))
    hosts = ["h97", "h98"]
    try:
        r = cli("up", *hosts, env=env)
        assert r.returncode == 0, r.stderr
        r = cli("status", "--json", env=env)
        st = json.loads(r.stdout)["hosts"]
        assert r.returncode == 3  # nas1, nas2 and vault are not up in this directory
        assert [st[h]["state"] for h in hosts] == ["up", "up"]
        assert [st[h]["group"] for h in hosts] == ["site_b", "site_a"]
        pids = [p for h in hosts for p in st[h]["pids"].values()]
        r = cli("down", env=env)
        assert r.returncode == 0, r.stderr
        st = json.loads(cli("status", "--json", env=env).stdout)["hosts"]
        assert list(st) == list(z.HOSTS)  # the extra hosts are out of the lab
        assert all(z.is_zombie(p) for p in pids)  # gone (or exited, waiting to be reaped)
        assert not any(z.tcp_accepts(z.host_spec(h)[0]) for h in hosts)
    finally:
        cli("down", "--purge", env=env)
