"""A host dataset as the receiving end of a job: relay or direct streams into ``zfs receive``.

Planning reads both ends (one listing each per run, see fleet.StateCache),
asks the pure planner (zrelay.plan) and turns its plans into actions: create
the parent of a new replica, roll back (only where the plan says, with
``--rollback``), one STREAM per send step with its exact command lines (the
replica's properties given at receive, or set after a full stream where the
host cannot: fixup_action), and, as expected actions, securing
the new base (bookmark and holds, zrelay.anchors). The executor runs those
very actions; this module also moves a stream's bytes and looks at the
target when a stream failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from zrelay import anchors, selection, units
from zrelay.actions import Action, ActionKind, Stream
from zrelay.engine.fleet import Fleet, settled
from zrelay.engine.options import SyncOptions
from zrelay.engine.receiver import OnBytes, TargetPlan
from zrelay.errors import (ArrivedDespiteFailure, BadStream, DatasetNotFound, HostsUnreachable, NoResumableState,
                           PlanRefused, TransferFailed, TransportError, ZfsError, ZrelayError)
from zrelay.events import Outcome
from zrelay.inventory.model import Endpoint, Job
from zrelay.paths import throttle, wire
from zrelay.paths.direct import LoginCheck, direct
from zrelay.paths.relay import relay
from zrelay.plan import Plan, PlanKind, SendStep, common_base, describe, plan, plan_recursive, target_after
from zrelay.transport.host import RemoteHost
from zrelay.zfs import commands, direct_ssh, parse
from zrelay.zfs.model import Capabilities, DatasetState, ReplicaProperties, Snapshot

#: Why a fixup_action runs; what it does follows.
FIXUP_REASON = "a new replica is not mounted and keeps none of the source's paths: "
#: Stream options used when a job names none (inventory ``send_options``), where both ends have them.
DEFAULT_SEND_OPTIONS = ("large_blocks", "embedded", "compressed")
#: Names per command: keeps a command line far below any ARG_MAX or sshd limit.
CHUNK = 200


class HostReceiver:
    """``job`` towards one host target (see the module docstring)."""

    def __init__(self, fleet: Fleet, job: Job, target: Endpoint, direct_mode: bool) -> None:
        self.fleet = fleet
        self.job = job
        self.target = target
        self.name = str(target)
        self.host: str | None = target.host
        self.direct = direct_mode
        self.source = fleet.host(job.source.host)
        self.dest = fleet.host(target.host)
        self._plans: list[Plan] = []
        self.limit = throttle.stream_limit(fleet.inventory, job=job, source=job.source.host, target=target.host)
        #: a direct stream's pipeline at another rate: its share of its budget groups when it starts
        self._at_rate: dict[Stream, Callable[[int | None], str]] = {}

    async def lock_key(self) -> str:
        return await self.fleet.lock_key(self.target.host, self.target.dataset)

    def forget(self) -> None:
        self.fleet.states.forget(self.dest.name, self.target.dataset)

    # --- planning ------------------------------------------------------------------------

    async def prepare(self) -> None:
        await self._target_states()

    async def plan(self, source: Mapping[str, DatasetState], options: SyncOptions) -> TargetPlan:
        job, target = self.job, self.target
        dst_states, dst_caps = await self._target_states()
        inputs = (job, target, source, dst_states, options.rollback, dst_caps.resume, self.source.name,
                  self.dest.name)
        memo = self.fleet.plans   # a long-lived fleet's: unchanged listings, the plans of last time
        plans, chosen, source, dst_states = (memo.call(("host", job.name, self.name), plan_target, *inputs)
                                             if memo is not None else plan_target(*inputs))
        plans, source, dst_states = list(plans), dict(source), dict(dst_states)   # the kept ones stay as they are
        excluded = [(f"{self.source.name}:{e.dataset}", e.because) for e in chosen.excluded]
        self._plans = plans
        await self._check_encryption(plans, options.decrypt)
        if self.direct and any(p.transfers for p in plans):
            await self._check_direct()
        actions: list[Action] = []
        resumes = any(p.kind is PlanKind.RESUME for p in plans)
        # every dataset's streams are prepared at once (estimates, wire settings: round trips), kept in plan order
        transferring = [p for p in plans if p.transfers]
        for built, replan in await asyncio.gather(*(self._transfer_actions(p, options, source)
                                                    for p in transferring)) if transferring else ():
            actions += built
            resumes = resumes or replan
        actions = with_fixup_warning(actions, self.dest.name, dst_caps, self.target.dataset)
        actions = await self._unsent_warning(actions)
        secure: list[Action] = []
        if any(p.transfers for p in plans):
            after = target_after(plans, dst_states, resumed_snapshots(actions, source))
            secure = await self._secure_actions(source, after, expected=True)
        refused = [p for p in plans if p.refused]
        return TargetPlan(
            kind=overall_kind(plans), summary=summarise(plans, len(excluded)), actions=actions, secure=secure,
            refusal=refusal(refused) if refused else None, refused_host=self.dest.name if refused else None,
            resumes=resumes, dry_outcome=dry_outcome(plans), details=plans, excluded=excluded)

    async def _unsent_warning(self, actions: list[Action]) -> list[Action]:
        """The run's warning line when the job sends properties but its source cannot (sent_properties)."""
        first = next((i for i, a in enumerate(actions) if a.kind is ActionKind.STREAM), None)
        if first is None:
            return actions
        caps = await self.source.capabilities()
        if caps.send_props or not self.job.properties_for(self.target).send:
            return actions
        out = list(actions)
        out[first] = replace(out[first], report=unsent_warning(self.source.name, caps))
        return out

    async def _target_states(self) -> tuple[dict[str, DatasetState], Capabilities]:
        job, target = self.job, self.target
        states, caps = await both(self.fleet.states.future(self.dest, target.dataset, job.recursive),
                                  self.dest.capabilities())
        return states, caps

    async def _transfer_actions(self, p: Plan, options: SyncOptions,
                                source: Mapping[str, DatasetState]) -> tuple[list[Action], bool]:
        """The actions of one transferring plan, in order; True when what is left must be planned
        again once they ran (a dead resume token's partial receive is discarded first)."""
        dest = self.dest
        volume = source.get(p.source, DatasetState.absent(p.source)).volume
        out: list[Action] = []
        if p.kind is PlanKind.FULL and p.target == self.target.dataset:
            parent = await dest.missing_parent(p.target)
            if parent is not None:
                out.append(Action(ActionKind.CREATE_PARENT, dest.name, parent,
                                  (dest.command(commands.create_argv(parent, parents=True)),),
                                  reason=f"{p.target_at} is received below {dest.name}:{parent}, which does not exist"))
        if p.rollback_to is not None:
            out.append(Action(ActionKind.ROLLBACK, dest.name, f"{p.target}@{p.rollback_to.name}",
                              (dest.command(commands.rollback_argv(f"{p.target}@{p.rollback_to.name}",
                                                                   destroy_later=True)),),
                              reason=p.reason))
        try:
            streams = await self._streams(p, options, volume)
        except NoResumableState as exc:   # ``send -nvP -t`` says the token names a snapshot gone since
            if p.kind is not PlanKind.RESUME:
                raise
            out.append(await self._discard_partial(p, options, first_line(str(exc))))
            return out, True
        src_caps, dst_caps = await asyncio.gather(self.source.capabilities(), dest.capabilities())
        props = commands.receive_properties(sent_properties(self.job.properties_for(self.target), src_caps),
                                            volume=volume, top=self.job.is_top(p.source))
        for i, stream in enumerate(streams):
            creates = p.kind is PlanKind.FULL and i == 0   # a full stream, or a clone's from its origin
            out.append(Action(ActionKind.STREAM, self.source.name, p.target, stream=stream, reason=p.reason,
                              waits_for=p.clone_of if creates else ""))
            if creates and props and not dst_caps.receive_props:
                out.append(fixup_action(dest, p.target, props))
        return out, False

    async def _streams(self, p: Plan, options: SyncOptions, volume: bool) -> list[Stream]:
        source, dest, job = self.source, self.dest, self.job
        src_caps, dst_caps = await asyncio.gather(source.capabilities(), dest.capabilities())
        wanted = job.send_options if job.send_options is not None else DEFAULT_SEND_OPTIONS
        send_options = commands.stream_options(wanted, src_caps, dst_caps)
        raw = p.encrypted and not options.decrypt
        ssh = await self._login_check().stream_ssh() if self.direct else None
        tools = await source.installed_tools()
        progress = self.direct and "pv" in tools
        limit = self.limit
        rate = limit.alone
        out: list[Stream] = []
        for label, step, (send_argv, recv_argv) in zip(stream_labels(p), plan_steps(p),
                                                         stream_argvs(p, src_caps, dst_caps, raw=raw,
                                                                      send_options=send_options,
                                                                      properties=sent_properties(
                                                                          job.properties_for(self.target), src_caps),
                                                                      volume=volume,
                                                                      top=job.is_top(p.source))):
            if p.kind is PlanKind.RESUME:
                estimate, goal = await self._check_resume(src_caps, send_argv)
            else:
                estimate = await self._estimate(src_caps, step, send_argv)
                goal = step.snapshot.guid if step is not None else None
            link = await wire.negotiate(job, source, dest, send_argv)  # compression/buffer (paths/wire.py)
            at_rate: Callable[[int | None], str] | None = None
            if ssh is not None:
                def at_rate(r: int | None, link: wire.Wire = link, send: list[str] = send_argv,
                            recv: list[str] = recv_argv, ssh: list[str] = ssh) -> str:
                    return link.direct_pipeline(source, dest, send, ssh, recv, progress=progress,
                                                limiter=throttle.direct_limiter(limit, r, source.name, tools))
                source_command, target_command = at_rate(rate), None
            else:
                source_command = link.source_command(source, send_argv)
                target_command = link.target_command(dest, recv_argv)
            stream = Stream(label, dest.name, p.target, tuple(send_argv), source_command, target_command,
                            goal_guid=goal, estimate=estimate, full=step is not None and step.base is None,
                            resume=p.kind is PlanKind.RESUME, bandwidth=rate, limit=limit.describe())
            if at_rate is not None and limit.groups:
                self._at_rate[stream] = at_rate
            out.append(stream)
        return out

    async def _check_resume(self, caps: Capabilities, send_argv: list[str]) -> tuple[int | None, int | None]:
        """Is the token still usable? ``send -nvP -t`` says so (and how much is left) before
        anything is sent; a dead token raises NoResumableState. Returns (estimate, GUID of the
        snapshot the resumed stream brings: the token's ``toguid``)."""
        if not caps.send_estimate:
            return None, None
        result = await self.source.zfs(commands.estimate_argv(send_argv))
        estimate = goal = None
        with contextlib.suppress(ValueError):
            estimate = parse.parse_send_estimate(result.stdout)
        with contextlib.suppress(ValueError):
            toguid = parse.parse_resume_token_contents(result.stdout).get("toguid")
            goal = toguid if isinstance(toguid, int) and not isinstance(toguid, bool) else None
        return estimate, goal

    async def _estimate(self, caps: Capabilities, step: SendStep | None, send_argv: list[str]) -> int | None:
        """Stream size for progress bars: ``send -nvP`` where the host has it, else a full
        stream's snapshot size (close: a full stream carries what the snapshot references)."""
        if not caps.send_estimate:
            if step is not None and step.base is None and step.snapshot.referenced:
                return step.snapshot.referenced
            return None
        try:
            return parse.parse_send_estimate((await self.source.zfs(commands.estimate_argv(send_argv))).stdout)
        except (ZrelayError, ValueError):
            return None  # an estimate is a nicety; the transfer itself will tell the truth

    async def _discard_partial(self, p: Plan, options: SyncOptions, why: str) -> Action:
        """The partial receive's token is dead: discard it where allowed (the action says why),
        else refuse with what the user can do."""
        allowed, reason = discard_decision(p, options.abort_partial, "its resume token names a snapshot that "
                                           f"no longer exists on {self.source.name}")
        if not allowed:
            raise NoResumableState(self.dest.name, reason, dataset=p.target)
        return Action(ActionKind.ABORT_RECEIVE, self.dest.name, p.target,
                      (self.dest.command(commands.abort_receive_argv(p.target, caps=await self.dest.capabilities())),),
                      reason=reason, report=discarded_report(p, why))

    async def _check_encryption(self, plans: list[Plan], decrypt: bool) -> None:
        if any(p.encrypted for p in plans) and not decrypt:
            src_caps, dst_caps = await asyncio.gather(self.source.capabilities(), self.dest.capabilities())
            refused = encryption_refusal(plans, (self.source.name, src_caps), (self.dest.name, dst_caps), decrypt)
            if refused:
                raise PlanRefused(refused)

    async def _check_direct(self) -> None:
        """Say why direct mode cannot work before anything is sent (once per host pair and run)."""
        if not has_direct_credentials(self.source):
            raise TransferFailed(
                f"direct mode: {self.source.name} has no direct_identity_file and there is no ssh agent to "
                "forward (SSH_AUTH_SOCK is not set); start an agent with the key the targets accept, "
                "or use relay mode (--relay)", self.source.name)
        await asyncio.shield(self._login_check().outcome)

    def _login_check(self) -> LoginCheck:
        return login_check(self.fleet, self.source, self.dest)

    # --- securing the base (zrelay.anchors) ------------------------------------------------

    async def _secure_actions(self, src_states: Mapping[str, DatasetState],
                              dst_states: Mapping[str, DatasetState], *, expected: bool) -> list[Action]:
        """Bookmark the new bases on the source and move the job's hold onto them on both sides.
        The holds are listed now (before the transfer for the expected actions): a transfer
        adds none, and another run cannot move this job's holds while this one holds the target."""
        job, target, source, dest = self.job, self.target, self.source, self.dest
        src_caps, dst_caps = await asyncio.gather(source.capabilities(), dest.capabilities())
        if not (src_caps.bookmarks or src_caps.holds or dst_caps.holds):
            return []
        secured = anchors.secured_bases(src_states, dst_states, job.source.dataset, target.dataset)
        out: list[Action] = []
        why = "the newest common snapshot stays a valid incremental base"
        if src_caps.bookmarks:
            todo = anchors.bookmarks_to_create(src_states, [s for s, _ in secured.pairs])
            for chunk in chunks(todo):
                out.append(Action(ActionKind.BOOKMARK, source.name, chunk[0][0],
                                  (source.command(commands.bookmarks_argv(chunk, caps=src_caps)),),
                                  reason=why, expected=expected))
        tag = anchors.hold_tag(job.name, str(target))
        sides = [(host, bases, scope, root) for host, caps, bases, scope, root in (
            (source, src_caps, [s.full_name for s, _ in secured.pairs], secured.source_scope, job.source.dataset),
            (dest, dst_caps, [t.full_name for _, t in secured.pairs], secured.target_scope, target.dataset))
            if caps.holds and scope]
        listed = await asyncio.gather(*(self._holds(host, root, scope) for host, _, scope, root in sides))
        for (host, bases, scope, _), held in zip(sides, listed):
            moves = anchors.hold_moves(tag, bases, held, scope)
            for chunk in chunks(list(moves.hold)):   # first: the chain is never without a hold
                out.append(Action(ActionKind.HOLD, host.name, chunk[0],
                                  (host.command(commands.hold_argv(tag, chunk)),), reason=why, expected=expected))
            for chunk in chunks(list(moves.release)):
                out.append(Action(ActionKind.RELEASE, host.name, chunk[0],
                                  (host.command(commands.release_argv(tag, chunk)),),
                                  reason="the job's older base is no longer needed", expected=expected))
        return out

    async def _holds(self, host: RemoteHost, root: str, scope: Sequence[str]) -> list[tuple[str, str]]:
        """(snapshot, tag) of the user holds on snapshots of ``scope`` under ``root``."""
        if not scope:
            return []
        try:
            held = await host.held_snapshots(root, self.job.recursive)
        except DatasetNotFound:
            return []
        wanted = set(scope)
        return await host.holds([s for s in held if s.partition("@")[0] in wanted]) if held else []

    async def secure_again(self) -> list[Action]:
        job, target = self.job, self.target
        self.fleet.states.forget(self.source.name, job.source.dataset)
        self.forget()
        src_states, dst_states = await asyncio.gather(
            self.fleet.states.get(self.source, job.source.dataset, job.recursive),
            self.fleet.states.get(self.dest, target.dataset, job.recursive))
        chosen = selection.of_job(job, src_states)
        return await self._secure_actions(chosen.keep(src_states), chosen.keep_target(target.dataset, dst_states),
                                          expected=False)

    # --- moving bytes ----------------------------------------------------------------------

    async def stream(self, action: Action, on_bytes: OnBytes, notes: list[str], options: SyncOptions) -> bool:
        stream = action.stream
        assert stream is not None
        plan_ = next((p for p in self._plans if p.target == stream.target_dataset), None)
        try:
            try:
                if stream.target_command is None:
                    async with throttle.REGISTRY.fixed(self.limit) as rate:
                        command = self._direct_command(stream, rate, notes)
                        await direct(self.source, command, self.dest.name, on_bytes,
                                     target_dataset=stream.target_dataset)
                else:
                    async with throttle.REGISTRY.stream(self.limit) as held:
                        await relay(self.source, stream.source_command, self.dest, stream.target_command, on_bytes,
                                    target_dataset=stream.target_dataset, throttle=held)
            except ZrelayError as exc:
                await self._settle(exc, stream, plan_, notes)
        except ZrelayError as exc:
            if not stream.resume or plan_ is None or not unresumable(exc):
                raise
            why = first_line(str(exc.cause if isinstance(exc, TransferFailed) and exc.cause else exc))
            allowed, reason = discard_decision(plan_, options.abort_partial, why)
            if not allowed:
                raise NoResumableState(self.dest.name, reason, dataset=plan_.target) from None
            await self.dest.abort_receive(plan_.target)
            notes.append(f"planned again: {discarded_report(plan_, why)}")
            self.forget()
            return True
        self.forget()
        return False

    def _direct_command(self, stream: Stream, rate: int | None, notes: list[str]) -> str:
        """The planned pipeline, or, when other streams of its budget groups run as it starts,
        the same pipeline at its share (a direct stream's rate cannot change once it runs)."""
        at_rate = self._at_rate.get(stream)
        if at_rate is None or rate == stream.bandwidth:
            return stream.source_command
        groups = ", ".join(g for g, _ in self.limit.groups)
        notes.append(f"{stream.label}: started at {units.human_rate(rate)}, its share of group {groups} "
                     f"(planned {units.human_rate(stream.bandwidth)}: other streams were running there); "
                     "a direct stream keeps the rate it starts with")
        return at_rate(rate)

    async def _settle(self, exc: ZrelayError, stream: Stream, p: Plan | None, notes: list[str]) -> None:
        """After a failed stream, look at the target before saying anything; returns when the
        stream arrived after all, else raises (the error, explained by that look).

        A ``zfs send`` whose session dies after its last byte (exit status lost, killed, a
        dropped connection) fails the pipe, yet ``zfs receive`` has the whole stream: a
        snapshot with the step's GUID on the target means the step is done, and what went
        wrong on the sender is kept as a warning. Otherwise the target tells why a receive
        failed better than zfs's "invalid backup stream" does (see parse.receive_failure_hint).
        """
        if unresumable(exc) or p is None:
            raise exc
        job, target, dest = self.job, self.target, self.dest
        try:
            self.forget()
            src_states, dst_states = await asyncio.gather(
                self.fleet.states.get(self.source, job.source.dataset, job.recursive),
                self.fleet.states.get(dest, target.dataset, job.recursive))
        except ZrelayError:
            raise exc from None   # the target cannot be asked: the failure stands as it was
        after = dst_states.get(p.target) or DatasetState.absent(p.target)
        landed = next((s for s in after.snapshots if s.guid == stream.goal_guid), None)
        if landed is not None and stream.goal_guid is not None:
            why = exc.sender_note if isinstance(exc, TransferFailed) and exc.sender_note else first_line(str(exc))
            notes.append(str(ArrivedDespiteFailure(f"{dest.name}:{landed.full_name}", why)))
            return
        if not (isinstance(exc, TransferFailed) and isinstance(exc.cause, ZfsError)
                and exc.failed_host == dest.name):
            raise exc
        source_state = src_states.get(p.source) or DatasetState.absent(p.source)
        step = next((s for s, st in zip(plan_steps(p), stream_labels(p)) if st == stream.label), None)
        base = step.base if step is not None else p.base
        hint = parse.receive_failure_hint(
            p.target_at, after, base.guid if base is not None else None,
            [s.guid for s in source_state.snapshots] + [b.guid for b in source_state.bookmarks])
        if hint is None:
            raise exc
        if not isinstance(exc.cause, BadStream) and exc.cause.hint:
            hint = f"{exc.cause.hint}; {hint}"
        raise exc.reglossed(hint) from None


