"""The daemon's timetable (zrelay.lifecycle.timetable): which runs each job gets and their default
schedules, how a run's history changes, when an entry may start next and why, which due runs the
budgets let start, and the preview ``daemon --check`` prints. Every time is a parameter."""

from __future__ import annotations

import calendar
import hashlib
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from zrelay.events import Outcome
from zrelay.inventory import loads_inventory
from zrelay.inventory.cron import parse_cron
from zrelay.inventory.model import Endpoint, Inventory, Job, S3Ref
from zrelay.inventory.policy import KeepPolicy, Lifecycle, SnapshotSchedule
from zrelay.inventory.service import DaemonSettings, RetryPolicy, RunSchedule, Window
from zrelay.lifecycle.timetable import (Entry, History, NextRun, choose, entries, finished, jitter_offset,
                                        next_run, requested, started, upcoming)
from zrelay.lifecycle.windows import first_open

REPO = Path(__file__).resolve().parents[2]
T0 = float(calendar.timegm((2024, 5, 1, 10, 4, 0)))  # a Wednesday, 10:04 UTC
M, H, D = 60, 3600, 86400

INVENTORY = """\
all:
  hosts:
    nas1: {address: 192.0.2.1}
    nas2: {address: 192.0.2.2}
    vault: {address: 192.0.2.3}
  children:
    storage: {hosts: {nas1: {}, nas2: {}}}
    backup: {hosts: {vault: {}}}
zrelay:
  s3_targets:
    offsite: {bucket: some-bucket}
    cold: {bucket: other-bucket}
  jobs:
    - name: full
      source: nas1:tank/data
      targets: [vault:backup/data, s3:offsite]
      snapshot: {every: 15m}
      keep: {source: {hourly: 24}}
    - name: plain
      source: nas2:tank/home
      targets: [vault:backup/home]
"""


def inventory() -> Inventory:
    return loads_inventory(INVENTORY, "inv.yml")


def with_job(inv: Inventory, name: str, **changes: object) -> Inventory:
    jobs = tuple(replace(j, **changes) if j.name == name else j for j in inv.jobs)  # type: ignore[arg-type]
    return replace(inv, jobs=jobs)


def with_daemon(inv: Inventory, **changes: object) -> Inventory:
    daemon = replace(inv.settings.daemon, **changes)  # type: ignore[arg-type]
    return replace(inv, settings=replace(inv.settings, daemon=daemon))


def by_key(inv: Inventory) -> dict[tuple[str, str], Entry]:
    return {e.key: e for e in entries(inv)}


def entry(kind: str = "snapshot", schedule: RunSchedule = RunSchedule(every=900, text="every 15m"),
          job: str = "j", hosts: tuple[str, ...] = ("nas1",), windows: tuple[Window, ...] = (),
          offset: int = 0) -> Entry:
    return Entry(job=job, kind=kind, schedule=schedule, hosts=hosts, windows=windows, offset=offset)


SETTINGS = DaemonSettings()


# --------------------------------------------------------------------------- entries()


def test_a_full_job_gets_every_kind_in_order_with_followers_by_default() -> None:
    got = [e for e in entries(inventory()) if e.job == "full"]
    assert [e.kind for e in got] == ["snapshot", "sync", "prune", "s3-push"]
    snap, sync, prune, push = (e.schedule for e in got)
    assert snap == RunSchedule(every=900, text="every 15m")
    assert sync == RunSchedule(follows="snapshot", text="default: after each snapshot")
    assert prune == RunSchedule(follows="sync", text="default: after each sync")
    assert push == RunSchedule(follows="snapshot", text="default: after each snapshot")


def test_entries_come_in_job_order() -> None:
    assert [e.key for e in entries(inventory())] == [
        ("full", "snapshot"), ("full", "sync"), ("full", "prune"), ("full", "s3-push"), ("plain", "sync")]


def test_a_job_without_snapshots_syncs_every_default() -> None:
    plain = by_key(inventory())[("plain", "sync")]
    assert plain.schedule == RunSchedule(every=900, text="default: every 15m")


