"""A target's report as JSON and back: how the daemon's survey reaches the TUI.

The daemon lists every target on its own schedule and stores the reports in the state store
(zrelay.daemonstate, ``survey``); a TUI attached to it reads them instead of asking the hosts
again. A survey entry is the ``status --json`` row itself (so the daemon's metrics and any
reader of rows can use it as one) plus, under ``"report"``, what the matrix, the hosts view
and the dataset detail need besides the row: the cells, the plans and both sides' listings.
``survey_report`` rebuilds a ``TargetReport`` with the reader's own ``Job`` and ``Target``
objects, so a report whose job or target the reader's inventory no longer has is dropped
rather than shown against the wrong job. No I/O here.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, Mapping, Sequence

from zrelay.inventory.model import Inventory, Job, Target
from zrelay.plan import Base, Plan, PlanKind, SendStep
from zrelay.status.report import DatasetCell, LocationStatus, TargetReport
from zrelay.zfs.model import Bookmark, DatasetState, Snapshot

#: The layout of ``"report"``; a reader refuses another (a daemon of another version wrote it).
VERSION = 1

_ROW_FIELDS = frozenset(f.name for f in fields(LocationStatus))
_CELL_FIELDS = frozenset(f.name for f in fields(DatasetCell))


def survey_dict(report: TargetReport) -> dict[str, Any]:
    """``report`` as JSON-ready data: its ``status --json`` row, and the rest under ``"report"``."""
    out = report.row.to_dict()
    out["report"] = {
        "version": VERSION,
        "cells": [asdict(c) for c in report.cells],
        "plans": [_plan(p) for p in report.plans],
        "source_states": {name: _state(s) for name, s in report.source_states.items()},
        "target_states": {name: _state(s) for name, s in report.target_states.items()},
        "unreachable_host": report.unreachable_host,
    }
    return out


def survey_report(data: Mapping[str, Any], inventory: Inventory) -> TargetReport | None:
    """The report ``survey_dict`` wrote, with ``inventory``'s job and target; None when the
    inventory has no such job or target any more, or the job now replicates another source.

    ValueError (one line naming the job and target) for data this version cannot read.
    """
    job_name, target_name = data.get("job"), data.get("target")
    job = next((j for j in inventory.jobs if j.name == job_name), None)
    if job is None or str(job.source) != data.get("source"):
        return None
    target = next((t for t in job.targets if str(t) == target_name), None)
    if target is None:
        return None
    try:
        return _report(job, target, data)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise ValueError(f"survey of {job_name} → {target_name}: cannot read it ({type(exc).__name__}: "
                         f"{exc})") from None


def _report(job: Job, target: Target, data: Mapping[str, Any]) -> TargetReport:
    extra = data["report"]
    if extra.get("version") != VERSION:
        raise ValueError(f"layout version {extra.get('version')!r}, this zrelay reads {VERSION}")
    row = LocationStatus(**{k: v for k, v in data.items() if k in _ROW_FIELDS})
    cells = tuple(DatasetCell(**{k: v for k, v in c.items() if k in _CELL_FIELDS}) for c in extra["cells"])
    return TargetReport(
        job, target, row, cells, tuple(_unplan(p) for p in extra["plans"]),
        {name: _unstate(s) for name, s in extra["source_states"].items()},
        {name: _unstate(s) for name, s in extra["target_states"].items()},
        extra.get("unreachable_host"))


# --- listings: one array per snapshot (a survey holds every snapshot of every target) -------


def _snap(s: Snapshot, dataset: str | None = None) -> list[Any]:
    """``[name, guid, createtxg, creation, referenced, userrefs]``, then the dataset unless it is
    ``dataset`` (a listing's own)."""
    out: list[Any] = [s.name, s.guid, s.createtxg, s.creation, s.referenced, s.userrefs]
    if s.dataset != dataset:
        out.append(s.dataset)
    return out


def _unsnap(a: Sequence[Any], dataset: str | None = None) -> Snapshot:
    name, guid, txg, creation, referenced, userrefs = a[:6]
    return Snapshot(a[6] if len(a) > 6 else str(dataset), name, int(guid), int(txg), int(creation),
                    int(referenced), int(userrefs))


def _mark(b: Bookmark, dataset: str | None = None) -> list[Any]:
    out: list[Any] = [b.name, b.guid, b.createtxg, b.creation]
    if b.dataset != dataset:
        out.append(b.dataset)
    return out


def _unmark(a: Sequence[Any], dataset: str | None = None) -> Bookmark:
    name, guid, txg, creation = a[:4]
    return Bookmark(a[4] if len(a) > 4 else str(dataset), name, int(guid), int(txg), int(creation))


def _state(s: DatasetState) -> dict[str, Any]:
    return {"name": s.name, "exists": s.exists, "snapshots": [_snap(x, s.name) for x in s.snapshots],
            "bookmarks": [_mark(b, s.name) for b in s.bookmarks], "resume_token": s.resume_token,
            "encrypted": s.encrypted, "volume": s.volume}


def _unstate(d: Mapping[str, Any]) -> DatasetState:
    name = d["name"]
    return DatasetState(name, bool(d["exists"]), tuple(_unsnap(a, name) for a in d["snapshots"]),
                        tuple(_unmark(a, name) for a in d["bookmarks"]), d.get("resume_token"),
                        bool(d.get("encrypted", False)), volume=bool(d.get("volume", False)))


# --- plans ----------------------------------------------------------------------------------


def _base(b: Base | None) -> dict[str, Any] | None:
    if b is None:
        return None
    return {"bookmark": _mark(b)} if isinstance(b, Bookmark) else {"snapshot": _snap(b)}


def _unbase(d: Mapping[str, Any] | None) -> Base | None:
    if d is None:
        return None
    return _unmark(d["bookmark"]) if "bookmark" in d else _unsnap(d["snapshot"])


def _plan(p: Plan) -> dict[str, Any]:
    return {"kind": p.kind.value, "source": p.source, "target": p.target,
            "steps": [{"snapshot": _snap(s.snapshot), "base": _base(s.base), "intermediates": s.intermediates}
                      for s in p.steps],
            "base": _base(p.base), "rollback_to": None if p.rollback_to is None else _snap(p.rollback_to),
            "resume_token": p.resume_token, "reason": p.reason, "options": list(p.options), "behind": p.behind,
            "conflicts": list(p.conflicts), "encrypted": p.encrypted, "partial_full": p.partial_full,
            "source_host": p.source_host, "target_host": p.target_host, "force_receive": p.force_receive}


def _unplan(d: Mapping[str, Any]) -> Plan:
    steps = tuple(SendStep(_unsnap(s["snapshot"]), _unbase(s["base"]), bool(s["intermediates"]))
                  for s in d["steps"])
    rollback = d.get("rollback_to")
    return Plan(PlanKind(d["kind"]), d["source"], d["target"], steps, _unbase(d.get("base")),
                None if rollback is None else _unsnap(rollback), d.get("resume_token"), d.get("reason", ""),
                tuple(d.get("options", ())), int(d.get("behind", 0)), tuple(d.get("conflicts", ())),
                bool(d.get("encrypted", False)), bool(d.get("partial_full", False)), d.get("source_host", ""),
                d.get("target_host", ""), bool(d.get("force_receive", False)))
