"""Tests of the zfs-fuse lab itself: three isolated hosts reachable over SSH."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.environ.get("ZRELAY_LAB", "").strip().lower() == "openzfs",
                       reason="tests of the zfs-fuse lab itself (namespaces, 127.0.0.2-4:22, zfslab.py); "
                              "ZRELAY_LAB=openzfs runs the OpenZFS guests instead"),
]


def ssh(lab, host: str, command: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(
        ["ssh", "-F", str(lab.ssh_config), lab.hosts[host], command],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    if check:
        assert r.returncode == 0, f"ssh {host} {command!r}: exit {r.returncode}\n{r.stderr}"
    return r


def cli(lab, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(lab.script), *args],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )


def status(lab) -> dict:
    r = cli(lab, "status", "--json")
    return json.loads(r.stdout)["hosts"]


def ssh_banner(addr: str) -> bytes:
    with socket.create_connection((addr, 22), timeout=5) as s:
        return s.recv(64)


def test_all_three_hosts_up(lab):
    assert lab.hosts == {"nas1": "127.0.0.2", "nas2": "127.0.0.3", "vault": "127.0.0.4"}
    r = cli(lab, "status", "--json")
    hosts = json.loads(r.stdout)["hosts"]
    assert r.returncode == (0 if all(h["state"] == "up" for h in hosts.values()) else 3), r.stdout + r.stderr
    assert list(hosts)[:3] == list(lab.hosts)  # then any extra hosts (up --hosts N) running beside them
    seen_pids = set()
    for name in lab.hosts:
        h = hosts[name]
        assert h["state"] == "up", (name, h)
        assert h["address"] == lab.hosts[name]
        assert all(h["pids"].values()), h
        seen_pids.update(h["pids"].values())
        assert ssh_banner(h["address"]).startswith(b"SSH-2.0-")
    assert len(seen_pids) == 9  # a namespace, a daemon and an sshd per host


def test_state_files_present(lab):
    for path in (lab.key, lab.key.with_suffix(".pub"), lab.known_hosts, lab.ssh_config):
        assert path.is_file(), path
    assert not str(lab.dir).startswith(str(lab.script.parents[1]))  # state is not in the repo
    known = lab.known_hosts.read_text().split("\n")
    addrs = [line.split()[0] for line in known if line.strip()]
    assert addrs[:3] == list(lab.hosts.values())  # then any extra hosts' (127.0.0.5 ...)
    keys = [line.split()[2] for line in known if line.strip()]
    assert len(set(keys)) == len(keys) >= 3  # one host key per sshd


@pytest.mark.parametrize("host", ["nas1", "nas2", "vault"])
def test_ssh_sees_only_own_pool(lab, host):
    pool = lab.pools[host]
    r = ssh(lab, host, "zpool list -H -o name")
    assert r.stdout.split() == [pool]
    r = ssh(lab, host, "zfs list -H -o name")
    names = r.stdout.splitlines()  # names may contain spaces
    assert pool in names
    assert all(n == pool or n.startswith(pool + "/") for n in names), names
    other = {"tank": "backup", "backup": "tank"}[pool]
    assert ssh(lab, host, f"zfs list {other}", check=False).returncode != 0


def test_ssh_with_explicit_key_and_known_hosts(lab):
    """The generated key and known_hosts work without the ssh_config file."""
    base = [
        "ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={lab.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "IdentitiesOnly=yes", "-i", str(lab.key),
    ]
    for host, addr in lab.hosts.items():
        r = subprocess.run(base + [f"root@{addr}", "zpool list -H -o name"],
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == [lab.pools[host]]


def test_wrong_host_key_is_rejected(lab, tmp_path):
    """known_hosts is really checked: nas1's address with nas2's key fails."""
    lines = {l.split()[0]: l.split() for l in lab.known_hosts.read_text().splitlines() if l.strip()}
    nas2_key = lines[lab.hosts["nas2"]]
    bad = tmp_path / "known_hosts"
    bad.write_text(f"{lab.hosts['nas1']} {nas2_key[1]} {nas2_key[2]}\n")
    r = subprocess.run(
        ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
         "-o", f"UserKnownHostsFile={bad}", "-o", "GlobalKnownHostsFile=/dev/null",
         "-o", "IdentitiesOnly=yes", "-i", str(lab.key), f"root@{lab.hosts['nas1']}", "true"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 255
    assert "host key" in r.stderr.lower()


@pytest.mark.skipif(shutil.which("ss") is None, reason="ss (iproute2) not installed")
def test_each_sshd_listens_only_on_its_address(lab):
    pids = {h: s["pids"]["sshd"] for h, s in status(lab).items() if h in lab.hosts}
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    for host, pid in pids.items():
        listening = [line.split()[3] for line in out.splitlines() if f"pid={pid}," in line]
        assert listening == [f"{lab.hosts[host]}:22"], (host, listening)


def zfs_mounts(text: str) -> dict[str, str]:
    """mountpoint -> dataset for the fuse.zfs lines of a /proc/*/mounts text."""
    out = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2] == "fuse.zfs":
            out[fields[1]] = fields[0]
    return out


def test_pools_are_mounted_only_inside_their_namespace(lab):
    with open("/proc/self/mounts") as f:
        outside = zfs_mounts(f.read())
    assert "/tank" not in outside and "/backup" not in outside
    for host, pool in lab.pools.items():
        inside = zfs_mounts(lab.run(host, "cat", "/proc/self/mounts").stdout)
        assert inside.get(f"/{pool}") == pool, (host, inside)
        assert all(ds == pool or ds.startswith(pool + "/") for ds in inside.values()), (host, inside)


def test_dataset_on_nas1_not_visible_on_nas2(lab):
    name = f"tank/{lab.unique('iso')}"
    lab.zfs("nas1", "create", name)
    try:
        assert name in lab.zfs("nas1", "list", "-H", "-o", "name").split()
        assert ssh(lab, "nas1", f"zfs list -H -o name {name}").stdout.strip() == name
        assert ssh(lab, "nas2", f"zfs list -H -o name {name}", check=False).returncode != 0
        assert not lab.exists("nas2", name)
        assert name not in lab.zfs("nas2", "list", "-H", "-o", "name").split()
    finally:
        lab.destroy("nas1", name)
    assert not lab.exists("nas1", name)


def test_run_passes_exit_status_and_output(lab):
    r = cli(lab, "run", "nas1", "--", "sh", "-c", "exit 7")
    assert r.returncode == 7
    r = cli(lab, "run", "vault", "--", "zpool", "list", "-H", "-o", "name")
    assert (r.returncode, r.stdout.strip()) == (0, "backup")
    r = cli(lab, "run", "nope", "--", "true")
    assert r.returncode != 0 and "unknown host" in r.stderr


def test_fixture_run_check(lab):
    r = lab.run("nas2", "sh", "-c", "echo out; echo err >&2; exit 3", check=False)
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")
    with pytest.raises(subprocess.CalledProcessError) as exc:
        lab.run("nas2", "zfs", "list", "tank/does-not-exist")
    assert "does not exist" in str(exc.value)
    assert lab.run("nas2", ["zpool", "list", "-H", "-o", "name"]).stdout.strip() == "tank"
    a, b = lab.unique(), lab.unique("x")
    assert a != b and a.startswith("t") and b.startswith("x") and len(a) < 16


def test_up_twice_is_a_noop(lab):
    before = status(lab)
    for _ in range(2):
        t0 = time.monotonic()
        r = cli(lab, "up")
        elapsed = time.monotonic() - t0
        assert r.returncode == 0, r.stderr
        assert "already up" in r.stderr
        assert elapsed < 10, elapsed
    after = status(lab)
    assert {h: after[h]["pids"] for h in lab.hosts} == {h: before[h]["pids"] for h in lab.hosts}


def test_stop_start_host_keeps_pool_data(lab):
    host, pool = "nas1", lab.pools["nas1"]
    name = f"{pool}/{lab.unique('keep')}"
    other = f"tank/{lab.unique('other')}"  # same pool name on nas2
    guid = lab.zpool(host, "list", "-H", "-o", "guid", pool).strip()
    lab.zfs(host, "create", name)
    lab.run(host, "sh", "-c", f"echo payload > /{name}/file")
    lab.zfs(host, "snapshot", f"{name}@s1")
    lab.zfs("nas2", "create", other)
    lab.run("nas2", "sh", "-c", f"echo nas2 > /{other}/file")
    old_pids = status(lab)[host]["pids"]
    try:
        lab.stop_host(host)
        st = status(lab)
        assert st[host]["state"] == "down"
        assert st["nas2"]["state"] == "up" and st["vault"]["state"] == "up"
        assert ssh(lab, host, "true", check=False).returncode == 255
        with pytest.raises(lab.LabError):
            lab.run(host, "true")
        # nas1 unmounting its /tank must not detach nas2's /tank
        assert ssh(lab, "nas2", f"cat /{other}/file").stdout == "nas2\n"
        assert lab.zfs("nas2", "get", "-H", "-o", "value", "mounted", "tank").strip() == "yes"
        lab.start_host(host)
        st = status(lab)[host]
        assert st["state"] == "up"
        assert st["pids"]["sshd"] != old_pids["sshd"]
        assert lab.zpool(host, "list", "-H", "-o", "guid", pool).strip() == guid
        assert ssh(lab, host, f"cat /{name}/file").stdout == "payload\n"
        snaps = ssh(lab, host, f"zfs list -H -t snapshot -o name -r {name}").stdout.split()
        assert snaps == [f"{name}@s1"]
        assert ssh(lab, "nas2", f"cat /{other}/file").stdout == "nas2\n"
    finally:
        if status(lab)[host]["state"] != "up":
            lab.start_host(host)
        lab.destroy(host, name)
        lab.destroy("nas2", other)
