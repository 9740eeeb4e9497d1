"""Every zfs command line zrelay runs is built here, as an argv.

Builders return argv lists; zrelay.zfs.quoting turns them into shell text.
Each builder validates every name with ``zrelay.zfs.names`` or the checks
below first (InvalidName otherwise), so no shell metacharacter and no
leading '-' can reach a command line: options only ever come from the
literals in this module, never from user strings. A feature the host's zfs
lacks is refused with errors.Unsupported before anything runs.

Two dialects are spoken (see tests/fixtures/*/transcript.txt for the real
outputs): OpenZFS 2.x, and zfs-fuse 0.7 (pool v23), which has no ``list -p``,
no ``get -t``, no ``send -n/-P/-t/-w``, no ``receive -s/-A``, no bookmarks and
takes one snapshot name per ``zfs snapshot``. ``receive -u`` is missing from
zfs-fuse's usage text but accepted and honoured.

The other command lines live beside this one: the helper tools a stream
passes through in zrelay.zfs.stream_filters, the source's ssh for direct
streams in zrelay.zfs.direct_ssh, the lines of a long-lived remote shell in
zrelay.zfs.shell_protocol.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from zrelay.errors import InvalidName, Unsupported
from zrelay.zfs.model import Capabilities, Flavor, ReplicaProperties
from zrelay.zfs.names import check_dataset, check_snapshot

ZFS = "zfs"

#: Helper tools zrelay uses when a host has them: progress (pv), buffering (mbuffer), wire and
#: S3 compression (zstd, lz4), S3 encryption (age). The capability probe reports them.
PROBED_TOOLS = ("pv", "mbuffer", "zstd", "lz4", "age")
#: Prefix of the probe's tool lines (see parse.parse_probed_tools).
TOOL_MARK = "zrelay-tool:"

# Fixed script: names the installed PROBED_TOOLS, then tells OpenZFS (``zfs version``) from
# zfs-fuse/older ZFS (pool version line of ``zpool upgrade -v``), all in one round trip.
# No user data in it; dash's `command -v` takes one name, so one test per tool.
PROBE_SCRIPT = (
    f'for t in {" ".join(PROBED_TOOLS)}; do command -v "$t" >/dev/null 2>&1 && echo "{TOOL_MARK} $t"; done; '
    'command -v zfs >/dev/null 2>&1 || { echo "zrelay-probe: no zfs"; exit 127; }; '
    "zfs version 2>/dev/null && exit 0; "
    'echo "zrelay-probe: no zfs version"; '
    "zpool upgrade -v 2>&1 | head -n 1"
)

#: The user property that opts a source dataset out of replication (zrelay.selection reads it);
#: the state listings carry it, so deciding costs no extra round trip.
SYNC_PROPERTY = "zrelay:sync"

# Columns of the state listings; parse.py reads them by position.
FS_COLUMNS = ("name", "guid", "receive_resume_token", "mountpoint", "encryption", "encryptionroot",
              SYNC_PROPERTY, "origin")
SNAPSHOT_COLUMNS = ("name", "guid", "createtxg", "creation", "used", "referenced")
BOOKMARK_COLUMNS = ("name", "guid", "createtxg", "creation")
FUSE_PROPERTIES = ("type", "guid", "createtxg", "creation", "referenced", SYNC_PROPERTY)

_TAG = re.compile(r"[A-Za-z0-9_.:][A-Za-z0-9_.:-]*")
_TOKEN = re.compile(r"[0-9a-f]+(?:-[0-9a-f]+)+")
_PROP_NAME = re.compile(r"[a-z][a-z0-9_]*|[a-z0-9_.][a-z0-9_.-]*:[a-z0-9_.:-]+")
_PROP_VALUE = re.compile(r"[A-Za-z0-9_.:/@+,=-](?:[A-Za-z0-9_.:/@+,= -]*[A-Za-z0-9_.:/@+,=-])?")


# --- name checks ---------------------------------------------------------------


def check_snapshot_name(full: str) -> str:
    """Validate ``dataset@snap`` (the full name) or raise InvalidName."""
    if not isinstance(full, str) or full.count("@") != 1:
        raise InvalidName(f"snapshot {full!r} must look like dataset@name")
    dataset, snap = full.split("@")
    check_dataset(dataset)
    check_snapshot(snap)
    return full


def check_bookmark_name(full: str) -> str:
    """Validate ``dataset#bookmark`` or raise InvalidName."""
    if not isinstance(full, str) or full.count("#") != 1 or "@" in full:
        raise InvalidName(f"bookmark {full!r} must look like dataset#name")
    dataset, mark = full.split("#")
    check_dataset(dataset)
    check_snapshot(mark)
    return full