def make_plans(job: Job, target: Endpoint, src_states: Mapping[str, DatasetState],
               dst_states: Mapping[str, DatasetState], *, rollback: bool, resume_supported: bool,
               source_host: str, target_host: str) -> list[Plan]:
    """The pure planner's plans for ``job`` towards ``target`` from both ends' listings."""
    src_root = src_states.get(job.source.dataset)
    if src_root is None or not src_root.exists:
        raise DatasetNotFound(source_host, f"cannot open '{job.source.dataset}': dataset does not exist",
                              job.source.dataset)
    kw = dict(select=job.select, rollback=rollback, resume_supported=resume_supported,
              source_host=source_host, target_host=target_host)
    chosen = selection.of_job(job, src_states)   # the exclude globs and zrelay:sync=false
    if job.recursive:
        return plan_recursive(dict(src_states), dict(dst_states), job.source.dataset, target.dataset,
                              selection=chosen, **kw)
    if not chosen.included:
        return []
    dst = dst_states.get(target.dataset, DatasetState.absent(target.dataset))
    return [plan(src_root, dst, **kw)]   # type: ignore[arg-type]


def plan_target(job: Job, target: Endpoint, source: Mapping[str, DatasetState],
                dst_states: Mapping[str, DatasetState], rollback: bool, resume_supported: bool,
                source_host: str, target_host: str
                ) -> tuple[list[Plan], selection.Selection, dict[str, DatasetState], dict[str, DatasetState]]:
    """make_plans, the job's selection, and both listings without what the job leaves alone (it is
    not anchored either: its holds and bookmarks stay as they are). Pure, so a long-lived fleet
    keeps the answer while the listings stay the same (fleet.PureMemo)."""
    plans = make_plans(job, target, source, dst_states, rollback=rollback, resume_supported=resume_supported,
                       source_host=source_host, target_host=target_host)
    chosen = selection.of_job(job, source)
    return plans, chosen, chosen.keep(source), chosen.keep_target(target.dataset, dst_states)


