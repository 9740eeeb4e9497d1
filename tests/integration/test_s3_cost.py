"""What stored chains cost, and calendar retention of whole chains, against the lab's SeaweedFS.

``s3-ls --json`` and ``status --json`` must report per chain the bytes, object count and storage
classes the bucket itself lists (checked here with boto3). ``zrelay prune`` with
``keep: {s3:offsite: {monthly: N}}`` keeps the newest chain of each of the last N months, whole,
dated by the job's name template (snapshots named for months past, made in seconds), and the
newest kept chain still restores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.integration.helpers import make_dataset, snapshots, write, write_inventory
from tests.integration.test_s3 import Case
from tests.s3fixture import s3  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.lab]

TEMPLATE = "auto_%Y-%m-%d"


@pytest.fixture
def case(lab: Any, s3: Any, tmp_path: Path) -> Iterator[Case]:  # noqa: F811
    c = Case(lab, s3, tmp_path)
    try:
        yield c
    finally:
        c.cleanup()


def _listed(s3: Any, prefix: str) -> dict[str, tuple[int, str]]:
    """key → (Size, StorageClass) as ListObjectsV2 reports them."""
    out: dict[str, tuple[int, str]] = {}
    for page in s3.client().get_paginator("list_objects_v2").paginate(Bucket=s3.bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            out[item["Key"]] = (int(item["Size"]), str(item.get("StorageClass") or "STANDARD"))
    return out


def _cost(items: list[tuple[int, str]]) -> dict[str, Any]:
    classes: dict[str, dict[str, int]] = {}
    for size, cls in items:
        c = classes.setdefault(cls, {"objects": 0, "bytes": 0})
        c["objects"] += 1
        c["bytes"] += size
    return {"listed_bytes": sum(s for s, _ in items), "object_count": len(items),
            "storage_classes": dict(sorted(classes.items()))}


def _pick(d: dict[str, Any]) -> dict[str, Any]:
    return {k: d[k] for k in ("listed_bytes", "object_count", "storage_classes")}


def test_ls_and_status_report_what_the_bucket_lists_per_chain(case: Case) -> None:
    lab = case.lab
    make_dataset(lab, "nas1", case.src, mib=1, snaps=["s1", "s2"])
    case.ok("s3-push")                                   # chain 1: s1, s2
    for snap, flags in (("s3", ["--full"]), ("s4", [])):   # chain 2: s3 (full), then s4
        write(lab, "nas1", case.src, snap, 1)
        lab.run("nas1", "zfs", "snapshot", f"{case.src}@{snap}")
        case.ok("s3-push", *flags)

    listed = _listed(case.s3, case.prefix)
    data = json.loads(case.ok("s3-ls", "offsite", "--json").stdout)[0]
    [view] = [d for d in data["datasets"] if d["dataset"] == f"nas1:{case.src}"]
    assert len(view["chains"]) == 2
    for chain in view["chains"]:
        dirs = [s["manifest"].removesuffix("manifest.json") for s in chain["sends"]]
        mine = [v for k, v in listed.items() if any(k.startswith(d) for d in dirs)]
        assert _pick(chain) == _cost(mine), chain["root"]
        assert chain["object_count"] == 2 * len(chain["sends"]), "a stream and a manifest per send"
        assert chain["manifest_size"] == sum(s["size"] for s in chain["sends"])
        for send in chain["sends"]:
            d = send["manifest"].removesuffix("manifest.json")
            assert _pick(send) == _cost([v for k, v in listed.items() if k.startswith(d)])
    assert _pick(view) == _cost(list(listed.values()))
    assert _pick(data) == _cost(list(listed.values()))

    text = case.ok("s3-ls", "offsite").stdout
    total = _cost(list(listed.values()))
    assert f"in {total['object_count']} objects" in text
    assert text.count("      stored ") == 2, text

    write_inventory(case.inventory, lab, [{"source": f"nas1:{case.src}", "targets": ["s3:offsite"]}],
                    settings={"s3_targets": {"offsite": case.s3.target(case.prefix)}})
    status = case.zrelay("status", "--json")
    assert "Traceback" not in status.stderr, status.stderr
    rows = json.loads(status.stdout)
    rows = rows["rows"] if isinstance(rows, dict) else rows
    [row] = [r for r in rows if r["target"] == "s3:offsite"]
    costs = row["s3"]["chain_costs"]
    assert [c["root"] for c in costs] == [c["root"] for c in view["chains"]]
    assert [_pick(c) for c in costs] == [_pick(c) for c in view["chains"]]
    assert _pick(row["s3"]) == total


def test_calendar_prune_keeps_each_months_newest_chain_whole_then_restores(case: Case) -> None:
    lab = case.lab
    make_dataset(lab, "nas1", case.src, mib=1)
    inv = write_inventory(case.inventory, lab, [{
        "source": f"nas1:{case.src}", "targets": ["s3:offsite"], "snapshots": {"prefix": "auto_"},
        "keep": {"s3:offsite": {"monthly": 3}}}],
        settings={"snapshot_name": TEMPLATE, "s3_targets": {"offsite": case.s3.target(case.prefix)}})
    assert inv == case.inventory

    def chain(days: list[str], full: bool) -> None:
        for day in days:
            lab.run("nas1", "zfs", "snapshot", f"{case.src}@auto_{day}")
        case.ok("s3-push", *(["--full"] if full else []))

    chain(["2026-03-05", "2026-03-10"], False)          # A: March, not March's newest chain
    chain(["2026-03-25"], True)                         # B: March's newest
    chain(["2026-04-20"], True)                         # C: April
    chain(["2026-05-02"], True)                         # D: May, the newest, then extended
    chain(["2026-05-03"], False)
    roots = [c["root"] for c in case.ls()["chains"]]
    assert [r.split("/")[0] for r in roots] == ["@auto_2026-03-05", "@auto_2026-03-25", "@auto_2026-04-20",
                                                "@auto_2026-05-02"]
    before = set(case.s3.keys(case.prefix))

    dry = case.ok("prune", "--dry-run")
    flat = " ".join(dry.stdout.split())
    assert "1 whole chain of " in flat and "not kept by the policy (3 monthly)" in flat, dry.stdout
    assert f"{roots[0]} (newest snapshot 2026-03-10 00:00 UTC, " in flat, dry.stdout
    assert not any(r in flat for r in roots[1:]), "only the chain that goes is named"
    assert set(case.s3.keys(case.prefix)) == before, "a dry run deleted something"

    run = json.loads(case.ok("prune", "--json").stdout)
    [side] = [r for r in run if r.get("side") == "s3:offsite"]
    decided = {d["name"]: d for d in side["decisions"]}
    assert [decided[r]["keep"] for r in roots] == [False, True, True, True]
    assert decided[roots[1]]["reasons"] == ["newest of its month 2026-03 (monthly 3)"]
    assert decided[roots[0]]["reasons"] == ["not kept by the policy (3 monthly)"]

    after = case.ls()
    assert [c["root"] for c in after["chains"]] == roots[1:] and after["healthy"]
    gone = before - set(case.s3.keys(case.prefix))
    assert gone and all("/@auto_2026-03-05/" in k or "/@auto_2026-03-10/" in k for k in gone)
    assert not after["orphans"], "a whole chain went, nothing half-deleted"

    dst = case.target_dataset("vault")
    case.ok("s3-restore", "offsite", f"nas1:{case.src}", "--to", f"vault:{dst}")
    source = dict(snapshots(lab, "nas1", case.src))
    assert snapshots(lab, "vault", dst) == [(n, source[n]) for n in ("auto_2026-05-02", "auto_2026-05-03")]

    # s3-prune --keep reads the same policy language; it dates chains by their snapshots' creation
    # (all made today here), so one month keeps only the newest chain
    dry = case.ok("s3-prune", "offsite", "--keep", "monthly=1", "--dry-run")
    assert dry.stdout.count("would delete chain") == 2 and "not kept by --keep (1 monthly)" in dry.stdout
    assert f"keep   chain {roots[3]}" in dry.stdout
    bad = case.zrelay("s3-prune", "offsite", "--keep", "montly=1")
    assert bad.returncode == 2 and "--keep: unknown rule 'montly'" in bad.stderr and "Traceback" not in bad.stderr
