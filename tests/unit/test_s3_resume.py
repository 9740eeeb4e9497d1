"""Resuming an unfinished multipart upload: which upload, which part size, and that an object is
only ever completed from parts equal to the regenerated stream's.

The choice is pure (zrelay.s3.resume); the uploads run against the lab's S3 server (SeaweedFS,
tests/s3fixture.py), each test in a bucket of its own (the fixture of test_s3_transfer).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os

import pytest

from tests.unit.test_s3_transfer import Producer, SlowStore, store  # noqa: F401  (the fixture)
from zrelay.errors import S3ResumeMismatch
from zrelay.s3.resume import Resume, StoredPart, choose, stored_part_size
from zrelay.s3.sizing import MiB, plan_parts
from zrelay.s3.store import Store
from zrelay.s3.transfer import StreamUploader

KEY = "t/send/stream.000.zfs"


def part(number: int, body: bytes, sha: bool = False) -> StoredPart:
    return StoredPart(number, len(body), hashlib.md5(body).hexdigest(),
                      base64.b64encode(hashlib.sha256(body).digest()).decode() if sha else None)


def sized(number: int, size: int) -> StoredPart:
    return StoredPart(number, size, "0" * 32)


# --------------------------------------------------------------------------- pure


def test_part_size_is_read_back_from_the_stored_parts() -> None:
    assert stored_part_size([sized(1, 5 * MiB), sized(2, 5 * MiB), sized(3, 100)], 8 * MiB) == 5 * MiB
    assert stored_part_size([sized(1, 5 * MiB), sized(3, 5 * MiB)], 8 * MiB) == 5 * MiB   # a gap
    # one part: the planned size, unless that part is a full part of a larger size
    assert stored_part_size([sized(1, 6 * MiB)], 8 * MiB) == 8 * MiB
    assert stored_part_size([sized(1, 16 * MiB)], 8 * MiB) == 16 * MiB
    assert stored_part_size([sized(1, 5 * MiB), sized(2, 6 * MiB), sized(3, 1)], 8 * MiB) == "its parts differ in size"
    assert "longer" in str(stored_part_size([sized(1, 5 * MiB), sized(2, 6 * MiB)], 8 * MiB))
    assert stored_part_size([], 8 * MiB) == "it holds no part"
    assert "outside S3" in str(stored_part_size([sized(1, MiB), sized(2, MiB)], 8 * MiB))


def test_choose_takes_the_upload_holding_most_and_says_why_not() -> None:
    assert choose(KEY, [], planned_part_size=8 * MiB) == (None, None)
    small = ("u-small", [sized(1, 5 * MiB)])
    big = ("u-big", [sized(1, 5 * MiB), sized(2, 5 * MiB)])
    resume, note = choose(KEY, [small, big], planned_part_size=8 * MiB)
    assert note is None and resume is not None
    assert (resume.upload_id, resume.part_size, resume.contiguous, resume.stored_bytes) == ("u-big", 5 * MiB, 2,
                                                                                           10 * MiB)
    resume, note = choose(KEY, [("u-kms", [StoredPart(1, 5 * MiB, "not-an-md5-etag-1")])], planned_part_size=5 * MiB)
    assert resume is None and note is not None and "not MD5" in note and "s3-abort-stale" in note
    resume, note = choose(KEY, [("u-empty", [])], planned_part_size=5 * MiB)
    assert resume is None and "holds no part" in str(note)


def test_the_dry_run_line() -> None:
    r = Resume(KEY, "abcdef0123456789abcdef", 5 * MiB, {1: sized(1, 5 * MiB), 2: sized(2, 5 * MiB),
                                                         4: sized(4, 5 * MiB)})
    assert r.describe() == (f"resumes upload abcdef0123456789… of {KEY}: 2 parts (10.0 MiB) stored, from part 3"
                            " (+1 after a gap, uploaded again unless they match)")
    assert r.checksum == "md5"


def test_difference_names_size_and_each_digest() -> None:
    body = os.urandom(1000)
    assert part(1, body).difference(body) is None
    assert part(1, body, sha=True).difference(body) is None
    other = bytearray(body)
    other[500] ^= 1
    assert "MD5" in str(part(1, body).difference(other))
    assert "SHA-256" in str(part(1, body, sha=True).difference(other))
    assert "stored" in str(part(1, body).difference(body[:-1]))
    assert part(1, body, sha=True).entry()["ChecksumSHA256"] and Resume(KEY, "u", 5 * MiB,
                                                                         {1: part(1, body, sha=True)}).checksum == "sha256"


# --------------------------------------------------------------------------- against S3


def killed_upload(store: Store, data: bytes, numbers: list[int], size: int = 5 * MiB) -> Resume:
    """An upload of ``KEY`` holding parts ``numbers`` of ``data``, as a killed push leaves it,
    read back the way a push reads it."""
    upload_id = store.create_upload(KEY, "STANDARD", {}, "md5")
    for n in numbers:
        store.upload_part(KEY, upload_id, n, data[(n - 1) * size:n * size], "md5")
    resume, note = choose(KEY, [(upload_id, store.list_parts(KEY, upload_id))], planned_part_size=8 * MiB)
    assert note is None and resume is not None
    return resume


def uploader(store: Store, resume: Resume | None, part_size: int = 5 * MiB) -> StreamUploader:
    return StreamUploader(store, "t/send/", "", plan_parts(part_size=part_size), concurrency=2,
                          storage_class="STANDARD", checksum="md5", resume=resume)


def read(store: Store, key: str = KEY) -> bytes:
    return bytes(store.client.get_object(Bucket=store.target.bucket, Key=key)["Body"].read())


class CountingStore(SlowStore):
    """Records the numbers of the parts actually uploaded."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner, delay=0)
        self.numbers: list[int] = []

    def upload_part(self, key: str, upload_id: str, number: int, body: bytes | bytearray,  # type: ignore[override]
                    checksum: str) -> dict[str, object]:
        self.numbers.append(number)
        return super().upload_part(key, upload_id, number, body, checksum)


