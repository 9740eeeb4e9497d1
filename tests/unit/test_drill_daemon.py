"""Scheduled drills: the ``drill_to:`` key and ``schedule: {drill: …}`` as the loader reads them (and
refuses them, one line at file:line:column), the timetable's drill entries, a mismatch parking the
entry instead of a retry, the metrics of each target's newest drill, and ``daemon --check``'s preview."""

from __future__ import annotations

import calendar

import pytest

from zrelay import drill as d
from zrelay.cli.daemon import check
from zrelay.daemon.metrics import DaemonMetrics
from zrelay.daemon.runs import parks
from zrelay.engine.options import TaskResult
from zrelay.errors import InventoryError
from zrelay.events import Outcome
from zrelay.inventory import loads_inventory
from zrelay.inventory.model import Endpoint, Inventory
from zrelay.inventory.service import RunSchedule
from zrelay.lifecycle.timetable import History, entries, finished, next_run, upcoming

T0 = float(calendar.timegm((2024, 5, 1, 10, 4, 0)))
D = 86400

INVENTORY = """\
all:
  hosts:
    nas1: {{address: 192.0.2.1}}
    nas2: {{address: 192.0.2.2}}
    vault: {{address: 192.0.2.3}}
  children:
    backup: {{hosts: {{vault: {{}}}}}}
zrelay:
  s3_targets:
    offsite: {{bucket: some-bucket}}
  jobs:
    - name: data
      source: nas1:tank/data
      targets: [nas2:tank/replica/data, s3:offsite]
{job}    - name: plain
      source: nas1:tank/home
      targets: [nas2:tank/replica/home]
"""


def load(job: str = "") -> Inventory:
    return loads_inventory(INVENTORY.format(job=job), "inv.yml")


def refused(job: str) -> str:
    with pytest.raises(InventoryError) as info:
        load(job)
    return str(info.value)


DRILLED = "      drill_to: vault:backup/scratch\n      schedule: {drill: 30d}\n"


def test_drill_to_and_a_drill_schedule_are_read() -> None:
    job = load(DRILLED).jobs[0]
    assert job.drill_to == Endpoint("vault", "backup/scratch")
    assert job.schedule["drill"] == RunSchedule(every=30 * D, text="every 30d")
    cron = load('      drill_to: vault:backup/scratch\n      schedule: {drill: "0 4 1 * *"}\n').jobs[0]
    assert cron.schedule["drill"].cron is not None and cron.schedule["drill"].cron.hours == (4,)
    assert load().jobs[0].drill_to is None


def test_drill_keys_refused_one_line_at_file_line_column() -> None:
    # a drill scheduled without drill_to names the job and the key it lacks
    err = refused("      schedule: {drill: 30d}\n")
    assert err.startswith("inv.yml:15:7: ") and "job 'data'" in err and "drill_to" in err, err
    # an unknown host, at the value
    err = refused("      drill_to: nas9:tank/scratch\n")
    assert err.startswith("inv.yml:15:17: ") and "unknown host 'nas9' in drill_to" in err, err
    # not host:dataset
    err = refused("      drill_to: vault\n")
    assert err.startswith("inv.yml:15:17: ") and "drill_to" in err, err
    err = refused("      drill_to: [vault, backup]\n")
    assert err.startswith("inv.yml:15:17: ") and "drill_to" in err, err
    # inside the job's source or a replica: refused
    err = refused("      drill_to: nas2:tank/replica/data/scratch\n")
    assert "inside the job's target nas2:tank/replica/data" in err and err.startswith("inv.yml:15:17: "), err
    assert "inside the job's source" in refused("      drill_to: nas1:tank/data\n")
    # a misspelt kind is an unknown key of schedule:, with the kinds listed
    assert "drill" in refused("      drill_to: vault:backup/s\n      schedule: {dril: 30d}\n")


def test_drills_are_never_on_by_default() -> None:
    # drill_to alone (for `zrelay drill`) schedules nothing: a drill costs a full restore
    kinds = {(e.job, e.kind) for e in entries(load("      drill_to: vault:backup/scratch\n"))}
    assert ("data", "drill") not in kinds
    assert not any(kind == "drill" for _, kind in {(e.job, e.kind) for e in entries(load())})


def test_a_drill_entry_touches_source_replicas_and_the_scratch_host() -> None:
    inv = load(DRILLED)
    (drill,) = [e for e in entries(inv) if e.kind == "drill"]
    assert drill.job == "data" and drill.schedule.every == 30 * D
    assert drill.hosts == ("nas1", "nas2", "vault")
    assert "backup" in drill.groups       # group_limits and windows of vault's groups count it
    assert [e.kind for e in entries(inv) if e.job == "data"] == ["sync", "s3-push", "drill"]
    # after a sync it follows the sync's success
    follows = load("      drill_to: vault:backup/s\n      schedule: {drill: after sync}\n")
    (drill,) = [e for e in entries(follows) if e.kind == "drill"]
    assert drill.schedule.follows == "sync"


