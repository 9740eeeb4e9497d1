"""S3 push data path: ``zfs send`` (and filters) on the source → this process → multipart upload.

Why through this process: S3 credentials stay on the orchestrator, and the
source needs nothing but zfs (and optionally zstd/age). Bytes arrive in the
SSH channel's callbacks and go straight into the part buffers of
``StreamUploader``; when enough parts are outstanding the channel stops
reading (``pause_reading``), so SSH flow control holds the source back and
memory stays bounded.

Order of effects, so every failure leaves the target clean: stream objects
are completed only after the source pipeline exited cleanly; the manifest is
written only after every object is complete; any failure (source error,
S3 error, size limit, Ctrl-C) aborts the multipart uploads.

Resume: a push killed before it completed (``kill -9``, power loss, an S3
outage its abort could not reach) leaves its multipart upload behind. The
next push of the same send finds it by its key, which the snapshot GUIDs and
filters fix, and continues it: parts it holds are compared with the
regenerated stream and kept when equal (zrelay.s3.resume); the first
difference aborts that upload and the send starts over with a new one.

``S3Pusher`` has two halves, so the engine (zrelay.engine.s3_receiver) can
show a plan before running it: ``plan_dataset`` prepares every send of a
dataset (pipeline, keys, part size) without changing anything; ``send`` runs
one prepared send.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

import asyncssh

from zrelay import __version__
from zrelay.errors import (ManifestError, S3Error, S3NotFound, S3ResumeMismatch, S3StreamTooLarge, S3UsageError,
                           TransferFailed, Unsupported, ZrelayError, blame)
from zrelay.events import Outcome
from zrelay.inventory.model import Job, S3Ref, S3Target
from zrelay.paths.throttle import NONE, Gate, Limit, Metering, Throttle
from zrelay.s3 import catalog, chains, manifest as mf, pipeline, resume as resuming
from zrelay.s3.chains import DatasetView, PushPlan, PushStep
from zrelay.s3.options import S3Options
from zrelay.s3.sizing import PartPlan, format_size, plan_parts, preflight_problem
from zrelay.s3.resume import Resume
from zrelay.s3.store import Store, Upload
from zrelay.s3.transfer import StreamUploader
from zrelay.transport.host import RemoteHost
from zrelay.zfs import commands, parse
from zrelay.zfs.model import Capabilities, DatasetState

STDERR_CAP = 64 * 1024


@dataclass
class _End:
    stderr: bytearray = field(default_factory=bytearray)
    exit_status: int | None = None
    exit_signal: str | None = None


class _SendSession(asyncssh.SSHClientSession[bytes]):
    """Hands stdout to the uploader, keeps stderr and the exit status."""

    def __init__(self, uploader: StreamUploader, end: _End, done: asyncio.Future[None]) -> None:
        self._uploader = uploader
        self._end = end
        self._done = done
        self.metering: Metering | None = None

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if datatype == asyncssh.EXTENDED_DATA_STDERR:
            if len(self._end.stderr) < STDERR_CAP:
                self._end.stderr += data
        else:
            self._uploader.feed(data)
            if self.metering is not None:
                self.metering.charge(len(data))

    def eof_received(self) -> bool:
        return False

    def exit_status_received(self, status: int) -> None:
        self._end.exit_status = status

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        self._end.exit_signal = signal

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._done.done():
            self._done.set_result(None)


@dataclass(frozen=True, slots=True)
class StreamResult:
    objects: list[mf.StoredObject]
    sha256: str
    size: int
    seconds: float
    peak_parts: int


async def stream_to_s3(source: RemoteHost, command: str, stages: list[str], uploader: StreamUploader,
                       *, dataset: str | None = None, throttle: Throttle | None = None) -> StreamResult:
    """Run ``command`` on ``source`` and upload its stdout; abort the upload on any failure.
    ``throttle`` (paths/throttle.py) holds the bytes read from the source to its rate."""
    loop = asyncio.get_running_loop()
    end = _End()
    done: asyncio.Future[None] = loop.create_future()
    started = time.monotonic()
    chan: asyncssh.SSHClientChannel[bytes] | None = None
    metering: Metering | None = None
    try:
        async with source.conn.bulk_session(lambda: _SendSession(uploader, end, done), command) as (chan, session):
            # reading pauses while the uploader has its parts in flight, or the stream is ahead of its rate
            gate = Gate(chan.pause_reading, chan.resume_reading)
            uploader.bind(pause=lambda: gate.close("upload"), resume=lambda: gate.open("upload"), stop=chan.close)
            if throttle is not None and throttle.rate is not None:
                metering = session.metering = Metering(throttle, gate)
            chan.write_eof()  # the pipeline reads nothing
            await done
        if uploader.error is not None:
            raise uploader.error
        report = pipeline.read_stage_report(end.stderr.decode("utf-8", "replace"))
        failed = report.failed(stages, end.exit_status, end.exit_signal)
        if failed:
            raise _source_failure(source, report, failed, end, dataset)
        objects, sha = await uploader.finish()
    except BaseException:
        if chan is not None:
            chan.close()
        left = await asyncio.shield(uploader.abort())
        if left:
            uploader.error = uploader.error or S3Error(uploader.store.name, "aborted")
        raise
    finally:
        if metering is not None:
            metering.stop()
    return StreamResult(objects, sha, uploader.total, time.monotonic() - started, uploader.peak_outstanding)


def _source_failure(source: RemoteHost, report: pipeline.StageReport, failed: list[str], end: _End,
                    dataset: str | None) -> ZrelayError:
    """The source side's story in one line: zfs's own error when zfs send failed."""
    first = failed[0]
    text = report.text
    if first.startswith("zfs send") and text:
        status = report.statuses.get(1, end.exit_status)
        cause = parse.map_error(source.name, text, status, dataset)
        return TransferFailed(f"{cause}; nothing was stored", source.name, cause)
    detail = f": {text.splitlines()[0]}" if text else ""
    return TransferFailed(f"{source.name}: {', '.join(failed)}{detail}; nothing was stored", source.name)


# --------------------------------------------------------------------------- per dataset


@dataclass
class PushResult:
    """One dataset of one job towards one S3 target."""

    job: str
    target: str                  # s3:NAME
    dataset: str                 # host:dataset
    outcome: Outcome
    message: str = ""
    bytes: int = 0
    seconds: float = 0.0
    plan: PushPlan | None = None
    commands: list[tuple[str, str]] = field(default_factory=list)
    steps: list[dict[str, object]] = field(default_factory=list)   # per send: what, command, keys, parts
    failed_host: str | None = None
    uploaded: int = 0            # bytes of parts sent to S3 by this run (an abandoned resume's too)
    skipped: int = 0             # bytes of parts an unfinished upload held already, compared and kept
    notes: list[str] = field(default_factory=list)   # resumed, or not resumed and why

    def to_dict(self) -> dict[str, object]:
        return {"job": self.job, "target": self.target, "dataset": self.dataset,
                "outcome": self.outcome.value, "message": self.message, "bytes": self.bytes,
                "seconds": round(self.seconds, 3),
                "plan": None if self.plan is None else {
                    "kind": self.plan.kind, "reason": self.plan.reason, "options": list(self.plan.options),
                    "chain": self.plan.chain,
                    "steps": [{"snapshot": s.snapshot.name, "base": s.base.name if s.base else None}
                              for s in self.plan.steps]},
                "commands": [{"host": h, "command": c} for h, c in self.commands],
                "steps": self.steps, "failed_host": self.failed_host,
                "uploaded": self.uploaded, "skipped": self.skipped, "notes": list(self.notes)}

    def fail(self, exc: Exception) -> None:
        """Record ``exc`` as this dataset's failure (errors.blame names the host at fault)."""
        self.outcome = Outcome.FAILED
        if isinstance(exc, (Unsupported, ManifestError)):
            self.message = f"{self.dataset}: {exc}"
            self.failed_host = None
        else:
            self.message = str(exc)
            self.failed_host = blame(exc, None) if isinstance(exc, ZrelayError) else None


