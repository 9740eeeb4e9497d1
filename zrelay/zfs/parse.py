"""Every zfs output zrelay reads is parsed here; every zfs error text is classified here.

The texts come from real hosts: tests/fixtures/openzfs-2.3/transcript.txt
(OpenZFS 2.3.2) and tests/fixtures/zfs-fuse/transcript.txt (zfs-fuse 0.7,
recorded by record.sh beside it). The parsers are strict on purpose: a line
that does not have the expected shape raises ValueError rather than silently
dropping a snapshot the planner would then miss.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import signal
from typing import Callable, Iterable

from zrelay.errors import (
    BadStream,
    BaseMismatch,
    DatasetBusy,
    DatasetNotFound,
    DestinationExists,
    DestinationMissing,
    DestinationModified,
    HoldExists,
    InvalidName,
    MissingParent,
    NewerSnapshotsExist,
    NoResumableState,
    NoSuchHold,
    OutOfSpace,
    PermissionDenied,
    QuotaExceeded,
    SnapshotHeld,
    SnapshotHeldOrBusy,
    ZfsError,
    ZfsUnavailable,
    ZfsUnsupported,
)
from zrelay.zfs.commands import (
    BOOKMARK_COLUMNS,
    FS_COLUMNS,
    FUSE_PROPERTIES,
    PROBED_TOOLS,
    SNAPSHOT_COLUMNS,
    SYNC_PROPERTY,
    TOOL_MARK,
    check_resume_token,
    lists_with_get,
)
from zrelay.zfs.model import (Bookmark, Capabilities, DatasetState, Delegation, DelegationListing, Flavor, Identity,
                               Snapshot)
from zrelay.zfs.quoting import STAGE_MARK

# --- probe -----------------------------------------------------------------------

_OPENZFS_VERSION = re.compile(r"^zfs-(\d+\.\d+(?:\.\d+)?)", re.M)
_POOL_VERSION = re.compile(r"running ZFS pool version (\d+)")
_FEATURE_FLAGS = re.compile(r"supports ZFS pool feature flags")


def parse_probe(stdout: str, stderr: str, rc: int, *, host: str = "?") -> Capabilities:
    """Capabilities from the output of commands.probe_argv().

    OpenZFS prints ``zfs-2.3.2-…`` (``zfs version``, present since 0.8, so
    raw send, resume and bookmarks are all there). zfs-fuse has no ``zfs
    version``; its ``zpool upgrade -v`` says "running ZFS pool version 23".
    A pre-0.8 ZFS on Linux says "supports ZFS pool feature flags" and gets a
    conservative set. Anything else raises the mapped ZfsError.
    """
    m = _OPENZFS_VERSION.search(stdout)
    if m:
        return Capabilities.openzfs(m.group(1))
    m = _POOL_VERSION.search(stdout)
    if m:
        return Capabilities.zfs_fuse(f"pool v{m.group(1)}")
    if _FEATURE_FLAGS.search(stdout):
        return Capabilities(Flavor.OPENZFS, "pre-0.8", list_parsable=True, send_estimate=True,
                            resume=False, bookmarks=True, raw_send=False, holds=True,
                            compressed_send=False, large_blocks=True, embedded_data=True, written=True,
                            batch_destroy=True, send_props=True, delegation=True)
    if "zrelay-probe: no zfs" in stdout and "no zfs version" not in stdout:
        raise ZfsUnavailable(host, "zfs is not installed (or not on the PATH of this login)",
                             exit_status=rc)
    error = map_error(host, stderr if stderr.strip() else stdout, rc)
    if type(error) is ZfsError:
        text = (stderr.strip() or stdout.strip() or f"exit {rc}").splitlines()[0]
        raise ZfsUnavailable(host, f"cannot tell which ZFS this is: {text}", exit_status=rc)
    raise error


def parse_probed_tools(stdout: str) -> frozenset[str]:
    """The PROBED_TOOLS the capability probe found installed (its ``zrelay-tool: NAME`` lines)."""
    found = (line[len(TOOL_MARK):].strip() for line in stdout.splitlines() if line.startswith(TOOL_MARK))
    return frozenset(t for t in found if t in PROBED_TOOLS)


# --- state --------------------------------------------------------------------------


def _int(value: str, line: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"unexpected number {value!r} in zfs output line {line!r}") from None


def _fields(line: str, count: int) -> list[str]:
    parts = line.split("\t")
    if len(parts) != count:
        raise ValueError(f"expected {count} tab-separated fields in zfs output line {line!r}")
    return parts


def _in_scope(dataset: str, root: str, recursive: bool) -> bool:
    if "%" in dataset:  # hidden receive clones (ds/%recv) are not datasets of ours
        return False
    return dataset == root or (recursive and dataset.startswith(root + "/"))


class _Acc:
    """Collects one dataset's facts while lines arrive in any order."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.snapshots: list[Snapshot] = []
        self.bookmarks: list[Bookmark] = []
        self.resume_token: str | None = None
        self.encrypted = False
        self.sync_property: str | None = None
        self.volume = False
        self.origin: str | None = None

    def state(self) -> DatasetState:
        snaps = sorted(self.snapshots, key=lambda s: s.createtxg)  # stable: ties keep listing order
        marks = sorted(self.bookmarks, key=lambda b: b.createtxg)
        return DatasetState(name=self.name, exists=True, snapshots=tuple(snaps),
                            bookmarks=tuple(marks), resume_token=self.resume_token,
                            encrypted=self.encrypted, sync_property=self.sync_property,
                            volume=self.volume, origin=self.origin)