async def plan_host_target(fleet: Fleet, job: Job, target: Endpoint, *, rollback: bool = False
                           ) -> tuple[list[Plan], dict[str, DatasetState], dict[str, DatasetState]]:
    """Plan ``job`` towards ``target`` without acting (``status``): the plans and both listings."""
    source, dest = fleet.host(job.source.host), fleet.host(target.host)
    # the target's listing probed its capabilities already: awaited after it, they cost no task
    src_states, dst_states = await both(fleet.states.future(source, job.source.dataset, job.recursive),
                                        fleet.states.get(dest, target.dataset, job.recursive))
    dst_caps = await dest.capabilities()
    plans = make_plans(job, target, src_states, dst_states, rollback=rollback, resume_supported=dst_caps.resume,
                       source_host=source.name, target_host=dest.name)
    return plans, src_states, dst_states


def encryption_refusal(plans: Sequence[Plan], source: tuple[str, Capabilities], target: tuple[str, Capabilities],
                       decrypt: bool) -> str | None:
    """Encrypted datasets travel raw (-w): why not, when an end cannot do that (None: they can).

    A non-raw send of an encrypted dataset succeeds silently and writes an
    unencrypted replica; that only happens with --decrypt.
    """
    encrypted = [p for p in plans if p.encrypted and p.transfers and p.kind is not PlanKind.RESUME]
    if not encrypted or decrypt:
        return None
    lacking = [(name, caps) for name, caps in (source, target) if not caps.raw_send]
    if not lacking:
        return None
    return (f"{encrypted[0].source_at} is natively encrypted and is sent raw (zfs send -w) to stay "
            f"encrypted, but {' and '.join(n for n, _ in lacking)} cannot do raw sends "
            f"({lacking[0][1].flavor.value}). Options: replicate to a host running OpenZFS ≥ 0.8 | "
            "or pass --decrypt to send it decrypted, which writes an UNENCRYPTED replica")


