"""The daemon's survey: a target's report as JSON and back, with the reader's inventory's jobs."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.test_s3_chains import DS, HOST, linear_chain, record, snap
from zrelay.locks import Holder
from zrelay.inventory import load_inventory
from zrelay.inventory.model import Endpoint, Inventory, Job, S3Ref, S3Target
from zrelay.plan import plan, plan_recursive
from zrelay.s3 import chains
from zrelay.state import StoreView, TaskRow, Totals
from zrelay.status.hosts import report_from_plans
from zrelay.status.report import TargetReport, annotate, busy_report, failed_report, not_checked
from zrelay.status.s3 import report_from_s3
from zrelay.status.survey import VERSION, survey_dict, survey_report
from zrelay.tui.detail import detail_for
from zrelay.zfs.model import Bookmark, DatasetState, Snapshot, SnapshotFilter

NOW = 1_750_000_000.0
BIG = 2**64 - 5   # GUIDs are unsigned 64-bit: beyond a signed integer and a double's exact range


def inventory(tmp_path: Path, jobs: list[dict[str, Any]] | None = None) -> Inventory:
    doc = {"all": {"hosts": {"nas1": {"address": "192.0.2.1"}, "nas2": {"address": "192.0.2.2"},
                             "vault": {"address": "192.0.2.3"}}},
           "zrelay": {"s3_targets": {"offsite": {"bucket": "zrelay-offsite", "endpoint": "http://127.0.0.1:1", "prefix": "p/"}},
                      "jobs": jobs if jobs is not None else [
                          {"name": "data", "source": "nas1:tank/data", "recursive": True,
                           "snapshots": {"prefix": "zrelay_"},
                           "targets": ["vault:backup/data", "nas2:tank/replica/data", "s3:offsite"]},
                          {"name": "vm", "source": "nas1:tank/vm", "targets": ["vault:backup/vm"]}]}}
    path = tmp_path / "inv.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_inventory(path)


def ds(name: str, *snaps: tuple[str, int], marks: tuple[tuple[str, int, int], ...] = (),
       token: str | None = None) -> DatasetState:
    return DatasetState(name, True, tuple(Snapshot(name, n, g, i + 1, int(NOW) - 3600 * (len(snaps) - i), 4096 * i,
                                                   i % 2)
                                          for i, (n, g) in enumerate(snaps)),
                        tuple(Bookmark(name, n, g, txg, int(NOW) - 7200) for n, g, txg in marks), token)


def jobs_of(inv: Inventory) -> dict[str, Job]:
    return {j.name: j for j in inv.jobs}


def through_json(report: TargetReport, inv: Inventory) -> TargetReport | None:
    """What the TUI reads back: the daemon's dict, stored as JSON text, rebuilt with ``inv``."""
    return survey_report(json.loads(json.dumps(survey_dict(report))), inv)


def host_reports(inv: Inventory) -> list[TargetReport]:
    """data → vault: root behind from a bookmark (the source pruned the base), child in sync;
    data → nas2: root diverged, child resumable; vm → vault: missing (a full send)."""
    data, vm = jobs_of(inv)["data"], jobs_of(inv)["vm"]
    src = {"tank/data": ds("tank/data", ("hourly", 7), ("zrelay_2", BIG), ("zrelay_3", 3), marks=(("zrelay_1", 1, 1),)),
           "tank/data/db": ds("tank/data/db", ("zrelay_1", 11), ("zrelay_2", 12))}
    vault = {"backup/data": ds("backup/data", ("zrelay_1", 1)),
             "backup/data/db": ds("backup/data/db", ("zrelay_1", 11), ("zrelay_2", 12))}
    nas2 = {"tank/replica/data": ds("tank/replica/data", ("zrelay_1", 1), ("manual", 77)),
            "tank/replica/data/db": ds("tank/replica/data/db", ("zrelay_1", 11), token="1-abc-def")}
    out = []
    for target, dst, rollback in ((data.targets[0], vault, False), (data.targets[1], nas2, False)):
        assert isinstance(target, Endpoint)
        plans = plan_recursive(src, dst, data.source.dataset, target.dataset, select=data.select, rollback=rollback,
                               source_host="nas1", target_host=target.host)
        out.append(report_from_plans(data, target, plans, src, dst, NOW))
    vm_src = {"tank/vm": ds("tank/vm", ("zrelay_1", 21), ("zrelay_2", 22))}
    vm_target = vm.targets[0]
    assert isinstance(vm_target, Endpoint)
    out.append(report_from_plans(vm, vm_target, [plan(vm_src["tank/vm"], DatasetState.absent("backup/vm"))],
                                 vm_src, {}, NOW))
    return out