def check_tag(tag: str) -> str:
    """Hold tags come first on the command line, so they must not look like options."""
    if not isinstance(tag, str) or not _TAG.fullmatch(tag) or len(tag) > 255:
        raise InvalidName(f"hold tag {tag!r} must be letters, digits, '_', '.', ':', '-' "
                          "and must not start with '-'")
    return tag


def check_resume_token(token: str) -> str:
    """A receive_resume_token is ``1-hex-hex-hex``; anything else is refused."""
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        raise InvalidName(f"resume token {token!r} is not a zfs resume token")
    return token


def _check_send_base(base: str) -> str:
    return check_bookmark_name(base) if "#" in base else check_snapshot_name(base)


def _is_fuse(caps: Capabilities | None) -> bool:
    return caps is not None and caps.flavor is Flavor.ZFS_FUSE


def lists_with_get(caps: Capabilities) -> bool:
    """True when state comes from one ``zfs get -H -p`` (no ``zfs list -p`` on this host)."""
    return caps.flavor is Flavor.ZFS_FUSE or not caps.list_parsable


# --- probing and listing ---------------------------------------------------------


def probe_argv() -> list[str]:
    """One command whose output names the ZFS flavour and version (see parse.parse_probe)."""
    return ["sh", "-c", PROBE_SCRIPT]


def datasets_argv() -> list[str]:
    """Every filesystem and volume on the host with its ``zrelay:sync`` value, one a line
    (``zrelay audit``: an opted-out dataset is not protected); zfs-fuse and OpenZFS alike take
    ``-t filesystem,volume`` and a user property in ``-o``."""
    return [ZFS, "list", "-H", "-o", f"name,{SYNC_PROPERTY}", "-t", "filesystem,volume"]


def exists_argv(dataset: str) -> list[str]:
    """Succeeds iff ``dataset`` exists (fails with 'dataset does not exist' otherwise)."""
    return [ZFS, "list", "-H", "-o", "name", check_dataset(dataset)]


def list_state_argvs(dataset: str, caps: Capabilities, recursive: bool) -> list[list[str]]:
    """Commands whose stdouts, in order, feed parse.parse_state.

    OpenZFS: filesystems (guid, resume token, encryption), snapshots, and
    bookmarks when supported, each with ``list -H -p``. zfs-fuse has no
    ``list -p`` (it prints guids as "8.80E") and no ``get -t``, so one
    ``get -H -p`` over the tree gives type/guid/createtxg/creation per name;
    ``-d 1`` keeps it to the dataset and its snapshots (children are dropped
    by the parser).
    """
    check_dataset(dataset)
    if lists_with_get(caps):
        depth = ["-r"] if recursive else ["-d", "1"]
        return [[ZFS, "get", "-H", "-p", "-o", "name,property,value", ",".join(FUSE_PROPERTIES),
                 *depth, dataset]]
    tree = ["-r"] if recursive else []
    snaps = ["-r"] if recursive else ["-d", "1"]
    argvs = [
        [ZFS, "list", "-H", "-p", "-t", "filesystem,volume", "-o", ",".join(FS_COLUMNS), *tree, dataset],
        [ZFS, "list", "-H", "-p", "-t", "snapshot", "-o", ",".join(SNAPSHOT_COLUMNS), *snaps, dataset],
    ]
    if caps.bookmarks:
        argvs.append([ZFS, "list", "-H", "-p", "-t", "bookmark", "-o", ",".join(BOOKMARK_COLUMNS),
                      *snaps, dataset])
    return argvs


def changed_property(caps: Capabilities) -> str:
    """The property that tells whether a dataset changed since its newest snapshot (changed_argv)."""
    return "written" if caps.written else "referenced"


