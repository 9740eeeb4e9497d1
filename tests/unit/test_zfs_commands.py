"""zfs argv builders: exact command lines, checked against the recorded transcripts.

Where a transcript recorded a command zrelay would build, the test asserts
the builder produces that exact text: the real zfs accepted it.
"""

from __future__ import annotations

import shlex
from typing import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fixtures.transcript import Record, load
from zrelay import errors
from zrelay.errors import InvalidName
from zrelay.zfs import commands as c, quoting
from zrelay.zfs.model import Capabilities

OZ = Capabilities.openzfs("2.3.2")
FUSE = Capabilities.zfs_fuse("pool v23")
T1 = "tank/data@zrelay_2026-11-22T10:00:00Z"
T2 = "tank/data@zrelay_2026-11-22T11:00:00Z"
M1 = "tank/data@manual-1"
BM1 = "tank/data#zrelay_2026-11-22T10:00:00Z"

OPENZFS = load("openzfs-2.3")
ZFS_FUSE = load("zfs-fuse")


def recorded(records: list[Record], command: str, rc: int = 0) -> Record:
    """The transcript has ``command`` (same words after shell splitting) answered with ``rc``."""
    words = shlex.split(command)
    hits = [r for r in records if shlex.split(r.command) == words]
    assert hits, f"not in transcript: {command}"
    assert any(r.rc == rc for r in hits), f"{command}: rc {[r.rc for r in hits]}, expected {rc}"
    return next(r for r in hits if r.rc == rc)


# --- probe and listings ------------------------------------------------------------------------


#: Columns added to the state listings after the transcripts were recorded: the zrelay:sync user
#: property (printed as '-' when unset; tests/integration/test_exclude.py reads it from real hosts)
#: and a clone's origin (tests/openzfs/test_clones.py).
ADDED_COLUMNS = (c.SYNC_PROPERTY, "origin")


def as_recorded(argv: list[str]) -> list[str]:
    """A state listing's argv without ADDED_COLUMNS, as the transcripts recorded it."""
    def drop(word: str) -> str:
        parts = word.split(",")
        return ",".join(w for w in parts if w not in ADDED_COLUMNS) if c.SYNC_PROPERTY in parts else word
    return [drop(w) for w in argv]


def test_state_listings_carry_the_sync_property_and_the_origin() -> None:
    for argvs in (c.list_state_argvs("tank", OZ, recursive=True), c.list_state_argvs("tank", FUSE, recursive=True)):
        assert any("zrelay:sync" in w.split(",") for w in argvs[0]) and as_recorded(argvs[0]) != argvs[0]
    oz_fs = c.list_state_argvs("tank", OZ, recursive=True)[0]
    assert any(w.split(",")[-2:] == ["zrelay:sync", "origin"] for w in oz_fs)
    assert len(c.list_state_argvs("tank", OZ, recursive=True)) == 3   # still no extra round trip


def test_probe_is_the_recorded_command() -> None:
    rec = recorded(ZFS_FUSE, quoting.quote(c.probe_argv()))
    assert "pool version 23" in rec.stdout
    argv = c.probe_argv()
    assert argv[:2] == ["sh", "-c"] and argv[2] == c.PROBE_SCRIPT


def test_exists_argv() -> None:
    recorded(ZFS_FUSE, quoting.quote(c.exists_argv("tank/with space")))
    recorded(ZFS_FUSE, quoting.quote(c.exists_argv("tank/doesnotexist")), rc=1)


def test_list_state_openzfs_recursive_matches_transcript() -> None:
    fs, snaps, marks = (quoting.quote(as_recorded(a)) for a in c.list_state_argvs("tank", OZ, recursive=True))
    recorded(OPENZFS, fs)
    assert snaps == ("zfs list -H -p -t snapshot -o name,guid,createtxg,creation,used,referenced -r tank")
    recorded(OPENZFS, quoting.quote(c.list_state_argvs("tank/data", OZ, recursive=True)[1]))
    recorded(OPENZFS, marks)


