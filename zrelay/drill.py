"""Restore drills, the pure part: names, which snapshot to drill, the tree checksum script, the verdict.

A drill proves a copy can be restored: a snapshot is received from a replica (or from
S3) into a scratch dataset, the received snapshot's GUID is compared with the source's,
and the file tree of both (read through read-only clones on each host) is hashed and
compared. No I/O here: zrelay.engine.drill runs what this module decides, and the dry run
prints the same command lines.

Safety: the scratch dataset gets a name no dataset has (checked before the receive), and
the drill only ever destroys what it created: the scratch (checked to hold only snapshots
the copy sent) and its two clones (checked to be clones of the drilled snapshots).
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

from zrelay.errors import UsageError
from zrelay.zfs.commands import ZFS, check_property_value, check_snapshot_name
from zrelay.zfs.model import DatasetState, Snapshot
from zrelay.zfs.names import check_dataset, check_remote_path

#: Results a drill records: the copy equals the source, it does not, or the drill could not tell.
OK, MISMATCH, FAILED = "ok", "mismatch", "failed"
RESULTS = (OK, MISMATCH, FAILED)
#: What every name a drill creates starts with (scratch datasets, clones, mount directories).
PREFIX = "zrelay-drill"
#: Where the clones are mounted (a new directory per clone, removed with it).
MOUNT_BASE = "/tmp"
#: Datasets a drill creates carry this user property, so a recursive job above them leaves them alone.
NOT_SYNCED = {"zrelay:sync": "false"}

# Fixed script: one checksum of a file tree or a volume, run remotely as
# ``sh -c TREE_SCRIPT zrelay-drill KIND PATH`` (KIND: fs or volume); data only as arguments.
# fs: two sha256 lines (metadata: type, mode, owner, size, path, link target of every entry, in
# byte order; contents: sha256sum of every file in that order) and the number of entries.
# volume: the sha256 of the device, waited for (udev creates it after the clone).
# Every stage that fails leaves its name in a file, so a failed find or an unreadable file is
# an error, never a checksum of less than the tree (POSIX sh has no pipefail).
TREE_SCRIPT = "; ".join((
    "export LC_ALL=C",
    "e=$(mktemp) || exit 3",
    "trap 'rm -f \"$e\"' EXIT",
    'if [ "$1" = volume ]; then n=0',
    'while [ ! -e "$2" ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done',
    '{ sha256sum < "$2" || echo "sha256sum $2" >>"$e"; } | sed "s/ .*//;s/^/content /"',
    "echo entries 1",
    'else cd -- "$2" || exit 3',
    "{ find . -xdev \\( -path ./.zfs -prune \\) -o \\( -type d -printf 'd %m %U:%G %p\\0' \\)"
    " -o \\( -type f -printf 'f %m %U:%G %s %p\\0' \\) -o \\( -type l -printf 'l %m %U:%G %p %l\\0' \\)"
    " -o -printf '%y %m %U:%G %p\\0' || echo find >>\"$e\"; }"
    ' | { sort -z || echo sort >>"$e"; } | { sha256sum || echo sha256sum >>"$e"; } | sed "s/ .*//;s/^/meta /"',
    '{ find . -xdev \\( -path ./.zfs -prune \\) -o -type f -print0 || echo find >>"$e"; }'
    ' | { sort -z || echo sort >>"$e"; } | { xargs -0 -r sha256sum -- || echo "reading files" >>"$e"; }'
    ' | { sha256sum || echo sha256sum >>"$e"; } | sed "s/ .*//;s/^/content /"',
    'echo "entries $(find . -xdev \\( -path ./.zfs -prune \\) -o -printf x | wc -c)"',
    "fi",
    'if [ -s "$e" ]; then echo "zrelay-drill: failed: $(tr "\\n" " " <"$e")" >&2; exit 4; fi',
))


@dataclass(frozen=True, slots=True)
class TreeSum:
    """One side's checksum: of the metadata and of the contents (a volume: the device's bytes)."""

    meta: str
    content: str
    entries: int

    @property
    def digest(self) -> str:
        """One sha256 for the whole tree (what two sides compare)."""
        return hashlib.sha256(f"meta {self.meta}\ncontent {self.content}\n".encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {"sha256": self.digest, "meta": self.meta, "content": self.content, "entries": self.entries}


def parse_tree(stdout: str) -> TreeSum:
    """TREE_SCRIPT's output → TreeSum; ValueError when it is not what the script prints."""
    fields: dict[str, str] = {}
    for line in stdout.splitlines():
        key, _, value = line.strip().partition(" ")
        if key in ("meta", "content", "entries"):
            fields[key] = value.strip()
    content = fields.get("content", "")
    if not re.fullmatch(r"[0-9a-f]{64}", content) or not fields.get("entries", "").isdigit():
        raise ValueError(f"unexpected checksum output: {stdout.strip()[:200]!r}")
    meta = fields.get("meta", "")
    if meta and not re.fullmatch(r"[0-9a-f]{64}", meta):
        raise ValueError(f"unexpected checksum output: {stdout.strip()[:200]!r}")
    return TreeSum(meta, content, int(fields["entries"]))