def discard_decision(p: Plan, abort_partial: bool, why: str) -> tuple[bool, str]:
    """Whether the partial receive of ``p`` may be discarded (``zfs receive -A``), and the reason.

    Discarding loses nothing a fresh send would keep when the target has no snapshot
    yet (the partial receive was of a full stream), or when the user asked.
    """
    if p.partial_full or abort_partial:
        return True, (f"discarding the partial receive into {p.target_at} (`zfs receive -A`), which cannot be "
                      f"resumed ({why}), then sending again from the newest common snapshot")
    return False, (f"the interrupted receive into {p.target_at} cannot be resumed ({why}). Its snapshots are "
                   f"intact; `zrelay sync --abort-partial` discards the partial receive "
                   f"(`zfs receive -A {p.target}`) and sends again from the newest common snapshot")


def resumed_snapshots(actions: Sequence[Action], source: Mapping[str, DatasetState]) -> dict[str, Snapshot]:
    """Target dataset → the source snapshot a resumed stream brings (its token's ``toguid``)."""
    out: dict[str, Snapshot] = {}
    for action in actions:
        stream = action.stream
        if stream is None or not stream.resume or stream.goal_guid is None:
            continue
        for state in source.values():
            found = next((s for s in state.snapshots if s.guid == stream.goal_guid), None)
            if found is not None:
                out[stream.target_dataset] = found
                break
    return out