def parse_state(outputs: list[str], caps: Capabilities, root: str,
                recursive: bool) -> dict[str, DatasetState]:
    """Datasets under ``root`` (just ``root`` unless recursive) from list_state_argvs' stdouts.

    Every dataset present is included, with or without snapshots; snapshots
    and bookmarks are oldest first by createtxg. An absent root simply does
    not appear (the listing command fails; see is_not_found).
    """
    accs: dict[str, _Acc] = {}

    def acc(name: str) -> _Acc:
        if name not in accs:
            accs[name] = _Acc(name)
        return accs[name]

    if lists_with_get(caps):
        _parse_get_tree(outputs[0] if outputs else "", root, recursive, acc)
    else:
        if len(outputs) < 2:
            raise ValueError("OpenZFS state needs the filesystem and snapshot listings")
        _parse_fs_listing(outputs[0], root, recursive, acc)
        _parse_snapshot_listing(outputs[1], root, recursive, acc)
        if len(outputs) > 2:
            _parse_bookmark_listing(outputs[2], root, recursive, acc)
    return {name: a.state() for name, a in accs.items()}


class ListingMemo:
    """The states parsed from the last listing of each (root, recursive), kept while its text stays
    the same.

    Why: a long-lived process (the daemon) lists the same datasets every cycle, and when
    nothing changed the text is the same as last time, so parsing it again (hundreds of
    lines per listing, a hundred listings per cycle at 50 hosts) is wasted. The states are
    frozen, so the same objects serve every cycle; each call returns a dict of its own.
    Keyed by a SHA-256 of the outputs (their text is not kept); one entry per (root,
    recursive, dialect), so it holds at most what one cycle lists. One memo per host.
    """

    def __init__(self) -> None:
        self._last: dict[tuple[str, bool, bool, int], tuple[bytes, dict[str, DatasetState]]] = {}

    def parse_state(self, outputs: list[str], caps: Capabilities, root: str,
                    recursive: bool) -> dict[str, DatasetState]:
        """parse_state's answer for these outputs: the kept one when they are the same as last time."""
        digest = hashlib.sha256()
        for text in outputs:
            data = text.encode("utf-8", "surrogateescape")
            digest.update(len(data).to_bytes(8, "big"))
            digest.update(data)
        key = (root, recursive, lists_with_get(caps), len(outputs))
        seen = digest.digest()
        kept = self._last.get(key)
        if kept is not None and kept[0] == seen:
            return dict(kept[1])
        states = parse_state(outputs, caps, root, recursive)
        self._last[key] = (seen, states)
        return dict(states)


def _user_value(value: str) -> str | None:
    """A user property's value as listed: ``-`` (and nothing) is "not set"."""
    return None if value in ("-", "") else value


