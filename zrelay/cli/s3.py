"""``zrelay s3-*``: push to, list, restore from, verify, prune and tidy S3 targets.

Every command that changes something has ``--dry-run`` (printing the exact
remote commands and object keys); every listing has ``--json``. Exit codes
follow zrelay.errors: 0 ok or nothing to do, 1 something failed or was
refused, 2 usage, 130 interrupted.

``s3-push`` and ``s3-restore`` record into the state store like ``sync``, so
``status`` shows their last run and the TUI their transfers: a push as job →
``s3:NAME`` (one task per job and target, however many datasets it pushed), a
restore as ``HOST:DATASET`` of the pushed dataset → the dataset it writes into.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import json
import sys
import time
from datetime import datetime, timezone
from typing import Any, Awaitable, Iterable, cast

from zrelay import locks
from zrelay.actions import ActionKind
from zrelay.cli import output
from zrelay.cli.main import add_wait_lock
from zrelay.engine import Engine, SyncOptions, TaskResult
from zrelay.engine.core import ReceiverFactory
from zrelay.engine.s3_receiver import PushDetails, s3_receivers, worst
from zrelay.errors import (EXIT_BUSY, EXIT_JOB_FAILED, EXIT_OK, InvalidName, S3ChainBroken, S3UsageError,
                           TargetBusy, TransferFailed, UsageError, ZrelayError)
from zrelay.events import (Event, EventSink, JobFinished, JobStarted, Outcome, TransferFinished, TransferProgress,
                           TransferStarted)
from zrelay.inventory import load_inventory
from zrelay.inventory.lookup import find_inventory
from zrelay.inventory.model import Endpoint, Inventory, Job, S3Target, suggest, name_list
from zrelay.inventory.policy import BUCKETS, KeepPolicy
from zrelay.inventory.values import Bad, want_duration, want_int
from zrelay.lifecycle.prune import keep_chains
from zrelay.lifecycle.retention import describe_policy
from zrelay.paths import s3restore, throttle
from zrelay.paths.s3push import PushResult
from zrelay.s3 import catalog, chains, manifest as mf
from zrelay.s3.chains import Chain, DatasetView, PrunePlan, SendRecord
from zrelay.s3.options import S3Options, parse_duration
from zrelay.s3.sizing import format_size, parse_size
from zrelay.s3.store import Store
from zrelay.state import Recorder, default_path, fanout
from zrelay.zfs import commands


# --------------------------------------------------------------------------- registration


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("s3-push", help="upload snapshots of jobs with S3 targets (full or incremental)",
                       description="Push every job with an S3 target (or those matching PATTERN): one object "
                                   "per zfs send plus a manifest, incremental on the newest stored chain.")
    p.add_argument("patterns", nargs="*", metavar="PATTERN", help="host, host:dataset or job name")
    p.add_argument("--target", metavar="NAME", help="only this S3 target")
    p.add_argument("-n", "--dry-run", action="store_true",
                   help="show the plan, object keys, part size and remote commands; upload nothing")
    p.add_argument("--full", action="store_true", help="start a new chain: a full send of the newest snapshot")
    p.add_argument("--snapshot", action="store_true", help="take a new source snapshot first")
    p.add_argument("--no-resume", action="store_true",
                   help="upload every send anew, even where a killed push left an unfinished upload of it "
                        "(default: continue it, keeping the stored parts that match)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    add_wait_lock(p)
    _stream_flags(p)
    p.set_defaults(handler=run_push)

    p = sub.add_parser("s3-ls", help="list stored chains per dataset, with sizes and health",
                       description="Per dataset: chains (full → incrementals), sizes, and whether each can be "
                                   "restored. TARGET defaults to every S3 target of the inventory.")
    p.add_argument("args", nargs="*", metavar="[TARGET] PATTERN", help="S3 target, then host or host:dataset")
    p.add_argument("--json", action="store_true", help="print JSON (stable field names)")
    p.set_defaults(handler=run_ls)

    p = sub.add_parser("s3-restore", help="restore a dataset from S3 into any host",
                       description="Receive the stored chain of SOURCE (host:dataset as pushed) up to --snapshot "
                                   "(default: newest) into --to HOST:DATASET, verifying sha256 on the fly.")
    p.add_argument("target", metavar="TARGET", help="S3 target name")
    p.add_argument("source", metavar="SOURCE", help="the pushed dataset, host:dataset")
    p.add_argument("--to", required=True, metavar="HOST:DATASET", help="where to receive it")
    p.add_argument("--snapshot", metavar="NAME", help="restore up to this snapshot (default: the newest stored; refused, naming the newest "
                        "restorable one, when a broken chain keeps it from being restored)")
    p.add_argument("-n", "--dry-run", action="store_true", help="show the sends, object keys and commands")
    p.add_argument("--wait", action="store_true",
                   help="for archived objects (GLACIER, DEEP_ARCHIVE): request the restore and wait for it")
    p.add_argument("--poll", type=float, default=60.0, metavar="SECONDS", help=argparse.SUPPRESS)
    p.add_argument("--verify-first", action="store_true",
                   help="check every object's sha256 before receiving anything")
    p.add_argument("--age-identity", metavar="PATH", help="age key file on the restoring host")
    p.add_argument("--concurrency", type=int, metavar="N", help="ranged GETs in flight")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_wait_lock(p)
    p.set_defaults(handler=run_restore)

    p = sub.add_parser("s3-verify", help="re-read stored objects and check every sha256",
                       description="Read every stored object of TARGET (or of the datasets matching PATTERN) "
                                   "and compare sizes and sha256 with the manifests.")
    p.add_argument("target", metavar="TARGET", help="S3 target name")
    p.add_argument("patterns", nargs="*", metavar="PATTERN", help="host, host:dataset or job name")
    p.add_argument("--concurrency", type=int, metavar="N", help="ranged GETs in flight")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=run_verify)

    p = sub.add_parser("s3-prune", help="delete old chains by keep rules; never orphans an incremental",
                       description="Keep the newest --keep-chains chains and/or chains with a snapshot from the "
                                   "last --keep-days days, per dataset; delete the rest, whole chains only.")
    p.add_argument("target", metavar="TARGET", help="S3 target name")
    p.add_argument("patterns", nargs="*", metavar="PATTERN", help="host, host:dataset or job name")
    p.add_argument("--keep-chains", type=int, metavar="N", help="keep the newest N chains per dataset (N ≥ 1)")
    p.add_argument("--keep-days", type=float, metavar="D", help="keep chains with a snapshot from the last D days")
    p.add_argument("--keep", metavar="POLICY",
                   help="keep chains by a keep policy, as a job's keep: writes it, e.g. 'monthly=6,daily=7' "
                        "(within, last, hourly, daily, weekly, monthly, yearly; each chain dated by its newest "
                        "snapshot)")
    p.add_argument("--orphan-grace", default="24h", metavar="DURATION",
                   help="delete unfinished sends (no manifest) older than this (default 24h)")
    p.add_argument("-n", "--dry-run", action="store_true", help="list what would be deleted")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=run_prune)

    p = sub.add_parser("s3-abort-stale", help="list and abort multipart uploads left by crashed pushes",
                       description="Abort multipart uploads under zrelay's prefix older than --older-than "
                                   "(default 24h), or all of them with --all.")
    p.add_argument("target", metavar="TARGET", help="S3 target name")
    p.add_argument("--older-than", default="24h", metavar="DURATION", help="e.g. 30m, 24h, 7d (default 24h)")
    p.add_argument("--all", action="store_true", help="every upload, whatever its age (none may be running)")
    p.add_argument("-n", "--dry-run", action="store_true", help="list, abort nothing")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=run_abort_stale)


def _stream_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("stream settings (override the S3 target's)")
    g.add_argument("--max-stream-size", metavar="SIZE",
                   help="largest stream allowed, e.g. 1T; also sizes parts on hosts without an estimate")
    g.add_argument("--part-size", metavar="SIZE", help="fixed part size, 5M … 5G (default: from the size)")
    g.add_argument("--concurrency", type=int, metavar="N", help="parts in flight (default 4)")
    g.add_argument("--compression", choices=("auto", "zstd", "none"), help="zstd on the source (auto: if installed)")
    g.add_argument("--age-recipient", action="append", metavar="KEY", help="encrypt with age to KEY (repeatable)")
    g.add_argument("--part-checksum", choices=("md5", "sha256", "none"), help="per-part checksum (default md5)")
    g.add_argument("--storage-class", metavar="CLASS", help="e.g. STANDARD_IA, GLACIER, DEEP_ARCHIVE")
    g.add_argument("--max-object-size", metavar="SIZE", help=argparse.SUPPRESS)


# --------------------------------------------------------------------------- shared helpers


def _inventory(args: argparse.Namespace) -> Inventory:
    return load_inventory(find_inventory(args.inventory))


def _target(inventory: Inventory, name: str) -> S3Target:
    try:
        return inventory.s3_targets[name]
    except KeyError:
        known = name_list(inventory.s3_targets) if inventory.s3_targets else "the inventory defines none"
        raise UsageError(f"unknown S3 target {name!r}{suggest(name, inventory.s3_targets)}; known: {known}") from None


def _options(target: S3Target, args: argparse.Namespace) -> S3Options:
    def size(value: str | None) -> int | None:
        if value is None:
            return None
        try:
            return parse_size(value)
        except ValueError as exc:
            raise S3UsageError(target.name, str(exc)) from None
    return S3Options.for_target(
        target,
        max_stream_size=size(getattr(args, "max_stream_size", None)),
        part_size=size(getattr(args, "part_size", None)),
        max_object_size=size(getattr(args, "max_object_size", None)),
        concurrency=getattr(args, "concurrency", None),
        compression=getattr(args, "compression", None),
        age_recipients=tuple(getattr(args, "age_recipient", None) or ()),
        age_identity=getattr(args, "age_identity", None),
        part_checksum=getattr(args, "part_checksum", None),
        storage_class=getattr(args, "storage_class", None),
        resume=False if getattr(args, "no_resume", False) else None)


def _recorder(args: argparse.Namespace, inventory: Inventory, argv: list[str]) -> Recorder:
    """Record the run for ``status`` and the TUI; a dry run changes nothing, so it is not recorded."""
    return Recorder(default_path(getattr(args, "state", None)), argv[0], argv, inventory=str(inventory.path),
                    enabled=not args.dry_run)


def _transfers_only(sink: EventSink) -> EventSink:
    """The data paths' stream events; the commands record job-level results themselves."""
    def handle(event: Event) -> None:
        if isinstance(event, (TransferStarted, TransferProgress, TransferFinished)):
            sink(event)
    return handle