def discarded_report(p: Plan, why: str) -> str:
    """What the result says once a dead partial receive was discarded."""
    return (f"discarded the partial receive into {p.target_at} (`zfs receive -A`), which could not be "
            f"resumed: {why}")


def plan_steps(p: Plan) -> list[SendStep | None]:
    return list(p.steps) if p.kind is not PlanKind.RESUME else [None]


def stream_argvs(p: Plan, src_caps: Capabilities, dst_caps: Capabilities, *, raw: bool = False,
                 send_options: tuple[str, ...] = (), properties: ReplicaProperties | None = None,
                 volume: bool = False, top: bool = True) -> list[tuple[list[str], list[str]]]:
    """(send argv, receive argv) for each stream of a plan; a resumed stream's flags come from its
    token. ``-F`` only where the planner decided it (``Plan.force_receive``, said in its reason).

    ``properties`` (the job's for this target; None leaves properties to zfs): ``send -p`` when
    they travel, and every receive, full, incremental or resumed, gets the same ``-o``/``-x``
    (commands.receive_properties) where the target host takes them; elsewhere fixup_action sets
    them after the full receive instead."""
    resumable = dst_caps.resume
    props = None
    if properties is not None:
        properties = sent_properties(properties, src_caps)
    if properties is not None and dst_caps.receive_props:
        props = commands.receive_properties(properties, volume=volume, top=top)
    # zfs refuses `send -p` of an encrypted dataset unless raw: a --decrypt send carries no properties
    send_props = properties is not None and properties.send and (raw or not p.encrypted)
    if p.kind is PlanKind.RESUME:
        assert p.resume_token is not None
        return [(commands.send_argv("", caps=src_caps, resume_token=p.resume_token),
                 commands.receive_argv(p.target, caps=dst_caps, resumable=True, props=props))]
    out = []
    for step in p.steps:
        base = step.base.full_name if step.base is not None else None
        send = commands.send_argv(step.snapshot.full_name, caps=src_caps, base=base,
                                  intermediates=step.intermediates, raw=raw, options=send_options,
                                  props=send_props)
        recv = commands.receive_argv(p.target, caps=dst_caps, force=p.force_receive and step.base is not None,
                                     resumable=resumable, props=props)
        out.append((send, recv))
    return out


