#!/usr/bin/env python3
"""The daemon's no-change cycle, this checkout against an older revision, on one replay, alternating.

    python bench/cycle_ab.py --old 837cd9a [--layout siblings] [--reps 3] [--cycles 5] [--output PATH]

Why: on a loaded machine (the OpenZFS test guests run beside the lab) wall times swing by a factor of
two from one minute to the next, so a "before" measured an hour earlier says little. Here both codes
run against the same simulated hosts (zbench/fleet.py's replay of a no-change sync recorded on the
lab, as daemon-cycle-50x20 uses it), one worker process (zbench/cycle_worker.py, persistent mode)
after the other, old and new alternating, and each worker's CPU time per cycle is what to compare.
The old revision is checked out in a temporary git worktree and put first on the worker's import
path; its own cycle_worker.py runs it. The recording is made with this checkout: an old revision
that asks the hosts other commands fails with the replay's "never recorded" error.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

from zbench.common import REPO, BenchError, Lab, log, old_checkout, short_rev, summary, write_results  # noqa: E402
from zbench.fleet import LAYOUTS, Fleet, fs_type  # noqa: E402


def worker(code: Path, inventory: Path, cycles: int, locks: Path) -> dict[str, Any]:
    """One cycle_worker process of ``code`` (a checkout): one warm-up, ``cycles`` timed cycles."""
    env = dict(os.environ, PYTHONPATH=str(code), ZRELAY_LOCK_DIR=str(locks))
    argv = [sys.executable, str(code / "bench" / "zbench" / "cycle_worker.py"), "--inventory", str(inventory),
            "--mode", "persistent", "--warmup", "1", "--cycles", str(cycles)]
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                       stdin=subprocess.DEVNULL, timeout=3600, check=False)
    try:
        doc: dict[str, Any] = json.loads(r.stdout)
    except ValueError:
        raise BenchError(f"cycle worker of {code}: exit {r.returncode}: {r.stderr.strip()[-600:]}") from None
    if r.returncode != 0 or doc["unexpected"]:
        raise BenchError(f"cycle worker of {code}: targets not noop: {doc['unexpected'][:3]}")
    return doc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", required=True, help="the revision to compare with (git rev)")
    ap.add_argument("--layout", choices=LAYOUTS, action="append", help="default: both")
    ap.add_argument("--hosts", type=int, default=50)
    ap.add_argument("--datasets", type=int, default=20)
    ap.add_argument("--reps", type=int, default=3, help="workers of each code, alternating")
    ap.add_argument("--cycles", type=int, default=5, help="timed cycles per worker")
    ap.add_argument("--output", type=Path)
    args = ap.parse_args()
    old_rev, new_rev = short_rev(args.old), short_rev("HEAD")
    lab = Lab()
    out: dict[str, Any] = {"old": old_rev, "new": f"{new_rev} (working tree)", "hosts": args.hosts,
                           "datasets": args.datasets, "reps": args.reps, "cycles": args.cycles,
                           "started": datetime.now(UTC).isoformat(timespec="seconds"),
                           "load_start": os.getloadavg(), "layouts": {}}
    with tempfile.TemporaryDirectory(prefix="zrelay-cycle-ab-") as tmp:
        work = Path(tmp)
        old = work / "old"
        locks = Path("/dev/shm") / work.name if fs_type(Path("/dev/shm")) == "tmpfs" else work / "locks"
        with old_checkout(old_rev, old):
            try:
                lab.acquire()
                lab.wait_up()
                for layout in args.layout or LAYOUTS:
                    (work / layout).mkdir()
                    fleet = Fleet(lab, work / layout, args.datasets, layout, name="cycle")
                    try:
                        fleet.setup_lab()
                        fleet.record_sync()
                        inv = fleet.serve(args.hosts, "sync")
                        runs: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
                        for rep in range(args.reps):
                            for which in (("old", "new") if rep % 2 == 0 else ("new", "old")):
                                doc = worker(old if which == "old" else REPO, inv, args.cycles, locks)
                                cyc = doc["cycles"]
                                row = {"seconds": statistics.median(c["seconds"] for c in cyc),
                                       "cpu_s": statistics.median(c["cpu_s"] for c in cyc), "load": os.getloadavg()[0]}
                                runs[which].append(row)
                                log(f"{layout} {which} ({old_rev if which == 'old' else new_rev}) rep {rep + 1}: "
                                    f"cycle {row['seconds']:.3f} s, CPU {row['cpu_s']:.3f} s (load {row['load']:.1f})")
                        out["layouts"][layout] = {
                            which: {"cpu_s": summary([r["cpu_s"] for r in rows]),
                                    "seconds": summary([r["seconds"] for r in rows]), "workers": rows}
                            for which, rows in runs.items()}
                    finally:
                        fleet.server.stop()
            finally:
                lab.cleanup()
                lab.release()
                shutil.rmtree(locks, ignore_errors=True)
    out["load_end"] = os.getloadavg()
    print(f"{'layout':10} {'code':18} {'CPU/cycle':>10} {'wall/cycle':>11}")
    for layout, d in out["layouts"].items():
        for which in ("old", "new"):
            code = old_rev if which == "old" else f"{new_rev}+"
            print(f"{layout:10} {which + ' ' + code:18} {d[which]['cpu_s']['median']:9.3f}s "
                  f"{d[which]['seconds']['median']:10.3f}s")
    write_results(args.output, out)
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except BenchError as exc:
        print(f"cycle_ab: error: {exc}", file=sys.stderr)
        raise SystemExit(1)