def changed_argv(dataset: str, caps: Capabilities, recursive: bool) -> list[str]:
    """Has the live dataset changed since its newest snapshot? (``zfs receive`` refuses an incremental then)

    OpenZFS answers exactly with ``written``; zfs-fuse has no such property, so
    its ``referenced`` is read instead, for comparison with the newest
    snapshot's (see parse.parse_dataset_values). zfs-fuse also has no ``get
    -t``: snapshot lines come too, and the parser drops them.
    """
    kinds = [] if _is_fuse(caps) else ["-t", "filesystem,volume"]
    return [ZFS, "get", "-H", "-p", "-o", "name,property,value", *kinds, changed_property(caps),
            *(["-r"] if recursive else []), check_dataset(dataset)]


def holds_argv(snapshots: str | Sequence[str], *, caps: Capabilities | None = None,
               recursive: bool = False) -> list[str]:
    """``zfs holds -H``; zfs-fuse cannot list holds (its helper script is missing), see userrefs_argv."""
    if _is_fuse(caps):
        raise Unsupported("zfs-fuse cannot list holds (`zfs holds` fails: pyzfs.py not found); "
                          "use userrefs_argv for the hold count")
    return [ZFS, "holds", "-H", *(["-r"] if recursive else []), *_snapshot_names(snapshots, "holds_argv")]


def userrefs_tree_argv(dataset: str, recursive: bool) -> list[str]:
    """Hold counts of every snapshot of ``dataset`` (and descendants), one round trip (OpenZFS)."""
    return [ZFS, "get", "-H", "-p", "-o", "name,property,value", "-t", "snapshot", "userrefs",
            *(["-r"] if recursive else ["-d", "1"]), check_dataset(dataset)]


def clones_tree_argv(dataset: str, recursive: bool) -> list[str]:
    """Each snapshot's clones (``-`` or empty: none), one round trip (OpenZFS; parse.parse_clones)."""
    return [ZFS, "get", "-H", "-o", "name,value", "-t", "snapshot", "clones",
            *(["-r"] if recursive else ["-d", "1"]), check_dataset(dataset)]


def userrefs_argv(snapshot: str) -> list[str]:
    """Number of user holds on a snapshot; works on both dialects."""
    return [ZFS, "get", "-H", "-p", "-o", "name,property,value", "userrefs",
            check_snapshot_name(snapshot)]


# --- send and receive ---------------------------------------------------------------


#: Stream options a job may ask for (inventory ``send_options``), in command-line order.
SEND_OPTIONS = {"large_blocks": "-L", "embedded": "-e", "compressed": "-c"}


def stream_options(wanted: Sequence[str], src: Capabilities, dst: Capabilities) -> tuple[str, ...]:
    """The ``send_options`` both ends support, in SEND_OPTIONS order (see send_argv ``options``)."""
    have = {"large_blocks": src.large_blocks and dst.large_blocks,
            "embedded": src.embedded_data and dst.embedded_data,
            "compressed": src.compressed_send and dst.compressed_send}
    unknown = [w for w in wanted if w not in SEND_OPTIONS]
    if unknown:
        raise ValueError(f"unknown send option(s) {', '.join(unknown)}; known: {', '.join(SEND_OPTIONS)}")
    return tuple(name for name in SEND_OPTIONS if name in wanted and have[name])