def _parse_fs_listing(text: str, root: str, recursive: bool, acc: Callable[[str], _Acc]) -> None:
    for line in text.splitlines():
        if not line.strip():
            continue
        f = dict(zip(FS_COLUMNS, _fields(line, len(FS_COLUMNS))))
        if not _in_scope(f["name"], root, recursive):
            continue
        a = acc(f["name"])
        token = f["receive_resume_token"]
        a.resume_token = None if token in ("-", "") else token
        a.encrypted = f["encryption"] not in ("off", "-", "")
        a.sync_property = _user_value(f[SYNC_PROPERTY])
        # the listing is of filesystems and volumes; a volume has no mountpoint, which zfs prints as "-"
        # (a filesystem's is a path, "none" or "legacy")
        a.volume = f["mountpoint"] == "-"
        a.origin = _user_value(f["origin"])   # "-": not a clone


def _parse_snapshot_listing(text: str, root: str, recursive: bool,
                            acc: Callable[[str], _Acc]) -> None:
    for line in text.splitlines():
        if not line.strip():
            continue
        f = dict(zip(SNAPSHOT_COLUMNS, _fields(line, len(SNAPSHOT_COLUMNS))))
        dataset, _, snap = f["name"].partition("@")
        if not snap or not _in_scope(dataset, root, recursive):
            continue
        acc(dataset).snapshots.append(Snapshot(dataset, snap, _int(f["guid"], line),
                                               _int(f["createtxg"], line), _int(f["creation"], line),
                                               _int(f["referenced"], line)))


def _parse_bookmark_listing(text: str, root: str, recursive: bool,
                            acc: Callable[[str], _Acc]) -> None:
    for line in text.splitlines():
        if not line.strip():
            continue
        f = dict(zip(BOOKMARK_COLUMNS, _fields(line, len(BOOKMARK_COLUMNS))))
        dataset, _, mark = f["name"].partition("#")
        if not mark or not _in_scope(dataset, root, recursive):
            continue
        acc(dataset).bookmarks.append(Bookmark(dataset, mark, _int(f["guid"], line),
                                               _int(f["createtxg"], line), _int(f["creation"], line)))


#: What the zfs-fuse listing's reader takes from each name, in this order (all of FUSE_PROPERTIES).
_RECORD = ("type", "guid", "createtxg", "creation", "referenced", SYNC_PROPERTY)
#: What a listing read line by line may lack, and stands for it (guid and createtxg it may not).
_MISSING = {"creation": "0", "referenced": "0", SYNC_PROPERTY: "-"}


def _get_records(text: str) -> Iterable[tuple[str, ...]] | None:
    """(name, *_RECORD values) per name, when ``text`` is exactly what ``zfs get`` prints for
    FUSE_PROPERTIES: each name's properties on consecutive lines in the order asked, three fields
    a line. None for anything else (the line-by-line reader then reads it, and names a bad
    line). Slicing in C instead of a loop per line: a daemon reads hundreds of these listings a
    cycle, ``status`` a thousand over a large fleet."""
    flat = text.replace("\n", "\t").split("\t")
    if flat[-1] == "":
        flat.pop()
    width = len(FUSE_PROPERTIES)
    stride = 3 * width
    count, rest = divmod(len(flat), stride)
    if rest or not count or flat[1::3] != list(FUSE_PROPERTIES) * count:
        return None
    names = flat[0::stride]
    if any(flat[3 * i::stride] != names for i in range(1, width)):
        return None
    column = {prop: flat[3 * i + 2::stride] for i, prop in enumerate(FUSE_PROPERTIES)}
    return zip(names, *(column[prop] for prop in _RECORD))


