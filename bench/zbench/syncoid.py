"""syncoid: zrelay against syncoid (sanoid's replication tool) on the same lab pair and snapshots.

Both run from this machine with both ends remote (nas1 → vault), i.e. both relay the stream through
the orchestrator:

- zrelay: ``zrelay -i INVENTORY sync --json`` (relay mode, whole CLI timed);
- syncoid: ``syncoid --no-sync-snap --sshkey LABKEY --sshcipher C -o UserKnownHostsFile=… \
  -o StrictHostKeyChecking=yes root@127.0.0.2:SRC root@127.0.0.4:DST`` (whole command timed), with
  syncoid's own defaults otherwise (lzop compression and mbuffer on both ends, pv locally);
  ``--no-sync-snap`` so it sends exactly the snapshots zrelay sends. Same cipher as zrelay negotiates.

Two measurements, rotating order:

full     one S MiB random snapshot (``tank/PREFIX/sy-full@s1``) into a fresh target every repetition;
chain    N incrementals: a small base received by both targets first (untimed), then N times: append
         1–4 MiB of random data and snapshot (untimed), run zrelay, run syncoid (each timed). The
         figure is the sum of the N runs: per-run fixed cost counts, as in a cron job.

syncoid on zfs-fuse: syncoid 2.1.0 (Debian 12) lists snapshots with ``zfs get -Hpd 1 -t snapshot``;
zfs-fuse's ``zfs get`` has no ``-t`` ("invalid option 't'"). syncoid then tries its fallback
(``zfs get -Hpd 1 type,guid,creation``, which zfs-fuse has), but getsnapsfallback() prefixes the ssh
command a second time, so the remote host is asked to run ``root@127.0.0.2 zfs get …`` ("bash: line 1:
root@127.0.0.2: command not found", "CRITICAL ERROR: snapshots couldn't be listed … (exit code
32512)"); no flag avoids it (``--no-resume``, ``--no-command-checks`` don't touch that path). The
benchmark therefore puts a 10-line ``ssh`` wrapper first in syncoid's PATH which drops the duplicated
``ssh OPTIONS`` prefix and execs /usr/bin/ssh with everything else unchanged. Each listing on the
source and target then costs syncoid one failed ``zfs get -t`` plus the fallback.
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import sys
from pathlib import Path
from collections.abc import Callable
from typing import Any

from zbench.common import (HOSTS, MB, SOURCE, TARGET, BenchError, Lab, Timed, attempt, log, ratio,
                           rotations, run_timed, summary, zrelay_env, zrelay_sync_results)
from zbench.direct import random_snapshot

METHODS = ("zrelay", "syncoid")
GOAL = 1.0  # zrelay wall time / syncoid wall time

SSH_WRAPPER = r"""#!/bin/bash
# syncoid 2.1.0 getsnapsfallback() runs "$sshcmd $sshcmd HOST zfs get ...": drop the outer "ssh OPTIONS".
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[$i]}" in
    -[bcDEeFIiJLlmOoPpQRSWw]) i=$((i + 1)) ;;
    -*) ;;
    ssh) exec /usr/bin/ssh "${args[@]:$((i + 1))}" ;;
    *) break ;;
  esac
