"""Wire compression and mbuffer on the real lab: the pipelines run, and the data arrives identical."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.integration.helpers import snapshots, write, write_inventory, zrelay

pytestmark = pytest.mark.lab


def _needs(lab: Any, *tools: str) -> None:
    for host in ("nas1", "vault"):
        for tool in tools:
            if lab.run(host, "sh", "-c", f"command -v {tool}", check=False).returncode != 0:
                pytest.skip(f"{tool} is not installed on {host}")


def _compressible(lab: Any, host: str, dataset: str, filename: str, mib: int) -> None:
    """``mib`` MiB of text (compresses well), plus a little random data so streams differ."""
    mount = lab.run(host, "zfs", "get", "-H", "-o", "value", "mountpoint", dataset).stdout.strip()
    lab.run(host, "sh", "-c", f"seq 1 {mib * 150000} | head -c {mib}M > {mount}/{filename}")


def _sums(lab: Any, host: str, dataset: str) -> str:
    """sha256 of every file of the dataset's mounted head (the replica is mounted for reading)."""
    if lab.run(host, "zfs", "get", "-H", "-o", "value", "mounted", dataset).stdout.strip() != "yes":
        lab.run(host, "zfs", "mount", dataset)
    mount = lab.run(host, "zfs", "get", "-H", "-o", "value", "mountpoint", dataset).stdout.strip()
    out = lab.run(host, "sh", "-c", f"cd {mount} && sha256sum $(ls | sort)").stdout
    if host == "vault":
        lab.run(host, "zfs", "umount", dataset)  # a mounted replica would block the next incremental
    return out


@pytest.fixture
def agent(lab, tmp_path: Path) -> Iterator[dict[str, str]]:
    sock = tmp_path / "agent.sock"
    out = subprocess.run(["ssh-agent", "-a", str(sock), "-s"], capture_output=True, text=True, check=True).stdout
    pid = int(out.split("SSH_AGENT_PID=")[1].split(";")[0])
    env = {"SSH_AUTH_SOCK": str(sock)}
    try:
        subprocess.run(["ssh-add", "-q", str(lab.key)], env={**os.environ, **env}, check=True,
                       capture_output=True)
        yield env
    finally:
        os.kill(pid, 15)


def test_relay_with_zstd_and_mbuffer_full_and_incremental(lab, tmp_path: Path) -> None:
    _needs(lab, "zstd", "mbuffer")
    name = lab.unique()
    src, dst = f"tank/{name}", f"backup/{name}"
    lab.run("nas1", "zfs", "create", "-p", src)
    _compressible(lab, "nas1", src, "text", 8)
    write(lab, "nas1", src, "random", 1)
    lab.run("nas1", "zfs", "snapshot", f"{src}@zrelay_1")
    # send_options: [] keeps OpenZFS from sending compressed blocks (-c), which turns wire compression off
    inv = write_inventory(tmp_path / "inv.yml", lab, [
        {"source": f"nas1:{src}", "targets": [f"vault:{dst}"], "compress": "zstd", "buffer": "16M",
         "send_options": []}])
    receive = "zfs receive -s -u" if lab.capabilities("vault").resume else "zfs receive -u"
    # the replica's properties: at receive where zfs takes -o/-x, else set right after it
    at_receive = lab.capabilities("vault").receive_props
    sends = lab.capabilities("nas1").send_props   # zfs send -p
    if at_receive:
        receive += " -o canmount=noauto" + (" -x mountpoint -x sharenfs -x sharesmb" if sends else "")

    dry = zrelay("sync", "--dry-run", "--json", inventory=inv)
    assert dry.returncode == 0, dry.stderr
    # the stream and the replica's canmount; bookmark and hold commands follow where ZFS has them
    assert [(c["host"], c["command"]) for c in json.loads(dry.stdout)[0]["commands"]][:3 - at_receive] == [
        ("nas1", f'{{ zfs send {"-p " if sends else ""}{src}@zrelay_1; echo "zrelay-stage 1 exit $?" >&2; }} '
                 '| { zstd -q -c -1 -T1; echo "zrelay-stage 2 exit $?" >&2; } | mbuffer -q -s 128k -m 16M'),
        ("vault", '{ mbuffer -q -s 128k -m 16M; echo "zrelay-stage 1 exit $?" >&2; } '
                  f'| {{ zstd -q -d -c; echo "zrelay-stage 2 exit $?" >&2; }} | {receive} {dst}'),
        *([] if at_receive else [("vault", f"zfs set canmount=noauto {dst}")])]

    full = zrelay("sync", "--json", inventory=inv)
    assert full.returncode == 0, full.stderr + full.stdout
    result = json.loads(full.stdout)[0]
    assert result["outcome"] == "ok"
    assert 0 < result["bytes"] < 5 * 2**20  # 9 MiB of stream, compressed on the wire
    assert snapshots(lab, "vault", dst) == snapshots(lab, "nas1", src)

    _compressible(lab, "nas1", src, "text2", 4)
    lab.run("nas1", "zfs", "snapshot", f"{src}@zrelay_2")
    incr = zrelay("sync", "--json", inventory=inv)
    assert incr.returncode == 0, incr.stderr + incr.stdout
    assert json.loads(incr.stdout)[0]["plans"][0]["kind"] == "incremental"
    assert snapshots(lab, "vault", dst) == snapshots(lab, "nas1", src)
    assert _sums(lab, "vault", dst) == _sums(lab, "nas1", src)


