"""Faults an operator's bad day brings, and what zrelay says and does next (either tier).

A stream whose receive completed is a success even when its sender's end dies
afterwards; a failed row counts the bytes that moved; a receive that fails
because of the target (a snapshot taken meanwhile) says so; a killed process is
named with its host; messages name hosts; a connection failure is not "nothing to
do", and a port that never speaks SSH is told from one that refuses.

Exit status lost after the last byte is made deterministic with a test-only key
whose forced command puts a ``zfs`` shim first on PATH (never the product's
code): the shim runs the real ``zfs send``, closes its output, waits until the
test has seen the snapshot arrive on the target, then dies (SIGKILL to itself, or
to its sshd session: the connection drops with the exit status unsent).
"""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.integration.helpers import (REPO, make_dataset, snapshots, write, write_inventory, zrelay)

# --- helpers ----------------------------------------------------------------------------------


def _sync_json(inv: Path, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], dict]:
    proc = zrelay("sync", "--json", *args, inventory=inv, env=env)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc, json.loads(proc.stdout)[0]


def _prop(lab, host: str, dataset: str, prop: str) -> str:
    return lab.run(host, "zfs", "get", "-H", "-o", "value", prop, dataset).stdout.strip()


def _processes(lab, host: str, start: str, needle: str) -> list[str]:
    """pids of processes on HOST whose command line starts with START and holds NEEDLE
    (no '@' in needles: zfs-fuse's client rewrites its argv to "zfs send tank/x snap");
    ``send -nvP`` size estimates left out."""
    out = lab.run(host, "ps", "-e", "-o", "pid=,args=", check=False).stdout
    found = []
    for line in out.splitlines():
        pid, _, args = line.strip().partition(" ")
        args = args.strip()
        words = args.split()
        if args.startswith(start) and any(w == needle or w.startswith(needle + "@") for w in words) \
                and not any(w.startswith("-n") for w in words):
            found.append(pid)
    return found


def _wait_for(what: str, check, timeout: float = 120.0, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"zrelay ended before {what}: {out}{err}")
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def _popen_sync(inv: Path, *args: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "zrelay", "-i", str(inv), "--state", str(inv.parent / "state.db"),
            "sync", "--json", *args]
    return subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen[str]) -> tuple[int, dict, str]:
    out, err = proc.communicate(timeout=300)
    assert "Traceback" not in err, err
    assert out.strip(), err
    return proc.returncode, json.loads(out)[0], err


# --- a test-only key whose sessions' `zfs send` dies after its last byte ------------------------------

SHIM = r"""#!/bin/sh
# zrelay test shim (tests/integration/test_stream_faults.py): a `zfs send` stream runs whole,
# then its end is lost; everything else is the real zfs.
if [ "$1" != send ]; then exec "$REAL_ZFS" "$@"; fi
for arg; do case "$arg" in -n*) exec "$REAL_ZFS" "$@" ;; esac; done
"$REAL_ZFS" "$@" || exit $?
exec >&-
i=0
while [ ! -e {flag} ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i + 1)); done
if [ {mode} = session ]; then
    p=$$
    while [ "$p" -gt 1 ]; do
        p=$(ps -o ppid= -p "$p" | tr -d ' ')
        case "$(ps -o comm= -p "$p")" in sshd*) break ;; esac
    done
    kill -KILL "$p"
else
    kill -KILL $$
fi
"""

FORCED = """# zrelay test forced command: the session's commands find the zfs shim first on PATH
REAL_ZFS=$(command -v zfs); export REAL_ZFS
PATH={shimdir}:$PATH; export PATH
exec sh -c "$SSH_ORIGINAL_COMMAND"
"""


def _authorized_keys(lab) -> str:
    """The file the source host's sshd reads keys from (the fuse hosts share one)."""
    return str(lab.dir / "authorized_keys") if lab.tier == "fuse" else "/root/.ssh/authorized_keys"


def _host_path(lab, host: str, local: Path, mode: str) -> str:
    """``local`` made available on HOST (a copy inside the guest on the OpenZFS tier) with ``mode``."""
    path = lab.put_file(host, local)
    lab.run(host, "chmod", mode, path)
    return path