# --------------------------------------------------------------------------- names


def _slug(text: str, limit: int = 40) -> str:
    """A job name as a dataset name component: letters, digits, '_', '-', '.' only."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "job"
    return slug[:limit].rstrip("-.") or "job"


def stamp(when: datetime) -> str:
    """``20261206T143000Z``: the drill's time in the names it creates (UTC)."""
    return when.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def scratch_name(parent: str, job: str, when: datetime, taken: Iterable[str] = ()) -> str:
    """The scratch dataset under ``parent``: unique per job and time, never one of ``taken``."""
    check_dataset(parent)
    base = f"{parent}/{PREFIX}-{_slug(job)}-{stamp(when)}"
    names = set(taken)
    name, n = base, 1
    while name in names:
        n += 1
        name = f"{base}-{n}"
    return check_dataset(name)


def clone_name(dataset: str, side: str) -> str:
    """Where the clone of a drilled snapshot goes: beside ``dataset``'s pool root for the
    source (a clone lives in its origin's pool), beside the scratch for the copy."""
    check_dataset(dataset)
    return check_dataset(f"{dataset}-{side}")


def source_clone_name(source_dataset: str, scratch: str) -> str:
    """The source side's clone: at the source pool's top, named after the scratch dataset."""
    pool = source_dataset.split("/", 1)[0]
    return check_dataset(f"{pool}/{scratch.rsplit('/', 1)[-1]}-src")


def mountpoint_for(clone: str) -> str:
    """A directory of its own for a clone (its last component is already unique)."""
    return check_remote_path(f"{MOUNT_BASE}/{clone.rsplit('/', 1)[-1]}")


# --------------------------------------------------------------------------- choosing


@dataclass(frozen=True, slots=True)
class Candidate:
    """A snapshot the copy can give back, with the source's snapshot of the same GUID."""

    name: str           # the name on the copy
    guid: int
    source: Snapshot    # the source's snapshot of that GUID (what the drill compares against)


def candidates(source: DatasetState, copy: Sequence[tuple[str, int]]) -> list[Candidate]:
    """Snapshots both the copy (``(name, guid)``, oldest first) and the source hold, by GUID,
    oldest first: only those can be proved equal to their source."""
    by_guid = source.by_guid()
    return [Candidate(name, guid, by_guid[guid]) for name, guid in copy if guid in by_guid]


def choose(common: Sequence[Candidate], copy: Sequence[tuple[str, int]], wanted: str | None,
           rng: random.Random | None, where: str, source: str) -> Candidate:
    """The snapshot to drill: ``wanted`` by name, else one at random (``rng``), else the newest common.
    UsageError (exit 2) when the copy has no such snapshot or the source no longer has it."""
    if wanted is not None:
        match = next((c for c in common if c.name == wanted), None)
        if match is not None:
            return match
        if any(name == wanted for name, _ in copy):
            raise UsageError(f"{where}@{wanted} is not on the source {source} (no snapshot with its GUID): "
                             "a drill compares with the source, so it can only drill a snapshot both hold")
        raise UsageError(f"{where} has no snapshot @{wanted}"
                         + (f" (it has {', '.join('@' + n for n, _ in copy[-5:])}"
                            + (" …" if len(copy) > 5 else "") + ")" if copy else ""))
    if not common:
        raise UsageError(f"{where} holds no snapshot the source {source} still has: nothing to drill")
    if rng is not None:
        return rng.choice(list(common))
    return common[-1]


# --------------------------------------------------------------------------- commands


def send_argv(snapshot: str) -> list[str]:
    """A full stream of exactly one snapshot (no properties: the drill compares data, and a
    stopped ``send -p`` leaves zfs-fuse's snapshots busy)."""
    return [ZFS, "send", check_snapshot_name(snapshot)]


def receive_argv(scratch: str) -> list[str]:
    """Into the new scratch dataset, not mounted, never forced (it must not exist)."""
    return [ZFS, "receive", "-u", check_dataset(scratch)]


def clone_argv(snapshot: str, clone: str, mountpoint: str | None) -> list[str]:
    """A read-only clone to read the snapshot's tree through (a volume's: no mountpoint)."""
    argv = [ZFS, "clone"]
    props = {"readonly": "on", **NOT_SYNCED}
    if mountpoint is not None:
        props = {"mountpoint": mountpoint, **props}
    for key, value in props.items():
        argv += ["-o", f"{key}={check_property_value(key, value)}"]
    return [*argv, check_snapshot_name(snapshot), check_dataset(clone)]


def tree_argv(path: str, volume: bool) -> list[str]:
    """TREE_SCRIPT over a mounted clone's directory, or a volume clone's device."""
    return ["sh", "-c", TREE_SCRIPT, PREFIX, "volume" if volume else "fs", check_remote_path(path)]


