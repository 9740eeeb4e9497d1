"""direct-512 and direct-2048: ``zrelay sync --direct`` of one incompressible snapshot nas1 → vault,
against the same transfer typed by hand on nas1. The larger size shows the stream itself: zrelay's
start (interpreter, connecting, listing, the login check; about half a second) weighs a quarter as
much there.

(a) zrelay direct: ``zrelay -i INVENTORY sync --direct --json`` (whole CLI timed). zrelay starts
    ``zfs send … | pv | ssh … vault 'zfs receive -u …'`` on nas1 and supervises it; the stream never
    passes through this machine.
(b) local pipe on nas1: ``zfs send … | ssh … vault zfs receive -u …`` run on nas1 itself (via
    ``zfslab.py run nas1``), with the login options zrelay's direct mode gives nas1's ssh
    (BatchMode, StrictHostKeyChecking, the key and known_hosts from the inventory) and OpenSSH's
    default cipher order, as a user types it: the baseline and the goal (zrelay ≥ 0.95 × local pipe).
(c) the same local pipe with zrelay's cipher order (``-o Ciphers=`` AES-GCM first, which zrelay's
    direct mode uses where both CPUs have AES instructions): information only. (b) against (c) shows
    what the cipher order is worth, (c) against (a) what zrelay's start and supervision cost.

Same snapshot, same pools, warm cache, fresh target for every repetition (GUID checked), rotating order.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from collections.abc import Callable
from typing import Any

from zbench.common import (MB, MiB, SOURCE, TARGET, HOSTS, BenchError, Lab, Timed, attempt, log, ratio,
                           rotations, run_timed, summary, warm_up, zrelay_env, zrelay_sync_results)

METHODS = ("zrelay-direct", "local-pipe", "local-pipe-aes")
GOAL = 0.95


def random_snapshot(lab: Lab, src: str, size_mib: int, snap: str = "s1") -> tuple[str, str, int]:
    """``size_mib`` MiB of random data in ``SOURCE:src``, snapshotted; returns (snapshot, guid, stream bytes).
    Also warms the cache with one untimed ``zfs send | wc -c``."""
    need = size_mib * MiB * 1.15
    for host, ds in ((SOURCE, "tank"), (TARGET, "backup")):
        if lab.avail(host, ds) < need:
            raise BenchError(f"{host}:{ds} has less than {need / MiB:.0f} MiB free")
    log(f"writing {size_mib} MiB of random data to {SOURCE}:{src}")
    full = f"{src}@{snap}"

    def write() -> None:
        lab.zfs(SOURCE, "create", "-p", src)
        mnt = lab.zfs(SOURCE, "get", "-H", "-o", "value", "mountpoint", src).strip()
        lab.ssh(SOURCE, f"dd if=/dev/urandom of={shlex.quote(mnt)}/data bs=1M count={size_mib} "
                        "iflag=fullblock status=none && sync")
        lab.zfs(SOURCE, "snapshot", full)
    # another session may stop nas1 meanwhile ("host down" tests): start again from scratch
    attempt(lab, "writing the source", write, lambda: lab.destroy(SOURCE, src))
    guid = lab.guid(SOURCE, full)
    stream_bytes = int(lab.ssh(SOURCE, f"zfs send {shlex.quote(full)} | wc -c").stdout.strip())
    log(f"stream is {stream_bytes / MiB:.1f} MiB")
    return full, guid, stream_bytes


def run(lab: Lab, *, size_mib: int, reps: int, inventory_extra: dict[str, Any], workdir: Path) -> dict[str, Any]:
    base_src, base_dst = f"tank/{lab.prefix}", f"backup/{lab.prefix}"
    src = f"{base_src}/direct-src-{size_mib}"
    copy = f"{base_dst}/direct-copy-{size_mib}"
    snap, src_guid, stream_bytes = random_snapshot(lab, src, size_mib)
    lab.zfs(TARGET, "create", "-p", base_dst)

    # nas1 reaches vault at vault's lab address; the key and known_hosts live on the same
    # filesystem inside nas1's namespace (as in tests/integration/test_direct.py).
    extra = {k: v for k, v in inventory_extra.items() if k != "ssh_options"}  # --cipher applies to zrelay's own legs
    inventory = lab.write_inventory(workdir / "direct.yml", [
        {"name": "bench-direct", "source": f"{SOURCE}:{src}", "targets": [f"{TARGET}:{copy}"]}], **extra)
    _make_direct(inventory, lab)

    from zrelay.zfs.direct_ssh import AES_FIRST_CIPHERS, ssh_argv
    direct_ssh = ssh_argv(HOSTS[TARGET][0], identity_file=str(lab.key), known_hosts=str(lab.known_hosts),
                          user="root")
    aes_ssh = ssh_argv(HOSTS[TARGET][0], identity_file=str(lab.key), known_hosts=str(lab.known_hosts),
                       user="root", ciphers=AES_FIRST_CIPHERS)
    send = shlex.join(["zfs", "send", snap])
    receive = shlex.join(["zfs", "receive", "-u", copy])
    env = zrelay_env()
    env["SSH_AUTH_SOCK"] = ""  # the key named in the inventory, not an agent
    state = workdir / "direct-state.db"

    def zrelay_direct() -> Timed:
        timed, r = run_timed([sys.executable, "-m", "zrelay", "--state", str(state), "-i", str(inventory),
                              "sync", "--direct", "--json"], env=env, what="zrelay sync --direct", ok_codes=(0, 1))
        results = zrelay_sync_results(r, "zrelay sync --direct", {"ok"})
        timed.extra = {"bytes": results[0]["bytes"], "job_seconds": results[0]["seconds"]}
        return timed

    def pipe_with(ssh: list[str]) -> Callable[[], Timed]:
        def local_pipe() -> Timed:
            inner = f"set -o pipefail; {send} | {shlex.join(ssh)} {shlex.quote(receive)}"
            timed, _ = run_timed(lab.in_namespace(SOURCE, ["bash", "-c", inner]), what="local pipe on nas1")
            timed.cpu = 0.0
            return timed
        return local_pipe

    local_pipe = pipe_with(direct_ssh)
    runners: dict[str, Callable[[], Timed]] = {"zrelay-direct": zrelay_direct, "local-pipe": local_pipe,
                                               "local-pipe-aes": pipe_with(aes_ssh)}
    warm_up(lab, f"direct-{size_mib}", local_pipe, lambda: lab.destroy(TARGET, copy))
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in METHODS}
    for rep, order in rotations(METHODS, reps):
        for method in order:
            timed = attempt(lab, method, runners[method], lambda: lab.destroy(TARGET, copy))
            got = lab.guid(TARGET, f"{copy}@s1")
            if got != src_guid:
                raise BenchError(f"{method}: received snapshot GUID {got} != source {src_guid}")
            lab.destroy(TARGET, copy)
            os.sync()   # the next run starts with no write-back of this one's 2 GiB still going on
            row = {"rep": rep, "seconds": round(timed.seconds, 3),
                   "mb_s": round(stream_bytes / timed.seconds / MB, 1),
                   "orchestrator_cpu_s": round(timed.cpu, 2), **timed.extra}
            runs[method].append(row)
            log(f"direct-{size_mib} rep {rep + 1}/{reps} {method:<14} {timed.seconds:6.2f} s  "
                f"{row['mb_s']:6.1f} MB/s  orchestrator cpu {timed.cpu:5.2f} s")

    def med(method: str, key: str = "mb_s") -> float:
        return summary([r[key] for r in runs[method]])["median"]

    out: dict[str, Any] = {
        "size_mib": size_mib, "stream_bytes": stream_bytes, "reps": reps, "runs": runs,
        "direct_ssh": direct_ssh, "cipher": _nas1_cipher(lab, direct_ssh),
        "aes_ssh": aes_ssh, "aes_cipher": _nas1_cipher(lab, aes_ssh),
        "median_mb_s": {m: med(m) for m in METHODS},
        "median_seconds": {m: med(m, "seconds") for m in METHODS},
        "median_orchestrator_cpu_s": {m: med(m, "orchestrator_cpu_s") for m in METHODS},
        "goal": GOAL,
    }
    out["ratio_zrelay_direct_vs_local_pipe"] = ratio(out["median_mb_s"]["zrelay-direct"],
                                                     out["median_mb_s"]["local-pipe"])
    out["ratio_zrelay_direct_vs_local_pipe_aes"] = ratio(out["median_mb_s"]["zrelay-direct"],
                                                         out["median_mb_s"]["local-pipe-aes"])
    lab.destroy(SOURCE, src)   # the pools are small: room for the next benchmark's source
    return out


def _make_direct(inventory: Path, lab: Lab) -> None:
    """Turn the generated inventory's source host into a direct-mode source."""
    import json
    doc = json.loads(inventory.read_text())
    doc["all"]["hosts"][SOURCE].update({"direct": True, "direct_identity_file": str(lab.key),
                                        "direct_known_hosts": str(lab.known_hosts)})
    doc["all"]["hosts"][TARGET]["direct_address"] = HOSTS[TARGET][0]
    inventory.write_text(json.dumps(doc, indent=1) + "\n")