def test_host_reports_come_back_equal(tmp_path: Path) -> None:
    inv = inventory(tmp_path)
    reports = host_reports(inv)
    kinds = {p.kind.value for r in reports for p in r.plans}
    assert {"incremental", "noop", "diverged", "resume", "full"} <= kinds, "every plan kind the survey carries"
    assert any(isinstance(p.base, Bookmark) for r in reports for p in r.plans), "a base kept only as a bookmark"
    for report in reports:
        back = through_json(report, inv)
        assert back == report
        assert back is not None and back.job is report.job and back.target is report.target


def test_the_entry_is_the_status_json_row_plus_the_report(tmp_path: Path) -> None:
    """The daemon's metrics and any reader of ``status --json`` rows read a survey entry as a row."""
    inv = inventory(tmp_path)
    report = host_reports(inv)[1]
    entry = survey_dict(report)
    assert {k: v for k, v in entry.items() if k != "report"} == report.row.to_dict()
    assert entry["report"]["version"] == VERSION
    assert json.loads(json.dumps(entry)) == entry, "JSON-ready: nothing json turns into something else"


def test_rows_with_what_the_store_and_the_lifecycle_added_come_back(tmp_path: Path) -> None:
    inv = inventory(tmp_path)
    report = host_reports(inv)[0]
    last = TaskRow(5, 2, "data", "nas1:tank/data", "vault:backup/data", NOW - 400, NOW - 300, "ok", "", "ok", "",
                   1024, 100.0, None)
    store = StoreView(read_at=NOW, last_results={("data", "vault:backup/data"): last},
                      totals={("data", "vault:backup/data"): Totals("data", "vault:backup/data", 1024, 1, 0,
                                                                     NOW - 300, "ok", NOW - 300)})
    life = {"next_snapshot_at": NOW + 60, "snapshot_due": False, "source": {"kept": 3, "drops": 1,
            "unit": "snapshots"}, "target": None, "error": None}
    row = replace(annotate(report.row, store), lifecycle=life, rpo_seconds=3600, rpo_breach=True)
    report = replace(report, row=row)
    assert through_json(report, inv) == report


def test_s3_reports_come_back_equal(tmp_path: Path) -> None:
    """A healthy chain behind the source, and one whose middle send lost its object (broken)."""
    a, b, c = snap("a", 11, 10), snap("b", 12, 20), snap("c", 13, 30)
    inv = inventory(tmp_path, [{"name": "j", "source": f"{HOST}:{DS}", "targets": ["s3:offsite"]}])
    job = jobs_of(inv)["j"]
    target = S3Target("offsite", "zrelay-offsite", endpoint="http://127.0.0.1:1", prefix="p/")
    source = {DS: DatasetState(DS, True, (a, b, c))}
    healthy = [record(m) for m in linear_chain([a, b])]
    broken = [record(m, missing=(0,) if i == 1 else ()) for i, m in enumerate(linear_chain([a, b]))]
    for records, state in ((healthy, "behind"), (broken, "broken")):
        views = {(HOST, DS): chains.build_view(HOST, DS, records)}
        report = report_from_s3(job, S3Ref("offsite"), target, source, views, NOW)
        assert report.row.state == state and report.row.s3 is not None
        assert through_json(report, inv) == report


def test_reports_of_targets_not_inspected_come_back(tmp_path: Path) -> None:
    inv = inventory(tmp_path)
    data, vm = jobs_of(inv)["data"], jobs_of(inv)["vm"]
    vault = data.targets[0]
    assert isinstance(vault, Endpoint)
    holder = Holder(pid=4242, started=NOW - 5, command="sync", run_id=7, what="nas1:tank/data → vault")
    for report in (failed_report(vm, vm.targets[0], "unreachable", "vault: cannot connect to 192.0.2.3:22", NOW,
                                 "vault"),
                   failed_report(data, data.targets[2], "error", "bucket gone", NOW, s3={"url": "s3://b/p/"}),
                   busy_report(data, vault, holder, NOW), busy_report(data, vault, None, NOW),
                   not_checked(data, S3Ref("offsite"), NOW)):
        assert through_json(report, inv) == report


