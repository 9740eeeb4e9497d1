"""zrelay as an ordinary user, with only what ``zrelay allow`` delegates (ZRELAY_LAB=openzfs).

A user is made on the guests with the lab's key in its authorized_keys; ``zrelay allow --apply``
(run over the root inventory) delegates to it; then sync (full, then incremental, each with its
snapshot, holds and bookmarks) and prune run with an inventory that logs in as that user. Before
the delegation the same sync is refused by ZFS, so the grants are what makes it work.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.helpers import make_dataset, snapshots, write, write_inventory, zrelay

pytestmark = pytest.mark.lab

USER = "zrelay-nonroot"

#: Run as root on a guest: the user (idempotent), the lab's key in its authorized_keys with the
#: modes sshd's StrictModes wants, the account not locked, and zfs where an ordinary login's PATH finds it (Debian keeps
#: it in /usr/sbin, which ssh does not put on a user's PATH). $1: user, $2: public key line.
SETUP_USER = r'''
set -e
id "$1" >/dev/null 2>&1 || useradd -m -s /bin/sh "$1"
usermod -p '*' "$1"   # no password, but not locked: sshd (UsePAM no) refuses every login of a locked account
home=$(getent passwd "$1" | cut -d: -f6)
mkdir -p "$home/.ssh"
printf '%s\n' "$2" > "$home/.ssh/authorized_keys"
chown -R "$1:" "$home/.ssh"
chmod 700 "$home/.ssh"; chmod 600 "$home/.ssh/authorized_keys"
for tool in zfs zpool; do
  [ -e "/usr/local/bin/$tool" ] || ln -s "$(command -v "$tool")" "/usr/local/bin/$tool"
done
'''


@pytest.fixture(autouse=True)
def _openzfs_only(lab) -> None:  # type: ignore[no-untyped-def]
    if lab.tier != "openzfs":
        pytest.skip("zfs-fuse cannot delegate (no `zfs allow`): run with ZRELAY_LAB=openzfs (make test-openzfs)")


def _public_key(lab) -> str:  # type: ignore[no-untyped-def]
    pub = Path(str(lab.key) + ".pub")
    if pub.exists():
        return pub.read_text().strip()
    import subprocess
    return subprocess.run(["ssh-keygen", "-y", "-f", str(lab.key)], capture_output=True, text=True,
                          check=True).stdout.strip()


def _names(lab, host: str, dataset: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [name for name, _guid in snapshots(lab, host, dataset)]


def test_sync_and_prune_as_an_ordinary_user_with_the_delegated_permissions(lab, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lab.require("nas1", "delegation")
    lab.require("vault", "delegation")
    key = _public_key(lab)
    for host in dict((lab.machines[h], h) for h in ("nas1", "vault")).values():   # once per guest
        lab.run(host, "sh", "-c", SETUP_USER, "setup", USER, key)
    name = lab.unique("nr")
    src, parent = f"{lab.pools['nas1']}/{name}/data", f"{lab.pools['vault']}/{name}"
    dst = f"{parent}/data"
    make_dataset(lab, "nas1", src, mib=lab.mib(2))
    job = {"name": name, "source": f"nas1:{src}", "snapshots": {"prefix": "zrelay_"}, "targets": [f"vault:{dst}"],
           "keep": {"source": {"last": 2}, "targets": {"last": 2}}}
    as_root = write_inventory(tmp_path / "root.yml", lab, [job])
    as_user = write_inventory(tmp_path / "user.yml", lab, [job],
                              hosts={h: {"user": USER} for h in lab.hosts})
    try:
        # nothing delegated yet: ZFS refuses the user (its own error, reported by zrelay)
        refused = zrelay("sync", "--snapshot", inventory=as_user)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "permission denied" in (refused.stdout + refused.stderr).lower()
        assert not lab.exists("vault", dst) and _names(lab, "nas1", src) == []   # not even its snapshot

        check = zrelay("allow", "--check", "--json", "--user", USER, "nas1", "vault", inventory=as_root)
        assert check.returncode == 1 and not json.loads(check.stdout)["ok"]
        applied = zrelay("allow", "--apply", "--user", USER, "nas1", "vault", inventory=as_root)
        assert applied.returncode == 0, applied.stdout + applied.stderr
        check = zrelay("allow", "--check", "--json", "--user", USER, "nas1", "vault", inventory=as_root)
        assert check.returncode == 0 and json.loads(check.stdout)["ok"], check.stdout

        # full, then incremental, as the user
        first = zrelay("sync", "--snapshot", "--json", inventory=as_user)
        assert first.returncode == 0, first.stdout + first.stderr
        assert _names(lab, "vault", dst) == _names(lab, "nas1", src) and len(_names(lab, "nas1", src)) == 1
        assert lab.zfs("vault", "get", "-H", "-o", "value", "canmount", dst).strip() == "noauto"
        holds = lab.run("nas1", "zfs", "holds", "-H", f"{src}@{_names(lab, 'nas1', src)[0]}").stdout
        assert f"zrelay:{name}:" in holds                                   # the base is held, by the user
        for _ in range(3):
            write(lab, "nas1", src, f"more{_}", lab.mib(1))
            done = zrelay("sync", "--snapshot", "--json", inventory=as_user)
            assert done.returncode == 0, done.stdout + done.stderr
        assert _names(lab, "vault", dst) == _names(lab, "nas1", src) and len(_names(lab, "nas1", src)) == 4
        assert any(r["outcome"] == "ok" for r in json.loads(done.stdout)), done.stdout

        # prune on both sides, as the user: last 2 each (the held base among them)
        pruned = zrelay("prune", inventory=as_user)
        assert pruned.returncode == 0, pruned.stdout + pruned.stderr
        assert len(_names(lab, "nas1", src)) == 2 and len(_names(lab, "vault", dst)) == 2
        assert _names(lab, "vault", dst) == _names(lab, "nas1", src)
    finally:
        lab.destroy("nas1", f"{lab.pools['nas1']}/{name}")
        lab.destroy("vault", parent)


def test_the_properties_a_source_sends_are_delegated_too(lab, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A source with its own compression and a user property: ``allow`` reads them from the
    source and grants them (and the job's set/exclude names) on the target's parent, so the
    replica, received as the user, carries them."""
    lab.require("nas1", "delegation")
    lab.require("vault", "delegation")
    key = _public_key(lab)
    for host in dict((lab.machines[h], h) for h in ("nas1", "vault")).values():
        lab.run(host, "sh", "-c", SETUP_USER, "setup", USER, key)
    name = lab.unique("np")
    src, parent = f"{lab.pools['nas1']}/{name}/data", f"{lab.pools['vault']}/{name}"
    dst = f"{parent}/data"
    make_dataset(lab, "nas1", src, mib=lab.mib(1))
    lab.run("nas1", "zfs", "set", "compression=gzip", "zrelay-test:owner=alice", src)
    job = {"name": name, "source": f"nas1:{src}", "targets": [f"vault:{dst}"],
           "properties": {"set": {"recordsize": "64K"}, "exclude": ["atime"]}}
    as_root = write_inventory(tmp_path / "root.yml", lab, [job])
    as_user = write_inventory(tmp_path / "user.yml", lab, [job], hosts={h: {"user": USER} for h in lab.hosts})
    try:
        plan = zrelay("allow", "--json", "--user", USER, "vault", inventory=as_root)
        (grant,) = json.loads(plan.stdout)["hosts"][0]["grants"]
        assert grant["properties_from"] == [f"nas1:{src}"] and {"recordsize", "atime"} <= set(grant["permissions"])
        applied = zrelay("allow", "--apply", "--json", "--user", USER, "nas1", "vault", inventory=as_root)
        assert applied.returncode == 0, applied.stdout + applied.stderr
        (target,) = [g for h in json.loads(applied.stdout)["hosts"] if h["host"] == "vault" for g in h["grants"]]
        assert {"compression", "userprop", "recordsize", "atime"} <= set(target["permissions"])
        check = zrelay("allow", "--check", "--json", "--user", USER, "nas1", "vault", inventory=as_root)
        assert check.returncode == 0 and json.loads(check.stdout)["ok"], check.stdout

        done = zrelay("sync", "--snapshot", "--json", inventory=as_user)
        assert done.returncode == 0, done.stdout + done.stderr
        got = lab.zfs("vault", "get", "-H", "-o", "property,value,source",
                      "compression,recordsize,zrelay-test:owner", dst)
        assert "compression\tgzip\treceived" in got and "zrelay-test:owner\talice\treceived" in got, got
        assert "recordsize\t65536\tlocal" in got or "recordsize\t64K\tlocal" in got, got
    finally:
        lab.destroy("nas1", f"{lab.pools['nas1']}/{name}")
        lab.destroy("vault", parent)
