"""The resolved inventory: plain frozen data, no I/O.

Everything here is already validated and merged (variable precedence applied,
paths made absolute, references checked), so the rest of zrelay never has to
re-check an inventory or know which file a setting came from.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import unicodedata
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from zrelay.errors import InvalidName, InventoryError, UsageError
from zrelay.inventory.policy import Lifecycle, template_prefix
from zrelay.inventory.service import DaemonSettings, RunSchedule
from zrelay.zfs.model import ReplicaProperties, SnapshotFilter
from zrelay.zfs.names import dataset_problem, snapshot_problem

DEFAULT_PORT = 22
DEFAULT_MAX_SESSIONS = 10  # OpenSSH's MaxSessions default
DEFAULT_SNAPSHOT_NAME = "zrelay_%Y-%m-%dT%H:%M:%SZ"
DEFAULT_SENDS_PER_HOST = 2
DEFAULT_RECEIVES_PER_HOST = 2
DEFAULT_STORAGE_CLASS = "STANDARD"
S3_SCHEME = "s3"  # ``s3:NAME`` in a job's targets names an S3 target


@dataclass(frozen=True, slots=True)
class Origin:
    """Where something was written, so later errors can point back at the file."""

    file: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return where

    def error(self, message: str) -> InventoryError:
        """An InventoryError located here."""
        return InventoryError(message, self.file, self.line, self.column)


@dataclass(frozen=True, slots=True)
class VarSource:
    """Which level set a host's variable (``host nas1``, ``group storage``, ``default``) and where.

    Kept so ``zrelay inventory show`` can answer "why does this host use port
    2222?" without re-reading the files.
    """

    scope: str
    origin: Origin | None = None

    def __str__(self) -> str:
        return f"{self.scope} ({self.origin})" if self.origin else self.scope


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One dataset on one inventory host (``host:dataset``)."""

    host: str
    dataset: str

    def __str__(self) -> str:
        return f"{self.host}:{self.dataset}"

    def contains(self, other: Endpoint) -> bool:
        """True if ``other`` is this dataset or one of its descendants on the same host."""
        return self.host == other.host and (
            other.dataset == self.dataset or other.dataset.startswith(self.dataset + "/"))

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        """Parse ``host:dataset``; raise UsageError saying what is wrong (one line)."""
        if not isinstance(text, str):
            raise UsageError(f"expected 'host:dataset', got {text!r}")
        host, sep, dataset = text.partition(":")
        if not sep:
            raise UsageError(f"expected 'host:dataset', got {text!r} (no ':')")
        if not host.strip():
            raise UsageError(f"missing host before ':' in {text!r}")
        if host != host.strip() or any(c.isspace() for c in host):
            raise UsageError(f"host in {text!r} contains whitespace")
        if not dataset:
            raise UsageError(f"missing dataset after ':' in {text!r}")
        problem = dataset_problem(dataset)
        if problem:
            raise UsageError(f"{problem} (in {text!r})")
        return cls(host, dataset)


@dataclass(frozen=True, slots=True)
class S3Ref:
    """A job target naming an entry of ``zrelay.s3_targets`` (written ``s3:NAME``)."""

    name: str

    def __str__(self) -> str:
        return f"{S3_SCHEME}:{self.name}"


Target = Endpoint | S3Ref