def test_the_detail_from_the_survey_is_the_detail_from_the_hosts(tmp_path: Path) -> None:
    inv = inventory(tmp_path)
    reports = host_reports(inv)
    back = [through_json(r, inv) for r in reports]
    assert all(b is not None for b in back)
    for source in ("nas1:tank/data", "nas1:tank/data/db", "nas1:tank/vm"):
        assert detail_for(source, back) == detail_for(source, reports)  # type: ignore[arg-type]


def test_a_job_or_target_the_inventory_no_longer_has_is_dropped(tmp_path: Path) -> None:
    inv = inventory(tmp_path)
    entries = [json.loads(json.dumps(survey_dict(r))) for r in host_reports(inv)]
    (tmp_path / "b").mkdir()
    fewer = inventory(tmp_path / "b", [
        {"name": "data", "source": "nas1:tank/data", "recursive": True, "targets": ["vault:backup/data"]}])
    back = [survey_report(e, fewer) for e in entries]
    assert [b is not None for b in back] == [True, False, False], "nas2 left the job, vm left the inventory"
    (tmp_path / "c").mkdir()
    moved = inventory(tmp_path / "c", [
        {"name": "data", "source": "nas2:tank/data", "targets": ["vault:backup/data"]}])
    assert survey_report(entries[0], moved) is None, "the same name, another source: not this job's report"


def test_data_this_version_cannot_read_is_one_line_naming_the_target(tmp_path: Path) -> None:
    inv = inventory(tmp_path)
    entry = survey_dict(host_reports(inv)[0])
    newer = {**entry, "report": {**entry["report"], "version": VERSION + 1}}
    with pytest.raises(ValueError, match=r"^survey of data → vault:backup/data: .*version 2"):
        survey_report(newer, inv)
    damaged = {**entry, "report": {**entry["report"], "plans": [{"kind": "full"}]}}
    with pytest.raises(ValueError, match=r"^survey of data → vault:backup/data: cannot read it \(KeyError") as exc:
        survey_report(damaged, inv)
    assert "\n" not in str(exc.value)


def test_a_row_field_a_newer_daemon_added_is_ignored(tmp_path: Path) -> None:
    inv = inventory(tmp_path)
    report = host_reports(inv)[0]
    entry = {**survey_dict(report), "some_future_field": 1}
    entry["report"]["cells"][0]["another"] = "x"
    assert survey_report(entry, inv) == report


names = st.sampled_from(["zrelay_1", "zrelay_2", "zrelay_3", "hourly", "manual"])
guids = st.integers(min_value=1, max_value=2**64 - 1)


@st.composite
def listings(draw: st.DrawFn) -> tuple[DatasetState, DatasetState]:
    """A source and a target sharing some GUIDs, with bookmarks and an odd snapshot of another dataset."""
    shared = draw(st.lists(st.tuples(names, guids), max_size=5, unique_by=lambda x: x[1]))
    own = draw(st.lists(st.tuples(names, guids), max_size=3, unique_by=lambda x: x[1]))
    cut = draw(st.integers(0, len(shared)))
    marks = tuple((n, g, i + 1) for i, (n, g) in enumerate(shared[:draw(st.integers(0, len(shared)))]))
    source = ds("tank/x", *shared, marks=marks)
    target = ds("b/x", *shared[:cut], *own, token=draw(st.none() | st.text(max_size=8)))
    if draw(st.booleans()) and source.snapshots:
        odd = replace(source.snapshots[0], dataset="tank/elsewhere")
        source = replace(source, snapshots=(odd, *source.snapshots[1:]))
    return source, target


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(listings(), st.booleans(), st.sampled_from([SnapshotFilter(), SnapshotFilter(prefix="zrelay_")]))
def test_any_planned_report_comes_back_equal(tmp_path: Path, pair: tuple[DatasetState, DatasetState],
                                             rollback: bool, select: SnapshotFilter) -> None:
    source, target = pair
    inv = inventory(tmp_path, [{"name": "x", "source": "nas1:tank/x", "targets": ["vault:b/x"]}])
    job = jobs_of(inv)["x"]
    dest = job.targets[0]
    assert isinstance(dest, Endpoint)
    p = plan(source, target, select=select, rollback=rollback, source_host="nas1", target_host="vault")
    report = report_from_plans(job, dest, [p], {"tank/x": source}, {"b/x": target}, NOW)
    assert through_json(report, inv) == report
