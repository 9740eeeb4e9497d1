"""S3 Object Lock: the target keys (read at load, errors at file:line:column), the pure prune
rule (a locked chain or orphan stays, saying until when) and which credentials delete.
The bucket side runs against SeaweedFS in tests/integration/test_s3_object_lock.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_s3_chains import NOW, _three_chains
from zrelay.errors import InventoryError
from zrelay.inventory import load_inventory, loads_inventory
from zrelay.inventory.model import ObjectLock
from zrelay.s3 import chains
from zrelay.s3.retention import locked_reason

HEAD = """\
all:
  hosts:
    nas1: {address: 192.0.2.1}
zrelay:
  s3_targets:
    cold:
      bucket: offsite-bucket
"""


def test_object_lock_and_prune_profile_are_read() -> None:
    inv = loads_inventory(HEAD + "      object_lock: {mode: governance, days: 30}\n      prune_profile: pruner\n",
                          "inv.yml")
    target = inv.s3_targets["cold"]
    assert target.object_lock == ObjectLock("GOVERNANCE", 30) and target.object_lock.seconds == 30 * 86400
    assert target.prune_profile == "pruner" and target.profile is None


@pytest.mark.parametrize("value, message", [
    ("{mode: forever, days: 3}", "object_lock: mode must be GOVERNANCE or COMPLIANCE, got 'forever'"),
    ("{mode: COMPLIANCE}", "object_lock: days is missing"),
    ("{mode: COMPLIANCE, days: 0}", "object_lock: days"),
    ("{mode: COMPLIANCE, days: 3, until: x}", "object_lock: unknown key 'until'"),
    ("30d", "object_lock: expected a mapping"),
])
def test_a_bad_object_lock_is_one_error_at_its_place(tmp_path: Path, value: str, message: str) -> None:
    path = tmp_path / "inv.yml"
    path.write_text(HEAD + f"      object_lock: {value}\n")
    with pytest.raises(InventoryError) as info:
        load_inventory(path)
    assert message in str(info.value)
    assert (info.value.line, info.value.column) == (8, 20)


def test_a_locked_chain_is_kept_whatever_the_rules_say() -> None:
    v = _three_chains()
    free = chains.plan_prune(v, keep_chains=1, keep_seconds=None, now=NOW)
    assert [d.delete for d in free.chains] == [True, True, False]
    why = locked_reason(NOW + 86400, "COMPLIANCE")
    held = chains.plan_prune(v, keep_chains=1, keep_seconds=None, now=NOW, locked={v.chains[0].root: why})
    assert [d.delete for d in held.chains] == [False, True, False]
    assert held.chains[0].reasons == [why] and "S3 Object Lock, COMPLIANCE" in why
    assert all(f"/{v.chains[0].root.split('/')[0]}/" not in k for k in held.keys_in_order())


def test_the_until_text_is_utc() -> None:
    assert locked_reason(1_700_000_000, "GOVERNANCE").startswith("locked until 2023-11-14 22:13 UTC")


def test_prune_deletes_with_the_prune_profile() -> None:
    from zrelay.engine.fleet import Fleet
    from zrelay.engine.prune import Pruner

    inv = loads_inventory(HEAD + "      profile: pusher\n      prune_profile: pruner\n", "inv.yml")
    store = Pruner(Fleet(inv), lambda event: None)._store("cold")
    assert store.target.profile == "pruner" and store.target.bucket == "offsite-bucket"
    plain = loads_inventory(HEAD + "      profile: pusher\n", "inv.yml")
    assert Pruner(Fleet(plain), lambda event: None)._store("cold").target.profile == "pusher"
