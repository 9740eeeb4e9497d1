"""status with the store: GUID alignment for the detail, store annotations, Prometheus text, S3 targets."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

from tests.unit.test_s3_chains import DS, HOST, linear_chain, manifest, record, snap, view
from zrelay.cli.status import exit_code, prometheus_text, state_label
from zrelay.errors import S3AccessDenied, S3NotFound, S3Unreachable
from zrelay.events import JobFinished, JobStarted, Outcome, TransferFinished, TransferProgress, TransferStarted
from zrelay.inventory.model import Endpoint, Job, S3Ref, S3Target
from zrelay.plan import plan
from zrelay.state import Recorder, StoreView, TaskRow, Totals, TransferRow, read_view
from zrelay.status.hosts import report_from_plans
from zrelay.status.report import BROKEN, NOT_CHECKED, RUNNING, LocationStatus, annotate, not_checked
from zrelay.status.s3 import _s3_failure, probe_endpoint, report_from_s3
from zrelay.tui.detail import align, detail_for
from zrelay.zfs.model import DatasetState, Snapshot, SnapshotFilter


def ds(name: str, *snaps: tuple[str, int]) -> DatasetState:
    return DatasetState(name, True, tuple(Snapshot(name, n, g, i + 1, 1000 * (i + 1)) for i, (n, g) in enumerate(snaps)))


SRC = ds("tank/a", ("s1", 1), ("s2", 2), ("s3", 3))


def table(detail) -> list[tuple[str, ...]]:  # type: ignore[no-untyped-def]
    """Rows as text: '◆name' base, '✗name' divergent, '-name' unselected, '.' absent."""
    def cell(c) -> str:  # type: ignore[no-untyped-def]
        if c is None:
            return "."
        return ("✗" if c.divergent else "◆" if c.base else "-" if not c.selected else "") + c.name
    return [tuple(cell(c) for c in row.cells) for row in detail.rows]


def test_align_in_sync_and_behind() -> None:
    detail = align("nas1:tank/a", SRC, [("vault:b/a", ds("b/a", ("s1", 1), ("s2", 2), ("s3", 3))),
                                          ("nas2:r/a", ds("r/a", ("s1", 1)))])
    assert detail.columns == ("nas1:tank/a", "vault:b/a", "nas2:r/a")
    assert detail.notes == ("", "", "behind")
    assert table(detail) == [("◆s1", "s1", "◆s1"), ("s2", "s2", "."), ("◆s3", "◆s3", ".")]


def test_align_diverged_branch_sits_after_the_base() -> None:
    target = ds("b/a", ("s1", 1), ("local", 99), ("local2", 98))
    detail = align("nas1:tank/a", SRC, [("vault:b/a", target)])
    assert detail.notes == ("", "diverged")
    assert table(detail) == [("◆s1", "◆s1"), (".", "✗local"), (".", "✗local2"), ("s2", "."), ("s3", ".")]


def test_align_name_clash_is_divergent() -> None:
    target = ds("b/a", ("s1", 1), ("s2", 42))  # same name as the source's s2, another GUID
    assert table(align("x", SRC, [("t", target)])) == [("◆s1", "◆s1"), (".", "✗s2"), ("s2", "."), ("s3", ".")]


def test_align_unrelated_missing_unreachable_and_filter() -> None:
    unrelated = ds("b/a", ("other", 77))
    detail = align("x", SRC, [("t1", unrelated), ("t2", DatasetState.absent("b/x")), ("t3", "unreachable")],
                   select=SnapshotFilter(prefix="s", regex="[13]$"))
    assert detail.notes == ("", "no-common-base", "missing", "unreachable")
    assert table(detail) == [(".", "✗other", ".", "."), ("s1", ".", ".", "."), ("-s2", ".", ".", "."),
                             ("s3", ".", ".", ".")]


def test_detail_for_maps_recursive_children() -> None:
    job = Job("j", Endpoint("nas1", "tank/a"), recursive=True, targets=(Endpoint("vault", "b/a"),))
    src = {"tank/a": SRC, "tank/a/c": ds("tank/a/c", ("s1", 11), ("s2", 12))}
    dst = {"b/a": ds("b/a", ("s1", 1)), "b/a/c": ds("b/a/c", ("s1", 11), ("s2", 12))}
    plans = [plan(src["tank/a"], dst["b/a"]), plan(src["tank/a/c"], dst["b/a/c"])]
    report = report_from_plans(job, Endpoint("vault", "b/a"), plans, src, dst, 5000)
    assert report.row.state == "behind" and report.row.datasets == 2
    assert [(c.source, c.state) for c in report.cells] == [("nas1:tank/a", "behind"), ("nas1:tank/a/c", "in-sync")]
    detail = detail_for("nas1:tank/a/c", [report])
    assert detail is not None and detail.columns == ("nas1:tank/a/c", "vault:b/a/c")
    assert table(detail) == [("s1", "s1"), ("◆s2", "◆s2")]
    assert detail_for("nas2:tank/a", [report]) is None


def test_detail_of_an_excluded_child_shows_no_copy_of_it() -> None:
    job = Job("j", Endpoint("nas1", "tank/a"), recursive=True, targets=(Endpoint("vault", "b/a"),),
              exclude=("c",))
    src = {"tank/a": SRC, "tank/a/c": ds("tank/a/c", ("s1", 11))}
    dst = {"b/a": ds("b/a", ("s1", 1))}
    report = report_from_plans(job, Endpoint("vault", "b/a"), [plan(src["tank/a"], dst["b/a"])], src, dst, 5000)
    assert detail_for("nas1:tank/a/c", [report]) is None      # not "missing" on vault: the job leaves it out
    assert detail_for("nas1:tank/a", [report]) is not None


def test_detail_columns_follow_the_inventory_not_the_order_answers_came_in() -> None:
    vault, nas2 = Endpoint("vault", "b/a"), Endpoint("nas2", "r/a")
    job = Job("j", Endpoint("nas1", "tank/a"), targets=(vault, nas2))
    src = {"tank/a": SRC}
    reports = [report_from_plans(job, t, [plan(SRC, ds(t.dataset, ("s1", 1)))], src, {t.dataset: ds(t.dataset, ("s1", 1))},
                                 5000) for t in (nas2, vault)]   # nas2 answered first
    for order in (reports, reports[::-1]):
        detail = detail_for("nas1:tank/a", order)
        assert detail is not None and detail.columns == ("nas1:tank/a", "vault:b/a", "nas2:r/a")


def _row(**kw) -> LocationStatus:  # type: ignore[no-untyped-def]
    base = dict(job="j", source="nas1:tank/a", target="vault:b/a", state="behind", behind=2, lag_seconds=60,
                location="vault")
    base.update(kw)
    return LocationStatus(**base)  # type: ignore[arg-type]


def _transfer(**kw) -> TransferRow:  # type: ignore[no-untyped-def]
    base = dict(id=1, run_id=1, job="j", target="vault:b/a", stream="tank/a@s1 → @s3 (-I)", source_host="nas1",
                target_host="vault", estimate=4000, done=1000, rate=100.0, started=10.0, updated=20.0,
                finished=None, ok=None, pid=123, command="sync")
    base.update(kw)
    return TransferRow(**base)  # type: ignore[arg-type]


def test_annotate_running_and_last_run() -> None:
    task = TaskRow(7, 3, "j", "nas1:tank/a", "vault:b/a", 100.0, 160.0, "incremental", "…", "failed",
                   "vault: stream broke", 10, 60.0, "vault", pid=4242)
    view = StoreView(read_at=200.0, active=(_transfer(),), last_results={("j", "vault:b/a"): task},
                     totals={("j", "vault:b/a"): Totals("j", "vault:b/a", 5000, 4, 1, 160.0, "failed", 90.0)})
    row = annotate(_row(), view)
    assert row.state == RUNNING and row.planned_state == "behind"
    assert row.transfer is not None and row.transfer["eta_seconds"] == 30 and row.transfer["pid"] == 123
    assert row.last_run == {"outcome": "failed", "finished_at": 160.0, "started_at": 100.0, "bytes": 10,
                            "seconds": 60.0, "message": "vault: stream broke", "failed_host": "vault", "run_id": 3,
                            "pid": 4242}
    assert row.last_success_at == 90.0 and row.bytes_total == 5000
    assert state_label(row) == "transfer running 25%"
    # a transfer into an unreachable host's dataset can't be confirmed: the hosts' answer wins
    assert annotate(_row(state="unreachable"), view).state == "unreachable"
    assert annotate(_row(), StoreView(read_at=0)) == _row()


def test_exit_code_trusts_a_running_transfer() -> None:
    assert exit_code([_row(state=RUNNING, planned_state="behind")]) == 0
    assert exit_code([_row(state=RUNNING, planned_state="no-common-base")]) == 0  # mid-receive look
    assert exit_code([_row(state="diverged")]) == 1
    assert exit_code([_row(state=NOT_CHECKED)]) == 0


def test_s3_targets_are_listed_as_not_checked() -> None:
    job = Job("j", Endpoint("nas1", "tank/a"), targets=(S3Ref("offsite"),))
    report = not_checked(job, S3Ref("offsite"), 5.0)
    assert report.row.state == NOT_CHECKED and report.row.target == "s3:offsite"
    assert report.row.target_kind == "s3" and report.row.location == "s3:offsite"
    assert state_label(report.row) == "not checked"


def test_prometheus_text() -> None:
    task = TaskRow(7, 3, "j", "nas1:tank/a", "vault:b/a", 100.0, 160.0, None, None, "ok", "", 10, 60.0, None)
    view = StoreView(read_at=0, last_results={("j", "vault:b/a"): task},
                     totals={("j", "vault:b/a"): Totals("j", "vault:b/a", 5000, 4, 0, 160.0, "ok", 160.0)})
    rows = [annotate(_row(), view),
            _row(job='we"ird\\job', target="s3:offsite", state=NOT_CHECKED, target_kind="s3", location="s3:offsite",
                 behind=0, lag_seconds=None)]
    text = prometheus_text(rows, now=1234.5)
    lines = text.splitlines()
    for name in ("zrelay_lag_seconds", "zrelay_state", "zrelay_transferred_bytes_total",
                 "zrelay_last_success_timestamp_seconds"):
        assert lines.count(f"# TYPE {name} " + ("counter" if name.endswith("_total") else "gauge")) == 1
    assert 'zrelay_lag_seconds{job="j",source="nas1:tank/a",target="vault:b/a",location="vault"} 60' in lines
    assert 'zrelay_transferred_bytes_total{job="j",source="nas1:tank/a",target="vault:b/a",location="vault"} 5000' in lines
    assert any(line.startswith("zrelay_last_success_timestamp_seconds{job=\"j\"") and line.endswith(" 160.0")
               for line in lines)
    assert 'job="we\\"ird\\\\job"' in text
    assert 'state="not-checked"' in text and "zrelay_status_timestamp_seconds 1234.500" in lines
    sample = re.compile(r'^[a-z_]+(\{([a-z_]+="([^"\\]|\\.)*",?)*\})? -?[0-9.e+]+$')
    assert all(line.startswith("#") or sample.match(line) for line in lines), text


# --- S3 targets: chains read from manifests, planned as s3-push plans ------------------------------

S3_TARGET = S3Target("offsite", "bucket", endpoint="http://127.0.0.1:1", prefix="p/")
S3_JOB = Job("j", Endpoint(HOST, DS), targets=(S3Ref("offsite"),))
S3A, S3B, S3C, S3D = (snap(n, g, t) for n, g, t in (("a", 11, 10), ("b", 12, 20), ("c", 13, 30), ("d", 14, 40)))


def s3_report(source: list[Snapshot], records: list | None, job: Job = S3_JOB,  # type: ignore[type-arg]
              extra: dict[str, DatasetState] | None = None,
              views: dict | None = None):  # type: ignore[no-untyped-def,type-arg]
    src = {DS: DatasetState(DS, True, tuple(source)), **(extra or {})}
    stored = views if views is not None else ({(HOST, DS): view(records)} if records is not None else {})
    return report_from_s3(job, S3Ref("offsite"), S3_TARGET, src, stored, now=1_700_000_000 + 50 * 3600)


def test_s3_in_sync_with_what_is_stored() -> None:
    r = s3_report([S3A, S3B, S3C], [record(m) for m in linear_chain([S3A, S3B, S3C])])
    row = r.row
    assert (row.state, row.behind, row.lag_seconds, row.common_base, row.target_newest) == ("in-sync", 0, 0, "c", "c")
    assert (row.target_kind, row.location, row.target, row.message) == ("s3", "s3:offsite", "s3:offsite", "")
    assert row.base_age_seconds == 20 * 3600 and row.source_newest == "c"
    assert row.s3 == {"url": "s3://bucket/p/zrelay/v1/", "endpoint": "http://127.0.0.1:1", "chains": 1, "sends": 3,
                      "stored_bytes": 3000, "restorable_newest": "c", "broken_chains": 0, "unfinished_sends": 0,
                      "listed_bytes": 4500, "object_count": 6,   # the manifests are objects too
                      "storage_classes": {"STANDARD": {"objects": 6, "bytes": 4500}},
                      "chain_costs": [{"dataset": f"{HOST}:{DS}", "root": row.s3["chain_costs"][0]["root"],
                                       "healthy": True, "sends": 3, "newest": "c", "newest_created": S3C.creation,
                                       "listed_bytes": 4500, "object_count": 6,
                                       "storage_classes": {"STANDARD": {"objects": 6, "bytes": 4500}},
                                       "manifest_size": 3000}]}
    assert row.s3["chain_costs"][0]["root"].startswith("@a/")
    assert [(c.source, c.location, c.state) for c in r.cells] == [(f"{HOST}:{DS}", "s3:offsite", "in-sync")]
    assert exit_code([row]) == 0 and "s3" in row.to_dict()


def test_s3_behind_names_the_sends_the_next_push_makes() -> None:
    row = s3_report([S3A, S3B, S3C, S3D], [record(m) for m in linear_chain([S3A, S3B, S3C])]).row
    assert (row.state, row.behind, row.common_base, row.source_newest) == ("behind", 1, "c", "d")
    assert row.lag_seconds == 10 * 3600 and "1 incremental send (@c → @d)" in row.message
    assert state_label(row) == "behind 1" and exit_code([row]) == 0


def test_s3_missing_when_nothing_is_stored() -> None:
    row = s3_report([S3A, S3B], None).row
    assert (row.state, row.behind, row.target_newest, row.common_base) == ("missing", 2, None, None)
    assert "nothing stored yet" in row.message and row.s3 is not None and row.s3["chains"] == 0
    orphan_only = s3_report([S3A], [record(linear_chain([S3A])[0], with_manifest=False)]).row
    assert orphan_only.state == "missing" and orphan_only.s3["unfinished_sends"] == 1  # type: ignore[index]


def test_s3_broken_chain_alerts_and_says_what_cannot_be_restored() -> None:
    ms = linear_chain([S3A, S3B, S3C])
    r = s3_report([S3A, S3B, S3C], [record(ms[0]), record(ms[1], missing=(0,)), record(ms[2])])
    row = r.row
    assert row.state == BROKEN and exit_code([row]) == 1 and state_label(row) == "broken"
    assert "@b, @c cannot be restored" in row.message and "is missing" in row.message
    assert "s3-push --full" in row.message and f"s3-ls offsite {HOST}:{DS}" in row.message
    # the fields still say where the restorable part stands, and what is stored
    assert (row.common_base, row.target_newest, row.behind) == ("a", "c", 2)
    assert row.s3["broken_chains"] == 1 and row.s3["restorable_newest"] == "a"  # type: ignore[index]
    # a whole send deleted: the link is missing
    gone = s3_report([S3A, S3B, S3C], [record(ms[0]), record(ms[2])]).row
    assert gone.state == BROKEN and "builds on is missing" in gone.message


def test_s3_older_broken_chain_still_alerts() -> None:
    old = linear_chain([S3A, S3B])
    new = manifest(S3C)   # s3-push --full: a new chain at @c
    row = s3_report([S3A, S3B, S3C], [record(old[0]), record(old[1], missing=(0,)), record(new)]).row
    assert row.state == BROKEN and "newest chain is healthy" in row.message
    assert row.common_base == "c" and row.s3["chains"] == 2  # type: ignore[index]


def test_s3_diverged_when_the_source_lost_stored_snapshots_after_the_base() -> None:
    # the source rolled back to @b and took another @c: the bucket's @c has a GUID the source never had since
    other_c = snap("c", 99, 35)
    row = s3_report([S3A, S3B, other_c], [record(m) for m in linear_chain([S3A, S3B, S3C])]).row
    assert row.state == "diverged" and exit_code([row]) == 1
    assert "@c" in row.message and "s3-push --full" in row.message and "--rollback" not in row.message
    assert row.common_base == "b"


def test_s3_no_common_base_when_the_source_was_recreated() -> None:
    fresh = [snap("a", 21, 10), snap("b", 22, 20)]
    row = s3_report(fresh, [record(m) for m in linear_chain([S3A, S3B])]).row
    assert row.state == "no-common-base" and exit_code([row]) == 1 and "s3-push --full" in row.message


def test_s3_recursive_job_shows_its_worst_dataset() -> None:
    job = Job("j", Endpoint(HOST, DS), recursive=True, targets=(S3Ref("offsite"),))
    child = f"{DS}/c"
    ca = snap("a", 31, 11, ds=child)
    views = {(HOST, DS): view([record(m) for m in linear_chain([S3A, S3B])])}
    r = s3_report([S3A, S3B], None, job, extra={child: DatasetState(child, True, (ca,)),
                                                "tank/other": DatasetState("tank/other", True, ())}, views=views)
    assert (r.row.state, r.row.datasets, r.row.common_base) == ("missing", 2, "b")
    assert r.row.message.startswith(f"{HOST}:{child}: nothing stored yet")
    assert [(c.source, c.state) for c in r.cells] == [(f"{HOST}:{DS}", "in-sync"), (f"{HOST}:{child}", "missing")]
    assert set(r.target_states) == {DS, child} and len(r.plans) == 2


def test_s3_source_without_the_dataset_is_an_error() -> None:
    r = report_from_s3(S3_JOB, S3Ref("offsite"), S3_TARGET, {}, {}, 5.0)
    assert r.row.state == "error" and "does not exist" in r.row.message and r.row.target_kind == "s3"
    assert r.row.s3 is not None and r.row.s3["chains"] is None


def test_s3_detail_column_and_broken_note() -> None:
    ms = linear_chain([S3A, S3B])
    fine = s3_report([S3A, S3B, S3C], [record(m) for m in ms])
    detail = detail_for(f"{HOST}:{DS}", [fine])
    assert detail is not None and detail.columns == (f"{HOST}:{DS}", "s3:offsite")
    assert detail.notes == ("", "behind") and table(detail) == [("a", "a"), ("◆b", "◆b"), ("c", ".")]
    broken = s3_report([S3A, S3B], [record(ms[0], missing=(0,)), record(ms[1])])
    detail = detail_for(f"{HOST}:{DS}", [broken])
    assert detail is not None and detail.notes == ("", BROKEN)
    # a target that was not inspected adds no column
    unchecked = detail_for(f"{HOST}:{DS}", [fine, not_checked(S3_JOB, S3Ref("offsite"))])
    assert unchecked is not None and unchecked.columns == detail.columns


def test_s3_failures_are_one_line_naming_target_and_endpoint() -> None:
    state, message = _s3_failure(S3Ref("offsite"), S3_TARGET, S3Unreachable("offsite", "cannot reach\nit"))
    assert state == "unreachable" and message == "s3:offsite (http://127.0.0.1:1): cannot reach it"
    state, _ = _s3_failure(S3Ref("offsite"), S3_TARGET, S3AccessDenied("offsite", "listing x: AccessDenied"))
    assert state == "unreachable"
    state, message = _s3_failure(S3Ref("offsite"), S3Target("aws", "b"), S3NotFound("aws", "NoSuchBucket"))
    assert state == "error" and message == "s3:offsite (AWS): NoSuchBucket"


def test_probe_reports_a_dead_endpoint_at_once() -> None:
    started = time.monotonic()
    problem = asyncio.run(probe_endpoint(S3_TARGET, timeout=5))
    assert problem == "cannot connect to 127.0.0.1:1: Connection refused"
    assert time.monotonic() - started < 2


def test_a_push_does_not_hide_a_broken_chain() -> None:
    row = _row(target="s3:offsite", state=BROKEN, target_kind="s3", location="s3:offsite")
    view = StoreView(read_at=0, active=(_transfer(target="s3:offsite", target_host="s3:offsite"),))
    annotated = annotate(row, view)
    assert annotated.state == BROKEN and annotated.transfer is not None and exit_code([annotated]) == 1


def test_prometheus_s3_rows() -> None:
    row = s3_report([S3A, S3B, S3C, S3D], [record(m) for m in linear_chain([S3A, S3B, S3C])]).row
    lines = prometheus_text([row], now=1.0).splitlines()
    labels = f'job="j",source="{HOST}:{DS}",target="s3:offsite",location="s3:offsite"'
    assert f"zrelay_behind_snapshots{{{labels}}} 1" in lines
    assert f"zrelay_s3_stored_bytes{{{labels}}} 3000" in lines
    assert "# TYPE zrelay_s3_stored_bytes gauge" in lines


def _push_events(rec: Recorder, job: str, target: str, stream: str, source_host: str, target_host: str,
                 source: str) -> None:
    rec.handle(JobStarted(job, source, target))
    rec.handle(TransferStarted(job, target, source_host, target_host, stream, 2000))
    rec.handle(TransferProgress(job, target, stream, 1000, 2000, 500.0))


def test_recorder_keeps_s3_push_and_restore_runs_for_status(tmp_path: Path) -> None:
    """s3-push records job → s3:NAME; s3-restore records the pushed dataset → the dataset it writes into."""
    db = tmp_path / "state.db"
    push = Recorder(db, "s3-push", ["s3-push"], flush_interval=0.05).start()
    restore = Recorder(db, "s3-restore", ["s3-restore"], flush_interval=0.05).start()
    try:
        _push_events(push, "j", "s3:offsite", f"{DS}@c → @d (-i)", HOST, "s3:offsite", f"{HOST}:{DS}")
        _push_events(restore, f"{HOST}:{DS}", "vault:backup/r", f"{HOST}:{DS}@a (full)", "s3:offsite", "vault",
                     "s3:offsite")
        deadline = time.monotonic() + 10
        live = read_view(db)
        while len(live.active) < 2 and time.monotonic() < deadline:  # the recorders write every 0.05 s
            time.sleep(0.02)
            live = read_view(db)
        assert {(t.job, t.target, t.source_host, t.target_host, t.command) for t in live.active} == {
            ("j", "s3:offsite", HOST, "s3:offsite", "s3-push"),
            (f"{HOST}:{DS}", "vault:backup/r", "s3:offsite", "vault", "s3-restore")}
        row = annotate(s3_report([S3A, S3B, S3C, S3D], [record(m) for m in linear_chain([S3A, S3B, S3C])]).row, live)
        assert row.state == RUNNING and row.planned_state == "behind"
        assert row.transfer is not None and row.transfer["command"] == "s3-push"
        push.handle(TransferFinished("j", "s3:offsite", f"{DS}@c → @d (-i)", 2000, 1.0, True))
        push.handle(JobFinished("j", f"{HOST}:{DS}", "s3:offsite", Outcome.OK, "pushed", 2000, 1.5))
        restore.handle(TransferFinished(f"{HOST}:{DS}", "vault:backup/r", f"{HOST}:{DS}@a (full)", 2000, 1.0, True))
        restore.handle(JobFinished(f"{HOST}:{DS}", "s3:offsite", "vault:backup/r", Outcome.OK, "restored", 2000, 1.2))
    finally:
        push.close(0)
        restore.close(0)
    done = read_view(db)
    assert not done.active
    row = annotate(s3_report([S3A, S3B, S3C, S3D], [record(m) for m in linear_chain([S3A, S3B, S3C, S3D])]).row, done)
    assert row.state == "in-sync" and row.last_run is not None and row.last_run["outcome"] == "ok"
    assert row.bytes_total == 2000 and row.last_success_at == row.last_run["finished_at"]
    assert done.last_results[(f"{HOST}:{DS}", "vault:backup/r")].message == "restored"


def test_tui_matrix_s3_column_and_live_transfers() -> None:
    from zrelay.tui.model import build_matrix

    ms = linear_chain([S3A, S3B, S3C])
    behind = s3_report([S3A, S3B, S3C, S3D], [record(m) for m in ms])
    push = _transfer(job="j", target="s3:offsite", target_host="s3:offsite", stream=f"{DS}@c → @d (-i)",
                     source_host=HOST, command="s3-push")
    restore = _transfer(id=2, job="j", target="vault:elsewhere", target_host="vault", stream=f"{HOST}:{DS}@a (full)",
                        source_host="s3:offsite", command="s3-restore")
    key = (f"{HOST}:{DS}", "s3:offsite")
    matrix = build_matrix([S3_JOB], {behind.key: behind}, StoreView(read_at=0))
    assert matrix.locations == ("s3:offsite",) and matrix.cells[key].state == "behind"
    matrix = build_matrix([S3_JOB], {behind.key: behind}, StoreView(read_at=0, active=(push, restore)))
    assert matrix.cells[key].state == RUNNING and set(matrix.cells) == {key}  # the restore is not a job target
    broken = s3_report([S3A, S3B, S3C], [record(ms[0]), record(ms[1], missing=(0,)), record(ms[2])])
    matrix = build_matrix([S3_JOB], {broken.key: broken}, StoreView(read_at=0, active=(push,)))
    assert matrix.cells[key].state == BROKEN and matrix.cells[key].render().plain == "✂ broken"
