"""Multipart streaming and ranged reads: bounded memory, correct bytes, abort on any failure.

Runs against the lab's real S3 server (SeaweedFS, tests/s3fixture.py), each test in a bucket of its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator

import pytest

from zrelay.errors import S3Error, S3StreamTooLarge
from zrelay.inventory.model import S3Target
from zrelay.s3.sizing import MiB, plan_parts
from zrelay.s3.store import Store
from zrelay.s3.transfer import StreamUploader, read_ranges


@pytest.fixture
def store(s3: Any) -> Iterator[Store]:
    client = s3.client()
    bucket = f"unit-{secrets.token_hex(4)}"
    client.create_bucket(Bucket=bucket)
    target = S3Target("unit", bucket, endpoint=s3.endpoint, region=s3.region, addressing_style="path")
    yield Store(target, client)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []) or []:
            client.delete_object(Bucket=bucket, Key=obj["Key"])
    for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) or []:
        client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    client.delete_bucket(Bucket=bucket)


class SlowStore(Store):
    """Counts parts in memory at once; optionally fails one part."""

    def __init__(self, inner: Store, delay: float = 0.02, fail_part: int | None = None) -> None:
        super().__init__(inner.target, inner.client)
        self.delay = delay
        self.fail_part = fail_part
        self.in_flight = 0
        self.peak = 0
        self.lock = threading.Lock()

    def upload_part(self, key: str, upload_id: str, number: int, body: Any, checksum: str) -> dict[str, Any]:
        with self.lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            time.sleep(self.delay)
            if number == self.fail_part:
                raise S3Error(self.name, f"part {number} refused", key)
            return super().upload_part(key, upload_id, number, body, checksum)
        finally:
            with self.lock:
                self.in_flight -= 1


class Producer:
    """Stands in for an SSH channel: feeds chunks unless paused, like data_received would."""

    def __init__(self, uploader: StreamUploader, data: bytes, chunk: int = 256 * 1024) -> None:
        self.uploader, self.data, self.chunk = uploader, data, chunk
        self.paused = False
        self.stopped = False
        self.max_buffered_parts = 0
        uploader.bind(pause=self.pause, resume=self.resume, stop=self.stop)

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def stop(self) -> None:
        self.stopped = True

    async def run(self) -> None:
        pos = 0
        while pos < len(self.data) and not self.stopped:
            if self.paused:
                await asyncio.sleep(0.001)
                continue
            self.uploader.feed(self.data[pos:pos + self.chunk])
            pos += self.chunk
            # parts handed off and not yet released, plus the one filling
            self.max_buffered_parts = max(self.max_buffered_parts, self.uploader._outstanding + 1)
            await asyncio.sleep(0)


def _uploader(store: Store, plan: Any, concurrency: int = 3, checksum: str = "md5") -> StreamUploader:
    return StreamUploader(store, "t/send/", "", plan, concurrency=concurrency, storage_class="STANDARD",
                          checksum=checksum)


@pytest.mark.parametrize("checksum", ["md5", "sha256", "none"])
def test_stream_round_trip_with_each_checksum(store: Store, checksum: str) -> None:
    data = os.urandom(12 * MiB + 17)

    async def go() -> None:
        up = _uploader(store, plan_parts(part_size=5 * MiB), checksum=checksum)
        await Producer(up, data).run()
        objects, sha = await up.finish()
        assert sha == hashlib.sha256(data).hexdigest()
        assert [(o.name, o.size, o.parts) for o in objects] == [("stream.000.zfs", len(data), 3)]
        got = store.client.get_object(Bucket=store.target.bucket, Key="t/send/stream.000.zfs")["Body"].read()
        assert got == data

    asyncio.run(go())


def test_memory_is_bounded_by_parts_in_flight(store: Store) -> None:
    """At most concurrency uploading + one waiting + one filling, whatever the stream length."""
    data = os.urandom(40 * MiB)
    slow = SlowStore(store, delay=0.05)

    async def go() -> Producer:
        up = _uploader(slow, plan_parts(part_size=5 * MiB), concurrency=2)
        producer = Producer(up, data)
        await producer.run()
        await up.finish()
        return producer

    producer = asyncio.run(go())
    assert slow.peak <= 2
    assert producer.max_buffered_parts <= 2 + 2


def test_split_into_objects_and_whole_hash(store: Store) -> None:
    data = os.urandom(23 * MiB)

    async def go() -> None:
        up = _uploader(store, plan_parts(part_size=5 * MiB, max_object_size=10 * MiB))
        await Producer(up, data).run()
        objects, sha = await up.finish()
        assert [o.name for o in objects] == ["stream.000.zfs", "stream.001.zfs", "stream.002.zfs"]
        assert [o.size for o in objects] == [10 * MiB, 10 * MiB, 3 * MiB]
        assert sha == hashlib.sha256(data).hexdigest()
        pieces = [data[:10 * MiB], data[10 * MiB:20 * MiB], data[20 * MiB:]]
        assert [o.sha256 for o in objects] == [hashlib.sha256(p).hexdigest() for p in pieces]

    asyncio.run(go())


def test_a_failed_part_aborts_everything(store: Store) -> None:
    data = os.urandom(30 * MiB)
    failing = SlowStore(store, delay=0.01, fail_part=2)

    async def go() -> Producer:
        up = _uploader(failing, plan_parts(part_size=5 * MiB, max_object_size=10 * MiB))
        producer = Producer(up, data)
        await producer.run()
        with pytest.raises(S3Error, match="part 2 refused"):
            await up.finish()
        assert await up.abort() == []
        return producer

    producer = asyncio.run(go())
    assert producer.stopped, "the producer must be told to stop"
    assert store.list_objects("t/") == [] and store.list_uploads("t/") == []


def test_completed_objects_of_a_failed_stream_are_deleted(store: Store) -> None:
    """A stream that fails after an object completed leaves nothing visible."""
    data = os.urandom(25 * MiB)

    async def go() -> None:
        up = _uploader(store, plan_parts(part_size=5 * MiB, max_object_size=10 * MiB))
        await Producer(up, data).run()
        await up._drain()
        first = up._objects[0]
        store.complete_upload(first.key, first.created.result(), first.entries)  # type: ignore[union-attr]
        first.completed = True
        assert await up.abort() == []

    asyncio.run(go())
    assert store.list_objects("t/") == [] and store.list_uploads("t/") == []


def test_limit_stops_the_stream(store: Store) -> None:
    data = os.urandom(12 * MiB)

    async def go() -> None:
        up = _uploader(store, plan_parts(part_size=5 * MiB, max_stream_size=8 * MiB))
        await Producer(up, data).run()
        with pytest.raises(S3StreamTooLarge, match="passed max_stream_size 8.0 MiB"):
            await up.finish()
        await up.abort()

    asyncio.run(go())
    assert store.list_uploads("t/") == []


def test_empty_stream_is_an_error(store: Store) -> None:
    async def go() -> None:
        up = _uploader(store, plan_parts())
        with pytest.raises(S3Error, match="empty"):
            await up.finish()
        await up.abort()

    asyncio.run(go())


def test_cancellation_aborts(store: Store) -> None:
    data = os.urandom(20 * MiB)
    slow = SlowStore(store, delay=0.2)

    async def go() -> None:
        up = _uploader(slow, plan_parts(part_size=5 * MiB))
        producer = Producer(up, data)

        async def push() -> None:
            try:
                await producer.run()
                await up.finish()
            except BaseException:
                await asyncio.shield(up.abort())
                raise

        task = asyncio.ensure_future(push())
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    assert store.list_uploads("t/") == [] and store.list_objects("t/") == []


def test_ranged_reads_in_order(store: Store) -> None:
    data = os.urandom(5 * MiB + 3)
    store.client.put_object(Bucket=store.target.bucket, Key="r/obj", Body=data)

    async def go() -> bytes:
        out = bytearray()
        with ThreadPoolExecutor(4) as pool:
            async for chunk in read_ranges(store, "r/obj", len(data), chunk=MiB // 3, concurrency=4,
                                           executor=pool):
                out += chunk
        return bytes(out)

    assert asyncio.run(go()) == data
