"""relay-512: one incompressible snapshot nas1 → vault, three ways, fresh target every time.

(a) zrelay: ``zrelay -i INVENTORY sync`` (whole CLI timed; the relay's own time noted too)
(b) OpenSSH relay from this machine: ``ssh nas1 zfs send … | ssh vault zfs receive -u …``
(c) local pipe on nas1: ``zfs send … | ssh vault zfs receive -u …`` (no orchestrator hop)

All three use the same cipher (the one zrelay negotiates), the same snapshot, the
same pools, and run in rotating order so drift (page cache, other load) spreads evenly.
When OpenSSH's own default cipher differs, (b) is also run with that default, for
information ("zrelay vs ssh as people type it").
"""

from __future__ import annotations

import json
import shlex
import sys
import tempfile
from pathlib import Path
from collections.abc import Callable
from typing import Any

from zbench.common import (BENCH, MB, MiB, SOURCE, TARGET, BenchError, Lab, Timed, attempt, log,
                           pipe_timed, ratio, rotations, run_timed, summary, warm_up, zrelay_env,
                           zrelay_sync_results)

METHODS = ("zrelay", "openssh-relay", "local-pipe")


def run(lab: Lab, *, size_mib: int, reps: int, ssh_opts: list[str], inventory_extra: dict[str, Any],
        workdir: Path, openssh_default: bool = False) -> dict[str, Any]:
    methods = METHODS + (("openssh-default-cipher",) if openssh_default else ())
    base_src, base_dst = f"tank/{lab.prefix}", f"backup/{lab.prefix}"
    src = f"{base_src}/relay-src"
    snap = f"{src}@s1"
    copy = f"{base_dst}/relay-copy"
    need = size_mib * MiB * 1.15
    for host, ds in ((SOURCE, "tank"), (TARGET, "backup")):
        if lab.avail(host, ds) < need:
            raise BenchError(f"{host}:{ds} has less than {need / MiB:.0f} MiB free")

    log(f"relay-512: writing {size_mib} MiB of random data to {SOURCE}:{src}")
    lab.zfs(SOURCE, "create", "-p", src)
    lab.zfs(TARGET, "create", "-p", base_dst)
    mnt = lab.zfs(SOURCE, "get", "-H", "-o", "value", "mountpoint", src).strip()
    lab.ssh(SOURCE, f"dd if=/dev/urandom of={shlex.quote(mnt)}/data bs=1M count={size_mib} "
                    "iflag=fullblock status=none && sync")
    lab.zfs(SOURCE, "snapshot", snap)
    src_guid = lab.guid(SOURCE, snap)
    # Stream size, and a warm cache for everyone (zfs send from cache is ~10x faster than receive).
    stream_bytes = int(lab.ssh(SOURCE, f"zfs send {shlex.quote(snap)} | wc -c").stdout.strip())
    log(f"relay-512: stream is {stream_bytes / MiB:.1f} MiB")

    inventory = lab.write_inventory(workdir / "relay.yml", [
        {"name": "bench-relay", "source": f"{SOURCE}:{src}", "targets": [f"{TARGET}:{copy}"]}],
        **inventory_extra)
    send = shlex.join(["zfs", "send", snap])
    receive = shlex.join(["zfs", "receive", "-u", copy])

    def zrelay() -> Timed:
        with tempfile.NamedTemporaryFile(prefix="relaylog", suffix=".json", dir=workdir, delete=False) as f:
            relay_log = f.name
        env = zrelay_env()
        env["BENCH_RELAY_LOG"] = relay_log
        timed, r = run_timed([sys.executable, str(BENCH / "zrelay_timed.py"), "-i", str(inventory),
                              "sync", "--json"], env=env, what="zrelay sync", ok_codes=(0, 1))
        results = zrelay_sync_results(r, "zrelay sync", {"ok"})
        records = json.loads(Path(relay_log).read_text() or "[]")
        Path(relay_log).unlink()
        timed.extra = {"bytes": results[0]["bytes"], "job_seconds": results[0]["seconds"],
                       "relay_seconds": sum(x["seconds"] for x in records)}
        return timed

    def openssh_relay(opts: list[str] = ssh_opts) -> Timed:
        return pipe_timed(lab.ssh_argv(SOURCE, *opts) + [send], lab.ssh_argv(TARGET, *opts) + [receive],
                          what="OpenSSH relay")

    def local_pipe() -> Timed:
        inner = f"set -o pipefail; {send} | {shlex.join(lab.ssh_argv(TARGET, *ssh_opts) + [receive])}"
        timed, _ = run_timed(lab.in_namespace(SOURCE, ["bash", "-c", inner]), what="local pipe on nas1")
        timed.cpu = 0.0  # the pipe runs "on nas1": nothing to attribute to an orchestrator
        return timed

    runners: dict[str, Callable[[], Timed]] = {"zrelay": zrelay, "openssh-relay": openssh_relay,
                                               "local-pipe": local_pipe,
                                               "openssh-default-cipher": lambda: openssh_relay([])}
    warm_up(lab, "relay-512", openssh_relay, lambda: lab.destroy(TARGET, copy))
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    for rep, order in rotations(methods, reps):
        for method in order:
            timed = attempt(lab, method, runners[method], lambda: lab.destroy(TARGET, copy))
            got = lab.guid(TARGET, f"{copy}@s1")
            if got != src_guid:
                raise BenchError(f"{method}: received snapshot GUID {got} != source {src_guid}")
            lab.destroy(TARGET, copy)
            row = {"rep": rep, "seconds": round(timed.seconds, 3), "mb_s": round(stream_bytes / timed.seconds / MB, 1),
                   "orchestrator_cpu_s": round(timed.cpu, 2), **timed.extra}
            if timed.extra.get("relay_seconds"):
                row["relay_mb_s"] = round(stream_bytes / timed.extra["relay_seconds"] / MB, 1)
            runs[method].append(row)
            log(f"relay-512 rep {rep + 1}/{reps} {method:<22} {timed.seconds:6.2f} s  "
                f"{row['mb_s']:6.1f} MB/s  cpu {timed.cpu:5.2f} s"
                + (f"  (relay alone {row['relay_mb_s']:.1f} MB/s)" if "relay_mb_s" in row else ""))

    def med(method: str, key: str = "mb_s") -> float:
        return summary([r[key] for r in runs[method]])["median"]

    out = {
        "size_mib": size_mib, "stream_bytes": stream_bytes, "reps": reps, "runs": runs,
        "median_mb_s": {m: med(m) for m in methods},
        "median_seconds": {m: med(m, "seconds") for m in methods},
        "median_orchestrator_cpu_s": {m: med(m, "orchestrator_cpu_s") for m in methods},
        "zrelay_relay_only_mb_s": med("zrelay", "relay_mb_s"),
    }
    out["ratio_zrelay_vs_openssh_relay"] = ratio(out["median_mb_s"]["zrelay"], out["median_mb_s"]["openssh-relay"])
    out["ratio_zrelay_relay_only_vs_openssh_relay"] = ratio(out["zrelay_relay_only_mb_s"],
                                                            out["median_mb_s"]["openssh-relay"])
    if openssh_default:
        out["ratio_zrelay_vs_openssh_default_cipher"] = ratio(out["median_mb_s"]["zrelay"],
                                                              out["median_mb_s"]["openssh-default-cipher"])
    out["ratio_zrelay_vs_local_pipe"] = ratio(out["median_mb_s"]["zrelay"], out["median_mb_s"]["local-pipe"])
    return out