@pytest.fixture
def dying_sender(lab, tmp_path: Path):
    """make(mode) → (identity file, flag path on nas1): a key for nas1 whose `zfs send` streams
    lose their end once the flag exists (mode "kill": the shim is killed; "session": its sshd
    session is, so the connection drops). The key's line leaves authorized_keys afterwards."""
    added: list[str] = []
    keys = _authorized_keys(lab)

    def make(mode: str) -> tuple[Path, str]:
        tag = f"zrelay-test-{lab.unique('k')}"
        key = tmp_path / f"{tag}.key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", tag, "-f", str(key)], check=True)
        flag = f"/tmp/{tag}.go"
        shim_dir = tmp_path / f"{tag}.bin"
        shim_dir.mkdir()
        (shim_dir / "zfs").write_text(SHIM.replace("{flag}", shlex.quote(flag)).replace("{mode}", mode))
        shim = _host_path(lab, "nas1", shim_dir / "zfs", "755")
        (tmp_path / f"{tag}.sh").write_text(FORCED.replace("{shimdir}", shlex.quote(shim.rsplit("/", 1)[0])))
        forced = _host_path(lab, "nas1", tmp_path / f"{tag}.sh", "644")
        line = f'command="sh {forced}",no-pty {key.with_suffix(".key.pub").read_text().strip()}'
        lab.run("nas1", "sh", "-c", 'printf "%s\\n" "$1" >> "$2"', "add-key", line, keys)
        added.append(tag)
        return key, flag

    yield make
    for tag in added:
        lab.run("nas1", "sh", "-c", 'grep -vF -- "$1" "$2" > "$2.$$"; cat "$2.$$" > "$2"; rm -f "$2.$$"',
                "drop-key", tag, keys, check=False)
        lab.run("nas1", "rm", "-f", f"/tmp/{tag}.go", check=False)


@pytest.mark.lab
@pytest.mark.parametrize("mode", ["kill", "session"])
def test_stream_that_arrived_is_a_success_though_its_sender_died(lab, tmp_path: Path, dying_sender,
                                                                 mode: str) -> None:
    """The receive completed; the sender's exit status never came (killed / session dropped).
    The target has the snapshot with the source's GUID: the run is ok with a warning naming
    the sender's fault, and the full receive's follow-up (canmount=noauto) and anchors ran."""
    name = lab.unique()
    src, dst = f"tank/{name}", f"{lab.pools['vault']}/{name}"
    make_dataset(lab, "nas1", src, mib=lab.mib(4), snaps=["zrelay_1"])
    key, flag = dying_sender(mode)
    inv = write_inventory(tmp_path / "inv.yml", lab, [{"source": f"nas1:{src}", "targets": [f"vault:{dst}"]}],
                          hosts={"nas1": {"address": lab.hosts["nas1"], "identity_file": str(key)}})
    proc = _popen_sync(inv, "--relay")
    goal = snapshots(lab, "nas1", src)
    _wait_for("the snapshot on the target", lambda: snapshots(lab, "vault", dst) == goal, proc=proc)
    lab.run("nas1", "touch", flag)
    code, result, err = _finish(proc)

    assert code == 0, (result, err)
    assert result["outcome"] == "ok", result
    message = result["message"]
    assert f"vault:{dst}@zrelay_1 arrived complete" in message, message
    if mode == "kill":
        assert "zfs send on nas1 was killed (signal KILL)" in message, message
    else:
        assert "zfs send on nas1 ended without an exit status" in message, message
    assert result["bytes"] > lab.mib(4) * 2**20, result
    assert snapshots(lab, "vault", dst) == goal
    assert _prop(lab, "vault", dst, "canmount") == "noauto"
    if lab.capabilities("vault").holds:   # the base is secured as after any transfer
        holds = lab.run("vault", "zfs", "holds", "-H", f"{dst}@zrelay_1").stdout
        assert "zrelay:" in holds, holds


