"""``zrelay status``: per job and location, newest snapshots, common base, lag, state and last run.

Three outputs from one collection: a table for people, ``--json`` for scripts
(schema in docs/status-json.md, field names stable), and ``--prometheus FILE``
for node_exporter's textfile collector (written atomically, so a scrape never
sees half a file).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TextIO

from zrelay.cli import layout, output
from zrelay.cli.layout import DROP, Cell, Column, Line, Table, cell
from zrelay.cli.status_split import MIN_HOSTS_PER_PROCESS, collect_split, process_count
from zrelay.engine import Fleet
from zrelay.errors import EXIT_JOB_FAILED, EXIT_OK, UsageError
from zrelay.inventory import Inventory, Job, load_inventory
from zrelay.state import StoreView, default_path, read_view
from zrelay.status.collect import collect_status
from zrelay.status.lifecycle import lifecycle_label
from zrelay.drillstate import last_drills
from zrelay.status.report import BROKEN, BUSY, NOT_CHECKED, RUNNING, LocationStatus, annotate, annotate_drill

#: The cyclic garbage collector's thresholds while ``status`` runs: a status of 10,000 rows makes
#: millions of short-lived objects, few of them in cycles, and with the default (a pass every 700
#: allocations, the older generations over every live object) the collector took a fifth of the
#: time of a status over 500 hosts. Larger batches; the same objects are collected.
GC_THRESHOLDS = (20_000, 50, 100)

#: States that make ``status`` exit 1, so cron/monitoring can alert on them.
BAD_STATES = frozenset({"unreachable", "error", BROKEN, "diverged", "no-common-base"})

_STYLE = {
    "in-sync": "green", "behind": "cyan", "missing": "cyan", "resumable": "cyan", "no-snapshots": "yellow",
    "diverged": "red", "no-common-base": "red", "unreachable": "red", "error": "red", BROKEN: "red",
    RUNNING: "magenta", BUSY: "magenta", NOT_CHECKED: "dim",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="show where every job's targets stand",
                       description="Show, per job and location (host or S3 target), the newest snapshots, "
                                   "common base, lag, state, a transfer running now and the last run's result.")
    p.add_argument("patterns", nargs="*", metavar="PATTERN", help="host, host:dataset or job name")
    p.add_argument("--json", action="store_true", help="print a JSON list (stable fields: docs/status-json.md)")
    p.add_argument("--detail", "--wide", dest="detail", action="store_true",
                   help="every field of every target, one block each (the table shows what fits the width)")
    p.add_argument("--prometheus", metavar="FILE",
                   help="also write the metrics in Prometheus textfile format to FILE (atomically)")
    p.add_argument("--processes", type=_positive, metavar="N",
                   help=f"ask the hosts from N processes, split by source host (default: one per core, "
                        f"while each has {MIN_HOSTS_PER_PROCESS}+ source hosts)")
    p.set_defaults(handler=run)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, got {value}")
    return value


def run(args: argparse.Namespace) -> int:
    from zrelay.cli.main import find_inventory

    gc.set_threshold(*GC_THRESHOLDS)
    inventory = load_inventory(find_inventory(args.inventory))
    gc.freeze()   # the inventory lives as long as the process: never scanned again
    jobs = inventory.jobs_matching(args.patterns)
    store_path = default_path(getattr(args, "state", None))
    parts = process_count(len({j.source.host for j in jobs}), len(os.sched_getaffinity(0)),
                          getattr(args, "processes", None))

    def collect(group: list[Job]) -> list[tuple[LocationStatus, str]]:
        """The group's rows, with their JSON made in the process that asked (in parallel)."""
        rows = asyncio.run(_collect(inventory, group, store_path))
        return [(r, row_text(r.to_dict()) if args.json else "") for r in rows]
    answers = collect_split(collect, jobs, parts, key=lambda answer: (answer[0].job, answer[0].target))
    rows = [row for row, _ in answers]
    if args.prometheus:
        write_prometheus(Path(args.prometheus), rows)
    if args.json:
        write_json_texts((text for _, text in answers), sys.stdout)
    else:
        print_table(rows, detail=args.detail)
    return exit_code(rows)


