"""Parsers and error mapping, run on the real outputs recorded in tests/fixtures/*/transcript.txt."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.fixtures.transcript import Record, find, load, parse_transcript
from zrelay import errors as e
from zrelay.zfs import commands as c, quoting
from zrelay.zfs import parse as p
from zrelay.zfs.model import Capabilities, DatasetState, Flavor

OZ = Capabilities.openzfs("2.3.2")
FUSE = Capabilities.zfs_fuse("pool v23")
T1 = "tank/data@zrelay_2026-11-22T10:00:00Z"
T2 = "tank/data@zrelay_2026-11-22T11:00:00Z"

OPENZFS = load("openzfs-2.3")
ZFS_FUSE = load("zfs-fuse")


def out(records: list[Record], argv: list[str], nth: int | None = None) -> str:
    """stdout of the record of exactly this argv (it must have succeeded)."""
    rec = find(records, quoting.quote(argv), nth)
    assert rec.rc == 0, rec
    return rec.stdout


# --- the transcript helper itself ---------------------------------------------------------


def test_transcript_format() -> None:
    recs = parse_transcript("### $ a\n\n### stderr:\n### rc=0\n\n### $ b\nx\ny\n### stderr:\noops\n### rc=3\n")
    assert recs[0].stdout == "" and recs[0].stderr == "" and recs[0].rc == 0
    assert recs[1].stdout == "x\ny\n" and recs[1].stderr == "oops\n" and recs[1].rc == 3
    with pytest.raises(ValueError):
        parse_transcript("### $ a\n\n### stderr:\n")
    assert len(OPENZFS) > 40 and len(ZFS_FUSE) > 100


# --- probe -------------------------------------------------------------------------------------


def test_probe_openzfs() -> None:
    rec = find(OPENZFS, "zfs version")  # the probe script's stdout is exactly this on OpenZFS
    caps = p.parse_probe(rec.stdout, rec.stderr, rec.rc)
    assert caps == Capabilities.openzfs("2.3.2")
    assert caps.flavor is Flavor.OPENZFS and caps.resume and caps.send_estimate and caps.bookmarks


def test_probe_zfs_fuse() -> None:
    rec = find(ZFS_FUSE, quoting.quote(c.probe_argv()))
    caps = p.parse_probe(rec.stdout, rec.stderr, rec.rc)
    assert caps.flavor is Flavor.ZFS_FUSE and caps.version == "pool v23"
    assert not (caps.list_parsable or caps.send_estimate or caps.resume or caps.bookmarks or caps.raw_send)
    # zfs-fuse holds but cannot list holds, so zrelay does not use them there
    assert not (caps.holds or caps.compressed_send or caps.large_blocks or caps.embedded_data)
    # the same round trip names the helper tools installed on the recording host
    assert p.parse_probed_tools(rec.stdout) == {"pv", "mbuffer", "zstd", "lz4", "age"}


def _run_probe(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/bin/sh", "-c", c.PROBE_SCRIPT], env={"PATH": str(path)}, capture_output=True,
                          text=True, check=False)


def test_probe_script_run_by_sh_reports_the_tools_on_the_path(tmp_path: Path) -> None:
    """The real probe script, run by a real sh with only some tools (and a `zfs` answering like
    OpenZFS 2.3.2) on its PATH: the parsers see exactly those tools and that version."""
    for name, body in (("zstd", ""), ("pv", ""), ("zfs", "echo zfs-2.3.2-1; echo zfs-kmod-2.3.2-1")):
        tool = tmp_path / name
        tool.write_text(f"#!/bin/sh\n{body}\n")
        tool.chmod(0o755)
    r = _run_probe(tmp_path)
    assert p.parse_probed_tools(r.stdout) == {"zstd", "pv"}
    assert p.parse_probe(r.stdout, r.stderr, r.returncode) == Capabilities.openzfs("2.3.2")
    (tmp_path / "zfs").unlink()
    r = _run_probe(tmp_path)
    assert r.returncode == 127 and p.parse_probed_tools(r.stdout) == {"zstd", "pv"}
    with pytest.raises(e.ZfsUnavailable):
        p.parse_probe(r.stdout, r.stderr, r.returncode)


def test_probed_tools_only_known_names() -> None:
    assert p.parse_probed_tools("zrelay-tool: zstd\nzrelay-tool: rm\nzstd\nzfs-2.3.2-1\n") == {"zstd"}
    assert p.parse_probed_tools("zfs-2.3.2-1\nzfs-kmod-2.3.2-1\n") == frozenset()
    caps = p.parse_probe("zrelay-tool: pv\nzfs-2.3.2-1\nzfs-kmod-2.3.2-1\n", "", 0)
    assert caps == Capabilities.openzfs("2.3.2")


def test_probe_pool_version_from_zpool_upgrade() -> None:
    rec = find(ZFS_FUSE, "zpool upgrade -v")
    assert p.parse_probe(rec.stdout, "", 0).flavor is Flavor.ZFS_FUSE


def test_probe_other_versions() -> None:
    assert p.parse_probe("zfs-2.1.9-FreeBSD_g92e0d9d18\nzfs-kmod-2.1.9\n", "", 0).version == "2.1.9"
    assert p.parse_probe("zfs-0.8.3-1ubuntu12.18\nzfs-kmod-0.8.3-1ubuntu12.18\n", "", 0).raw_send
    old = p.parse_probe("zrelay-probe: no zfs version\nThis system supports ZFS pool feature flags.\n", "", 0)
    assert old.flavor is Flavor.OPENZFS and old.list_parsable and not old.raw_send


def test_probe_failures() -> None:
    with pytest.raises(e.ZfsUnavailable, match="not installed"):
        p.parse_probe("zrelay-probe: no zfs\n", "", 127, host="nas9")
    with pytest.raises(e.PermissionDenied):
        p.parse_probe("", "sudo: a password is required\n", 1)
    rec = find(ZFS_FUSE, "zfs version")  # not the probe: no recognisable stdout
    with pytest.raises(e.ZfsUnsupported):
        p.parse_probe(rec.stdout, rec.stderr, rec.rc)
    with pytest.raises(e.ZfsUnavailable, match="cannot tell"):
        p.parse_probe("something else\n", "", 0)


# --- state: OpenZFS ---------------------------------------------------------------------------------


#: Columns added to the filesystem listing after the transcripts were recorded (see test_zfs_commands).
ADDED_COLUMNS = (c.SYNC_PROPERTY, "origin")


def as_recorded(argv: list[str]) -> list[str]:
    """A state listing's argv without ADDED_COLUMNS, as the transcripts recorded it."""
    def drop(word: str) -> str:
        parts = word.split(",")
        return ",".join(w for w in parts if w not in ADDED_COLUMNS) if c.SYNC_PROPERTY in parts else word
    return [drop(w) for w in argv]