@dataclass(frozen=True, slots=True)
class Host:
    """One machine zrelay reaches over SSH, with every variable already merged."""

    name: str
    address: str
    port: int = DEFAULT_PORT
    user: str | None = None             # None: ssh config / current user
    identity_file: str | None = None    # absolute path
    known_hosts: str | None = None      # absolute path; None: ~/.ssh/known_hosts
    ssh_options: Mapping[str, str | int] = field(default_factory=dict, hash=False)
    sudo: bool = False
    max_sessions: int = DEFAULT_MAX_SESSIONS
    sends: int | None = None            # None: zrelay.limits.sends_per_host
    receives: int | None = None         # None: zrelay.limits.receives_per_host
    direct_address: str | None = None   # how other hosts reach this one, if not ``address``
    direct: bool = False                # as a source, send straight to targets (not via zrelay)
    direct_identity_file: str | None = None  # key ON this host for direct sends (else the forwarded agent)
    direct_known_hosts: str | None = None    # known_hosts ON this host for direct sends
    direct_ciphers: str = "auto"        # its ssh's Ciphers for direct sends: auto | default | a list
    compress: str | None = None         # wire compression: auto | zstd | lz4 | off (None: default)
    buffer: str | None = None           # mbuffer on both ends: auto | off | SIZE (None: default)
    fastpath: bool = True               # zrelay's asyncssh speed-ups for its connections (transport/fastpath.py)
    rpo: int | None = None              # seconds: the RPO of jobs from this host without their own
    bandwidth: int | None = None        # bytes per second, each stream from or to it (paths/throttle.py)
    groups: tuple[str, ...] = ()        # every group holding it (ancestors too), 'all' excluded
    vars: Mapping[str, Any] = field(default_factory=dict, hash=False)  # merged, as written
    origin: Origin | None = None
    #: For each key of ``vars``: the level and place that set the winning value.
    var_sources: Mapping[str, VarSource] = field(default_factory=dict, hash=False, compare=False)
    #: For each zrelay setting (address, port, ...) that is not a default: where it came from.
    setting_sources: Mapping[str, VarSource] = field(default_factory=dict, hash=False,
                                                     compare=False)

    @property
    def peer_address(self) -> str:
        """The address another host should use to reach this one."""
        return self.direct_address or self.address


@dataclass(frozen=True, slots=True)
class Group:
    """An Ansible-style group: direct hosts, child groups, and its own vars."""

    name: str
    hosts: tuple[str, ...] = ()
    children: tuple[str, ...] = ()
    vars: Mapping[str, Any] = field(default_factory=dict, hash=False)
    origin: Origin | None = None


@dataclass(frozen=True, slots=True)
class ObjectLock:
    """S3 Object Lock retention that every object of a push is written with (the bucket must
    have Object Lock enabled): S3 refuses to delete it, and zrelay prune keeps its chain, for
    ``days`` after it was written. GOVERNANCE can be lifted by a key with the bypass permission
    (zrelay never does); COMPLIANCE by nobody."""

    mode: str      # GOVERNANCE | COMPLIANCE
    days: int

    @property
    def seconds(self) -> int:
        return self.days * 86400


@dataclass(frozen=True, slots=True)
class S3Target:
    """An S3 bucket (and key prefix) that jobs can replicate into."""

    name: str
    bucket: str
    endpoint: str | None = None         # None: AWS
    prefix: str = ""                    # prepended verbatim to every object key
    region: str | None = None
    storage_class: str = DEFAULT_STORAGE_CLASS
    profile: str | None = None          # AWS config/credentials profile
    addressing_style: str = "auto"      # auto | path | virtual
    origin: Origin | None = None
    # How to stream there; None: zrelay's defaults (zrelay.s3.options.S3Options), flags override.
    max_stream_size: int | str | None = None   # e.g. "2T": refuse larger streams; sizes parts without an estimate
    part_size: int | str | None = None
    max_object_size: int | str | None = None
    concurrency: int | None = None             # parts (or ranged GETs) in flight
    compression: str | None = None             # auto | zstd | none
    zstd_level: int | None = None
    age_recipients: tuple[str, ...] | None = None  # public keys: encrypt on the source
    age_identity: str | None = None            # private key file on the restoring host
    part_checksum: str | None = None           # md5 | sha256 | none
    restore_days: int | None = None
    restore_tier: str | None = None            # Expedited | Standard | Bulk
    push: RunSchedule | None = None            # the daemon's s3-push schedule for jobs into it
    bandwidth: int | None = None               # bytes per second, each push into it and restore from it
    object_lock: ObjectLock | None = None      # retention written with every object (S3 Object Lock)
    prune_profile: str | None = None           # credentials that delete (prune); ``profile`` pushes


