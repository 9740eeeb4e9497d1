"""Properties on replicas: the ``-o``/``-x`` of every receive, the fallback where zfs has none, the
probe field, volumes in the listings, and the inventory's ``properties:`` (job and target entry)."""

from __future__ import annotations

import pytest

from tests.fixtures.transcript import load
from zrelay import errors
from zrelay.actions import Action, ActionKind
from zrelay.engine.host_receiver import (FIXUP_REASON, sent_properties, stream_argvs, unsent_warning,
                                         with_fixup_warning)
from zrelay.errors import InvalidName
from zrelay.inventory import loads_inventory, validate_inventory_text
from zrelay.inventory.model import Endpoint, S3Ref
from zrelay.plan import Plan, PlanKind, SendStep, plan
from zrelay.status.survey import _state, _unstate
from zrelay.zfs import commands as c, parse
from zrelay.zfs.commands import ReceiveProperties
from zrelay.zfs.model import Capabilities, DatasetState, ReplicaProperties, Snapshot

OZ = Capabilities.openzfs("2.3.2")
FUSE = Capabilities.zfs_fuse("pool v23")
DEFAULT = ReplicaProperties()
SAFE_X = ("-x", "mountpoint", "-x", "sharenfs", "-x", "sharesmb")


def snap(ds: str, name: str, guid: int, txg: int) -> Snapshot:
    return Snapshot(ds, name, guid, txg)


# --- what one receive does ------------------------------------------------------------------


def test_a_filesystem_is_never_mounted_nor_at_the_sources_paths() -> None:
    assert c.receive_properties(DEFAULT, volume=False) == ReceiveProperties(
        {"canmount": "noauto"}, ("mountpoint", "sharenfs", "sharesmb"))


def test_without_sent_properties_nothing_is_excluded_but_canmount_still_holds() -> None:
    assert c.receive_properties(ReplicaProperties(send=False), volume=False) == ReceiveProperties(
        {"canmount": "noauto"}, ())


def test_a_volume_gets_nothing_a_volume_does_not_have() -> None:
    assert not c.receive_properties(DEFAULT, volume=True)
    props = ReplicaProperties(set={"compression": "zstd", "recordsize": "1M", "mountpoint": "/x"},
                              exclude=("atime", "com.example:tag"))
    assert c.receive_properties(props, volume=True) == ReceiveProperties({"compression": "zstd"},
                                                                          ("com.example:tag",))
    # and a filesystem nothing only volumes have
    assert c.receive_properties(ReplicaProperties(set={"volmode": "dev"}), volume=False).set == {
        "canmount": "noauto"}


def test_the_users_set_overrides_the_safe_defaults_and_is_never_also_excluded() -> None:
    props = ReplicaProperties(set={"mountpoint": "/srv/x", "canmount": "off"}, exclude=("com.example:t",))
    got = c.receive_properties(props, volume=False)
    assert got.set == {"canmount": "off", "mountpoint": "/srv/x"}
    assert got.exclude == ("sharenfs", "sharesmb", "com.example:t")


def test_below_the_top_the_users_set_is_inherited_from_the_top() -> None:
    """Each dataset of a recursive job is its own receive: -o mountpoint=/x on every child would put
    them all at /x; zfs receive -R -o excludes them below the top, and so does zrelay."""
    props = ReplicaProperties(set={"mountpoint": "/srv/x", "compression": "zstd", "canmount": "on"})
    got = c.receive_properties(props, volume=False, top=False)
    assert got.set == {"canmount": "on"}   # not inheritable: every dataset's own
    assert got.exclude == ("mountpoint", "sharenfs", "sharesmb", "compression")


def test_receive_argv_with_properties() -> None:
    props = c.receive_properties(ReplicaProperties(set={"compression": "zstd"}, exclude=("com.example:t",)),
                                 volume=False)
    assert c.receive_argv("backup/d", caps=OZ, props=props) == [
        "zfs", "receive", "-s", "-u", "-o", "canmount=noauto", "-o", "compression=zstd", *SAFE_X,
        "-x", "com.example:t", "backup/d"]
    assert c.receive_argv("backup/d", caps=OZ, props=ReceiveProperties()) == ["zfs", "receive", "-s", "-u",
                                                                              "backup/d"]
    with pytest.raises(errors.Unsupported, match="zfs-fuse cannot set properties at receive"):
        c.receive_argv("backup/d", caps=FUSE, props=props)
    for bad in (ReceiveProperties({"-o": "x"}), ReceiveProperties({"atime": "$(id)"}),
                ReceiveProperties({}, ("-F",)), ReceiveProperties({}, ("a b",))):
        with pytest.raises(InvalidName):
            c.receive_argv("backup/d", caps=OZ, props=bad)


