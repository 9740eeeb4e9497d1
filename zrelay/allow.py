"""The ``zfs allow`` delegations that let zrelay log in as an ordinary user: pure, no I/O.

From the inventory zrelay knows every host's role for every dataset: a job's source, or the
parent of a job's target (a receive that creates the replica is checked on its parent, and the
replica inherits what is granted there). Each role needs exactly the permissions of the zfs
commands zrelay runs on that side (zrelay.zfs.commands; the kernel's checks are those of
OpenZFS's zfs_ioctl.c ``zfs_secpolicy_*``):

========== ====== ==================================================================================
permission side   why (the command zrelay runs)
========== ====== ==================================================================================
send       source ``zfs send`` full, ``-i``/``-I``, ``-t`` (resume), ``-w`` (raw), ``-nvP`` (estimate):
                  sync and s3-push
snapshot   source ``zfs snapshot [-r]``: ``sync --snapshot``, ``zrelay snapshot``, the daemon
hold       both   ``zfs hold zrelay:JOB:…``: the newest common snapshot survives other tools' pruning
release    both   ``zfs release``: the hold moves to the new base; ``zrelay release``; prune
bookmark   source ``zfs bookmark ds@s ds#s`` after each transfer (OpenZFS): a base that costs no space
receive    target ``zfs receive -s -u``, checked on the parent for a new replica
create     target the receive of a new replica (and, recursive jobs, of each child) creates it
mount      target checked with every receive, create and destroy (zrelay never mounts: ``-u``)
canmount   target ``zfs set canmount=noauto`` after each full receive (commands.REPLICA_PROPERTIES)
destroy    either ``keep:`` on that side: prune's ``zfs destroy ds@a,b`` and ``ds#b`` (+ mount, which
                  ZFS checks with every destroy); ``allow_rollback``: ``rollback -r`` destroys the
                  newer snapshots, ``receive -A`` the partial receive
rollback   target ``allow_rollback: true``: ``zfs rollback -r`` of ``sync --rollback``
========== ====== ==================================================================================

Properties (a job's ``properties:``, per target): the receive sets every property the stream
carries and every ``-o``, and clears every ``-x``, each checked as that property's permission
(``userprop`` for user properties). So a target is also granted the job's ``set`` and ``exclude``
names and, when properties travel (``send``, the default), those its source sets locally or
received (``zfs get -s local,received``, read from the source by ``--apply`` and ``--check``; the
printed plan says which source they come from).

Not needed, and so not granted: the listings (``zfs list``, ``get``, ``holds`` need no
delegation); holds are not properties.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from zrelay.errors import UsageError
from zrelay.inventory.model import Inventory, Job, suggest
from zrelay.inventory.policy import SOURCE_SIDE
from zrelay.zfs.commands import REPLICA_PROPERTIES, allow_argv
from zrelay.zfs.model import Delegation, DelegationListing, Identity

#: Every source: send its snapshots, take them, hold and release its base, bookmark what was sent.
SOURCE_PERMISSIONS = frozenset({"send", "snapshot", "hold", "release", "bookmark"})
#: Every target (granted on its parent): receive, which ZFS checks together with create and
#: mount; the replica properties set after a full receive; the base's hold.
TARGET_PERMISSIONS = frozenset({"receive", "create", "mount", "hold", "release", *REPLICA_PROPERTIES})
#: A side with a ``keep:`` policy: prune destroys snapshots and bookmarks (ZFS checks mount too).
PRUNE_PERMISSIONS = frozenset({"destroy", "mount"})
#: A job with ``allow_rollback: true``, on its targets: ``sync --rollback`` and ``--abort-partial``.
ROLLBACK_PERMISSIONS = frozenset({"rollback", "destroy", "mount"})

#: Users that need no delegation: ZFS lets them do everything.
PRIVILEGED_USERS = frozenset({"root"})


@dataclass(frozen=True, slots=True)
class Sent:
    """A source whose ``zfs send -p`` streams land below a grant's dataset."""

    host: str
    dataset: str
    recursive: bool

    def __str__(self) -> str:
        return f"{self.host}:{self.dataset}"


