"""A job's snapshot step: one atomic ``zfs snapshot`` when its time has come, between its hooks.

The step is planned into actions (pre-snapshot hook, snapshot, post-snapshot hook) that the dry
run prints and ``take`` runs: ``zrelay snapshot``, ``sync --snapshot`` and the daemon share it.
A recursive job's snapshot is one ``zfs snapshot -r``, so every dataset of the job is captured at
the same instant. When the job leaves datasets alone (zrelay.selection: ``exclude`` globs,
``zrelay:sync=false``), only the covered ones are snapshotted: one atomic ``zfs snapshot`` naming
each of them where the host takes several names, else one per covered subtree (zfs-fuse). A failed pre-hook skips the snapshot and fails the job with the hook's own
words; the post-hook runs whenever the pre-hook ran.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone

from zrelay.actions import Action, ActionKind
from zrelay.engine.fleet import Fleet
from zrelay.errors import HookFailed, ZrelayError
from zrelay.inventory.model import Inventory, Job
from zrelay.inventory.policy import Hooks
from zrelay.lifecycle.naming import name_time
from zrelay.lifecycle.schedule import due
from zrelay.selection import Selection
from zrelay.zfs import commands, quoting
from zrelay.zfs.model import Capabilities, DatasetState, Flavor

#: Seconds a hook's command may take beyond its own timeout before the connection gives up on it
#: (``timeout -k 5`` has ended it by then).
HOOK_GRACE = 15.0


@dataclass
class SnapshotStep:
    """What a job's snapshot step does: the snapshot's name (None: none is taken) and why."""

    job: Job
    name: str | None
    reason: str
    snapshot: Action | None = None
    pre: Action | None = None
    post: Action | None = None
    next_at: int | None = None        # when the schedule is next due (unix seconds), if it has one
    hooks: Hooks | None = field(default=None, repr=False)

    @property
    def actions(self) -> list[Action]:
        """In the order they run."""
        return [a for a in (self.pre, self.snapshot, self.post) if a is not None]


def newest_own(job: Job, inventory: Inventory, states: Mapping[str, DatasetState]) -> int | None:
    """When the newest of the job's own snapshots on its source dataset was taken (the time its
    name says, else its creation; None: it has none)."""
    state = states.get(job.source.dataset)
    if state is None:
        return None
    mine = job.own_snapshots(inventory.settings.snapshot_name) or job.select
    template = job.snapshot_template(inventory.settings.snapshot_name)
    found = [name_time(template, s.name) or s.creation for s in state.snapshots if mine.matches(s.name)]
    return max(found) if found else None


def snapshot_argvs(job: Job, name: str, chosen: Selection | None,
                   caps: Capabilities | None) -> tuple[list[list[str]], str]:
    """The ``zfs snapshot`` argvs that snapshot exactly the datasets ``chosen`` covers, and how,
    in words (see the module docstring). Without a selection, or with nothing excluded, the
    whole source: ``zfs snapshot [-r] root@name``."""
    root = job.source.dataset
    if chosen is None or chosen.everything:
        return ([commands.snapshot_argv([f"{root}@{name}"], job.recursive)],
                " (recursive: one atomic `zfs snapshot -r`)" if job.recursive else "")
    left = f"{len(chosen.excluded)} excluded dataset{'s' if len(chosen.excluded) != 1 else ''} left out"
    if caps is None or caps.flavor is not Flavor.ZFS_FUSE:
        names = [f"{ds}@{name}" for ds in chosen.included]
        return ([commands.snapshot_argv(names, False, caps=caps)],
                f" (one atomic `zfs snapshot` of the {len(names)} covered datasets; {left})")
    cover = chosen.cover()
    return ([commands.snapshot_argv([f"{ds}@{name}"], whole, caps=caps) for ds, whole in cover],
            f" ({len(cover)} `zfs snapshot` commands, one per covered subtree, as zfs-fuse takes one "
            f"name per command; {left})")


def plan_snapshot(fleet: Fleet, job: Job, now: datetime, *, force: bool,
                  newest: int | None = None, why_forced: str = "--snapshot",
                  chosen: Selection | None = None, caps: Capabilities | None = None) -> SnapshotStep:
    """The step for ``job`` at ``now``: due by its schedule (``newest``: its newest own snapshot's
    creation), or ``force`` (``--now``, or ``sync --snapshot`` of a job without a schedule).
    ``chosen``: the datasets the job covers (zrelay.selection), ``caps`` the source's."""
    inventory = fleet.inventory
    schedule = job.lifecycle.snapshot
    next_at: int | None = None
    if force or schedule is None:
        reason = f"{why_forced}: a new snapshot of the source"
    else:
        verdict = due(schedule, newest, int(now.timestamp()))
        next_at = verdict.next_at
        if not verdict.due:
            return SnapshotStep(job, None, verdict.reason, next_at=next_at)
        reason = verdict.reason
    if chosen is not None and not chosen.included:
        why = "; ".join(f"{e.dataset}: {e.because}" for e in chosen.excluded[:1])
        return SnapshotStep(job, None, f"no snapshot: every dataset of the job is excluded ({why})",
                            next_at=next_at)
    template = job.snapshot_template(inventory.settings.snapshot_name)
    name = inventory.settings.checked_snapshot_name(now.astimezone(timezone.utc), template)
    source = fleet.host(job.source.host)
    full = f"{job.source.dataset}@{name}"
    argvs, how = snapshot_argvs(job, name, chosen, caps)
    snapshot = Action(ActionKind.SNAPSHOT, source.name, job.source.dataset,
                      tuple(source.command(argv) for argv in argvs), reason=reason + how)
    step = SnapshotStep(job, name, reason, snapshot=snapshot, next_at=next_at, hooks=job.lifecycle.hooks)
    hooks = job.lifecycle.hooks
    if hooks is not None:
        env = {"ZRELAY_JOB": job.name, "ZRELAY_DATASET": job.source.dataset, "ZRELAY_SNAPSHOT": full}
        for which in ("pre_snapshot", "post_snapshot"):
            command = getattr(hooks, which)
            if command:
                action = Action(ActionKind.HOOK, source.name, which,
                                (quoting.quote(commands.hook_argv(command, hooks.timeout, env)),),
                                reason=f"the job's {which} hook (timeout {hooks.timeout:g} s)")
                setattr(step, "pre" if which == "pre_snapshot" else "post", action)
    return step


