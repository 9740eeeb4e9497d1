"""``zfs allow DATASET`` and ``id USER`` read by zrelay.zfs.parse, on real and faithfully built outputs.

Real: the recordings (OpenZFS 2.3.2 with nothing delegated prints nothing; zfs-fuse has no ``zfs
allow`` at all), ``id`` on the lab, and a listing pasted in a public bug report (spaces where the
terminal showed tabs). Built: OpenZFS's layout, line by line as cmd/zfs/zfs_main.c
``print_fs_perms`` prints it (header padded with dashes to column 70, one tab before each entry),
and the older banner form (``… permissions on (NAME)`` between lines of dashes).
"""

from __future__ import annotations

import pytest

from tests.fixtures.transcript import find, load
from zrelay.zfs import commands as c, quoting
from zrelay.zfs import parse as p
from zrelay.zfs.model import Capabilities, Delegation, DelegationListing, Identity


def header(name: str) -> str:
    """``---- Permissions on NAME `` padded with dashes to 70 characters, as print_fs_perms does."""
    text = f"---- Permissions on {name} "
    return text + "-" * max(0, 70 - len(text))


def test_openzfs_with_nothing_delegated_prints_nothing() -> None:
    rec = find(load("openzfs-2.3"), quoting.quote(c.allow_show_argv("tank/data")))
    assert rec.rc == 0 and rec.stdout == ""
    assert p.parse_allow(rec.stdout) == []


def test_zfs_fuse_has_no_zfs_allow_and_the_probe_says_so() -> None:
    records = load("zfs-fuse")
    rec = find(records, quoting.quote(c.allow_show_argv("tank/data")))
    assert rec.rc == 255 and "pyzfs.py not found" in rec.stdout + rec.stderr
    probe = find(records, quoting.quote(c.probe_argv()))
    assert not p.parse_probe(probe.stdout, probe.stderr, probe.rc).delegation
    assert Capabilities.openzfs("2.3.2").delegation


def test_a_listing_pasted_from_a_terminal() -> None:
    # NixOS/nixpkgs#160403: `zfs allow` of a child shows its ancestor's grants
    text = ("---- Permissions on zroot/USERDATA/home/A12L -------------------------\n"
            "Local+Descendent permissions:\n"
            "        user a12l create,diff,mount,rename,rollback,snapshot\n")
    assert p.parse_allow(text) == [DelegationListing("zroot/USERDATA/home/A12L", (
        Delegation("user", "a12l", True, True,
                   frozenset({"create", "diff", "mount", "rename", "rollback", "snapshot"})),))]


def test_every_block_of_the_openzfs_layout() -> None:
    text = "\n".join([
        header("tank/replica/nas1-data"),
        "Permission sets:",
        "\t@base hold,release",
        "\t@recv @base,create,receive",
        "Create time permissions:",
        "\tdestroy,mount",
        "Local permissions:",
        "\tuser zrelay canmount",
        "\tgroup 5000 send",
        "Descendent permissions:",
        "\tgroup backup destroy",
        "Local+Descendent permissions:",
        "\tuser zrelay @recv,mount",
        "\teveryone bookmark",
        header("tank"),
        "Local+Descendent permissions:",
        "\tuser zrelay snapshot",
        ""])
    mine, pool = p.parse_allow(text)
    assert mine.dataset == "tank/replica/nas1-data" and pool.dataset == "tank"
    assert dict(mine.sets) == {"@base": {"hold", "release"}, "@recv": {"@base", "create", "receive"}}
    assert mine.create == {"destroy", "mount"}
    assert mine.grants == (
        Delegation("user", "zrelay", True, False, frozenset({"canmount"})),
        Delegation("group", "5000", True, False, frozenset({"send"})),
        Delegation("group", "backup", False, True, frozenset({"destroy"})),
        Delegation("user", "zrelay", True, True, frozenset({"@recv", "mount"})),
        Delegation("everyone", None, True, True, frozenset({"bookmark"})))
    assert pool.grants == (Delegation("user", "zrelay", True, True, frozenset({"snapshot"})),)