def _parse_get_tree(text: str, root: str, recursive: bool, acc: Callable[[str], _Acc]) -> None:
    """zfs-fuse: ``name<TAB>property<TAB>value`` lines, one line per property per name."""
    records = _get_records(text)
    if records is None:
        records = _get_records_by_line(text)
    prefix = root + "/"
    for name, kind, guid, txg, creation, referenced, sync in records:
        if kind == "snapshot":
            dataset, _, snap = name.partition("@")
            if not snap or "%" in dataset or not (dataset == root or (recursive and dataset.startswith(prefix))):
                continue
            try:
                snapshot = Snapshot(dataset, snap, int(guid), int(txg), int(creation), int(referenced))
            except ValueError:
                line = f"{name}: guid {guid}, createtxg {txg}, creation {creation}, referenced {referenced}"
                snapshot = Snapshot(dataset, snap, _int(guid, line), _int(txg, line), _int(creation, line),
                                    _int(referenced, line))
            acc(dataset).snapshots.append(snapshot)
        elif kind in ("filesystem", "volume"):
            if _in_scope(name, root, recursive):
                a = acc(name)
                a.sync_property = _user_value(sync)
                a.volume = kind == "volume"
        else:
            raise ValueError(f"zfs get output has no usable type for {name!r}: type {kind!r}")


def _get_records_by_line(text: str) -> list[tuple[str, ...]]:
    """_get_records for lines in any order or with properties missing; a line of another shape
    raises as _fields does, naming it."""
    props: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) != 3:
            if not line.strip():
                continue
            _fields(line, 3)   # raises, naming the line
        name, prop, value = parts
        found = props.get(name)
        if found is None:
            found = props[name] = {}
        found[prop] = value
    out: list[tuple[str, ...]] = []
    for name, p in props.items():
        if p.get("type") == "snapshot" and ("guid" not in p or "createtxg" not in p):
            missing = "guid" if "guid" not in p else "createtxg"
            raise ValueError(f"zfs get output lacks {missing!r} for {name!r}")
        out.append((name, *(p.get(prop, _MISSING.get(prop, "")) for prop in _RECORD)))
    return out


def parse_exists(stdout: str, dataset: str) -> bool:
    """True when ``zfs list -H -o name DS`` printed the dataset."""
    return any(line == dataset for line in stdout.splitlines())


# --- send estimates and resume tokens ----------------------------------------------------

_SIZE_LINE = re.compile(r"^size\s+(\d+)\s*$", re.M)


def parse_send_estimate(stdout: str) -> int:
    """Total bytes from ``zfs send -nvP`` (the ``size`` line; also for -I/-R and -t output)."""
    sizes = _SIZE_LINE.findall(stdout)
    if not sizes:
        raise ValueError("no 'size' line in zfs send -nvP output")
    return int(sizes[-1])


def parse_resume_token_contents(stdout: str) -> dict[str, int | str | bool]:
    """The nvlist ``zfs send -nvP -t TOKEN`` prints: toname, toguid, fromguid, bytes, …

    Hex numbers become ints; a bare key (a boolean nvpair) becomes True.
    """
    lines = stdout.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "resume token contents:")
    except StopIteration:
        raise ValueError("no 'resume token contents:' in zfs send -nvP -t output") from None
    out: dict[str, int | str | bool] = {}
    for line in lines[start + 1:]:
        text = line.strip()
        if not text or text.startswith("nvlist version"):
            continue
        if not line.startswith(("\t", " ")):
            break  # the "full"/"incremental"/"size" lines that follow
        key, sep, value = text.partition(" = ")
        if not sep:
            out[key] = True
        elif re.fullmatch(r"0x[0-9a-fA-F]+", value):
            out[key] = int(value, 16)
        elif re.fullmatch(r"\d+", value):
            out[key] = int(value)
        else:
            out[key] = value
    return out


_TOKEN_HINT = re.compile(r"zfs send -t\s+(\S+)")


def resume_token_from_stderr(stderr: str) -> str | None:
    """The token in OpenZFS's "A resuming stream can be generated … zfs send -t TOKEN" hint."""
    m = _TOKEN_HINT.search(stderr)
    if not m:
        return None
    try:
        return check_resume_token(m.group(1))
    except InvalidName:
        return None


# --- holds --------------------------------------------------------------------------------


def parse_holds(stdout: str) -> list[tuple[str, str]]:
    """(snapshot, tag) pairs from ``zfs holds -H`` (tabs) or the headed column form."""
    out: list[tuple[str, str]] = []
    for line in stdout.splitlines():
        if not line.strip():
            continue
        if "\t" in line:
            parts = line.split("\t")
        else:
            parts = line.split()
            if parts[:2] == ["NAME", "TAG"]:
                continue
        if len(parts) < 2 or "@" not in parts[0]:
            raise ValueError(f"unexpected zfs holds line {line!r}")
        out.append((parts[0], parts[1]))
    return out


