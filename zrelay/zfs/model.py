"""Plain data describing what ZFS holds on a host: no I/O here.

Snapshots are identified by GUID, never by name: a name can be reused for a
different snapshot, a GUID cannot.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One snapshot of one dataset (``dataset@name``)."""

    dataset: str
    name: str
    guid: int
    createtxg: int
    creation: int = 0  # unix seconds
    referenced: int = 0  # bytes; approximates the size of a full stream where no estimate exists
    userrefs: int = 0    # user holds (any tag); OpenZFS listings only

    @property
    def full_name(self) -> str:
        return f"{self.dataset}@{self.name}"

    @property
    def ref(self) -> str:
        """How a user writes it after the dataset name: ``@name``."""
        return f"@{self.name}"


@dataclass(frozen=True, slots=True)
class Bookmark:
    """One bookmark (``dataset#name``): a send base that survives snapshot deletion."""

    dataset: str
    name: str
    guid: int
    createtxg: int
    creation: int = 0

    @property
    def full_name(self) -> str:
        return f"{self.dataset}#{self.name}"

    @property
    def ref(self) -> str:
        """How a user writes it after the dataset name: ``#name``."""
        return f"#{self.name}"


@dataclass(frozen=True, slots=True)
class DatasetState:
    """What one host says about one dataset at one moment.

    ``snapshots`` is ordered oldest first (by createtxg). ``exists`` is False
    when the dataset is absent; then every other field is empty.
    """

    name: str
    exists: bool = True
    snapshots: tuple[Snapshot, ...] = ()
    bookmarks: tuple[Bookmark, ...] = ()
    resume_token: str | None = None
    encrypted: bool = False
    sync_property: str | None = None   # its ``zrelay:sync`` user property (None: not set); zrelay.selection
    volume: bool = False   # a zvol (type volume): no mountpoint, no canmount
    origin: str | None = None   # a clone's origin snapshot (``pool/ds@snap``); None: not a clone (or not listed)

    @classmethod
    def absent(cls, name: str) -> "DatasetState":
        return cls(name=name, exists=False)

    @property
    def newest(self) -> Snapshot | None:
        return self.snapshots[-1] if self.snapshots else None

    def by_guid(self) -> dict[int, Snapshot]:
        return {s.guid: s for s in self.snapshots}

    def bookmark_by_guid(self) -> dict[int, Bookmark]:
        return {b.guid: b for b in self.bookmarks}


class Flavor(str, Enum):
    OPENZFS = "openzfs"
    ZFS_FUSE = "zfs-fuse"


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a host's zfs can do; probed once per host per run."""

    flavor: Flavor
    version: str = ""
    list_parsable: bool = False      # `zfs list -p`
    send_estimate: bool = False      # `zfs send -nvP`
    resume: bool = False             # `receive -s`, `send -t`
    bookmarks: bool = False
    raw_send: bool = False           # `send -w`
    holds: bool = True               # `zfs hold`/`release` and `zfs holds` to list them
    compressed_send: bool = False    # `send -c`
    large_blocks: bool = False       # `send -L`
    embedded_data: bool = False      # `send -e`
    written: bool = False            # the `written` property: bytes changed since the newest snapshot
    batch_destroy: bool = False      # `zfs destroy ds@a,b,c`: several snapshots of one dataset, atomically
    delegation: bool = False         # `zfs allow`: permissions delegated to ordinary users (zrelay allow)
    receive_props: bool = False      # `zfs receive -o name=value` / `-x name` (zfs-fuse: "invalid option")
    send_props: bool = False         # `zfs send -p` safely: zfs-fuse has it, but a -p send that is stopped
                                     # (SIGTERM) leaves its snapshots busy until the daemon restarts

    @classmethod
    def openzfs(cls, version: str) -> "Capabilities":
        return cls(Flavor.OPENZFS, version, list_parsable=True, send_estimate=True,
                   resume=True, bookmarks=True, raw_send=True, holds=True,
                   compressed_send=True, large_blocks=True, embedded_data=True, written=True,
                   batch_destroy=True, delegation=True, receive_props=True, send_props=True)

    @classmethod
    def zfs_fuse(cls, version: str = "0.7.0") -> "Capabilities":
        # zfs-fuse can hold and release, but cannot list holds (`zfs holds` needs a missing
        # helper), so zrelay could never find its own holds again: treated as no holds.
        # `zfs allow` fails the same way (pyzfs.py not found): no delegation either.
        return cls(Flavor.ZFS_FUSE, version, holds=False)


@dataclass(frozen=True, slots=True)
class SnapshotFilter:
    """Which source snapshots a job replicates: by name prefix and/or regex (both must match)."""

    prefix: str | None = None
    regex: str | None = None

    def matches(self, name: str) -> bool:
        if self.prefix is not None and not name.startswith(self.prefix):
            return False
        if self.regex is not None and re.search(self.regex, name) is None:
            return False
        return True


@dataclass(frozen=True, slots=True)
class Delegation:
    """One grant of a ``zfs allow`` listing: to whom, where it applies, what (permissions and @sets).

    ``local``: on the dataset it was granted on; ``descendent``: on everything below it
    (``zfs allow`` without ``-l``/``-d`` grants both).
    """

    who: str                 # "user", "group" or "everyone"
    name: str | None         # the user or group (a number when it has no name there); None: everyone
    local: bool
    descendent: bool
    permissions: frozenset[str]


@dataclass(frozen=True, slots=True)
class DelegationListing:
    """What ``zfs allow DATASET`` says was delegated on one dataset (the one asked, or an ancestor)."""

    dataset: str
    grants: tuple[Delegation, ...] = ()
    sets: tuple[tuple[str, frozenset[str]], ...] = ()   # permission sets defined here: (@name, members)
    create: frozenset[str] = frozenset()                # create time permissions (for a dataset's creator)


@dataclass(frozen=True, slots=True)
class Identity:
    """A login as ``id USER`` shows it: what a grant to a user, uid or group reaches."""

    user: str
    uid: int
    groups: tuple[tuple[int, str | None], ...] = ()     # (gid, name); the name is None when unknown


@dataclass(frozen=True, slots=True)
class ReplicaProperties:
    """What a job (or one of its targets) asks of its replicas' properties (inventory ``properties:``).

    ``send``: the stream carries the source's properties (``zfs send -p``); ``set``: given to the
    replica at receive (``-o name=value``); ``exclude``: kept from the stream (``-x name``), the
    replica inherits them from its parent on the target. The safe defaults zrelay adds on top
    (never mounted, never the source's mountpoint or shares) are in zfs.commands.receive_properties.
    """

    send: bool = True
    set: Mapping[str, str] = field(default_factory=dict, hash=False)
    exclude: tuple[str, ...] = ()

    def override(self, send: bool | None = None, set_: Mapping[str, str] | None = None,
                  exclude: tuple[str, ...] | None = None) -> "ReplicaProperties":
        """These properties with the keys a target entry names replaced (None: kept)."""
        return ReplicaProperties(self.send if send is None else send,
                                 dict(self.set) if set_ is None else dict(set_),
                                 self.exclude if exclude is None else exclude)