def test_list_state_openzfs_single_dataset() -> None:
    argvs = c.list_state_argvs("tank/data", OZ, recursive=False)
    assert [quoting.quote(a) for a in argvs] == [
        "zfs list -H -p -t filesystem,volume -o name,guid,receive_resume_token,mountpoint,"
        "encryption,encryptionroot,zrelay:sync,origin tank/data",
        "zfs list -H -p -t snapshot -o name,guid,createtxg,creation,used,referenced -d 1 tank/data",
        "zfs list -H -p -t bookmark -o name,guid,createtxg,creation -d 1 tank/data",
    ]


def test_list_state_without_bookmarks_has_two_commands() -> None:
    caps = Capabilities(OZ.flavor, "0.8", list_parsable=True, bookmarks=False)
    assert len(c.list_state_argvs("tank/data", caps, recursive=True)) == 2


def test_list_state_zfs_fuse_matches_transcript() -> None:
    (rec,) = c.list_state_argvs("tank/data", FUSE, recursive=True)
    recorded(ZFS_FUSE, quoting.quote(as_recorded(rec)))
    (one,) = c.list_state_argvs("tank/data", FUSE, recursive=False)
    recorded(ZFS_FUSE, quoting.quote(as_recorded(one)))
    (spaced,) = c.list_state_argvs("tank/with space", FUSE, recursive=True)
    assert spaced[-1] == "tank/with space"
    recorded(ZFS_FUSE, quoting.quote(as_recorded(spaced)))
    recorded(ZFS_FUSE, quoting.quote(as_recorded(c.list_state_argvs("tank/doesnotexist", FUSE, recursive=True)[0])),
             rc=1)


def test_holds_and_userrefs() -> None:
    recorded(OPENZFS, quoting.quote(c.holds_argv(T2, caps=OZ)))
    assert c.holds_argv([T1, T2], recursive=True) == ["zfs", "holds", "-H", "-r", T1, T2]
    with pytest.raises(errors.Unsupported, match="zfs-fuse"):
        c.holds_argv(T2, caps=FUSE)
    recorded(ZFS_FUSE, quoting.quote(c.userrefs_argv(T2)))


# --- send / receive ------------------------------------------------------------------------------


def test_send_full_incremental_and_intermediates() -> None:
    assert c.send_argv(T1, caps=OZ) == ["zfs", "send", T1]
    assert c.send_argv(T2, caps=OZ, base=T1) == ["zfs", "send", "-i", T1, T2]
    assert c.send_argv(M1, caps=OZ, base=T1, intermediates=True) == ["zfs", "send", "-I", T1, M1]
    assert c.send_argv(T2, caps=FUSE, replicate=True, props=True) == ["zfs", "send", "-R", "-p", T2]
    with pytest.raises(ValueError):
        c.send_argv(T2, caps=OZ, intermediates=True)


def test_send_receive_pipelines_match_transcripts() -> None:
    recorded(OPENZFS, quoting.pipeline(c.send_argv(T1, caps=OZ), c.receive_argv("backup/data", caps=OZ)))
    recorded(OPENZFS, quoting.pipeline(c.send_argv(T1, caps=OZ),
                                 c.receive_argv("backup/data", caps=OZ, resumable=False)), rc=1)
    recorded(OPENZFS, quoting.pipeline(c.send_argv(M1, caps=OZ, base=T2),
                                 c.receive_argv("backup/data", caps=OZ, resumable=False)))
    recorded(ZFS_FUSE, quoting.pipeline(c.send_argv(T1, caps=FUSE), c.receive_argv("backup/data", caps=FUSE)))
    recorded(ZFS_FUSE, quoting.pipeline(c.send_argv("tank/with space@snap one", caps=FUSE),
                                  c.receive_argv("backup/with space", caps=FUSE)))
    recorded(ZFS_FUSE, quoting.pipeline(c.send_argv(T2, caps=FUSE, base=T1),
                                  c.receive_argv("backup/mounted", caps=FUSE, force=True)))
    recorded(ZFS_FUSE, quoting.pipeline(c.send_argv(M1, caps=FUSE, base=T2),
                                  c.receive_argv("backup/data", caps=FUSE)))