def exit_code(rows: list[LocationStatus]) -> int:
    """1 when a row needs a person. A running row doesn't: the run in progress is acting on it, and
    mid-receive a target can look unrelated (zfs-fuse shows a full receive's dataset before its snapshot)."""
    bad = any(r.state in BAD_STATES for r in rows)
    return EXIT_JOB_FAILED if bad else EXIT_OK


async def _collect(inventory: Inventory, jobs: Iterable[Job], store_path: Path) -> list[LocationStatus]:
    async with Fleet(inventory) as fleet:
        fleet.pool.without_warm_sessions()   # status streams nothing
        rows = await collect_status(fleet, jobs)
    # read the store after the hosts answered, so a transfer that ended meanwhile is not shown running
    store: StoreView = read_view(store_path)
    drills = last_drills(store_path)
    return [annotate_drill(annotate(r, store), drills) for r in rows]


# --- JSON ----------------------------------------------------------------------------
#
# Exactly what ``json.dump(rows, out, indent=2)`` and a newline write, built faster: with an
# indent the standard library encodes in Python, a call and a write per piece of text (10,000
# rows: 2 s and a million writes). Here strings go through its C encoder and each row is
# joined into one piece of text; rows are written a few hundred at a time.

_encode_str = json.encoder.encode_basestring_ascii
_INF = float("inf")
#: Rows encoded between writes: a few hundred KB of text at a time, not the whole answer.
_ROWS_PER_WRITE = 500