def test_a_snapshot_schedule_without_every_or_cron_gives_no_snapshot_entry() -> None:
    inv = with_job(inventory(), "full", lifecycle=replace(inventory().jobs[0].lifecycle,
                                                           snapshot=SnapshotSchedule(name="x_%Y")))
    got = by_key(inv)
    assert ("full", "snapshot") not in got
    assert got[("full", "sync")].schedule.text == "default: every 15m"
    assert got[("full", "prune")].schedule.follows == "sync"
    assert got[("full", "s3-push")].schedule == RunSchedule(every=900, text="default: every 15m")


def test_a_cron_snapshot_is_copied() -> None:
    cron = parse_cron("0 3 * * *")
    inv = with_job(inventory(), "full", lifecycle=Lifecycle(snapshot=SnapshotSchedule(cron=cron)))
    assert by_key(inv)[("full", "snapshot")].schedule == RunSchedule(cron=cron, text="cron 0 3 * * *")


def test_prune_follows_snapshot_without_host_targets_else_runs_every_default() -> None:
    keep = {"source": KeepPolicy(hourly=24)}
    job = Job(name="solo", source=Endpoint("nas1", "tank/solo"), targets=(S3Ref("offsite"),),
              lifecycle=Lifecycle(snapshot=SnapshotSchedule(every=3600), keep=keep))
    inv = replace(inventory(), jobs=(job,))
    got = by_key(inv)
    assert ("solo", "sync") not in got
    assert got[("solo", "prune")].schedule == RunSchedule(follows="snapshot", text="default: after each snapshot")
    inv = replace(inv, jobs=(replace(job, lifecycle=Lifecycle(keep=keep)),))
    assert by_key(inv)[("solo", "prune")].schedule == RunSchedule(every=900, text="default: every 15m")


def test_a_job_without_keep_has_no_prune_and_without_s3_no_push() -> None:
    got = by_key(inventory())
    assert ("plain", "prune") not in got and ("plain", "s3-push") not in got


def test_a_written_schedule_wins() -> None:
    hourly = RunSchedule(every=3600, text="every 1h")
    inv = with_job(inventory(), "full", schedule={"sync": hourly, "prune": RunSchedule(cron=parse_cron("0 3 * * *"))})
    got = by_key(inv)
    assert got[("full", "sync")].schedule == hourly
    assert got[("full", "prune")].schedule.text == "cron 0 3 * * *"  # text filled in when missing


def test_a_written_follows_of_a_run_the_job_lacks_falls_back_to_every_default() -> None:
    inv = with_job(inventory(), "plain", schedule={"sync": RunSchedule(follows="snapshot", text="after each snapshot")})
    schedule = by_key(inv)[("plain", "sync")].schedule
    assert (schedule.every, schedule.follows) == (900, None)
    assert schedule.text == "default: every 15m (after each snapshot: the job runs no snapshot)"


def test_a_written_follows_with_a_time_keeps_the_time() -> None:
    both = RunSchedule(every=3600, follows="snapshot", text="every 1h, after each snapshot")
    schedule = by_key(with_job(inventory(), "plain", schedule={"sync": both}))[("plain", "sync")].schedule
    assert (schedule.every, schedule.follows) == (3600, None)
    assert schedule.text.startswith("every 1h (")


def test_runs_that_only_follow_each_other_are_broken_at_the_first() -> None:
    loop = {"sync": RunSchedule(follows="prune", text="after each prune"),
            "prune": RunSchedule(follows="sync", text="after each sync")}
    inv = with_job(inventory(), "full", schedule=loop, lifecycle=replace(inventory().jobs[0].lifecycle, snapshot=None))
    got = by_key(inv)
    assert got[("full", "sync")].schedule.every == 900
    assert "nothing it follows starts by itself" in got[("full", "sync")].schedule.text
    assert got[("full", "prune")].schedule == RunSchedule(follows="sync", text="after each sync")


def test_s3_push_takes_the_first_target_push_that_is_set() -> None:
    inv = inventory()
    targets = dict(inv.s3_targets)
    targets["cold"] = replace(targets["cold"], push=RunSchedule(every=7200, text="every 2h"))
    inv = with_job(replace(inv, s3_targets=targets), "full",
                   targets=(Endpoint("vault", "backup/data"), S3Ref("offsite"), S3Ref("cold")))
    push = by_key(inv)[("full", "s3-push")].schedule
    assert (push.every, push.text) == (7200, "every 2h (push of s3:cold)")
    inv = with_job(inv, "full", schedule={"s3-push": RunSchedule(every=600, text="every 10m")})
    assert by_key(inv)[("full", "s3-push")].schedule.text == "every 10m"


