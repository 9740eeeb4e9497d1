"""Per-target S3 settings: inventory values first, command-line flags over them.

Why a separate object: the inventory's ``S3Target`` names *where* (bucket,
endpoint, prefix, profile, storage class); how to stream there (part size,
concurrency, filters, size limit) is read from the same target entry when
the inventory carries it, and can always be given on the command line.
Values may be written as sizes (``1T``) or numbers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from typing import Any

from zrelay.errors import InvalidName, S3UsageError
from zrelay.inventory.model import S3Target
from zrelay.s3.sizing import S3_MAX_OBJECT, parse_size
from zrelay.zfs.names import check_remote_path
from zrelay.zfs.stream_filters import check_age_recipient

COMPRESSIONS = ("auto", "zstd", "none")
PART_CHECKSUMS = ("md5", "sha256", "none")
ARCHIVE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})
RESTORE_TIERS = ("Expedited", "Standard", "Bulk")

_SIZE_FIELDS = ("max_stream_size", "part_size", "max_object_size")


@dataclass(frozen=True, slots=True)
class S3Options:
    """How zrelay streams to and from one S3 target."""

    max_stream_size: int | None = None     # hard limit per stream; also sizes parts without an estimate
    part_size: int | None = None           # None: chosen per stream (zrelay.s3.sizing)
    concurrency: int = 4                   # parts (or ranged GETs) in flight
    compression: str = "auto"              # auto: zstd when installed on the source
    zstd_level: int = 3
    age_recipients: tuple[str, ...] = ()   # public keys: encrypt on the source before upload
    age_identity: str | None = None        # private key file on the restoring host
    part_checksum: str = "md5"             # Content-MD5 (every S3 server) or x-amz-checksum-sha256
    max_object_size: int = S3_MAX_OBJECT   # larger streams continue in further objects
    storage_class: str = "STANDARD"
    restore_days: int = 7                  # how long a restored archive copy stays readable
    restore_tier: str = "Standard"
    resume: bool = True                    # s3-push continues an unfinished upload of the same send
    extra: tuple[tuple[str, Any], ...] = field(default=())

    @classmethod
    def for_target(cls, target: S3Target, **overrides: Any) -> "S3Options":
        """Settings for ``target``: its inventory values, then every override that is not None."""
        values: dict[str, Any] = {"storage_class": target.storage_class}
        for f in fields(cls):
            if f.name in ("extra", "storage_class"):
                continue
            value = getattr(target, f.name, None)
            if value is not None:
                values[f.name] = value
        for key, value in overrides.items():
            if value is not None and value != () and value != []:
                values[key] = value
        return cls._checked(target.name, values)

    @classmethod
    def _checked(cls, target: str, values: dict[str, Any]) -> "S3Options":
        out: dict[str, Any] = {}
        try:
            for key, value in values.items():
                if key in _SIZE_FIELDS:
                    out[key] = parse_size(value)
                elif key in ("concurrency", "zstd_level", "restore_days"):
                    out[key] = int(value)
                elif key == "age_recipients":
                    items = [value] if isinstance(value, str) else list(value)
                    out[key] = tuple(check_age_recipient(str(r)) for r in items)
                elif key == "age_identity":
                    out[key] = check_remote_path(str(value))
                else:
                    out[key] = value
        except (ValueError, InvalidName) as exc:
            raise S3UsageError(target, str(exc)) from None
        opts = cls(**out)
        problem = opts.problem()
        if problem:
            raise S3UsageError(target, problem)
        return opts

    def problem(self) -> str | None:
        if self.compression not in COMPRESSIONS:
            return f"compression {self.compression!r}: expected one of {', '.join(COMPRESSIONS)}"
        if self.part_checksum not in PART_CHECKSUMS:
            return f"part_checksum {self.part_checksum!r}: expected one of {', '.join(PART_CHECKSUMS)}"
        if not 1 <= self.concurrency <= 64:
            return f"concurrency {self.concurrency}: expected 1 … 64"
        if not 1 <= self.zstd_level <= 19:
            return f"zstd level {self.zstd_level}: expected 1 … 19"
        if self.restore_tier not in RESTORE_TIERS:
            return f"restore tier {self.restore_tier!r}: expected one of {', '.join(RESTORE_TIERS)}"
        if self.max_stream_size is not None and self.max_stream_size <= 0:
            return "max_stream_size must be positive"
        return None

    def with_(self, **changes: Any) -> "S3Options":
        return replace(self, **changes)

    @property
    def archived(self) -> bool:
        """Objects of this class must be restored before they can be read."""
        return self.storage_class in ARCHIVE_CLASSES


_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", re.I)
_SECONDS = {"": 86400, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``24h``, ``7d``, ``2w`` (a bare number means days) → seconds."""
    m = _DURATION.fullmatch(str(text))
    if not m:
        raise ValueError(f"duration {text!r} is not a duration such as 30m, 24h or 7d")
    return float(m.group(1)) * _SECONDS[m.group(2).lower()]