def sent_properties(props: ReplicaProperties, src: Capabilities) -> ReplicaProperties:
    """``props`` as the source can send them: a zfs whose stopped ``send -p`` leaves its snapshots
    busy (zfs-fuse: until its daemon restarts, so they could never be pruned) sends without -p."""
    return props if src.send_props or not props.send else replace(props, send=False)


def unsent_warning(host: str, caps: Capabilities) -> str:
    """What the run says when sent_properties dropped ``send``."""
    return (f"warning: {host} ({caps.flavor.value}) sends without -p (a stopped `zfs send -p` leaves its "
            "snapshots busy there until zfs restarts): the replica does not carry the source's properties")


def fixup_action(dest: RemoteHost, dataset: str, props: commands.ReceiveProperties) -> Action:
    """Where the target host has no ``zfs receive -o/-x`` (zfs-fuse): the same properties set and
    inherited right after the full receive (commands.replica_fixup_argvs). Set and inherited
    values stay through later incremental receives, as ``-o``/``-x`` would."""
    lines = tuple(dest.command(argv) for argv in commands.replica_fixup_argvs(dataset, props))
    return Action(ActionKind.SET_PROPERTIES, dest.name, dataset, lines,
                  reason=FIXUP_REASON + fixup_text(props))


def fixup_text(props: commands.ReceiveProperties) -> str:
    done = []
    if props.set:
        done.append("set " + ", ".join(f"{k}={v}" for k, v in props.set.items()))
    if props.exclude:
        done.append("inherited " + ", ".join(props.exclude))
    return " and ".join(done)