def test_hosts_source_first_then_host_targets_without_duplicates() -> None:
    inv = with_job(inventory(), "full", targets=(Endpoint("vault", "a"), Endpoint("nas2", "b"),
                                                 Endpoint("vault", "c"), S3Ref("offsite")))
    got = by_key(inv)
    assert got[("full", "sync")].hosts == ("nas1", "vault", "nas2")
    assert got[("full", "prune")].hosts == ("nas1", "vault", "nas2")
    assert got[("full", "snapshot")].hosts == ("nas1",)   # a snapshot touches the source only
    assert got[("full", "s3-push")].hosts == ("nas1",)


def test_windows_apply_by_the_groups_of_the_hosts_touched_and_by_kind() -> None:
    night = Window(group="backup", start=22 * 60, end=6 * 60, text="22:00-06:00")
    storage = Window(group="storage", start=0, end=12 * 60, kinds=("prune",), text="00:00-12:00")
    everywhere = Window(group="all", start=1 * 60, end=23 * 60, kinds=("snapshot",), text="01:00-23:00")
    got = by_key(with_daemon(inventory(), windows=(night, storage, everywhere)))
    assert got[("full", "snapshot")].windows == (everywhere,)  # vault's window: a snapshot never touches it
    assert got[("full", "sync")].windows == (night,)
    assert got[("full", "prune")].windows == (night, storage)
    assert got[("full", "s3-push")].windows == ()
    assert got[("plain", "sync")].windows == (night,)


def test_an_entry_carries_the_groups_of_the_hosts_it_touches() -> None:
    got = by_key(inventory())
    assert got[("full", "snapshot")].groups == ("storage",)
    assert got[("full", "sync")].groups == ("storage", "backup")


def test_jitter_offsets_are_in_range_and_from_a_stable_hash() -> None:
    inv = with_daemon(inventory(), jitter=300)
    for e in entries(inv):
        assert 0 <= e.offset < 300
        digest = hashlib.sha256(f"{e.job}\0{e.kind}".encode()).digest()
        assert e.offset == int.from_bytes(digest[:8], "big") % 300
    assert len({e.offset for e in entries(inv)}) > 1
    assert all(e.offset == 0 for e in entries(inventory()))  # jitter 0


def test_jitter_offsets_are_the_same_in_another_process() -> None:
    """Python's hash() of a str changes per process; the offsets must not."""
    code = ("from zrelay.lifecycle.timetable import jitter_offset; "
            "print([jitter_offset(j, k, 997) for j in ('a', 'nas1-data', 'x' * 40) "
            "for k in ('snapshot', 'sync', 'prune', 's3-push')])")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    expected = [jitter_offset(j, k, 997) for j in ("a", "nas1-data", "x" * 40)
                for k in ("snapshot", "sync", "prune", "s3-push")]
    assert outs == {f"{expected}\n"}


# --------------------------------------------------------------------------- history


def test_started_serves_a_request() -> None:
    assert started(History(requested=5.0, failures=2), 10.0) == History(last_started=10.0, failures=2)


@pytest.mark.parametrize("outcome", ["ok", "noop", Outcome.OK])
def test_a_success_clears_failures_and_parking(outcome: str) -> None:
    got = finished(History(failures=3, parked="x", last_started=1.0), outcome, "", 9.0)
    assert got == History(last_started=1.0, last_finished=9.0, last_outcome=Outcome(outcome).value,
                          last_success=9.0, failures=0, parked=None)
    assert type(got.last_outcome) is str


@pytest.mark.parametrize("outcome", ["failed", "busy"])
def test_failed_and_busy_count_failures_in_a_row(outcome: str) -> None:
    got = finished(History(failures=2, last_success=1.0), outcome, "boom", 9.0)
    assert got == History(last_finished=9.0, last_outcome=outcome, last_success=1.0, failures=3)


