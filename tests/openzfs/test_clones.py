"""Clones on OpenZFS (ZRELAY_LAB=openzfs): a clone whose origin is replicated by the same job is
received as a clone, from its origin (``zfs send -i origin``), after its origin even where its name
sorts first; its own snapshots then follow as ordinary incrementals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.helpers import snapshots, write, write_inventory, zrelay

pytestmark = pytest.mark.lab


@pytest.fixture(autouse=True)
def _openzfs_only(lab) -> None:
    if lab.tier != "openzfs":
        pytest.skip("clones: run with ZRELAY_LAB=openzfs (make test-openzfs)")


def _prop(lab, host: str, dataset: str, prop: str) -> str:
    return lab.zfs(host, "get", "-H", "-p", "-o", "value", prop, dataset).strip()


def test_a_clone_is_received_as_a_clone_after_its_origin(lab, tmp_path: Path) -> None:
    name = lab.unique()
    src, dst = f"tank/{name}", f"backup/{name}"
    mib = lab.mib(8, minimum=4)
    lab.run("nas1", "zfs", "create", "-p", f"{src}/base")
    write(lab, "nas1", f"{src}/base", "data", mib)
    lab.run("nas1", "zfs", "snapshot", "-r", f"{src}@zrelay_1")
    # "aclone" sorts before "base": the job must still send the origin first
    lab.run("nas1", "zfs", "clone", f"{src}/base@zrelay_1", f"{src}/aclone")
    write(lab, "nas1", f"{src}/aclone", "own", 1)
    lab.run("nas1", "zfs", "snapshot", "-r", f"{src}@zrelay_2")
    try:
        inv = write_inventory(tmp_path / "inv.yml", lab, [
            {"source": f"nas1:{src}", "recursive": True, "targets": [f"vault:{dst}"],
             "snapshots": {"prefix": "zrelay_"}, "keep": {"targets": {"last": 1}}}])

        dry = zrelay("sync", "--dry-run", "--json", inventory=inv, timeout=900)
        assert dry.returncode == 0, dry.stderr
        plan = json.loads(dry.stdout)[0]
        streams = [a for a in plan["actions"] if a["kind"] == "stream"]
        assert [a["subject"] for a in streams].index(f"{dst}/base") < \
            [a["subject"] for a in streams].index(f"{dst}/aclone")
        (clone,) = [a for a in streams if a["subject"] == f"{dst}/aclone"]
        assert clone["waits_for"] == f"{dst}/base"
        assert f"is a clone of {src}/base@zrelay_1" in clone["reason"]
        assert f"-i {src}/base@zrelay_1 {src}/aclone@zrelay_2" in clone["commands"][0]["command"]

        run = zrelay("sync", "--json", inventory=inv, timeout=900)
        assert run.returncode == 0, run.stderr + run.stdout
        assert json.loads(run.stdout)[0]["outcome"] == "ok"
        # a clone on the target too: same origin, the origin's blocks shared rather than sent again
        assert _prop(lab, "vault", f"{dst}/aclone", "origin") == f"{dst}/base@zrelay_1"
        assert int(_prop(lab, "vault", f"{dst}/aclone", "used")) < mib * 2**20 // 2
        assert int(_prop(lab, "vault", f"{dst}/aclone", "referenced")) > mib * 2**20
        assert snapshots(lab, "vault", f"{dst}/aclone") == snapshots(lab, "nas1", f"{src}/aclone")

        write(lab, "nas1", f"{src}/aclone", "more", 1)
        lab.run("nas1", "zfs", "snapshot", "-r", f"{src}@zrelay_3")
        again = zrelay("sync", "--json", inventory=inv, timeout=900)
        assert again.returncode == 0, again.stderr + again.stdout
        assert snapshots(lab, "vault", f"{dst}/aclone") == snapshots(lab, "nas1", f"{src}/aclone")
        assert _prop(lab, "vault", f"{dst}/aclone", "origin") == f"{dst}/base@zrelay_1"

        # prune keeps the replica clone's origin (zfs could not destroy it) and goes on with the rest
        pruned = zrelay("prune", "--json", inventory=inv, timeout=900)
        assert pruned.returncode == 0, pruned.stdout + pruned.stderr
        assert "the origin of" in pruned.stdout
        assert [n for n, _ in snapshots(lab, "vault", f"{dst}/base")] == ["zrelay_1", "zrelay_3"]
    finally:   # clones before their origins (the lab's cleanup destroys by name)
        lab.run("nas1", "zfs", "destroy", "-r", f"{src}/aclone", check=False)
        lab.run("vault", "zfs", "destroy", "-r", f"{dst}/aclone", check=False)


def test_a_clone_whose_origin_is_outside_the_job_is_sent_in_full(lab, tmp_path: Path) -> None:
    name = lab.unique()
    other, src, dst = f"tank/{name}-origin", f"tank/{name}", f"backup/{name}"
    lab.run("nas1", "zfs", "create", other)
    write(lab, "nas1", other, "data", 1)
    lab.run("nas1", "zfs", "snapshot", f"{other}@o1")
    lab.run("nas1", "zfs", "clone", f"{other}@o1", src)
    lab.run("nas1", "zfs", "snapshot", f"{src}@zrelay_1")
    inv = write_inventory(tmp_path / "inv.yml", lab, [{"source": f"nas1:{src}", "targets": [f"vault:{dst}"]}])
    try:
        run = zrelay("sync", "--json", inventory=inv, timeout=900)
        assert run.returncode == 0, run.stderr + run.stdout
        result = json.loads(run.stdout)[0]
        assert f"is a clone of {other}@o1, but the target side does not hold that snapshot" in json.dumps(result)
        assert _prop(lab, "vault", dst, "origin") == "-"
        assert snapshots(lab, "vault", dst) == snapshots(lab, "nas1", src)
    finally:
        lab.run("nas1", "zfs", "destroy", "-r", src, check=False)   # the clone before its origin