@dataclass
class DatasetPush:
    """One dataset's push as planned: its result (filled in as its sends run) and its sends, in
    order. Each stored send names the one before it (``parent``) and its chain's full (``chain``)."""

    result: PushResult
    dataset: str
    sends: list["Prepared"] = field(default_factory=list)
    runs: bool = False            # its sends are to be uploaded (nothing refused, nothing failed)
    chain: str | None = None
    parent: str | None = None

    def label(self, index: int) -> str:
        """The stream's name in progress lines and events."""
        step = self.sends[index].step
        return (f"{self.dataset}@{step.snapshot.name} (full)" if step.base is None
                else f"{self.dataset}@{step.base.name} → @{step.snapshot.name} (-i)")


class S3Pusher:
    """Pushes jobs to one S3 target in two halves: ``plan_dataset`` reads the stored manifests and
    the source and prepares every send (command line, keys, part size) without changing anything;
    ``send`` uploads one prepared send and writes its manifest."""

    def __init__(self, store: Store, options: S3Options) -> None:
        self.store = store
        self.target: S3Target = store.target
        self.label = f"s3:{store.target.name}"
        self.options = options
        self._catalogs: dict[tuple[str, str, bool], asyncio.Future[dict[tuple[str, str], DatasetView]]] = {}

    def prefetch(self, job: Job) -> None:
        """Start reading ``job``'s stored sends now, to overlap the source's probe and listing."""
        self._views(job)

    def forget(self, job: Job) -> None:
        """Read ``job``'s stored sends again next time (another push may have added to them)."""
        self._catalogs.pop((job.source.host, job.source.dataset, job.recursive), None)

    async def views(self, job: Job) -> dict[tuple[str, str], DatasetView]:
        """What is stored for ``job``'s datasets: (host, dataset) → chains."""
        return await asyncio.shield(self._views(job))

    def _views(self, job: Job) -> asyncio.Future[dict[tuple[str, str], DatasetView]]:
        key = (job.source.host, job.source.dataset, job.recursive)
        fut = self._catalogs.get(key)
        if fut is None:
            fut = self._catalogs[key] = asyncio.ensure_future(catalog.load_views(
                self.store, host=job.source.host, dataset=job.source.dataset, recursive=job.recursive))
            # A run that fails on the source first never awaits it: keep asyncio from warning.
            fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        return fut

    async def plan_dataset(self, job: Job, source: RemoteHost, state: DatasetState, view: DatasetView | None,
                           *, new_chain: bool, dry_run: bool, limit: Limit = NONE) -> DatasetPush:
        """Plan one dataset and prepare its sends; a failure is this dataset's, not the job's.

        A real run refuses a send whose size is known to pass max_stream_size here, before
        anything of the dataset is uploaded; a dry run shows the problem with the send."""
        endpoint = f"{source.name}:{state.name}"
        result = PushResult(job.name, self.label, endpoint, Outcome.OK)
        push = DatasetPush(result, state.name)
        started = time.monotonic()
        try:
            p = chains.plan_push(state, view, select=job.select, new_chain=new_chain)
            result.plan = p
            caps = await source.capabilities()
            # send -p where the source sends it safely (see Capabilities.send_props): restores get them
            props = job.properties_for(S3Ref(self.store.target.name)).send and caps.send_props
            unfinished = await self._unfinished(source.name, state.name, result) if p.transfers else []
            push.sends = [await self._prepare(source, caps, state, step, limit, props, unfinished)
                          for step in p.steps]
            result.steps = [prep.to_dict(self.options.concurrency) for prep in push.sends]
            result.message = p.reason
            if p.refused:
                result.outcome = Outcome.REFUSED
                result.message = f"refused: {endpoint}: {p.reason}" + (
                    " Options: " + " | ".join(p.options) if p.options else "")
            elif not p.transfers:
                result.outcome = Outcome.NOOP   # up to date, or nothing selected yet (as sync treats it)
                if p.options:
                    result.message = f"{p.reason}; " + " | ".join(p.options)
            else:
                refused = next(((prep, problem) for prep in push.sends for problem in prep.preflight), None)
                if dry_run:
                    result.outcome = Outcome.SKIPPED   # a problem is shown with its send
                elif refused is not None:
                    prep, problem = refused
                    raise S3StreamTooLarge(self.target.name, f"{endpoint}@{prep.step.snapshot.name}: {problem}")
                push.runs = refused is None
                push.chain = p.chain
                push.parent = p.steps[0].parent_send
        except (ZrelayError, ManifestError) as exc:
            result.fail(exc)
        result.seconds = time.monotonic() - started
        return push

    async def _unfinished(self, host: str, dataset: str, result: PushResult) -> list[Upload]:
        """The dataset's unfinished uploads, when resuming; one that cannot be listed (a policy
        without s3:ListBucketMultipartUploads) only means nothing is resumed, said in a note."""
        if not self.options.resume:
            return []
        try:
            return await asyncio.to_thread(self.store.list_uploads, mf.dataset_prefix(self.target.prefix, host,
                                                                                      dataset))
        except S3Error as exc:
            result.notes.append(f"{dataset}: unfinished uploads not read, nothing resumed: {exc.message}")
            return []

    async def _resume(self, key: str, unfinished: list[Upload], planned: int) -> tuple[Resume | None, str | None]:
        """The unfinished upload of ``key`` to continue, and a note when one is left alone."""
        candidates = []
        for u in unfinished:
            if u.key != key:
                continue
            try:
                candidates.append((u.upload_id, await asyncio.to_thread(self.store.list_parts, u.key,
                                                                       u.upload_id)))
            except S3NotFound:   # aborted meanwhile (s3-abort-stale)
                continue
        return resuming.choose(key, candidates, planned_part_size=planned)

    async def _prepare(self, source: RemoteHost, caps: Capabilities, state: DatasetState,
                       step: PushStep, limit: Limit = NONE,
                       props: bool = False, unfinished: list[Upload] | None = None) -> "Prepared":
        raw = state.encrypted and caps.raw_send
        props = props and (raw or not state.encrypted)   # zfs refuses `send -p` of an encrypted dataset unless raw
        send = commands.send_argv(step.snapshot.full_name, caps=caps,
                                  base=step.base.full_name if step.base else None, raw=raw, props=props)
        filters = pipeline.choose_filters(self.target.name, self.options, await source.installed_tools(), source.name)
        command, stages = pipeline.push_command(send, filters, source.host.sudo)
        estimate = await self._estimate(source, caps, send)
        bound = estimate
        if bound is None and step.base is None:
            bound = await self._full_bound(source, step.snapshot.full_name)
        try:
            parts = plan_parts(estimate=estimate, max_stream_size=self.options.max_stream_size,
                               part_size=self.options.part_size, max_object_size=self.options.max_object_size)
        except ValueError as exc:
            raise S3UsageError(self.target.name, str(exc)) from None
        problem = preflight_problem(bound, self.options.max_stream_size,
                                    what="estimated stream" if estimate is not None else "stream (upper bound)")
        send_id = mf.make_send_id(step.snapshot.guid, step.base.guid if step.base else None)
        send_dir = mf.send_prefix(self.target.prefix, source.name, state.name, step.snapshot.name, send_id)
        first_key = send_dir + mf.stream_name(0, filters.extension)
        fresh = parts
        resume: Resume | None = None
        note: str | None = None
        if any(u.key == first_key for u in unfinished or ()):
            if filters.encrypted:
                note = (f"the unfinished upload of {first_key} is not resumed (age encrypts every stream "
                        "with a new key, so no part could match): a new upload starts; s3-abort-stale "
                        "removes the old one")
            else:
                resume, note = await self._resume(first_key, unfinished or [], parts.part_size)
        if resume is not None and resume.part_size != parts.part_size:
            again = plan_parts(estimate=estimate, max_stream_size=self.options.max_stream_size,
                               part_size=resume.part_size, max_object_size=self.options.max_object_size)
            parts = replace(again, basis=f"the unfinished upload's; planned {format_size(fresh.part_size)}: "
                                         f"{fresh.basis}")
        return Prepared(step, send, command, stages, filters, estimate, bound, parts, send_dir, raw,
                        [problem] if problem else [], limit, resume, note, fresh)

    async def _estimate(self, source: RemoteHost, caps: Capabilities, send: list[str]) -> int | None:
        if not caps.send_estimate:
            return None
        try:
            r = await source.zfs(commands.estimate_argv(send))
            return parse.parse_send_estimate(r.stdout)
        except (ZrelayError, ValueError):
            return None

    async def _full_bound(self, source: RemoteHost, snapshot: str) -> int | None:
        try:
            r = await source.zfs(commands.space_argv(snapshot))
        except ZrelayError:
            return None
        return pipeline.parse_space(r.stdout)

    def sink(self, prep: "Prepared") -> str:
        """Where a send goes: its key prefix in the bucket (its stream objects and manifest)."""
        return f"s3://{self.target.bucket}/{prep.send_dir}"

    async def send(self, source: RemoteHost, push: DatasetPush, index: int, on_bytes: Callable[[int], None],
                   throttle: Throttle | None = None) -> None:
        """Upload send ``index`` of ``push`` (multipart: completed, or aborted on any failure) and
        then write its manifest; the dataset's result records the failure, which is raised."""
        prep = push.sends[index]
        started = time.monotonic()
        label = push.label(index)
        if prep.resume_note:
            push.result.notes.append(f"{label}: {prep.resume_note}")
        try:
            try:
                m = await self._upload(source, push, prep, on_bytes, throttle, prep.resume, prep.parts, label)
            except S3ResumeMismatch as exc:   # aborted: the send starts over, in a new upload
                push.result.notes.append(f"{label}: {exc.message}")
                m = await self._upload(source, push, prep, on_bytes, throttle, None,
                                       prep.fresh_parts or prep.parts, label)
        except (ZrelayError, ManifestError) as exc:
            push.result.fail(exc)
            raise
        finally:
            push.result.seconds += time.monotonic() - started
        push.result.bytes += m.size
        push.chain, push.parent = m.chain, m.ref

    async def _upload(self, source: RemoteHost, push: DatasetPush, prep: "Prepared",
                      on_bytes: Callable[[int], None], throttle: Throttle | None,
                      resume: Resume | None, parts: PartPlan, label: str) -> mf.Manifest:
        step = prep.step
        started_at = _now()
        uploader = StreamUploader(
            self.store, prep.send_dir, prep.filters.extension, parts,
            concurrency=self.options.concurrency, storage_class=self.options.storage_class,
            checksum=self.options.part_checksum, on_bytes=on_bytes, resume=resume,
            metadata={"zrelay-snapshot-guid": str(step.snapshot.guid), "zrelay-version": __version__})
        try:
            res = await stream_to_s3(source, prep.command, prep.stages, uploader, dataset=push.dataset,
                                     throttle=throttle)
        finally:
            push.result.uploaded += uploader.uploaded
        push.result.skipped += uploader.skipped
        if resume is not None:
            push.result.notes.append(
                f"{label}: resumed upload {resume.short_id}: "
                f"{format_size(uploader.skipped)} stored before were compared and kept, "
                f"{format_size(uploader.uploaded)} uploaded")
        ref = mf.send_ref(step.snapshot.name, mf.make_send_id(step.snapshot.guid,
                                                              step.base.guid if step.base else None))
        m = mf.Manifest(
            host=source.name, dataset=push.dataset,
            snapshot=mf.SnapRef(step.snapshot.name, step.snapshot.guid, step.snapshot.createtxg,
                                step.snapshot.creation),
            parent=None if step.base is None else mf.SnapRef(step.base.name, step.base.guid,
                                                             step.base.createtxg, step.base.creation),
            parent_send=push.parent if step.base is not None else None,
            chain=ref if step.base is None else str(push.chain),
            send_flags=tuple(a for a in prep.send_argv[2:] if a.startswith("-")),
            send_command=prep.command, raw=prep.raw,
            compression=prep.filters.compression, encryption=prep.filters.encryption_record(),
            size=res.size, sha256=res.sha256, objects=tuple(res.objects),
            storage_class=self.options.storage_class, part_checksum=uploader.checksum,
            estimate=prep.estimate, zrelay_version=__version__, started=started_at, finished=_now())
        problems = mf.manifest_problems(m)
        if problems:
            raise S3Error(self.target.name, f"internal: manifest for {ref}: {problems[0]}")
        await asyncio.to_thread(self.store.put_bytes, mf.manifest_key(prep.send_dir), m.to_json().encode())
        return m