def test_a_refusal_parks_with_its_message_and_keeps_the_failures() -> None:
    got = finished(History(failures=1), "refused", "diverged at @a", 9.0)
    assert got == History(last_finished=9.0, last_outcome="refused", failures=1, parked="diverged at @a")
    assert finished(History(), "refused", "", 9.0).parked  # parked even without a message


def test_skipped_records_only_the_finish() -> None:
    before = History(last_started=1.0, failures=2, parked=None, last_success=0.5)
    assert finished(before, "skipped", "", 9.0) == replace(before, last_finished=9.0, last_outcome="skipped")


def test_an_unknown_outcome_is_an_error() -> None:
    with pytest.raises(ValueError):
        finished(History(), "fine", "", 1.0)


def test_requested_clears_parking_and_failures() -> None:
    assert requested(History(parked="x", failures=4, last_started=1.0), 7.0) == History(last_started=1.0,
                                                                                       requested=7.0)


# --------------------------------------------------------------------------- next_run()


def test_never_started_is_due_now() -> None:
    assert next_run(entry(offset=40), History(), None, T0, SETTINGS) == NextRun(T0, "first run (every 15m)")
    cron = entry(schedule=RunSchedule(cron=parse_cron("0 3 * * *")))
    assert next_run(cron, History(), None, T0, SETTINGS) == NextRun(T0, "first run (cron 0 3 * * *)")


def test_every_counts_from_the_last_start_plus_the_offset() -> None:
    got = next_run(entry(offset=40), History(last_started=T0), None, T0 + 60, SETTINGS)
    assert got == NextRun(T0 + 900 + 40, "every 15m after 10:04 UTC (+40s jitter)")


def test_after_downtime_the_missed_times_give_one_run() -> None:
    history = History(last_started=T0 - 3 * D)
    got = next_run(entry(), history, None, T0, SETTINGS)
    assert got.at == T0 - 3 * D + 900  # one time in the past: due now, once
    after = finished(started(history, T0), "ok", "", T0 + 5)
    assert next_run(entry(), after, None, T0 + 5, SETTINGS).at == T0 + 900


def test_cron_is_the_next_tick_after_the_last_start_shifted_by_the_offset() -> None:
    e = entry(schedule=RunSchedule(cron=parse_cron("*/10 * * * *"), text="cron */10 * * * *"), offset=90)
    tick = float(calendar.timegm((2024, 5, 1, 10, 10, 0)))
    got = next_run(e, History(last_started=tick + 90), None, tick + 100, SETTINGS)
    assert got.at == tick + 600 + 90  # 10:20 + 90 s, not 10:30: the offset moves the ticks
    assert got.reason == "cron */10 * * * * at 10:21 UTC (+90s jitter)"
    missed = next_run(e, History(last_started=tick + 90), None, tick + 5 * D, SETTINGS)
    assert missed.at == tick + 690
    minutely = entry(schedule=RunSchedule(cron=parse_cron("* * * * *")), offset=90)
    # each tick moves by 90 s: the run of 10:10's tick starts 10:11:30, the next is 10:11's at 10:12:30
    assert next_run(minutely, History(last_started=tick + 90), None, tick + 90, SETTINGS).at == tick + 150


def test_every_and_cron_take_the_earlier() -> None:
    both = entry(schedule=RunSchedule(every=3 * H, cron=parse_cron("0 11 * * *")))
    assert next_run(both, History(last_started=T0), None, T0, SETTINGS).at == T0 - 4 * M + H
    assert next_run(both, History(last_started=T0 + H), None, T0, SETTINGS).at == T0 + 4 * H


def test_a_follower_is_due_at_the_leaders_newer_success_else_waits() -> None:
    e = entry(kind="sync", schedule=RunSchedule(follows="snapshot"))
    waiting = NextRun(None, "after each snapshot (next when it succeeds)")
    assert next_run(e, History(), None, T0, SETTINGS) == waiting
    assert next_run(e, History(), History(last_started=T0 - 9), T0, SETTINGS) == waiting
    leader = History(last_success=T0 - 5)
    assert next_run(e, History(), leader, T0, SETTINGS).at == T0 - 5
    assert next_run(e, History(last_started=T0 - 10), leader, T0, SETTINGS).at == T0 - 5
    assert next_run(e, History(last_started=T0 - 5), leader, T0, SETTINGS) == waiting
    assert next_run(e, History(last_started=T0 - 1), leader, T0, SETTINGS) == waiting