def parse_dataset_values(stdout: str, prop: str) -> dict[str, int | None]:
    """One numeric property per dataset from ``zfs get -H -p -o name,property,value PROP``.

    Snapshot and bookmark lines (zfs-fuse cannot leave them out) are dropped;
    a value of ``-`` (not applicable) becomes None.
    """
    out: dict[str, int | None] = {}
    for line in stdout.splitlines():
        if not line.strip():
            continue
        name, got, value = _fields(line, 3)
        if got != prop or "@" in name or "#" in name or "%" in name:
            continue
        out[name] = None if value == "-" else _int(value, line)
    return out


def parse_userrefs(stdout: str) -> dict[str, int]:
    """Hold counts per snapshot from ``zfs get -H -p -o name,property,value userrefs``."""
    out: dict[str, int] = {}
    for line in stdout.splitlines():
        if not line.strip():
            continue
        name, prop, value = _fields(line, 3)
        if prop == "userrefs":
            out[name] = _int(value, line)
    return out


# --- delegated permissions (zfs allow) ------------------------------------------------------

#: ``---- Permissions on NAME ----…`` (OpenZFS, illumos: the name, a space, dashes up to column 70).
_ALLOW_HEADER = "---- Permissions on "
#: The older banner form (OpenSolaris 2008, early ZFS on Linux): ``Local permissions on (NAME)``,
#: one per section, between lines of dashes.
_ALLOW_BANNER = re.compile(r"^(Permission sets|Create time permissions|Local permissions|Descendent permissions"
                           r"|Local\+Descendent permissions) on \((.+)\)$")
_ALLOW_TITLES = {"Permission sets": "sets", "Create time permissions": "create", "Local permissions": "local",
                 "Descendent permissions": "descendent", "Local+Descendent permissions": "both"}


class _AllowAcc:
    """One dataset's section while its lines arrive."""

    def __init__(self, dataset: str) -> None:
        self.dataset = dataset
        self.grants: list[Delegation] = []
        self.sets: dict[str, frozenset[str]] = {}
        self.create: frozenset[str] = frozenset()

    def listing(self) -> DelegationListing:
        return DelegationListing(self.dataset, tuple(self.grants), tuple(self.sets.items()), self.create)


def _permission_list(text: str, line: str) -> frozenset[str]:
    perms = frozenset(text.split(","))
    if "" in perms:
        raise ValueError(f"unexpected permission list in zfs allow line {line!r}")
    return perms


