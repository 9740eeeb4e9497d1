#!/usr/bin/env python3
"""Tuning sweep for the relay path: transport-only throughput (zeros nas1 → ``cat`` on vault) for
combinations of cipher, channel window, max packet size and write-buffer limits, interleaved with
the OpenSSH relay as a reference, on the zfs-fuse lab.

    python bench/sweep.py --cipher aes128-gcm@openssh.com,chacha20-poly1305@openssh.com \\
        --window 2M,16M --pktsize 32K,256K --write-high 1M,8M --reps 3 [--size 1G]

Each value list is crossed with the others; every configuration (and OpenSSH with each cipher)
runs once per round, rounds rotate the order. Reports median MB/s and the orchestrator's CPU
seconds per GiB (lower is better; insensitive to other load on the machine). WRITE_LOW is set to
a quarter of WRITE_HIGH. Results go to bench/results/sweep-latest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import sys
import tempfile
from datetime import datetime, UTC
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

from zbench.common import MB, MiB, SOURCE, TARGET, Lab, attempt, log, pipe_timed  # noqa: E402
from zbench.transport import SINK, source_command, zrelay_once  # noqa: E402


def size(text: str) -> int:
    text = text.strip().upper()
    mult = {"K": 1024, "M": MiB, "G": 1024 * MiB}.get(text[-1:], 1)
    return int(float(text.rstrip("KMG")) * mult)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cipher", default="", help="comma-separated; empty: zrelay's default preference")
    ap.add_argument("--window", default="", help="BULK_WINDOW values, e.g. 2M,16M")
    ap.add_argument("--pktsize", default="", help="BULK_PKTSIZE values, e.g. 32K,256K")
    ap.add_argument("--write-high", default="", help="WRITE_HIGH values, e.g. 1M,8M")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--size", default="1G")
    ap.add_argument("--no-openssh", action="store_true")
    ap.add_argument("--output", type=Path, default=HERE / "results" / "sweep-latest.json")
    args = ap.parse_args()

    import zrelay.paths.relay as relay_mod
    import zrelay.transport.ssh as ssh_mod   # the bulk sessions' window and packet size live here

    defaults = {"window": ssh_mod.BULK_WINDOW, "pktsize": ssh_mod.BULK_PKTSIZE,
                "write_high": relay_mod.WRITE_HIGH, "write_low": relay_mod.WRITE_LOW}
    ciphers = [c for c in args.cipher.split(",") if c] or [""]
    windows = [size(v) for v in args.window.split(",") if v] or [defaults["window"]]
    pkts = [size(v) for v in args.pktsize.split(",") if v] or [defaults["pktsize"]]
    highs = [size(v) for v in args.write_high.split(",") if v] or [defaults["write_high"]]
    nbytes = size(args.size)
    configs = [{"cipher": c, "window": w, "pktsize": p, "write_high": h}
               for c, w, p, h in itertools.product(ciphers, windows, pkts, highs)]
    if not args.no_openssh:
        configs += [{"openssh": True, "cipher": c} for c in ciphers]

    lab = Lab()
    results: dict[str, list[dict[str, float]]] = {}
    try:
        lab.acquire()
        with tempfile.TemporaryDirectory(prefix="zrelay-sweep-") as tmp:
            invs = {c: lab.write_inventory(Path(tmp) / f"inv{i}.yml", [],
                                           **({"ssh_options": {"Ciphers": c}} if c else {}))
                    for i, c in enumerate(ciphers)}
            for rnd in range(args.reps):
                k = rnd % len(configs)
                for cfg in configs[k:] + configs[:k]:
                    key = label(cfg)
                    if cfg.get("openssh"):
                        opts = ["-o", f"Ciphers={cfg['cipher']}"] if cfg["cipher"] else []
                        t = attempt(lab, key, lambda opts=opts: pipe_timed(
                            lab.ssh_argv(SOURCE, *opts) + [source_command(nbytes)],
                            lab.ssh_argv(TARGET, *opts) + [SINK], what="OpenSSH relay"))
                    else:
                        ssh_mod.BULK_WINDOW = cfg["window"]
                        ssh_mod.BULK_PKTSIZE = cfg["pktsize"]
                        relay_mod.WRITE_HIGH = cfg["write_high"]
                        relay_mod.WRITE_LOW = cfg["write_high"] // 4
                        inv = invs[cfg["cipher"]]
                        t = attempt(lab, key, lambda inv=inv: asyncio.run(zrelay_once(inv, nbytes)))
                    row = {"mb_s": nbytes / t.seconds / MB, "cpu_s_per_gib": t.cpu / (nbytes / (1024 * MiB))}
                    results.setdefault(key, []).append(row)
                    log(f"round {rnd + 1}/{args.reps} {key:<70} {row['mb_s']:6.1f} MB/s  "
                        f"cpu {row['cpu_s_per_gib']:.2f} s/GiB")
    finally:
        lab.release()
        ssh_mod.BULK_WINDOW, ssh_mod.BULK_PKTSIZE = defaults["window"], defaults["pktsize"]
        relay_mod.WRITE_HIGH, relay_mod.WRITE_LOW = defaults["write_high"], defaults["write_low"]

    print(f"\n{'configuration':<72} {'MB/s (median)':>14} {'min':>7} {'max':>7} {'cpu s/GiB':>10}")
    summary = {}
    for key, rows in results.items():
        mbs = [r["mb_s"] for r in rows]
        cpu = statistics.median(r["cpu_s_per_gib"] for r in rows)
        summary[key] = {"median_mb_s": round(statistics.median(mbs), 1), "min": round(min(mbs), 1),
                        "max": round(max(mbs), 1), "cpu_s_per_gib": round(cpu, 2), "n": len(mbs)}
        print(f"{key:<72} {statistics.median(mbs):14.1f} {min(mbs):7.1f} {max(mbs):7.1f} {cpu:10.2f}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"date": datetime.now(UTC).isoformat(timespec="seconds"),
                                       "bytes": nbytes, "reps": args.reps, "summary": summary,
                                       "runs": results}, indent=2) + "\n")
    return 0


def human(n: int) -> str:
    for unit, div in (("M", MiB), ("K", 1024)):
        if n % div == 0:
            return f"{n // div}{unit}"
    return str(n)


def label(cfg: dict[str, Any]) -> str:
    cipher = cfg["cipher"].split("@")[0] or "default"
    if cfg.get("openssh"):
        return f"OpenSSH relay {cipher}"
    return (f"zrelay {cipher} window={human(cfg['window'])} pkt={human(cfg['pktsize'])} "
            f"write_high={human(cfg['write_high'])}")


if __name__ == "__main__":
    raise SystemExit(main())