def test_a_resumed_upload_keeps_equal_parts_and_uploads_the_rest(store: Store) -> None:
    data = os.urandom(17 * MiB + 5)
    resume = killed_upload(store, data, [1, 2])
    counting = CountingStore(store)

    async def go() -> StreamUploader:
        up = uploader(counting, resume)
        await Producer(up, data).run()
        objects, sha = await up.finish()
        assert sha == hashlib.sha256(data).hexdigest() and objects[0].size == len(data)
        return up

    up = asyncio.run(go())
    assert read(store) == data
    assert sorted(counting.numbers) == [3, 4], "stored parts 1 and 2 must not be uploaded again"
    assert (up.skipped, up.uploaded) == (10 * MiB, len(data) - 10 * MiB)
    assert store.list_uploads("t/") == []


def test_a_gap_is_filled_and_the_part_after_it_compared(store: Store) -> None:
    data = os.urandom(16 * MiB)
    resume = killed_upload(store, data, [1, 3])
    counting = CountingStore(store)

    async def go() -> None:
        up = uploader(counting, resume)
        await Producer(up, data).run()
        await up.finish()

    asyncio.run(go())
    assert read(store) == data and sorted(counting.numbers) == [2, 4]


def test_a_different_stream_aborts_the_upload_and_never_completes_it(store: Store) -> None:
    """Part 1 equal, part 2 not: nothing becomes visible, the stored upload is gone."""
    stored = os.urandom(15 * MiB)
    regenerated = bytearray(stored)
    regenerated[6 * MiB] ^= 0xFF
    resume = killed_upload(store, stored, [1, 2])

    async def go() -> None:
        up = uploader(store, resume)
        await Producer(up, bytes(regenerated)).run()
        with pytest.raises(S3ResumeMismatch, match=r"at part 2 \(its MD5 \(ETag\) differs\).*starts over"):
            await up.finish()
        assert await up.abort() == []

    asyncio.run(go())
    assert store.list_objects("t/") == [] and store.list_uploads("t/") == []


def test_a_shorter_stream_than_stored_is_a_difference(store: Store) -> None:
    stored = os.urandom(15 * MiB)
    resume = killed_upload(store, stored, [1, 2, 3])

    async def go() -> None:
        up = uploader(store, resume)
        await Producer(up, stored[:10 * MiB]).run()
        with pytest.raises(S3ResumeMismatch, match="beyond its end"):
            await up.finish()
        await up.abort()

    asyncio.run(go())
    assert store.list_objects("t/") == [] and store.list_uploads("t/") == []


def test_other_part_size_is_a_difference_not_a_mix(store: Store) -> None:
    """Cut into 8 MiB parts, a stream stored in 5 MiB parts differs at part 1 (sizes)."""
    data = os.urandom(12 * MiB)
    resume = killed_upload(store, data, [1])

    async def go() -> None:
        up = uploader(store, resume, part_size=8 * MiB)
        await Producer(up, data).run()
        with pytest.raises(S3ResumeMismatch, match="at part 1"):
            await up.finish()
        await up.abort()

    asyncio.run(go())
    assert store.list_uploads("t/") == []


def test_a_stream_of_whole_parts_ends_without_an_empty_part(store: Store) -> None:
    """A stream exactly N parts long is N parts: no empty part after the last full one (a resumed
    run compares its parts one for one with the stored ones)."""
    data = os.urandom(10 * MiB)

    async def go() -> int:
        up = uploader(store, None)
        await Producer(up, data).run()
        objects, _ = await up.finish()
        return objects[0].parts

    assert asyncio.run(go()) == 2
    assert read(store) == data