def send_argv(snapshot: str, *, caps: Capabilities, base: str | None = None,
              intermediates: bool = False, raw: bool = False, resume_token: str | None = None,
              estimate: bool = False, props: bool = False, replicate: bool = False,
              options: Sequence[str] = ()) -> list[str]:
    """``zfs send``: full, ``-i``/``-I`` from a snapshot or ``-i`` from a bookmark, or ``-t`` resume.

    With ``resume_token`` the snapshot argument is ignored (the token names
    it, and its flags). ``estimate`` gives the ``-nvP`` dry run whose ``size``
    line parse.parse_send_estimate reads. ``options`` names SEND_OPTIONS
    (``-L``/``-e``/``-c``); a raw send carries blocks as stored, so they are
    left out with ``raw``. Raises Unsupported when ``caps`` lack the feature,
    before anything runs.
    """
    argv = [ZFS, "send"]
    if estimate:
        if not caps.send_estimate:
            raise Unsupported(f"{caps.flavor.value} has no `zfs send -nvP` size estimate")
        argv.append("-nvP")
    if resume_token is not None:
        if not caps.resume:
            raise Unsupported(f"{caps.flavor.value} cannot resume a send (no `zfs send -t`)")
        return [*argv, "-t", check_resume_token(resume_token)]
    check_snapshot_name(snapshot)
    if raw:
        if not caps.raw_send:
            raise Unsupported(f"{caps.flavor.value} has no raw send (`zfs send -w`)")
        argv.append("-w")
    else:
        for name in options:
            if name not in SEND_OPTIONS:
                raise ValueError(f"unknown send option {name!r}")
            argv.append(SEND_OPTIONS[name])
    if replicate:
        argv.append("-R")
    if props:
        argv.append("-p")
    if base is not None:
        _check_send_base(base)
        if "#" in base:
            if not caps.bookmarks:
                raise Unsupported(f"{caps.flavor.value} has no bookmarks to send from")
            if intermediates:
                raise Unsupported("`zfs send -I` cannot start from a bookmark; use -i")
        argv += ["-I" if intermediates else "-i", base]
    elif intermediates:
        raise ValueError("intermediates (-I) need a base snapshot")
    argv.append(snapshot)
    return argv


def estimate_argv(send: Sequence[str]) -> list[str]:
    """The ``-nvP`` dry run of an argv made by send_argv (OpenZFS only)."""
    argv = list(send)
    if argv[:2] != [ZFS, "send"]:
        raise ValueError(f"not a zfs send argv: {argv!r}")
    if "-nvP" in argv:
        return argv
    return [ZFS, "send", "-nvP", *argv[2:]]


def receive_argv(target: str, *, caps: Capabilities, force: bool = False,
                 resumable: bool | None = None, mount: bool = False,
                 props: ReceiveProperties | None = None) -> list[str]:
    """``zfs receive`` into ``target`` (a dataset, or ``dataset@snap`` to name the snapshot).

    ``-s`` (keep a resume token if interrupted) whenever the host supports it
    and ``resumable`` is not False; ``-u`` unless ``mount`` so a replica is
    not mounted over anything; ``-F`` only when asked, since it discards
    target changes; ``props`` as ``-o name=value`` and ``-x name`` (where the
    host has them, Unsupported otherwise: see replica_fixup_argvs).
    """
    if "@" in target:
        check_snapshot_name(target)
    else:
        check_dataset(target)
    argv = [ZFS, "receive"]
    if (resumable is None or resumable) and caps.resume:
        argv.append("-s")
    if force:
        argv.append("-F")
    if not mount:
        argv.append("-u")
    if props is not None and props:
        if not caps.receive_props:
            raise Unsupported(f"{caps.flavor.value} cannot set properties at receive "
                              "(no `zfs receive -o/-x`)")
        for word in _check_props(props.set):
            argv += ["-o", word]
        for name in props.exclude:
            argv += ["-x", check_property_name(name)]
    argv.append(target)
    return argv


def abort_receive_argv(target: str, *, caps: Capabilities | None = None) -> list[str]:
    """``zfs receive -A``: drop a partial receive (and its resume token)."""
    if caps is not None and not caps.resume:
        raise Unsupported(f"{caps.flavor.value} keeps no partial receives (`zfs receive -A` is missing)")
    return [ZFS, "receive", "-A", check_dataset(target)]


# --- other changes -------------------------------------------------------------------


def rollback_argv(snapshot: str, destroy_later: bool = True) -> list[str]:
    """``zfs rollback``; ``-r`` destroys the snapshots after ``snapshot`` (refused without it)."""
    return [ZFS, "rollback", *(["-r"] if destroy_later else []), check_snapshot_name(snapshot)]