def test_names_a_header_cannot_pad() -> None:
    long = "backup/" + "x" * 60 + "-"   # past column 70: no dashes after it, a hyphen of its own
    spaced = "tank/my data -old"
    text = f"{header(long)}\nLocal permissions:\n\tuser u send\n{header(spaced)}\nLocal permissions:\n\tuser u hold\n"
    assert [ls.dataset for ls in p.parse_allow(text)] == [long, spaced]


def test_the_older_banner_form() -> None:
    lines = "-" * 61
    text = "\n".join([
        lines,
        "Permission sets on (tank)",
        "\t@snaps hold,snapshot",
        "Local+Descendent permissions on (tank)",
        "\tuser zrelay @snaps,send",
        "\tgroup staff mount",
        "\treceive",
        lines,
        "Local permissions on (tank/data)",
        "\tuser zrelay destroy",
        lines, ""])
    tank, data = p.parse_allow(text)
    assert (tank.dataset, dict(tank.sets)) == ("tank", {"@snaps": {"hold", "snapshot"}})
    assert tank.grants == (Delegation("user", "zrelay", True, True, frozenset({"@snaps", "send"})),
                           Delegation("group", "staff", True, True, frozenset({"mount"})),
                           Delegation("everyone", None, True, True, frozenset({"receive"})))
    assert data.grants == (Delegation("user", "zrelay", True, False, frozenset({"destroy"})),)


@pytest.mark.parametrize("text", [
    "Local permissions:\n\tuser u send\n",                          # a block before any dataset
    f"{header('tank')}\n\tuser u send\n",                           # an entry before any block
    f"{header('tank')}\nRemote permissions:\n\tuser u send\n",      # a block zfs never prints
    f"{header('tank')}\nLocal permissions:\n\tuser u send extra\n",
    f"{header('tank')}\nLocal permissions:\n\tuser u send,,hold\n",
    f"{header('tank')}\nPermission sets:\n\tbase hold\n",           # a set's name starts with @
    "---- Permissions on tank ----x\n",
])
def test_other_shapes_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        p.parse_allow(text)


def test_identity_from_id() -> None:
    # `id nobody` on the lab (GNU coreutils), and a group without a name
    assert p.parse_identity("uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)\n") == \
        Identity("nobody", 65534, ((65534, "nogroup"),))
    assert p.parse_identity("uid=1001(zrelay) gid=1001(zrelay) groups=1001(zrelay),27(sudo),5000\n") == \
        Identity("zrelay", 1001, ((1001, "zrelay"), (27, "sudo"), (5000, None)))
    with pytest.raises(ValueError):
        p.parse_identity("id: 'nosuch': no such user\n")


def test_delegation_property() -> None:
    assert p.parse_on_off("on\n", "delegation") is True
    assert p.parse_on_off("off\n", "delegation") is False
    with pytest.raises(ValueError):
        p.parse_on_off("-\n", "delegation")


def test_allow_argvs_take_no_option_from_a_name() -> None:
    assert c.allow_argv("zrelay", ["hold", "send"], "tank/data") == \
        ["zfs", "allow", "-u", "zrelay", "hold,send", "tank/data"]
    assert c.identity_argv("backup$") == ["id", "backup$"]
    for user in ("-e", "", "a b", "x;rm"):
        with pytest.raises(c.InvalidName):
            c.allow_argv(user, ["send"], "tank/data")
    with pytest.raises(ValueError):
        c.allow_argv("zrelay", ["send", "allow"], "tank/data")   # never delegates the right to delegate
    with pytest.raises(ValueError):
        c.allow_argv("zrelay", [], "tank/data")
    # a native property's name delegates setting it; user properties go as userprop, never by name
    assert c.allow_argv("zrelay", ["receive", "compression", "userprop"], "tank/data")[4] == \
        "receive,compression,userprop"
    for bad in ("com.example:tier", "promote", "rename", "userquota", "-x", "a,b"):
        with pytest.raises(ValueError):
            c.allow_argv("zrelay", ["receive", bad], "tank/data")
