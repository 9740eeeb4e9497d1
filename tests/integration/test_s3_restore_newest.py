"""s3-restore without --snapshot restores the newest stored snapshot or refuses; a full restore leaves a replica.

- A chain broken after @s1 (an incremental's object deleted out of band) must not quietly give back @s1
  when the newest stored snapshot was asked for: exit 1, naming the newest stored snapshot, where the
  chain breaks, and the exact command for the newest restorable one.
- A full restore sets canmount=noauto like sync does: a mounted copy is modified by the mount and then
  refuses the next incremental restore ("modified since most recent snapshot").
"""

from __future__ import annotations

import json

import pytest

from tests.integration.helpers import exists, make_dataset, snapshots, write
from tests.integration.test_s3 import Case, case2  # noqa: F401  (the fixture)
from tests.s3fixture import s3  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.lab]


def test_broken_chain_refuses_instead_of_restoring_an_older_snapshot(case2: Case) -> None:  # noqa: F811
    case, lab, s3 = case2, case2.lab, case2.s3
    make_dataset(lab, "nas2", case.src, mib=lab.mib(1), snaps=["s1", "s2", "s3"])
    case.ok("s3-push")                                       # full @s1, then -i @s2, -i @s3
    (s2_object,) = [k for k in case.stream_keys() if "/@s2/" in k]
    s3.client().delete_object(Bucket=s3.bucket, Key=s2_object)  # out of band: the chain breaks after @s1
    dst = case.target_dataset("vault")

    r = case.zrelay("s3-restore", "offsite", f"nas2:{case.src}", "--to", f"vault:{dst}")
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode == 1, (r.stdout, r.stderr)
    err = " ".join(r.stderr.split())
    assert "the newest stored snapshot of" in err and "is @s3" in err
    assert "breaks at @s2/" in err and f"{s2_object} is missing" in err
    suggested = f"zrelay s3-restore offsite nas2:{case.src} --to vault:{dst} --snapshot s1"
    assert "newest restorable snapshot is @s1" in err and suggested in err
    assert not exists(lab, "vault", dst), "nothing may be restored when the newest cannot be"

    # the command it names does what it says
    case.ok(*suggested.split()[1:])
    assert [n for n, _ in snapshots(lab, "vault", dst)] == ["s1"]
    # asking for a lost snapshot by name is refused as before
    lost = case.zrelay("s3-restore", "offsite", f"nas2:{case.src}", "--to", f"vault:{dst}", "--snapshot", "s3")
    assert lost.returncode == 1 and "broken" in lost.stderr


def test_full_restore_sets_canmount_noauto_like_sync(case2: Case) -> None:  # noqa: F811
    case, lab = case2, case2.lab
    make_dataset(lab, "nas2", case.src, mib=lab.mib(1), snaps=["s1", "s2"])
    case.ok("s3-push")
    dst = case.target_dataset("vault")
    dry = case.ok("s3-restore", "offsite", f"nas2:{case.src}", "--to", f"vault:{dst}", "--dry-run", "--json")
    commands = [c["command"] for c in json.loads(dry.stdout)["commands"]]
    full = next(i for i, c in enumerate(commands) if "zfs receive" in c)
    # canmount=noauto, and the source's mountpoint and shares inherited where the push sent properties
    sent = " mountpoint sharenfs sharesmb" if lab.capabilities("nas2").send_props else ""
    assert commands[full + 1].startswith("sh -c ") and commands[full + 1].endswith(
        f" sh {dst} canmount=noauto{sent}"), commands

    case.ok("s3-restore", "offsite", f"nas2:{case.src}", "--to", f"vault:{dst}")
    assert lab.zfs("vault", "get", "-H", "-o", "value", "canmount", dst).strip() == "noauto"
    # an incremental restore into it still works, and keeps the setting
    write(lab, "nas2", case.src, "s3", lab.mib(1))
    lab.run("nas2", "zfs", "snapshot", f"{case.src}@s3")
    case.ok("s3-push")
    case.ok("s3-restore", "offsite", f"nas2:{case.src}", "--to", f"vault:{dst}")
    assert [n for n, _ in snapshots(lab, "vault", dst)] == ["s1", "s2", "s3"]
    assert lab.zfs("vault", "get", "-H", "-o", "value", "canmount", dst).strip() == "noauto"