def snapshot_argv(names: Sequence[str], recursive: bool, *,
                  caps: Capabilities | None = None) -> list[str]:
    """``zfs snapshot [-r] a@s b@s``: several names are atomic on OpenZFS; zfs-fuse takes one."""
    names = list(names)
    if not names:
        raise ValueError("snapshot_argv needs at least one name")
    if len(names) > 1 and _is_fuse(caps):
        raise Unsupported("zfs-fuse takes one snapshot per `zfs snapshot` (\"too many arguments\")")
    return [ZFS, "snapshot", *(["-r"] if recursive else []), *(check_snapshot_name(n) for n in names)]


def _snapshot_names(snapshots: str | Sequence[str], what: str) -> list[str]:
    names = [snapshots] if isinstance(snapshots, str) else list(snapshots)
    if not names:
        raise ValueError(f"{what} needs at least one snapshot")
    return [check_snapshot_name(n) for n in names]


def hold_argv(tag: str, snapshots: str | Sequence[str], *, recursive: bool = False) -> list[str]:
    """``zfs hold TAG SNAP…``: keeps a send base from being destroyed by someone else.

    Several snapshots in one command are held atomically (all or none).
    """
    return [ZFS, "hold", *(["-r"] if recursive else []), check_tag(tag),
            *_snapshot_names(snapshots, "hold_argv")]


def release_argv(tag: str, snapshots: str | Sequence[str], *, recursive: bool = False) -> list[str]:
    """``zfs release TAG SNAP…``: drop zrelay's hold once a newer base is held."""
    return [ZFS, "release", *(["-r"] if recursive else []), check_tag(tag),
            *_snapshot_names(snapshots, "release_argv")]


#: Permissions ``zfs allow`` may delegate for zrelay (zrelay.allow says why each is needed).
DELEGATED_PERMISSIONS = frozenset({"bookmark", "canmount", "create", "destroy", "hold", "mount", "receive",
                                   "release", "rollback", "send", "snapshot", "userprop"})
#: A native property's name, which is also the permission to set it (``zfs allow -u U compression``).
_NATIVE_PROPERTY = re.compile(r"[a-z][a-z0-9_]*")
#: Permissions that are no property and that zrelay never delegates (the right to delegate, among them).
_NEVER_DELEGATED = frozenset({"allow", "clone", "diff", "promote", "rename", "share", "groupquota", "groupused",
                              "userquota", "userused", "projectquota", "projectused", "groupobjquota",
                              "groupobjused", "userobjquota", "userobjused", "projectobjquota", "projectobjused"})
_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\$?")


def check_user(user: str) -> str:
    """A login name as ``zfs allow -u`` and ``id`` take it: never empty, never an option."""
    if not isinstance(user, str) or not _USER.fullmatch(user) or len(user) > 64:
        raise InvalidName(f"user {user!r} must be letters, digits, '_', '.', '-' (not first) "
                          "and may end in '$'")
    return user


def allow_argv(user: str, permissions: Sequence[str], dataset: str) -> list[str]:
    """``zfs allow -u USER p1,p2 DATASET``: delegate to one user, on DATASET and its descendants.
    Besides DELEGATED_PERMISSIONS a native property's name delegates setting it (at receive too)."""
    perms = list(permissions)
    unknown = sorted(p for p in set(perms) - DELEGATED_PERMISSIONS
                     if p in _NEVER_DELEGATED or not _NATIVE_PROPERTY.fullmatch(p))
    if not perms or unknown:
        raise ValueError(f"allow_argv: permissions must be some of {sorted(DELEGATED_PERMISSIONS)} or "
                         f"native property names, got {perms!r}")
    return [ZFS, "allow", "-u", check_user(user), ",".join(perms), check_dataset(dataset)]


def allow_show_argv(dataset: str) -> list[str]:
    """``zfs allow DATASET``: what is delegated there and on its ancestors (parse.parse_allow)."""
    return [ZFS, "allow", check_dataset(dataset)]


def sent_properties_argv(dataset: str, recursive: bool) -> list[str]:
    """The properties ``zfs send -p`` carries from ``dataset`` (and below): those set locally or
    received there, one ``name<TAB>property`` line each (``zrelay allow`` grants them on targets)."""
    return [ZFS, "get", "-H", "-o", "name,property", "-s", "local,received", "all",
            *(["-r"] if recursive else []), check_dataset(dataset)]