def _nas1_cipher(lab: Lab, ssh: list[str]) -> str:
    """The cipher nas1's ``ssh`` negotiates with vault."""
    r = run_timed(lab.in_namespace(SOURCE, [*ssh[:1], "-v", *ssh[1:], "true"]), what="ssh -v on nas1")[1]
    for line in r.stderr.splitlines():
        if "kex: server->client cipher:" in line:
            return line.split("cipher:", 1)[1].split()[0]
    return "unknown"


def table_rows(d: dict[str, Any]) -> list[tuple[str, str, str, float | None, str, bool | None]]:
    mb = d["median_mb_s"]
    r = d["ratio_zrelay_direct_vs_local_pipe"]
    rows: list[tuple[str, str, str, float | None, str, bool | None]] = [
        (f"direct-{d['size_mib']} (zrelay sync --direct vs local pipe on nas1)",
         f"{mb['zrelay-direct']:.1f} MB/s", f"{mb['local-pipe']:.1f} MB/s", r, f"≥ {GOAL}",
         r is not None and r >= GOAL)]
    if "local-pipe-aes" in mb:   # results recorded before the third method have no such row
        rows.append((f"direct-{d['size_mib']} (vs the local pipe with zrelay's cipher order)",
                     f"{mb['zrelay-direct']:.1f} MB/s", f"{mb['local-pipe-aes']:.1f} MB/s",
                     d["ratio_zrelay_direct_vs_local_pipe_aes"], "info", None))
    return rows
