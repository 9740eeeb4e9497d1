"""S3 Object Lock against the lab's SeaweedFS (which supports it on a bucket made with it).

A target with ``object_lock: {mode: GOVERNANCE, days: 1}`` writes every object of a push with
that retention; a prune (``zrelay prune`` and ``s3-prune``) never tries to delete a chain the
bucket still retains and says until when; a delete in such a (versioned) bucket removes every
version of a key, not just hides it behind a delete marker. What the lab cannot show: a
COMPLIANCE lock (the test could not clean it up for a day), the deletion of a chain once its
retention is over (a day), and a push-only key (SeaweedFS's identities have no separate delete
action): ``prune_profile`` is read and used for deletions, checked in tests/unit.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.integration.helpers import make_dataset, write, write_inventory
from tests.integration.test_s3 import Case
from tests.s3fixture import s3  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.lab]

LOCKED_BUCKET = "zrelay-lab-locked"


@pytest.fixture
def locked_bucket(s3: Any) -> str:  # noqa: F811
    client = s3.client()
    try:
        client.create_bucket(Bucket=LOCKED_BUCKET, ObjectLockEnabledForBucket=True)
    except (client.exceptions.BucketAlreadyOwnedByYou, client.exceptions.BucketAlreadyExists):
        pass
    enabled = client.get_object_lock_configuration(Bucket=LOCKED_BUCKET).get("ObjectLockConfiguration", {})
    if enabled.get("ObjectLockEnabled") != "Enabled":
        pytest.skip("this S3 server made the bucket without Object Lock")
    return LOCKED_BUCKET


def _versions(s3: Any, bucket: str, prefix: str) -> list[dict[str, Any]]:
    listed = s3.client().list_object_versions(Bucket=bucket, Prefix=prefix)
    return [*listed.get("Versions", []), *listed.get("DeleteMarkers", [])]


def _clean(s3: Any, bucket: str, prefix: str) -> None:
    """GOVERNANCE retention lifted with the bypass header (only this test's objects)."""
    client = s3.client()
    for v in _versions(s3, bucket, prefix):
        try:
            client.delete_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"],
                                 BypassGovernanceRetention=True)
        except Exception:  # noqa: BLE001 - best effort; the test's own result matters
            pass


@pytest.fixture
def case(lab: Any, s3: Any, tmp_path: Path, locked_bucket: str) -> Iterator[Case]:  # noqa: F811
    c = Case(lab, s3, tmp_path)
    try:
        yield c
    finally:
        c.cleanup()
        _clean(s3, locked_bucket, c.prefix)


def test_objects_are_written_locked_and_prune_keeps_a_locked_chain_saying_until_when(
        case: Case, locked_bucket: str) -> None:
    lab, s3 = case.lab, case.s3
    target = s3.target(case.prefix, bucket=locked_bucket, object_lock={"mode": "GOVERNANCE", "days": 1})
    write_inventory(case.inventory, lab, [{"source": f"nas1:{case.src}", "snapshots": {"prefix": "s"},
                                           "targets": ["s3:offsite"], "keep": {"s3:offsite": {"last": 1}}}],
                    settings={"s3_targets": {"offsite": target}})
    make_dataset(lab, "nas1", case.src, mib=1, snaps=["s1"])
    case.ok("s3-push")
    write(lab, "nas1", case.src, "more", 1)
    lab.run("nas1", "zfs", "snapshot", f"{case.src}@s2")
    case.ok("s3-push", "--full")                      # a second chain: the first is now prunable

    client = s3.client()
    versions = _versions(s3, locked_bucket, case.prefix)
    assert versions and all(v["Key"].startswith(case.prefix) for v in versions)
    for v in versions:
        retention = client.get_object_retention(Bucket=locked_bucket, Key=v["Key"])["Retention"]
        assert retention["Mode"] == "GOVERNANCE"
        assert 0 < retention["RetainUntilDate"].timestamp() - time.time() <= 86400 + 60

    dry = json.loads(case.ok("prune", "--dry-run", "--json").stdout)
    text = json.dumps(dry)
    assert "locked until" in text and "S3 Object Lock, GOVERNANCE" in text, text
    pruned = case.zrelay("s3-prune", "offsite", "--keep-chains", "1", "--json")
    assert pruned.returncode == 0, pruned.stdout + pruned.stderr
    report = json.loads(pruned.stdout)
    assert report["deleted"] == [] and report["failures"] == []
    (dataset,) = report["datasets"]
    older = next(c for c in dataset["chains"] if "newest chain" not in c["reasons"])
    assert not older["delete"] and any("locked until" in r for r in older["reasons"]), older
    assert len(_versions(s3, locked_bucket, case.prefix)) == len(versions)   # nothing deleted, nothing hidden


def test_a_delete_in_a_locked_bucket_removes_every_version(s3: Any, locked_bucket: str) -> None:  # noqa: F811
    from zrelay.inventory.model import ObjectLock, S3Target
    from zrelay.s3.store import Store

    key = f"{s3.prefix('versions')}object"
    client = s3.client()
    try:
        client.put_object(Bucket=locked_bucket, Key=key, Body=b"one")   # no retention on these two
        client.put_object(Bucket=locked_bucket, Key=key, Body=b"two")
        assert len(_versions(s3, locked_bucket, key)) == 2
        target = S3Target("locked", locked_bucket, endpoint=s3.endpoint, region=s3.region, addressing_style="path",
                          object_lock=ObjectLock("GOVERNANCE", 1))
        Store(target, client=client).delete(key)
        assert _versions(s3, locked_bucket, key) == []   # a plain DeleteObject would leave both, hidden
    finally:
        _clean(s3, locked_bucket, key)