def identity_argv(user: str) -> list[str]:
    """``id USER``: the uid and groups a delegation to a group or uid reaches (parse.parse_identity)."""
    return ["id", check_user(user)]


def delegation_argv(pool: str) -> list[str]:
    """The pool's ``delegation`` property: when off, zfs ignores every ``zfs allow``."""
    return ["zpool", "get", "-H", "-o", "value", "delegation", check_dataset(pool)]


def create_argv(dataset: str, parents: bool = True,
                props: Mapping[str, str] | None = None) -> list[str]:
    """``zfs create [-p] [-o k=v]...``; property names and values are checked like names."""
    argv = [ZFS, "create"]
    if parents:
        argv.append("-p")
    for word in _check_props(props or {}):
        argv += ["-o", word]
    argv.append(check_dataset(dataset))
    return argv


def check_property_name(name: str) -> str:
    """A native (``compression``) or user (``module:name``) property name, or InvalidName."""
    if not isinstance(name, str) or not _PROP_NAME.fullmatch(name) or len(name) > 255:
        raise InvalidName(f"property name {name!r} is not valid (lower-case letters, digits, '_'; "
                          "a user property has a ':', e.g. com.example:tag)")
    return name


def check_property_value(name: str, value: str) -> str:
    """A property value zrelay passes on a command line (no quotes, no shell characters), or InvalidName."""
    if not isinstance(value, str) or not _PROP_VALUE.fullmatch(value) or len(value) > 8191:
        raise InvalidName(f"property value {value!r} for {name} has characters zrelay does not pass "
                          "(letters, digits, spaces inside and _ . : / @ + , = -)")
    return value


def _check_props(props: Mapping[str, str]) -> list[str]:
    """``k=v`` words for ``-o``/``set``; names and values are checked like names."""
    return [f"{check_property_name(key)}={check_property_value(key, value)}" for key, value in props.items()]


def set_argv(dataset: str, props: Mapping[str, str]) -> list[str]:
    """``zfs set k=v ... DATASET`` (one property per call on zfs-fuse, so callers pass one)."""
    if not props:
        raise ValueError("set_argv needs at least one property")
    return [ZFS, "set", *_check_props(props), check_dataset(dataset)]


# --- properties of replicas -------------------------------------------------------------

#: Every replica's own rule, at receive (``-o``) or right after a full receive (``zfs set``), for
#: sync and s3-restore alike: a replica that gets mounted (at boot, by `zfs mount -a`) is modified
#: by the mount itself, and the next incremental receive then fails with "modified since most
#: recent snapshot". noauto keeps it unmounted unless asked (`zfs mount` still works). Filesystems
#: only: a volume has no canmount.
REPLICA_PROPERTIES = {"canmount": "noauto"}
#: Kept from every stream that carries properties (``-x``): the replica inherits them from its
#: parent on the target, so it never takes the source host's paths or shares.
REPLICA_EXCLUDES = ("mountpoint", "sharenfs", "sharesmb")
#: Properties a volume does not have (zfs refuses ``-o``/``-x`` of them on one).
FILESYSTEM_ONLY = frozenset({
    "mountpoint", "canmount", "sharenfs", "sharesmb", "recordsize", "atime", "relatime", "exec",
    "setuid", "devices", "xattr", "acltype", "aclinherit", "aclmode", "snapdir", "quota", "refquota",
    "zoned", "overlay", "dnodesize", "nbmand", "vscan", "utf8only", "normalization", "casesensitivity",
    "filesystem_limit", "defcontext", "context", "fscontext", "rootcontext"})
#: Properties only a volume has.
VOLUME_ONLY = frozenset({"volsize", "volblocksize", "volmode"})
#: Properties zfs does not take at receive time (``-o``): fixed at creation, or the volume's size.
NOT_AT_RECEIVE = frozenset({"volsize", "version", "normalization", "utf8only", "casesensitivity",
                            "volblocksize", "encryption", "keyformat", "keylocation", "pbkdf2iters"})


@dataclass(frozen=True, slots=True)
class ReceiveProperties:
    """What one receive does to one replica's properties: ``-o name=value`` and ``-x name``."""

    set: Mapping[str, str] = field(default_factory=dict, hash=False)
    exclude: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.set or self.exclude)


