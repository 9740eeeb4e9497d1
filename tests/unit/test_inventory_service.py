"""The daemon's inventory keys: ``zrelay.daemon:``, a job's ``schedule:``, an S3 target's ``push:``.
Every accepted form, and every refusal as one line at file:line:column, at load time."""

from __future__ import annotations

import pytest

from zrelay.errors import InventoryError
from zrelay.inventory import loads_inventory
from zrelay.inventory.service import KINDS, DaemonSettings, RetryPolicy, RunSchedule, Window

BASE = """\
all:
  hosts:
    nas1: {{address: 192.0.2.1}}
    vault: {{address: 192.0.2.3}}
  children:
    offsite: {{hosts: {{vault: {{}}}}}}
zrelay:
  s3_targets:
    cloud: {{bucket: some-bucket{push}}}
{daemon}  jobs:
    - source: nas1:tank/data
      targets: [vault:backup/data, s3:cloud]
      snapshot: {{every: 1h}}
      keep: {{source: {{last: 5}}}}
{job}"""


def load(daemon: str = "", job: str = "", push: str = ""):
    return loads_inventory(BASE.format(daemon=daemon, job=job, push=push), "inv.yml")


def refused(**parts: str) -> str:
    with pytest.raises(InventoryError) as info:
        load(**parts)
    return str(info.value)


def test_defaults_when_nothing_is_written() -> None:
    inv = load()
    assert inv.settings.daemon == DaemonSettings()
    assert inv.jobs[0].schedule == {}
    assert inv.s3_targets["cloud"].push is None


def test_every_form_of_a_schedule() -> None:
    inv = load(job='      schedule: {sync: 15m, prune: "0 3 * * *", s3-push: after snapshot}\n', push=", push: 6h")
    schedule = inv.jobs[0].schedule
    assert schedule["sync"] == RunSchedule(every=900, text="every 15m")
    assert schedule["prune"].cron is not None and schedule["prune"].cron.hours == (3,)
    assert schedule["s3-push"] == RunSchedule(follows="snapshot", text="after each snapshot")
    assert inv.s3_targets["cloud"].push == RunSchedule(every=21600, text="every 6h")
    mapping = load(job="      schedule: {sync: {every: 30m, cron: '0 * * * *'}}\n").jobs[0].schedule["sync"]
    assert mapping.every == 1800 and mapping.cron is not None


def test_the_daemon_section() -> None:
    daemon = """\
  daemon:
    jitter: 2m
    max_running: 6
    per_host: 1
    group_limits: {offsite: 1}
    metrics: "[::1]:9900"
    stop_timeout: 1m
    retry: {first: 10s, max: 10m, attempts: 4}
    windows:
      - {group: offsite, hours: "22:00-06:30", kinds: [s3-push]}
    notify:
      on_failure: [/usr/local/bin/page, --team, storage]
      on_refused: "logger -t zrelay refused"
      timeout: 20s
      webhook: https://hooks.example.net/zrelay
      webhook_on: [failed]
"""
    settings = load(daemon=daemon).settings.daemon
    assert settings.jitter == 120 and settings.max_running == 6 and settings.per_host == 1
    assert settings.group_limits == (("offsite", 1),)
    assert settings.metrics == "[::1]:9900" and settings.stop_timeout == 60
    assert settings.retry == RetryPolicy(first=10, max=600, attempts=4)
    assert settings.windows == (Window("offsite", 22 * 60, 6 * 60 + 30, ("s3-push",), "22:00-06:30 UTC"),)
    assert settings.notify.on_failure == ("/usr/local/bin/page", "--team", "storage")
    assert settings.notify.on_refused == "logger -t zrelay refused"
    assert settings.notify.webhook_on == ("failed",) and settings.notify.timeout == 20
    assert load(daemon="  daemon: {metrics: off}\n").settings.daemon.metrics is None


def test_windows_open_and_wrap_midnight() -> None:
    night = Window("g", 22 * 60, 6 * 60)
    assert night.is_open(23 * 60) and night.is_open(0) and night.is_open(5 * 60 + 59)
    assert not night.is_open(6 * 60) and not night.is_open(12 * 60)
    day = Window("g", 9 * 60, 17 * 60)
    assert day.is_open(9 * 60) and not day.is_open(17 * 60)


def test_retry_backoff_doubles_up_to_the_cap() -> None:
    policy = RetryPolicy(first=30, max=300, attempts=6)
    assert [policy.delay(n) for n in range(1, 8)] == [30, 60, 120, 240, 300, 300, None]
    assert policy.delay(0) is None