@dataclass(frozen=True, slots=True)
class Grant:
    """What one user needs on one dataset of one host, and which jobs need it."""

    host: str
    dataset: str
    permissions: frozenset[str]
    roles: tuple[str, ...]            # "source of JOB", "parent of target HOST:DS (JOB)", …
    parent_of: tuple[str, ...] = ()   # targets received below it (not a pool): --apply creates it if missing
    sent_from: tuple[Sent, ...] = ()  # sources whose properties (send -p) are received below it

    @property
    def sorted_permissions(self) -> tuple[str, ...]:
        """Alphabetical, as ``zfs allow`` lists them."""
        return tuple(sorted(self.permissions))

    def argv(self, user: str) -> list[str]:
        """``zfs allow -u USER PERMS DATASET`` (on the dataset and everything below it)."""
        return allow_argv(user, self.sorted_permissions, self.dataset)


@dataclass(frozen=True, slots=True)
class HostAllow:
    """One host's delegations, to the user zrelay logs in as there; or why it needs none."""

    host: str
    user: str | None
    grants: tuple[Grant, ...]
    skipped: str | None = None        # why nothing is delegated (root needs nothing)


def target_parent(dataset: str) -> str:
    """Where a target's permissions go: its parent (a pool's top dataset: itself)."""
    parent = dataset.rpartition("/")[0]
    return parent or dataset


def required(jobs: Iterable[Job]) -> list[Grant]:
    """Every (host, dataset) some job needs delegations on, with the union of the permissions,
    in the order jobs first name them."""
    perms: dict[tuple[str, str], set[str]] = {}
    roles: dict[tuple[str, str], list[str]] = {}
    below: dict[tuple[str, str], list[str]] = {}
    sent: dict[tuple[str, str], list[Sent]] = {}

    def need(host: str, dataset: str, wanted: Iterable[str], role: str, target: str | None = None,
             sends: Sent | None = None) -> None:
        key = (host, dataset)
        perms.setdefault(key, set()).update(wanted)
        if role not in roles.setdefault(key, []):
            roles[key].append(role)
        if target is not None and target not in below.setdefault(key, []):
            below[key].append(target)
        if sends is not None and sends not in sent.setdefault(key, []):
            sent[key].append(sends)

    for job in jobs:
        source = set(SOURCE_PERMISSIONS)
        if job.lifecycle.policy_for(SOURCE_SIDE) is not None:
            source |= PRUNE_PERMISSIONS
        need(job.source.host, job.source.dataset, source, f"source of {job.name}")
        for target in job.host_targets:
            wanted = set(TARGET_PERMISSIONS)
            if job.lifecycle.policy_for(str(target)) is not None:
                wanted |= PRUNE_PERMISSIONS
            if job.allow_rollback:
                wanted |= ROLLBACK_PERMISSIONS
            props = job.properties_for(target)
            # receive -o and -x, each checked as the property (user properties: userprop)
            wanted |= {"userprop" if ":" in name else name for name in (*props.set, *props.exclude)}
            parent = target_parent(target.dataset)
            role = (f"target {target} ({job.name})" if parent == target.dataset
                    else f"parent of target {target} ({job.name})")
            # a dataset below the pool's top may not exist yet: --apply creates it (a pool it cannot)
            need(target.host, parent, wanted, role, str(target) if "/" in parent else None,
                 Sent(job.source.host, job.source.dataset, job.recursive) if props.send else None)
    return [Grant(h, d, frozenset(p), tuple(roles[(h, d)]), tuple(below.get((h, d), ())),
                  tuple(sent.get((h, d), ()))) for (h, d), p in perms.items()]


def with_sent(grant: Grant, sent: Mapping[Sent, frozenset[str]]) -> Grant:
    """``grant`` with the permissions of the properties its sources send (parse.parse_sent_properties
    of each source's listing); a source missing from ``sent`` adds nothing."""
    extra = frozenset().union(*(sent.get(s, frozenset()) for s in grant.sent_from))
    return replace(grant, permissions=grant.permissions | extra) if extra - grant.permissions else grant