def receive_properties(props: ReplicaProperties, *, volume: bool, top: bool = True) -> ReceiveProperties:
    """The ``-o``/``-x`` of one receive: zrelay's replica rules, then the job's ``properties:``.

    Every filesystem gets canmount=noauto (REPLICA_PROPERTIES) unless the job sets canmount; a
    stream with properties (``send``) loses REPLICA_EXCLUDES unless the job sets them. The job's
    ``set`` lands on its ``top`` dataset; below it (a recursive job's children, each received on
    its own) those names are excluded instead, so children inherit them as ``zfs receive -R -o``
    would have it (a child with its own mountpoint=/x would be mounted over its parent's). A
    volume gets nothing a volume does not have, a filesystem nothing only volumes have.
    """
    assign: dict[str, str] = {}
    exclude: list[str] = []
    if not volume:
        assign.update(REPLICA_PROPERTIES)
    if props.send:
        exclude += REPLICA_EXCLUDES
    for name, value in props.set.items():
        if top or name in REPLICA_PROPERTIES:
            assign[name] = value
        else:
            exclude.append(name)
    exclude += props.exclude
    drop = FILESYSTEM_ONLY if volume else VOLUME_ONLY
    assign = {k: v for k, v in assign.items() if k not in drop}
    kept: list[str] = []
    for name in exclude:
        if name not in assign and name not in drop and name not in kept:
            kept.append(name)
    return ReceiveProperties(assign, tuple(kept))


def replica_fixup_argvs(dataset: str, props: ReceiveProperties) -> list[list[str]]:
    """What a host without ``zfs receive -o/-x`` runs right after the receive instead: ``zfs set``
    for each ``-o`` and ``zfs inherit`` for each ``-x`` (one property a command, as zfs-fuse takes
    them). canmount first: inheriting a mountpoint remounts a dataset that could be mounted."""
    first = [name for name in props.set if name in REPLICA_PROPERTIES]
    argvs = [set_argv(dataset, {name: props.set[name]}) for name in first]
    argvs += [inherit_argv(dataset, name) for name in props.exclude]
    argvs += [set_argv(dataset, {name: value}) for name, value in props.set.items() if name not in first]
    return argvs


# Fixed script: the fixups of replica_fixup_argvs for a dataset whose type is not known when the
# command is built (s3-restore's full receive): nothing on a volume, which has none of these
# properties. The dataset is $1, then each property as name=value (set) or name (inherit);
# property names never hold '=', so the two cannot be mistaken. Arguments are never spliced in.
FIXUP_SCRIPT = ('ds=$1; shift; [ "$(zfs get -H -o value type "$ds")" = volume ] && exit 0; '
                'for p; do case $p in *=*) zfs set "$p" "$ds" ;; *) zfs inherit "$p" "$ds" ;; esac || exit 1; done')


def replica_fixup_script_argv(dataset: str, props: ReceiveProperties) -> list[str]:
    """replica_fixup_argvs as one command that leaves a volume alone (see FIXUP_SCRIPT)."""
    words = [argv[2] for argv in replica_fixup_argvs(dataset, props)]   # k=v or the name, in order
    return ["sh", "-c", FIXUP_SCRIPT, "sh", check_dataset(dataset), *words]


def inherit_argv(dataset: str, name: str) -> list[str]:
    """``zfs inherit NAME DATASET``: the dataset takes the property from its parent again."""
    return [ZFS, "inherit", check_property_name(name), check_dataset(dataset)]


def destroy_snapshot_argv(snapshot: str) -> list[str]:
    """Destroy exactly one snapshot: the '@' check makes destroying a dataset impossible here."""
    return [ZFS, "destroy", check_snapshot_name(snapshot)]


#: Snapshots per ``zfs destroy ds@a,b,…``: a command line stays far below any shell's limit.
DESTROY_BATCH = 100