@pytest.mark.parametrize("parts, where, message", [
    ({"job": "      schedule: {sync: 15}\n"}, "inv.yml:15:24", "schedule.sync: expected a duration"),
    ({"job": "      schedule: {sync: 5s}\n"}, "inv.yml:15:24", "too short (at least 10s)"),
    ({"job": "      schedule: {snapshot: 1h}\n"}, "inv.yml:15:18", "the snapshot schedule is the job's 'snapshot:'"),
    ({"job": "      schedule: {sync: after sink}\n"}, "inv.yml:15:24", "unknown run 'sink'; one of snapshot"),
    ({"job": "      schedule: {sync: '61 * * * *'}\n"}, "inv.yml:15:24", "schedule.sync '61 * * * *': minute: 61 is outside 0-59"),
    ({"job": "      schedule: {sync: {evry: 1h}}\n"}, "inv.yml:15:25", "unknown key 'evry'"),
    ({"push": ", push: after prune"}, "inv.yml:9:40", "only after snapshot or sync"),
    ({"daemon": "  daemon: {metrics: 'localhost'}\n"}, "inv.yml:10:21", "expected ADDRESS:PORT"),
    ({"daemon": "  daemon: {max_running: 0}\n"}, "inv.yml:10:25", "max_running"),
    ({"daemon": "  daemon: {retry: {first: 1h, max: 1m}}\n"}, "inv.yml:10:19", "first (1h) is longer than max (1m)"),
    ({"daemon": "  daemon: {windows: [{group: ofsite, hours: '1:00-2:00'}]}\n"}, "inv.yml:10:22",
     "unknown group 'ofsite' (did you mean 'offsite'?)"),
    ({"daemon": "  daemon: {windows: [{group: offsite, hours: '1:00-1:00'}]}\n"}, "inv.yml:10:46",
     "starts where it ends"),
    ({"daemon": "  daemon: {windows: [{group: offsite}]}\n"}, "inv.yml:10:22", "window has no 'hours'"),
    ({"daemon": "  daemon: {notify: {webhook: 'ftp://x'}}\n"}, "inv.yml:10:30", "http:// or https:// URL"),
    ({"daemon": "  daemon: {notify: {webhook_on: [fail]}}\n"}, "inv.yml:10:33", "unknown 'fail' (did you mean"),
    ({"daemon": "  daemon: {notify: {on_failure: []}}\n"}, "inv.yml:10:33", "an empty command"),
    ({"daemon": "  daemon: {group_limits: {ofsite: 2}}\n"}, "inv.yml:10:27",
     "daemon.group_limits: unknown group 'ofsite' (did you mean 'offsite'?)"),
    ({"daemon": "  daemon: {group_limits: {offsite: 0}}\n"}, "inv.yml:10:36", "group_limits.offsite: 0 is out of range"),
    ({"daemon": "  daemon: {jiter: 1m}\n"}, "inv.yml:10:12", "did you mean 'jitter'?"),
])
def test_refusals_name_file_line_column(parts: dict[str, str], where: str, message: str) -> None:
    text = refused(**parts)
    assert text.startswith(where), text
    assert message in text, text
    assert "\n" not in text


def test_a_schedule_for_a_run_the_job_does_not_have() -> None:
    text = BASE.format(daemon="", push="", job="      schedule: {prune: 1d, sync: after snapshot}\n")
    no_keep = text.replace("      keep: {source: {last: 5}}\n", "")
    with pytest.raises(InventoryError) as info:
        loads_inventory(no_keep, "inv.yml")
    assert str(info.value).startswith("inv.yml:14:7: job 'nas1:tank/data': schedule.prune: the job has no "
                                      "'keep:' key"), info.value
    no_snapshot = text.replace("      snapshot: {every: 1h}\n", "").replace("prune: 1d, ", "")
    with pytest.raises(InventoryError) as info:
        loads_inventory(no_snapshot, "inv.yml")
    assert "schedule.sync: after snapshot, but the job has no 'snapshot:' key" in str(info.value)


def test_inventory_list_json_shows_the_daemon_settings_and_schedules() -> None:
    from zrelay.cli.inventory import list_json

    daemon = ("  daemon:\n    group_limits: {offsite: 1}\n    windows: [{group: offsite, hours: '22:00-06:00'}]\n"
              "    notify: {webhook: 'https://u:secret@hooks.example.net/x?token=abc'}\n")
    inv = load(daemon=daemon, job="      schedule: {sync: 15m}\n      rpo: 2h\n", push=", push: 6h")
    data = list_json(inv)["_meta"]["zrelay"]
    assert data["jobs"][0]["schedule"] == {"sync": "every 15m"} and data["jobs"][0]["rpo"] == 7200
    assert data["s3_targets"]["cloud"]["push"] == "every 6h"
    shown = data["settings"]["daemon"]
    assert shown["group_limits"] == {"offsite": 1} and shown["max_running"] == 4
    assert shown["windows"] == [{"group": "offsite", "hours": "22:00-06:00 UTC", "kinds": list(KINDS)}]
    assert "secret" not in shown["notify"]["webhook"] and "abc" not in shown["notify"]["webhook"]
