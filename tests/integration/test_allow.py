"""``zrelay allow`` on the lab: the printed commands, and --check / --apply where the host's ZFS can
delegate (OpenZFS; zfs-fuse has no ``zfs allow``, which both modes must say instead of failing
obscurely). Grants go to ``nobody`` (a user every lab host has) on datasets of the test's own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import make_dataset, write_inventory, zrelay

USER = "nobody"
SOURCE = ["bookmark", "destroy", "hold", "mount", "release", "send", "snapshot"]   # keep: on the source
TARGET = ["canmount", "create", "destroy", "hold", "mount", "receive", "release", "rollback"]  # allow_rollback


def _setup(lab: Any, tmp_path: Path) -> tuple[str, str, str, Path]:
    name = lab.unique("al")
    src = f"{lab.pools['nas1']}/{name}/data"
    parent = f"{lab.pools['vault']}/{name}"
    make_dataset(lab, "nas1", src, snaps=["zrelay_1"])
    jobs = [{"source": f"nas1:{src}", "snapshots": {"prefix": "zrelay_"}, "targets": [f"vault:{parent}/data"],
             "allow_rollback": True, "keep": {"source": {"last": 2}}}]
    return name, src, parent, write_inventory(tmp_path / "inv.yml", lab, jobs)


def _cleanup(lab: Any, name: str) -> None:
    lab.destroy("nas1", f"{lab.pools['nas1']}/{name}")
    lab.destroy("vault", f"{lab.pools['vault']}/{name}")


def test_dry_run_prints_the_commands_and_changes_nothing(lab, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    name, src, parent, inv = _setup(lab, tmp_path)
    try:
        done = zrelay("allow", "--user", USER, "nas1", "vault", inventory=inv, env={"COLUMNS": "80"})
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert f"    nas1$ zfs allow -u {USER} {','.join(SOURCE)} {src}" in lines
        assert f"    vault$ zfs allow -u {USER} {','.join(TARGET)} {parent}" in lines
        assert any("must exist: --apply creates it" in line for line in lines)
        # the inventory's user (root) needs nothing
        assert "nas1 (user root): root needs no delegation" in zrelay("allow", "nas1", inventory=inv).stdout
        assert not lab.exists("vault", parent)   # nothing ran
    finally:
        _cleanup(lab, name)


def _check(inv: Path) -> tuple[int, dict[tuple[str, str], dict[str, Any]], dict[str, Any]]:
    done = zrelay("allow", "--check", "--json", "--user", USER, "nas1", "vault", inventory=inv)
    report = json.loads(done.stdout)
    return done.returncode, {(h["host"], g["dataset"]): g for h in report["hosts"] for g in h["grants"]}, report


def test_check_then_apply_then_check_clean(lab, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lab.require("nas1", "delegation")
    lab.require("vault", "delegation")
    name, src, parent, inv = _setup(lab, tmp_path)
    try:
        code, grants, _ = _check(inv)
        assert code == 1
        assert grants[("nas1", src)]["missing"] == SOURCE and grants[("nas1", src)]["error"] is None
        assert grants[("vault", parent)]["error"] == f"{parent} does not exist (--apply creates it)"

        # part of it by hand: --check names exactly the rest, local and descendent alike
        lab.zfs("nas1", "allow", "-u", USER, "send,hold", src)
        lab.zfs("nas1", "allow", "-d", "-u", USER, "snapshot", src)      # below only: not on src itself
        code, grants, _ = _check(inv)
        assert code == 1
        assert grants[("nas1", src)]["missing"] == [p for p in SOURCE if p not in ("send", "hold")]

        applied = zrelay("allow", "--apply", "--user", USER, "nas1", "vault", inventory=inv, env={"COLUMNS": "200"})
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert f"vault$ zfs create -p {parent}" in applied.stdout
        assert f"vault$ zfs allow -u {USER} {','.join(TARGET)} {parent}" in applied.stdout
        assert lab.exists("vault", parent)

        code, grants, report = _check(inv)
        assert code == 0 and report["ok"], report
        assert grants[("nas1", src)]["missing"] == [] and grants[("vault", parent)]["missing"] == []
        text = zrelay("allow", "--check", "--user", USER, "vault", inventory=inv, env={"COLUMNS": "80"})
        assert text.returncode == 0 and " ok" in text.stdout, text.stdout
        # what ZFS itself lists on the replica's parent now, read by zrelay's parser
        from zrelay.zfs import parse
        listed = parse.parse_allow(lab.zfs("vault", "allow", parent))
        mine = [g for ls in listed if ls.dataset == parent for g in ls.grants if g.name == USER]
        assert mine and set().union(*(g.permissions for g in mine)) == set(TARGET)
    finally:
        _cleanup(lab, name)


def test_hosts_that_cannot_delegate_are_reported(lab, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    if lab.capabilities("nas1").delegation:
        pytest.skip(f"{lab.tier} tier: nas1 can delegate (test_check_then_apply_then_check_clean covers it)")
    name, _src, parent, inv = _setup(lab, tmp_path)
    try:
        for mode in ("--check", "--apply"):
            done = zrelay("allow", mode, "--json", "--user", USER, "nas1", "vault", inventory=inv)
            assert done.returncode == 1, done.stderr
            hosts = {h["host"]: h for h in json.loads(done.stdout)["hosts"]}
            for host in ("nas1", "vault"):
                assert hosts[host]["error"].startswith("zfs-fuse cannot delegate permissions"), hosts[host]
        assert not lab.exists("vault", parent)   # --apply created nothing it could not use
    finally:
        _cleanup(lab, name)
