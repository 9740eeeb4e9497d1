"""A recursive job leaving datasets alone, on the lab: ``exclude:`` globs and the ``zrelay:sync=false``
user property, through sync (dry run and run alike), a new child picked up by the next run,
the snapshot step, status and prune. Tier-neutral: the property is read from the real listing
of each flavour (zfs-fuse's ``zfs get``, OpenZFS's ``zfs list -p`` column)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.dryrun_check import assert_ran_what_was_printed
from tests.integration.helpers import exists, snapshots, write_inventory, zrelay

pytestmark = pytest.mark.lab

TEMPLATE = "zrelay_%Y-%m-%dT%H:%M:%SZ"


def _tree(lab, root: str, snaps: list[str]) -> None:   # type: ignore[no-untyped-def]
    """root with tmp, tmp/x, home, home/cache and keep (zrelay:sync=false), and ``snaps`` (-r)."""
    script = [f"zfs create -p {root}/tmp/x", f"zfs create -p {root}/home/cache", f"zfs create {root}/keep",
              f"zfs set zrelay:sync=false {root}/keep"]
    script += [f"zfs snapshot -r {root}@{s}" for s in snaps]
    lab.run("nas1", "sh", "-c", " && ".join(script))


def _names(lab, host: str, dataset: str) -> list[str]:   # type: ignore[no-untyped-def]
    return [name for name, _guid in snapshots(lab, host, dataset)]


def _job(src: str, dst: str, **more: object) -> dict:
    return {"source": f"nas1:{src}", "recursive": True, "exclude": ["tmp", "*/cache"],
            "snapshots": {"prefix": "zrelay_"}, "targets": [f"vault:{dst}"], **more}


def test_sync_leaves_excluded_datasets_alone_and_the_dry_run_says_why(lab, tmp_path: Path) -> None:
    name = lab.unique()
    src, dst = f"{lab.pools['nas1']}/{name}", f"{lab.pools['vault']}/{name}"
    _tree(lab, src, ["zrelay_2026-11-29T03:00:00Z"])
    inv = write_inventory(tmp_path / "inv.yml", lab, [_job(src, dst)], settings={"snapshot_name": TEMPLATE})

    dry = zrelay("sync", "--dry-run", inventory=inv)
    assert dry.returncode == 0, dry.stderr
    for line in (f"excluded nas1:{src}/home/cache: excluded by '*/cache'",
                 f"excluded nas1:{src}/keep: zrelay:sync=false",
                 f"excluded nas1:{src}/tmp: excluded by 'tmp'",
                 f"excluded nas1:{src}/tmp/x: inside {src}/tmp, excluded by 'tmp'"):
        assert line in dry.stdout, dry.stdout
    assert "2 datasets: 2 full, 4 excluded" in dry.stdout, dry.stdout

    [result] = assert_ran_what_was_printed(inv, tmp_path)
    assert {e["dataset"] for e in result["excluded"]} == {f"nas1:{src}/{r}" for r in
                                                          ("tmp", "tmp/x", "home/cache", "keep")}
    assert [p["source"] for p in result["plans"]] == [src, f"{src}/home"]
    assert exists(lab, "vault", f"{dst}/home")
    for rel in ("tmp", "home/cache", "keep"):
        assert not exists(lab, "vault", f"{dst}/{rel}"), rel

    # status: the excluded datasets are not missing replicas; the job is in sync
    status = zrelay("status", "--json", inventory=inv)
    [row] = json.loads(status.stdout)
    assert row["state"] == "in-sync" and row["datasets"] == 2, row


def test_new_children_are_picked_up_by_the_next_run(lab, tmp_path: Path) -> None:
    name = lab.unique()
    src, dst = f"{lab.pools['nas1']}/{name}", f"{lab.pools['vault']}/{name}"
    _tree(lab, src, ["zrelay_2026-11-29T03:00:00Z"])
    inv = write_inventory(tmp_path / "inv.yml", lab, [_job(src, dst)], settings={"snapshot_name": TEMPLATE})
    first = zrelay("sync", inventory=inv)
    assert first.returncode == 0, first.stderr

    lab.run("nas1", "sh", "-c", f"zfs create {src}/new && zfs create {src}/tmp/later && "
                                f"zfs create {src}/new/cache && zfs snapshot -r {src}@zrelay_2026-11-29T04:00:00Z")
    second = zrelay("sync", "--json", inventory=inv)
    assert second.returncode == 0, second.stderr
    [result] = json.loads(second.stdout)
    assert f"nas1:{src}/tmp/later" in {e["dataset"] for e in result["excluded"]}
    assert _names(lab, "vault", f"{dst}/new") == ["zrelay_2026-11-29T04:00:00Z"]
    assert _names(lab, "vault", dst) == ["zrelay_2026-11-29T03:00:00Z", "zrelay_2026-11-29T04:00:00Z"]
    assert not exists(lab, "vault", f"{dst}/new/cache") and not exists(lab, "vault", f"{dst}/tmp")

    # opting a replicated dataset out later: it is no longer sent to, and left as it was
    lab.run("nas1", "sh", "-c", f"zfs set zrelay:sync=false {src}/new && "
                                f"zfs snapshot -r {src}@zrelay_2026-11-29T05:00:00Z")
    third = zrelay("sync", inventory=inv)
    assert third.returncode == 0, third.stderr
    assert _names(lab, "vault", f"{dst}/new") == ["zrelay_2026-11-29T04:00:00Z"]
    assert _names(lab, "vault", f"{dst}/home")[-1] == "zrelay_2026-11-29T05:00:00Z"


def test_the_snapshot_step_snapshots_only_covered_datasets(lab, tmp_path: Path) -> None:
    name = lab.unique()
    src, dst = f"{lab.pools['nas1']}/{name}", f"{lab.pools['vault']}/{name}"
    _tree(lab, src, [])
    inv = write_inventory(tmp_path / "inv.yml", lab, [_job(src, dst)], settings={"snapshot_name": TEMPLATE})
    run = zrelay("snapshot", "--now", "--json", inventory=inv)
    assert run.returncode == 0, run.stderr
    [result] = json.loads(run.stdout)
    taken = result["snapshot"]
    assert "excluded datasets left out" in result["actions"][0]["reason"], result
    for rel in ("", "/home"):
        assert _names(lab, "nas1", src + rel) == [taken], rel
    for rel in ("/tmp", "/tmp/x", "/home/cache", "/keep"):
        assert _names(lab, "nas1", src + rel) == [], rel

    # every dataset opted out: no snapshot at all, and sync has nothing to replicate
    lab.run("nas1", "zfs", "set", "zrelay:sync=false", src)
    again = zrelay("snapshot", "--now", "--json", inventory=inv)
    [none] = json.loads(again.stdout)
    assert none["snapshot"] is None and "every dataset of the job is excluded" in none["message"], none
    sync = zrelay("sync", "--dry-run", inventory=inv)
    assert "nothing to replicate: every dataset is excluded" in sync.stdout, sync.stdout


def test_prune_leaves_excluded_datasets_alone_on_every_side(lab, tmp_path: Path) -> None:
    name = lab.unique()
    src, dst = f"{lab.pools['nas1']}/{name}", f"{lab.pools['vault']}/{name}"
    week = [f"zrelay_2026-11-2{d}T03:00:00Z" for d in range(3, 9)]
    _tree(lab, src, week)
    lab.run("nas1", "zfs", "inherit", "zrelay:sync", f"{src}/keep")   # replicated first, opted out later
    plain = _job(src, dst, keep={"source": {"last": 2}, "targets": {"last": 2}})
    plain["exclude"] = []
    inv = write_inventory(tmp_path / "inv.yml", lab, [plain], settings={"snapshot_name": TEMPLATE})
    assert zrelay("sync", inventory=inv).returncode == 0
    assert _names(lab, "vault", f"{dst}/tmp") == week

    lab.run("nas1", "zfs", "set", "zrelay:sync=false", f"{src}/keep")
    inv = write_inventory(tmp_path / "inv.yml", lab,
                          [_job(src, dst, keep={"source": {"last": 2}, "targets": {"last": 2}})],
                          settings={"snapshot_name": TEMPLATE})
    dry = zrelay("prune", "--dry-run", inventory=inv)
    assert f"excluded nas1:{src}/keep: zrelay:sync=false" in dry.stdout, dry.stdout
    run = zrelay("prune", inventory=inv)
    assert run.returncode == 0, run.stderr + run.stdout
    for host, root in (("nas1", src), ("vault", dst)):
        assert _names(lab, host, root) == week[-2:], host
        assert _names(lab, host, f"{root}/home") == week[-2:], host
        for rel in ("tmp", "tmp/x", "home/cache", "keep"):
            assert _names(lab, host, f"{root}/{rel}") == week, (host, rel)