@dataclass(frozen=True, slots=True)
class Job:
    """Replicate one source dataset (optionally its whole subtree) to one or more targets."""

    name: str
    source: Endpoint
    recursive: bool = False
    select: SnapshotFilter = SnapshotFilter()
    targets: tuple[Target, ...] = ()
    origin: Origin | None = None
    direct: bool | None = None   # None: the source host's ``direct`` setting decides
    compress: str | None = None  # None: the hosts' ``compress`` settings decide
    buffer: str | None = None    # None: the hosts' ``buffer`` settings decide
    send_options: tuple[str, ...] | None = None  # -L/-e/-c by name; None: all that both ends have
    lifecycle: Lifecycle = Lifecycle()           # snapshot schedule, keep policies, hooks
    #: the daemon's schedules of this job's runs by kind (sync, prune, s3-push), as written
    schedule: Mapping[str, RunSchedule] = field(default_factory=dict, hash=False)
    rpo: int | None = None  # seconds a target may lag behind (its ``rpo``, else the source host's)
    #: ``zrelay allow`` also delegates rollback and destroy on the targets (``sync --rollback``,
    #: ``--abort-partial``); without it a non-root target can only receive
    allow_rollback: bool = False
    #: globs of descendants (relative to ``exclude_base``) a recursive job leaves alone (zrelay.selection)
    exclude: tuple[str, ...] = ()
    exclude_base: str = ""  # the source the globs are relative to ("" = ``source``; set by ``narrowed``)
    bandwidth: int | None = None  # bytes per second, each of its streams (paths/throttle.py)
    properties: ReplicaProperties = ReplicaProperties()   # ``properties:``: what replicas keep and get
    #: a target entry's own ``properties:`` (the job's, with the keys it names replaced), by target
    target_properties: Mapping[str, ReplicaProperties] = field(default_factory=dict, hash=False)
    #: ``drill_to:``: where the daemon's scheduled drills restore (``host:SCRATCH_PARENT``); None: nowhere
    drill_to: Endpoint | None = None

    def is_top(self, dataset: str) -> bool:
        """``dataset`` (on the source) is the job's own source as written, not one below it: what a
        job's ``properties: set:`` is given to (the datasets below inherit it)."""
        return dataset == (self.exclude_base or self.source.dataset)

    def properties_for(self, target: Target) -> ReplicaProperties:
        """The ``properties:`` that hold for ``target``: its entry's own, else the job's."""
        return self.target_properties.get(str(target), self.properties)

    def own_snapshots(self, default_template: str) -> SnapshotFilter | None:
        """The snapshots that are this job's to destroy: its ``select`` filter when it has one, else
        those starting with the literal start of its snapshot name template. None when neither
        narrows anything down (the loader refuses a keep policy then: other tools' snapshots are
        never this job's)."""
        if self.select.prefix or self.select.regex:
            return self.select
        schedule = self.lifecycle.snapshot
        prefix = template_prefix(schedule.name if schedule and schedule.name else default_template)
        return SnapshotFilter(prefix=prefix) if prefix else None

    def snapshot_template(self, default_template: str) -> str:
        """The name template of this job's snapshots: its own, else the fleet's."""
        schedule = self.lifecycle.snapshot
        return schedule.name if schedule and schedule.name else default_template

    @property
    def host_targets(self) -> tuple[Endpoint, ...]:
        return tuple(t for t in self.targets if isinstance(t, Endpoint))

    @property
    def s3_targets(self) -> tuple[S3Ref, ...]:
        return tuple(t for t in self.targets if isinstance(t, S3Ref))

    def narrowed(self, dataset: str) -> Job:
        """This job restricted to a descendant of its (recursive) source.

        Host targets move down by the same relative path, so replicating the
        narrowed job writes exactly where the whole job would have.
        """
        base = self.source.dataset
        if dataset == base:
            return self
        if not (self.recursive and dataset.startswith(base + "/")):
            raise ValueError(f"{dataset!r} is not inside the recursive source {self.source}")
        rel = dataset[len(base):]
        targets = tuple(Endpoint(t.host, t.dataset + rel) if isinstance(t, Endpoint) else t
                        for t in self.targets)
        lifecycle = self.lifecycle  # keep policies follow their targets down
        moved = {str(old): str(new) for old, new in zip(self.targets, targets) if old != new}
        if any(side in moved for side in lifecycle.keep):
            lifecycle = replace(lifecycle, keep={moved.get(side, side): policy
                                                 for side, policy in lifecycle.keep.items()})
        props = {moved.get(t, t): p for t, p in self.target_properties.items()}
        return replace(self, source=Endpoint(self.source.host, dataset), targets=targets,
                       lifecycle=lifecycle, exclude_base=self.exclude_base or base,
                       target_properties=props)