def with_sync_column(text: str, values: dict[str, str] | None = None,
                     origins: dict[str, str] | None = None) -> str:
    """A recorded filesystem listing with the zrelay:sync and origin columns added: '-' (unset, as
    zfs prints a user property nobody set, and not a clone) unless ``values``/``origins`` name it."""
    def row(line: str) -> str:
        name = line.split("\t")[0]
        return f"{line}\t{(values or {}).get(name, '-')}\t{(origins or {}).get(name, '-')}\n"
    return "".join(row(line) for line in text.splitlines())


def openzfs_outputs(sync: dict[str, str] | None = None, origins: dict[str, str] | None = None) -> list[str]:
    fs, _, marks = c.list_state_argvs("tank", OZ, recursive=True)
    snaps = c.list_state_argvs("tank/data", OZ, recursive=True)[1]
    return [with_sync_column(out(OPENZFS, as_recorded(fs)), sync, origins), out(OPENZFS, snaps),
            out(OPENZFS, marks)]


def test_state_openzfs_reads_the_sync_property() -> None:
    states = p.parse_state(openzfs_outputs({"tank/data/child": "false"}), OZ, "tank", recursive=True)
    assert [states[n].sync_property for n in ("tank", "tank/data", "tank/data/child")] == [None, None, "false"]
    six = out(OPENZFS, as_recorded(c.list_state_argvs("tank", OZ, recursive=True)[0]))
    with pytest.raises(ValueError, match="tab-separated"):   # a listing without the column is not guessed at
        p.parse_state([six, ""], OZ, "tank", recursive=True)