def test_send_from_bookmark() -> None:
    assert c.send_argv(T2, caps=OZ, base=BM1) == ["zfs", "send", "-i", BM1, T2]
    with pytest.raises(errors.Unsupported, match="-I"):
        c.send_argv(T2, caps=OZ, base=BM1, intermediates=True)
    with pytest.raises(errors.Unsupported, match="bookmarks"):
        c.send_argv(T2, caps=FUSE, base=BM1)


def test_send_estimate() -> None:
    recorded(OPENZFS, quoting.quote(c.send_argv(T1, caps=OZ, estimate=True)))
    recorded(OPENZFS, quoting.quote(c.send_argv(T2, caps=OZ, base=T1, estimate=True)))
    recorded(OPENZFS, quoting.quote(c.send_argv(M1, caps=OZ, base=T1, intermediates=True, estimate=True)))
    recorded(OPENZFS, quoting.quote(c.send_argv(T2, caps=OZ, replicate=True, estimate=True)))
    recorded(OPENZFS, quoting.quote(c.send_argv("tank/secret@e1", caps=OZ, raw=True, estimate=True)))
    with pytest.raises(ValueError, match="zfs-fuse"):
        c.send_argv(T1, caps=FUSE, estimate=True)
    # what zfs-fuse says when asked anyway
    recorded(ZFS_FUSE, f"zfs send -nvP {T1}", rc=2)


def test_estimate_argv_from_send_argv() -> None:
    send = c.send_argv(M1, caps=OZ, base=T1, intermediates=True)
    recorded(OPENZFS, quoting.quote(c.estimate_argv(send)))
    assert c.estimate_argv(c.estimate_argv(send)) == c.estimate_argv(send)
    assert c.estimate_argv(["zfs", "send", "-t", "1-ab-cd-ef"]) == ["zfs", "send", "-nvP", "-t", "1-ab-cd-ef"]
    with pytest.raises(ValueError):
        c.estimate_argv(["zfs", "receive", "x/y"])


def test_send_resume_token() -> None:
    token = next(r.stdout.strip() for r in OPENZFS if "-o value receive_resume_token" in r.command)
    assert c.send_argv("", caps=OZ, resume_token=token) == ["zfs", "send", "-t", token]
    assert c.send_argv("", caps=OZ, resume_token=token, estimate=True) == ["zfs", "send", "-nvP", "-t", token]
    with pytest.raises(errors.Unsupported, match="resume"):
        c.send_argv("", caps=FUSE, resume_token=token)
    for bad in ("-t", "1-abc;id", "$(id)", "1-10b8 2c2d", "", "1"):
        with pytest.raises(InvalidName):
            c.send_argv("", caps=OZ, resume_token=bad)


def test_raw_send() -> None:
    assert c.send_argv("tank/secret@e1", caps=OZ, raw=True) == ["zfs", "send", "-w", "tank/secret@e1"]
    recorded(OPENZFS, quoting.pipeline(c.send_argv("tank/secret@e1", caps=OZ, raw=True),
                                 c.receive_argv("backup/secret", caps=OZ, resumable=False)))
    with pytest.raises(errors.Unsupported, match="raw"):
        c.send_argv(T1, caps=FUSE, raw=True)


def test_receive_flags() -> None:
    assert c.receive_argv("backup/data", caps=OZ) == ["zfs", "receive", "-s", "-u", "backup/data"]
    assert c.receive_argv("backup/data", caps=OZ, resumable=False) == ["zfs", "receive", "-u", "backup/data"]
    assert c.receive_argv("backup/data", caps=OZ, force=True, mount=True) == ["zfs", "receive", "-s", "-F",
                                                                           "backup/data"]
    # zfs-fuse: no -s even when asked (it would fail with "invalid option 's'")
    assert c.receive_argv("backup/data", caps=FUSE, resumable=True) == ["zfs", "receive", "-u", "backup/data"]
    recorded(ZFS_FUSE, "zfs receive -s -u backup/x < /dev/null", rc=2)
    assert c.receive_argv("backup/data@named", caps=FUSE) == ["zfs", "receive", "-u", "backup/data@named"]