def destroy_snapshots_argvs(dataset: str, names: Sequence[str], *,
                            caps: Capabilities | None = None) -> list[list[str]]:
    """Destroy the snapshots ``names`` of one dataset: ``zfs destroy ds@a,b,c`` in batches where the
    host takes a list (atomic per batch: all or none), else one ``zfs destroy ds@a`` each."""
    check_dataset(dataset)
    for name in names:
        check_snapshot_name(f"{dataset}@{name}")
    if caps is None or not caps.batch_destroy:
        return [destroy_snapshot_argv(f"{dataset}@{name}") for name in names]
    return [[ZFS, "destroy", f"{dataset}@{','.join(names[i:i + DESTROY_BATCH])}"]
            for i in range(0, len(names), DESTROY_BATCH)]


def destroy_bookmark_argv(bookmark: str) -> list[str]:
    """Destroy exactly one bookmark (``ds#name``); the '#' check makes destroying anything else impossible."""
    return [ZFS, "destroy", check_bookmark_name(bookmark)]


def hook_argv(command: str, timeout: float, environment: Mapping[str, str]) -> list[str]:
    """A user's hook command line, run by ``sh -c`` under ``timeout`` with ``environment`` set.

    The command is the user's own shell text (from the inventory), passed as one argument: it is
    never pasted into zrelay's command line, so its quoting is its own. Variable names are checked;
    their values are plain arguments. ``timeout -k`` ends it (and what it started in its process
    group) when it overruns, so a hung hook cannot hold the host's command shell.
    """
    for key in environment:
        if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", key):
            raise InvalidName(f"invalid environment variable name {key!r}")
    seconds = f"{max(timeout, 1):g}"
    return ["timeout", "-k", "5", seconds, "env", *(f"{k}={v}" for k, v in environment.items()),
            "sh", "-c", command]


def bookmark_argv(snapshot: str, bookmark: str, *, caps: Capabilities | None = None) -> list[str]:
    """``zfs bookmark ds@snap ds#mark`` (OpenZFS): an incremental base that costs no space."""
    if caps is not None and not caps.bookmarks:
        raise Unsupported(f"{caps.flavor.value} has no bookmarks")
    return [ZFS, "bookmark", check_snapshot_name(snapshot), check_bookmark_name(bookmark)]


# Fixed script: one `zfs bookmark` per (snapshot, bookmark) pair given as arguments, so a
# recursive job bookmarks all its datasets in one round trip. Names arrive as $1 $2 …,
# never spliced into the script; every pair is tried, the status says whether all worked.
BOOKMARKS_SCRIPT = ('rc=0; while [ "$#" -ge 2 ]; do zfs bookmark "$1" "$2" || rc=1; shift 2; done; '
                    'exit "$rc"')


def bookmarks_argv(pairs: Sequence[tuple[str, str]], *, caps: Capabilities | None = None) -> list[str]:
    """Bookmark several snapshots in one command (see BOOKMARKS_SCRIPT)."""
    if caps is not None and not caps.bookmarks:
        raise Unsupported(f"{caps.flavor.value} has no bookmarks")
    if not pairs:
        raise ValueError("bookmarks_argv needs at least one pair")
    if len(pairs) == 1:
        return bookmark_argv(*pairs[0])
    words: list[str] = []
    for snapshot, bookmark in pairs:
        words += [check_snapshot_name(snapshot), check_bookmark_name(bookmark)]
    return ["sh", "-c", BOOKMARKS_SCRIPT, "sh", *words]


def resume_token_argv(dataset: str) -> list[str]:
    """The receive_resume_token of one dataset ("-" when none), OpenZFS only."""
    return [ZFS, "get", "-H", "-p", "-o", "value", "receive_resume_token", check_dataset(dataset)]


# --- sizes and compression (progress, S3 size bounds, the wire policy) --------------------


def space_argv(snapshot: str) -> list[str]:
    """``referenced`` and ``compressratio`` of a snapshot: an upper bound of its full stream size.

    Both dialects have these (zfs-fuse has no ``send -nvP`` estimate).
    """
    return [ZFS, "get", "-H", "-p", "-o", "property,value", "referenced,compressratio",
            check_snapshot_name(snapshot)]


def compression_argv(dataset: str) -> list[str]:
    """``compression`` and ``compressratio`` of a dataset (both dialects), for the wire policy."""
    return [ZFS, "get", "-H", "-p", "-o", "property,value", "compression,compressratio",
            check_dataset(dataset)]