def test_state_openzfs_reads_a_clones_origin() -> None:
    states = p.parse_state(openzfs_outputs(origins={"tank/data/child": "tank/data@manual-1"}), OZ, "tank",
                           recursive=True)
    assert [states[n].origin for n in ("tank", "tank/data", "tank/data/child")] == [None, None, "tank/data@manual-1"]


def test_state_openzfs_recursive() -> None:
    states = p.parse_state(openzfs_outputs(), OZ, "tank/data", recursive=True)
    assert list(states) == ["tank/data", "tank/data/child"]
    data = states["tank/data"]
    assert [s.name for s in data.snapshots] == ["zrelay_2026-11-22T10:00:00Z", "zrelay_2026-11-22T11:00:00Z",
                                                "manual-1"]
    assert data.snapshots[0].guid == 13105705387892830888
    assert [s.createtxg for s in data.snapshots] == [10, 11, 12]
    assert data.snapshots[0].creation == 1795370381
    assert data.snapshots[0].full_name == T1
    assert data.resume_token is None and not data.encrypted and data.exists
    assert [(b.full_name, b.guid, b.createtxg) for b in data.bookmarks] == [
        ("tank/data#zrelay_2026-11-22T10:00:00Z", 13105705387892830888, 10)]
    # a bookmark carries its snapshot's GUID
    assert data.bookmarks[0].guid == data.snapshots[0].guid
    child = states["tank/data/child"]
    assert [s.guid for s in child.snapshots] == [16469536253424325913, 17454423219262388961]
    assert child.bookmarks == ()


def test_state_openzfs_single_dataset_drops_children() -> None:
    states = p.parse_state(openzfs_outputs(), OZ, "tank/data", recursive=False)
    assert list(states) == ["tank/data"]
    assert len(states["tank/data"].snapshots) == 3


def test_state_includes_datasets_without_snapshots() -> None:
    states = p.parse_state(openzfs_outputs(), OZ, "tank", recursive=True)
    assert list(states) == ["tank", "tank/data", "tank/data/child"]
    assert states["tank"].snapshots == () and states["tank"].exists


def test_state_openzfs_without_bookmark_listing() -> None:
    states = p.parse_state(openzfs_outputs()[:2], OZ, "tank/data", recursive=False)
    assert states["tank/data"].bookmarks == ()


def test_state_resume_token_and_encryption() -> None:
    token = find(OPENZFS, quoting.quote(c.resume_token_argv("backup/data"))).stdout.strip()
    encryption = find(OPENZFS, "zfs list -H -p -o name,encryption,keystatus,encryptionroot -r backup/secret")
    _, algo, _, root = encryption.stdout.strip().split("\t")
    fs = (f"backup/data\t1\t{token}\t/backup/data\toff\t-\t-\t-\n"
          f"backup/data/%recv\t2\t-\t-\toff\t-\t-\t-\n"
          f"backup/secret\t3\t-\t/backup/secret\t{algo}\t{root}\t-\t-\n")
    states = p.parse_state([fs, ""], OZ, "backup/data", recursive=True)
    assert list(states) == ["backup/data"]
    assert states["backup/data"].resume_token == token
    secret = p.parse_state([fs, ""], OZ, "backup/secret", recursive=False)["backup/secret"]
    assert secret.encrypted and secret.resume_token is None


