"""A job's ``snapshot:``, ``keep:`` and ``hooks:`` keys: every accepted form, every refusal (one
line at file:line:column), the checks that need the whole job (keep keys naming its targets, its
snapshots told apart from other tools', one name per scheduled snapshot), the example inventory,
and ``inventory list --json`` writing back what was read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from zrelay.cli.inventory import list_json
from zrelay.inventory import (inspect_inventory_text, load_inventory, loads_inventory,
                              validate_inventory_text)
from zrelay.inventory.cron import parse_cron
from zrelay.inventory.model import Endpoint, S3Ref
from zrelay.inventory.policy import Hooks, KeepPolicy, Lifecycle, SnapshotSchedule
from zrelay.zfs.model import SnapshotFilter

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "inventory" / "example.yml"

#: A job's first ten lines; the case's own lines follow, from line 11, indented six spaces.
HEAD = """\
all:
  hosts:
    nas1: {address: 192.0.2.1}
    vault: {address: 192.0.2.3}
zrelay:
  s3_targets:
    offsite: {bucket: some-bucket}
  jobs:
    - source: nas1:tank/data
      targets: [vault:backup/data, s3:offsite]
"""


def job_text(*lines: str, head: str = HEAD) -> str:
    return head + "".join(f"      {line}\n" for line in lines)


def lifecycle(*lines: str) -> Lifecycle:
    inventory = loads_inventory(job_text(*lines), "inv.yml")
    assert len(inventory.jobs) == 1
    return inventory.jobs[0].lifecycle


# --------------------------------------------------------------------------- accepted forms


def test_a_job_without_lifecycle_keys_has_an_empty_lifecycle() -> None:
    assert lifecycle() == Lifecycle()


@pytest.mark.parametrize("every, seconds", [
    ("60s", 60), ("1m", 60), ("15m", 900), ("1h", 3600), ("36h", 129600), ("1d", 86400),
    ("1w", 604800),
])
def test_snapshot_every(every: str, seconds: int) -> None:
    assert lifecycle(f"snapshot: {{every: {every}}}").snapshot == SnapshotSchedule(every=seconds)


def test_snapshot_cron_and_name() -> None:
    got = lifecycle('snapshot: {cron: "*/15 * * * *", name: "nas_%Y%m%d-%H%M"}').snapshot
    assert got == SnapshotSchedule(cron=parse_cron("*/15 * * * *"), name="nas_%Y%m%d-%H%M")
    assert got.cron is not None and got.cron.minutes == (0, 15, 30, 45)


def test_snapshot_cron_macro_in_block_style() -> None:
    got = lifecycle("snapshot:", "  cron: '@daily'", "  name: daily_%Y-%m-%d")
    assert got.snapshot == SnapshotSchedule(cron=parse_cron("@daily"), name="daily_%Y-%m-%d")


def test_keep_every_rule_and_side() -> None:
    got = lifecycle("keep:",
                    "  source: {within: 1d, last: 3, hourly: 24, daily: 14, weekly: 8, "
                    "monthly: 12, yearly: 2, stale_after: 30d}",
                    "  targets: {daily: 30, monthly: 12}",
                    "  vault:backup/data: {within: 2w, yearly: 5}",
                    "  s3:offsite: {monthly: 12}")
    assert got.keep == {
        "source": KeepPolicy(within=86400, last=3, hourly=24, daily=14, weekly=8, monthly=12,
                             yearly=2, stale_after=30 * 86400),
        "targets": KeepPolicy(daily=30, monthly=12),
        "vault:backup/data": KeepPolicy(within=14 * 86400, yearly=5),
        "s3:offsite": KeepPolicy(monthly=12),
    }
    assert got.policy_for("vault:backup/data") == KeepPolicy(within=14 * 86400, yearly=5)
    assert got.policy_for("s3:offsite") == KeepPolicy(monthly=12)


def test_keep_targets_is_the_default_and_source_is_separate() -> None:
    got = lifecycle("keep: {targets: {last: 5}}")
    assert got.policy_for("vault:backup/data") == KeepPolicy(last=5)
    assert got.policy_for("s3:offsite") == KeepPolicy(last=5)
    assert got.policy_for("source") is None


def test_hooks() -> None:
    got = lifecycle('hooks: {pre_snapshot: "/usr/local/bin/db-freeze --all", '
                    'post_snapshot: /usr/local/bin/db-thaw, timeout: 2m}')
    assert got.hooks == Hooks("/usr/local/bin/db-freeze --all", "/usr/local/bin/db-thaw", 120.0)
    assert isinstance(got.hooks.timeout, float)
    assert lifecycle("hooks: {post_snapshot: sync}").hooks == Hooks(None, "sync", 60.0)


def test_all_three_together() -> None:
    got = lifecycle("snapshot: {every: 1h}", "keep: {source: {hourly: 48}}",
                    "hooks: {pre_snapshot: 'true'}")
    assert got == Lifecycle(SnapshotSchedule(every=3600), {"source": KeepPolicy(hourly=48)},
                            Hooks(pre_snapshot="true"))


@pytest.mark.parametrize("lines, expected", [
    # the select filter, whatever the template
    (["snapshots: {prefix: auto-}", "snapshot: {every: 1h, name: 'auto-%Y%m%d%H'}",
      "keep: {source: {last: 3}}"], SnapshotFilter(prefix="auto-")),
    (["snapshots: {regex: '^(daily|weekly)-'}", "keep: {targets: {last: 3}}"],
     SnapshotFilter(regex="^(daily|weekly)-")),
    # else the template's literal start: the job's own, else the fleet's
    (["snapshot: {every: 1h, name: 'nas.%Y%m%d%H'}", "keep: {source: {last: 3}}"],
     SnapshotFilter(prefix="nas.")),
    (["keep: {source: {last: 3}}"], SnapshotFilter(prefix="zrelay_")),
])
def test_a_pruned_jobs_own_snapshots(lines: list[str], expected: SnapshotFilter) -> None:
    job = loads_inventory(job_text(*lines), "inv.yml").jobs[0]
    assert job.own_snapshots("zrelay_%Y-%m-%dT%H:%M:%SZ") == expected


def test_the_fleet_snapshot_name_may_come_after_the_jobs() -> None:
    text = job_text("snapshot: {every: 1d}", "keep: {source: {daily: 7}}") + \
        "  snapshot_name: 'fleet_%Y-%m-%d'\n"
    inventory = loads_inventory(text, "inv.yml")
    job = inventory.jobs[0]
    assert job.own_snapshots(inventory.settings.snapshot_name) == SnapshotFilter(prefix="fleet_")


# --------------------------------------------------------------------------- refusals

#: (id, the job's lines from line 11, "LINE:COLUMN", what the message says)
BAD: list[tuple[str, list[str], str, str]] = [
    # snapshot
    ("snapshot-scalar", ["snapshot: 15m"], "11:17", "snapshot: expected a mapping, got the value '15m'"),
    ("snapshot-list", ["snapshot: [15m]"], "11:17", "snapshot: expected a mapping, got a list"),
    ("snapshot-empty", ["snapshot: {}"], "11:17", "snapshot: say when, with 'every'"),
    ("snapshot-null", ["snapshot:"], "11:7", "snapshot: say when, with 'every' (such as 15m, "
     "1h, 1d) or 'cron'"),
    ("snapshot-name-only", ["snapshot: {name: 'x_%Y%m%d%H%M'}"], "11:17", "snapshot: say when"),
    ("snapshot-both", ["snapshot: {every: 15m, cron: '@daily'}"], "11:30",
     "snapshot: give either 'every' or 'cron', not both ('every' is at line 11)"),
    ("snapshot-both-block", ["snapshot:", "  cron: '@daily'", "  every: 1h"], "13:9",
     "snapshot: give either 'every' or 'cron', not both ('cron' is at line 12)"),
    ("every-short", ["snapshot: {every: 5s}"], "11:25",
     "snapshot.every: 5s is too short (at least 10s)"),
    ("every-integer", ["snapshot: {every: 15}"], "11:25",
     "snapshot.every: expected a duration such as 30s, 15m, 1h, 1d or 1w, got the integer 15 "
     "(add a unit: 15s, 15m, ...)"),
    ("every-space", ["snapshot: {every: 15 m}"], "11:25",
     "snapshot.every: expected a duration such as 30s, 15m, 1h, 1d or 1w, got '15 m'"),
    ("every-unit", ["snapshot: {every: 1y}"], "11:25", "got '1y'"),
    ("every-compound", ["snapshot: {every: 1h30m}"], "11:25", "got '1h30m'"),
    ("every-bool", ["snapshot: {every: yes}"], "11:25",
     "snapshot.every: expected a string, got the boolean true"),
    ("cron-field", ["snapshot: {cron: '0 25 * * *'}"], "11:24",
     "snapshot.cron '0 25 * * *': hour: 25 is outside 0-23"),
    ("cron-count", ["snapshot: {cron: '0 0 * *'}"], "11:24",
     "snapshot.cron '0 0 * *': expected 5 fields"),
    ("cron-macro", ["snapshot: {cron: '@reboot'}"], "11:24", "unknown macro '@reboot'"),
    ("cron-number", ["snapshot: {cron: 5}"], "11:24",
     "snapshot.cron: expected a string, got the integer 5 (quote it)"),
    ("snapshot-typo", ["snapshot: {evry: 15m}"], "11:18",
     "unknown key 'evry' in snapshot (did you mean 'every'?); expected one of: every, cron, name"),
    ("snapshot-prefix", ["snapshot: {every: 15m, prefix: zrelay_}"], "11:30",
     "unknown key 'prefix' in snapshot; expected one of: every, cron, name; a filter of the "
     "snapshots a job replicates goes under 'snapshots: {prefix: …}'"),
    ("snapshots-every", ["snapshots: {every: 15m}"], "11:19",
     "unknown key 'every' in snapshots; expected one of: prefix, regex; when to take snapshots "
     "goes under 'snapshot:'"),
    ("name-invalid", ["snapshot: {every: 1h, name: 'a@%Y%m%d%H'}"], "11:35",
     "snapshot.name 'a@%Y%m%d%H' renders as 'a@2001020304'"),
    ("name-constant", ["snapshot: {every: 1h, name: backup}"], "11:35",
     "snapshot.name 'backup' has no date or time field"),
    ("name-too-coarse", ["snapshot: {every: 15m, name: 'x_%Y-%m-%d'}"], "11:36",
     "snapshot: the name template 'x_%Y-%m-%d' gives two snapshots 15m apart the same name "
     "('x_2013-01-01'); give it a finer time field (such as %H%M) or snapshot less often"),
    ("name-too-coarse-cron", ["snapshot: {cron: '0,30 * * * *', name: 'x_%Y%m%d-%H'}"], "11:46",
     "gives two snapshots 30m apart the same name"),
    ("name-weekly", ["snapshot: {every: 1d, name: 'w_%Y-W%W'}"], "11:35",
     "gives two snapshots 1d apart the same name"),
    ("name-not-selected", ["snapshots: {prefix: auto-}", "snapshot: {every: 1h}"], "12:25",
     "snapshot: the name template 'zrelay_%Y-%m-%dT%H:%M:%SZ' gives names such as "
     "'zrelay_2013-01-07T00:00:00Z', which this job's snapshots: prefix 'auto-' does not select"),
    # keep
    ("keep-list", ["keep: [daily]"], "11:13", "keep: expected a mapping, got a list"),
    ("keep-empty", ["keep: {}"], "11:13", "keep: no policy; give one for 'source', 'targets'"),
    ("keep-null", ["keep:"], "11:7", "keep: no policy"),
    ("keep-side-typo", ["keep: {sorce: {daily: 1}}"], "11:14",
     "keep: 'sorce' is not a key of keep (did you mean 'source'?); expected source, targets "
     "(every target without its own entry) or one of the job's targets: vault:backup/data, "
     "s3:offsite"),
    ("keep-not-a-target", ["keep: {vault:backup/dat: {daily: 1}}"], "11:14",
     "keep: 'vault:backup/dat' is not a target of this job (did you mean 'vault:backup/data'?)"),
    ("keep-other-s3", ["keep: {s3:elsewhere: {daily: 1}}"], "11:14",
     "keep: 's3:elsewhere' is not a target of this job"),
    ("keep-block-key", ["keep:", "  source: {daily: 1}", "  nas1:tank/data: {daily: 1}"], "13:9",
     "keep: 'nas1:tank/data' is not a target of this job"),
    ("keep-policy-scalar", ["keep: {source: 7}"], "11:22",
     "keep.source: expected a mapping, got the value '7'"),
    ("keep-policy-empty", ["keep: {source: {}}"], "11:22",
     "keep.source keeps nothing; give at least one of within, last, hourly, daily, weekly, "
     "monthly, yearly"),
    ("keep-policy-null", ["keep:", "  targets:"], "12:9", "keep.targets keeps nothing"),
    ("keep-stale-only", ["keep: {source: {stale_after: 30d}}"], "11:22",
     "keep.source keeps nothing"),
    ("keep-zero", ["keep: {targets: {daily: 0}}"], "11:31",
     "keep.targets.daily: 0 is out of range (expected >= 1)"),
    ("keep-negative", ["keep: {source: {last: -1}}"], "11:29",
     "keep.source.last: -1 is out of range (expected >= 1)"),
    ("keep-string-count", ["keep: {source: {hourly: '24'}}"], "11:31",
     "keep.source.hourly: expected an integer, got the string '24'"),
    ("keep-float", ["keep: {source: {yearly: 1.5}}"], "11:31",
     "keep.source.yearly: expected an integer, got the number 1.5"),
    ("keep-stale-on-target", ["keep: {targets: {daily: 3, stale_after: 1d}}"], "11:34",
     "keep.targets.stale_after: only the source's policy has it"),
    ("keep-stale-on-s3", ["keep: {s3:offsite: {monthly: 3, stale_after: 1d}}"], "11:39",
     "keep.s3:offsite.stale_after: only the source's policy has it"),
    ("keep-rule-typo", ["keep: {source: {dayly: 3}}"], "11:23",
     "unknown key 'dayly' in keep.source (did you mean 'daily'?); expected one of: within, "
     "last, hourly, daily, weekly, monthly, yearly, stale_after"),
    ("keep-rule-typo-target", ["keep: {targets: {montly: 3}}"], "11:24",
     "unknown key 'montly' in keep.targets (did you mean 'monthly'?); expected one of: within, "
     "last, hourly, daily, weekly, monthly, yearly"),
    ("keep-within-word", ["keep: {source: {within: forever}}"], "11:31",
     "keep.source.within: expected a duration such as 30s, 15m, 1h, 1d or 1w, got 'forever'"),
    ("keep-stale-zero", ["keep: {source: {daily: 1, stale_after: 0d}}"], "11:46",
     "keep.source.stale_after: 0d is too short (at least 1s)"),
    ("keep-not-own", ["snapshot: {every: 1h, name: '%Y-%m-%dT%H'}", "keep: {source: {daily: 3}}"],
     "12:7", "keep: this job's snapshots cannot be told apart from other tools' (no snapshots: "
     "prefix or regex, and the name template '%Y-%m-%dT%H' starts with '%'): add `snapshots: "
     "{prefix: …}`"),
    # hooks
    ("hooks-scalar", ["hooks: /bin/true"], "11:14", "hooks: expected a mapping, got the value"),
    ("hooks-no-command", ["hooks: {timeout: 30s}"], "11:14",
     "hooks: no command; give pre_snapshot and/or post_snapshot"),
    ("hooks-null", ["hooks:"], "11:7", "hooks: no command"),
    ("hooks-empty-command", ["hooks: {pre_snapshot: ''}"], "11:29",
     "hooks.pre_snapshot: expected a non-empty string"),
    ("hooks-list-command", ["hooks: {post_snapshot: [a, b]}"], "11:30",
     "hooks.post_snapshot: expected a string, got a list"),
    ("hooks-newline", ['hooks: {pre_snapshot: "a\\nb"}'], "11:29",
     "hooks.pre_snapshot: must not contain control characters or newlines"),
    ("hooks-typo", ["hooks: {pre_snapshot: x, timout: 3s}"], "11:32",
     "unknown key 'timout' in hooks (did you mean 'timeout'?); expected one of: pre_snapshot, "
     "post_snapshot, timeout"),
    ("hooks-timeout-integer", ["hooks: {pre_snapshot: x, timeout: 3}"], "11:41",
     "hooks.timeout: expected a duration such as 30s, 15m, 1h, 1d or 1w, got the integer 3"),
    # the job's keys
    ("job-key-typo", ["keeps: {source: {daily: 3}}"], "11:7",
     "unknown key 'keeps' in job (did you mean 'keep'?)"),
    ("job-key-typo-hooks", ["hook: {pre_snapshot: x}"], "11:7",
     "unknown key 'hook' in job (did you mean 'hooks'?)"),
]


@pytest.mark.parametrize("lines, where, message", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_refusals(lines: list[str], where: str, message: str) -> None:
    errors = validate_inventory_text(job_text(*lines), "inv.yml")
    assert [e.render() for e in errors] == [errors[0].render()], "exactly one problem"
    error = errors[0]
    assert (error.file, f"{error.line}:{error.column}") == ("inv.yml", where), error.render()
    assert message in error.message, error.render()
    assert "\n" not in error.render()


def test_a_targets_policy_is_not_offered_stale_after() -> None:
    errors = validate_inventory_text(job_text("keep: {targets: {montly: 3}}"), "inv.yml")
    assert errors[0].message.endswith("expected one of: within, last, hourly, daily, weekly, "
                                      "monthly, yearly")


def test_the_cases_are_distinct() -> None:
    assert len({c[0] for c in BAD}) == len(BAD)
    assert len({tuple(c[1]) for c in BAD}) == len(BAD)


def test_a_fleet_template_starting_with_a_field_refuses_keep() -> None:
    text = HEAD.replace("zrelay:\n", "zrelay:\n  snapshot_name: '%Y%m%d-%H%M%S'\n") + \
        "      keep: {targets: {daily: 3}}\n"
    errors = validate_inventory_text(text, "inv.yml")
    assert [(e.line, e.column) for e in errors] == [(12, 7)]
    assert "the name template '%Y%m%d-%H%M%S' starts with '%'" in errors[0].message


def test_a_coarse_fleet_template_is_refused_at_the_schedule() -> None:
    text = HEAD.replace("zrelay:\n", "zrelay:\n  snapshot_name: 'day_%Y-%m-%d'\n") + \
        "      snapshot: {every: 1h}\n"
    errors = validate_inventory_text(text, "inv.yml")
    assert [(e.line, e.column) for e in errors] == [(12, 25)]
    assert "'day_%Y-%m-%d' gives two snapshots 1h apart the same name" in errors[0].message
    # the same template once a day is fine
    assert validate_inventory_text(text.replace("every: 1h", "every: 1d"), "inv.yml") == []


def test_every_problem_is_listed_at_once() -> None:
    text = job_text("snapshot: {every: 5s}", "keep: {sorce: {daily: 1}, targets: {dayly: 2}}",
                    "hooks: {timeout: 3s}")
    found = [(e.line, e.column) for e in validate_inventory_text(text, "inv.yml")]
    assert found == [(11, 25), (12, 14), (12, 43), (13, 14)]


def test_a_refused_lifecycle_leaves_the_job_out() -> None:
    inventory, errors = inspect_inventory_text(job_text("keep: {vault:backup/other: {daily: 1}}"),
                                               "inv.yml")
    assert errors and inventory is not None and inventory.jobs == ()


def test_the_command_line_says_it_in_one_line_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "inv.yml"
    path.write_text(job_text("keep: {source: {daily: 0}}"))
    env = {k: v for k, v in os.environ.items() if k != "ZRELAY_INVENTORY"}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run([sys.executable, "-m", "zrelay", "-i", str(path), "inventory", "validate"],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 2
    assert proc.stdout.splitlines() == [
        f"{path}:11:30: keep.source.daily: 0 is out of range (expected >= 1)"]
    assert "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- example and JSON


def test_the_example_inventory_lifecycle() -> None:
    inventory = load_inventory(EXAMPLE)
    data, home, db = inventory.jobs
    assert data.name == "nas1-data"
    assert data.targets == (Endpoint("vault", "backup/nas1/data"),
                            Endpoint("nas2", "tank/replica/nas1-data"))
    assert data.lifecycle == Lifecycle(
        snapshot=SnapshotSchedule(cron=parse_cron("*/15 * * * *"),
                                  name="zrelay_%Y-%m-%dT%H:%M:%SZ"),
        keep={"source": KeepPolicy(within=86400, hourly=24, daily=14, stale_after=30 * 86400),
              "targets": KeepPolicy(daily=30, monthly=12),
              "vault:backup/nas1/data": KeepPolicy(daily=90, monthly=24, yearly=5)},
        hooks=Hooks("/usr/local/bin/db-freeze", "/usr/local/bin/db-thaw", 30.0))
    assert data.lifecycle.policy_for("nas2:tank/replica/nas1-data") == KeepPolicy(daily=30,
                                                                                  monthly=12)
    assert data.own_snapshots(inventory.settings.snapshot_name) == SnapshotFilter(prefix="zrelay_")
    assert S3Ref("offsite") in home.targets
    assert home.lifecycle == Lifecycle(keep={"s3:offsite": KeepPolicy(monthly=12)})
    assert home.lifecycle.policy_for("vault:backup/nas2/home") is None   # never pruned
    assert db.lifecycle == Lifecycle()


def test_list_json_writes_the_keys_back_as_they_read() -> None:
    """Each job's lifecycle in ``inventory list --json``, put back into the file as the job's
    keys, loads as the same Lifecycle."""
    text = job_text('snapshot: {cron: "0 */2 * * mon-fri", name: "n_%Y%m%d%H"}',
                    "keep: {source: {within: 36h, last: 2, stale_after: 2w}, "
                    "s3:offsite: {monthly: 6}, vault:backup/data: {within: 90m, daily: 7}}",
                    "hooks: {pre_snapshot: 'echo hi', timeout: 120s}")
    inventory = loads_inventory(text, "inv.yml")
    written = list_json(inventory)["_meta"]["zrelay"]["jobs"][0]
    assert written["snapshot"] == {"cron": "0 */2 * * mon-fri", "name": "n_%Y%m%d%H"}
    assert written["keep"]["source"] == {"within": "36h", "last": 2, "stale_after": "2w"}
    assert written["keep"]["vault:backup/data"] == {"within": "90m", "daily": 7}
    assert written["hooks"] == {"pre_snapshot": "echo hi", "timeout": "2m"}
    doc = yaml.safe_load(text)
    job = doc["zrelay"]["jobs"][0]
    for key in ("snapshot", "keep", "hooks"):
        job[key] = json.loads(json.dumps(written[key]))
    again = loads_inventory(yaml.safe_dump(doc), "inv.yml")
    assert again.jobs[0].lifecycle == inventory.jobs[0].lifecycle
    every = loads_inventory(job_text("snapshot: {every: 1d}"), "inv.yml")
    assert list_json(every)["_meta"]["zrelay"]["jobs"][0]["snapshot"] == {"every": "1d"}


def test_list_json_of_a_job_without_lifecycle() -> None:
    written = list_json(loads_inventory(job_text(), "inv.yml"))["_meta"]["zrelay"]["jobs"][0]
    assert (written["snapshot"], written["keep"], written["hooks"]) == (None, {}, None)


def test_a_narrowed_job_keeps_each_targets_own_policy() -> None:
    """``sync nas1:tank/data/child`` narrows a recursive job: its targets move down, and each
    keeps the policy written for it (not the ``targets`` default, which keeps less here)."""
    text = job_text("keep: {targets: {daily: 3}, vault:backup/data: {daily: 90}, "
                    "s3:offsite: {monthly: 12}}").replace(
        "    - source: nas1:tank/data\n", "    - source: nas1:tank/data\n      recursive: true\n")
    inventory = loads_inventory(text, "inv.yml")
    (child,) = inventory.jobs_matching(["nas1:tank/data/child"])
    assert child.targets == (Endpoint("vault", "backup/data/child"), S3Ref("offsite"))
    assert child.lifecycle.policy_for("vault:backup/data/child") == KeepPolicy(daily=90)
    assert child.lifecycle.policy_for("s3:offsite") == KeepPolicy(monthly=12)
    assert child.lifecycle.policy_for("source") is None
    assert inventory.jobs[0].lifecycle.policy_for("vault:backup/data") == KeepPolicy(daily=90)