def parse_allow(stdout: str) -> list[DelegationListing]:
    """Every section of ``zfs allow DATASET``: the dataset's own grants and its ancestors'.

    Both forms are read: OpenZFS's (a ``---- Permissions on NAME ---`` header, then titled
    blocks ``Permission sets:``, ``Create time permissions:``, ``Local permissions:``,
    ``Descendent permissions:``, ``Local+Descendent permissions:``, one tab-indented line each:
    ``@set perms``, ``perms``, ``user NAME perms``, ``group NAME perms``, ``everyone perms``) and
    the older one, whose every block has its own ``… permissions on (NAME)`` banner and whose
    ``everyone`` lines carry no word. Nothing delegated prints nothing. A line of another shape
    raises ValueError: a grant read wrongly would make ``zrelay allow --check`` lie.
    """
    sections: dict[str, _AllowAcc] = {}
    current: _AllowAcc | None = None
    block: str | None = None
    for line in stdout.splitlines():
        text = line.strip()
        if not text or set(text) == {"-"}:
            continue
        if line.startswith(_ALLOW_HEADER):
            name, space, dashes = line[len(_ALLOW_HEADER):].rpartition(" ")
            if not space or not name or set(dashes) - {"-"}:
                raise ValueError(f"unexpected zfs allow header {line!r}")
            current, block = sections.setdefault(name, _AllowAcc(name)), None
            continue
        banner = _ALLOW_BANNER.match(text)
        if banner and not line[0].isspace():
            current = sections.setdefault(banner.group(2), _AllowAcc(banner.group(2)))
            block = _ALLOW_TITLES[banner.group(1)]
            continue
        if not line[0].isspace():
            title = text[:-1] if text.endswith(":") else None
            if current is None or title not in _ALLOW_TITLES:
                raise ValueError(f"unexpected zfs allow line {line!r}")
            block = _ALLOW_TITLES[title]
            continue
        if current is None or block is None:
            raise ValueError(f"zfs allow line {line!r} outside any section")
        words = text.split()
        if block == "sets":
            if len(words) != 2 or not words[0].startswith("@"):
                raise ValueError(f"unexpected permission set line {line!r}")
            current.sets[words[0]] = _permission_list(words[1], line)
        elif block == "create":
            if len(words) != 1:
                raise ValueError(f"unexpected create time permissions line {line!r}")
            current.create |= _permission_list(words[0], line)
        else:
            whom: str | None
            if len(words) == 3 and words[0] in ("user", "group"):
                who, whom, perms = words[0], words[1], words[2]
            elif len(words) == 2 and words[0] == "everyone":
                who, whom, perms = "everyone", None, words[1]
            elif len(words) == 1:   # the older form prints everyone's grants without a word
                who, whom, perms = "everyone", None, words[0]
            else:
                raise ValueError(f"unexpected zfs allow grant line {line!r}")
            current.grants.append(Delegation(who, whom, local=block in ("local", "both"),
                                             descendent=block in ("descendent", "both"),
                                             permissions=_permission_list(perms, line)))
    return [acc.listing() for acc in sections.values()]


_ID_PART = re.compile(r"(\d+)(?:\(([^)]*)\))?")


def parse_clones(stdout: str) -> dict[str, tuple[str, ...]]:
    """Snapshot full name → the datasets cloned from it, from ``commands.clones_tree_argv``
    (snapshots without clones are left out)."""
    out: dict[str, tuple[str, ...]] = {}
    for line in stdout.splitlines():
        if not line.strip():
            continue
        name, value = _fields(line, 2)
        clones = tuple(c for c in value.split(",") if c and c != "-")
        if clones:
            out[name] = clones
    return out


def parse_datasets(stdout: str) -> dict[str, str | None]:
    """Each dataset of ``commands.datasets_argv`` with its ``zrelay:sync`` value (None: not set)."""
    out: dict[str, str | None] = {}
    for line in stdout.splitlines():
        if line.strip():
            name, value = _fields(line, 2)
            out[name] = _user_value(value)
    return out


def parse_sent_properties(stdout: str) -> frozenset[str]:
    """The permissions that setting the listed properties takes (commands.sent_properties_argv):
    a native property's own name, ``userprop`` for any user property (``module:name``)."""
    out: set[str] = set()
    for line in stdout.splitlines():
        if not line.strip():
            continue
        _, prop = _fields(line, 2)
        out.add("userprop" if ":" in prop else prop)
    return frozenset(out)


def parse_identity(stdout: str) -> Identity:
    """``id USER``: ``uid=1001(zrelay) gid=1001(zrelay) groups=1001(zrelay),27(sudo)`` (GNU, BSD)."""
    fields = dict(part.split("=", 1) for part in stdout.split() if "=" in part)
    uid = _ID_PART.fullmatch(fields.get("uid", ""))
    if uid is None or not uid.group(2):
        raise ValueError(f"unexpected id output {stdout.strip()!r}")
    groups: list[tuple[int, str | None]] = []
    for part in filter(None, fields.get("groups", fields.get("gid", "")).split(",")):
        m = _ID_PART.fullmatch(part)
        if m is None:
            raise ValueError(f"unexpected group {part!r} in id output {stdout.strip()!r}")
        groups.append((int(m.group(1)), m.group(2) or None))
    return Identity(uid.group(2), int(uid.group(1)), tuple(groups))


def parse_on_off(stdout: str, what: str) -> bool:
    """A boolean pool or dataset property from ``get -H -o value`` (``on``/``off``)."""
    value = stdout.strip()
    if value not in ("on", "off"):
        raise ValueError(f"unexpected {what} value {value!r}")
    return value == "on"