def _json_float(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (_INF, -_INF):
        return "Infinity" if value > 0 else "-Infinity"
    return float.__repr__(value)


#: The encoder of each scalar type, found with one lookup (subclasses: _json_scalar).
_SCALARS: dict[type, Callable[[Any], str]] = {
    str: _encode_str, int: int.__repr__, float: _json_float, bool: lambda b: "true" if b else "false",
    type(None): lambda _: "null"}


def _json_scalar(value: Any) -> str | None:
    """``value`` as JSON when it is a string, number, boolean or null (None otherwise)."""
    encode = _SCALARS.get(type(value))
    if encode is not None:
        return encode(value)
    if isinstance(value, str):
        return _encode_str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return _json_float(value)
    return None


def _json_key(key: Any) -> str:
    """A dict key as json writes it: strings as they are, numbers, booleans and null as text."""
    if isinstance(key, str):
        return _encode_str(key)
    if isinstance(key, (int, float)) or key is None:
        return '"' + str(_json_scalar(key)) + '"'
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


def _json_value(value: Any, nesting: str) -> str:
    """``value`` as json.dumps(indent=2) writes it on a line indented by ``nesting``."""
    encode = _SCALARS.get(type(value))
    if encode is not None:
        return encode(value)
    text = _json_scalar(value)
    if text is not None:
        return text
    inner = nesting + "  "
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = ",\n".join(f"{inner}{_json_key(k)}: {_json_value(v, inner)}" for k, v in value.items())
        return "{\n" + items + "\n" + nesting + "}"
    if isinstance(value, (list, tuple)):
        if not value:
            return "[]"
        return "[\n" + ",\n".join(inner + _json_value(v, inner) for v in value) + "\n" + nesting + "]"
    return json.dumps(value)   # what JSON cannot hold: json's own TypeError


def write_json(rows: Iterable[dict[str, Any]], out: TextIO) -> None:
    """The rows as ``status --json`` prints them (what json.dump with indent=2 writes, then a newline)."""
    write_json_texts((row_text(row) for row in rows), out)


def row_text(row: dict[str, Any]) -> str:
    """One row of ``status --json``, as write_json prints it (made where the row is, see run)."""
    return "  " + _json_value(row, "  ")


def write_json_texts(texts: Iterable[str], out: TextIO) -> None:
    """write_json of rows already turned into text by row_text."""
    chunk: list[str] = []
    first = True
    for text in texts:
        chunk.append(text)
        if len(chunk) == _ROWS_PER_WRITE:
            out.write(("[\n" if first else ",\n") + ",\n".join(chunk))
            chunk, first = [], False
    if chunk:
        out.write(("[\n" if first else ",\n") + ",\n".join(chunk))
        first = False
    out.write("[]\n" if first else "\n]\n")


# --- text ----------------------------------------------------------------------------
#
# One heading per job, one line per target under it. Where source, target and base
# agree the row says "in sync at @name" once; otherwise the state says what differs
# ("behind 2: @a → @c", "diverged after @a: target has @x"). On a narrow terminal the
# columns give way in the order of _STEPS; snapshot names are never cut. Why a row is
# in trouble (and what to do about it) is told once, under the row, wrapped at spaces.


COLUMNS = (Column("target", "TARGET"), Column("state", "STATE"), Column("lag", "LAG", right=True),
           Column("last", "LAST RUN"), Column("note", "NOTE"))
#: What gives way first when a line is too wide: the note, the second snapshot name of a state,
#: "ago", the lag, the last run, and last the state's snapshot name.
_STEPS = (("note", DROP), ("state", 1), ("last", 1), ("lag", DROP), ("last", DROP), ("state", 2))
#: States whose message is the point of the row (the planner's reason and options, or the error).
_TOLD = frozenset({"diverged", "no-common-base", "unreachable", "error", BROKEN, "no-snapshots", NOT_CHECKED,
                   BUSY})


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
    return r.state.replace("-", " ")


def state_forms(r: LocationStatus) -> tuple[str, str, str]:
    """The state cell at levels 0, 1 and 2 (fullest first): where the target stands, each snapshot
    named once. "in sync at @name" keeps its name until the last step."""
    base, newest, theirs = r.common_base, r.source_newest, r.target_newest
    label = state_label(r)
    if r.state == "in-sync" and base:
        return (f"in sync at @{base}", f"in sync at @{base}", "in sync")
    if r.state in ("behind", "resumable") and newest:
        if base:
            return (f"{label}: @{base} → @{newest}", f"{label}: at @{base}", label)
        return (f"{label}: source at @{newest}", f"{label}: source at @{newest}", label)
    if r.state == "missing" and newest:
        return (f"missing: source at @{newest}", f"missing: source at @{newest}", "missing")
    if r.state == "diverged" and base:
        if theirs and theirs != base:
            return (f"diverged after @{base}: target has @{theirs}", f"diverged after @{base}", label)
        return (f"diverged after @{base}", f"diverged after @{base}", label)
    if r.state == "no-common-base" and theirs:
        return (f"no common base: target has @{theirs}", f"no common base: target has @{theirs}", label)
    if r.state == "no-snapshots":
        label = "no snapshots to send"
    return (label, label, label)


def _ago(ts: float | None, now: float) -> str:
    return "-" if ts is None else f"{output.human_seconds(max(0, now - ts))} ago"


def last_run_label(r: LocationStatus, now: float) -> str:
    if not r.last_run:
        return "-"
    if r.last_run["outcome"] == "abandoned":   # the run's process died: whose, and since when
        gone = r.last_run["finished_at"]
        since = time.strftime("%H:%M:%S" if now - gone < 86400 else "%Y-%m-%d %H:%M", time.localtime(gone))
        return f"abandoned (pid {r.last_run['pid']} gone since {since})"
    return f"{r.last_run['outcome']} {_ago(r.last_run['finished_at'], now)}"


def drill_label(last: dict, now: float) -> str:
    """``drill ok 3d ago``: the newest restore drill of a target (zrelay drill)."""
    return f"drill {last['result']} {_ago(last['when'], now)}"


def _cells(r: LocationStatus, now: float) -> dict[str, Cell]:
    style = _STYLE.get(r.state, "")
    last = last_run_label(r, now)
    note = ""
    if r.s3 and r.s3.get("stored_bytes") is not None:
        note = f"{output.human_bytes(r.s3['stored_bytes'])} stored"
    if r.last_drill:
        note = ", ".join(filter(None, (note, drill_label(r.last_drill, now))))
    return {"target": cell(r.target), "state": cell(*state_forms(r), style=style),
            "lag": cell(output.human_seconds(r.lag_seconds)),
            "last": cell(last, last.removesuffix(" ago")), "note": cell(note)}


def _advice(message: str, width: int | None, indent: int) -> list[Line]:
    """A reason, then its options one under the other (the planner joins them with `` | ``)."""
    reason, _, options = message.partition(" Options: ")
    lines = layout.wrap(reason.strip(), width, indent)
    label = "options: "
    for i, option in enumerate(o.strip() for o in options.split(" | ") if o.strip()):
        if i == 0:
            lines += layout.wrap(label + option, width, indent, indent + len(label))
        else:
            lines += layout.wrap(option, width, indent + len(label))
    return lines


def _same(a: str, b: str) -> bool:
    """Whether two messages tell the same thing (a run's message adds prefixes to the planner's)."""
    if not (a and b):
        return False
    if a in b or b in a:
        return True
    from difflib import SequenceMatcher
    return SequenceMatcher(None, a, b, autojunk=False).ratio() > 0.8


def notes(r: LocationStatus, width: int | None, now: float, indent: int = 4) -> list[Line]:
    """What the row's cells cannot say: why it is in trouble, the transfer running, a failed last run.
    Each told once: a last run's message that repeats the current one is left out."""
    lines: list[Line] = []
    told = r.message if r.state in _TOLD or (r.state == RUNNING and r.planned_state in _TOLD) else ""
    if told:
        lines += _advice(told, width, indent)
    if r.transfer:
        lines += layout.wrap(f"{transfer_label(r.transfer)}", width, indent)
    if r.lifecycle:
        lines += layout.wrap(lifecycle_label(r.lifecycle, now), width, indent)
    last = r.last_run
    if (last and last["outcome"] in ("failed", "refused") and r.state not in BAD_STATES
            and not _same(last["message"], told)):
        lines += _advice(f"last run {last['outcome']} {_ago(last['finished_at'], now)}: {last['message']}",
                         width, indent)
    return lines


def transfer_label(t: dict) -> str:
    """``tank/x@a → @c (-I) → vault: 12.0 MiB of 26.0 MiB, 4.0 MiB/s, 3s left (sync, pid 4242)``."""
    eta = f", {output.human_duration(t['eta_seconds'])} left" if t.get("eta_seconds") is not None else ""
    return (f"{output.stream_name(t['stream'], t['target_host'])}: {output.human_progress(t['bytes'], t['estimate'])}"
            f", {output.human_rate(t['rate'])}{eta} ({t['command']}, pid {t['pid']})")


def _groups(rows: list[LocationStatus]) -> list[tuple[str, list[int]]]:
    """(heading, row indexes) per job, in the order the jobs first appear."""
    order: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        order.setdefault(r.job, []).append(i)
    out = []
    for job, idx in order.items():
        first = rows[idx[0]]
        heading = job if job == first.source else f"{job}: {first.source}"
        datasets = max(rows[i].datasets for i in idx)
        out.append((heading + (f"  ({datasets} datasets)" if datasets > 1 else ""), idx))
    return out


def table_lines(rows: list[LocationStatus], width: int | None, now: float) -> list[Line]:
    """The status table for ``width`` columns (None: no limit), with the notes under their rows."""
    cells = [_cells(r, now) for r in rows]
    table = Table(COLUMNS, cells, steps=_STEPS, indent=2)
    fits = table.fit(width)
    lines: list[Line] = [[(f"zrelay status  {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(now))}", "bold")]]
    if fits:
        lines.append(table.header())
    for heading, idx in _groups(rows):
        lines.append([(heading, "bold")])
        for i in idx:
            if fits:
                lines.append(table.row(i))
            else:   # narrower than any table: the row as a block, each cell in the longest form that fits
                room = (width or 0) - 4
                parts = [_narrow(cells[i][k], room) for k in ("state", "lag", "last", "note")]
                parts[1] = cell(f"lag {parts[1].form(0)}") if rows[i].lag_seconds is not None else cell("")
                lines += layout.stack(cells[i]["target"], parts, width)
            lines += notes(rows[i], width, now)
    return lines


def _narrow(c: Cell, room: int) -> Cell:
    form = next((f for f in c.forms if len(f) <= room), c.forms[-1])
    return Cell((form,), c.style)


def detail_lines(rows: list[LocationStatus], width: int | None, now: float) -> list[Line]:
    """Every field of every row, one block per job and target (``--detail``): reads at any width."""
    key = 18
    lines: list[Line] = []

    def field(name: str, value: str | None, style: str = "") -> None:
        if value:
            lines.extend(layout.wrap(f"{name:<{key - 2}}{value}", width, 2, key, style=style))

    def snap(name: str | None) -> str:
        return f"@{name}" if name else "-"

    for r in rows:
        if lines:
            lines.append([])
        lines.append([(f"{r.job} → {r.target}", "bold")])
        planned = (f" (the hosts say {r.planned_state.replace('-', ' ')})"
                   if r.planned_state and r.planned_state != BUSY else "")
        field("state", state_label(r) + planned, _STYLE.get(r.state, ""))
        field("source", r.source)
        if r.datasets > 1:
            field("datasets", str(r.datasets))
        field("source newest", snap(r.source_newest))
        field("target newest", snap(r.target_newest))
        age = f" ({output.human_seconds(r.base_age_seconds)} old)" if r.base_age_seconds is not None else ""
        field("common base", snap(r.common_base) + (age if r.common_base else ""))
        field("lag", output.human_seconds(r.lag_seconds))
        if r.last_run:
            last = r.last_run
            moved = f", {output.human_moved(last['bytes'], last['seconds'])}" if last["bytes"] else ""
            said = "" if _same(last["message"], r.message) else last["message"]
            field("last run", f"{last_run_label(r, now)}{moved}" + (f": {said}" if said else ""))
        field("last success", _ago(r.last_success_at, now) if r.last_success_at else "never")
        field("moved in total", output.human_bytes(r.bytes_total))
        if r.last_drill:
            drill = r.last_drill
            field("last drill", f"{drill['result']} {_ago(drill['when'], now)} (@{drill['snapshot']})"
                                + (f": {drill['message']}" if drill.get("message") else ""))
        if r.s3:
            s3 = r.s3
            where = f"{s3['url']}" + (f" ({s3['endpoint']})" if s3.get("endpoint") else "")
            field("stored at", where)
            if s3.get("chains") is not None:
                field("stored", f"{output.human_bytes(s3['stored_bytes'])} in {s3['chains']} chain(s), "
                                f"{s3['sends']} send(s); {s3['broken_chains']} broken, "
                                f"{s3['unfinished_sends']} unfinished")
                field("restorable", snap(s3["restorable_newest"]))
                for i, c in enumerate(s3.get("chain_costs") or []):   # what each chain costs, as listed
                    classes = c["storage_classes"]
                    where = ", ".join(f"{k} {output.human_bytes(v['bytes'])}" if len(classes) > 1 else k
                                      for k, v in classes.items())
                    of = f" of {c['dataset']}" if r.datasets > 1 else ""
                    field("chains" if i == 0 else "", f"{c['root']}{of}: {output.human_bytes(c['listed_bytes'])} "
                                                      f"in {c['object_count']} objects, {where}"
                                                      + ("" if c["healthy"] else " (broken)"))
        if r.transfer:
            field("transfer", transfer_label(r.transfer))
        if r.message:
            reason, _, options = r.message.partition(" Options: ")
            field("message", reason.strip())
            for i, option in enumerate(o.strip() for o in options.split(" | ") if o.strip()):
                field("options" if i == 0 else "", option)
    return lines


def print_table(rows: list[LocationStatus], *, detail: bool = False, now: float | None = None) -> None:
    if not rows:
        output.console().print("no targets in the matching jobs")
        return
    at = time.time() if now is None else now
    width = output.width()
    output.print_lines(detail_lines(rows, width, at) if detail else table_lines(rows, width, at))


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
        if r.state not in ("unreachable", "error", NOT_CHECKED, BUSY) and r.planned_state != BUSY:
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
