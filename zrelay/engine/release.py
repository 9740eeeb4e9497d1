"""``zrelay release``: remove the holds zrelay keeps for jobs (see zrelay.anchors)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field

from zrelay import anchors
from zrelay.actions import Action, ActionKind
from zrelay.engine.executor import run_command
from zrelay.engine.fleet import Fleet
from zrelay.inventory.model import Job
from zrelay.errors import ZrelayError
from zrelay.zfs import commands


@dataclass
class ReleaseResult:
    """The holds of one job found on one host, and what became of them."""

    job: str
    host: str
    holds: dict[str, list[str]] = field(default_factory=dict)   # tag → snapshots
    actions: list[Action] = field(default_factory=list)
    released: bool = False
    error: str | None = None

    @property
    def commands(self) -> list[str]:
        """The exact command lines: what the dry run prints and the run runs."""
        return [line for action in self.actions for line in action.lines]


class Releaser:
    """Finds a job's holds on every place it touches and releases them (or, dry, says how)."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    async def release(self, jobs: Iterable[Job], dry_run: bool) -> list[ReleaseResult]:
        work = []
        for job in jobs:
            places = {(job.source.host, job.source.dataset)}
            places |= {(t.host, t.dataset) for t in job.host_targets}
            work += [self._one(job, host, dataset, dry_run) for host, dataset in sorted(places)]
        return list(await asyncio.gather(*work))

    async def _one(self, job: Job, host_name: str, dataset: str, dry_run: bool) -> ReleaseResult:
        result = ReleaseResult(job.name, host_name)
        host = self.fleet.host(host_name)
        try:
            caps = await host.capabilities()
            if not caps.holds or not await host.exists(dataset):
                return result
            held = await host.held_snapshots(dataset, job.recursive)
            holds = await host.holds(held) if held else []
            result.holds = anchors.job_holds(anchors.job_tag_prefix(job.name), holds)
            result.actions = [Action(ActionKind.RELEASE, host.name, snaps[0],
                                     (host.command(commands.release_argv(tag, snaps)),),
                                     reason=f"zrelay release {job.name}")
                              for tag, snaps in result.holds.items()]
            if not dry_run:
                for action in result.actions:
                    await run_command(self.fleet, action)
            result.released = not dry_run and bool(result.holds)
        except ZrelayError as exc:
            result.error = str(exc)
        return result