def test_state_openzfs_rejects_unexpected_columns() -> None:
    three_columns = find(OPENZFS, "zfs list -H -p -t snapshot -o name,guid,createtxg -r backup").stdout
    with pytest.raises(ValueError, match="tab-separated"):
        p.parse_state(["", three_columns], OZ, "backup/data", recursive=False)
    with pytest.raises(ValueError, match="number"):
        p.parse_state(["", f"{T1}\t8.80E\t16\t1\t0\t0\n"], OZ, "tank/data", recursive=False)
    with pytest.raises(ValueError):
        p.parse_state([""], OZ, "tank/data", recursive=False)


def test_state_guids_survive_send_receive_openzfs() -> None:
    src = {s.name: s.guid for s in p.parse_state(openzfs_outputs(), OZ, "tank/data", False)["tank/data"].snapshots}
    received = find(OPENZFS, "zfs list -H -p -t snapshot -o name,guid,createtxg -r backup").stdout
    for line in received.splitlines():
        name, guid, _ = line.split("\t")
        assert src[name.split("@")[1]] == int(guid)


# --- state: zfs-fuse ------------------------------------------------------------------------------


def fuse_state(root: str, recursive: bool, nth: int | None = None) -> dict[str, DatasetState]:
    (argv,) = c.list_state_argvs(root, FUSE, recursive)
    return p.parse_state([out(ZFS_FUSE, as_recorded(argv), nth)], FUSE, root, recursive)


def test_state_zfs_fuse_reads_the_sync_property() -> None:
    """zfs-fuse prints the property for every name, snapshots too (inherited); the datasets' count."""
    text = ("tank/a\ttype\tfilesystem\ntank/a\tguid\t1\ntank/a\tzrelay:sync\t-\n"
            "tank/a/b\ttype\tfilesystem\ntank/a/b\tguid\t2\ntank/a/b\tzrelay:sync\tfalse\n"
            "tank/a/b@s\ttype\tsnapshot\ntank/a/b@s\tguid\t3\ntank/a/b@s\tcreatetxg\t7\n"
            "tank/a/b@s\tzrelay:sync\tfalse\n")
    states = p.parse_state([text], FUSE, "tank/a", True)
    assert states["tank/a"].sync_property is None and states["tank/a/b"].sync_property == "false"
    assert [s.name for s in states["tank/a/b"].snapshots] == ["s"]


def test_state_zfs_fuse_recursive() -> None:
    states = fuse_state("tank/data", True)
    assert list(states) == ["tank/data", "tank/data/child"]
    data = states["tank/data"]
    assert [s.name for s in data.snapshots] == ["zrelay_2026-11-22T10:00:00Z", "zrelay_2026-11-22T11:00:00Z",
                                                "manual-1"]
    txgs = [s.createtxg for s in data.snapshots]
    assert txgs == sorted(txgs) and len(set(txgs)) == 3
    assert all(s.guid > 0 and s.creation > 1_700_000_000 for s in data.snapshots)
    assert data.resume_token is None and data.bookmarks == () and not data.encrypted
    # snapshot -r gives parent and child the same txg but different GUIDs
    child = states["tank/data/child"]
    assert child.snapshots[0].createtxg == data.snapshots[0].createtxg
    assert child.snapshots[0].guid != data.snapshots[0].guid


def test_state_zfs_fuse_single_dataset_drops_children() -> None:
    one = fuse_state("tank/data", False)
    assert list(one) == ["tank/data"]
    assert one["tank/data"].snapshots == fuse_state("tank/data", True)["tank/data"].snapshots


def test_state_zfs_fuse_names_with_spaces_and_guids_across_receive() -> None:
    src = fuse_state("tank/with space", True)["tank/with space"]
    dst = fuse_state("backup/with space", True)["backup/with space"]
    assert src.snapshots[0].full_name == "tank/with space@snap one"
    assert dst.snapshots[0].name == "snap one"
    assert src.snapshots[0].guid == dst.snapshots[0].guid
    assert src.snapshots[0].createtxg != dst.snapshots[0].createtxg


