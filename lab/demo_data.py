#!/usr/bin/env python3
"""Seed the lab with the datasets inventory/lab.yml replicates (idempotent).

nas1: tank/data (+ children photos, docs) — nas2: tank/home. Each gets a few MiB
of files and a first zrelay_ snapshot, so `make demo` has something to move.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

LAB = [sys.executable, str(Path(__file__).with_name("zfslab.py"))]

DATASETS = {
    "nas1": ["tank/data", "tank/data/photos", "tank/data/docs"],
    "nas2": ["tank/home"],
}


def run(host: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LAB, "run", host, "--", *argv], capture_output=True, text=True, check=check)


def main() -> int:
    for host, datasets in DATASETS.items():
        for dataset in datasets:
            if run(host, "zfs", "list", "-H", "-o", "name", dataset, check=False).returncode == 0:
                continue
            run(host, "zfs", "create", "-p", dataset)
            mount = run(host, "zfs", "get", "-H", "-o", "value", "mountpoint", dataset).stdout.strip()
            for i in range(3):
                run(host, "dd", "if=/dev/urandom", f"of={mount}/file{i}", "bs=1M", "count=2", "status=none")
            print(f"{host}: created {dataset} with 6 MiB of data")
        root = datasets[0]
        if not run(host, "zfs", "list", "-H", "-t", "snapshot", "-o", "name", "-r", root).stdout.strip():
            run(host, "zfs", "snapshot", "-r", f"{root}@zrelay_demo-base")
            print(f"{host}: snapshot {root}@zrelay_demo-base")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