# --- errors ---------------------------------------------------------------------------------

_I = re.I | re.S

# First match wins: receive-specific texts come before the generic
# "does not exist" / "busy", because a failed pipeline's stderr also carries
# the sender's "Broken pipe" and zfs-fuse's "cannot open …" preamble.
_RULES: list[tuple[re.Pattern[str], type[ZfsError]]] = [
    (re.compile(r"permission denied|sudo: (a password is required|a terminal is required)"
                r"|sudo: .* not allowed|operation not permitted", _I), PermissionDenied),
    (re.compile(r"failed to initialize ZFS library|modules are not loaded|zrelay-probe: no zfs$"
                r"|zfs: (command )?not found|/dev/zfs", _I | re.M), ZfsUnavailable),
    (re.compile(r"checksum mismatch or incomplete stream|invalid backup stream|invalid stream"
                r"|bad magic number|failed to read from stream|incomplete stream"
                r"|stream has unsupported feature", _I), BadStream),
    (re.compile(r"has been modified\s+since most recent snapshot", _I), DestinationModified),
    (re.compile(r"most recent snapshot of .* does not\s+match incremental source", _I), BaseMismatch),
    (re.compile(r"destination '[^']*' exists|destination has snapshots|destination already exists"
                r"|must specify -F to overwrite", _I), DestinationExists),
    (re.compile(r"cannot receive (incremental|resume) stream: destination '[^']*' does not exist",
                _I), DestinationMissing),
    (re.compile(r"cannot receive new filesystem stream: dataset does not exist"
                r"|dataset does not exist.*cannot receive new filesystem stream: "
                r"unable to restore to destination"
                r"|parent of '[^']*' does not exist", _I), MissingParent),
    (re.compile(r"quota exceeded", _I), QuotaExceeded),
    (re.compile(r"out of space|no space left", _I), OutOfSpace),
    (re.compile(r"does not have any resumable receive state|resume token is corrupt"
                r"|used in the initial send no longer exists"
                r"|no longer the same snapshot used in the initial send"
                r"|incremental source [0-9xa-f]+ no longer exists", _I), NoResumableState),
    (re.compile(r"it's being held|is being held", _I), SnapshotHeld),
    (re.compile(r"cannot destroy '[^'@]*@[^']*': dataset is busy", _I), SnapshotHeldOrBusy),
    (re.compile(r"tag already exists on this dataset", _I), HoldExists),
    (re.compile(r"no such tag on this dataset", _I), NoSuchHold),
    (re.compile(r"more recent snapshots exist", _I), NewerSnapshotsExist),
    (re.compile(r"dataset is busy|pool or dataset is busy|target is busy|umount failed"
                r"|device or resource busy", _I), DatasetBusy),
    (re.compile(r"invalid option '|unrecognized command '|unrecognized option|invalid type '"
                r"|bad property list: invalid property|pyzfs\.py not found|too many arguments", _I),
     ZfsUnsupported),
    (re.compile(r"dataset does not exist|could not send .*: does not exist"
                r"|incremental source .* does not exist|no such pool|does not exist", _I),
     DatasetNotFound),
]


def error_class(text: str) -> type[ZfsError]:
    """The ZfsError subclass for a zfs error text (plain ZfsError when unrecognised)."""
    for pattern, cls in _RULES:
        if pattern.search(text):
            return cls
    return ZfsError


def map_error(host: str, stderr: str, exit_status: int | None, dataset: str | None = None,
              *, stdout: str = "") -> ZfsError:
    """The typed error for a failed zfs command, from the texts of both dialects.

    ``stdout`` is consulted only when stderr is empty: zfs-fuse prints some
    failures ("pyzfs.py not found") on stdout.
    """
    text = stderr if stderr.strip() else stdout
    return error_class(text)(host, text, dataset=dataset, exit_status=exit_status)


def is_not_found(stderr: str) -> bool:
    """True when a listing failed because the dataset (or pool) is absent."""
    return error_class(stderr) is DatasetNotFound


_STAGE = re.compile(rf"^{STAGE_MARK} (\d+) exit (\d+)\s*$", re.M)
_COUNT = re.compile(r"^\d+$", re.M)


