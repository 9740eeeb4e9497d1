"""`zrelay sync --direct`: the source pipes into its own ssh to the target, supervised by zrelay."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from tests.integration.helpers import make_dataset, snapshots, write, write_inventory, zrelay
from zrelay.zfs import direct_ssh


@pytest.fixture
def agent(lab, tmp_path: Path) -> Iterator[dict[str, str]]:
    """An ssh-agent holding the lab key, as an operator's workstation would have (stopped after)."""
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


def _inventory(lab, tmp_path: Path, jobs: list[dict], **source_vars: object) -> Path:
    """The source's direct_known_hosts (and any direct_identity_file) are paths on the source host:
    lab.peer_known_hosts / lab.peer_key (the lab's own files on the fuse tier, files inside the guests
    on the OpenZFS tier); write_inventory sets the targets' direct_address."""
    return write_inventory(tmp_path / "inv.yml", lab, jobs, hosts={
        "nas1": {"address": lab.hosts["nas1"], "direct_known_hosts": str(lab.peer_known_hosts), **source_vars}})


def test_direct_with_forwarded_agent_full_and_incremental(lab, tmp_path: Path, agent: dict[str, str]) -> None:
    name = lab.unique()
    src, dst = f"tank/{name}", f"backup/{name}"
    make_dataset(lab, "nas1", src, mib=lab.mib(8, minimum=2), snaps=["zrelay_1", "zrelay_2"])
    inv = _inventory(lab, tmp_path, [{"source": f"nas1:{src}", "targets": [f"vault:{dst}"]}])

    dry = zrelay("sync", "--direct", "--dry-run", inventory=inv, env=agent)
    assert dry.returncode == 0, dry.stderr
    assert "| ssh -o BatchMode=yes -o StrictHostKeyChecking=yes" in dry.stdout
    assert "vault$ zfs receive" not in dry.stdout  # the receive runs through the source's ssh
    # the whole pipeline is one line, to grep and paste (a pipe has no width: nothing is wrapped)
    pipeline = next(line for line in dry.stdout.splitlines() if "| ssh " in line)
    assert pipeline.lstrip().startswith("nas1$ ") and "zfs send" in pipeline
    # -s where receives resume, -o/-x where receive sets properties (OpenZFS)
    assert re.search(rf"zfs receive (-s )?-u( -[ox] \S+)* {re.escape(dst)}'", pipeline)

    full = zrelay("sync", "--direct", "--json", inventory=inv, env=agent)
    assert full.returncode == 0, full.stderr + full.stdout
    result = json.loads(full.stdout)[0]
    assert result["outcome"] == "ok" and result["bytes"] > lab.mib(8, minimum=2) * 2**20  # pv counted the stream
    assert snapshots(lab, "vault", dst) == snapshots(lab, "nas1", src)

    write(lab, "nas1", src, "more")
    lab.run("nas1", "zfs", "snapshot", f"{src}@zrelay_3")
    incr = zrelay("sync", "--direct", inventory=inv, env=agent)
    assert incr.returncode == 0, incr.stderr
    assert snapshots(lab, "vault", dst) == snapshots(lab, "nas1", src)


def test_direct_with_a_key_on_the_source_via_inventory(lab, tmp_path: Path) -> None:
    name = lab.unique()
    src, dst = f"tank/{name}", f"backup/{name}"
    make_dataset(lab, "nas1", src, snaps=["zrelay_1"])
    inv = _inventory(lab, tmp_path, [{"source": f"nas1:{src}", "targets": [f"vault:{dst}"]}],
                     direct=True, direct_identity_file=str(lab.peer_key))
    proc = zrelay("sync", "--json", inventory=inv, env={"SSH_AUTH_SOCK": ""})
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert snapshots(lab, "vault", dst) == snapshots(lab, "nas1", src)
    # the stream rode the login check's connection, and the run ended that connection
    stream = next(c["command"] for c in json.loads(proc.stdout)[0]["commands"] if "zfs send" in c["command"])
    master = re.search(r"-o ControlMaster=no -o ControlPath=(/tmp/zrelay-login-[0-9a-f]+) ", stream)
    # AES-GCM first where both CPUs have AES instructions (the master was made so); else ssh's own order
    both_aes = all(lab.run(h, *direct_ssh.cpu_aes_argv(), check=False).returncode == 0 for h in ("nas1", "vault"))
    if both_aes:
        assert f"-o Ciphers={','.join(direct_ssh.AES_FIRST_CIPHERS)} " in stream, stream
        assert master is not None, stream
        assert lab.run("nas1", "test", "-e", master.group(1), check=False).returncode == 1, \
            "the master outlived the run"
    else:
        assert "Ciphers=" not in stream and master is None, stream
    # --relay overrides the inventory's direct: true
    dry = zrelay("sync", "--relay", "--dry-run", inventory=inv)
    assert "| ssh" not in dry.stdout