def test_state_zfs_fuse_target_after_receives() -> None:
    tank = fuse_state("tank/data", True)["tank/data"].by_guid()
    backup = fuse_state("backup/data", True, nth=0)["backup/data"]
    assert [s.name for s in backup.snapshots] == ["zrelay_2026-11-22T10:00:00Z", "zrelay_2026-11-22T11:00:00Z"]
    assert all(s.guid in tank for s in backup.snapshots)
    diverged = fuse_state("backup/data", True, nth=1)["backup/data"]
    assert diverged.newest is not None and diverged.newest.name == "target-only"
    assert diverged.newest.guid not in tank
    inc = fuse_state("backup/inc", False)["backup/inc"]
    assert [s.guid for s in inc.snapshots] == [s.guid for s in fuse_state("tank/data", False)["tank/data"].snapshots]


def test_state_zfs_fuse_rejects_bad_lines() -> None:
    with pytest.raises(ValueError):
        p.parse_state(["tank/data\tguid\n"], FUSE, "tank/data", False)
    with pytest.raises(ValueError, match="type"):
        p.parse_state(["tank/data\tguid\t1\n"], FUSE, "tank/data", False)
    with pytest.raises(ValueError, match="createtxg"):
        p.parse_state([f"{T1}\ttype\tsnapshot\n{T1}\tguid\t1\n"], FUSE, "tank/data", False)
    assert p.parse_state([""], FUSE, "tank/data", False) == {}


def test_parse_exists() -> None:
    assert p.parse_exists(out(ZFS_FUSE, c.exists_argv("tank/with space")), "tank/with space")
    assert not p.parse_exists("", "tank/x")


# --- send estimates and resume tokens ------------------------------------------------------------------


def estimate_records() -> list[Record]:
    return [r for r in OPENZFS if r.command.startswith("zfs send -nvP")]


def test_send_estimates_equal_sum_of_streams() -> None:
    recs = estimate_records()
    assert len(recs) == 6
    for rec in recs:
        streams = [line.split("\t") for line in rec.stdout.splitlines()
                   if line.startswith(("full\t", "incremental\t"))]
        assert streams, rec.command
        assert p.parse_send_estimate(rec.stdout) == sum(int(s[-1]) for s in streams)


def test_send_estimate_values() -> None:
    assert p.parse_send_estimate(find(OPENZFS, f"zfs send -nvP {T1}").stdout) == 8416880
    r = find(OPENZFS, f"zfs send -nvP -R {T2}")
    assert p.parse_send_estimate(r.stdout) == 12641472
    with pytest.raises(ValueError):
        p.parse_send_estimate("")
    with pytest.raises(ValueError):
        p.parse_send_estimate(find(ZFS_FUSE, f"zfs send -nvP {T1}").stdout)


def test_resume_token_contents() -> None:
    rec = next(r for r in estimate_records() if " -t " in r.command)
    info = p.parse_resume_token_contents(rec.stdout)
    snaps = {s.full_name: s for s in p.parse_state(openzfs_outputs(), OZ, "tank/data", False)["tank/data"].snapshots}
    assert info["toname"] == T2
    assert info["toguid"] == snaps[T2].guid
    assert info["fromguid"] == snaps[T1].guid
    assert info["object"] == 4 and info["offset"] == 0x1C0000 and info["bytes"] == 0x1E1F50
    assert set(info) == {"fromguid", "object", "offset", "bytes", "toguid", "toname"}
    assert p.parse_resume_token_contents("resume token contents:\n\tembedok\n\tx = 12\n")["embedok"] is True
    with pytest.raises(ValueError):
        p.parse_resume_token_contents(find(OPENZFS, f"zfs send -nvP {T1}").stdout)


def test_resume_token_from_stderr() -> None:
    token = find(OPENZFS, quoting.quote(c.resume_token_argv("backup/data"))).stdout.strip()
    truncated = next(r for r in OPENZFS if "head -c" in r.command and "receive -s" in r.command)
    assert p.resume_token_from_stderr(truncated.stderr) == token
    for rec in ZFS_FUSE:
        if "head -c" in rec.command:
            assert p.resume_token_from_stderr(rec.stderr) is None
    assert p.resume_token_from_stderr("zfs send -t $(id)") is None


