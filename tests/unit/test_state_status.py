"""status with the store: GUID alignment for the detail, store annotations, Prometheus text, S3 rows."""

from __future__ import annotations

import re

from zrelay.cli.status import exit_code, prometheus_text, state_label
from zrelay.inventory.model import Endpoint, Job, S3Ref
from zrelay.plan import plan
from zrelay.state import StoreView, TaskRow, Totals, TransferRow
from zrelay.status import (NOT_CHECKED, RUNNING, LocationStatus, align, annotate, detail_for, not_checked,
                           report_from_plans)
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
                   "vault: stream broke", 10, 60.0, "vault")
    view = StoreView(read_at=200.0, active=(_transfer(),), last_results={("j", "vault:b/a"): task},
                     totals={("j", "vault:b/a"): Totals("j", "vault:b/a", 5000, 4, 1, 160.0, "failed", 90.0)})
    row = annotate(_row(), view)
    assert row.state == RUNNING and row.planned_state == "behind"
    assert row.transfer is not None and row.transfer["eta_seconds"] == 30 and row.transfer["pid"] == 123
    assert row.last_run == {"outcome": "failed", "finished_at": 160.0, "started_at": 100.0, "bytes": 10,
                            "seconds": 60.0, "message": "vault: stream broke", "failed_host": "vault", "run_id": 3}
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