@dataclass(frozen=True, slots=True)
class Settings:
    """Fleet-wide settings from the ``zrelay:`` section."""

    snapshot_name: str = DEFAULT_SNAPSHOT_NAME
    sends_per_host: int = DEFAULT_SENDS_PER_HOST
    receives_per_host: int = DEFAULT_RECEIVES_PER_HOST
    daemon: DaemonSettings = DaemonSettings()
    #: group → bytes per second shared by every stream touching a host of the group
    bandwidth_groups: Mapping[str, int] = field(default_factory=dict, hash=False)

    def snapshot_name_at(self, when: _dt.datetime) -> str:
        """The snapshot name for ``when``; the template is always rendered in UTC."""
        return snapshot_name_at(self.snapshot_name, when)

    def checked_snapshot_name(self, when: _dt.datetime, template: str | None = None) -> str:
        """``snapshot_name_at`` (of ``template``, else the fleet's), refused with InvalidName when
        the template gives a name ZFS rejects."""
        name = snapshot_name_at(template or self.snapshot_name, when)
        problem = snapshot_problem(name)
        if problem:
            raise InvalidName(f"snapshot_name template gives an invalid name: {problem}")
        return name


def snapshot_name_at(template: str, when: _dt.datetime) -> str:
    """The snapshot name ``template`` (strftime) gives for ``when``, always rendered in UTC."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    return when.astimezone(_dt.timezone.utc).strftime(template)


def suggest(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or ``""``: typos are the usual cause.

    Never ``word`` itself: a name that exists but is the wrong kind of thing needs its
    caller to say what it is instead. Non-ASCII letters in ``word`` that the suggestion
    lacks are named, since 'v\u0430ult' with a Cyrillic '\u0430' looks like 'vault' on screen.
    """
    close = difflib.get_close_matches(word, [c for c in choices if c != word], n=1, cutoff=0.6)
    parts = [foreign] if (foreign := non_ascii(word, close[0] if close else "")) else []
    if close:
        parts.append(f"did you mean {close[0]!r}?")
    return f" ({'; '.join(parts)})" if parts else ""


def non_ascii(word: str, allowed: str = "") -> str:
    """``contains non-ASCII character U+0430 CYRILLIC SMALL LETTER A at position 2``, or ``""``.

    Characters that also occur in ``allowed`` (the name it resembles) are not counted.
    """
    found = [(i, c) for i, c in enumerate(word, start=1) if ord(c) > 127 and c not in allowed]
    if not found:
        return ""
    position, char = found[0]
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    return (f"contains non-ASCII character U+{ord(char):04X} "
            f"{unicodedata.name(char, 'without a name')} at position {position}{more}")


def name_list(names: Iterable[str], limit: int = 12) -> str:
    """Comma-separated names, shortened so a message stays one readable line."""
    items = list(names)
    if len(items) > limit:
        return ", ".join(items[:limit]) + f", … ({len(items) - limit} more)"
    return ", ".join(items) if items else "(none)"