def test_abort_receive() -> None:
    recorded(OPENZFS, quoting.quote(c.abort_receive_argv("backup/data", caps=OZ)), rc=1)
    with pytest.raises(errors.Unsupported):
        c.abort_receive_argv("backup/data", caps=FUSE)


# --- other changes -------------------------------------------------------------------------------


def test_rollback() -> None:
    recorded(ZFS_FUSE, quoting.quote(c.rollback_argv("backup/data@zrelay_2026-11-22T11:00:00Z")))
    recorded(ZFS_FUSE, quoting.quote(c.rollback_argv("backup/data@zrelay_2026-11-22T11:00:00Z",
                                               destroy_later=False)), rc=1)
    with pytest.raises(InvalidName):
        c.rollback_argv("backup/data")


def test_snapshot() -> None:
    recorded(OPENZFS, quoting.quote(c.snapshot_argv([T1], recursive=True)))
    recorded(ZFS_FUSE, quoting.quote(c.snapshot_argv([T1], recursive=True, caps=FUSE)))
    recorded(ZFS_FUSE, quoting.quote(c.snapshot_argv([M1], recursive=False)))
    assert c.snapshot_argv(["a/b@s", "c/d@s"], False, caps=OZ) == ["zfs", "snapshot", "a/b@s", "c/d@s"]
    recorded(ZFS_FUSE, quoting.quote(c.snapshot_argv(["tank/data@multi-a", "tank/data/child@multi-a"], False)),
             rc=2)
    with pytest.raises(errors.Unsupported, match="one snapshot"):
        c.snapshot_argv(["a/b@s", "c/d@s"], False, caps=FUSE)
    with pytest.raises(ValueError):
        c.snapshot_argv([], False)
    with pytest.raises(InvalidName):
        c.snapshot_argv(["tank/data"], False)


def test_hold_release() -> None:
    recorded(OPENZFS, quoting.quote(c.hold_argv("zrelay", T2)))
    recorded(ZFS_FUSE, quoting.quote(c.hold_argv("zrelay", T2)))
    recorded(ZFS_FUSE, quoting.quote(c.release_argv("zrelay", T2)))
    assert c.hold_argv("zrelay", T2, recursive=True) == ["zfs", "hold", "-r", "zrelay", T2]
    for tag in ("-r", "a b", "x;y", "$(id)", "", "a'b"):
        with pytest.raises(InvalidName):
            c.hold_argv(tag, T2)
        with pytest.raises(InvalidName):
            c.release_argv(tag, T2)


def test_create() -> None:
    recorded(OPENZFS, quoting.quote(c.create_argv("tank/data/child")))
    recorded(ZFS_FUSE, quoting.quote(c.create_argv("tank/made/by/create",
                                             props={"compression": "on", "atime": "off"})))
    assert c.create_argv("tank/x", parents=False) == ["zfs", "create", "tank/x"]
    assert c.create_argv("tank/x", props={"org.example:note": "a b"}) == [
        "zfs", "create", "-p", "-o", "org.example:note=a b", "tank/x"]
    for key, value in (("-o", "x"), ("mountpoint", "/x;id"), ("quota", "$(id)"), ("a b", "1"),
                       ("compression", "`id`"), ("atime", " on"), ("copies", "")):
        with pytest.raises(InvalidName):
            c.create_argv("tank/x", props={key: value})


def test_destroy_only_snapshots() -> None:
    recorded(ZFS_FUSE, quoting.quote(c.destroy_snapshot_argv("tank/data@nope")), rc=1)
    recorded(OPENZFS, quoting.quote(c.destroy_snapshot_argv(T2)), rc=1)
    for not_a_snapshot in ("tank/data", "tank", "tank/data@", "tank/data@a@b", "tank/data#bm"):
        with pytest.raises(InvalidName):
            c.destroy_snapshot_argv(not_a_snapshot)


