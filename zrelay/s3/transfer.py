"""Streaming to and from S3 with bounded memory: multipart upload of a byte stream, ranged reads.

Upload: bytes arrive from a callback (an SSH channel's ``data_received``) and
are cut into parts; up to ``concurrency`` parts upload at once in threads,
one more waits, one fills. When that many are outstanding the producer is
paused (``pause_reading``) until one finishes, so memory stays at most
``part_size × (concurrency + 2)`` plus the channel's window, whatever the
stream size. The sha256 of the stream is computed in order in one worker
thread while parts upload. Any failure, cancellation or Ctrl-C aborts every
multipart upload of the stream (and deletes objects of it already completed),
so nothing half-written ever becomes visible.

Resume (zrelay.s3.resume): given the parts an unfinished upload of the first
object already holds, each regenerated part with a stored counterpart is
compared with it (size, MD5/SHA-256) instead of uploaded; equal parts go into
the completed object as they are, and the first difference fails the stream,
which aborts that upload, so an object never mixes parts of two streams.

Download: an object is read as consecutive ranges, ``concurrency`` GETs in
flight, yielded in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections import deque
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

from zrelay.errors import S3Error, S3ResumeMismatch, S3StreamTooLarge
from zrelay.s3.manifest import StoredObject, stream_name
from zrelay.s3.resume import Resume, StoredPart
from zrelay.s3.sizing import PartPlan, format_size
from zrelay.s3.store import Store


@dataclass
class _Object:
    """One S3 object of the stream being uploaded."""

    index: int
    key: str
    name: str
    created: asyncio.Future[str] | None = None
    entries: list[dict[str, Any]] = field(default_factory=list)
    tasks: set[asyncio.Future[None]] = field(default_factory=set)   # uploads still running
    parts: int = 0
    size: int = 0
    sha: Any = field(default_factory=hashlib.sha256)
    completed: bool = False


class StreamUploader:
    """Feeds a byte stream into one or more multipart uploads (see module docstring)."""

    def __init__(self, store: Store, send_dir: str, extension: str, plan: PartPlan, *,
                 concurrency: int, storage_class: str, checksum: str,
                 metadata: dict[str, str] | None = None,
                 on_bytes: Callable[[int], None] = lambda n: None, resume: Resume | None = None) -> None:
        self.store = store
        self.send_dir = send_dir
        self.extension = extension
        self.plan = plan
        self.concurrency = concurrency
        self.storage_class = storage_class
        self.resume = resume
        # parts added to a resumed upload carry the checksum its stored parts carry
        self.checksum = checksum if resume is None else resume.checksum
        self.uploaded = 0     # bytes of parts this run uploaded
        self.skipped = 0      # bytes of parts a resumed upload held already, found equal
        self.metadata = metadata or {}
        self.on_bytes = on_bytes
        self.error: BaseException | None = None
        self.total = 0
        self.peak_outstanding = 0
        self._loop = asyncio.get_running_loop()
        self._free: list[bytearray] = []      # part buffers to reuse: the footprint stays flat
        self._part: bytearray | None = None
        self._fill = 0
        self._objects: list[_Object] = []
        self._outstanding = 0
        self._limit_outstanding = concurrency + 1
        self._slots = asyncio.Semaphore(concurrency)
        self._pool = ThreadPoolExecutor(max_workers=concurrency + 1, thread_name_prefix="s3-part")
        self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="s3-sha")
        self._whole = hashlib.sha256()
        self._first_sha: Any = None
        self._paused = False
        self._pause: Callable[[], None] = lambda: None
        self._resume: Callable[[], None] = lambda: None
        self._stop: Callable[[], None] = lambda: None
        self._finished = False

    def bind(self, *, pause: Callable[[], None], resume: Callable[[], None], stop: Callable[[], None]) -> None:
        """How to slow down and stop the producer (an SSH channel)."""
        self._pause, self._resume, self._stop = pause, resume, stop

    # -- producer side (synchronous, called from callbacks) ---------------------

    def feed(self, data: bytes) -> None:
        if self.error is not None or self._finished:
            return
        limit = self.plan.limit
        if limit is not None and self.total + len(data) > limit:
            self.fail(S3StreamTooLarge(self.store.name, (
                f"the stream passed max_stream_size {format_size(limit)} after {format_size(self.total)}; "
                "the upload was aborted and nothing was stored (raise max_stream_size)")))
            return
        self.total += len(data)
        self.on_bytes(len(data))
        view = memoryview(data)
        size = self.plan.part_size
        while view:
            if self._part is None:
                self._part = self._free.pop() if self._free else bytearray(size)
                self._fill = 0
            n = min(size - self._fill, len(view))
            self._part[self._fill:self._fill + n] = view[:n]
            self._fill += n
            view = view[n:]
            if self._fill == size:
                part, self._part, self._fill = self._part, None, 0   # no empty part after a full one
                self._ship(part)

    def fail(self, exc: BaseException) -> None:
        """Record the first failure and stop the producer; finish() or abort() cleans up."""
        if self.error is None:
            self.error = exc
        self._stop()

    def _current_object(self) -> _Object:
        obj = self._objects[-1] if self._objects else None
        if obj is None or obj.parts >= self.plan.parts_per_object:
            index = len(self._objects)
            name = stream_name(index, self.extension)
            obj = _Object(index, self.send_dir + name, name)
            if index == 0 and self.resume is not None and self.resume.key == obj.key:
                obj.created = self._loop.create_future()
                obj.created.set_result(self.resume.upload_id)
            else:
                obj.created = asyncio.ensure_future(self._run(
                    self.store.create_upload, obj.key, self.storage_class, self.metadata, self.checksum))
            self._objects.append(obj)
        return obj

    def _ship(self, part: bytearray | bytes) -> None:
        obj = self._current_object()
        obj.parts += 1
        obj.size += len(part)
        number = obj.parts
        hashed = self._hasher.submit(self._hash, obj, part)
        self._outstanding += 1
        self.peak_outstanding = max(self.peak_outstanding, self._outstanding)
        task = asyncio.ensure_future(self._upload(obj, number, part, hashed))
        obj.tasks.add(task)
        task.add_done_callback(obj.tasks.discard)   # a long stream keeps no finished tasks
        if self._outstanding >= self._limit_outstanding and not self._paused:
            self._paused = True
            self._pause()

    def _stored(self, obj: _Object, number: int) -> StoredPart | None:
        """The part a resumed upload already holds under ``number`` of ``obj``, if any."""
        if self.resume is None or obj.index != 0 or self.resume.key != obj.key:
            return None
        return self.resume.parts.get(number)

    def _mismatch(self, obj: _Object, where: str) -> S3ResumeMismatch:
        assert self.resume is not None
        return S3ResumeMismatch(self.store.name, (
            f"the regenerated stream differs from what upload {self.resume.short_id} of {obj.key} holds "
            f"{where}: that upload is aborted and the send starts over"), obj.key)

    def _release(self, part: bytearray) -> None:
        if len(part) == self.plan.part_size and len(self._free) < self.concurrency + 2:
            self._free.append(part)

    def _hash(self, obj: _Object, part: bytearray | bytes) -> None:
        """In part order (one worker): the whole stream, and objects after the first on their own.

        The first object's hash is the whole-stream hash as it stood when the
        second object began, so a single-object stream is hashed once.
        """
        if obj.index > 0:
            if self._first_sha is None:
                self._first_sha = self._whole.copy()
            obj.sha.update(part)
        self._whole.update(part)

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self._loop.run_in_executor(self._pool, fn, *args)

    async def _upload(self, obj: _Object, number: int, part: bytearray | bytes, hashed: Future[None]) -> None:
        reusable = True   # False while a thread may still be reading the buffer
        try:
            async with self._slots:
                if self.error is not None:
                    return
                assert obj.created is not None
                upload_id = await obj.created
                stored = self._stored(obj, number)
                reusable = False
                if stored is not None:
                    why = await self._run(stored.difference, part)
                    reusable = True
                    if why is not None:
                        raise self._mismatch(obj, f"at part {number} ({why})")
                    entry = stored.entry()
                    self.skipped += len(part)
                else:
                    entry = await self._run(self.store.upload_part, obj.key, upload_id, number, part,
                                            self.checksum)
                    reusable = True
                    self.uploaded += len(part)
                obj.entries.append(entry)
            await asyncio.wrap_future(hashed)
        except BaseException as exc:  # noqa: BLE001 - recorded, re-raised by finish()
            self.fail(exc)
        finally:
            with contextlib.suppress(BaseException):
                await asyncio.shield(asyncio.wrap_future(hashed))  # the hasher may still read the buffer
            if reusable and isinstance(part, bytearray):
                self._release(part)
            self._outstanding -= 1
            if self._paused and self._outstanding < self._limit_outstanding and self.error is None:
                self._paused = False
                self._resume()

    # -- consumer side ----------------------------------------------------------------

    async def finish(self) -> tuple[list[StoredObject], str]:
        """Upload what is left, complete every object; returns the objects and the stream's sha256."""
        if self.error is None:
            if self._fill or not self._objects:
                part: bytearray | bytes = b""
                if self._part is not None:   # the last part: cut the buffer down in place, no copy
                    part = self._part
                    del part[self._fill:]
                self._part, self._fill = None, 0
                if not part and self.total == 0:
                    self.fail(S3Error(self.store.name, "the stream was empty; nothing was stored"))
                else:
                    self._ship(part)
        self._finished = True
        await self._drain()
        if self.error is None and self.resume is not None and self._objects:
            head = self._objects[0]
            beyond = [n for n in self.resume.parts if n > head.parts]
            if beyond:   # the stored stream was longer: not the stream regenerated now
                self.fail(self._mismatch(head, f"beyond its end (part {max(beyond)} stored, "
                                               f"{head.parts} regenerated)"))
        if self.error is not None:
            raise self.error
        for obj in self._objects:
            assert obj.created is not None
            await self._run(self.store.complete_upload, obj.key, obj.created.result(), obj.entries)
            obj.completed = True
        whole = self._whole.hexdigest()
        first = self._first_sha.hexdigest() if self._first_sha is not None else whole
        objects = [StoredObject(o.name, o.size, first if o.index == 0 else o.sha.hexdigest(), o.parts,
                                self.plan.part_size) for o in self._objects]
        self._close_pools()
        return objects, whole

    async def _drain(self) -> None:
        tasks = [t for o in self._objects for t in o.tasks]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        created = [o.created for o in self._objects if o.created is not None]
        if created:
            await asyncio.gather(*created, return_exceptions=True)
        await self._loop.run_in_executor(self._hasher, lambda: None)

    async def abort(self) -> list[str]:
        """Abort every upload of this stream and delete any object of it already completed.

        Returns what could not be cleaned up (for the error message): those are
        found later by ``s3-abort-stale`` / ``s3-prune``.
        """
        self._finished = True
        if self.error is None:
            self.error = S3Error(self.store.name, "aborted")
        left: list[str] = []
        await self._drain()
        for obj in self._objects:
            fut = obj.created
            if fut is None or not fut.done() or fut.cancelled() or fut.exception() is not None:
                continue
            try:
                if obj.completed:
                    await self._run(self.store.delete, obj.key)
                else:
                    await self._run(self.store.abort_upload, obj.key, fut.result())
            except (S3Error, OSError) as exc:
                left.append(f"{obj.key} ({exc})")
        self._close_pools()
        return left

    def _close_pools(self) -> None:
        self._pool.shutdown(wait=False)
        self._hasher.shutdown(wait=False)

    @property
    def object_keys(self) -> list[str]:
        return [o.key for o in self._objects]


async def read_ranges(store: Store, key: str, size: int, *, chunk: int, concurrency: int,
                      executor: Executor) -> AsyncIterator[bytes]:
    """``key`` as consecutive chunks, ``concurrency`` ranged GETs in flight, in order."""
    loop = asyncio.get_running_loop()
    ranges = deque((start, min(size, start + chunk)) for start in range(0, size, chunk))
    window: deque[asyncio.Future[bytes]] = deque()
    try:
        while ranges or window:
            while ranges and len(window) < concurrency:
                start, end = ranges.popleft()
                window.append(loop.run_in_executor(executor, store.get_range, key, start, end))
            data = await window.popleft()
            yield data
    finally:
        for fut in window:
            fut.cancel()
        for fut in window:
            with contextlib.suppress(BaseException):
                await fut
