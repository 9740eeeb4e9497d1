"""bandwidth: how close each data path keeps a stream to its ``bandwidth`` limit.

One incompressible snapshot of SIZE MiB (100 MiB; quick 32 MiB) on nas1, sent with a limit of
LIMIT MiB/s (20 MiB/s: 5 s for the official size) on each path, the limit set where each path
takes it from (paths/throttle.py):

- relay:      ``zrelay sync`` nas1 → vault, ``bandwidth`` on the job (token bucket in the relay);
- direct:     ``zrelay sync --direct`` nas1 → vault, ``bandwidth`` on the target host (``pv -q -L``
              or ``mbuffer -q -r`` in nas1's pipeline);
- s3-push:    ``zrelay s3-push`` nas1 → the lab's SeaweedFS, ``bandwidth`` on the S3 target;
- s3-restore: ``zrelay s3-restore`` of that push into vault, the same S3 target's limit.

Timed: the stream itself, from its start to its end as zrelay's state store records them (the
``transfers`` row: what ``zrelay status`` and the TUI show), not the run's connecting and
listing. The baseline is bytes / limit; the goal is each path within ±15 % of it. The lab's
hosts move 100 MiB in about a second unthrottled, so the limit, not the lab, sets the pace.
"""

from __future__ import annotations

import json
import sqlite3
import statistics
import sys
from pathlib import Path
from typing import Any

from zbench.common import (MiB, SOURCE, TARGET, BenchError, Lab, attempt, log, run_timed, zrelay_env)
from zbench import direct as directbench
from zbench import s3 as s3bench

NAMES = ("bandwidth",)
PATHS = ("relay", "direct", "s3-push", "s3-restore")
#: Each path's stream time within this share of bytes / limit.
TOLERANCE = 0.15


def _stream(state: Path) -> tuple[int, float]:
    """(bytes, seconds) of the one stream the last run recorded in ``state``."""
    with sqlite3.connect(state) as db:
        row = db.execute("SELECT done, finished - started FROM transfers ORDER BY id DESC LIMIT 1").fetchone()
    if row is None or row[1] is None:
        raise BenchError(f"no finished stream recorded in {state}")
    return int(row[0]), float(row[1])


def run(lab: Lab, *, size_mib: int, limit_mib: int, reps: int, workdir: Path) -> dict[str, Any]:
    limit = limit_mib * MiB
    base_src, base_dst = f"tank/{lab.prefix}", f"backup/{lab.prefix}"
    src = f"{base_src}/bandwidth-src"
    copy = f"{base_dst}/bandwidth-copy"
    snap, src_guid, stream_bytes = directbench.random_snapshot(lab, src, size_mib)
    lab.zfs(TARGET, "create", "-p", base_dst)
    env = zrelay_env()
    env["SSH_AUTH_SOCK"] = ""   # direct mode logs in with the key named in the inventory
    s3 = s3bench.S3(lab)
    env.update(s3.env)
    env.pop("ZRELAY_INVENTORY", None)
    prefix = f"{s3.root}bandwidth/"
    job = {"name": "bench-bandwidth", "source": f"{SOURCE}:{src}"}

    relay_inv = lab.write_inventory(workdir / "bw-relay.yml",
                                    [{**job, "targets": [f"{TARGET}:{copy}"], "bandwidth": f"{limit_mib}M"}])
    direct_inv = lab.write_inventory(workdir / "bw-direct.yml", [{**job, "targets": [f"{TARGET}:{copy}"]}])
    directbench._make_direct(direct_inv, lab)
    doc = json.loads(direct_inv.read_text())
    doc["all"]["hosts"][TARGET]["bandwidth"] = f"{limit_mib}M"
    direct_inv.write_text(json.dumps(doc, indent=1) + "\n")
    s3_inv = lab.write_inventory(workdir / "bw-s3.yml", [{**job, "targets": ["s3:bench"]}])
    doc = json.loads(s3_inv.read_text())
    doc["zrelay"]["s3_targets"] = {"bench": {**s3.target(prefix), "bandwidth": f"{limit_mib}M"}}
    s3_inv.write_text(json.dumps(doc, indent=1) + "\n")

    def zrelay(inventory: Path, *args: str, state: Path) -> None:
        run_timed([sys.executable, "-m", "zrelay", "--state", str(state), "-i", str(inventory), *args, "--json"],
                  env=env, what=f"zrelay {args[0]}")

    def reset() -> None:
        lab.destroy(TARGET, copy)

    runs: dict[str, list[dict[str, Any]]] = {p: [] for p in PATHS}
    try:
        for rep in range(reps):
            for path in PATHS:
                state = workdir / f"bw-{path}-{rep}.db"
                if path == "relay":
                    attempt(lab, path, lambda: zrelay(relay_inv, "sync", state=state), reset)
                elif path == "direct":
                    attempt(lab, path, lambda: zrelay(direct_inv, "sync", "--direct", state=state), reset)
                elif path == "s3-push":
                    s3.clear(prefix)
                    zrelay(s3_inv, "s3-push", state=state)
                else:
                    zrelay(s3_inv, "s3-restore", "bench", f"{SOURCE}:{src}", "--to", f"{TARGET}:{copy}", state=state)
                if path != "s3-push":
                    got = lab.guid(TARGET, f"{copy}@s1")
                    if got != src_guid:
                        raise BenchError(f"{path}: received snapshot GUID {got} != source {src_guid}")
                    reset()
                moved, seconds = _stream(state)
                expected = moved / limit
                row = {"rep": rep, "bytes": moved, "seconds": round(seconds, 3), "expected": round(expected, 3),
                       "ratio": round(seconds / expected, 3)}
                runs[path].append(row)
                log(f"bandwidth rep {rep + 1}/{reps} {path:<10} {seconds:6.2f} s for {moved / MiB:6.1f} MiB "
                    f"at {limit_mib} MiB/s (expected {expected:5.2f} s)")
    finally:
        s3.cleanup()
        s3.release()
        lab.destroy(SOURCE, src)
    return {"size_mib": size_mib, "stream_bytes": stream_bytes, "limit_mib_s": limit_mib, "reps": reps,
            "tolerance": TOLERANCE, "runs": runs,
            "median_seconds": {p: statistics.median(r["seconds"] for r in runs[p]) for p in PATHS},
            "median_expected": {p: statistics.median(r["expected"] for r in runs[p]) for p in PATHS},
            "median_ratio": {p: statistics.median(r["ratio"] for r in runs[p]) for p in PATHS}}


def table_rows(d: dict[str, Any]) -> list[tuple[str, str, str, float | None, str, bool | None]]:
    rows: list[tuple[str, str, str, float | None, str, bool | None]] = []
    for path in PATHS:
        if path not in d.get("median_ratio", {}):
            continue
        r = d["median_ratio"][path]
        rows.append((f"bandwidth {path} {d['size_mib']} MiB at {d['limit_mib_s']} MiB/s (stream time vs size / limit)",
                     f"{d['median_seconds'][path]:.2f} s", f"{d['median_expected'][path]:.2f} s", r,
                     f"1 ± {TOLERANCE}", abs(r - 1) <= TOLERANCE))
    return rows