# --- holds --------------------------------------------------------------------------------------------


def test_parse_holds() -> None:
    assert p.parse_holds(out(OPENZFS, c.holds_argv(T2))) == [(T2, "zrelay")]
    headed = "NAME  TAG     TIMESTAMP\ntank/a@s  zrelay  Sun Nov 22 17:59 2026\n"
    assert p.parse_holds(headed) == [("tank/a@s", "zrelay")]
    assert p.parse_holds("") == []
    with pytest.raises(ValueError):
        p.parse_holds("garbage\n")


def test_parse_userrefs_zfs_fuse() -> None:
    assert p.parse_userrefs(out(ZFS_FUSE, c.userrefs_argv(T2))) == {T2: 1}


# --- errors -------------------------------------------------------------------------------------------

O, F = "openzfs-2.3", "zfs-fuse"
S = "zfs send"

# (flavor, start of the recorded command, nth failing match, expected class)
ERROR_CASES: list[tuple[str, str, int, type[e.ZfsError]]] = [
    (O, f"zfs destroy {T2}", 0, e.SnapshotHeld),
    (O, "zfs send -i tank/data#", 0, e.BadStream),
    (O, f"{S} {T1} | zfs receive -u backup/data", 0, e.DestinationExists),
    (O, f"{S} -i {T1} tank/data@manual-1 | zfs receive -u backup/data", 0, e.DestinationModified),
    (O, f"{S} -i {T1} {T2} | zfs receive -u backup/nonexistent/deep", 0, e.DestinationMissing),
    (O, f"{S} tank/data@nope", 0, e.DatasetNotFound),
    (O, "zfs list -H -p -t snapshot -o name,guid tank/doesnotexist", 0, e.DatasetNotFound),
    (O, "zfs create backup/small", 0, e.QuotaExceeded),
    (O, "zfs receive -A backup/data", 0, e.NoResumableState),
    (F, "zfs version", 0, e.ZfsUnsupported),
    (F, "zfs snapshot tank/data@multi-a tank/data/child@multi-a", 0, e.ZfsUnsupported),
    (F, "zfs list -H -p -o name", 0, e.ZfsUnsupported),
    (F, "zfs list -H -t bookmark", 0, e.ZfsUnsupported),
    (F, "zfs get -H -p -o name,property,value guid,createtxg,creation -r -t snapshot", 0, e.ZfsUnsupported),
    (F, "zfs get -H -p -o name,property,value type,guid,createtxg,creation,referenced -r tank/doesnotexist", 0,
     e.DatasetNotFound),
    (F, "zfs get -H -p -o value receive_resume_token", 0, e.ZfsUnsupported),
    (F, "zfs list -H -o name tank/doesnotexist", 0, e.DatasetNotFound),
    (F, "zfs bookmark", 0, e.ZfsUnsupported),
    (F, f"{S} -nvP", 0, e.ZfsUnsupported),
    (F, f"{S} -t ", 0, e.ZfsUnsupported),
    (F, f"{S} -w ", 0, e.ZfsUnsupported),
    (F, "zfs holds -H", 0, e.ZfsUnsupported),  # message on stdout, rc 255
    (F, f"zfs destroy {T2}", 0, e.SnapshotHeldOrBusy),
    (F, f"zfs release zrelay {T2}", 0, e.NoSuchHold),
    (F, f"zfs hold zrelay {T2}", 0, e.HoldExists),
    (F, f"{S} {T1} | zfs receive backup/data", 0, e.DestinationExists),
    (F, f"{S} -i {T2} tank/data@manual-1 | zfs receive -s", 0, e.ZfsUnsupported),
    (F, f"{S} -I {T1} tank/data@manual-1 | zfs receive -v backup/data-I", 0, e.BaseMismatch),
    (F, f"{S} -i {T1} {T2} | zfs receive backup/data", 0, e.BaseMismatch),
    (F, "zfs rollback backup/data@zrelay_2026-11-22T11:00:00Z", 0, e.NewerSnapshotsExist),
    (F, f"{S} -i {T2} tank/data@manual-1 | zfs receive -u backup/data", 0, e.BaseMismatch),
    (F, f"{S} -i {T2} tank/data@manual-1 | zfs receive -F -u backup/data", 0, e.BaseMismatch),
    (F, f"{S} {T1} | zfs receive -F -u backup/data", 0, e.DestinationExists),
    (F, f"{S} {T1} | zfs receive backup/nonexistent/deep", 0, e.MissingParent),
    # zfs-fuse looks an incremental's base up by GUID anywhere in the pool when the
    # target is missing, and reports on whatever dataset it found (here backup/inc)
    (F, f"{S} -i {T1} {T2} | zfs receive backup/nonexistent/deep", 0, e.BaseMismatch),
    (F, f"{S} tank/data@nope", 0, e.DatasetNotFound),
    (F, f"{S} -i tank/data@nope {T2}", 0, e.DatasetNotFound),
    (F, f"{S} tank/doesnotexist@x", 0, e.DatasetNotFound),
    (F, "zfs destroy tank/data@nope", 0, e.DatasetNotFound),
    (F, "zfs rollback tank/data@nope", 0, e.DatasetNotFound),
    (F, "zfs snapshot tank/doesnotexist@x", 0, e.DatasetNotFound),
    (F, f"{S} {T1} | head -c 2000000 | zfs receive backup/trunc", 0, e.BadStream),
    (F, f"{S} {T1} | zfs receive -u backup/trunc-inc", 0, e.BadStream),
    (F, "dd if=/dev/urandom bs=1M count=4 status=none | zfs receive backup/garbage", 0, e.BadStream),
    (F, "zfs receive backup/empty < /dev/null", 0, e.BadStream),
    (F, "zfs create backup/small", 0, e.OutOfSpace),
    (F, f"{S} -i {T1} {T2} | zfs receive -u backup/mounted", 0, e.DestinationModified),
    (F, "zfs receive -A backup/data", 0, e.ZfsUnsupported),
    (F, "zfs create backup/busy &&", 0, e.DatasetBusy),
    (F, "zfs destroy backup/busy", 0, e.DatasetBusy),
    (F, "setpriv --reuid=65534 --regid=65534 --clear-groups zfs snapshot", 0, e.PermissionDenied),
    (F, "setpriv --reuid=65534 --regid=65534 --clear-groups zfs list", 0, e.PermissionDenied),
    (F, "zfs allow tank/data", 0, e.ZfsUnsupported),
]