@dataclass(frozen=True, slots=True)
class Inventory:
    """Hosts, groups, jobs, S3 targets and settings loaded from one inventory."""

    path: Path
    hosts: Mapping[str, Host] = field(default_factory=dict, hash=False)
    groups: Mapping[str, Group] = field(default_factory=dict, hash=False)
    jobs: tuple[Job, ...] = ()
    s3_targets: Mapping[str, S3Target] = field(default_factory=dict, hash=False)
    settings: Settings = Settings()
    #: Every file read, the inventory itself first (included inventories, vars files).
    sources: tuple[str, ...] = ()

    def host(self, name: str) -> Host:
        """The host called ``name``; an unknown name is an error naming this inventory."""
        try:
            return self.hosts[name]
        except KeyError:
            raise InventoryError(
                f"unknown host {name!r}{suggest(name, self.hosts)}; "
                f"known hosts: {name_list(self.hosts)}", file=str(self.path)) from None

    def host_targets(self, job: Job) -> tuple[Endpoint, ...]:
        """The job's host (non-S3) targets."""
        return job.host_targets

    def s3_targets_of(self, job: Job) -> tuple[S3Target, ...]:
        """The job's S3 targets, resolved to their settings."""
        return tuple(self.s3_targets[ref.name] for ref in job.s3_targets)

    def sends_limit(self, host: str) -> int:
        """Concurrent sends allowed from ``host`` (host setting, else the fleet limit)."""
        h = self.host(host)
        return h.sends if h.sends is not None else self.settings.sends_per_host

    def receives_limit(self, host: str) -> int:
        """Concurrent receives allowed into ``host`` (host setting, else the fleet limit)."""
        h = self.host(host)
        return h.receives if h.receives is not None else self.settings.receives_per_host

    def hosts_in(self, group: str) -> tuple[str, ...]:
        """Every host in ``group`` or any of its descendants, in inventory order."""
        if group == "all":
            return tuple(self.hosts)
        members: set[str] = set()
        todo, seen = [group], set()
        while todo:
            g = todo.pop()
            if g in seen or g not in self.groups:
                continue
            seen.add(g)
            members.update(self.groups[g].hosts)
            todo.extend(self.groups[g].children)
        return tuple(h for h in self.hosts if h in members)

    def jobs_matching(self, patterns: list[str]) -> list[Job]:
        """The jobs selected by command-line patterns; no patterns means every job.

        A pattern is a job name, a host or group (jobs whose source is on it), or
        ``host:dataset``: the job with exactly that source, or — for a recursive
        job — the job narrowed to that descendant of its source. A pattern that
        selects nothing is a usage error, so a typo never silently does nothing.
        """
        if not patterns:
            return list(self.jobs)
        whole: set[int] = set()
        scopes: dict[int, set[str]] = {}
        for pattern in patterns:
            hits = self._match(pattern)
            if not hits:
                raise UsageError(self._no_match(pattern))
            for index, dataset in hits:
                if dataset is None:
                    whole.add(index)
                else:
                    scopes.setdefault(index, set()).add(dataset)
        result: list[Job] = []
        for index, job in enumerate(self.jobs):
            if index in whole:
                result.append(job)
            elif index in scopes:
                kept = sorted(d for d in scopes[index]
                              if not any(o != d and d.startswith(o + "/") for o in scopes[index]))
                result.extend(job.narrowed(d) for d in kept)
        return result

    def _match(self, pattern: str) -> list[tuple[int, str | None]]:
        """(job index, narrowed dataset or None for the whole job) selected by one pattern."""
        hits: list[tuple[int, str | None]] = []
        group_hosts = set(self.hosts_in(pattern)) if pattern in self.groups else set()
        endpoint: Endpoint | None = None
        if ":" in pattern:
            try:
                endpoint = Endpoint.parse(pattern)
            except UsageError:
                endpoint = None
        for index, job in enumerate(self.jobs):
            if job.name == pattern or job.source.host == pattern or job.source.host in group_hosts:
                hits.append((index, None))
            elif endpoint is not None:
                if endpoint == job.source:
                    hits.append((index, None))
                elif job.recursive and job.source.contains(endpoint):
                    hits.append((index, endpoint.dataset))
        return hits

    def _no_match(self, pattern: str) -> str:
        if not self.jobs:
            return f"{pattern!r} matches no job: the inventory {self.path} defines no jobs"
        sources = list(dict.fromkeys(str(j.source) for j in self.jobs))
        names = [j.name for j in self.jobs if j.name != str(j.source)]
        if pattern in self.hosts:  # a real host: say what it is rather than suggest a name
            feeds = [f"{j.source} -> {t}" for j in self.jobs for t in j.host_targets
                     if t.host == pattern]
            why = f"no job replicates from host {pattern!r}"
            if feeds:
                why += f": {pattern} is only a target ({name_list(feeds, 3)})"
        elif pattern in self.groups:
            why = f"no job replicates from a host in group {pattern!r}"
        else:
            hint = suggest(pattern, sources + names + list(self.hosts))
            why = f"{pattern!r} matches no job name, host, group or job source{hint}"
        return f"{why}; job sources: {name_list(sources)}"