def test_a_mismatch_parks_the_drill_until_the_user_asks() -> None:
    (entry,) = [e for e in entries(load(DRILLED)) if e.kind == "drill"]
    settings = load(DRILLED).settings.daemon
    failed = finished(History(last_started=T0 - 60), "failed", "host down", T0 - 50)
    assert failed.failures == 1 and failed.parked is None
    assert "retry 1/" in next_run(entry, failed, None, T0, settings).reason
    parked = finished(History(last_started=T0 - 60), "failed", "nas2:r: drill mismatch: contents differ",
                      T0 - 50, park=True)
    assert parked.parked and parked.failures == 0 and parked.last_outcome == "failed"
    nxt = next_run(entry, parked, None, T0, settings)
    assert nxt.at is None
    assert nxt.reason.startswith("failed, not retried: nas2:r: drill mismatch: contents differ; waits for")
    assert finished(parked, "ok", "", T0).parked is None


def test_only_a_drill_mismatch_parks() -> None:
    def result(outcome: Outcome, ev_result: str) -> TaskResult:
        ev = d.Evidence("j", "nas2:r", "nas1:s", "vault:sc", result=ev_result)
        return TaskResult("j", "nas1:s", "nas2:r", outcome, details=ev)

    assert parks("drill", [result(Outcome.OK, d.OK), result(Outcome.FAILED, d.MISMATCH)])
    assert not parks("drill", [result(Outcome.FAILED, d.FAILED)])
    assert not parks("sync", [result(Outcome.FAILED, d.MISMATCH)])


def test_daemon_check_previews_the_drill(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    inv = load(DRILLED)
    planned = upcoming(entries(inv), {}, T0, inv.settings.daemon, 10)
    assert any(e.kind == "drill" and e.job == "data" for _, e, _ in planned)
    assert check(inv, tmp_path / "none.db", 10, False) == 0
    out = capsys.readouterr().out
    assert any(" data " in line and " drill " in line and "first run (every 30d)" in line
               for line in out.splitlines()), out


def test_metrics_show_each_targets_newest_drill() -> None:
    m = DaemonMetrics()
    row = {"job": "data", "target": "nas2:tank/replica/data", "state": "in-sync",
           "last_drill": {"when": 1234.5, "snapshot": "s2", "result": "mismatch", "message": "differs"}}
    m.target_status([row, {"job": "plain", "target": "nas2:tank/replica/home", "state": "in-sync",
                           "last_drill": None}], T0)
    text = m.render().decode()
    assert 'zrelay_last_drill_timestamp_seconds{job="data",target="nas2:tank/replica/data"} 1234.5' in text
    assert 'zrelay_last_drill_result{job="data",result="mismatch",target="nas2:tank/replica/data"} 1.0' in text
    assert 'job="plain"' not in "\n".join(line for line in text.splitlines() if "drill" in line)
    # a newer drill replaces the result: one sample per target
    m.target_status([{**row, "last_drill": {**row["last_drill"], "when": 2000.0, "result": "ok"}}], T0)
    text = m.render().decode()
    assert 'result="ok"' in text and 'result="mismatch"' not in text


def test_a_recursive_round_counts_as_one_drill_as_bad_as_its_worst_dataset(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from zrelay.drillstate import DrillStore, last_drills

    path = tmp_path / "state.db"
    with DrillStore(path) as store:
        store.record("j", "nas2:r", "nas1:s", "a", 1, 10.0, 11.0, "ok", "equal", {"round": 10.0})   # an older round
        for i, (src, result) in enumerate((("nas1:s", "ok"), ("nas1:s/a", "mismatch"), ("nas1:s/b", "ok"))):
            store.record("j", "nas2:r", src, "b", 2, 100.0 + i, 101.0 + i, result,
                         "file contents differ" if result == "mismatch" else "equal", {"round": 100.0})
        store.record("k", "nas2:k", "nas1:k", "c", 3, 50.0, 51.0, "ok", "equal", {})   # no round: as it is
    last = last_drills(path)
    assert last[("j", "nas2:r")]["result"] == "mismatch"
    assert last[("j", "nas2:r")]["message"] == "nas1:s/a: file contents differ (1 of 3 datasets not ok)"
    assert last[("j", "nas2:r")]["snapshot"] == "b" and last[("j", "nas2:r")]["finished"] == 103.0
    assert last[("k", "nas2:k")]["message"] == "equal"