@pytest.mark.lab
def test_failed_row_counts_the_bytes_that_moved_also_on_step_two(lab, tmp_path: Path) -> None:
    """A full step, then an incremental that the target's quota stops midway: the failed
    row reports what moved (both steps' bytes), not 0 B."""
    name = lab.unique()
    src, parent = f"tank/{name}", f"{lab.pools['vault']}/{name}"
    lab.run("nas1", "zfs", "create", src)
    write(lab, "nas1", src, "small", 1)
    lab.run("nas1", "zfs", "snapshot", f"{src}@a")
    write(lab, "nas1", src, "big", lab.mib(40, minimum=12))
    lab.run("nas1", "zfs", "snapshot", f"{src}@b")
    lab.run("vault", "zfs", "create", "-o", f"quota={lab.mib(16, minimum=6)}M", parent)
    dst = f"{parent}/replica"
    inv = write_inventory(tmp_path / "inv.yml", lab, [{"source": f"nas1:{src}", "targets": [f"vault:{dst}"]}])

    proc, result = _sync_json(inv)
    assert proc.returncode == 1 and result["outcome"] == "failed", result
    assert "quota" in result["message"] or "space" in result["message"], result
    assert [s for s, _ in snapshots(lab, "vault", dst)] == ["a"]   # step 1 arrived, step 2 did not
    assert result["bytes"] > 2**20 + lab.mib(2) * 2**20, result   # step 1 whole and part of step 2


@pytest.mark.lab
def test_snapshot_taken_on_the_target_mid_stream_is_named(lab, tmp_path: Path) -> None:
    """zfs says "invalid backup stream"; the reason is a snapshot taken on the target while
    it received, and the message says that instead of "corrupted in transit"."""
    name = lab.unique()
    src, dst = f"tank/{name}", f"{lab.pools['vault']}/{name}"
    make_dataset(lab, "nas1", src, snaps=["zrelay_1"])
    inv = write_inventory(tmp_path / "inv.yml", lab, [{"source": f"nas1:{src}", "targets": [f"vault:{dst}"]}])
    assert zrelay("sync", inventory=inv).returncode == 0
    write(lab, "nas1", src, "big", lab.mib(300))
    lab.run("nas1", "zfs", "snapshot", f"{src}@zrelay_2")

    proc = _popen_sync(inv, "--relay")
    _wait_for("the receive on the target", lambda: _processes(lab, "vault", "zfs receive", dst), proc=proc)
    time.sleep(0.5)
    lab.run("vault", "zfs", "snapshot", f"{dst}@meanwhile")
    code, result, err = _finish(proc)

    assert code == 1 and result["outcome"] == "failed", (result, err)
    message = result["message"]
    assert f"@meanwhile was taken on vault:{dst} while the stream was being received" in message, message
    assert "corrupted in transit" not in message, message
    assert result["bytes"] > 0, result
    assert [s for s, _ in snapshots(lab, "vault", dst)] == ["zrelay_1", "meanwhile"]


@pytest.mark.lab
def test_direct_killed_send_names_the_process_and_its_host(lab, tmp_path: Path) -> None:
    """`zfs send` killed under a direct stream: "zfs send on nas1 was killed (signal KILL)", not
    "nas1: Killed". On zfs-fuse the daemon finishes the stream anyway (the client only waits
    for it): then the stream arrived and the run is ok with that warning; on OpenZFS the
    stream stops and the row fails with the bytes that moved."""
    name = lab.unique()
    src, dst = f"tank/{name}", f"{lab.pools['vault']}/{name}"
    make_dataset(lab, "nas1", src, mib=lab.mib(300), snaps=["zrelay_1"])
    inv = write_inventory(tmp_path / "inv.yml", lab, [{"source": f"nas1:{src}", "targets": [f"vault:{dst}"]}],
                          hosts={"nas1": {"address": lab.hosts["nas1"], "direct": True,
                                          "direct_identity_file": str(lab.peer_key),
                                          "direct_known_hosts": str(lab.peer_known_hosts)}})
    proc = _popen_sync(inv, "--direct")
    pids = _wait_for("zfs send on nas1", lambda: _processes(lab, "nas1", "zfs send", src), proc=proc)
    time.sleep(0.5)
    lab.run("nas1", "kill", "-KILL", *pids)
    code, result, err = _finish(proc)

    message = result["message"]
    assert "zfs send on nas1 was killed (signal KILL)" in message, message
    assert "nas1: Killed" not in message, message
    assert result["bytes"] > 0, result
    if snapshots(lab, "vault", dst) == snapshots(lab, "nas1", src):
        assert code == 0 and result["outcome"] == "ok", result
        assert f"vault:{dst}@zrelay_1 arrived complete" in message, message
        assert _prop(lab, "vault", dst, "canmount") == "noauto"
    else:
        assert code == 1 and result["outcome"] == "failed", result