def test_a_request_is_due_now_even_when_parked() -> None:
    h = requested(finished(History(), "refused", "no common base", T0 - 50), T0 - 10)
    assert next_run(entry(), h, None, T0, SETTINGS) == NextRun(T0 - 10, "run-now requested")
    parked_then_asked = replace(History(parked="x"), requested=T0 - 10)
    assert next_run(entry(), parked_then_asked, None, T0, SETTINGS).at == T0 - 10


def test_a_parked_entry_waits_for_the_user() -> None:
    h = finished(History(last_started=T0 - 60), "refused", "target diverged", T0 - 50)
    assert next_run(entry(), h, None, T0 + 10 * D, SETTINGS) == NextRun(
        None, "refused: target diverged; waits for `zrelay run-now` or an inventory reload")


def test_failures_are_retried_with_backoff_without_jitter() -> None:
    h = History(last_started=T0 - 200, last_finished=T0 - 100, failures=3)
    assert next_run(entry(offset=40), h, None, T0, SETTINGS) == NextRun(T0 + 20, "retry 3/8 in 20s (backoff)")
    assert next_run(entry(), replace(h, failures=1), None, T0, SETTINGS) == NextRun(T0 - 70,
                                                                                    "retry 1/8 now (backoff)")
    capped = next_run(entry(), replace(h, failures=8), None, T0, SETTINGS)
    assert capped == NextRun(T0 - 100 + 1800, "retry 8/8 in 29m (backoff)")


def test_after_the_last_retry_the_regular_time_returns() -> None:
    h = History(last_started=T0 - 200, last_finished=T0 - 100, failures=9)
    assert next_run(entry(), h, None, T0, SETTINGS).at == T0 - 200 + 900
    few = replace(SETTINGS, retry=RetryPolicy(first=10, max=60, attempts=2))
    assert next_run(entry(), replace(h, failures=3), None, T0, few).at == T0 - 200 + 900
    assert next_run(entry(), replace(h, failures=2), None, T0, few).at == T0 - 100 + 20


NIGHT = Window(group="backup", start=22 * 60, end=6 * 60, text="22:00-06:00")
MIDNIGHT = float(calendar.timegm((2024, 5, 2, 0, 0, 0)))


def test_a_time_outside_the_window_moves_to_its_opening() -> None:
    e = entry(kind="sync", windows=(NIGHT,))
    got = next_run(e, History(last_started=T0), None, T0, SETTINGS)  # 10:19: closed
    assert got.at == MIDNIGHT - 2 * H
    assert got.reason == "window 22:00-06:00 (backup) opens at 22:00 UTC; every 15m after 10:04 UTC"


def test_inside_a_midnight_window_nothing_moves() -> None:
    e = entry(kind="sync", windows=(NIGHT,))
    history = History(last_started=MIDNIGHT - 600)
    assert next_run(e, history, None, MIDNIGHT - 600, SETTINGS).at == MIDNIGHT + 300


def test_a_due_run_whose_window_closed_meanwhile_waits_for_the_next_opening() -> None:
    e = entry(kind="sync", windows=(NIGHT,))
    history = History(last_started=MIDNIGHT - H)   # due 23:15, but the daemon looks at 07:00
    got = next_run(e, history, None, MIDNIGHT + 7 * H, SETTINGS)
    assert got.at == MIDNIGHT + 22 * H
    assert got.reason.startswith("window 22:00-06:00 (backup) opens at 22:00 UTC;")


def test_every_applying_window_must_be_open_at_once() -> None:
    morning = Window(group="storage", start=5 * 60, end=9 * 60, text="05:00-09:00")
    e = entry(kind="sync", windows=(NIGHT, morning))
    got = next_run(e, History(last_started=T0), None, T0, SETTINGS)
    assert got.at == MIDNIGHT + 5 * H  # 05:00-06:00 is the overlap
    noon = Window(group="storage", start=11 * 60, end=13 * 60, text="11:00-13:00")
    never = next_run(entry(windows=(NIGHT, noon)), History(last_started=T0), None, T0, SETTINGS)
    assert never == NextRun(None, "windows 22:00-06:00 (backup), 11:00-13:00 (storage) "
                                  "are never open at the same time")