def device_of(clone: str) -> str:
    return f"/dev/zvol/{check_dataset(clone)}"


def origin_argv(clone: str) -> list[str]:
    """What is checked before a clone is destroyed: its origin."""
    return [ZFS, "get", "-H", "-o", "value", "origin", check_dataset(clone)]


def destroy_argv(dataset: str, recursive: bool) -> list[str]:
    """``zfs destroy [-r]`` of exactly one dataset the drill created (never ``-R``, never a snapshot)."""
    return [ZFS, "destroy", *(["-r"] if recursive else []), check_dataset(dataset)]


def rmdir_argv(path: str) -> list[str]:
    """The clone's mount directory, once it is unmounted (rmdir: only ever an empty directory)."""
    return ["rmdir", "--", check_remote_path(path)]


@dataclass(frozen=True, slots=True)
class Step:
    """One command of a drill as the dry run prints it and the drill runs it."""

    what: str       # restore | clone | checksum | check | destroy | rmdir
    host: str
    line: str       # the exact remote command line ("" for a restore from S3: see ``detail``)
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"step": self.what, "host": self.host, "command": self.line, "detail": self.detail}


# --------------------------------------------------------------------------- the verdict


def verdict(source_guid: int, received_guid: int | None, source_tree: TreeSum | None,
            copy_tree: TreeSum | None) -> tuple[str, str]:
    """(result, why) from what was compared: both GUIDs and both tree checksums must agree."""
    if received_guid is None:
        return FAILED, "the scratch dataset holds no snapshot after the restore"
    if received_guid != source_guid:
        return MISMATCH, f"received GUID {received_guid} is not the source's {source_guid}"
    if source_tree is None or copy_tree is None:
        return FAILED, "a tree checksum is missing"
    if source_tree.digest != copy_tree.digest:
        parts = []
        if source_tree.meta != copy_tree.meta:
            parts.append("names, types, modes, owners or sizes differ")
        if source_tree.content != copy_tree.content:
            parts.append("file contents differ")
        if source_tree.entries != copy_tree.entries:
            parts.append(f"{copy_tree.entries} entries, the source has {source_tree.entries}")
        return MISMATCH, "tree checksum differs from the source's: " + "; ".join(parts or ["digests differ"])
    return OK, f"GUID {received_guid} and tree sha256 {copy_tree.digest[:16]}… equal the source's"


@dataclass
class Evidence:
    """What one drill did and found: what the store records and ``--json`` prints."""

    job: str
    copy: str                        # the job's target drilled: host:dataset or s3:NAME
    source: str                      # host:dataset of the source
    scratch: str                     # host:dataset the copy was restored into
    snapshot: str = ""               # its name on the copy
    source_guid: int | None = None
    received_guid: int | None = None
    started: float = 0.0
    finished: float | None = None
    result: str = FAILED
    message: str = ""
    source_tree: dict[str, Any] | None = None
    copy_tree: dict[str, Any] | None = None
    kept: bool = False               # the scratch was left for inspection (--keep)
    cleanup: list[str] = field(default_factory=list)   # what could not be cleaned up, if anything
    bytes: int = 0
    steps: list[Step] = field(default_factory=list)
    dataset: str = ""                # the dataset's path below the job's source ("": the source itself)
    round: float = 0.0               # when the drill of the copy began: one value for a whole tree
    excluded: list[str] = field(default_factory=list)  # datasets of the tree left alone, with why

    @property
    def detail(self) -> dict[str, Any]:
        """What was compared, for the store's ``detail`` column."""
        return {"source_guid": self.source_guid, "received_guid": self.received_guid,
                "source_tree": self.source_tree, "copy_tree": self.copy_tree, "scratch": self.scratch,
                "kept": self.kept, "cleanup": self.cleanup, "bytes": self.bytes, "message": self.message,
                "dataset": self.dataset, "round": self.round or self.started}

    def to_dict(self) -> dict[str, Any]:
        return {"job": self.job, "copy": self.copy, "source": self.source, "scratch": self.scratch,
                "snapshot": self.snapshot, "guid": self.source_guid, "received_guid": self.received_guid,
                "started_at": self.started, "finished_at": self.finished, "result": self.result,
                "message": self.message, "source_tree": self.source_tree, "copy_tree": self.copy_tree,
                "kept": self.kept, "cleanup": self.cleanup, "bytes": self.bytes, "dataset": self.dataset,
                "excluded": self.excluded, "commands": [s.to_dict() for s in self.steps]}


def last_drill_field(row: dict[str, Any] | None) -> dict[str, Any] | None:
    """``status --json``'s ``last_drill`` from a stored drill (None: never drilled)."""
    if row is None:
        return None
    return {"when": row["finished"] or row["started"], "snapshot": row["snapshot"], "result": row["result"],
            "message": row.get("message", "")}