def split_stage_report(stderr: str) -> tuple[dict[int, int], str]:
    """Exit status per guarded pipeline stage, and the stderr text without the markers
    and without `pv -n` progress numbers."""
    statuses = {int(m.group(1)): int(m.group(2)) for m in _STAGE.finditer(stderr)}
    text = _COUNT.sub("", _STAGE.sub("", stderr))
    return statuses, "\n".join(line for line in text.splitlines() if line.strip())


_GUARDED = re.compile(rf'\{{ (.*?); echo "{STAGE_MARK} (\d+) exit \$\?" >&2; \}}')


def stage_programs(command: str) -> dict[int, str]:
    """Stage number → the program it runs (``zfs send``, ``pv``, ``zstd`` …) in a guarded
    pipeline (quoting.guarded_pipeline), so a failed stage can be named."""
    out: dict[int, str] = {}
    for m in _GUARDED.finditer(command):
        try:
            words = shlex.split(m.group(1))
        except ValueError:
            continue
        if words[:2] == ["sudo", "-n"]:
            words = words[2:]
        if words:
            out[int(m.group(2))] = " ".join(words[:2]) if words[0] == "zfs" and len(words) > 1 else words[0]
    return out


def signal_name(number: int) -> str:
    """``KILL`` for 9: the name a user knows (``kill -KILL``), the number where it has none."""
    try:
        return signal.Signals(number).name.removeprefix("SIG")
    except ValueError:
        return str(number)


def process_end(program: str, host: str, exit_status: int | None, exit_signal: str | None = None,
                *, shell_status: bool = False) -> str:
    """How a process ended, in words: ``zfs send on nas1 was killed (signal KILL)``.

    ``exit_signal`` is what SSH reported (``KILL``); with ``shell_status`` an exit status
    above 128 is a shell's report of a stage killed by signal (status − 128).
    """
    if exit_signal:
        return f"{program} on {host} was killed (signal {exit_signal.removeprefix('SIG')})"
    if exit_status is None:
        return f"{program} on {host} ended without an exit status (its SSH session or connection closed)"
    if shell_status and exit_status > 128:
        return f"{program} on {host} was killed (signal {signal_name(exit_status - 128)})"
    return f"{program} on {host} exited with status {exit_status}"


#: A shell's own report of a killed pipeline stage: it says less than process_end does.
_SHELL_JOB_REPORT = re.compile(r"^(Killed|Terminated|Hangup|Aborted)$")


def without_job_reports(text: str) -> str:
    """``text`` without the shell's "Killed"-style lines."""
    return "\n".join(line for line in text.splitlines() if not _SHELL_JOB_REPORT.match(line.strip()))


def receive_failure_hint(target: str, after: DatasetState, base_guid: int | None,
                         source_guids: Iterable[int]) -> str | None:
    """Why a receive into ``target`` (host:dataset) failed, from a look at it afterwards;
    None when the look tells nothing new (the error's own hint stands).

    zfs's texts ("invalid backup stream", "incomplete stream") blame the stream, but two
    other things end a receive the same way: a snapshot taken on the target while the stream
    was received (the stream's base is no longer its newest snapshot), and on OpenZFS a
    resumable receive (``receive -s``) keeps the partial stream, so the target *has* changed.
    """
    known = set(source_guids)
    base_txg = next((t.createtxg for t in after.snapshots if t.guid == base_guid), None)
    meanwhile = [t for t in after.snapshots if base_txg is not None and t.createtxg > base_txg
                 and t.guid not in known]
    if not meanwhile:
        if after.resume_token:
            return (f"the partial receive is kept on {target} (receive_resume_token): the next sync "
                    f"resumes from it")
        return None
    names = ", ".join(f"@{t.name}" for t in meanwhile)
    was, it, them = ("was", "is", "it") if len(meanwhile) == 1 else ("were", "are", "them")
    return (f"not a transfer fault: {names} {was} taken on {target} while the stream was being "
            f"received, so the stream no longer applied; the target is otherwise unchanged, and the "
            f"next sync refuses it as diverged until {names} {it} gone (--rollback destroys {them})")
