"""daemon-cycle-50x20 and daemon-soak: ``zrelay daemon``'s no-change sync cycle over simulated hosts.

What the daemon pays each time a schedule fires when nothing changed: ``Engine.sync`` of every job over
a per-run fleet (``Fleet.for_run()``) of one long-lived ``Fleet`` that keeps the connections, probes
and limits. The hosts are fleet.py's replay server (a thread of this process), answering from a real
no-change sync recorded on the lab (``Fleet.record_sync``); the cycles run in a child process
(cycle_worker.py), so that process's time and memory are the daemon's alone.

- **daemon-cycle-50x20**: H × D hosts × datasets (50 × 20); one untimed warm-up cycle (connects,
  probes), then timed cycles, each one ``Engine(inv, fleet=parent.for_run())`` → ``sync``, the per-run
  fleet closed after it. Every target must come back NOOP. Goal: median ≤ 1 s. Baseline, same run and
  server, rotating order: the same cycle with a fresh Fleet every time (connect, probe, list, close:
  what a cron ``zrelay sync`` pays besides its interpreter start) → ratio fresh / persistent.
Run locks (zrelay.locks: one lock file per target, written when taken and when let go, so 2,000
file writes a cycle at 1,000 targets) go to a fresh directory on tmpfs (``/dev/shm``), as the daemon's
default ``/run/lock/zrelay`` is on a systemd machine. Where ``/run/lock`` is on a disk filesystem (this
lab machine: ext4), the same persistent cycle is measured once more with the lock files on that
filesystem, for information.

- **daemon-soak**: one such process running 1,000 cycles (10 × 20 hosts × datasets, so it ends in a few
  minutes); its RSS after cycle 100 and after cycle 1,000. Goal: growth ≤ 10 %. Also the least-squares
  slope of RSS over cycles 100–1,000 and the cycle time early and late.
"""

from __future__ import annotations

import shutil
import statistics
from pathlib import Path
from typing import Any

from zbench.common import BenchError, Lab, attempt, log, rotations, summary
from zbench.fleet import LAYOUTS, Fleet, cycles, fs_type

NAMES = ("daemon-cycle-50x20", "daemon-soak")
CYCLE_GOAL_S = 1.0
SOAK_GOAL = 0.10      # RSS growth from cycle FIRST to the last


def run(lab: Lab, *, wanted: set[str], hosts: int, datasets: int, reps: int, persistent_cycles: int,
        fresh_cycles: int, soak_hosts: int, soak_cycles: int, soak_first: int, workdir: Path,
        layouts: tuple[str, ...] = LAYOUTS) -> dict[str, Any]:
    """Record a no-change sync per layout on the lab, then the wanted benchmarks over its replay."""
    shm = Path("/dev/shm")
    locks = shm / f"zrelay-{lab.prefix}-locks" if fs_type(shm) == "tmpfs" else workdir / "tmpfs-locks"
    disk_locks = workdir / "disk-locks"
    out: dict[str, Any] = {"lock_dir": str(locks), "lock_dir_fs": fs_type(locks),
                           "machine_lock_dir_fs": fs_type(Path("/run/lock")),
                           "disk_lock_dir": str(disk_locks), "disk_lock_dir_fs": fs_type(workdir)}
    want_cycle, want_soak = "daemon-cycle-50x20" in wanted, "daemon-soak" in wanted
    try:
        for layout in layouts if want_cycle else ("siblings",):
            log(f"daemon: layout {layout}")
            fleet = Fleet(lab, workdir, datasets, layout, name="cycle")
            try:
                fleet.setup_lab()
                recorded = attempt(lab, "daemon: recording a no-change sync", fleet.record_sync)
                out.setdefault("recorded", {})[layout] = recorded
                if want_cycle:
                    out.setdefault("cycle", {})[layout] = cycle_bench(
                        fleet, hosts, reps, persistent_cycles, fresh_cycles, locks,
                        disk_locks if layout == "siblings" and out["machine_lock_dir_fs"] != "tmpfs" else None)
                if want_soak and layout == "siblings":
                    out["soak"] = soak(fleet, soak_hosts, soak_cycles, soak_first, locks)
            finally:
                fleet.server.stop()
    finally:
        shutil.rmtree(locks, ignore_errors=True)
    return out