def test_the_fallback_sets_canmount_first_then_inherits_then_sets() -> None:
    props = c.receive_properties(ReplicaProperties(set={"compression": "lzjb"}, exclude=("com.example:t",)),
                                 volume=False)
    assert c.replica_fixup_argvs("backup/d", props) == [
        ["zfs", "set", "canmount=noauto", "backup/d"],
        ["zfs", "inherit", "mountpoint", "backup/d"], ["zfs", "inherit", "sharenfs", "backup/d"],
        ["zfs", "inherit", "sharesmb", "backup/d"], ["zfs", "inherit", "com.example:t", "backup/d"],
        ["zfs", "set", "compression=lzjb", "backup/d"]]
    assert c.replica_fixup_argvs("backup/v", c.receive_properties(DEFAULT, volume=True)) == []
    with pytest.raises(InvalidName):
        c.inherit_argv("backup/d", "-r")


# --- the engine's argvs ---------------------------------------------------------------------


def test_every_receive_of_a_plan_gets_the_same_properties_and_the_send_carries_them() -> None:
    a, b, cc = snap("tank/d", "a", 1, 1), snap("tank/d", "b", 2, 2), snap("tank/d", "c", 3, 3)
    p = plan(DatasetState("tank/d", snapshots=(a, b, cc)), DatasetState.absent("backup/d"))
    argvs = stream_argvs(p, OZ, OZ, properties=DEFAULT)
    recv = ["zfs", "receive", "-s", "-u", "-o", "canmount=noauto", *SAFE_X, "backup/d"]
    assert argvs == [(["zfs", "send", "-p", "tank/d@a"], recv),
                     (["zfs", "send", "-p", "-I", "tank/d@a", "tank/d@c"], recv)]
    resume = Plan(PlanKind.RESUME, "tank/d", "backup/d", resume_token="1-abc-def")
    assert stream_argvs(resume, OZ, OZ, properties=DEFAULT) == [(["zfs", "send", "-t", "1-abc-def"], recv)]
    # a volume: no canmount, nothing only filesystems have
    assert stream_argvs(p, OZ, OZ, properties=DEFAULT, volume=True)[0][1] == ["zfs", "receive", "-s", "-u",
                                                                              "backup/d"]
    # send: false
    assert stream_argvs(p, OZ, OZ, properties=ReplicaProperties(send=False))[0] == (
        ["zfs", "send", "tank/d@a"], ["zfs", "receive", "-s", "-u", "-o", "canmount=noauto", "backup/d"])


def test_zfs_fuse_receives_plainly_and_sends_no_properties() -> None:
    """zfs-fuse takes no receive -o/-x, and a stopped `zfs send -p` there leaves its snapshots
    busy until the daemon restarts (seen on the lab: `zfs destroy` says "dataset is busy")."""
    a = snap("tank/d", "a", 1, 1)
    p = plan(DatasetState("tank/d", snapshots=(a,)), DatasetState.absent("backup/d"))
    assert stream_argvs(p, FUSE, FUSE, properties=DEFAULT) == [
        (["zfs", "send", "tank/d@a"], ["zfs", "receive", "-u", "backup/d"])]
    # to OpenZFS: nothing to exclude when nothing is sent
    assert stream_argvs(p, FUSE, OZ, properties=DEFAULT)[0][1] == [
        "zfs", "receive", "-s", "-u", "-o", "canmount=noauto", "backup/d"]
    assert sent_properties(DEFAULT, FUSE) == ReplicaProperties(send=False)
    assert sent_properties(DEFAULT, OZ) is DEFAULT
    assert unsent_warning("nas1", FUSE).startswith("warning: nas1 (zfs-fuse) sends without -p")


