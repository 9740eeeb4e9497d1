"""``zrelay status``: per job and location, newest snapshots, common base, lag, state and last run.

Three outputs from one collection: a table for people, ``--json`` for scripts
(schema in docs/status-json.md, field names stable), and ``--prometheus FILE``
for node_exporter's textfile collector (written atomically, so a scrape never
sees half a file).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

from zrelay.cli import output
from zrelay.engine import Engine
from zrelay.errors import EXIT_JOB_FAILED, EXIT_OK, UsageError
from zrelay.inventory import load_inventory
from zrelay.state import StoreView, default_path, read_view
from zrelay.status import BROKEN, NOT_CHECKED, RUNNING, LocationStatus, annotate, collect_status

#: States that make ``status`` exit 1, so cron/monitoring can alert on them.
BAD_STATES = frozenset({"unreachable", "error", BROKEN, "diverged", "no-common-base"})

_STYLE = {
    "in-sync": "green", "behind": "cyan", "missing": "cyan", "resumable": "cyan", "no-snapshots": "yellow",
    "diverged": "red", "no-common-base": "red", "unreachable": "red", "error": "red", BROKEN: "red",
    RUNNING: "magenta", NOT_CHECKED: "dim",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="show where every job's targets stand",
                       description="Show, per job and location (host or S3 target), the newest snapshots, "
                                   "common base, lag, state, a transfer running now and the last run's result.")
    p.add_argument("patterns", nargs="*", metavar="PATTERN", help="host, host:dataset or job name")
    p.add_argument("--json", action="store_true", help="print a JSON list (stable fields: docs/status-json.md)")
    p.add_argument("--prometheus", metavar="FILE",
                   help="also write the metrics in Prometheus textfile format to FILE (atomically)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from zrelay.cli.main import find_inventory

    inventory = load_inventory(find_inventory(args.inventory))
    jobs = inventory.jobs_matching(args.patterns)
    store_path = default_path(getattr(args, "state", None))
    rows = asyncio.run(_collect(inventory, jobs, store_path))
    if args.prometheus:
        write_prometheus(Path(args.prometheus), rows)
    if args.json:
        json.dump([r.to_dict() for r in rows], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_table(rows)
    return exit_code(rows)


def exit_code(rows: list[LocationStatus]) -> int:
    """1 when a row needs a person. A running row doesn't: the run in progress is acting on it, and
    mid-receive a target can look unrelated (zfs-fuse shows a full receive's dataset before its snapshot)."""
    bad = any(r.state in BAD_STATES for r in rows)
    return EXIT_JOB_FAILED if bad else EXIT_OK


async def _collect(inventory, jobs, store_path: Path) -> list[LocationStatus]:  # type: ignore[no-untyped-def]
    async with Engine(inventory) as engine:
        rows = await collect_status(engine, jobs)
    # read the store after the hosts answered, so a transfer that ended meanwhile is not shown running
    store: StoreView = read_view(store_path)
    return [annotate(r, store) for r in rows]


# --- text ----------------------------------------------------------------------------


def state_label(r: LocationStatus) -> str:
    """``behind 3``, ``transfer running 45%``, ``not checked`` … as people read them."""
    if r.state == "behind":
        return f"behind {r.behind}"
    if r.state == RUNNING and r.transfer:
        t = r.transfer
        pct = f" {100 * t['bytes'] / t['estimate']:.0f}%" if t.get("estimate") else ""
        return f"transfer running{pct}"
    if r.state == NOT_CHECKED:
        return "not checked"
    return r.state


def _ago(ts: float | None, now: float) -> str:
    return "-" if ts is None else f"{output.human_seconds(max(0, now - ts))} ago"


def last_run_label(r: LocationStatus, now: float) -> str:
    if not r.last_run:
        return "-"
    return f"{r.last_run['outcome']} {_ago(r.last_run['finished_at'], now)}"


def print_table(rows: list[LocationStatus]) -> None:
    from rich.table import Table  # imported when a table is printed: --json never needs rich
    if not rows:
        output.console().print("no targets in the matching jobs")
        return
    now = time.time()
    table = Table(title=f"zrelay status  {time.strftime('%Y-%m-%d %H:%M:%S')}", title_justify="left")
    for col in ("job", "target", "state", "source newest", "target newest", "common base", "lag",
                "last run", "detail"):
        table.add_column(col, overflow="fold")
    for r in rows:
        style = _STYLE.get(r.state, "")
        if r.state == RUNNING and r.transfer:
            t = r.transfer
            detail = (f"{t['stream']}: {output.human_bytes(t['bytes'])}"
                      f"{' of ' + output.human_bytes(t['estimate']) if t.get('estimate') else ''}"
                      f" at {output.human_bytes(t['rate'])}/s")
        elif r.state in ("in-sync", "behind"):
            detail = f"{r.datasets} datasets" if r.datasets > 1 else ""
            if r.s3 and r.s3.get("stored_bytes") is not None:
                stored = f"{output.human_bytes(r.s3['stored_bytes'])} stored"
                detail = f"{detail}, {stored}" if detail else stored
        else:
            detail = r.message
        if r.last_run and r.last_run["outcome"] in ("failed", "refused") and r.state not in BAD_STATES:
            detail = (detail + "; " if detail else "") + f"last run: {r.last_run['message']}"
        table.add_row(r.job, r.target, f"[{style}]{state_label(r)}[/{style}]" if style else state_label(r),
                      r.source_newest or "-", r.target_newest or "-", r.common_base or "-",
                      output.human_seconds(r.lag_seconds), last_run_label(r, now), detail)
    output.console().print(table)


# --- Prometheus textfile -------------------------------------------------------------------

_METRICS = (
    ("zrelay_lag_seconds", "gauge",
     "Creation time of the newest selected source snapshot minus that of the common base."),
    ("zrelay_behind_snapshots", "gauge", "Selected source snapshots the target lacks."),
    ("zrelay_base_age_seconds", "gauge", "Age of the common base snapshot."),
    ("zrelay_state", "gauge", "1 for the current state of the location (label state)."),
    ("zrelay_transfer_running", "gauge", "1 while a transfer into the location runs (any process)."),
    ("zrelay_transfer_rate_bytes", "gauge", "Rate of the running transfer, bytes per second."),
    ("zrelay_transferred_bytes_total", "counter", "Bytes moved into the location by every recorded run."),
    ("zrelay_last_run_timestamp_seconds", "gauge", "When the newest recorded run of the job to the location ended."),
    ("zrelay_last_run_success", "gauge", "1 if the newest recorded run succeeded (ok or nothing to do), else 0."),
    ("zrelay_last_success_timestamp_seconds", "gauge", "When a run last succeeded for the job and location."),
    ("zrelay_s3_stored_bytes", "gauge", "Bytes stored in the S3 location for the job (every chain)."),
)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")


def prometheus_text(rows: list[LocationStatus], now: float | None = None) -> str:
    """The textfile body: one sample per metric and location, HELP/TYPE once per metric."""
    samples: dict[str, list[str]] = {name: [] for name, _t, _h in _METRICS}

    def add(name: str, r: LocationStatus, value: float | int | None, **extra: str) -> None:
        if value is None:
            return
        labels = {"job": r.job, "source": r.source, "target": r.target, "location": r.location, **extra}
        text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
        samples[name].append(f"{name}{{{text}}} {value}")

    for r in rows:
        add("zrelay_lag_seconds", r, r.lag_seconds)
        if r.state not in ("unreachable", "error", NOT_CHECKED):
            add("zrelay_behind_snapshots", r, r.behind)
        add("zrelay_base_age_seconds", r, r.base_age_seconds)
        add("zrelay_state", r, 1, state=r.state)
        add("zrelay_transfer_running", r, int(r.transfer is not None))
        if r.transfer is not None:
            add("zrelay_transfer_rate_bytes", r, r.transfer["rate"])
        add("zrelay_transferred_bytes_total", r, r.bytes_total)
        if r.last_run:
            add("zrelay_last_run_timestamp_seconds", r, _num(r.last_run["finished_at"]))
            add("zrelay_last_run_success", r, int(r.last_run["outcome"] in ("ok", "noop")))
        add("zrelay_last_success_timestamp_seconds", r, _num(r.last_success_at))
        if r.s3 is not None:
            add("zrelay_s3_stored_bytes", r, r.s3.get("stored_bytes"))
    lines: list[str] = []
    for name, kind, help_text in _METRICS:
        if samples[name]:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples[name]]
    at = time.time() if now is None else now
    lines += ["# HELP zrelay_status_timestamp_seconds When zrelay status wrote this file.",
              "# TYPE zrelay_status_timestamp_seconds gauge", f"zrelay_status_timestamp_seconds {at:.3f}"]
    return "\n".join(lines) + "\n"


def _num(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def write_prometheus(path: Path, rows: list[LocationStatus]) -> None:
    """Write next to ``path`` and rename over it: node_exporter never reads a partial file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(prometheus_text(rows))
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"cannot write the Prometheus file {path}: {exc.strerror or exc}") from None
