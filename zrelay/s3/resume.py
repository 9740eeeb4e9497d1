"""Resuming a push from the parts an unfinished multipart upload already holds.

Why this works without any record of our own: a send's object keys are fixed
by its snapshot GUIDs and filters (docs/s3-layout.md), so a later push finds
the upload a killed one left with ListMultipartUploads on its first object's
key, and ListParts says what it holds: each part's number, size, ETag (the
MD5 of the part on every server that does not encrypt with KMS) and, when
the upload asked for it, its SHA-256. The part size is read back from those
sizes (every part but the last is one part size long).

Why parts are compared before they are skipped: the next push regenerates
the stream from the snapshot. ``zfs send`` of one snapshot with the same
flags gives the same bytes, but other flags, another filter level or a
send that is not reproducible would not; a stored part is kept only when
the regenerated part has its size and digest, so an object is never
completed from parts of two different streams (the first difference aborts
that upload; the push then starts over).

Pure: digests and text, no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from zrelay.s3.sizing import S3_MAX_PART, S3_MIN_PART, format_size

_MD5_ETAG = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True, slots=True)
class StoredPart:
    """One part as ListParts shows it."""

    number: int
    size: int
    etag: str                  # without quotes
    sha256: str | None = None  # base64, when the upload was made with x-amz-checksum-sha256

    @property
    def verifiable(self) -> bool:
        """Whether a regenerated part can be compared with this one."""
        return self.sha256 is not None or _MD5_ETAG.fullmatch(self.etag.lower()) is not None

    def difference(self, body: bytes | bytearray) -> str | None:
        """Why ``body`` is not this part (None when it is): size first, then every digest S3 gave."""
        if len(body) != self.size:
            return f"{format_size(len(body))} regenerated, {format_size(self.size)} stored"
        if self.sha256 is not None and base64.b64encode(hashlib.sha256(body).digest()).decode() != self.sha256:
            return "its SHA-256 differs"
        if _MD5_ETAG.fullmatch(self.etag.lower()) and hashlib.md5(body).hexdigest() != self.etag.lower():
            return "its MD5 (ETag) differs"
        return None

    def entry(self) -> dict[str, Any]:
        """The part's entry for CompleteMultipartUpload, as if this run had uploaded it."""
        out: dict[str, Any] = {"PartNumber": self.number, "ETag": f'"{self.etag}"'}
        if self.sha256 is not None:
            out["ChecksumSHA256"] = self.sha256
        return out


def stored_part(item: Mapping[str, Any]) -> StoredPart:
    """A ListParts entry (botocore's shape) as a StoredPart."""
    return StoredPart(int(item["PartNumber"]), int(item.get("Size", 0)), str(item.get("ETag", "")).strip('"'),
                      str(item["ChecksumSHA256"]) if item.get("ChecksumSHA256") else None)


@dataclass(frozen=True, slots=True)
class Resume:
    """An unfinished upload of a send's first object that this push continues."""

    key: str
    upload_id: str
    part_size: int
    parts: Mapping[int, StoredPart] = field(default_factory=dict)

    @property
    def checksum(self) -> str:
        """The per-part checksum the upload was made with; new parts must carry the same."""
        return "sha256" if any(p.sha256 for p in self.parts.values()) else "md5"

    @property
    def contiguous(self) -> int:
        """N: parts 1 … N are all stored (a killed push with several parts in flight leaves gaps)."""
        n = 0
        while n + 1 in self.parts:
            n += 1
        return n

    @property
    def stored_bytes(self) -> int:
        return sum(p.size for p in self.parts.values())

    @property
    def short_id(self) -> str:
        return self.upload_id if len(self.upload_id) <= 16 else self.upload_id[:16] + "…"

    def describe(self) -> str:
        """One line for the dry run and the result."""
        n = self.contiguous
        extra = len(self.parts) - n
        more = f" (+{extra} after a gap, uploaded again unless they match)" if extra else ""
        return (f"resumes upload {self.short_id} of {self.key}: {n} parts "
                f"({format_size(sum(self.parts[i].size for i in range(1, n + 1)))}) stored, "
                f"from part {n + 1}{more}")

    def to_dict(self) -> dict[str, object]:
        return {"key": self.key, "upload_id": self.upload_id, "part_size": self.part_size,
                "parts": len(self.parts), "contiguous": self.contiguous, "stored_bytes": self.stored_bytes}


def stored_part_size(parts: Iterable[StoredPart], planned: int) -> int | str:
    """The part size the upload was made with, or why it cannot be told.

    Every part but the highest-numbered is exactly one part size long; the
    highest may be the stream's short last part. With a single part stored,
    the planned size is taken unless that part is longer (then it is a full
    part of a larger size)."""
    ordered = sorted(parts, key=lambda p: p.number)
    if not ordered:
        return "it holds no part"
    full = {p.size for p in ordered[:-1]}
    if len(full) > 1:
        return "its parts differ in size"
    size = full.pop() if full else max(planned, ordered[-1].size)
    if ordered[-1].size > size:
        return "its last part is longer than the others"
    if not S3_MIN_PART <= size <= S3_MAX_PART:
        return f"its part size {format_size(size)} is outside S3's 5 MiB … 5 GiB"
    return size


def choose(key: str, candidates: list[tuple[str, list[StoredPart]]], *,
           planned_part_size: int) -> tuple[Resume | None, str | None]:
    """The unfinished upload of ``key`` to continue (the one holding the most bytes), or None and
    one line saying why none can be continued (None when there is none at all).

    ``candidates`` are (upload id, its parts). New parts go in with the checksum the stored ones
    carry (``Resume.checksum``): an upload made with SHA-256 part checksums takes only those."""
    if not candidates:
        return None, None
    upload_id, parts = max(candidates, key=lambda c: sum(p.size for p in c[1]))
    short = upload_id if len(upload_id) <= 16 else upload_id[:16] + "…"
    size = stored_part_size(parts, planned_part_size)
    if isinstance(size, int) and not all(p.verifiable for p in parts):
        size = "its parts' ETags are not MD5 digests and carry no SHA-256 (server-side KMS encryption?)"
    if isinstance(size, str):
        return None, (f"upload {short} of {key} is not resumed ({size}): a new upload starts; "
                      "s3-abort-stale removes the old one")
    return Resume(key, upload_id, size, {p.number: p for p in parts}), None
