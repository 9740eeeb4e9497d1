"""zrelay.allow: which permissions each host's role needs, and what a ``zfs allow`` listing gives."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from zrelay import allow
from zrelay.errors import UsageError
from zrelay.inventory import loads_inventory, validate_inventory_text
from zrelay.zfs import parse
from zrelay.zfs.model import Delegation, DelegationListing, Identity

REPO = Path(__file__).resolve().parents[2]

HEAD = """\
all:
  vars: {user: zrelay}
  hosts:
    nas1: {address: 192.0.2.1}
    nas2: {address: 192.0.2.2, sudo: true}
    vault: {address: 192.0.2.3, user: root}
    spare: {address: 192.0.2.4}
zrelay:
  jobs:
"""


def inv(*jobs: str) -> str:
    return HEAD + "".join(f"    - {job}\n" for job in jobs)


def grants(*jobs: str) -> dict[tuple[str, str], allow.Grant]:
    return {(g.host, g.dataset): g for g in allow.required(loads_inventory(inv(*jobs), "inv.yml").jobs)}


SOURCE = {"bookmark", "hold", "release", "send", "snapshot"}
TARGET = {"canmount", "create", "hold", "mount", "receive", "release"}


def test_a_plain_job_needs_the_source_set_on_its_source_and_the_target_set_on_the_targets_parent() -> None:
    got = grants("{source: nas1:tank/data, targets: [nas2:tank/replica/data]}")
    assert set(got) == {("nas1", "tank/data"), ("nas2", "tank/replica")}
    assert got[("nas1", "tank/data")].permissions == SOURCE
    assert got[("nas2", "tank/replica")].permissions == TARGET
    assert got[("nas2", "tank/replica")].parent_of == ("nas2:tank/replica/data",)
    assert got[("nas1", "tank/data")].roles == ("source of nas1:tank/data",)


def test_prune_adds_destroy_and_mount_only_on_the_sides_with_a_policy() -> None:
    got = grants("{source: nas1:tank/a, snapshots: {prefix: z_}, targets: [nas2:tank/r/a, vault:backup/r/a],"
                 " keep: {source: {last: 3}, 'vault:backup/r/a': {daily: 7}}}")
    assert got[("nas1", "tank/a")].permissions == SOURCE | {"destroy", "mount"}
    assert got[("nas2", "tank/r")].permissions == TARGET
    assert got[("vault", "backup/r")].permissions == TARGET | {"destroy"}
    # the `targets` default reaches every target without its own entry
    got = grants("{source: nas1:tank/a, snapshots: {prefix: z_}, targets: [nas2:tank/r/a], keep: {targets: {last: 3}}}")
    assert got[("nas1", "tank/a")].permissions == SOURCE
    assert got[("nas2", "tank/r")].permissions == TARGET | {"destroy"}


def test_allow_rollback_grants_rollback_and_destroy_on_the_targets_only() -> None:
    got = grants("{source: nas1:tank/a, targets: [nas2:tank/r/a], allow_rollback: true}")
    assert got[("nas2", "tank/r")].permissions == TARGET | {"rollback", "destroy"}
    assert got[("nas1", "tank/a")].permissions == SOURCE


def test_jobs_sharing_a_dataset_get_the_union_and_every_role() -> None:
    got = grants("{source: nas1:tank/a, targets: [nas2:tank/r/a], allow_rollback: true}",
                 "{source: nas1:tank/b, name: bee, targets: [nas2:tank/r/b]}",
                 "{source: nas2:tank/r, targets: [vault:backup/r]}")   # a cascade: a parent is also a source
    parent = got[("nas2", "tank/r")]
    assert parent.permissions == TARGET | SOURCE | {"rollback", "destroy"}
    assert parent.roles == ("parent of target nas2:tank/r/a (nas1:tank/a)", "parent of target nas2:tank/r/b (bee)",
                            "source of nas2:tank/r")
    assert parent.parent_of == ("nas2:tank/r/a", "nas2:tank/r/b")
    # a target right below a pool's top: the pool is its parent, which --apply never creates
    assert got[("vault", "backup")].parent_of == () and got[("vault", "backup")].roles == \
        ("parent of target vault:backup/r (nas2:tank/r)",)


def test_plan_per_host_user_root_and_override() -> None:
    inventory = loads_inventory(inv("{source: nas1:tank/a, targets: [nas2:tank/r/a, vault:backup/r/a]}"), "inv.yml")
    plans = {p.host: p for p in allow.plan(inventory, allow.select_hosts(inventory, []))}
    assert list(plans) == ["nas1", "nas2", "vault"]            # spare: no job uses it
    assert plans["nas1"].user == "zrelay" and not plans["nas1"].skipped
    assert plans["vault"].skipped == "root needs no delegation"
    over = {p.host: p for p in allow.plan(inventory, ["vault", "spare"], user="backup")}
    assert over["vault"].user == "backup" and not over["vault"].skipped and over["vault"].grants
    assert over["spare"].skipped == "no job uses this host"
    assert allow.select_hosts(inventory, ["all"]) == ["nas1", "nas2", "vault", "spare"]
    with pytest.raises(UsageError, match="did you mean 'vault'"):
        allow.select_hosts(inventory, ["vualt"])


def test_a_host_without_user_is_a_usage_error() -> None:
    text = inv("{source: nas1:tank/a, targets: [nas2:tank/r/a]}").replace("  vars: {user: zrelay}\n", "")
    inventory = loads_inventory(text, "inv.yml")
    with pytest.raises(UsageError, match="host nas1 has no user:"):
        allow.plan(inventory, ["nas1"])
    assert allow.plan(inventory, ["nas1"], user="zrelay")[0].user == "zrelay"


def test_allow_rollback_must_be_a_boolean_at_its_place() -> None:
    text = inv("{source: nas1:tank/a, targets: [nas2:tank/r/a], allow_rollback: yes please}")
    errors = validate_inventory_text(text, "inv.yml")
    assert len(errors) == 1 and "allow_rollback: expected true or false" in errors[0].message
    line = text.splitlines().index(next(x for x in text.splitlines() if "yes please" in x)) + 1
    assert (errors[0].line, errors[0].column) == (line, text.splitlines()[line - 1].index("yes please") + 1)


# --- what a listing gives ----------------------------------------------------------------------

ME = Identity("zrelay", 1001, ((1001, "zrelay"), (34, "backup")))


def L(dataset: str, *grants: Delegation, sets: dict[str, set[str]] | None = None) -> DelegationListing:
    return DelegationListing(dataset, grants, tuple((k, frozenset(v)) for k, v in (sets or {}).items()))


def D(who: str, name: str | None, perms: str, local: bool = True, descendent: bool = True) -> Delegation:
    return Delegation(who, name, local, descendent, frozenset(perms.split(",")))


def test_local_grants_count_on_the_dataset_and_descendent_ones_below() -> None:
    listings = [L("tank/r", D("user", "zrelay", "receive", descendent=False),
                  D("user", "zrelay", "create", local=False)),
                L("tank", D("user", "zrelay", "mount", descendent=False), D("user", "zrelay", "hold"))]
    assert allow.effective(listings, "tank/r", ME) == {"receive", "hold"}
    assert allow.effective(listings, "tank/r/x", ME) == {"create", "hold"}
    assert allow.effective(listings, "tank/rx", ME) == {"hold"}   # a sibling's name, not a child


def test_users_by_name_or_uid_groups_by_name_or_gid_and_everyone() -> None:
    listings = [L("tank", D("user", "1001", "send"), D("group", "backup", "hold"), D("group", "1001", "release"),
                  D("everyone", None, "bookmark"), D("user", "other", "destroy"), D("group", "wheel", "rollback"))]
    assert allow.effective(listings, "tank", ME) == {"send", "hold", "release", "bookmark"}


def test_sets_expand_from_the_granting_dataset_or_above_nested_and_cyclic() -> None:
    listings = [L("tank/r", D("user", "zrelay", "@recv"), sets={"@recv": {"receive", "@base"}}),
                L("tank", D("user", "zrelay", "@snap", local=False),
                  sets={"@base": {"hold", "release", "@recv"}, "@snap": {"snapshot"}, "@recv": {"destroy"}})]
    # @recv is tank/r's own (the nearest definition wins), @base comes from above, the cycle ends
    assert allow.effective(listings, "tank/r", ME) == {"receive", "hold", "release", "snapshot"}
    # a set defined only below the grant is not seen by it
    below = [L("tank/r", sets={"@x": {"send"}}), L("tank", D("user", "zrelay", "@x"))]
    assert allow.effective(below, "tank/r", ME) == set()


def test_missing_against_a_parsed_listing() -> None:
    grant = allow.Grant("nas2", "tank/replica", frozenset(TARGET), ("parent of target x",))
    text = ("---- Permissions on tank -------------------------------------------------\n"
            "Local+Descendent permissions:\n\tuser zrelay create,hold,mount,receive,release\n")
    assert allow.missing(grant, parse.parse_allow(text), ME) == ("canmount",)
    assert allow.missing(grant, [], ME) == tuple(sorted(TARGET))


# --- properties on replicas --------------------------------------------------------------------


def test_set_and_exclude_names_are_granted_on_the_target_and_sent_properties_come_from_the_source() -> None:
    got = grants("{source: nas1:tank/a, recursive: true, targets: [nas2:tank/r/a],"
                 " properties: {set: {compression: zstd, 'com.example:tier': cold}, exclude: [atime]}}")
    target = got[("nas2", "tank/r")]
    assert target.permissions == TARGET | {"compression", "userprop", "atime"}
    assert target.sent_from == (allow.Sent("nas1", "tank/a", True),)
    assert got[("nas1", "tank/a")].sent_from == ()                       # the source sets nothing
    sent = {allow.Sent("nas1", "tank/a", True): parse.parse_sent_properties(
        "tank/a\trecordsize\ntank/a\tcom.example:owner\ntank/a/b\tcompression\n")}
    assert allow.with_sent(target, sent).permissions == target.permissions | {"recordsize"}
    assert allow.with_sent(target, {}) is target


def test_a_job_that_sends_no_properties_needs_none_of_the_sources() -> None:
    got = grants("{source: nas1:tank/a, targets: [nas2:tank/r/a], properties: {send: false}}")
    assert got[("nas2", "tank/r")].sent_from == () and got[("nas2", "tank/r")].permissions == TARGET


def test_a_target_entry_with_its_own_properties_gets_its_own_grant() -> None:
    got = grants("{source: nas1:tank/a, targets: [nas2:tank/r/a,"
                 " {target: 'vault:backup/r/a', properties: {send: false, set: {readonly: 'on'}}}]}")
    assert got[("vault", "backup/r")].permissions == TARGET | {"readonly"}
    assert got[("vault", "backup/r")].sent_from == ()
    assert got[("nas2", "tank/r")].sent_from == (allow.Sent("nas1", "tank/a", False),)


# --- the command line, offline -----------------------------------------------------------------


def zrelay(*args: str, inventory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "zrelay", "-i", str(inventory), "allow", *args],
                          capture_output=True, text=True, timeout=60, cwd=REPO)


def test_dry_run_prints_each_hosts_commands_exactly_and_connects_nowhere(tmp_path: Path) -> None:
    path = tmp_path / "inv.yml"
    path.write_text(inv("{source: nas1:tank/a, targets: [nas2:tank/r/a, vault:backup/r/a], allow_rollback: true}"))
    done = zrelay(inventory=path)
    assert done.returncode == 0, done.stderr
    assert "nas1$ zfs allow -u zrelay bookmark,hold,release,send,snapshot tank/a" in done.stdout
    assert ("nas2$ sudo -n zfs allow -u zrelay canmount,create,destroy,hold,mount,receive,release,rollback tank/r"
            in done.stdout)
    assert "vault (user root): root needs no delegation" in done.stdout
    data = json.loads(zrelay("--json", "--user", "backup", "vault", inventory=path).stdout)
    assert data == {"hosts": [{"host": "vault", "user": "backup", "skipped": None, "grants": [{
        "dataset": "backup/r", "permissions": sorted(TARGET | {"rollback", "destroy"}),
        "roles": ["parent of target vault:backup/r/a (nas1:tank/a)"], "targets_below": ["vault:backup/r/a"],
        "properties_from": ["nas1:tank/a"],
        "command": "zfs allow -u backup canmount,create,destroy,hold,mount,receive,release,rollback backup/r"}]}]}


@pytest.mark.parametrize("args, message", [
    (("--user=-x",), "zrelay: error: --user: user '-x' must be"),
    (("--user", "a b"), "zrelay: error: --user: user 'a b' must be"),
    (("nosuch",), "zrelay: error: allow: 'nosuch' is no host or group of the inventory"),
    (("--apply", "--check"), "not allowed with argument"),
])
def test_bad_arguments_exit_2_in_one_line(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    path = tmp_path / "inv.yml"
    path.write_text(inv("{source: nas1:tank/a, targets: [nas2:tank/r/a]}"))
    done = zrelay(*args, inventory=path)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_check_and_apply_results_read_at_80_columns() -> None:
    from zrelay.cli.allow import GrantResult, HostResult, _result_lines
    from zrelay.cli.layout import plain

    src = allow.Grant("nas1", "tank/data", frozenset(SOURCE), ("source of nas1-data",))
    dst = allow.Grant("vault", "backup/nas1", frozenset(TARGET),
                      ("parent of target vault:backup/nas1/data (nas1-data)",), ("vault:backup/nas1/data",))
    results = [HostResult(allow.HostAllow("nas1", "zrelay", (src,)), [GrantResult(src)]),
               HostResult(allow.HostAllow("vault", "zrelay", (dst,)), [GrantResult(dst, missing=("canmount", "create"))],
                          pools_off=["backup"]),
               HostResult(allow.HostAllow("nas2", "root", (), skipped="root needs no delegation")),
               HostResult(allow.HostAllow("tiny", "zrelay", ()), error="zfs-fuse cannot delegate permissions")]
    text = [plain(line) for line in _result_lines(results, True, 80)]
    assert all(len(line) <= 80 for line in text), text
    assert text[0] == "zrelay allow --check: 4 host(s), 2 with something missing"
    assert text[1:3] == ["nas1 (user zrelay)", "  tank/data  ok  (source of nas1-data)"]
    assert "  backup/nas1  missing canmount,create  (parent of target" in "\n".join(text)
    joined = " ".join(line.strip() for line in text)
    assert "backup  delegation=off: zfs ignores every grant (zpool set delegation=on backup)" in joined
    assert "nas2 (user root): root needs no delegation" in text
    assert "tiny (user zrelay): zfs-fuse cannot delegate permissions" in text
    applied = [plain(line) for line in _result_lines(results[:1], False, 200)]
    assert applied[2] == "  tank/data  granted bookmark,hold,release,send,snapshot  (source of nas1-data)"