def with_fixup_warning(actions: list[Action], host: str, caps: Capabilities, target_root: str) -> list[Action]:
    """``actions`` with the run's one warning line on the first fixup_action: what was done instead
    of ``receive -o/-x``. zfs-fuse does not let a dataset below a replica that received properties
    inherit a property it received itself (``zfs inherit`` leaves the received value in force, as
    seen on zfs-fuse 0.7), so the line says where that leaves a recursive job's children."""
    fixups = [i for i, a in enumerate(actions) if a.kind is ActionKind.SET_PROPERTIES]
    if not fixups:
        return actions
    first = actions[fixups[0]]
    text = first.reason.removeprefix(FIXUP_REASON)
    children = any(actions[i].subject != target_root for i in fixups)
    note = (f"warning: {host} ({caps.flavor.value}) cannot set properties at receive (no `zfs receive -o/-x`): "
            f"{text} right after the full receive instead")
    if children:
        note += (f"; below {target_root} a dataset keeps the values it received despite the inherit "
                 f"(a {caps.flavor.value} limit), and stays unmounted (canmount=noauto)")
    out = list(actions)
    out[fixups[0]] = replace(first, report=note)
    return out


def stream_labels(p: Plan) -> list[str]:
    if p.kind is PlanKind.RESUME:
        return [f"{p.target} (resume)"]
    return [step_label(s) for s in p.steps]


def step_label(step: SendStep) -> str:
    if step.base is None:
        return f"{step.snapshot.full_name} (full)"
    flag = "-I" if step.intermediates else "-i"
    if step.base.dataset != step.snapshot.dataset:   # a clone, from its origin
        return f"{step.base.full_name} → {step.snapshot.full_name} ({flag}, clone)"
    return f"{step.snapshot.dataset}{step.base.ref} → @{step.snapshot.name} ({flag})"


def has_direct_credentials(source: RemoteHost) -> bool:
    """A key of its own (direct_identity_file) or an agent that can be forwarded to it."""
    return bool(source.host.direct_identity_file or os.environ.get("SSH_AUTH_SOCK"))


