"""prune-plan: how long the pure prune planner takes on a big job (no lab, nothing runs).

A recursive job of 100 datasets, each with 2,000 hourly snapshots (83 days) on the source;
two host targets (one up to date, one 10 days behind and missing its newest 240 snapshots)
and one S3 target (a chain end per dataset, 8 chains of 250 sends each). Policies: the source
keeps ``within 1d, 24 hourly, 14 daily, 8 weekly, 12 monthly`` with ``stale_after 30d``;
the targets keep ``48 hourly, 30 daily, 12 weekly, 24 monthly, 5 yearly``; S3 keeps
``4 weekly, 6 monthly`` of its chains. Every dataset has a few holds and bookmarks.

The figure is the wall time of ``plan_prune`` alone (the states are built beforehand), the
median of ``reps`` runs; the goal is at most 1 s. Run: ``python -m zbench.prune_plan``
(from bench/).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's zrelay

from zrelay.anchors import hold_tag, job_tag_prefix  # noqa: E402
from zrelay.inventory.policy import KeepPolicy  # noqa: E402
from zrelay.lifecycle.prune import (ChainEnd, HostSide, PruneInput, S3Side, SourceSide,  # noqa: E402
                                    plan_prune, target_dataset)
from zrelay.s3 import chains  # noqa: E402
from zrelay.s3.manifest import Manifest, SnapRef, StoredObject, make_send_id, send_prefix, send_ref  # noqa: E402
from zrelay.zfs.model import Bookmark, DatasetState, Snapshot, SnapshotFilter  # noqa: E402

NAMES = ("prune-plan",)
GOAL_S = 1.0
DATASETS = 100
SNAPSHOTS = 2000
CHAINS = 8
H, D = 3600, 86400
T0 = 1_760_000_000 - 1_760_000_000 % D
JOB = "fleet"
SOURCE_ROOT = "tank/data"
TARGETS = (("vault:backup/data", "vault", "backup/data", 0), ("nas2:pool/data", "nas2", "pool/data", 240))
S3_LABEL = "s3:cold"


def _manifest(s: Snapshot, parent: Snapshot | None, parent_send: str | None, chain: str | None) -> Manifest:
    ref = send_ref(s.name, make_send_id(s.guid, parent.guid if parent else None))
    return Manifest(host="nas1", dataset=s.dataset, snapshot=SnapRef(s.name, s.guid, s.createtxg, s.creation),
                    parent=None if parent is None else SnapRef(parent.name, parent.guid, parent.createtxg,
                                                               parent.creation),
                    parent_send=parent_send, chain=chain or ref, send_flags=() if parent is None else ("-i",),
                    send_command="", raw=False, compression=None, encryption=None, size=1000, sha256="0" * 64,
                    objects=(StoredObject("stream.000", 1000, "0" * 64, 1, 8 << 20),), zrelay_version="bench",
                    started="", finished="")


def _view(dataset: str, snaps: list[Snapshot]) -> chains.DatasetView:
    """``CHAINS`` healthy chains over ``snaps``, as s3-push links them."""
    size = len(snaps) // CHAINS
    records: list[chains.SendRecord] = []
    for c in range(CHAINS):
        run = snaps[c * size:(c + 1) * size]
        root: str | None = None
        prev: Snapshot | None = None
        prev_ref: str | None = None
        for s in run:
            m = _manifest(s, prev, prev_ref, root)
            directory = send_prefix("p/", "nas1", dataset, s.name, m.send_id)
            rec = chains.SendRecord("nas1", dataset, m.ref, directory, m, manifest_listed=True)
            rec.files["stream.000"] = chains.Listed(directory + "stream.000", 1000, float(T0))
            rec.files["manifest.json"] = chains.Listed(directory + "manifest.json", 500, float(T0))
            records.append(rec)
            root = root or m.ref
            prev, prev_ref = s, m.ref
    return chains.build_view("nas1", dataset, records)


def build() -> PruneInput:
    """The job's sides as a listing would give them."""
    select = SnapshotFilter(prefix="auto_")
    src: dict[str, DatasetState] = {}
    hosts: dict[str, dict[str, DatasetState]] = {label: {} for label, *_ in TARGETS}
    holds: dict[str, tuple[str, ...]] = {}
    target_holds: dict[str, dict[str, tuple[str, ...]]] = {label: {} for label, *_ in TARGETS}
    ends: dict[str, ChainEnd] = {}
    views: dict[str, chains.DatasetView] = {}
    for k in range(DATASETS):
        ds = SOURCE_ROOT if k == 0 else f"{SOURCE_ROOT}/d{k:03d}"
        snaps = [Snapshot(ds, f"auto_{i:05d}", k * 100_000 + i + 1, 10 * (i + 1), T0 + i * H)
                 for i in range(SNAPSHOTS)]
        snaps.insert(SNAPSHOTS // 2, Snapshot(ds, "manual-before-upgrade", k * 100_000 + 99_999, 10 * SNAPSHOTS // 2 + 5,
                                              T0 + SNAPSHOTS // 2 * H + 60))
        marks = tuple(Bookmark(ds, s.name, s.guid, s.createtxg, s.creation) for s in snaps[-50:])
        src[ds] = DatasetState(ds, True, tuple(snaps), marks)
        for label, _, root, behind in TARGETS:
            tds = target_dataset(SOURCE_ROOT, root, ds)
            got = [Snapshot(tds, s.name, s.guid, s.createtxg, s.creation) for s in snaps[:len(snaps) - behind]]
            hosts[label][tds] = DatasetState(tds, True, tuple(got))
            target_holds[label][got[-1].full_name] = (hold_tag(JOB, label),)
            holds[snaps[len(snaps) - 1 - behind].full_name] = (hold_tag(JOB, label),)
        holds[snaps[10].full_name] = ("backup-tool",)
        own = [s for s in snaps if select.matches(s.name)]
        views[ds] = _view(ds, own)
        tip = own[CHAINS * (len(own) // CHAINS) - 1]
        ends[ds] = ChainEnd(tip.name, tip.guid, tip.creation)
    target_policy = KeepPolicy(hourly=48, daily=30, weekly=12, monthly=24, yearly=5)
    host_sides = tuple(HostSide(label, host, root, hosts[label], target_holds[label], target_policy)
                       for label, host, root, _ in TARGETS)
    s3 = S3Side(S3_LABEL, ends, views, KeepPolicy(weekly=4, monthly=6))
    source = SourceSide("nas1", SOURCE_ROOT, src, holds,
                        KeepPolicy(within=D, hourly=24, daily=14, weekly=8, monthly=12, stale_after=30 * D))
    tags = {label: hold_tag(JOB, label) for label, *_ in TARGETS} | {S3_LABEL: hold_tag(JOB, S3_LABEL)}
    return PruneInput(select, T0 + SNAPSHOTS * H, source, host_sides, (s3,), job_tag_prefix(JOB), tags)


def run(reps: int = 5) -> dict[str, Any]:
    """Build the job once, then time ``reps`` plans; the counts say what each plan decided."""
    job = build()
    times: list[float] = []
    cpu: list[float] = []
    counts: dict[str, int] = {}
    for _ in range(reps):
        start, start_cpu = time.perf_counter(), time.process_time()
        plan = plan_prune(job)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        counts = {
            "decisions": len(plan.decisions),
            "dropped": sum(1 for d in plan.decisions if not d.keep),
            "batches": sum(len(s.batches) for s in plan.sides),
            "s3_keys": sum(len(p.keys_in_order()) for s in plan.sides for p in s.stored.values()),
            "notes": len(plan.notes),
        }
    median = statistics.median(times)
    return {"datasets": DATASETS, "snapshots_per_dataset": SNAPSHOTS, "reps": reps,
            "seconds": {"median": median, "min": min(times), "max": max(times), "n": len(times)},
            "cpu_seconds": {"median": statistics.median(cpu), "min": min(cpu), "max": max(cpu), "n": len(cpu)},
            "median_seconds": median, "goal_seconds": GOAL_S, "pass": median <= GOAL_S, **counts}


def table_rows(d: dict[str, Any]) -> list[tuple[str, str, str, float | None, str, bool | None]]:
    """One row for bench/run.py's table: no baseline (nothing else plans a prune)."""
    return [(f"prune-plan: {d['datasets']} datasets × {d['snapshots_per_dataset']:,} snapshots, "
             "source + 2 hosts + S3", f"{d['median_seconds']:.2f} s", "—", None, f"≤ {GOAL_S:.0f} s", d["pass"])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zbench.prune_plan", description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="plans to time (the median is the figure)")
    args = parser.parse_args(argv)
    d = run(args.reps)
    print(f"prune-plan: {d['median_seconds']:.3f} s median of {d['reps']} "
          f"(min {d['seconds']['min']:.3f} s, CPU {d['cpu_seconds']['median']:.3f} s; goal ≤ {GOAL_S:.0f} s: "
          f"{'pass' if d['pass'] else 'FAIL'}); "
          f"{d['decisions']:,} decisions, {d['dropped']:,} dropped, {d['batches']} destroy batches, "
          f"{d['s3_keys']:,} S3 keys, {d['notes']} notes")
    return 0 if d["pass"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