def _measure(fleet: Fleet, inv: Path, mode: str, count: int, locks: Path, progress: int = 0) -> dict[str, Any]:
    """One worker process of ``count`` timed cycles after one warm-up; the server's share alongside."""
    fleet.server.misses.clear()
    commands0, cpu0 = fleet.server.commands, fleet.server.thread_cpu()
    doc = cycles(inv, mode, warmup=1, count=count, workdir=fleet.workdir, lock_dir=locks, progress=progress)
    if fleet.server.misses:
        raise BenchError(f"daemon: {len(fleet.server.misses)} commands were never recorded on the real lab, "
                         f"e.g. {fleet.server.misses[0]}")
    doc["server_commands"] = fleet.server.commands - commands0
    doc["server_cpu_s"] = round(fleet.server.thread_cpu() - cpu0, 2)
    return doc


def _summarise(docs: list[dict[str, Any]]) -> dict[str, Any]:
    cyc = [c for d in docs for c in d["cycles"]]
    return {"seconds": summary([c["seconds"] for c in cyc]),
            "cpu_s": summary([c["cpu_s"] for c in cyc]),
            "warmup_seconds": summary([d["warmup"][0]["seconds"] for d in docs]),
            # the server's CPU per cycle, warm-up included (it is one of count + 1 cycles)
            "server_cpu_s_per_cycle": summary([d["server_cpu_s"] / (len(d["cycles"]) + 1) for d in docs]),
            "peak_rss_mib": round(max(d["peak_rss_kib"] for d in docs) / 1024, 1)}


def cycle_bench(fleet: Fleet, hosts: int, reps: int, persistent_cycles: int, fresh_cycles: int, locks: Path,
                disk_locks: Path | None) -> dict[str, Any]:
    """Persistent against fresh in rotating order; then, when given, persistent with the lock files
    on a disk filesystem (information)."""
    inv = fleet.serve(hosts, "sync")
    targets = hosts * fleet.datasets
    runs: dict[str, list[dict[str, Any]]] = {"persistent": [], "fresh": []}
    count = {"persistent": persistent_cycles, "fresh": fresh_cycles}
    try:
        for rep, order in rotations(list(runs), reps):
            for mode in order:
                runs[mode].append(_one(fleet, inv, mode, count[mode], locks, targets, f"rep {rep + 1}/{reps}"))
        if disk_locks is not None:
            runs["persistent-disk-locks"] = [_one(fleet, inv, "persistent", persistent_cycles, disk_locks, targets,
                                                  f"lock files on {fs_type(disk_locks.parent)}")]
    finally:
        fleet.server.close_listeners()
    out: dict[str, Any] = {"layout": fleet.layout, "hosts": hosts, "datasets": fleet.datasets, "targets": targets,
                           "reps": reps, "goal_s": CYCLE_GOAL_S, "runs": runs}
    for mode, docs in runs.items():
        out[mode] = _summarise(docs)
    p, f = out["persistent"]["seconds"]["median"], out["fresh"]["seconds"]["median"]
    out["ratio_fresh_vs_persistent"] = f / p if p else None
    return out


def _one(fleet: Fleet, inv: Path, mode: str, count: int, locks: Path, targets: int, what: str) -> dict[str, Any]:
    doc = _measure(fleet, inv, mode, count, locks)
    if any(c["targets"] != targets for c in doc["cycles"]):
        raise BenchError(f"daemon: a cycle synced {[c['targets'] for c in doc['cycles']]} targets, expected {targets}")
    secs = [c["seconds"] for c in doc["cycles"]]
    log(f"daemon {inv.stem} {mode} ({what}): warm-up {doc['warmup'][0]['seconds']:.2f} s, cycles median "
        f"{statistics.median(secs):.3f} s ({min(secs):.3f}–{max(secs):.3f}), CPU "
        f"{statistics.median(c['cpu_s'] for c in doc['cycles']):.3f} s, {doc['outcomes']}, server "
        f"{doc['server_cpu_s']:.2f} s CPU for {doc['server_commands']} commands")
    return doc