def _dump(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")


def _scope(inventory: Inventory, patterns: Iterable[str]) -> list[tuple[str | None, str | None]]:
    """(host, dataset) scopes for listing commands; job names and groups resolve to job sources."""
    out: list[tuple[str | None, str | None]] = []
    for pattern in patterns:
        if ":" in pattern:
            ep = Endpoint.parse(pattern)
            out.append((ep.host, ep.dataset))
        elif pattern in inventory.hosts:
            out.append((pattern, None))
        else:
            jobs = inventory.jobs_matching([pattern])
            out.extend((j.source.host, j.source.dataset) for j in jobs)
    return out or [(None, None)]


async def _views(store: Store, scopes: list[tuple[str | None, str | None]]) -> list[DatasetView]:
    seen: dict[tuple[str, str], DatasetView] = {}
    for host, dataset in scopes:
        found = await catalog.load_views(store, host=host, dataset=dataset, recursive=True)
        seen.update(found)
    return list(seen.values())


def _when(ts: float | int) -> str:
    if not ts:
        return "-"
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M")


def _age(seconds: float) -> str:
    return output.human_seconds(max(0, seconds))


# --------------------------------------------------------------------------- s3-push


def run_push(args: argparse.Namespace) -> int:
    inventory = _inventory(args)
    matching = inventory.jobs_matching(args.patterns)
    if args.target:
        _target(inventory, args.target)
    refs = [(job, ref.name) for job in matching for ref in job.s3_targets if args.target in (None, ref.name)]
    if not refs:
        what = f" with S3 target {args.target!r}" if args.target else " with an S3 target"
        output.console().print(f"no matching job{what}: nothing to do")
        return EXIT_OK
    jobs = list({job.name: job for job, _ in refs}.values())
    stream_options = {name: _options(inventory.s3_targets[name], args) for name in dict.fromkeys(n for _, n in refs)}
    options = SyncOptions(dry_run=args.dry_run, take_snapshot=args.snapshot, wait_lock=args.wait_lock,
                          full=args.full)
    receivers = functools.partial(s3_receivers, only=args.target, stream_options=stream_options)
    show = not args.json and not args.dry_run   # bars on a terminal, a line per stream elsewhere
    argv = ["s3-push", *args.patterns] + (["--target", args.target] if args.target else []) + [
        flag for flag, on in (("--full", args.full), ("--snapshot", args.snapshot),
                              ("--no-resume", args.no_resume)) if on]
    with _recorder(args, inventory, argv) as recorder, output.ProgressView(enabled=show) as view:
        locks.identify(recorder.run_id, "s3-push")
        tasks = asyncio.run(_push(inventory, jobs, options, receivers, fanout(view.handle, recorder.handle)))
        results = push_results(tasks)
        recorder.set_exit_code(_push_exit_code(results))
    if args.json:
        _dump([r.to_dict() for r in results])
    elif args.dry_run:
        _print_push_dry_run(results)
    else:
        _print_push_summary(results)
    return _push_exit_code(results)


async def _push(inventory: Inventory, jobs: list[Job], options: SyncOptions, receivers: ReceiverFactory,
                sink: EventSink) -> list[TaskResult]:
    async with Engine(inventory, sink) as engine:
        return await engine.run(jobs, options, receivers)


def push_results(tasks: list[TaskResult]) -> list[PushResult]:
    """One row per dataset pushed, as ``s3-push`` shows them; a task that failed before it planned
    (busy, the snapshot, the source or the bucket unreadable) is one row of its own. The
    snapshot's command is shown with the job's first dataset, where it runs."""
    out: list[PushResult] = []
    for task in tasks:
        rows = task.details.datasets if isinstance(task.details, PushDetails) else []
        if not rows or worst(rows) is not task.outcome:
            rows = [PushResult(task.job, task.target, task.source, task.outcome, task.message, task.bytes,
                               task.seconds, failed_host=task.failed_host)]
        rows[0].commands[:0] = [c for a in task.actions if a.kind is ActionKind.SNAPSHOT for c in a.commands]
        out.extend(rows)
    return out


def _push_exit_code(results: list[PushResult]) -> int:
    """1 when a dataset failed or was refused; else 75 when a target was skipped as busy (zrelay.locks)."""
    if any(r.outcome in (Outcome.FAILED, Outcome.REFUSED) for r in results):
        return EXIT_JOB_FAILED
    return EXIT_BUSY if any(r.outcome is Outcome.BUSY for r in results) else EXIT_OK


def _print_push_dry_run(results: list[PushResult]) -> None:
    out = output.console()
    for r in results:
        style = {Outcome.REFUSED: "yellow", Outcome.FAILED: "red"}.get(r.outcome, "cyan")
        kind = r.plan.kind if r.plan else r.outcome.value
        job = "" if r.job == r.dataset else f"[bold]{r.job}[/bold] "
        out.print(f"{job}[bold]{r.dataset}[/bold] → {r.target}: [{style}]{kind}[/{style}]  {r.message}",
                  soft_wrap=True, highlight=False)
        # the sends are shown with their steps (their uploads by their objects)
        pre = [(h, c) for h, c in r.commands if h != r.target and not any(c == s["command"] for s in r.steps)]
        for host, command in pre:
            out.print(f"    [dim]{host}$[/dim] {command}", highlight=False, soft_wrap=True)
        host = r.dataset.split(":", 1)[0]
        for step in r.steps:
            what = (f"full @{step['snapshot']}" if step["base"] is None
                    else f"incremental @{step['base']} → @{step['snapshot']}")
            out.print(f"  {what}", highlight=False)
            if step.get("limit"):
                out.print(f"    {step['limit']}", markup=False, highlight=False, soft_wrap=True)
            out.print(f"    [dim]{host}$[/dim] {step['command']}", highlight=False, soft_wrap=True)
            for key in cast(list[str], step["objects"]):
                out.print(f"    [dim]object  [/dim] {key}", highlight=False, soft_wrap=True)
            out.print(f"    [dim]manifest[/dim] {step['manifest']}", highlight=False, soft_wrap=True)
            out.print(f"    {step['parts']}", markup=False, soft_wrap=True)
            resume = cast("dict[str, Any] | None", step.get("resume"))
            if resume:
                out.print(f"    {resume['line']}", markup=False, highlight=False, soft_wrap=True)
            if step.get("resume_note"):
                out.print(f"    {step['resume_note']}", markup=False, highlight=False, soft_wrap=True)
            if step["problem"]:
                out.print(f"    [red]refused before upload:[/red] {step['problem']}", highlight=False, soft_wrap=True)
        if not r.steps and r.outcome not in (Outcome.REFUSED, Outcome.FAILED):
            out.print("    (nothing to upload)")


def _print_push_summary(results: list[PushResult]) -> None:
    rows = []
    for r in results:
        detail = r.message if r.outcome not in (Outcome.FAILED, Outcome.REFUSED) else "see below"
        rows.append(output.ResultRow(r.job, output.result_cells(f"{r.dataset} → {r.target}", r.outcome, r.bytes,
                                                                r.seconds, detail), detail))
    output.print_results("zrelay s3-push", rows)
    for r in results:
        for note in r.notes:
            output.console().print(f"note: {r.target}: {r.dataset.split(':', 1)[0]}:{note}", markup=False,
                                   highlight=False, soft_wrap=True)
    bad = [r for r in results if r.outcome in (Outcome.FAILED, Outcome.REFUSED)]
    for r in bad:
        job = "" if r.job == r.dataset else f"{r.job} "
        message = r.message.removeprefix(f"{r.target}: ")
        output.error_line(f"{r.outcome.value}: {job}{r.dataset} → {r.target}: {message}")
    for r in results:
        if r.outcome is Outcome.BUSY:
            output.error_line(f"busy: {r.message}")


# --------------------------------------------------------------------------- s3-ls


def run_ls(args: argparse.Namespace) -> int:
    inventory = _inventory(args)
    rest = list(args.args)
    if rest and rest[0] in inventory.s3_targets:
        targets = [inventory.s3_targets[rest.pop(0)]]
    elif rest and ":" not in rest[0] and rest[0] not in inventory.hosts and not _is_job(inventory, rest[0]):
        _target(inventory, rest[0])  # unknown: a usage error naming the known targets
        targets = []
    else:
        targets = list(inventory.s3_targets.values())
    if not targets:
        raise UsageError("the inventory defines no S3 targets (zrelay.s3_targets)")
    scopes = _scope(inventory, rest)
    listing = asyncio.run(_ls(targets, scopes))
    if args.json:
        _dump([{"target": t.name, "bucket": t.bucket, "prefix": mf.root(t.prefix),
                **_cost_dict(chains.StorageCost.combined(v.cost for v in views)),
                "datasets": [_view_dict(v) for v in views]} for t, views in listing])
    else:
        for t, views in listing:
            _print_views(t, views)
    broken = any(not v.healthy for _, views in listing for v in views)
    return EXIT_JOB_FAILED if broken else EXIT_OK


def _is_job(inventory: Inventory, name: str) -> bool:
    return any(j.name == name for j in inventory.jobs) or name in inventory.groups


async def _ls(targets: list[S3Target], scopes: list[tuple[str | None, str | None]]) -> list[tuple[S3Target, list[DatasetView]]]:
    out = []
    for t in targets:
        out.append((t, await _views(Store(t), scopes)))
    return out


def _send_dict(s: SendRecord, chain: Chain | None) -> dict[str, Any]:
    m = s.manifest
    state = ("ok" if chain is not None and s.ref in chain.restorable else
             ("orphan" if m is None else ("damaged" if s.problems() else "unrestorable")))
    return {
        "send": s.ref, "state": state, "problems": s.problems(),
        "kind": m.kind if m else None,
        "snapshot": m.snapshot.name if m else s.snapshot_name,
        "guid": str(m.snapshot.guid) if m else None,
        "parent": m.parent.name if m and m.parent else None,
        "parent_guid": str(m.parent.guid) if m and m.parent else None,
        "created": m.snapshot.creation if m else None,
        "size": m.size if m else s.stored_bytes,
        **_cost_dict(s.cost),
        "compression": m.compression if m else None,
        "encryption": (m.encryption or {}).get("type") if m else None,
        "storage_class": m.storage_class if m else None,
        "objects": [s.directory + o.name for o in m.objects] if m else s.keys,
        "manifest": mf.manifest_key(s.directory),
        "finished": m.finished if m else None,
    }


def _cost_dict(cost: chains.StorageCost) -> dict[str, Any]:
    """The listing's own numbers for some objects (docs/s3-layout.md, s3-ls --json)."""
    d = cost.to_dict()
    return {"listed_bytes": d["bytes"], "object_count": d["objects"], "storage_classes": d["storage_classes"]}


def _view_dict(v: DatasetView) -> dict[str, Any]:
    return {
        "dataset": v.endpoint, "host": v.host, "name": v.dataset, "healthy": v.healthy,
        **_cost_dict(v.cost),
        "chains": [{"root": c.root, "healthy": c.healthy, "broken_at": c.broken_at, "reason": c.broken_reason,
                    "sends": [_send_dict(s, c) for s in c.sends], "size": c.stored_bytes,
                    **_cost_dict(c.cost), "manifest_size": c.manifest_size,
                    "newest_restorable": c.tip.snapshot_name if c.tip else None} for c in v.chains],
        "orphans": [_send_dict(s, None) for s in v.orphans],
    }


def _print_views(target: S3Target, views: list[DatasetView]) -> None:
    out = output.console()
    where = f"s3://{target.bucket}/{mf.root(target.prefix)}" + (f"  ({target.endpoint})" if target.endpoint else "")
    out.print(f"[bold]{target.name}[/bold]  {where}", highlight=False)
    if not views:
        out.print("  (nothing stored)")
    elif len(views) > 1:
        out.print(f"  {len(views)} datasets: {chains.StorageCost.combined(v.cost for v in views).summary()}",
                  highlight=False)
    for v in views:
        state = "[green]healthy[/green]" if v.healthy else "[red]BROKEN[/red]"
        out.print(f"  [bold]{v.endpoint}[/bold]  {len(v.chains)} chain(s), {state}", highlight=False)
        out.print(f"    stored {v.cost.summary()}", highlight=False)
        width = max((len(_what(s.manifest)) for c in v.chains for s in c.sends if s.manifest), default=10)
        for i, c in enumerate(v.chains, 1):
            health = "[green]healthy[/green]" if c.healthy else f"[red]broken at {c.broken_at}[/red]: {c.broken_reason}"
            out.print(f"    chain {i}  {c.root}  {len(c.sends)} send(s)  {health}", highlight=False, soft_wrap=True)
            cost = c.cost
            said = ("" if c.manifest_size == c.stored_bytes
                    else f" (the manifests say {format_size(c.manifest_size)} of streams)")
            out.print(f"      stored {cost.summary()}{said}", highlight=False, soft_wrap=True)
            for s in c.sends:
                m = s.manifest
                assert m is not None
                mark = "ok" if s.ref in c.restorable else ("DAMAGED" if s.problems() else "unrestorable")
                filters = "+".join(x for x in (m.compression, (m.encryption or {}).get("type")) if x) or "-"
                classes = "+".join(s.cost.classes) or "-"
                out.print(f"      {m.kind:<11} {_what(m):<{width}} {format_size(s.stored_bytes):>10}  {filters:<8} "
                          f"{classes:<12} {_when(m.snapshot.creation)}  {mark}", highlight=False,
                          soft_wrap=True)
        for s in v.orphans:
            out.print(f"    [yellow]unfinished[/yellow] {s.ref}  {format_size(s.stored_bytes)}  "
                      f"{s.problems()[0]}  (s3-prune removes it after --orphan-grace)", highlight=False)


def _what(m: mf.Manifest) -> str:
    return f"@{m.snapshot.name}" if m.full else f"@{m.parent.name if m.parent else '?'} → @{m.snapshot.name}"


# --------------------------------------------------------------------------- s3-restore


def run_restore(args: argparse.Namespace) -> int:
    inventory = _inventory(args)
    target = _target(inventory, args.target)
    options = _options(target, args)
    try:
        source = Endpoint.parse(args.source)
        dest_ep = Endpoint.parse(args.to)
    except UsageError:
        raise
    inventory.host(dest_ep.host)
    if args.snapshot:
        try:
            commands.check_snapshot_name(f"{source.dataset}@{args.snapshot}")
        except InvalidName as exc:
            raise UsageError(str(exc)) from None
    show = not args.json and not args.dry_run   # bars on a terminal, a line per stream elsewhere
    argv = ["s3-restore", args.target, args.source, "--to", args.to] + (
        ["--snapshot", args.snapshot] if args.snapshot else [])
    with _recorder(args, inventory, argv) as recorder, output.ProgressView(enabled=show) as view:
        locks.identify(recorder.run_id, "s3-restore")
        try:
            result = asyncio.run(_restore(inventory, target, options, source, dest_ep, args,
                                          fanout(view.handle, _transfers_only(recorder.handle)),
                                          recorder.handle))
        except ZrelayError as exc:
            recorder.set_exit_code(exc.exit_code)
            raise
        recorder.set_exit_code(EXIT_OK)
    if args.json:
        _dump(result.to_dict())
    else:
        out = output.console()
        if result.outcome == "dry-run":
            out.print(f"[bold]{result.source}[/bold] from s3:{target.name} → {result.target}: {result.message}",
                      soft_wrap=True)
            step_commands = {str(c) for st in result.steps for c in [st["command"], *cast(list[str], st["then"])]}
            for host, command in result.commands:
                if command not in step_commands:
                    out.print(f"    [dim]{host}$[/dim] {command}", highlight=False, soft_wrap=True)
            for st in result.steps:
                out.print(f"  {st['kind']} @{st['snapshot']} ({format_size(cast(int, st['size']))})", highlight=False)
                if st.get("limit"):
                    out.print(f"    {st['limit']}", markup=False, highlight=False, soft_wrap=True)
                out.print(f"    [dim]{st['host']}$[/dim] {st['command']}", highlight=False, soft_wrap=True)
                for key in cast(list[str], st["objects"]):
                    out.print(f"    [dim]object[/dim] {key}", highlight=False, soft_wrap=True)
                for command in cast(list[str], st["then"]):
                    out.print(f"    [dim]{st['host']}$[/dim] {command}", highlight=False, soft_wrap=True)
        elif result.outcome == "noop":
            out.print(f"{result.target}: nothing to do ({result.message})")
        else:
            out.print(f"restored {result.source} → {result.target}: "
                      f"{', '.join('@' + s for s in result.snapshots)} "
                      f"({output.human_moved(result.bytes, result.seconds)})", highlight=False, markup=False)
    return EXIT_OK


async def _restore(inventory: Inventory, target: S3Target, options: S3Options, source: Endpoint,
                   dest_ep: Endpoint, args: argparse.Namespace, sink: Any,
                   record: EventSink) -> s3restore.RestoreResult:
    """Restore, recorded as one task: the pushed dataset (the data path's job name) → ``dest_ep``."""
    job, origin, label = str(source), f"s3:{target.name}", str(dest_ep)
    record(JobStarted(job, origin, label))
    started = time.monotonic()
    try:
        result = await _restore_one(inventory, target, options, source, dest_ep, args, sink)
    except ZrelayError as exc:
        refused = isinstance(exc, S3ChainBroken) or str(exc).startswith(f"{origin}: refused")
        blamed = exc.failed_host if isinstance(exc, TransferFailed) else getattr(exc, "host", None)
        outcome = (Outcome.BUSY if isinstance(exc, TargetBusy) else
                   Outcome.REFUSED if refused else Outcome.FAILED)
        record(JobFinished(job, origin, label, outcome, str(exc), 0, time.monotonic() - started, blamed))
        raise
    if result.outcome in ("ok", "noop"):
        record(JobFinished(job, origin, label, Outcome.OK if result.outcome == "ok" else Outcome.NOOP,
                           result.message, result.bytes, result.seconds))
    return result


async def _restore_one(inventory: Inventory, target: S3Target, options: S3Options, source: Endpoint,
                       dest_ep: Endpoint, args: argparse.Namespace, sink: Any) -> s3restore.RestoreResult:
    store = Store(target, pool=options.concurrency + 4)
    what = f"s3:{target.name} {source} → {dest_ep}"
    async with Engine(inventory, sink) as engine:   # closing it lets the target's lock go
        def plan() -> Awaitable[s3restore.RestoreResult]:
            return _restore_plan(store, target, options, source, dest_ep, args, sink, engine)
        if args.dry_run:   # holds nothing, and plans only while no other zrelay writes the dataset
            return await engine.fleet.unheld_target(dest_ep.host, dest_ep.dataset, what, plan, args.wait_lock)
        # held for the whole restore, like a sync's target (zrelay.locks)
        await engine.fleet.lock_target(dest_ep.host, dest_ep.dataset, what, args.wait_lock)
        return await plan()


async def _restore_plan(store: Store, target: S3Target, options: S3Options, source: Endpoint, dest_ep: Endpoint,
                        args: argparse.Namespace, sink: Any, engine: Engine) -> s3restore.RestoreResult:
    """Plan the restore from the stored sends and the target, and (unless a dry run) run it."""
    dest = engine.fleet.host(dest_ep.host)
    # Connect to and probe the receiving host while the stored sends are listed.
    warming = asyncio.ensure_future(dest.capabilities())
    warming.add_done_callback(lambda f: f.cancelled() or f.exception())  # restore() reports failures
    views = await catalog.load_views(store, host=source.host, dataset=source.dataset, recursive=False)
    view = views.get((source.host, source.dataset))
    if view is None or not (view.chains or view.orphans):
        raise S3UsageError(target.name, f"nothing is stored for {source} (see `zrelay s3-ls {target.name}`)")
    return await s3restore.restore(store, options, view, args.snapshot, dest, dest_ep.dataset,
                                   dry_run=args.dry_run, wait=args.wait, verify_first=args.verify_first,
                                   poll_seconds=args.poll, events=sink,
                                   say=output.error_line,
                                   limit=throttle.stream_limit(engine.inventory, target=dest_ep.host, s3=target))


# --------------------------------------------------------------------------- s3-verify


def run_verify(args: argparse.Namespace) -> int:
    inventory = _inventory(args)
    target = _target(inventory, args.target)
    options = _options(target, args)
    results = asyncio.run(_verify(target, options, _scope(inventory, args.patterns)))
    if args.json:
        _dump([r.to_dict() for r in results])
    else:
        out = output.console()
        total = sum(r.bytes for r in results)
        for r in results:
            if r.ok:
                out.print(f"ok       {r.dataset} {r.ref}  {format_size(r.bytes)}", highlight=False)
            else:
                out.print(f"[red]FAILED[/red]   {r.dataset} {r.ref}: {r.message}", highlight=False, soft_wrap=True)
        bad = [r for r in results if not r.ok]
        out.print(f"{len(results) - len(bad)} of {len(results)} send(s) verified, {format_size(total)} read")
        for r in bad:
            output.error_line(f"s3-verify: {r.dataset} {r.ref}: {r.message}")
    return EXIT_JOB_FAILED if any(not r.ok for r in results) else EXIT_OK


async def _verify(target: S3Target, options: S3Options,
                  scopes: list[tuple[str | None, str | None]]) -> list[s3restore.VerifyResult]:
    store = Store(target, pool=options.concurrency + 4)
    out = []
    for v in await _views(store, scopes):
        for c in v.chains:
            if c.full is None:
                out.append(s3restore.VerifyResult(v.endpoint, c.root, False, c.broken_reason))
            for s in c.sends:
                out.append(await s3restore.verify_send(store, s, concurrency=options.concurrency))
        for s in v.orphans:
            out.append(s3restore.VerifyResult(v.endpoint, s.ref, False, s.problems()[0], keys=s.keys))
    return out


# --------------------------------------------------------------------------- s3-prune


def run_prune(args: argparse.Namespace) -> int:
    inventory = _inventory(args)
    target = _target(inventory, args.target)
    if args.keep_chains is None and args.keep_days is None and args.keep is None:
        raise UsageError("s3-prune needs --keep-chains N, --keep-days D and/or --keep POLICY "
                         "(it never deletes everything)")
    policy = keep_policy(args.keep) if args.keep is not None else None
    if args.keep_chains is not None and args.keep_chains < 1:
        raise UsageError("--keep-chains must be at least 1: the newest chain is always kept")
    if args.keep_days is not None and args.keep_days < 0:
        raise UsageError("--keep-days must not be negative")
    try:
        grace = parse_duration(args.orphan_grace)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    plans, deleted, failures = asyncio.run(_prune(target, _scope(inventory, args.patterns), args, grace, policy))
    refused = [(p, d) for p in plans for d in p.refused]
    if args.json:
        _dump({"target": target.name, "dry_run": args.dry_run, "deleted": deleted, "failures": failures,
               "datasets": [_prune_dict(p) for p in plans]})
    else:
        _print_prune(plans, args.dry_run, deleted)
        for f in failures:
            output.error_line(f"s3-prune: {f}")
        for p, d in refused:
            output.error_line(f"s3-prune: refused: {d.refused}")
    return EXIT_JOB_FAILED if refused or failures else EXIT_OK


def keep_policy(text: str) -> KeepPolicy:
    """``--keep 'monthly=6,daily=7'`` (or ``monthly: 6, …``, braces allowed) as a KeepPolicy,
    read by the same checks as a job's ``keep:``; a usage error naming --keep otherwise."""
    rules: dict[str, int] = {}
    valid = ["within", "last", *BUCKETS]
    body = text.strip().removeprefix("{").removesuffix("}")
    for part in (p.strip() for p in body.split(",")):
        if not part:
            continue
        key, sep, value = part.replace(":", "=", 1).partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not value:
            raise UsageError(f"--keep: {part!r} is not RULE=N (e.g. monthly=6)")
        if key not in valid:
            raise UsageError(f"--keep: unknown rule {key!r}; rules: {', '.join(valid)}")
        if key in rules:
            raise UsageError(f"--keep: {key} is given twice")
        try:
            if key == "within":
                rules[key] = want_duration(value, "--keep within")
            else:
                if not value.isdigit():
                    raise Bad(f"--keep {key}: expected an integer, got {value!r}")
                rules[key] = want_int(int(value), f"--keep {key}", 1)
        except Bad as exc:
            raise UsageError(str(exc)) from None
    policy = KeepPolicy(**rules)
    if policy.empty:
        raise UsageError(f"--keep keeps nothing; give at least one of {', '.join(valid)}")
    return policy


async def _prune(target: S3Target, scopes: list[tuple[str | None, str | None]], args: argparse.Namespace,
                 grace: float, policy: KeepPolicy | None = None) -> tuple[list[PrunePlan], list[str], list[str]]:
    from zrelay.s3 import retention

    # deleting is the prune key's (``prune_profile``): a push-only key cannot delete
    store = Store(dataclasses.replace(target, profile=target.prune_profile or target.profile))
    now = time.time()
    keep_seconds = args.keep_days * 86400 if args.keep_days is not None else None
    plans = []
    for v in await _views(store, scopes):
        keep = keep_chains(v.chains, policy) if policy is not None else None

        def planned(locked: dict[str, str] | None = None) -> PrunePlan:
            return chains.plan_prune(v, keep_chains=args.keep_chains, keep_seconds=keep_seconds, now=now,
                                     orphan_grace=grace, keep=keep, locked=locked,
                                     drop_reason=f"not kept by --keep ({describe_policy(policy)})"
                                     if policy is not None else "not kept by the policy")
        plan = planned()
        locked = await retention.locked(store, plan, now)   # Object Lock: kept, with until when
        plans.append(planned(locked) if locked else plan)
    deleted: list[str] = []
    failures: list[str] = []
    if not args.dry_run:
        for p in plans:
            for key in p.keys_in_order():
                try:
                    await asyncio.to_thread(store.delete, key)
                    deleted.append(key)
                except ZrelayError as exc:
                    failures.append(f"{exc} (stopped pruning {p.dataset.endpoint} here; re-run to continue)")
                    break
    return plans, deleted, failures


def _prune_dict(p: PrunePlan) -> dict[str, Any]:
    return {"dataset": p.dataset.endpoint,
            "chains": [{"root": d.chain.root, "delete": d.delete, "reasons": d.reasons, "refused": d.refused,
                        "healthy": d.chain.healthy, "sends": [s.ref for s in d.chain.sends],
                        "size": d.chain.stored_bytes} for d in p.chains],
            "orphans_deleted": [s.ref for s in p.orphans_deleted],
            "orphans_kept": [s.ref for s in p.orphans_kept],
            "keys": p.keys_in_order()}


def _print_prune(plans: list[PrunePlan], dry_run: bool, deleted: list[str]) -> None:
    out = output.console()
    verb = "would delete" if dry_run else "delete"
    if not plans:
        out.print("nothing stored: nothing to prune")
    for p in plans:
        out.print(f"[bold]{p.dataset.endpoint}[/bold]", highlight=False)
        for d in p.chains:
            health = "" if d.chain.healthy else f" [red](broken at {d.chain.broken_at})[/red]"
            if d.delete:
                out.print(f"  [red]{verb}[/red] chain {d.chain.root}: {len(d.chain.sends)} send(s), "
                          f"{format_size(d.chain.stored_bytes)} — {'; '.join(d.reasons)}{health}",
                          highlight=False, soft_wrap=True)
            else:
                note = f" [yellow]REFUSED to delete: {d.refused}[/yellow]" if d.refused else ""
                out.print(f"  keep   chain {d.chain.root}: {len(d.chain.sends)} send(s) — "
                          f"{'; '.join(d.reasons)}{health}{note}", highlight=False, soft_wrap=True)
        for s in p.orphans_deleted:
            out.print(f"  [red]{verb}[/red] unfinished send {s.ref} ({format_size(s.stored_bytes)})", highlight=False)
        for s in p.orphans_kept:
            out.print(f"  keep   unfinished send {s.ref}: younger than --orphan-grace (a push may be running)",
                      highlight=False)
        if dry_run:
            for key in p.keys_in_order():
                out.print(f"    [dim]object[/dim] {key}", highlight=False, soft_wrap=True)
    if not dry_run:
        out.print(f"{len(deleted)} object(s) deleted")


# --------------------------------------------------------------------------- s3-abort-stale


def run_abort_stale(args: argparse.Namespace) -> int:
    inventory = _inventory(args)
    target = _target(inventory, args.target)
    try:
        older = 0.0 if args.all else parse_duration(args.older_than)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    rows, failures = asyncio.run(_abort_stale(target, older, args.dry_run))
    if args.json:
        _dump({"target": target.name, "dry_run": args.dry_run, "uploads": rows, "failures": failures})
    else:
        out = output.console()
        verb = "would abort" if args.dry_run else "aborted"
        for r in rows:
            if r["stale"]:
                out.print(f"{verb:<12} {r['key']}  upload {r['upload_id'][:16]}…  started {r['age']} ago",
                          highlight=False, soft_wrap=True)
            else:
                out.print(f"{'kept':<12} {r['key']}  started {r['age']} ago (younger than "
                          f"--older-than; may still be running)", highlight=False, soft_wrap=True)
        stale = sum(1 for r in rows if r["stale"])
        out.print(f"{stale} stale multipart upload(s) {verb if stale else 'found'} under "
                  f"s3://{target.bucket}/{mf.root(target.prefix)}", highlight=False)
        for f in failures:
            output.error_line(f"s3-abort-stale: {f}")
    return EXIT_JOB_FAILED if failures else EXIT_OK


async def _abort_stale(target: S3Target, older: float, dry_run: bool) -> tuple[list[dict[str, Any]], list[str]]:
    store = Store(target)
    uploads = await asyncio.to_thread(store.list_uploads, mf.root(target.prefix))
    now = time.time()
    rows: list[dict[str, Any]] = []
    failures: list[str] = []
    for u in sorted(uploads, key=lambda u: (u.initiated, u.key)):
        age = now - u.initiated
        stale = age >= older
        row = {"key": u.key, "upload_id": u.upload_id, "initiated": u.initiated, "age": _age(age),
               "age_seconds": round(age, 1), "stale": stale, "aborted": False}
        if stale and not dry_run:
            try:
                await asyncio.to_thread(store.abort_upload, u.key, u.upload_id)
                row["aborted"] = True
            except ZrelayError as exc:
                failures.append(str(exc))
        rows.append(row)
    return rows, failures