async def take(fleet: Fleet, step: SnapshotStep) -> None:
    """Run the step: pre-hook, snapshot, post-hook. The post-hook runs whenever the pre-hook ran
    (also after a failure); the first failure is raised once the post-hook has run."""
    failure: ZrelayError | None = None
    if step.pre is not None:
        try:
            await run_hook(fleet, step.pre, step.hooks)
        except ZrelayError as exc:
            failure = exc
    if failure is None and step.snapshot is not None:
        host = fleet.host(step.snapshot.host)
        try:
            for line in step.snapshot.lines:
                await host.zfs_line(line, dataset=step.snapshot.subject)
            fleet.states.forget(step.snapshot.host, step.snapshot.subject)
        except ZrelayError as exc:
            failure = exc
    if step.post is not None and (step.pre is not None or failure is None):
        try:
            await run_hook(fleet, step.post, step.hooks)
        except ZrelayError as exc:
            failure = failure or exc
    if failure is not None:
        raise failure


async def run_hook(fleet: Fleet, action: Action, hooks: Hooks | None) -> None:
    """One hook on its host, over zrelay's own connection; a non-zero exit is a HookFailed with
    the hook's last words on stderr."""
    timeout = (hooks.timeout if hooks else 60.0) + HOOK_GRACE
    host = fleet.host(action.host)
    for line in action.lines:
        # the remote `timeout -k` ends the hook first; the connection's own limit is a backstop
        result = await host.conn.run(line, check=False, timeout=timeout)
        if result.exit_status in (124, 137):
            limit = hooks.timeout if hooks else 60.0
            raise HookFailed(action.host, action.subject, f"killed after its timeout of {limit:g} s")
        if result.exit_status != 0:
            said = " | ".join(line for line in result.stderr.strip().splitlines()[-3:] if line.strip())
            raise HookFailed(action.host, action.subject,
                             f"exit {result.exit_status}" + (f": {said}" if said else ""))