def failing(flavor: str, prefix: str, nth: int) -> Record:
    recs = [r for r in load(flavor) if r.command.startswith(prefix) and r.rc != 0]
    assert len(recs) > nth, f"{flavor}: no failing record #{nth} starting {prefix!r}"
    return recs[nth]


@pytest.mark.parametrize(("flavor", "prefix", "nth", "cls"), ERROR_CASES,
                         ids=[f"{f}:{x[:60]}#{n}" for f, x, n, _ in ERROR_CASES])
def test_map_error_real_texts(flavor: str, prefix: str, nth: int, cls: type[e.ZfsError]) -> None:
    rec = failing(flavor, prefix, nth)
    err = p.map_error("nas1", rec.stderr, rec.rc, "some/ds", stdout=rec.stdout)
    assert type(err) is cls, (rec.command, rec.stderr or rec.stdout)
    assert err.host == "nas1" and err.dataset == "some/ds" and err.exit_status == rec.rc
    assert str(err).startswith("nas1: ")


def test_every_failure_in_both_transcripts_is_classified() -> None:
    """No real error text falls through to the plain ZfsError, except the two known non-zfs cases."""
    unclassified = []
    for rec in OPENZFS + ZFS_FUSE:
        if rec.rc == 0:
            continue
        err = p.map_error("h", rec.stderr, rec.rc, stdout=rec.stdout)
        if type(err) is e.ZfsError:
            unclassified.append((rec.command, rec.stderr))
    # zfs-fuse crashes (SIGABRT, "internal error: Invalid argument") on a send from a bookmark name
    assert [cmd for cmd, _ in unclassified] == [f"zfs send -i tank/data#zrelay_2026-11-22T10:00:00Z {T2} > /dev/null"]


