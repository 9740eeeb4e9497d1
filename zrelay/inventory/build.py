"""What readers found, merged and cross-checked into an Inventory.

Internal to zrelay.inventory. Readers feed a Builder raw groups, hosts, jobs,
S3 targets and settings; ``finish`` links groups (Ansible's rules: a group
without parents is a child of 'all'), resolves every host (``resolve``), and
checks what no single value shows: unknown or wrong-kind names, group cycles,
two jobs writing one dataset, replication loops.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable, Iterator, TypeVar

from zrelay.inventory.lifecycle_keys import RawLifecycle, job_lifecycle, lifecycle_fits
from zrelay.inventory.model import (DEFAULT_SNAPSHOT_NAME, Endpoint, Group, Host, Inventory, Job,
                                    Origin, S3Ref, S3Target, Settings, Target, name_list, suggest)
from zrelay.inventory.problems import Errors, Place
from zrelay.inventory.property_keys import RawProperties
from zrelay.inventory.service import RunSchedule
from zrelay.inventory.service_keys import check_groups, check_job_schedule
from zrelay.inventory.resolve import (Inherited, RawGroup, RawHost, Vars, group_depths, inherit,
                                      resolve_host)
from zrelay.inventory.yamlread import AliasBudget
from zrelay.zfs.model import ReplicaProperties, SnapshotFilter


@dataclass
class RawJob:
    origin: Origin
    name: str | None = None
    name_origin: Origin | None = None
    source: Endpoint | None = None
    source_origin: Origin | None = None
    recursive: bool = False
    exclude: tuple[str, ...] = ()  # globs of descendants left alone (zrelay.selection)
    select: SnapshotFilter = SnapshotFilter()
    targets: list[tuple[Target, Origin]] = field(default_factory=list)
    direct: bool | None = None
    send_options: tuple[str, ...] | None = None
    compress: str | None = None
    buffer: str | None = None
    lifecycle: RawLifecycle = field(default_factory=RawLifecycle)  # snapshot, keep, hooks
    rpo: int | None = None  # seconds; None: the source host's ``rpo`` (or none)
    bandwidth: int | None = None  # bytes per second
    schedule: dict[str, RunSchedule] = field(default_factory=dict)  # the daemon's runs by kind
    schedule_origin: Origin | None = None
    drill_to: Endpoint | None = None  # where scheduled drills restore (host:SCRATCH_PARENT)
    drill_to_origin: Origin | None = None
    allow_rollback: bool = False  # ``zrelay allow`` delegates rollback/destroy on the targets
    properties: RawProperties = field(default_factory=RawProperties)  # the job's ``properties:``
    target_properties: dict[str, RawProperties] = field(default_factory=dict)  # by target, as written
    complete: bool = True  # False when a required part was missing or invalid


# --------------------------------------------------------------------------- builder


class Builder:
    """Collects what readers found, then merges and cross-checks it into an Inventory."""

    def __init__(self, path: Path, errors: Errors) -> None:
        self.path = path
        self.errors = errors
        top = Origin(str(path), 1, 1)
        self.groups: dict[str, RawGroup] = {"all": RawGroup("all", top)}
        self.hosts: dict[str, RawHost] = {}
        self.jobs: list[RawJob] = []
        self.s3_targets: dict[str, S3Target] = {}
        self.settings: dict[str, Any] = {}
        #: (what, group, where) the daemon section names a group: checked once groups are known
        self.daemon_groups: list[tuple[str, str, Place]] = []
        self.sources: list[str] = [str(path)]
        self.strict_files: set[str] = set()  # files read as zrelay inventories
        #: What YAML aliases have expanded to so far, in every file read.
        self.aliases = AliasBudget()
        #: Directories whose group_vars/ and host_vars/ apply, in reading order, and
        #: whether they belong to an Ansible inventory (read leniently).
        self.vars_dirs: dict[str, bool] = {}

    # -- fed by readers

    def group(self, name: str, origin: Origin, parent: str | None) -> RawGroup:
        """The group ``name`` (created on first mention), linked under ``parent``."""
        group = self.groups.get(name)
        if group is None:
            group = self.groups[name] = RawGroup(name, origin)
        if parent is not None and name not in self.groups[parent].children:
            self.groups[parent].children[name] = origin
        return group

    def host(self, name: str, origin: Origin, group: str, host_vars: Vars,
             owned: bool = False) -> None:
        """Record that ``group`` lists host ``name``, adding ``host_vars`` (later mentions win).

        In a zrelay inventory, a host listed twice must not be given two different
        values for one setting: which one wins would depend on file order.
        ``owned``: ``host_vars`` belongs to this host alone, so a new host keeps it
        as it is (no copy: a fleet lists each host once).
        """
        raw = self.hosts.get(name)
        if raw is None:
            if owned:
                self.hosts[name] = RawHost(name, origin, host_vars)
                self.groups[group].hosts.setdefault(name)
                return
            raw = self.hosts[name] = RawHost(name, origin)
        elif origin.file in self.strict_files:
            for key, new in host_vars.settings.items():
                old = raw.vars.settings.get(key)
                if (old is not None and old.origin[0] == origin.file
                        and old.value != new.value):
                    self.errors.add(new.origin, f"host {name!r} is also listed at line "
                                    f"{old.origin[1]} with {key} {old.value!r}; give a "
                                    "host's settings once, where it is first listed")
                    host_vars = host_vars.copy()
                    host_vars.settings.pop(key)
                    host_vars.broken.add(key)
        raw.vars.update(host_vars)
        self.groups[group].hosts.setdefault(name)

    def add_vars_dir(self, directory: str, ansible: bool) -> None:
        """group_vars/ and host_vars/ beside an inventory apply to every host, as in Ansible."""
        self.vars_dirs[directory] = self.vars_dirs.get(directory, False) or ansible

    # -- merging

    def finish(self) -> Inventory:
        """Merge, cross-check and build; problems go to ``self.errors``."""
        parents: dict[str, set[str]] = {name: set() for name in self.groups}
        for name, group in self.groups.items():
            for child in group.children:
                parents.setdefault(child, set()).add(name)
        for name in self.groups:  # Ansible: a group without parents is a child of 'all'
            if name != "all" and not parents[name]:
                self.groups["all"].children[name] = self.groups[name].origin
                parents[name].add("all")
        self._check_cycles()
        depth = group_depths(self.groups)
        direct: dict[str, tuple[str, ...]] = {}  # host -> the groups that list it
        for name, group in self.groups.items():
            alone = (name,)  # one tuple for the hosts listed in this group only
            for host in group.hosts:
                have = direct.get(host)
                direct[host] = alone if have is None else have + alone
        inherited: dict[tuple[str, ...], Inherited] = {}
        hosts: dict[str, Host] = {}
        for name, raw in self.hosts.items():
            listed_in = direct.get(name, ())
            from_groups = inherited.get(listed_in)
            if from_groups is None:
                from_groups = inherited[listed_in] = inherit(self.groups, listed_in, parents,
                                                             depth)
            built = resolve_host(raw, from_groups, self.errors)
            if built is not None:
                hosts[name] = built
        groups = {
            name: Group(name, tuple(g.hosts), tuple(g.children),
                        {**g.vars.raw, **g.dir_vars.raw}, g.origin)
            for name, g in self.groups.items()
        }
        self._check_host_group_names()
        if "ungrouped" not in groups:  # the hosts no group but 'all' lists
            ungrouped = tuple(h for h in self.hosts if direct.get(h, ()) in ((), ("all",)))
            groups["ungrouped"] = Group("ungrouped", ungrouped, (), {}, self.groups["all"].origin)
        jobs = self._jobs(hosts)
        check_groups(self.daemon_groups, groups, self.errors)
        settings = Settings(**self.settings)
        return Inventory(self.path, hosts, groups, jobs, dict(self.s3_targets), settings,
                         tuple(dict.fromkeys(self.sources)))

    def _check_host_group_names(self) -> None:
        """A name that is both a host and a group makes ``zrelay sync NAME`` ambiguous."""
        for name, raw in self.hosts.items():
            group = self.groups.get(name)
            if group is None or name in ("all", "ungrouped"):
                continue
            if raw.origin.file in self.strict_files or group.origin.file in self.strict_files:
                later = max(raw.origin, group.origin,
                            key=lambda o: (o.file in self.strict_files, o.line or 0))
                self.errors.add(later, f"{name!r} is both a host and a group; a command-line "
                                "pattern could not tell them apart, rename one")

    def _check_cycles(self) -> None:
        """Report each group cycle once, at the child edge that closes it."""

        def children(name: str) -> list[str]:
            return [c for c in self.groups[name].children if c in self.groups]

        for loop in _cycles(list(self.groups), children):
            origin = self.groups[loop[-2]].children[loop[-1]]
            self.errors.add(origin, f"group cycle: {' -> '.join(loop)}")

    def _jobs(self, hosts: dict[str, Host]) -> tuple[Job, ...]:
        jobs: list[Job] = []
        origins: list[dict[Target, Origin]] = []
        names: dict[str, Origin] = {}
        for raw in self.jobs:
            if raw.source is None or raw.source_origin is None:
                continue
            ok = raw.complete
            if raw.source.host not in self.hosts:
                self.errors.add(raw.source_origin, self._unknown_host(raw.source.host, "source"))
                ok = False
            targets: list[Target] = []
            for target, origin in raw.targets:
                if not self._check_target(raw, target, origin, targets):
                    ok = False
                    continue
                targets.append(target)
            if raw.drill_to is not None and not self._check_drill_to(raw):
                ok = False
            name = raw.name if raw.name is not None else str(raw.source)
            name_origin = raw.name_origin or raw.source_origin
            if name in names:
                first = names[name]
                self.errors.add(name_origin, f"job name {name!r} is already used by the job at "
                                f"line {first.line}; give one of them a distinct 'name:'")
                ok = False
            else:
                names[name] = name_origin
            lifecycle = job_lifecycle(raw.lifecycle, raw.targets, self.errors)
            if ok and lifecycle is not None:
                job = Job(name, raw.source, raw.recursive, raw.select, tuple(targets),
                          raw.origin, direct=raw.direct, send_options=raw.send_options,
                          compress=raw.compress, buffer=raw.buffer, lifecycle=lifecycle,
                          rpo=raw.rpo if raw.rpo is not None else _host_rpo(hosts, raw.source.host),
                          schedule=raw.schedule, allow_rollback=raw.allow_rollback,
                          exclude=raw.exclude, bandwidth=raw.bandwidth,
                          properties=raw.properties.over(ReplicaProperties()),
                          target_properties=_target_properties(raw), drill_to=raw.drill_to)
                template = self.settings.get("snapshot_name", DEFAULT_SNAPSHOT_NAME)
                if (lifecycle_fits(job, raw.lifecycle, template, self.errors)
                        and check_job_schedule(job, raw.schedule_origin or raw.origin, self.errors)):
                    jobs.append(job)
                    origins.append(dict((t, o) for t, o in raw.targets))
        self._check_job_overlaps(jobs, origins)
        self._check_job_loops(jobs)
        return tuple(jobs)

    def _unknown_host(self, host: str, role: str) -> str:
        if host in self.groups:
            return (f"{host!r} in {role} is a group, not a host; name one host "
                    f"(hosts in {host!r}: {name_list(self._group_members(host))})")
        if host in self.s3_targets:
            fix = (f"write it as s3:{host} in targets" if role == "target"
                   else "an S3 target can only be a job's target")
            return f"{host!r} in {role} is an S3 target, not a host; {fix}"
        return (f"unknown host {host!r} in {role}{suggest(host, self.hosts)}; "
                f"known hosts: {name_list(self.hosts)}")

    def _group_members(self, group: str) -> list[str]:
        seen: set[str] = set()
        members: dict[str, None] = {}
        todo = [group]
        while todo:
            g = todo.pop()
            if g in seen or g not in self.groups:
                continue
            seen.add(g)
            members.update(dict.fromkeys(self.groups[g].hosts))
            todo.extend(self.groups[g].children)
        return list(members)

    def _check_drill_to(self, raw: RawJob) -> bool:
        """``drill_to`` names a host of the inventory and a scratch parent outside the job's source and
        host targets (a restore inside them would be replicated, or received over)."""
        assert raw.drill_to is not None and raw.source is not None
        origin = raw.drill_to_origin or raw.origin
        if raw.drill_to.host not in self.hosts:
            self.errors.add(origin, self._unknown_host(raw.drill_to.host, "drill_to"))
            return False
        for what, other in (("source", raw.source),
                            *(("target", t) for t, _ in raw.targets if isinstance(t, Endpoint))):
            if other.contains(raw.drill_to):
                self.errors.add(origin, f"drill_to {raw.drill_to} is inside the job's {what} {other}; "
                                        "give a scratch parent outside it")
                return False
        return True

    def _check_target(self, raw: RawJob, target: Target, origin: Origin,
                      earlier: list[Target]) -> bool:
        assert raw.source is not None
        if isinstance(target, S3Ref):
            if target.name not in self.s3_targets:
                known = (f"known: {name_list(self.s3_targets)}" if self.s3_targets
                         else "zrelay.s3_targets defines none")
                if target.name in self.hosts:
                    known = (f"{target.name} is a host: write {target.name}:POOL/DATASET "
                             f"for a dataset there; {known}")
                self.errors.add(origin, f"unknown S3 target {target.name!r}"
                                f"{suggest(target.name, self.s3_targets)}; {known}")
                return False
        else:
            if target.host not in self.hosts:
                self.errors.add(origin, self._unknown_host(target.host, "target"))
                return False
            if target == raw.source:
                self.errors.add(origin, f"target {target} is the job's own source")
                return False
            if target.contains(raw.source):
                self.errors.add(origin, f"target {target} contains the source {raw.source}; "
                                "receiving there would overwrite it")
                return False
            if raw.recursive and raw.source.contains(target):
                self.errors.add(origin, f"target {target} is inside the recursive source "
                                f"{raw.source}, so the job would replicate into itself")
                return False
            if "/" not in target.dataset:
                self.errors.add(origin, f"target {target} is the root dataset of pool "
                                f"{target.dataset!r}; replicate into a child dataset such as "
                                f"'{target.dataset}/{raw.source.host}'")
                return False
        if target in earlier:
            self.errors.add(origin, f"target {target} is listed twice in this job")
            return False
        return True

    def _check_job_overlaps(self, jobs: list[Job], origins: list[dict[Target, Origin]]) -> None:
        """Two jobs writing one dataset would fight over it (and refuse each other's snapshots).

        Indexed by dataset so a large fleet stays linear: each target looks up
        itself and its ancestors among every job's targets.
        """
        written: dict[tuple[str, str], list[int]] = {}
        for index, job in enumerate(jobs):
            for target in job.host_targets:
                written.setdefault((target.host, target.dataset), []).append(index)
        for j, job in enumerate(jobs):
            for target in job.host_targets:
                for key in _ancestors(target.host, target.dataset):
                    for i in written.get(key, ()):
                        if i == j:
                            continue
                        above = Endpoint(*key)
                        other = jobs[i]
                        line = other.origin.line if other.origin else "?"
                        if above == target and i < j:
                            msg = (f"target {target} is also written by job {other.name!r} "
                                   f"(line {line})")
                            self.errors.add(origins[j][target], msg)
                        elif above != target and other.recursive and i < j:
                            msg = (f"target {target} is inside {above}, which job "
                                   f"{other.name!r} (line {line}) writes recursively")
                            self.errors.add(origins[j][target], msg)
                        elif above != target and other.recursive and i > j:
                            line = job.origin.line if job.origin else "?"
                            msg = (f"target {above} is written recursively and contains {target}, "
                                   f"which job {job.name!r} (line {line}) also writes")
                            self.errors.add(origins[i][above], msg)

    def _check_job_loops(self, jobs: list[Job]) -> None:
        """A -> B -> A replication would send each side's snapshots back over the other."""
        sources: dict[tuple[str, str], list[int]] = {}
        for index, job in enumerate(jobs):
            sources.setdefault((job.source.host, job.source.dataset), []).append(index)
        by_host: dict[str, list[str]] = {}
        for host, dataset in sources:
            by_host.setdefault(host, []).append(dataset)
        for datasets in by_host.values():
            datasets.sort()

        def fed(i: int) -> list[int]:
            """Jobs whose source receives data from job i."""
            a = jobs[i]
            result: list[int] = []
            for t in a.host_targets:
                for above in _ancestors(t.host, t.dataset):
                    result.extend(k for k in sources.get(above, ())
                                  if above[1] == t.dataset or jobs[k].recursive)
                if a.recursive:
                    datasets = by_host.get(t.host, [])
                    low = t.dataset + "/"
                    at = bisect.bisect_left(datasets, low)
                    while at < len(datasets) and datasets[at].startswith(low):
                        result.extend(sources[(t.host, datasets[at])])
                        at += 1
            return [k for k in dict.fromkeys(result) if k != i]

        for loop in _cycles(range(len(jobs)), fed):
            names = " -> ".join(str(jobs[x].source) for x in loop)
            closing = jobs[loop[-2]]
            self.errors.add(closing.origin or Origin(str(self.path)), f"replication loop: {names}")


def _host_rpo(hosts: dict[str, Host], name: str) -> int | None:
    """A job without its own ``rpo`` takes its source host's (host or group vars)."""
    host = hosts.get(name)
    return host.rpo if host is not None else None


def _ancestors(host: str, dataset: str) -> list[tuple[str, str]]:
    """(host, dataset) and every ancestor dataset on the same host, deepest first: plain tuples,
    as every job's targets are looked up this way (10,000 jobs: 50,000 keys)."""
    keys = [(host, dataset)]
    while "/" in dataset:
        dataset = dataset.rsplit("/", 1)[0]
        keys.append((host, dataset))
    return keys


_K = TypeVar("_K", bound=Hashable)


def _cycles(starts: Iterable[_K], edges: Callable[[_K], Iterable[_K]]) -> list[list[_K]]:
    """Each cycle once, as ``[a, b, ..., a]``; iterative, so deep graphs cannot overflow."""
    state: dict[_K, int] = {}  # 1: on the current path, 2: finished
    found: list[list[_K]] = []
    reported: set[frozenset[_K]] = set()
    for start in starts:
        if start in state:
            continue
        state[start] = 1
        path = [start]
        stack: list[Iterator[_K]] = [iter(edges(start))]
        while stack:
            for nxt in stack[-1]:
                if state.get(nxt) == 1:
                    loop = path[path.index(nxt):] + [nxt]
                    if frozenset(loop) not in reported:
                        reported.add(frozenset(loop))
                        found.append(loop)
                elif nxt not in state:
                    state[nxt] = 1
                    path.append(nxt)
                    stack.append(iter(edges(nxt)))
                    break
            else:
                stack.pop()
                state[path.pop()] = 2
    return found


def _target_properties(raw: RawJob) -> dict[str, ReplicaProperties]:
    """Each target entry's ``properties:`` over the job's (the keys it names replace the job's),
    keyed by the target as Job.properties_for looks it up."""
    job = raw.properties.over(ReplicaProperties())
    out: dict[str, ReplicaProperties] = {}
    for text, props in raw.target_properties.items():
        target = next((t for t, _ in raw.targets if str(t) == text), None)
        if target is not None:
            out[str(target)] = props.over(job)
    return out