def direct_ssh_argvs(source: RemoteHost, dest: RemoteHost) -> tuple[list[str], list[str] | None]:
    """The source's ssh to the target (the target's address as the source sees it), and the
    fallback for ``direct_ciphers: auto``: AES-GCM first, else ssh's own order for a pair where
    an end has no AES instructions. ``default`` and a list of the user's have no fallback."""
    def ssh(ciphers: Sequence[str] | str | None) -> list[str]:
        return direct_ssh.ssh_argv(dest.host.peer_address, port=dest.host.port, user=dest.host.user,
                                   identity_file=source.host.direct_identity_file,
                                   known_hosts=source.host.direct_known_hosts, ciphers=ciphers)
    setting = source.host.direct_ciphers
    if setting == "auto":
        return ssh(direct_ssh.AES_FIRST_CIPHERS), ssh(None)
    return ssh(None if setting == "default" else setting), None


_LOGIN_CHECKS = "direct-login-checks"


def login_check(fleet: Fleet, source: RemoteHost, dest: RemoteHost) -> LoginCheck:
    """The login check from ``source`` to ``dest``, started once per pair and run (its ssh master
    is ended when the fleet closes). ``sync`` starts it early, before anyone knows whether there
    is something to send; its outcome counts only where a stream would go that way."""
    checks: dict[tuple[str, str], LoginCheck] = fleet.per_run.setdefault(_LOGIN_CHECKS, {})
    key = (source.name, dest.name)
    check = checks.get(key)
    if check is None:
        check = checks[key] = LoginCheck(source, dest, *direct_ssh_argvs(source, dest))
        fleet.on_close(check.close)
    return check


def overall_kind(plans: Sequence[Plan]) -> str:
    kinds = {p.kind for p in plans}
    for kind in (PlanKind.DIVERGED, PlanKind.NO_COMMON_BASE, PlanKind.RESUME, PlanKind.FULL,
                 PlanKind.INCREMENTAL, PlanKind.NO_SOURCE_SNAPSHOT):
        if kind in kinds:
            return kind.value
    return PlanKind.NOOP.value


def dry_outcome(plans: Sequence[Plan]) -> Outcome:
    if any(p.refused for p in plans):
        return Outcome.REFUSED
    if any(p.transfers for p in plans):
        return Outcome.SKIPPED
    return Outcome.NOOP


def summarise(plans: Sequence[Plan], excluded: int = 0) -> str:
    """A short line for tables: the plan itself for one dataset, counts per kind for many; the
    datasets the job leaves alone (zrelay.selection) are counted as excluded."""
    left = f"{excluded} excluded" if excluded else ""
    if len(plans) == 1:
        return describe(plans[0]) + (f" ({left})" if left else "")
    if not plans:
        return f"nothing to replicate: every dataset is excluded ({left})" if left else "nothing to replicate"
    counts: dict[str, int] = {}
    for p in plans:
        counts[p.kind.value] = counts.get(p.kind.value, 0) + 1
    return f"{len(plans)} datasets: " + ", ".join([*(f"{n} {k}" for k, n in counts.items()), *([left] if left else [])])


def refusal(refused: Sequence[Plan]) -> str:
    """The first refused plan's kind, reason (which names both ends) and options."""
    first = refused[0]
    text = f"{first.kind.value.replace('-', ' ')}: {first.reason}"
    if first.options:
        text += " Options: " + " | ".join(first.options)
    if len(refused) > 1:
        text += f" (+{len(refused) - 1} more datasets refused)"
    return text


T = TypeVar("T")
U = TypeVar("U")


async def both(first: Awaitable[T], second: Awaitable[U]) -> tuple[T, U]:
    """Both results, like gather, but when both ends fail to connect the error names both hosts
    (gather would report only the first, and a fix of it would just show the next).

    When ``first`` is a future already under way (a shared listing, see StateCache.future),
    ``second`` runs in this task meanwhile and the future is awaited shielded: no task, no
    gather, which a no-change cycle over a thousand targets would pay three times a target."""
    a: object
    b: object
    if asyncio.isfuture(first):
        try:
            b = await second
        except Exception as exc:   # as gather(return_exceptions=True): the other one still counts
            b = exc
        try:
            a = await settled(first)
        except Exception as exc:
            a = exc
    else:
        a, b = await asyncio.gather(first, second, return_exceptions=True)
    errors = [r for r in (a, b) if isinstance(r, BaseException)]
    unreachable = list({e.host: e for e in errors if isinstance(e, TransportError)}.values())
    if len(unreachable) > 1:
        raise HostsUnreachable(unreachable)
    if unreachable:
        raise unreachable[0]
    if errors:
        raise errors[0]
    return a, b  # type: ignore[return-value]


def first_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[0].strip() if lines else text


def unresumable(exc: ZrelayError) -> bool:
    """True when ``exc`` says a resume token no longer works (not a transient failure)."""
    if isinstance(exc, NoResumableState):
        return True
    return isinstance(exc, TransferFailed) and isinstance(exc.cause, NoResumableState)


def chunks(items: list[Any], size: int = CHUNK) -> list[list[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]