def test_a_request_ignores_windows() -> None:
    e = entry(kind="sync", windows=(NIGHT,))
    assert next_run(e, History(requested=T0), None, T0, SETTINGS).at == T0


def test_retries_wait_for_the_window_too() -> None:
    h = History(last_started=MIDNIGHT + 5 * H, last_finished=MIDNIGHT + 6 * H - 20, failures=1)
    assert next_run(entry(windows=(NIGHT,)), replace(h, last_finished=MIDNIGHT + 6 * H - 40), None,
                    MIDNIGHT + 6 * H - 40, SETTINGS).at == MIDNIGHT + 6 * H - 10  # 05:59:50: still open
    got = next_run(entry(windows=(NIGHT,)), h, None, MIDNIGHT + 6 * H - 20, SETTINGS)  # 06:00:10: closed
    assert got.at == MIDNIGHT + 22 * H
    assert got.reason.endswith("; retry 1/8 in 30s (backoff)")


def test_first_open_without_windows_and_with_always_open_ones() -> None:
    assert first_open((), T0) == T0
    assert first_open((Window(group="g", start=60, end=60),), T0) == T0


# --------------------------------------------------------------------------- choose()


def jobs_entries(*specs: tuple[str, str, tuple[str, ...]]) -> list[Entry]:
    return [entry(kind=kind, job=job, hosts=hosts) for job, kind, hosts in specs]


def test_choose_starts_due_runs_in_order_within_the_fleet_budget() -> None:
    es = jobs_entries(("b", "snapshot", ("h1",)), ("a", "snapshot", ("h2",)), ("c", "snapshot", ("h3",)))
    histories = {("b", "snapshot"): History(last_started=T0 - 2000)}  # due since T0 - 1100: first
    got = choose(es, histories, {}, T0, replace(SETTINGS, max_running=2))
    assert [e.job for e in got.start] == ["b", "a"]
    assert [(e.job, why) for e, why in got.waiting] == [("c", "fleet budget 2 runs")]
    assert got.wake_at is None


def test_running_runs_count_against_the_budgets() -> None:
    es = jobs_entries(("a", "snapshot", ("h1",)), ("b", "sync", ("h2", "h1")), ("c", "snapshot", ("h2",)))
    running = {("x", "sync"): ("h1", "h9"), ("y", "sync"): ("h1",)}
    got = choose(es, {}, running, T0, replace(SETTINGS, max_running=3, per_host=2))
    assert [e.job for e in got.start] == ["c"]
    assert [(e.job, why) for e, why in got.waiting] == [("a", "host h1 has 2 runs (per_host 2)"),
                                                        ("b", "host h1 has 2 runs (per_host 2)")]


def test_per_host_counts_runs_chosen_in_the_same_call() -> None:
    es = jobs_entries(("a", "sync", ("h1", "v")), ("b", "sync", ("h2", "v")), ("c", "sync", ("h3", "v")))
    got = choose(es, {}, {}, T0, replace(SETTINGS, per_host=2))
    assert [e.job for e in got.start] == ["a", "b"]
    assert got.waiting == [(es[2], "host v has 2 runs (per_host 2)")]


def test_a_jobs_kinds_never_overlap() -> None:
    es = jobs_entries(("a", "sync", ("h1",)), ("a", "snapshot", ("h1",)), ("b", "prune", ("h2",)),
                      ("b", "sync", ("h2",)))
    got = choose(es, {}, {("b", "snapshot"): ("h2",)}, T0, SETTINGS)
    assert [e.key for e in got.start] == [("a", "snapshot")]  # KINDS order within a job
    assert [(e.key, why) for e, why in got.waiting] == [
        (("a", "sync"), "job a starts its snapshot first"),
        (("b", "sync"), "job b is running its snapshot"), (("b", "prune"), "job b is running its snapshot")]


