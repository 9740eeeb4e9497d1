#!/usr/bin/env python3
"""zrelay benchmarks against OpenSSH, measured in the same run on the zfs-fuse lab.

    python bench/run.py [--quick] [--only NAME ...] [--reps N] [--cipher NAME]

Benchmarks (see bench/README.md): startup, relay-512, transport-only, noop-100, incr-100, and more.
Prints a table (benchmark, zrelay, baseline, ratio, goal, pass/fail) and writes
bench/results/latest.json. ``--quick`` uses small sizes: a smoke test, not the
official figures. Needs root and the lab (lab/zfslab.py); it is started when
down, and only what this run started is stopped again. Every dataset created is
named POOL/bench-XXXXXX and destroyed at the end.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, UTC
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))  # this checkout's zrelay, when it is not installed

from zbench import many, relay512, startup, transport  # noqa: E402
from zbench import wire as wirebench  # noqa: E402
from zbench import direct, fleet, syncoid  # noqa: E402
from zbench import s3 as s3bench  # noqa: E402
from zbench import inventory as inventorybench  # noqa: E402
from zbench import prune_plan  # noqa: E402
from zbench import daemon as daemonbench  # noqa: E402
from zbench import bandwidth as bandwidthbench  # noqa: E402
from zbench.common import (REPO, SOURCE, BenchError, Lab, negotiated_algorithms, openssh_cipher_options,  # noqa: E402
                           openssh_negotiated)

NAMES: tuple[str, ...] = ("relay-512", "transport-only", "noop-100", "incr-100", "direct-512", "direct-2048", "fleet-50x20",
         "syncoid")
NAMES += startup.NAMES
NAMES += s3bench.NAMES
NAMES += wirebench.NAMES
NAMES += inventorybench.NAMES
NAMES += prune_plan.NAMES
NAMES += fleet.STATUS_NAMES
NAMES += daemonbench.NAMES
NAMES += bandwidthbench.NAMES
#: Benchmarks that need no lab: run on their own when only they are asked for.
LAB_FREE = set(inventorybench.NAMES) | set(prune_plan.NAMES)
RELAY_GOAL = 0.9
NOOP_GOAL_S = 5.0

#: relay-512 and direct-512 get more repetitions: a 5-7 s stream between two zfs-fuse daemons on two
#: cores varies by ±0.5 s from one run to the next, as much as the differences they measure.
OFFICIAL = {"relay_mib": 512, "direct_large_mib": 2048, "transport_mib": 1024, "count": 100, "reps": 3,
            "reps_512": 5, "fleet_hosts": 50, "fleet_datasets": 20, "syncoid_incrementals": 10,
            "inventory_hosts": 50_000, "status_hosts": 500, "status_datasets": 20, "cycle_hosts": 50,
            "cycle_datasets": 20, "cycle_persistent": 10, "cycle_fresh": 3, "soak_hosts": 10, "soak_cycles": 1000,
            "soak_first": 100, "bandwidth_mib": 100, "bandwidth_limit_mib": 20}
QUICK = {"relay_mib": 64, "direct_large_mib": 128, "transport_mib": 128, "count": 10, "reps": 1,
         "reps_512": 1, "fleet_hosts": 10, "fleet_datasets": 5, "syncoid_incrementals": 3,
         "inventory_hosts": 5_000, "status_hosts": 50, "status_datasets": 5, "cycle_hosts": 10,
         "cycle_datasets": 5, "cycle_persistent": 5, "cycle_fresh": 2, "soak_hosts": 5, "soak_cycles": 200,
         "soak_first": 20, "bandwidth_mib": 32, "bandwidth_limit_mib": 16}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="small sizes, one repetition: a smoke run (its figures are not the official ones)")
    ap.add_argument("--only", action="append", choices=NAMES, metavar="NAME",
                    help=f"run only this benchmark (repeatable): {', '.join(NAMES)}")
    ap.add_argument("--reps", type=int, help="repetitions per method (default 3, quick 1)")
    ap.add_argument("--cipher", help="force this SSH cipher on zrelay and OpenSSH alike "
                                     "(default: whatever zrelay negotiates; OpenSSH is told the same)")
    ap.add_argument("--max-sessions", type=int, default=0, metavar="N",
                    help="max_sessions of the lab hosts in the generated inventories (default: zrelay's own)")
    ap.add_argument("--output", type=Path, default=HERE / "results" / "latest.json",
                    help="where to write the JSON results (default: bench/results/latest.json)")
    args = ap.parse_args(argv)
    if args.reps is not None and args.reps < 1:
        ap.error("--reps must be ≥ 1")
    return args


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ssh_version = subprocess.run(["ssh", "-V"], capture_output=True, text=True, check=False).stderr.strip()
    import asyncssh
    return {"cores": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "asyncssh": asyncssh.__version__, "openssh": ssh_version, "kernel": platform.release()}


def load() -> dict[str, Any]:
    """Other sessions share this machine: note how busy it was around each benchmark."""
    out: dict[str, Any] = {}
    try:
        out["loadavg_1m"] = float(Path("/proc/loadavg").read_text().split()[0])
        for line in Path("/proc/pressure/cpu").read_text().splitlines():
            if line.startswith("some"):
                out["cpu_pressure_some_avg60"] = float(line.split("avg60=")[1].split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return out


def zrelay_constants() -> dict[str, object]:
    from zrelay.paths import relay
    from zrelay.transport import ssh
    return {"BULK_WINDOW": ssh.BULK_WINDOW, "BULK_PKTSIZE": ssh.BULK_PKTSIZE,
            "WRITE_HIGH": relay.WRITE_HIGH, "WRITE_LOW": relay.WRITE_LOW,
            "PREFERRED_CIPHERS": list(getattr(ssh, "PREFERRED_CIPHERS", ()))}


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    return f"{value:.2f}{unit}" if unit in (" s", "") else f"{value:.1f}{unit}"


def table_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def add(name: str, zrelay: str, baseline: str, ratio: float | None, goal: str, ok: bool | None) -> None:
        rows.append({"benchmark": name, "zrelay": zrelay, "baseline": baseline,
                     "ratio": None if ratio is None else round(ratio, 3), "goal": goal,
                     "result": "info" if ok is None else ("PASS" if ok else "FAIL")})

    r = results.get("relay-512")
    if r:
        mb = r["median_mb_s"]
        ratio = r["ratio_zrelay_vs_openssh_relay"]
        add(f"relay-{r['size_mib']} (zrelay CLI vs OpenSSH relay)", fmt(mb["zrelay"], " MB/s"),
            fmt(mb["openssh-relay"], " MB/s"), ratio, f"≥ {RELAY_GOAL}", ratio is not None and ratio >= RELAY_GOAL)
        add(f"relay-{r['size_mib']} (zrelay relay alone vs OpenSSH relay)", fmt(r["zrelay_relay_only_mb_s"], " MB/s"),
            fmt(mb["openssh-relay"], " MB/s"), r["ratio_zrelay_relay_only_vs_openssh_relay"], "—", None)
        if "openssh-default-cipher" in mb:
            add(f"relay-{r['size_mib']} (zrelay CLI vs OpenSSH relay, OpenSSH's default cipher)",
                fmt(mb["zrelay"], " MB/s"), fmt(mb["openssh-default-cipher"], " MB/s"),
                r["ratio_zrelay_vs_openssh_default_cipher"], "—", None)
        add(f"relay-{r['size_mib']} (zrelay CLI vs local pipe on nas1)", fmt(mb["zrelay"], " MB/s"),
            fmt(mb["local-pipe"], " MB/s"), r["ratio_zrelay_vs_local_pipe"], "—", None)
    t = results.get("transport-only")
    if t:
        mb = t["median_mb_s"]
        add(f"transport-only {t['size_mib']} MiB (zeros, no zfs)", fmt(mb["zrelay"], " MB/s"),
            fmt(mb["openssh-relay"], " MB/s"), t["ratio_zrelay_vs_openssh_relay"], "—", None)
    m = results.get("many")
    if m:
        n = m["count"]
        full = m["full"]
        for style in ("recursive", "jobs"):
            add(f"full-{n} ({style}) vs shell loop", fmt(full[style]["seconds"], " s"),
                fmt(full["shell-loop"]["seconds"], " s"),
                full[style]["seconds"] and full["shell-loop"]["seconds"] / full[style]["seconds"], "—", None)
        if "noop" in m:
            for style, sec in m["noop"]["median_seconds"].items():
                add(f"noop-{n} ({'1 recursive job' if style == 'recursive' else f'{n} jobs'})", fmt(sec, " s"),
                    "—", None, f"≤ {NOOP_GOAL_S:.0f} s", sec <= NOOP_GOAL_S)
        if "incr" in m:
            med = m["incr"]["median_seconds"]
            goal = m["incr"].get("goal_s", NOOP_GOAL_S)
            for style in ("recursive", "jobs"):
                add(f"incr-{n} ({'1 recursive job' if style == 'recursive' else f'{n} jobs'}) vs shell loop",
                    fmt(med[style], " s"), fmt(med["shell-loop"], " s"),
                    med[style] and med["shell-loop"] / med[style], f"≤ {goal:.0f} s", med[style] <= goal)
    for key, module in (("startup", startup), ("direct-512", direct), ("direct-2048", direct),
                        ("fleet-50x20", fleet), ("syncoid", syncoid)):
        if results.get(key):
            for row in module.table_rows(results[key]):
                add(*row)
    if results.get("s3"):
        for row in s3bench.table_rows(results["s3"]):
            add(*row)
    if results.get("wire"):
        for row in wirebench.table_rows(results["wire"]):
            add(*row)
    if results.get("inventory"):
        for row in inventorybench.table_rows(results["inventory"]):
            add(*row)
    if results.get("prune-plan"):
        for row in prune_plan.table_rows(results["prune-plan"]):
            add(*row)
    if results.get("status-500"):
        for row in fleet.status_rows(results["status-500"]):
            add(*row)
    if results.get("daemon"):
        for row in daemonbench.table_rows(results["daemon"]):
            add(*row)
    if results.get("bandwidth"):
        for row in bandwidthbench.table_rows(results["bandwidth"]):
            add(*row)
    return rows


def print_table(rows: list[dict[str, Any]], notes: list[str]) -> None:
    headers = ["benchmark", "zrelay", "baseline", "ratio", "goal", "result"]
    cells = [[str(r[h]) if r[h] is not None else "—" for h in headers] for r in rows]
    for c in cells:
        c[3] = c[3] if c[3] == "—" else f"{float(c[3]):.2f}"
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    print()
    print(line)
    print("  ".join("-" * w for w in widths))
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)))
    print()
    for n in notes:
        print(n)


def compile_zrelay() -> None:
    """Byte-compile the zrelay package first, as an installed one is (pip compiles at install
    time). Without it, where PYTHONDONTWRITEBYTECODE is set, every CLI run compiled again the
    modules changed since their last .pyc: 50 ms of each start-up, measured here."""
    compileall.compile_dir(str(REPO / "zrelay"), quiet=1)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = dict(QUICK if args.quick else OFFICIAL)
    if args.reps:
        sizes["reps"] = sizes["reps_512"] = args.reps
    wanted = set(args.only or NAMES)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))

    compile_zrelay()
    results: dict[str, Any] = {}
    started = time.time()
    exit_code = 0
    if wanted <= LAB_FREE:
        return lab_free(args, sizes, wanted, results, started)
    lab = Lab()
    try:
        lab.acquire()
        lab.wait_up()
        with tempfile.TemporaryDirectory(prefix="zrelay-bench-") as tmp:
            workdir = Path(tmp)
            extra: dict[str, Any] = {"ssh_options": {"Ciphers": args.cipher}} if args.cipher else {}
            if args.max_sessions:
                extra["max_sessions"] = args.max_sessions
            probe_inv = lab.write_inventory(workdir / "probe.yml", [], **extra)
            algs = negotiated_algorithms(probe_inv)
            ssh_opts = openssh_cipher_options(algs)
            openssh_cipher = openssh_negotiated(lab, SOURCE, ssh_opts)
            default_cipher = openssh_negotiated(lab, SOURCE, [])
            print(f"zrelay negotiates {algs['send_cipher']} (MAC {algs['send_mac']}); OpenSSH baselines use "
                  f"{openssh_cipher} (OpenSSH's own default here: {default_cipher})", file=sys.stderr)
            if openssh_cipher != algs["send_cipher"]:
                raise BenchError(f"OpenSSH would use {openssh_cipher}, zrelay {algs['send_cipher']}: not comparable")
            results["ciphers"] = {"zrelay": algs, "openssh": openssh_cipher, "openssh_default": default_cipher}

            loads = results["load"] = {"start": load()}
            # Each benchmark on its own: one that cannot run (a missing tool, a host that stays down)
            # is reported and the others still run; the exit status says one could not.
            steps: list[tuple[set[str], str, Callable[[], Any]]] = [
                ({"startup"}, "startup", lambda: startup.run(
                    lab, reps=sizes["reps_512"], ssh_opts=ssh_opts, inventory_extra=extra, workdir=workdir)),
                ({"transport-only"}, "transport-only", lambda: transport.run(
                    lab, size_mib=sizes["transport_mib"], reps=sizes["reps"], ssh_opts=ssh_opts,
                    inventory=probe_inv)),
                ({"relay-512"}, "relay-512", lambda: relay512.run(
                    lab, size_mib=sizes["relay_mib"], reps=sizes["reps_512"], ssh_opts=ssh_opts,
                    inventory_extra=extra, workdir=workdir, openssh_default=default_cipher != openssh_cipher)),
                ({"noop-100", "incr-100"}, "many", lambda: many.run(
                    lab, count=sizes["count"], reps=sizes["reps"], ssh_opts=ssh_opts, inventory_extra=extra,
                    workdir=workdir, want_noop="noop-100" in wanted, want_incr="incr-100" in wanted)),
                ({"direct-512"}, "direct-512", lambda: direct.run(
                    lab, size_mib=sizes["relay_mib"], reps=sizes["reps_512"], inventory_extra=extra,
                    workdir=workdir)),
                # the same at four times the size: start-up weighs a quarter as much
                ({"direct-2048"}, "direct-2048", lambda: direct.run(
                    lab, size_mib=sizes["direct_large_mib"], reps=sizes["reps"], inventory_extra=extra,
                    workdir=workdir)),
                ({"syncoid"}, "syncoid", lambda: syncoid.run(
                    lab, size_mib=sizes["relay_mib"], reps=sizes["reps"],
                    incrementals=sizes["syncoid_incrementals"], inventory_extra=extra, workdir=workdir)),
                ({"fleet-50x20"}, "fleet-50x20", lambda: fleet.run(
                    lab, hosts=sizes["fleet_hosts"], datasets=sizes["fleet_datasets"], reps=sizes["reps"],
                    workdir=workdir)),
                ({"status-500"}, "status-500", lambda: fleet.run_status(
                    lab, hosts=sizes["status_hosts"], datasets=sizes["status_datasets"], reps=sizes["reps"],
                    workdir=workdir)),
                (set(daemonbench.NAMES), "daemon", lambda: daemonbench.run(
                    lab, wanted=wanted, hosts=sizes["cycle_hosts"], datasets=sizes["cycle_datasets"],
                    reps=sizes["reps"], persistent_cycles=sizes["cycle_persistent"],
                    fresh_cycles=sizes["cycle_fresh"], soak_hosts=sizes["soak_hosts"],
                    soak_cycles=sizes["soak_cycles"], soak_first=sizes["soak_first"], workdir=workdir)),
                (set(s3bench.NAMES), "s3", lambda: s3bench.run(
                    lab, wanted=wanted, quick=args.quick, reps=sizes["reps"], ssh_opts=ssh_opts,
                    inventory_extra=extra, workdir=workdir, out=results.setdefault("s3", {}))),
                (set(wirebench.NAMES), "wire", lambda: wirebench.run(
                    lab, wanted=wanted, size_mib=sizes["relay_mib"], reps=sizes["reps"], ssh_opts=ssh_opts,
                    inventory_extra=extra, workdir=workdir)),
                (set(inventorybench.NAMES), "inventory", lambda: inventorybench.run(
                    hosts=sizes["inventory_hosts"], reps=sizes["reps"], workdir=workdir)),
                (set(prune_plan.NAMES), "prune-plan", lambda: prune_plan.run(reps=sizes["reps"])),
                (set(bandwidthbench.NAMES), "bandwidth", lambda: bandwidthbench.run(
                    lab, size_mib=sizes["bandwidth_mib"], limit_mib=sizes["bandwidth_limit_mib"],
                    reps=sizes["reps"], workdir=workdir)),
            ]
            exit_code = max(exit_code, run_steps(steps, wanted, results, loads))
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        exit_code = 1
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        exit_code = 130
    finally:
        lab.cleanup()
        lab.release()

    return finish(args, sizes, wanted, results, started, exit_code)


Step = tuple[set[str], str, Callable[[], Any]]


def run_steps(steps: list[Step], wanted: set[str], results: dict[str, Any], loads: dict[str, Any]) -> int:
    """Run the wanted benchmarks in order; one that fails is reported and the rest still run.
    Returns 1 when any failed, else 0."""
    exit_code = 0
    for names, key, run_one in steps:
        if not wanted & names:
            continue
        try:
            results[key] = run_one()
        except BenchError as exc:
            print(f"bench: error: {key}: {exc}", file=sys.stderr)
            results.setdefault("errors", {})[key] = str(exc)
            exit_code = 1
        loads[f"after {key}"] = load()
    return exit_code


def lab_free(args: argparse.Namespace, sizes: dict[str, Any], wanted: set[str], results: dict[str, Any],
             started: float) -> int:
    """Only benchmarks that need no lab (inventory, prune-plan): no lease, no cipher probe."""
    exit_code = 0
    try:
        with tempfile.TemporaryDirectory(prefix="zrelay-bench-") as tmp:
            loads = results["load"] = {"start": load()}
            steps = [(set(inventorybench.NAMES), "inventory", lambda: inventorybench.run(
                         hosts=sizes["inventory_hosts"], reps=sizes["reps"], workdir=Path(tmp))),
                     (set(prune_plan.NAMES), "prune-plan", lambda: prune_plan.run(reps=sizes["reps"]))]
            exit_code = max(exit_code, run_steps(steps, wanted, results, loads))
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        exit_code = 130
    return finish(args, sizes, wanted, results, started, exit_code)


def finish(args: argparse.Namespace, sizes: dict[str, Any], wanted: set[str], results: dict[str, Any],
           started: float, exit_code: int) -> int:
    """Print the table, write the JSON, and say by the exit status whether every goal was met."""
    rows = table_rows(results)
    notes = []
    if args.quick:
        notes.append("QUICK RUN: small sizes and one repetition — a smoke test, not the official figures.")
    if "ciphers" in results:
        notes.append(f"Cipher on every SSH leg: {results['ciphers']['openssh']}. "
                     "MB/s = 10^6 bytes of zfs stream (or zeros) per second of wall time.")
    print_table(rows, notes)
    doc = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "official": not args.quick and args.reps in (None, OFFICIAL["reps"]) and not args.only,
        "quick": args.quick, "only": sorted(wanted), "sizes": sizes,
        "inventory_max_sessions": args.max_sessions or "zrelay default",
        "machine": machine(), "zrelay_constants": zrelay_constants(),
        "duration_s": round(time.time() - started, 1), "exit_code": exit_code,
        "table": rows, "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"results: {args.output}")
    if exit_code == 0 and any(r["result"] == "FAIL" for r in rows):
        exit_code = 3
    return exit_code


if __name__ == "__main__":
    raise SystemExit(main())