def test_bookmark() -> None:
    recorded(OPENZFS, quoting.quote(c.bookmark_argv(T1, BM1, caps=OZ)))
    with pytest.raises(errors.Unsupported):
        c.bookmark_argv(T1, BM1, caps=FUSE)
    with pytest.raises(InvalidName):
        c.bookmark_argv(T1, "tank/data@x")


def test_resume_token_argv() -> None:
    recorded(OPENZFS, quoting.quote(c.resume_token_argv("backup/data")))


# --- injection ----------------------------------------------------------------------------------

BAD_DATASETS = [
    "a;b", "tank/a;b", "tank/$(id)", "tank/`id`", "tank/a'b", 'tank/a"b', "-rf", "-o", "tank/a|b",
    "tank/a&b", "tank/a>b", "tank/a\nb", "tank/a\tb", "tank/a\\b", "tank/*", "tank/a b ", " tank",
    "", "tank//x", "tank/../x", "tank/x@s", "tank/x#b", "1tank", "tank/${IFS}", "tank/a$b",
]
BAD_SNAPSHOTS = [f"tank/data@{s}" for s in ("a;b", "$(id)", "`id`", "a'b", 'a"b', "a b ", "", "x|y")] + [
    f"{d}@s" for d in BAD_DATASETS if "@" not in d and "#" not in d] + ["tank/data", "@s", "tank@a@b"]

DATASET_BUILDERS: list[Callable[[str], list[str]]] = [
    c.exists_argv,
    lambda d: c.list_state_argvs(d, OZ, True)[0],
    lambda d: c.list_state_argvs(d, FUSE, False)[0],
    lambda d: c.abort_receive_argv(d),
    lambda d: c.create_argv(d),
    c.resume_token_argv,
]
SNAPSHOT_BUILDERS: list[Callable[[str], list[str]]] = [
    lambda s: c.send_argv(s, caps=OZ),
    lambda s: c.send_argv(T2, caps=OZ, base=s),
    lambda s: c.send_argv(s, caps=OZ, base=T1),
    c.rollback_argv,
    lambda s: c.snapshot_argv([s], True),
    lambda s: c.snapshot_argv([T1, s], False),
    lambda s: c.hold_argv("zrelay", s),
    lambda s: c.release_argv("zrelay", s),
    c.destroy_snapshot_argv,
    c.userrefs_argv,
    lambda s: c.holds_argv(s),
    lambda s: c.bookmark_argv(s, BM1),
]


@pytest.mark.parametrize("name", BAD_DATASETS)
@pytest.mark.parametrize("build", DATASET_BUILDERS)
def test_dataset_builders_reject(build: Callable[[str], list[str]], name: str) -> None:
    with pytest.raises(InvalidName):
        build(name)


@pytest.mark.parametrize("name", BAD_SNAPSHOTS)
@pytest.mark.parametrize("build", SNAPSHOT_BUILDERS)
def test_snapshot_builders_reject(build: Callable[[str], list[str]], name: str) -> None:
    with pytest.raises(InvalidName):
        build(name)


@pytest.mark.parametrize("name", [d for d in BAD_DATASETS if d != "tank/x@s"]
                         + [s for s in BAD_SNAPSHOTS if s != "tank/data"])
def test_receive_rejects(name: str) -> None:
    with pytest.raises(InvalidName):
        c.receive_argv(name, caps=OZ)


@pytest.mark.parametrize("name", ["tank/my data", "tank/a:b.c_d-e", "tank/x/y z", "t/-x"])
def test_valid_odd_names_are_quoted_safely(name: str) -> None:
    argv = c.send_argv(f"{name}@snap one", caps=OZ, base=f"{name}@base")
    line = quoting.quote(argv)
    assert shlex.split(line) == argv
    assert c.receive_argv(name, caps=FUSE)[-1] == name


_SHELL_META = set(";&|$`'\"\\<>()*?[]{}!#~\n\t")