# --- messages name hosts -------------------------------------------------------------------------


@pytest.mark.lab
def test_refusals_name_the_hosts_when_both_paths_are_the_same(lab, tmp_path: Path) -> None:
    name = lab.unique()
    ds = f"tank/{name}"
    make_dataset(lab, "nas1", ds, snaps=["zrelay_1"])
    inv = write_inventory(tmp_path / "inv.yml", lab, [{"source": f"nas1:{ds}", "targets": [f"nas2:{ds}"]}])
    assert zrelay("sync", inventory=inv).returncode == 0
    lab.run("nas2", "zfs", "snapshot", f"{ds}@local")
    lab.run("nas1", "zfs", "snapshot", f"{ds}@zrelay_2")
    proc, result = _sync_json(inv)
    assert result["outcome"] == "refused", result
    assert f"nas2:{ds} has diverged from nas1:{ds} (@local after" in result["message"], result
    assert f"{ds} has diverged from {ds}" not in result["message"]

    other = f"{ds}-other"
    make_dataset(lab, "nas1", other, snaps=["zrelay_1"])
    make_dataset(lab, "nas2", other, snaps=["unrelated"])
    inv2 = write_inventory(tmp_path / "inv2.yml", lab, [{"source": f"nas1:{other}", "targets": [f"nas2:{other}"]}])
    proc, result = _sync_json(inv2)
    assert result["outcome"] == "refused", result
    assert f"nas2:{other} exists but shares no snapshot with nas1:{other}" in result["message"], result
    assert f"`zfs destroy -r {other}` on nas2" in result["message"], result


# --- connection failures (no lab: nothing listens, or something listens and stays mute) ------------------


def _free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def _offline_inventory(tmp_path: Path, hosts: dict[str, dict], jobs: list[dict]) -> Path:
    import yaml
    doc = {"all": {"vars": {"user": "root"}, "hosts": hosts}, "zrelay": {"jobs": jobs}}
    path = tmp_path / "inv.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_dry_run_after_connection_failures_names_every_host(tmp_path: Path) -> None:
    """Both ends down: both are named (not only the first), and a row that could not be
    planned is not "(no remote commands: nothing to do)"."""
    a, b = _free_port("127.0.0.1"), _free_port("127.0.0.1")
    inv = _offline_inventory(tmp_path, {"down1": {"address": "127.0.0.1", "port": a},
                                        "down2": {"address": "127.0.0.1", "port": b}},
                             [{"source": "down1:tank/x", "targets": ["down2:backup/x"]}])
    proc = zrelay("sync", "--dry-run", inventory=inv, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text
    assert f"down1: cannot connect to 127.0.0.1:{a}" in text, text
    assert f"down2: cannot connect to 127.0.0.1:{b}" in text, text
    assert "nothing to do" not in text, text


def test_dry_run_of_an_unreachable_host_is_not_nothing_to_do(tmp_path: Path) -> None:
    port = _free_port("127.0.0.1")
    inv = _offline_inventory(tmp_path, {"down": {"address": "127.0.0.1", "port": port}},
                             [{"source": "down:tank/x", "targets": ["down:backup/x"]}])
    proc = zrelay("sync", "--dry-run", inventory=inv, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"down: cannot connect to 127.0.0.1:{port}" in proc.stdout, proc.stdout
    assert "nothing to do" not in proc.stdout + proc.stderr, proc.stdout


@pytest.fixture
def mute_port() -> Iterator[tuple[str, int]]:
    """A TCP port on 127.0.0.1 that accepts connections and never says a word (stopped after)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            held.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        server.close()


def test_port_that_never_speaks_ssh_is_not_cannot_connect(tmp_path: Path, mute_port: tuple[str, int]) -> None:
    address, port = mute_port
    inv = _offline_inventory(tmp_path, {"mute": {"address": address, "port": port,
                                                 "ssh_options": {"ConnectTimeout": 2}}},
                             [{"source": "mute:tank/x", "targets": ["mute:backup/x"]}])
    proc = zrelay("sync", "--dry-run", inventory=inv, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    text = proc.stdout + proc.stderr
    assert f"mute: no SSH banner from {address}:{port} within 2 s" in text, text
    assert "cannot connect" not in text, text