def test_group_limits_count_running_and_chosen_runs_touching_the_group() -> None:
    inv = with_daemon(inventory(), group_limits=(("backup", 1),), max_running=10, per_host=10)
    es = by_key(inv)
    snap, sync, plain = es[("full", "snapshot")], es[("full", "sync")], es[("plain", "sync")]
    got = choose([snap, plain], {}, {}, T0, inv.settings.daemon)
    assert got.start == [snap, plain]  # the snapshot touches nas1 only, not the backup group
    snapped = {snap.key: finished(started(History(), T0 - 100), "ok", "", T0 - 90)}  # the sync is due
    got = choose([sync, plain], snapped, {}, T0, inv.settings.daemon)
    assert got.start == [sync] and got.waiting == [(plain, "group backup has 1 runs (group_limits 1)")]
    running = {("plain", "sync"): ("nas2", "vault")}
    got = choose([sync, snap], {}, running, T0, inv.settings.daemon)
    assert got.start == [snap]
    got = choose([sync, plain], {**snapped, plain.key: started(History(), T0)}, running, T0, inv.settings.daemon)
    assert got.start == [] and got.waiting == [(sync, "group backup has 1 runs (group_limits 1)")]


def test_a_group_limit_on_all_counts_every_run_even_unknown_ones() -> None:
    es = jobs_entries(("a", "snapshot", ("h1",)), ("b", "snapshot", ("h2",)))
    limit_all = replace(SETTINGS, group_limits=(("all", 2),))
    got = choose(es, {}, {("gone", "sync"): ("h9",)}, T0, limit_all)
    assert got.start == es[:1] and got.waiting == [(es[1], "group all has 2 runs (group_limits 2)")]


def test_wake_at_is_the_earliest_future_time_and_missing_histories_are_fresh() -> None:
    es = jobs_entries(("a", "snapshot", ("h1",)), ("b", "snapshot", ("h2",)), ("c", "snapshot", ("h3",)))
    histories = {("a", "snapshot"): History(last_started=T0 - 100),
                 ("b", "snapshot"): History(last_started=T0 - 500), ("c", "snapshot"): History(parked="x")}
    got = choose(es, histories, {}, T0, SETTINGS)
    assert got.start == [] and got.waiting == [] and got.wake_at == T0 + 400
    got = choose(es[:2] + [entry(job="d")], histories, {}, T0, SETTINGS)
    assert [e.job for e in got.start] == ["d"] and got.wake_at == T0 + 400


def test_a_follower_becomes_due_when_its_leader_succeeds() -> None:
    snap = entry(job="a", kind="snapshot")
    sync = entry(job="a", kind="sync", schedule=RunSchedule(follows="snapshot"), hosts=("nas1", "vault"))
    histories = {snap.key: finished(started(History(), T0), "ok", "", T0 + 30)}
    got = choose([snap, sync], histories, {}, T0 + 31, SETTINGS)
    assert got.start == [sync] and got.wake_at == T0 + 900


# --------------------------------------------------------------------------- upcoming()


def test_upcoming_lists_a_fresh_fleet_then_the_regular_times() -> None:
    es = [e for e in entries(inventory()) if e.job == "full"]
    got = upcoming(es, {}, T0, SETTINGS, count=6)
    assert [(at - T0, e.kind) for at, e, _ in got] == [
        (0, "snapshot"), (0, "sync"), (0, "prune"), (0, "s3-push"), (900, "snapshot"), (900, "sync")]
    assert got[0][2] == "first run (every 15m)"
    assert got[4][2] == "every 15m after 10:04 UTC"
    assert got[5][2] == "after each snapshot (it succeeded at 10:19 UTC)"


def test_upcoming_stops_when_nothing_has_a_time() -> None:
    parked = {("j", "snapshot"): History(parked="x")}
    assert upcoming([entry()], parked, T0, SETTINGS) == []
    follower = entry(kind="sync", schedule=RunSchedule(follows="snapshot"))
    assert upcoming([follower], {}, T0, SETTINGS) == []
    assert upcoming([], {}, T0, SETTINGS) == []


def test_upcoming_does_not_change_the_histories_given() -> None:
    histories = {("j", "snapshot"): History(last_started=T0 - 10)}
    upcoming([entry()], histories, T0, SETTINGS, count=3)
    assert histories == {("j", "snapshot"): History(last_started=T0 - 10)}