def select_hosts(inventory: Inventory, patterns: Sequence[str]) -> list[str]:
    """The hosts named by ``patterns`` (hosts or groups), in inventory order; without: every host
    some job uses."""
    used = {g.host for g in required(inventory.jobs)}
    if not patterns:
        return [h for h in inventory.hosts if h in used]
    chosen: set[str] = set()
    for pattern in patterns:
        if pattern in inventory.hosts:
            chosen.add(pattern)
        elif pattern in inventory.groups or pattern == "all":
            chosen.update(inventory.hosts_in(pattern))
        else:
            raise UsageError(f"allow: {pattern!r} is no host or group of the inventory"
                             f"{suggest(pattern, [*inventory.hosts, *inventory.groups])}")
    return [h for h in inventory.hosts if h in chosen]


def plan(inventory: Inventory, hosts: Sequence[str], user: str | None = None) -> list[HostAllow]:
    """Per host of ``hosts``: the delegations to ``user`` (else the host's ``user:``).

    A host whose user is root needs none; a host with no user (ssh's default login) is a usage
    error, since zfs must be told whom to trust.
    """
    grants = required(inventory.jobs)
    out: list[HostAllow] = []
    for host in hosts:
        mine = tuple(g for g in grants if g.host == host)
        login = user if user is not None else inventory.host(host).user
        if not mine:
            out.append(HostAllow(host, login, (), skipped="no job uses this host"))
        elif login is None:
            raise UsageError(f"allow: host {host} has no user: in the inventory (zrelay logs in as ssh "
                             "chooses), so there is nobody to delegate to; set user: or give --user NAME")
        elif login in PRIVILEGED_USERS:
            out.append(HostAllow(host, login, mine, skipped=f"{login} needs no delegation"))
        else:
            out.append(HostAllow(host, login, mine))
    return out


# --- what a listing grants --------------------------------------------------------------------


def _applies(grant: Delegation, identity: Identity) -> bool:
    """Does this grant reach ``identity`` (by name or uid, by one of its groups, or everyone)?"""
    if grant.who == "everyone":
        return True
    if grant.who == "user":
        return grant.name in (identity.user, str(identity.uid))
    if grant.who == "group":
        return any(grant.name in (str(gid), name) for gid, name in identity.groups)
    return False


def _in_or_above(dataset: str, other: str) -> bool:
    return dataset == other or dataset.startswith(other + "/")


def effective(listings: Sequence[DelegationListing], dataset: str, identity: Identity) -> frozenset[str]:
    """The permissions ``identity`` holds on ``dataset`` by the listings of ``zfs allow DATASET``.

    Grants on the dataset itself count when local, those on an ancestor when descendent;
    ``@sets`` are expanded with the definitions on the granting dataset or above it (as ZFS
    looks them up), sets within sets too.
    """
    relevant = sorted((ls for ls in listings if _in_or_above(dataset, ls.dataset)),
                      key=lambda ls: -len(ls.dataset))   # nearest first
    found: set[str] = set()
    for index, listing in enumerate(relevant):
        here = listing.dataset == dataset
        definitions: dict[str, frozenset[str]] = {}
        for above in reversed(relevant[index:]):   # the nearest definition wins
            definitions.update(above.sets)
        for grant in listing.grants:
            if (grant.local if here else grant.descendent) and _applies(grant, identity):
                found |= _expand(grant.permissions, definitions)
    return frozenset(found)


def _expand(permissions: Iterable[str], definitions: Mapping[str, frozenset[str]]) -> set[str]:
    out: set[str] = set()
    seen: set[str] = set()
    todo = list(permissions)
    while todo:
        perm = todo.pop()
        if not perm.startswith("@"):
            out.add(perm)
        elif perm not in seen:
            seen.add(perm)
            todo.extend(definitions.get(perm, ()))
    return out


def missing(grant: Grant, listings: Sequence[DelegationListing], identity: Identity) -> tuple[str, ...]:
    """The permissions ``grant`` asks for that the listings do not give ``identity``, sorted."""
    return tuple(sorted(grant.permissions - effective(listings, grant.dataset, identity)))


def pools(grants: Iterable[Grant]) -> list[str]:
    """The pools the grants are on (each must have ``delegation=on``), in order."""
    return list(dict.fromkeys(g.dataset.split("/", 1)[0] for g in grants))