@given(st.text(max_size=40))
def test_any_accepted_name_is_shell_inert(text: str) -> None:
    """Whatever a builder accepts has no metacharacter, no leading '-', and round-trips."""
    for build in (c.exists_argv, lambda s: c.send_argv(s, caps=OZ), lambda s: c.hold_argv(s, T1)):
        try:
            argv = build(text)
        except InvalidName:
            continue
        assert shlex.split(quoting.quote(argv)) == argv
        assert not (set(text) & _SHELL_META)
        assert not text.startswith("-")


# --- sizes ---------------------------------------------------------------------------------


def test_space_argv_both_dialects() -> None:
    assert c.space_argv(T1) == ["zfs", "get", "-H", "-p", "-o", "property,value", "referenced,compressratio", T1]
    with pytest.raises(InvalidName):
        c.space_argv("tank/data")


# --- anchors and stream options -----------------------------------------------------------


def test_hold_and_release_take_several_snapshots() -> None:
    from zrelay.zfs import commands as cmd

    assert cmd.hold_argv("zrelay:j:t", ["p/a@s", "p/b@s"]) == ["zfs", "hold", "zrelay:j:t", "p/a@s", "p/b@s"]
    assert cmd.release_argv("zrelay:j:t", "p/a@s") == ["zfs", "release", "zrelay:j:t", "p/a@s"]
    with pytest.raises(ValueError):
        cmd.hold_argv("t", [])
    with pytest.raises(InvalidName):
        cmd.hold_argv("-r", "p/a@s")


def test_bookmarks_argv_batches_pairs_as_arguments_not_script_text() -> None:
    from zrelay.zfs import commands as cmd

    assert cmd.bookmarks_argv([("p/a@s", "p/a#s")]) == ["zfs", "bookmark", "p/a@s", "p/a#s"]
    argv = cmd.bookmarks_argv([("p/a@s", "p/a#s"), ("p/b@s", "p/b#s")])
    assert argv[:3] == ["sh", "-c", cmd.BOOKMARKS_SCRIPT] and argv[4:] == ["p/a@s", "p/a#s", "p/b@s", "p/b#s"]
    with pytest.raises(InvalidName):
        cmd.bookmarks_argv([("p/a@s", "p/a#s"), ("p/b@s;rm", "p/b#s")])
    with pytest.raises(errors.Unsupported):
        cmd.bookmarks_argv([("p/a@s", "p/a#s")], caps=Capabilities.zfs_fuse())


def test_send_options_need_both_ends_and_are_left_out_of_raw_sends() -> None:
    from zrelay.zfs import commands as cmd

    oz, fuse = Capabilities.openzfs("2.3.2"), Capabilities.zfs_fuse()
    wanted = ("compressed", "large_blocks", "embedded")
    assert cmd.stream_options(wanted, oz, oz) == ("large_blocks", "embedded", "compressed")
    assert cmd.stream_options(wanted, oz, fuse) == ()
    assert cmd.send_argv("p/a@s", caps=oz, options=("large_blocks", "compressed")) == [
        "zfs", "send", "-L", "-c", "p/a@s"]
    assert cmd.send_argv("p/a@s", caps=oz, raw=True, options=("large_blocks",)) == ["zfs", "send", "-w", "p/a@s"]
    with pytest.raises(ValueError):
        cmd.stream_options(("dedup",), oz, oz)


def test_userrefs_tree_argv() -> None:
    from zrelay.zfs import commands as cmd

    assert cmd.userrefs_tree_argv("p/a", False)[-3:] == ["-d", "1", "p/a"]
    assert cmd.userrefs_tree_argv("p/a", True)[-2:] == ["-r", "p/a"]


def test_unsupported_is_a_usage_error_that_callers_catching_valueerror_still_catch() -> None:
    """A feature the host lacks is refused before anything runs, as one line with exit 2."""
    with pytest.raises(errors.Unsupported) as info:
        c.send_argv(T1, caps=FUSE, raw=True)
    assert isinstance(info.value, errors.UsageError) and isinstance(info.value, ValueError)
    assert info.value.exit_code == errors.EXIT_USAGE
    assert str(info.value) == "zfs-fuse has no raw send (`zfs send -w`)"
