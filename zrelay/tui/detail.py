"""The TUI's dataset detail: the snapshot lists of a source dataset and of every location that
receives it, side by side, one row per GUID.

Base and divergence come from the planner, so the detail agrees with what
``sync`` would do; the listings come from the status reports (zrelay.status).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable, Sequence

from zrelay import selection
from zrelay.inventory.model import Endpoint, Target
from zrelay.plan import PlanKind, plan
from zrelay.status.report import BROKEN, KIND_STATE, TargetReport
from zrelay.zfs.model import DatasetState, SnapshotFilter


@dataclass(frozen=True)
class DetailCell:
    """One snapshot in one column of the detail."""

    name: str
    guid: int
    base: bool = False        # the common base of this location (in the source column: of any location)
    divergent: bool = False   # on the target only after the base, or a source name with another GUID
    selected: bool = True     # source column: the job's filter replicates it


@dataclass(frozen=True)
class DetailRow:
    guid: int
    cells: tuple[DetailCell | None, ...]   # source first, then each location; None: not there


@dataclass(frozen=True)
class DatasetDetail:
    source: str                      # host:dataset
    columns: tuple[str, ...]         # "host:dataset" of the source, then of each location
    notes: tuple[str, ...]           # per column: "", "missing", "unreachable", "diverged", …
    rows: tuple[DetailRow, ...]


def align(source_name: str, source: DatasetState,
          locations: Sequence[tuple[str, DatasetState | str]],
          select: SnapshotFilter = SnapshotFilter()) -> DatasetDetail:
    """Merge the source's and each location's snapshot lists into rows of one GUID each.

    Source order is the spine; a snapshot only a target holds is placed right
    after the target's previous snapshot, so a divergent branch shows where it
    split off. A location given as a string could not be listed (the string
    says why). Base and divergence come from the planner, so the detail agrees
    with what ``sync`` would do.
    """
    spine = [s.guid for s in source.snapshots]
    seen = set(spine)
    after: dict[int | None, list[int]] = {}
    bases: list[int | None] = []
    foreign: list[set[int]] = []   # per location: GUIDs flagged divergent
    notes = [""]
    for _name, state in locations:
        if isinstance(state, str):
            bases.append(None)
            foreign.append(set())
            notes.append(state)
            continue
        p = plan(source, state, select=select)
        bases.append(p.base.guid if p.base is not None else None)
        unrelated = p.kind is PlanKind.NO_COMMON_BASE
        foreign.append({t.guid for t in state.snapshots
                        if t.guid not in seen and (unrelated or t.name in p.conflicts)})
        notes.append("missing" if not state.exists else
                     (KIND_STATE[p.kind] if p.kind is not PlanKind.NOOP else ""))
        anchor: int | None = None
        for snap in state.snapshots:
            if snap.guid not in seen:
                after.setdefault(anchor, []).append(snap.guid)
                seen.add(snap.guid)
            anchor = snap.guid
    order: list[int] = []
    stack = list(reversed(spine)) + list(reversed(after.get(None, [])))
    while stack:
        guid = stack.pop()
        order.append(guid)
        stack.extend(reversed(after.get(guid, [])))
    src_by_guid = source.by_guid()
    loc_by_guid = [state.by_guid() if not isinstance(state, str) else {} for _n, state in locations]
    any_base = {b for b in bases if b is not None}
    rows = []
    for guid in order:
        cells: list[DetailCell | None] = []
        s = src_by_guid.get(guid)
        cells.append(DetailCell(s.name, guid, base=guid in any_base, selected=select.matches(s.name))
                     if s is not None else None)
        for i, by_guid in enumerate(loc_by_guid):
            t = by_guid.get(guid)
            cells.append(DetailCell(t.name, guid, base=guid == bases[i], divergent=guid in foreign[i])
                         if t is not None else None)
        rows.append(DetailRow(guid, tuple(cells)))
    return DatasetDetail(source_name, (source_name, *(n for n, _ in locations)), tuple(notes), tuple(rows))


def _position(targets: tuple[Target, ...], target: Target) -> int:
    return targets.index(target) if target in targets else len(targets)


def detail_for(source_endpoint: str, reports: Iterable[TargetReport]) -> DatasetDetail | None:
    """The detail of one source dataset from the reports of every job that replicates it."""
    host, _, dataset = source_endpoint.partition(":")
    source: DatasetState | None = None
    select = SnapshotFilter()
    columns: list[tuple[str, DatasetState | str]] = []
    broken: set[int] = set()   # columns of S3 targets with a broken chain: the planner cannot tell
    # columns in the inventory's order of targets, whichever answered first
    for r in sorted(reports, key=lambda r: (r.job.name, _position(r.job.targets, r.target))):
        if r.job.source.host != host:
            continue
        root = r.job.source.dataset
        if not (dataset == root or (r.job.recursive and dataset.startswith(root + "/"))):
            continue
        if r.source_states and selection.of_job(r.job, r.source_states).why(dataset) is not None:
            continue   # the job leaves this dataset out (exclude:, zrelay:sync=false): no copy of it to show
        if isinstance(r.target, Endpoint):
            tname = r.target.dataset + dataset[len(root):]
            label = f"{r.target.host}:{tname}"
        elif r.plans or r.row.state in ("unreachable", "error"):
            tname, label = dataset, str(r.target)   # S3 keys keep the source's dataset names
            if any(c.state == BROKEN and c.source == source_endpoint for c in r.cells):
                broken.add(len(columns) + 1)
        else:
            continue  # an S3 target not inspected: nothing to show
        if dataset in r.source_states:
            source = r.source_states[dataset]
            select = r.job.select
        if r.row.state in ("unreachable", "error") and not r.target_states:
            columns.append((label, r.row.state))
        else:
            columns.append((label, r.target_states.get(tname, DatasetState.absent(tname))))
    if source is None:
        return None
    detail = align(source_endpoint, source, columns, select)
    if broken:
        detail = replace(detail, notes=tuple(BROKEN if i in broken else n for i, n in enumerate(detail.notes)))
    return detail
