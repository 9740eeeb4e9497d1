"""S3 restore data path: parallel ranged GETs → this process → (filters and) ``zfs receive`` on a host.

Why the last chunk is held back: the sha256 of an object is only known once
its last byte has been read, and ``zfs receive`` must not be handed a
complete stream that turns out to be corrupt. Every chunk is hashed in
order, and each chunk is written only once the next one has arrived; at the
end of an object its hash is compared with the manifest's before its final
chunk goes out. On a mismatch the receiving pipeline gets end-of-file
instead, so it sees a truncated stream and aborts: the target is left
without the bad snapshot, and the error names the object.

Memory: ``chunk × (concurrency + 2)`` (GETs in flight, the chunk being hashed,
the chunk held back) plus the channel's write buffer.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import asyncssh

from zrelay.errors import (NewestNotRestorable, RestoreRefused, S3ChainBroken, S3ChecksumMismatch, S3Error,
                           S3ObjectArchived, S3UsageError, TransferFailed, ZrelayError)
from zrelay.events import EventSink, TransferFinished, TransferProgress, TransferStarted, discard
from zrelay.paths.progress import Meter
from zrelay.paths.throttle import NONE, REGISTRY, Limit, Throttle
from zrelay.s3 import chains, pipeline
from zrelay.s3.chains import DatasetView, RestorePlan, SendRecord
from zrelay.s3.options import ARCHIVE_CLASSES, S3Options
from zrelay.s3.sizing import MiB
from zrelay.s3.store import Head, Store
from zrelay.s3.transfer import read_ranges
from zrelay.transport.host import RemoteHost
from zrelay.zfs import commands, parse
from zrelay.zfs.model import DatasetState, ReplicaProperties

CHUNK = 8 * MiB
WRITE_HIGH = 8 * MiB
WRITE_LOW = 2 * MiB
STDERR_CAP = 64 * 1024
CLOSE_TIMEOUT = 120.0

#: How long an archive restore takes, per storage class and tier (AWS's published figures).
RESTORE_TIMES = {
    ("GLACIER", "Expedited"): "1–5 minutes",
    ("GLACIER", "Standard"): "3–5 hours",
    ("GLACIER", "Bulk"): "5–12 hours",
    ("DEEP_ARCHIVE", "Standard"): "up to 12 hours",
    ("DEEP_ARCHIVE", "Bulk"): "up to 48 hours",
    ("DEEP_ARCHIVE", "Expedited"): "up to 12 hours (Expedited is not offered; Standard applies)",
}


# --------------------------------------------------------------------------- reading and checking


async def hash_object(store: Store, key: str, size: int, *, concurrency: int, executor: ThreadPoolExecutor,
                      hasher: ThreadPoolExecutor, on_bytes: Callable[[int], None] = lambda n: None) -> str:
    """sha256 of a stored object read with parallel ranged GETs."""
    loop = asyncio.get_running_loop()
    h = hashlib.sha256()
    async for chunk in read_ranges(store, key, size, chunk=CHUNK, concurrency=concurrency, executor=executor):
        await loop.run_in_executor(hasher, h.update, chunk)
        on_bytes(len(chunk))
    return h.hexdigest()


@dataclass
class VerifyResult:
    dataset: str
    ref: str
    ok: bool
    message: str
    bytes: int = 0
    keys: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {"dataset": self.dataset, "send": self.ref, "ok": self.ok, "message": self.message,
                "bytes": self.bytes, "keys": self.keys}


async def verify_send(store: Store, send: SendRecord, *, concurrency: int,
                      on_bytes: Callable[[int], None] = lambda n: None) -> VerifyResult:
    """Re-read every object of one send and compare sizes and sha256 with its manifest."""
    endpoint = f"{send.host}:{send.dataset}"
    problems = send.problems()
    keys = [send.directory + o.name for o in send.manifest.objects] if send.manifest else send.keys
    if problems:
        return VerifyResult(endpoint, send.ref, False, problems[0], keys=keys)
    assert send.manifest is not None
    total = 0
    whole = hashlib.sha256() if len(send.manifest.objects) > 1 else None
    with ThreadPoolExecutor(concurrency, thread_name_prefix="s3-get") as pool, \
            ThreadPoolExecutor(1, thread_name_prefix="s3-sha") as hasher:
        for obj in send.manifest.objects:
            key = send.directory + obj.name
            try:
                if whole is not None:
                    got = await _hash_both(store, key, obj.size, whole, concurrency, pool, hasher, on_bytes)
                else:
                    got = await hash_object(store, key, obj.size, concurrency=concurrency, executor=pool,
                                            hasher=hasher, on_bytes=on_bytes)
            except S3Error as exc:
                return VerifyResult(endpoint, send.ref, False, f"{key}: {exc.message}", total, keys)
            total += obj.size
            if got != obj.sha256:
                return VerifyResult(endpoint, send.ref, False,
                                    f"{key}: sha256 {got[:16]}… does not match the manifest's "
                                    f"{obj.sha256[:16]}… (the stored object is damaged)", total, keys)
    if whole is not None and whole.hexdigest() != send.manifest.sha256:
        return VerifyResult(endpoint, send.ref, False,
                            f"{send.directory}: whole-stream sha256 does not match the manifest", total, keys)
    return VerifyResult(endpoint, send.ref, True, "ok", total, keys)


async def _hash_both(store: Store, key: str, size: int, whole: "hashlib._Hash", concurrency: int,
                     pool: ThreadPoolExecutor, hasher: ThreadPoolExecutor,
                     on_bytes: Callable[[int], None]) -> str:
    loop = asyncio.get_running_loop()
    h = hashlib.sha256()

    def update(chunk: bytes) -> None:
        h.update(chunk)
        whole.update(chunk)

    async for chunk in read_ranges(store, key, size, chunk=CHUNK, concurrency=concurrency, executor=pool):
        await loop.run_in_executor(hasher, update, chunk)
        on_bytes(len(chunk))
    return h.hexdigest()


# --------------------------------------------------------------------------- archive classes


def archived_heads(heads: list[Head]) -> list[Head]:
    """Objects that must be restored from an archive class before they can be read."""
    return [h for h in heads if h.storage_class in ARCHIVE_CLASSES and not h.restored]


async def ensure_readable(store: Store, keys: list[str], options: S3Options, *, wait: bool,
                          poll_seconds: float = 60.0, max_wait: float | None = None,
                          sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                          say: Callable[[str], None] = lambda s: None) -> None:
    """Request restores of archived objects; with ``wait`` poll until they are readable.

    Some S3-compatible servers label objects GLACIER without archiving them;
    an object that answers a one-byte GET is readable whatever its label.
    """
    heads = list(await asyncio.gather(*(asyncio.to_thread(store.head, k) for k in keys)))
    pending = []
    for head in archived_heads(heads):
        if await asyncio.to_thread(_readable, store, head):
            continue
        pending.append(head)
    if not pending:
        return
    for head in pending:
        if not head.restore_ongoing:
            await asyncio.to_thread(store.restore_object, head.key, options.restore_days, options.restore_tier)
    classes = sorted({h.storage_class for h in pending})
    eta = "; ".join(f"{c}: {RESTORE_TIMES.get((c, options.restore_tier), 'hours')}" for c in classes)
    what = (f"{len(pending)} object(s) are archived ({', '.join(classes)}); restore requested "
            f"({options.restore_tier} tier, readable for {options.restore_days} days); expect {eta}")
    if not wait:
        raise S3ObjectArchived(store.name, f"{what}; re-run later, or with --wait to poll",
                               pending[0].key)
    say(f"{what}; waiting (polling every {poll_seconds:.0f} s)")
    waited = 0.0
    while pending:
        if max_wait is not None and waited >= max_wait:
            raise S3ObjectArchived(store.name, f"{len(pending)} object(s) still being restored after "
                                               f"{waited:.0f} s; re-run later", pending[0].key)
        await sleep(poll_seconds)
        waited += poll_seconds
        fresh = list(await asyncio.gather(*(asyncio.to_thread(store.head, h.key) for h in pending)))
        pending = [h for h in fresh if not h.restored]
        if pending:
            say(f"{len(pending)} object(s) still being restored")


def _readable(store: Store, head: Head) -> bool:
    try:
        store.get_range(head.key, 0, 1)
        return True
    except S3Error:
        return False


# --------------------------------------------------------------------------- receiving


class _ReceiveSession(asyncssh.SSHClientSession[bytes]):
    def __init__(self, state: "_ReceiveState") -> None:
        self._s = state

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        buf = self._s.stderr if datatype == asyncssh.EXTENDED_DATA_STDERR else self._s.stdout
        if len(buf) < STDERR_CAP:
            buf += data

    def exit_status_received(self, status: int) -> None:
        self._s.exit_status = status

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        self._s.exit_signal = signal

    def pause_writing(self) -> None:
        self._s.writable.clear()

    def resume_writing(self) -> None:
        self._s.writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self._s.writable.set()
        if not self._s.done.done():
            self._s.done.set_result(None)


@dataclass
class _ReceiveState:
    done: asyncio.Future[None]
    writable: asyncio.Event = field(default_factory=asyncio.Event)
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    exit_status: int | None = None
    exit_signal: str | None = None


async def receive_send(store: Store, send: SendRecord, dest: RemoteHost, command: str, stages: list[str],
                       *, concurrency: int, dataset: str, on_bytes: Callable[[int], None],
                       throttle: Throttle | None = None) -> int:
    """Stream one stored send into ``command`` on ``dest``, verifying as it goes (module docstring);
    each chunk waits for ``throttle`` (paths/throttle.py) before it is written."""
    m = send.manifest
    assert m is not None
    loop = asyncio.get_running_loop()
    state = _ReceiveState(loop.create_future())
    state.writable.set()
    moved = 0
    mismatch: S3ChecksumMismatch | None = None
    with ThreadPoolExecutor(concurrency, thread_name_prefix="s3-get") as pool, \
            ThreadPoolExecutor(1, thread_name_prefix="s3-sha") as hasher:
        async with dest.conn.bulk_session(lambda: _ReceiveSession(state), command) as (chan, _):
            chan.set_write_buffer_limits(high=WRITE_HIGH, low=WRITE_LOW)

            async def write(data: bytes) -> bool:
                if throttle is not None:
                    await throttle.take(len(data))
                await state.writable.wait()
                if chan.is_closing() or state.done.done():
                    return False
                chan.write(data)
                return True

            try:
                whole = hashlib.sha256()
                multi = len(m.objects) > 1
                held: bytes | None = None
                receiver_gone = False
                for obj in m.objects:
                    key = send.directory + obj.name
                    h = hashlib.sha256()

                    def update(chunk: bytes, h: "hashlib._Hash" = h) -> None:
                        h.update(chunk)
                        if multi:
                            whole.update(chunk)

                    async for chunk in read_ranges(store, key, obj.size, chunk=CHUNK, concurrency=concurrency,
                                                   executor=pool):
                        hashing = loop.run_in_executor(hasher, update, chunk)  # overlaps the write below
                        if receiver_gone:
                            await hashing
                            continue  # keep hashing: a damaged object is the likelier cause, and worth naming
                        if held is not None and not await write(held):
                            receiver_gone = True
                            held = None
                            await hashing
                            continue
                        await hashing
                        moved += len(held) if held is not None else 0
                        on_bytes(len(chunk))
                        held = chunk
                    got = h.hexdigest()
                    if got != obj.sha256:
                        mismatch = S3ChecksumMismatch(store.name, (
                            f"{key}: sha256 {got[:16]}… does not match the manifest's {obj.sha256[:16]}…; "
                            f"the stored object is damaged, zfs receive on {dest.name} was given a truncated "
                            f"stream so {dataset} did not get @{m.snapshot.name}"), key)
                        break
                    if receiver_gone:
                        break
                if mismatch is None and not receiver_gone and multi and whole.hexdigest() != m.sha256:
                    mismatch = S3ChecksumMismatch(store.name, f"{send.directory}: whole-stream sha256 does not "
                                                              "match the manifest; receive aborted",
                                                  send.directory)
                if mismatch is None and not receiver_gone and held is not None:
                    if await write(held):
                        moved += len(held)
                if not chan.is_closing():
                    chan.write_eof()
                await asyncio.wait_for(asyncio.shield(state.done), CLOSE_TIMEOUT)
            except BaseException:
                chan.close()
                raise
    report = pipeline.read_stage_report(state.stderr.decode("utf-8", "replace"))
    failed = report.failed(stages, state.exit_status, state.exit_signal)
    if mismatch is not None:
        if not failed:  # cannot happen with a held-back tail; say so loudly if it ever does
            raise S3ChecksumMismatch(store.name, f"{mismatch.message}; WARNING: zfs receive reported success",
                                     mismatch.key)
        raise mismatch
    if failed:
        text = report.text
        cause = parse.map_error(dest.name, text or ", ".join(failed), state.exit_status, dataset)
        raise TransferFailed(f"{cause}" if text else f"{dest.name}: {', '.join(failed)}", dest.name, cause)
    return moved


# --------------------------------------------------------------------------- one restore


@dataclass
class RestoreResult:
    source: str
    target: str
    outcome: str                    # ok | noop | dry-run
    message: str
    bytes: int = 0
    seconds: float = 0.0
    commands: list[tuple[str, str]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    snapshots: list[str] = field(default_factory=list)
    steps: list[dict[str, object]] = field(default_factory=list)   # per send: snapshot, command, objects

    def to_dict(self) -> dict[str, object]:
        return {"source": self.source, "target": self.target, "outcome": self.outcome, "message": self.message,
                "bytes": self.bytes, "seconds": round(self.seconds, 3), "snapshots": self.snapshots,
                "commands": [{"host": h, "command": c} for h, c in self.commands], "keys": self.keys,
                "steps": self.steps}


async def restore(store: Store, options: S3Options, view: DatasetView, snapshot: str | None,
                  dest: RemoteHost, dataset: str, *, dry_run: bool = False, wait: bool = False,
                  verify_first: bool = False, poll_seconds: float = 60.0,
                  events: EventSink = discard, say: Callable[[str], None] = lambda s: None,
                  limit: Limit = NONE) -> RestoreResult:
    """Restore ``view``'s chain up to ``snapshot`` into ``dest``:``dataset``, each send at most
    as fast as ``limit`` (the S3 target's and the host's bandwidth, throttle.stream_limit)."""
    started = time.monotonic()
    label = f"s3:{store.name}"
    target_ep = f"{dest.name}:{dataset}"
    state = (await dest.state(dataset)).get(dataset) or DatasetState.absent(dataset)
    try:
        rplan: RestorePlan = chains.plan_restore(view, snapshot, state)
    except NewestNotRestorable as exc:
        raise S3ChainBroken(store.name, newest_refusal(exc, store.name, target_ep)) from None
    except RestoreRefused as exc:
        raise (S3UsageError(store.name, str(exc)) if "no send of" in str(exc) else _refused(store, exc)) from None
    result = RestoreResult(view.endpoint, target_ep, rplan.kind, rplan.reason,
                           snapshots=[s.snapshot_name for s in rplan.path])
    if rplan.kind == "noop":
        result.seconds = time.monotonic() - started
        return result
    caps = await dest.capabilities()
    recv = commands.receive_argv(dataset, caps=caps, resumable=False)
    make_parent = False
    if not state.exists and "/" in dataset:
        parent = dataset.rsplit("/", 1)[0]
        if "/" in parent and not await dest.exists(parent):
            make_parent = True
            result.commands.append((dest.name, dest.command(commands.create_argv(parent, parents=True))))
    planned: list[tuple[SendRecord, str, list[str]]] = []
    for send in rplan.path:
        assert send.manifest is not None
        try:
            command, stages = pipeline.restore_command(recv, send.manifest, options.age_identity, dest.host.sudo)
        except S3UsageError as exc:
            raise S3UsageError(store.name, exc.message) from None
        planned.append((send, command, stages))
        result.commands.append((dest.name, command))
        # the same rules as sync (commands.receive_properties): a mounted copy blocks the next incremental,
        # a copy never takes the source's mountpoint or shares; after the full receive, the type being unknown
        then = [dest.command(replica_fixup(dataset, send.manifest.send_flags))] if send.manifest.full else []
        result.commands += [(dest.name, c) for c in then]
        objects = [send.directory + o.name for o in send.manifest.objects]
        result.keys += objects
        result.steps.append({"snapshot": send.snapshot_name, "kind": send.manifest.kind, "host": dest.name,
                             "command": command, "objects": objects, "size": send.manifest.size, "then": then,
                             "bandwidth": limit.alone, "limit": limit.describe()})
    if dry_run:
        result.outcome = "dry-run"
        result.seconds = time.monotonic() - started
        return result
    need = set().union(*(pipeline.restore_tools(s.manifest) for s in rplan.path if s.manifest))
    if need:
        missing = need - await dest.installed_tools()
        if missing:
            raise S3UsageError(store.name, f"restoring needs {', '.join(sorted(missing))} on {dest.name}, "
                                           "which is not installed there")
    await ensure_readable(store, result.keys, options, wait=wait, poll_seconds=poll_seconds, say=say)
    if verify_first:
        for send in rplan.path:
            v = await verify_send(store, send, concurrency=options.concurrency)
            if not v.ok:
                raise S3ChecksumMismatch(store.name, f"{v.message}; nothing was received", v.keys[0] if v.keys else None)
    if make_parent:
        await dest.create_parents(dataset)
    for send, command, stages in planned:
        m = send.manifest
        assert m is not None
        stream = (f"{view.endpoint}@{m.snapshot.name} (full)" if m.full
                  else f"{view.endpoint}@{m.parent.name if m.parent else '?'} → @{m.snapshot.name} (-i)")
        meter = Meter(_progress(events, view.endpoint, target_ep, stream, m.size))
        events(TransferStarted(view.endpoint, target_ep, label, dest.name, stream, m.size))
        ok = False
        try:
            async with REGISTRY.stream(limit) as throttle:
                result.bytes += await receive_send(store, send, dest, command, stages,
                                                   concurrency=options.concurrency, dataset=dataset,
                                                   on_bytes=meter.add, throttle=throttle)
            ok = True
        finally:
            events(TransferFinished(view.endpoint, target_ep, stream, meter.done, meter.elapsed(), ok))
        if m.full:
            await dest.zfs(replica_fixup(dataset, m.send_flags), dataset=dataset, retry_busy=True)
    result.outcome = "ok"
    result.seconds = time.monotonic() - started
    return result


def replica_fixup(dataset: str, send_flags: tuple[str, ...]) -> list[str]:
    """What a restored full stream's dataset gets right after its receive: canmount=noauto, and the
    source's mountpoint and shares inherited when the stream carried properties (``send -p``)."""
    props = commands.receive_properties(ReplicaProperties(send="-p" in send_flags), volume=False)
    return commands.replica_fixup_script_argv(dataset, props)


def _progress(events: EventSink, job: str, target: str, stream: str, size: int) -> Callable[[int, float], None]:
    def report(done: int, rate: float) -> None:
        events(TransferProgress(job, target, stream, done, size, rate))
    return report


def newest_refusal(exc: NewestNotRestorable, target: str, to: str) -> str:
    """Why the newest stored snapshot is not restored, and the exact command for the newest one that can be."""
    text = f"refused: {exc}."
    best = exc.restorable
    if best is None:
        return f"{text} Nothing stored for {exc.endpoint} can be restored."
    return (f"{text} The newest restorable snapshot is @{best}; to restore it: "
            f"zrelay s3-restore {target} {exc.endpoint} --to {to} --snapshot {best}")


def _refused(store: Store, exc: RestoreRefused) -> ZrelayError:
    if "broken" in str(exc):
        return S3ChainBroken(store.name, str(exc))
    return S3Error(store.name, f"refused: {exc}")

