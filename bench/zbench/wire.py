"""wire-4x and wire-compress: concurrent relays and wire compression, nas1 → vault.

wire-4x — aggregate throughput of 4 relayed streams at once (4 random snapshots of
``size_mib / 4`` MiB each, incompressible):
  (a) zrelay: one ``zrelay sync`` with 4 jobs (sends/receives per host raised to 4), whole CLI timed;
  (b) baseline: 4 OpenSSH relays (``ssh nas1 zfs send … | ssh vault zfs receive -u …``) started together.
  MB/s = all four streams' bytes per second of wall time (start of the first to end of the last).

wire-compress — one snapshot of compressible data (text, ``size_mib`` MiB):
  (a) zrelay ``compress: zstd``, (b) zrelay ``compress: lz4``, (c) zrelay ``compress: off``
  (whole CLI each), against (d) the OpenSSH relay as people type it (no compression; the
  baseline of the ratios) and (e) the same relay with zstd typed around it
  (``ssh nas1 'zfs send … | zstd -1' | ssh vault 'zstd -d | zfs receive -u …'``), for information.
  MB/s counts the zfs stream (uncompressed) bytes.

Same cipher everywhere, fresh targets, GUIDs checked, rotating order, as the other benchmarks.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from zbench.common import (MB, MiB, SOURCE, TARGET, BenchError, Lab, Timed, attempt, children_cpu, log,
                           pipe_timed, ratio, rotations, run_timed, summary, zrelay_env, zrelay_sync_results)

NAMES = ("wire-4x", "wire-compress")
STREAMS = 4


def _snapshot(lab: Lab, src: str, size_mib: int, *, text: bool) -> tuple[str, str, int]:
    lab.zfs(SOURCE, "create", "-p", src)
    mnt = shlex.quote(lab.zfs(SOURCE, "get", "-H", "-o", "value", "mountpoint", src).strip())
    if text:  # compresses ~4x with zstd -1: numbers, one a line
        lab.ssh(SOURCE, f"seq 1 {size_mib * 150000} | head -c {size_mib}M > {mnt}/data && sync")
    else:
        lab.ssh(SOURCE, f"dd if=/dev/urandom of={mnt}/data bs=1M count={size_mib} iflag=fullblock status=none && sync")
    snap = f"{src}@s1"
    lab.zfs(SOURCE, "snapshot", snap)
    stream = int(lab.ssh(SOURCE, f"zfs send {shlex.quote(snap)} | wc -c").stdout.strip())  # size, warm cache
    return snap, lab.guid(SOURCE, snap), stream


def _zrelay(inventory: Path, workdir: Path, what: str) -> Timed:
    state = workdir / "wire-state.db"
    timed, r = run_timed([sys.executable, "-m", "zrelay", "--state", str(state), "-i", str(inventory), "sync", "--json"],
                         env=zrelay_env(), what=what, ok_codes=(0, 1))
    results = zrelay_sync_results(r, what, {"ok"})
    timed.extra = {"wire_bytes": sum(x["bytes"] for x in results)}
    return timed


def _parallel_pipes(pairs: list[tuple[list[str], list[str]]], what: str) -> Timed:
    """Several ``left | right`` pipes started together; timed until the last ends."""
    cpu0, t0 = children_cpu(), time.perf_counter()
    procs = []
    for left, right in pairs:
        p1 = subprocess.Popen(left, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        p2 = subprocess.Popen(right, stdin=p1.stdout, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert p1.stdout is not None
        p1.stdout.close()
        procs.append((p1, p2))
    bad = []
    for p1, p2 in procs:
        _o, e2 = p2.communicate(timeout=1800)
        _o, e1 = p1.communicate(timeout=1800)
        if p1.returncode or p2.returncode:
            bad.append(f"exit {p1.returncode}|{p2.returncode}: {e1.decode(errors='replace')[-200:]} "
                       f"| {e2.decode(errors='replace')[-200:]}")
    seconds = time.perf_counter() - t0
    if bad:
        raise BenchError(f"{what}: {bad[0]}")
    return Timed(seconds, children_cpu() - cpu0)


def _measure(lab: Lab, name: str, methods: tuple[str, ...], runners: dict[str, Callable[[], Timed]], reps: int,
             copies: list[tuple[str, str]], stream_bytes: int) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}

    def reset() -> None:
        for copy, _guid in copies:
            lab.destroy(TARGET, copy)

    for rep, order in rotations(methods, reps):
        for method in order:
            timed = attempt(lab, method, runners[method], reset)
            for copy, guid in copies:
                got = lab.guid(TARGET, f"{copy}@s1")
                if got != guid:
                    raise BenchError(f"{name} {method}: received GUID {got} != source {guid}")
            reset()
            row = {"rep": rep, "seconds": round(timed.seconds, 3), "mb_s": round(stream_bytes / timed.seconds / MB, 1),
                   "orchestrator_cpu_s": round(timed.cpu, 2), **timed.extra}
            runs[method].append(row)
            log(f"{name} rep {rep + 1}/{reps} {method:<22} {timed.seconds:6.2f} s  {row['mb_s']:6.1f} MB/s  "
                f"cpu {timed.cpu:5.2f} s" + (f"  wire {timed.extra['wire_bytes'] / MiB:.1f} MiB"
                                             if "wire_bytes" in timed.extra else ""))
    return runs


def _medians(runs: dict[str, list[dict[str, Any]]]) -> dict[str, float]:
    return {m: summary([r["mb_s"] for r in rows])["median"] for m, rows in runs.items() if rows}


def _inventory(lab: Lab, workdir: Path, name: str, jobs: list[dict[str, Any]], extra: dict[str, Any],
               limits: int = 2) -> Path:
    path = lab.write_inventory(workdir / f"{name}.yml", jobs, **extra)
    doc = json.loads(path.read_text())
    doc["zrelay"]["limits"] = {"sends_per_host": limits, "receives_per_host": limits}
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


def run_4x(lab: Lab, *, size_mib: int, reps: int, ssh_opts: list[str], inventory_extra: dict[str, Any],
           workdir: Path) -> dict[str, Any]:
    each = max(1, size_mib // STREAMS)
    base_src, base_dst = f"tank/{lab.prefix}/wire4", f"backup/{lab.prefix}/wire4"
    lab.zfs(TARGET, "create", "-p", base_dst)
    log(f"wire-4x: writing {STREAMS} × {each} MiB of random data")
    snaps = [_snapshot(lab, f"{base_src}/s{i}", each, text=False) for i in range(STREAMS)]
    copies = [(f"{base_dst}/c{i}", guid) for i, (_s, guid, _b) in enumerate(snaps)]
    total = sum(b for _s, _g, b in snaps)
    jobs = [{"name": f"wire4-{i}", "source": f"{SOURCE}:{snap.split('@')[0]}", "targets": [f"{TARGET}:{copy}"]}
            for i, ((snap, _g, _b), (copy, _)) in enumerate(zip(snaps, copies))]
    inventory = _inventory(lab, workdir, "wire4", jobs, inventory_extra, limits=STREAMS)
    pairs = [(lab.ssh_argv(SOURCE, *ssh_opts) + [shlex.join(["zfs", "send", snap])],
              lab.ssh_argv(TARGET, *ssh_opts) + [shlex.join(["zfs", "receive", "-u", copy])])
             for (snap, _g, _b), (copy, _) in zip(snaps, copies)]
    methods = ("zrelay-4-jobs", "openssh-4-relays")
    runners = {"zrelay-4-jobs": lambda: _zrelay(inventory, workdir, "zrelay sync (4 jobs)"),
               "openssh-4-relays": lambda: _parallel_pipes(pairs, "4 OpenSSH relays")}
    runs = _measure(lab, "wire-4x", methods, runners, reps, copies, total)
    med = _medians(runs)
    return {"streams": STREAMS, "each_mib": each, "stream_bytes": total, "reps": reps, "runs": runs,
            "median_mb_s": med, "ratio_zrelay_vs_openssh": ratio(med["zrelay-4-jobs"], med["openssh-4-relays"])}


def run_compress(lab: Lab, *, size_mib: int, reps: int, ssh_opts: list[str], inventory_extra: dict[str, Any],
                 workdir: Path) -> dict[str, Any]:
    src, copy = f"tank/{lab.prefix}/wirez", f"backup/{lab.prefix}/wirez-copy"
    lab.zfs(TARGET, "create", "-p", f"backup/{lab.prefix}")
    log(f"wire-compress: writing {size_mib} MiB of text")
    snap, guid, stream = _snapshot(lab, src, size_mib, text=True)
    have = {t for t in ("zstd", "lz4")
            if all(lab.ssh(h, f"command -v {t}", check=False).returncode == 0 for h in (SOURCE, TARGET))}
    if "zstd" not in have:
        raise BenchError("wire-compress needs zstd on nas1 and vault")
    job = {"name": "wirez", "source": f"{SOURCE}:{src}", "targets": [f"{TARGET}:{copy}"]}
    inventories = {algo: _inventory(lab, workdir, f"wirez-{algo}", [{**job, "compress": algo}], inventory_extra)
                   for algo in ("zstd", "lz4", "off") if algo in have or algo == "off"}
    send, receive = shlex.join(["zfs", "send", snap]), shlex.join(["zfs", "receive", "-u", copy])
    runners: dict[str, Callable[[], Timed]] = {
        f"zrelay-{algo}": (lambda inv=inv, algo=algo: _zrelay(inv, workdir, f"zrelay sync (compress {algo})"))
        for algo, inv in inventories.items()}
    runners["openssh-relay"] = lambda: pipe_timed(lab.ssh_argv(SOURCE, *ssh_opts) + [send],
                                                  lab.ssh_argv(TARGET, *ssh_opts) + [receive], what="OpenSSH relay")
    runners["openssh-relay-zstd"] = lambda: pipe_timed(
        lab.ssh_argv(SOURCE, *ssh_opts) + [f"{send} | zstd -q -c -1 -T1"],
        lab.ssh_argv(TARGET, *ssh_opts) + [f"zstd -q -d -c | {receive}"], what="OpenSSH relay with zstd")
    methods = tuple(runners)
    runs = _measure(lab, "wire-compress", methods, runners, reps, [(copy, guid)], stream)
    med = _medians(runs)
    out: dict[str, Any] = {"size_mib": size_mib, "stream_bytes": stream, "reps": reps, "runs": runs,
                           "median_mb_s": med, "tools": sorted(have)}
    for m in methods:
        if m != "openssh-relay":
            out[f"ratio_{m}_vs_openssh_relay"] = ratio(med[m], med["openssh-relay"])
    wire_zstd = [r["wire_bytes"] for r in runs["zrelay-zstd"]]
    out["zstd_wire_ratio"] = round(stream / (sum(wire_zstd) / len(wire_zstd)), 2) if wire_zstd else None
    return out


def table_rows(d: dict[str, Any]) -> list[tuple[str, str, str, float | None, str, bool | None]]:
    rows: list[tuple[str, str, str, float | None, str, bool | None]] = []
    four = d.get("wire-4x")
    if four:
        mb = four["median_mb_s"]
        rows.append((f"wire-4x ({four['streams']} × {four['each_mib']} MiB: zrelay 4 jobs vs 4 OpenSSH relays)",
                     f"{mb['zrelay-4-jobs']:.1f} MB/s", f"{mb['openssh-4-relays']:.1f} MB/s",
                     four["ratio_zrelay_vs_openssh"], "—", None))
    comp = d.get("wire-compress")
    if comp:
        mb = comp["median_mb_s"]
        for m in mb:
            if m == "openssh-relay":
                continue
            rows.append((f"wire-compress {comp['size_mib']} MiB text ({m} vs OpenSSH relay)", f"{mb[m]:.1f} MB/s",
                         f"{mb['openssh-relay']:.1f} MB/s", comp[f"ratio_{m}_vs_openssh_relay"], "—", None))
    return rows


def run(lab: Lab, *, wanted: set[str], size_mib: int, reps: int, ssh_opts: list[str],
        inventory_extra: dict[str, Any], workdir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "wire-4x" in wanted:
        out["wire-4x"] = run_4x(lab, size_mib=size_mib, reps=reps, ssh_opts=ssh_opts,
                                inventory_extra=inventory_extra, workdir=workdir)
    if "wire-compress" in wanted:
        out["wire-compress"] = run_compress(lab, size_mib=size_mib, reps=reps, ssh_opts=ssh_opts,
                                            inventory_extra=inventory_extra, workdir=workdir)
    return out