def test_one_warning_line_per_target_says_what_was_done_instead() -> None:
    def fixup(ds: str) -> Action:
        return Action(ActionKind.SET_PROPERTIES, "vault", ds, (f"zfs set canmount=noauto {ds}",),
                      reason=FIXUP_REASON + "set canmount=noauto and inherited mountpoint")
    actions = [Action(ActionKind.STREAM, "nas1", "backup/d"), fixup("backup/d"), fixup("backup/d/c")]
    out = with_fixup_warning(actions, "vault", FUSE, "backup/d")
    assert [a.report for a in out] == ["", (
        "warning: vault (zfs-fuse) cannot set properties at receive (no `zfs receive -o/-x`): set "
        "canmount=noauto and inherited mountpoint right after the full receive instead; below backup/d a "
        "dataset keeps the values it received despite the inherit (a zfs-fuse limit), and stays unmounted "
        "(canmount=noauto)"), ""]
    alone = with_fixup_warning(actions[:2], "vault", FUSE, "backup/d")[1].report
    assert alone.endswith("right after the full receive instead")
    assert with_fixup_warning(actions[:1], "vault", FUSE, "backup/d") == actions[:1]


# --- the probe and the listings ------------------------------------------------------------


def test_the_probe_says_which_zfs_takes_receive_o_and_x() -> None:
    assert OZ.receive_props and not FUSE.receive_props
    assert OZ.send_props and not FUSE.send_props
    rec = next(r for r in load("zfs-fuse") if r.command.startswith("sh -c"))
    assert not parse.parse_probe(rec.stdout, rec.stderr, rec.rc).receive_props
    assert parse.parse_probe("zfs-2.3.2-1\nzfs-kmod-2.3.2-1\n", "", 0).receive_props
    assert not parse.parse_probe("This system supports ZFS pool feature flags.\n", "", 0).receive_props


def test_volumes_are_told_from_filesystems_in_both_listings() -> None:
    def line(name: str, guid: int, mountpoint: str) -> str:
        values = {"name": name, "guid": str(guid), "mountpoint": mountpoint, "encryption": "off"}
        return "\t".join(values.get(column, "-") for column in c.FS_COLUMNS) + "\n"
    fs = line("tank/d", 1, "/tank/d") + line("tank/d/vol", 2, "-")
    states = parse.parse_state([fs, ""], OZ, "tank/d", recursive=True)
    assert not states["tank/d"].volume and states["tank/d/vol"].volume
    fuse = ("tank/d\ttype\tfilesystem\ntank/d\tguid\t1\n"
            "tank/d/vol\ttype\tvolume\ntank/d/vol\tguid\t2\n")
    states = parse.parse_state([fuse], FUSE, "tank/d", recursive=True)
    assert not states["tank/d"].volume and states["tank/d/vol"].volume
    assert _unstate(_state(states["tank/d/vol"])).volume   # the daemon's survey keeps it


# --- the inventory ---------------------------------------------------------------------------

HEAD = """\
all:
  hosts:
    nas1: {address: 192.0.2.1}
    vault: {address: 192.0.2.3}
zrelay:
  s3_targets:
    offsite: {bucket: some-bucket}
  jobs:
    - source: nas1:tank/data
"""


def inventory(*lines: str) -> str:
    return HEAD + "".join(f"      {line}\n" for line in lines)


def test_a_job_without_properties_sends_them_and_sets_nothing() -> None:
    job = loads_inventory(inventory("targets: [vault:backup/data]"), "inv.yml").jobs[0]
    assert job.properties == DEFAULT and job.properties_for(Endpoint("vault", "backup/data")) == DEFAULT


def test_job_properties_and_a_target_entry_replacing_the_keys_it_names() -> None:
    job = loads_inventory(inventory(
        "properties:",
        "  send: true",
        "  set: {compression: zstd, atime: off, copies: 2, com.example:note: a b}",
        "  exclude: [com.example:tag]",
        "targets:",
        "  - vault:backup/a",
        "  - {target: vault:backup/b, properties: {send: false, set: {mountpoint: /srv/b}}}",
        "  - target: s3:offsite",
        "    properties: {exclude: []}"), "inv.yml").jobs[0]
    whole = ReplicaProperties(True, {"compression": "zstd", "atime": "off", "copies": "2",
                                     "com.example:note": "a b"}, ("com.example:tag",))
    assert job.targets == (Endpoint("vault", "backup/a"), Endpoint("vault", "backup/b"), S3Ref("offsite"))
    assert job.properties_for(Endpoint("vault", "backup/a")) == whole
    assert job.properties_for(Endpoint("vault", "backup/b")) == ReplicaProperties(
        False, {"mountpoint": "/srv/b"}, ("com.example:tag",))
    assert job.properties_for(S3Ref("offsite")) == ReplicaProperties(True, whole.set, ())