def slope(xs: list[int], ys: list[int]) -> float:
    """Least-squares slope of ys over xs."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def soak(fleet: Fleet, hosts: int, total: int, first: int, locks: Path) -> dict[str, Any]:
    inv = fleet.serve(hosts, "sync")
    try:
        log(f"daemon-soak: {total} no-change cycles over {hosts} × {fleet.datasets} in one process")
        doc = _measure(fleet, inv, "persistent", total, locks, progress=max(1, total // 10))
    finally:
        fleet.server.close_listeners()
    cyc = doc["cycles"]
    rss = [c["rss_kib"] for c in cyc]
    at_first, at_last = rss[first - 1], rss[-1]
    xs = list(range(first, total + 1))
    per_1000 = slope(xs, rss[first - 1:]) * 1000
    secs = [c["seconds"] for c in cyc]
    out = {"hosts": hosts, "datasets": fleet.datasets, "targets": hosts * fleet.datasets, "cycles": total,
           "first": first, "goal_growth": SOAK_GOAL, "outcomes": doc["outcomes"],
           "rss_after_first_kib": at_first, "rss_after_last_kib": at_last,
           "growth": (at_last - at_first) / at_first,
           "slope_kib_per_1000_cycles": round(per_1000, 1),
           "rss_after_warmup_kib": rss[0], "peak_rss_kib": doc["peak_rss_kib"],
           # the cycle time of the first and the last FIRST cycles: does a long-lived process slow down?
           "seconds": summary(secs), "seconds_first": summary(secs[:first]), "seconds_last": summary(secs[-first:]),
           "cpu_s": summary([c["cpu_s"] for c in cyc]),
           "server_commands": doc["server_commands"], "server_cpu_s": doc["server_cpu_s"],
           "rss_kib": rss}
    log(f"daemon-soak: RSS after cycle {first} {at_first / 1024:.1f} MiB, after {total} {at_last / 1024:.1f} MiB "
        f"({out['growth']:+.1%}), slope {per_1000 / 1024:+.2f} MiB per 1000 cycles; cycle median "
        f"{out['seconds']['median']:.3f} s")
    return out


def table_rows(doc: dict[str, Any]) -> list[tuple[str, str, str, float | None, str, bool | None]]:
    rows: list[tuple[str, str, str, float | None, str, bool | None]] = []
    for layout in LAYOUTS:
        d = doc.get("cycle", {}).get(layout)
        if d is None:
            continue
        where = "one parent" if layout == "siblings" else "a parent each"
        h, n = d["hosts"], d["datasets"]
        p, f = d["persistent"], d["fresh"]
        sec = p["seconds"]["median"]
        rows += [
            (f"daemon-cycle-{h}x{n} ({where}): no-change sync cycle, persistent vs fresh connections",
             f"{sec:.3f} s", f"{f['seconds']['median']:.3f} s", d["ratio_fresh_vs_persistent"],
             f"≤ {CYCLE_GOAL_S:.0f} s", sec <= CYCLE_GOAL_S),
            (f"daemon-cycle-{h}x{n} ({where}): CPU per cycle, persistent vs fresh (server: "
             f"{p['server_cpu_s_per_cycle']['median']:.2f} / {f['server_cpu_s_per_cycle']['median']:.2f} s)",
             f"{p['cpu_s']['median']:.3f} s", f"{f['cpu_s']['median']:.3f} s", None, "—", None),
            (f"daemon-cycle-{h}x{n} ({where}): first cycle (connect + probe); peak RSS {p['peak_rss_mib']:.0f} MiB",
             f"{p['warmup_seconds']['median']:.2f} s", "—", None, "—", None),
        ]
        disk = d.get("persistent-disk-locks")
        if disk:
            rows.append((f"daemon-cycle-{h}x{n} ({where}): persistent, lock files on {doc.get('disk_lock_dir_fs')} "
                         f"vs on {doc.get('lock_dir_fs')}", f"{disk['seconds']['median']:.3f} s", f"{sec:.3f} s",
                         disk["seconds"]["median"] / sec if sec else None, "—", None))
    s = doc.get("soak")
    if s:
        rows.append((f"daemon-soak {s['hosts']}x{s['datasets']}: RSS after cycle {s['cycles']} vs after cycle "
                     f"{s['first']} (slope {s['slope_kib_per_1000_cycles'] / 1024:+.2f} MiB/1000 cycles)",
                     f"{s['rss_after_last_kib'] / 1024:.1f} MiB", f"{s['rss_after_first_kib'] / 1024:.1f} MiB",
                     s["rss_after_last_kib"] / s["rss_after_first_kib"], f"≤ +{SOAK_GOAL:.0%}",
                     s["growth"] <= SOAK_GOAL))
    return rows