def test_map_error_classes_are_the_documented_families() -> None:
    rec = failing(O, f"{S} -i {T1} {T2} | zfs receive -u backup/nonexistent/deep", 0)
    err = p.map_error("h", rec.stderr, rec.rc)
    assert isinstance(err, e.MissingParent) and isinstance(err, e.DestinationMissing)
    held = p.map_error("h", failing(F, f"zfs destroy {T2}", 0).stderr, 1)
    assert isinstance(held, e.SnapshotHeld) and isinstance(held, e.DatasetBusy)
    assert isinstance(p.map_error("h", "cannot receive new filesystem stream: out of space", 1), e.QuotaExceeded)


# Texts not reproduced in the transcripts, taken verbatim from OpenZFS's libzfs
# (libzfs_sendrecv.c, libzfs_util.c) and sudo.
SOURCE_TEXTS: list[tuple[str, type[e.ZfsError]]] = [
    ("cannot open 'backup/nonexistent': dataset does not exist\n"
     "cannot receive new filesystem stream: unable to restore to destination\n", e.MissingParent),
    ("cannot resume send: 'tank/data@b' used in the initial send no longer exists\n", e.NoResumableState),
    ("cannot resume send: 'tank/data@b' is no longer the same snapshot used in the initial send\n",
     e.NoResumableState),
    ("cannot resume send: resume token is corrupt (invalid format)\n", e.NoResumableState),
    ("cannot receive resume stream: destination 'backup/x' does not exist\n", e.DestinationMissing),
    ("cannot destroy 'tank/data': dataset is busy\n", e.DatasetBusy),
    ("cannot destroy 'tank/data': pool or dataset is busy\n", e.DatasetBusy),
    ("cannot create snapshot 'tank/data@x': permission denied\n", e.PermissionDenied),
    ("sudo: a password is required\n", e.PermissionDenied),
    ("The ZFS modules are not loaded.\nTry running '/sbin/modprobe zfs' as root to load them.\n",
     e.ZfsUnavailable),
    ("bash: line 1: zfs: command not found\n", e.ZfsUnavailable),
    ("cannot open 'nopool/x': no such pool\n", e.DatasetNotFound),
    ("warning: cannot send 'tank/data@b': Broken pipe\n", e.ZfsError),
    ("", e.ZfsError),
]


@pytest.mark.parametrize(("text", "cls"), SOURCE_TEXTS)
def test_map_error_source_texts(text: str, cls: type[e.ZfsError]) -> None:
    assert type(p.map_error("h", text, 1)) is cls


def test_map_error_killed_and_empty() -> None:
    err = p.map_error("h", "", None)
    assert type(err) is e.ZfsError and err.exit_status is None
    assert "h:" in str(err)


def test_is_not_found() -> None:
    for flavor, cmd in ((O, "zfs list -H -p -t snapshot -o name,guid tank/doesnotexist"),
                        (F, "zfs list -H -o name tank/doesnotexist"),
                        (F, quoting.quote(as_recorded(c.list_state_argvs("tank/doesnotexist", FUSE, True)[0])))):
        assert p.is_not_found(find(load(flavor), cmd).stderr)
    # a receive into a missing parent is not "the dataset I listed is absent"
    assert not p.is_not_found(failing(F, f"{S} {T1} | zfs receive backup/nonexistent/deep", 0).stderr)
    assert not p.is_not_found(failing(O, "zfs receive -A backup/data", 0).stderr)