def test_direct_ciphers_setting_is_passed_to_the_source_ssh(lab, tmp_path: Path) -> None:
    name = lab.unique()
    src, dst = f"tank/{name}", f"backup/{name}"
    make_dataset(lab, "nas1", src, snaps=["zrelay_1"])
    inv = _inventory(lab, tmp_path, [{"source": f"nas1:{src}", "targets": [f"vault:{dst}"]}],
                     direct=True, direct_identity_file=str(lab.peer_key),
                     direct_ciphers="chacha20-poly1305@openssh.com")
    proc = zrelay("sync", "--json", inventory=inv, env={"SSH_AUTH_SOCK": ""})
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert snapshots(lab, "vault", dst) == snapshots(lab, "nas1", src)
    stream = next(c["command"] for c in json.loads(proc.stdout)[0]["commands"] if "zfs send" in c["command"])
    assert "-o Ciphers=chacha20-poly1305@openssh.com " in stream and "ControlMaster=no" in stream, stream


def test_direct_refused_before_sending_without_agent_or_key(lab, tmp_path: Path) -> None:
    name = lab.unique()
    make_dataset(lab, "nas1", f"tank/{name}", snaps=["zrelay_1"])
    inv = _inventory(lab, tmp_path, [{"source": f"nas1:tank/{name}", "targets": [f"vault:backup/{name}"]}])
    proc = zrelay("sync", "--direct", inventory=inv, env={"SSH_AUTH_SOCK": ""})
    assert proc.returncode == 1
    assert "SSH_AUTH_SOCK" in proc.stderr and "--relay" in proc.stderr
    assert snapshots(lab, "vault", f"backup/{name}") == []


def test_direct_refused_when_source_does_not_know_the_target_key(lab, tmp_path: Path) -> None:
    name = lab.unique()
    make_dataset(lab, "nas1", f"tank/{name}", snaps=["zrelay_1"])
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    inv = _inventory(lab, tmp_path, [{"source": f"nas1:tank/{name}", "targets": [f"vault:backup/{name}"]}],
                     direct_identity_file=str(lab.peer_key), direct_known_hosts=lab.put_file("nas1", empty))
    proc = zrelay("sync", "--direct", inventory=inv)
    assert proc.returncode == 1
    assert "cannot log in to vault" in proc.stderr and "Host key verification failed" in proc.stderr
    assert snapshots(lab, "vault", f"backup/{name}") == []


def test_direct_receiver_error_is_reported_from_the_target(lab, tmp_path: Path, agent: dict[str, str]) -> None:
    name = lab.unique()
    src, dst = f"tank/{name}", f"backup/{name}"
    make_dataset(lab, "nas1", src, snaps=["zrelay_1"])
    inv = _inventory(lab, tmp_path, [{"source": f"nas1:{src}", "targets": [f"vault:{dst}"]}])
    assert zrelay("sync", "--direct", inventory=inv, env=agent).returncode == 0
    lab.run("vault", "zfs", "mount", dst)
    write(lab, "vault", dst, "local")
    write(lab, "nas1", src, "f2")
    lab.run("nas1", "zfs", "snapshot", f"{src}@zrelay_2")
    proc = zrelay("sync", "--direct", inventory=inv, env=agent)
    assert proc.returncode == 1
    assert "vault: cannot receive incremental stream" in proc.stderr and "modified" in proc.stderr