def test_receiver_failure_with_compression_blames_the_target(lab, tmp_path: Path) -> None:
    """A target changed since its snapshot: zfs receive fails behind zstd -d; the target is blamed
    with zfs's own message, and nothing is left running."""
    _needs(lab, "lz4")
    name = lab.unique()
    src, dst = f"tank/{name}", f"backup/{name}"
    lab.run("nas1", "zfs", "create", "-p", src)
    _compressible(lab, "nas1", src, "text", 2)
    lab.run("nas1", "zfs", "snapshot", f"{src}@zrelay_1")
    inv = write_inventory(tmp_path / "inv.yml", lab, [{"source": f"nas1:{src}", "targets": [f"vault:{dst}"]}],
                          hosts={"nas1": {"compress": "lz4"}})
    assert zrelay("sync", inventory=inv).returncode == 0
    lab.run("vault", "zfs", "mount", dst)
    write(lab, "vault", dst, "local-change")
    _compressible(lab, "nas1", src, "text2", 2)
    lab.run("nas1", "zfs", "snapshot", f"{src}@zrelay_2")
    proc = zrelay("sync", "--json", inventory=inv)
    assert proc.returncode == 1
    result = json.loads(proc.stdout)[0]
    assert result["outcome"] == "failed" and result["failed_host"] == "vault"
    assert "modified since most recent snapshot" in result["message"]
    assert "zrelay-stage" not in result["message"]
    assert [s for s, _ in snapshots(lab, "vault", dst)] == ["zrelay_1"]


def test_direct_with_lz4_and_mbuffer(lab, tmp_path: Path, agent: dict[str, str]) -> None:
    _needs(lab, "lz4", "mbuffer", "pv")
    name = lab.unique()
    src, dst = f"tank/{name}", f"backup/{name}"
    lab.run("nas1", "zfs", "create", "-p", src)
    _compressible(lab, "nas1", src, "text", 4)
    lab.run("nas1", "zfs", "snapshot", f"{src}@zrelay_1")
    inv = write_inventory(tmp_path / "inv.yml", lab, [{"source": f"nas1:{src}", "targets": [f"vault:{dst}"]}],
                          hosts={"nas1": {"address": lab.hosts["nas1"], "buffer": "auto",
                                          "direct_known_hosts": str(lab.peer_known_hosts)},
                                 "vault": {"compress": "lz4"}})
    dry = zrelay("sync", "--direct", "--dry-run", "--json", inventory=inv, env=agent)
    assert dry.returncode == 0, dry.stderr
    pipeline = json.loads(dry.stdout)[0]["commands"][0]["command"]
    assert '| { lz4 -q -c -1; echo "zrelay-stage 3 exit $?" >&2; } ' in pipeline
    assert "zrelay-stage 101 exit" in pipeline and "lz4 -q -d -c" in pipeline

    full = zrelay("sync", "--direct", "--json", inventory=inv, env=agent)
    assert full.returncode == 0, full.stderr + full.stdout
    result = json.loads(full.stdout)[0]
    assert result["outcome"] == "ok" and result["bytes"] >= 4 * 2**20  # pv counts the stream itself
    assert snapshots(lab, "vault", dst) == snapshots(lab, "nas1", src)
    assert _sums(lab, "vault", dst) == _sums(lab, "nas1", src)