@dataclass
class Prepared:
    """One send, ready to run: its source pipeline, where it is stored and how it is cut into parts."""

    step: PushStep
    send_argv: list[str]
    command: str
    stages: list[str]
    filters: pipeline.Filters
    estimate: int | None
    bound: int | None
    parts: PartPlan
    send_dir: str
    raw: bool
    preflight: list[str]
    limit: Limit = NONE       # bandwidth (paths/throttle.py), kept by the S3 receiver while it uploads
    resume: Resume | None = None        # the unfinished upload this send continues
    resume_note: str | None = None      # an unfinished upload left alone, and why
    fresh_parts: PartPlan | None = None  # the parts as planned, should the resume be abandoned

    def describe_parts(self, concurrency: int) -> str:
        return (f"part size {format_size(self.parts.part_size)} ({self.parts.basis}), ≤ "
                f"{self.parts.parts_per_object} parts per object, {concurrency} in flight, "
                f"buffers ≤ {format_size(self.parts.memory_bound(concurrency))}")

    def to_dict(self, concurrency: int) -> dict[str, object]:
        step = self.step
        return {
            "snapshot": step.snapshot.name, "base": step.base.name if step.base else None,
            "kind": "full" if step.base is None else "incremental", "command": self.command,
            "objects": [self.send_dir + mf.stream_name(0, self.filters.extension)],
            "manifest": mf.manifest_key(self.send_dir),
            "filters": self.filters.names(), "estimate": self.estimate, "size_bound": self.bound,
            "part_size": self.parts.part_size, "parts_per_object": self.parts.parts_per_object,
            "memory_bound": self.parts.memory_bound(concurrency),
            "parts": self.describe_parts(concurrency), "problem": self.preflight[0] if self.preflight else None,
            "bandwidth": self.limit.alone, "limit": self.limit.describe(),
            "resume": None if self.resume is None else {**self.resume.to_dict(), "line": self.resume.describe()},
            "resume_note": self.resume_note}


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