def test_a_narrowed_job_keeps_its_targets_properties_and_its_top() -> None:
    inv = loads_inventory(inventory(
        "recursive: true",
        "targets: [{target: vault:backup/data, properties: {send: false}}]"), "inv.yml")
    job = inv.jobs[0]
    assert job.is_top("tank/data") and not job.is_top("tank/data/child")
    (narrow,) = inv.jobs_matching(["nas1:tank/data/child"])
    assert narrow.properties_for(Endpoint("vault", "backup/data/child")) == ReplicaProperties(send=False)
    assert not narrow.is_top("tank/data/child")   # its set: still belongs to tank/data's replica


@pytest.mark.parametrize("lines, where, message", [
    (["properties: {sned: true}"], "11:20", "unknown key 'sned' in job: properties (did you mean 'send'?)"),
    (["properties: {send: 1}"], "11:26", "job: properties.send: expected true or false"),
    (["properties: {set: [compression]}"], "11:25", "job: properties.set: expected a mapping"),
    (["properties: {set: {Compression: zstd}}"], "11:26", "property name 'Compression' is not valid"),
    (["properties: {set: {compression: $(id)}}"], "11:39", "has characters zrelay does not pass"),
    (["properties: {set: {compression: null}}"], "11:39", "expected a value such as zstd"),
    (["properties: {set: {volsize: 1G}}"], "11:26", "volsize cannot be given at receive"),
    (["properties: {exclude: mountpoint}"], "11:29", "expected a list of property names"),
    (["properties: {exclude: [canmount]}"], "11:30", "canmount cannot be excluded"),
    (["properties: {exclude: [a:b, a:b]}"], "11:35", "a:b is listed twice"),
    (["properties: {set: {atime: off}, exclude: [atime]}"], "11:49", "atime is both set and excluded"),
    (["targets: [{properties: {send: false}}]"], "10:17", "target entry has no 'target'"),
    (["targets: [{target: vault:backup/x, mount: true}]"], "10:42", "unknown key 'mount' in a target entry"),
    (["targets: [{target: vault:backup/x, properties: {set: {-x: 1}}}]"], "10:61",
     "property name '-x' is not valid"),
])
def test_every_problem_is_one_line_at_its_place(lines: list[str], where: str, message: str) -> None:
    if not any(line.startswith("targets") for line in lines):
        lines = ["targets: [vault:backup/data]", *lines]
    problems = validate_inventory_text(inventory(*lines), "inv.yml")
    assert len(problems) == 1, problems
    text = problems[0].render()
    assert text.startswith(f"inv.yml:{where}: ") and message in text, text


def test_a_full_restore_gets_the_same_rules_and_leaves_a_volume_alone() -> None:
    from zrelay.paths.s3restore import replica_fixup
    argv = replica_fixup("backup/d", ("-p",))
    assert argv[:3] == ["sh", "-c", c.FIXUP_SCRIPT]
    assert argv[3:] == ["sh", "backup/d", "canmount=noauto", "mountpoint", "sharenfs", "sharesmb"]
    assert replica_fixup("backup/d", ("-i",))[4:] == ["backup/d", "canmount=noauto"]
    assert '= volume ] && exit 0' in c.FIXUP_SCRIPT   # what a volume does not have is not touched


def test_inventory_list_json_shows_properties_allow_rollback_and_bandwidth() -> None:
    from zrelay.cli.inventory import list_json

    inv = loads_inventory("""\
all:
  hosts:
    nas1: {address: 192.0.2.1}
    vault: {address: 192.0.2.3}
zrelay:
  jobs:
    - source: nas1:tank/a
      allow_rollback: true
      bandwidth: 20M
      properties: {set: {compression: zstd}, exclude: ['com.example:tag']}
      targets: [vault:backup/a, {target: 'vault:backup/b', properties: {send: false}}]
""", "inv.yml")
    (job,) = list_json(inv)["_meta"]["zrelay"]["jobs"]
    assert job["properties"] == {"send": True, "set": {"compression": "zstd"}, "exclude": ["com.example:tag"]}
    assert job["target_properties"] == {"vault:backup/b": {"send": False, "set": {"compression": "zstd"},
                                                           "exclude": ["com.example:tag"]}}
    assert job["allow_rollback"] is True and job["bandwidth"] == 20 * 2**20   # M: MiB/s, as zfs and pv count