done
exec /usr/bin/ssh "$@"
"""


def run(lab: Lab, *, size_mib: int, reps: int, incrementals: int, inventory_extra: dict[str, Any],
        workdir: Path, cipher: str | None = None) -> dict[str, Any]:
    syncoid_bin = shutil.which("syncoid")
    if syncoid_bin is None:
        raise BenchError("syncoid is not installed (apt-get install -y sanoid)")
    version = run_timed([syncoid_bin, "--version"], what="syncoid --version", ok_codes=(0, 1, 2))[1]
    shim = workdir / "syncoid-bin"
    shim.mkdir(exist_ok=True)
    (shim / "ssh").write_text(SSH_WRAPPER)
    (shim / "ssh").chmod(0o755 | stat.S_IXUSR)
    s_env = dict(os.environ)
    s_env["PATH"] = f"{shim}{os.pathsep}{s_env.get('PATH', '')}"

    if cipher is None:
        from zbench.common import negotiated_algorithms
        cipher = negotiated_algorithms(lab.write_inventory(workdir / "sy-probe.yml", [], **inventory_extra))["send_cipher"]

    base_src, base_dst = f"tank/{lab.prefix}", f"backup/{lab.prefix}"
    lab.zfs(TARGET, "create", "-p", base_dst)
    full_src = f"{base_src}/sy-full"
    snap, src_guid, stream_bytes = random_snapshot(lab, full_src, size_mib)
    chain_src = f"{base_src}/sy-chain"
    targets = {"zrelay": {"full": f"{base_dst}/sy-full-z", "chain": f"{base_dst}/sy-chain-z"},
               "syncoid": {"full": f"{base_dst}/sy-full-s", "chain": f"{base_dst}/sy-chain-s"}}
    inventories = {
        kind: lab.write_inventory(workdir / f"sy-{kind}.yml", [
            {"name": f"bench-sy-{kind}", "source": f"{SOURCE}:{src}", "targets": [f"{TARGET}:{targets['zrelay'][kind]}"]}],
            **inventory_extra)
        for kind, src in (("full", full_src), ("chain", chain_src))}
    state = workdir / "sy-state.db"
    z_env = zrelay_env()

    def zrelay(kind: str) -> Callable[[], Timed]:
        def go() -> Timed:
            timed, r = run_timed([sys.executable, "-m", "zrelay", "--state", str(state), "-i", str(inventories[kind]),
                                  "sync", "--json"], env=z_env, what=f"zrelay sync ({kind})", ok_codes=(0, 1))
            res = zrelay_sync_results(r, f"zrelay sync ({kind})", {"ok"})
            timed.extra = {"bytes": res[0]["bytes"]}
            return timed
        return go

    def syncoid(kind: str) -> Callable[[], Timed]:
        src = full_src if kind == "full" else chain_src
        argv = [syncoid_bin, "--no-sync-snap", "--quiet", "--sshkey", str(lab.key), "--sshcipher", cipher,
                "--sshoption", f"UserKnownHostsFile={lab.known_hosts}", "--sshoption", "StrictHostKeyChecking=yes",
                "--sshoption", "GlobalKnownHostsFile=/dev/null",
                f"root@{HOSTS[SOURCE][0]}:{src}", f"root@{HOSTS[TARGET][0]}:{targets['syncoid'][kind]}"]

        def go() -> Timed:
            timed, r = run_timed(argv, env=s_env, what=f"syncoid ({kind})")
            timed.extra = {"stderr_tail": r.stderr.strip()[-200:]}
            return timed
        return go

    runners: dict[str, dict[str, Callable[[], Timed]]] = {
        m: {k: (zrelay if m == "zrelay" else syncoid)(k) for k in ("full", "chain")} for m in METHODS}

    # -- full ----------------------------------------------------------------------------------
    full_runs: dict[str, list[dict[str, Any]]] = {m: [] for m in METHODS}
    for rep, order in rotations(METHODS, reps):
        for m in order:
            tgt = targets[m]["full"]
            timed = attempt(lab, f"{m} full", runners[m]["full"], lambda tgt=tgt: lab.destroy(TARGET, tgt))
            got = lab.guid(TARGET, f"{tgt}@s1")
            if got != src_guid:
                raise BenchError(f"{m} full: received snapshot GUID {got} != source {src_guid}")
            lab.destroy(TARGET, tgt)
            full_runs[m].append({"rep": rep, "seconds": round(timed.seconds, 3),
                                 "mb_s": round(stream_bytes / timed.seconds / MB, 1),
                                 "orchestrator_cpu_s": round(timed.cpu, 2), **timed.extra})
            log(f"syncoid-cmp full-{size_mib} rep {rep + 1}/{reps} {m:<8} {timed.seconds:6.2f} s  "
                f"{stream_bytes / timed.seconds / MB:6.1f} MB/s  cpu {timed.cpu:5.2f} s")

    # -- chain of incrementals -------------------------------------------------------------------
    log(f"syncoid-cmp: chain of {incrementals} incrementals on {SOURCE}:{chain_src}")
    mnt = f"/{chain_src}"
    recv_ssh = shlex.join(lab.ssh_argv(TARGET))

    def base() -> None:
        lab.zfs(SOURCE, "create", "-p", chain_src)
        lab.ssh(SOURCE, f"dd if=/dev/urandom of={shlex.quote(mnt)}/base bs=1M count=8 status=none && "
                        f"zfs snapshot {shlex.quote(chain_src)}@i0")
        for m in METHODS:  # both targets start from the same base, untimed
            tgt = targets[m]["chain"]
            lab.ssh(SOURCE, f"set -o pipefail; zfs send {shlex.quote(chain_src + '@i0')} | {recv_ssh} "
                            f"{shlex.quote(shlex.join(['zfs', 'receive', '-u', tgt]))}")

    def unbase() -> None:
        lab.destroy(SOURCE, chain_src)
        for m in METHODS:
            lab.destroy(TARGET, targets[m]["chain"])
    attempt(lab, "chain base", base, unbase)
    chain_runs: dict[str, list[dict[str, Any]]] = {m: [] for m in METHODS}
    failures: list[dict[str, str]] = []
    serial = 0
    for rep in range(reps):
        total = {m: 0.0 for m in METHODS}
        cpu = {m: 0.0 for m in METHODS}
        for step, order in rotations(METHODS, incrementals):
            serial += 1
            mib = 1 + serial % 4
            attempt(lab, "chain: new increment", lambda: lab.ssh(
                SOURCE, f"dd if=/dev/urandom of={shlex.quote(mnt)}/f{serial} bs=1M count={mib} status=none && "
                        f"zfs snapshot {shlex.quote(chain_src)}@i{serial}"),
                lambda: lab.destroy(SOURCE, f"{chain_src}@i{serial}"))
            for m in order:
                # redone (same increment) when another session stopped a lab host meanwhile
                try:
                    timed = attempt(lab, f"{m} chain", runners[m]["chain"])
                except BenchError as exc:  # a failed run: kept in the JSON, then the same increment once more
                    failures.append({"method": m, "snapshot": f"i{serial}", "error": str(exc)[:600]})
                    log(f"syncoid-cmp chain {m} @i{serial} FAILED ({str(exc)[:300]}); running it once more")
                    timed = attempt(lab, f"{m} chain", runners[m]["chain"])
                total[m] += timed.seconds
                cpu[m] += timed.cpu
            want = lab.guid(SOURCE, f"{chain_src}@i{serial}")
            for m in METHODS:
                got = lab.guid(TARGET, f"{targets[m]['chain']}@i{serial}")
                if got != want:
                    raise BenchError(f"{m} chain: @i{serial} GUID {got} != source {want}")
        for m in METHODS:
            chain_runs[m].append({"rep": rep, "seconds": round(total[m], 3), "per_run_s": round(total[m] / incrementals, 3),
                                  "orchestrator_cpu_s": round(cpu[m], 2)})
            log(f"syncoid-cmp chain-{incrementals} rep {rep + 1}/{reps} {m:<8} {total[m]:6.2f} s "
                f"({total[m] / incrementals:.2f} s a run)  cpu {cpu[m]:5.2f} s")

    def med(runs: dict[str, list[dict[str, Any]]], m: str, key: str = "seconds") -> float:
        return summary([r[key] for r in runs[m]])["median"]

    out: dict[str, Any] = {
        "syncoid_version": (version.stdout or version.stderr).strip().splitlines()[0],
        "cipher": cipher, "size_mib": size_mib, "stream_bytes": stream_bytes, "incrementals": incrementals,
        "reps": reps, "goal": GOAL,
        "workaround": "ssh wrapper first in syncoid's PATH: drops the ssh prefix getsnapsfallback() duplicates",
        "full": {"runs": full_runs, "median_seconds": {m: med(full_runs, m) for m in METHODS},
                 "median_mb_s": {m: med(full_runs, m, "mb_s") for m in METHODS}},
        "chain": {"runs": chain_runs, "median_seconds": {m: med(chain_runs, m) for m in METHODS},
                  "failed_runs": failures},
    }
    for kind in ("full", "chain"):
        s = out[kind]["median_seconds"]
        out[kind]["ratio_zrelay_vs_syncoid_time"] = ratio(s["zrelay"], s["syncoid"])
    return out


def table_rows(d: dict[str, Any]) -> list[tuple[str, str, str, float | None, str, bool | None]]:
    rows = []
    for kind, label in (("full", f"full {d['size_mib']} MiB"), ("chain", f"{d['incrementals']} incrementals, one run each")):
        s = d[kind]["median_seconds"]
        r = d[kind]["ratio_zrelay_vs_syncoid_time"]
        if kind == "chain" and d[kind].get("failed_runs"):
            label += f"; {len(d[kind]['failed_runs'])} failed run(s) redone, see JSON"
        rows.append((f"syncoid: {label}, zrelay/syncoid wall time", f"{s['zrelay']:.2f} s", f"{s['syncoid']:.2f} s",
                     r, f"≤ {GOAL:.1f} (time)", r is not None and r <= GOAL))
    return rows
