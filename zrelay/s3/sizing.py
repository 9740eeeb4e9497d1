"""Sizes as people write them, and the choice of multipart part size.

Why part size matters: S3 allows at most 10,000 parts per upload, each 5 MiB
to 5 GiB, and at most 5 TiB per object. A stream is unbounded and, on hosts
without ``zfs send -nvP`` (zfs-fuse), of unknown size. The part size is
therefore chosen *before* the first byte moves, from the best size known:

1. the source's own estimate (OpenZFS ``-nvP``) plus a margin,
2. else the target's configured ``max_stream_size`` (then also a hard limit),
3. else a default planning size.

A stream that outgrows the planned size never fails at part 10,001: it rolls
over into a further object of the same logical stream (``parts_per_object``).
Only a configured ``max_stream_size`` stops a stream, and then before upload
when the size is known, or as soon as the stream passes it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from zrelay.units import human_bytes

#: Sizes as text (the S3 modules say "size"; one formatter for the whole program).
format_size = human_bytes

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
TiB = 1 << 40

S3_MAX_PARTS = 10_000
S3_MIN_PART = 5 * MiB
S3_MAX_PART = 5 * GiB
S3_MAX_OBJECT = 5 * TiB

DEFAULT_MIN_PART = 8 * MiB
#: Planning size when nothing else is known: 8 MiB parts, memory stays small.
DEFAULT_PLANNED = 64 * GiB
#: An estimate is planned for with this margin (estimates are approximate; filters add framing).
ESTIMATE_MARGIN = 1.25
#: The planned size must fit in this share of the 10,000 parts.
PART_HEADROOM = 0.95

_UNITS = {"": 1, "b": 1, "k": KiB, "m": MiB, "g": GiB, "t": TiB, "p": 1 << 50}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*", re.I)


def parse_size(text: str | int | float) -> int:
    """``8M``, ``1.5G``, ``1T``, ``512MiB``, ``1024`` → bytes (binary units); ValueError otherwise."""
    if isinstance(text, bool):
        raise ValueError(f"size {text!r} is not a size such as 8M, 1.5G or 1T")
    if isinstance(text, (int, float)):
        if text < 0:
            raise ValueError(f"size {text!r} is negative")
        return int(text)
    m = _SIZE.fullmatch(str(text))
    if not m:
        raise ValueError(f"size {text!r} is not a size such as 8M, 1.5G or 1T")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


@dataclass(frozen=True, slots=True)
class PartPlan:
    """How one stream is cut: part size, parts per object, and why."""

    part_size: int
    parts_per_object: int
    planned: int               # the stream size the part size was chosen for
    limit: int | None          # configured max_stream_size: the stream is stopped beyond it
    basis: str                 # one phrase for dry runs and errors

    @property
    def object_capacity(self) -> int:
        return self.part_size * self.parts_per_object

    def memory_bound(self, concurrency: int) -> int:
        """Bytes of part buffers at most in memory: in flight, one waiting, one filling."""
        return self.part_size * (concurrency + 2)


def plan_parts(*, estimate: int | None = None, max_stream_size: int | None = None,
               part_size: int | None = None, max_object_size: int = S3_MAX_OBJECT,
               min_part: int = DEFAULT_MIN_PART) -> PartPlan:
    """Choose the part size (see module docstring); ValueError for impossible settings."""
    if max_object_size < S3_MIN_PART:
        raise ValueError(f"max object size {format_size(max_object_size)} is below S3's 5 MiB part minimum")
    if estimate is not None:
        planned = max(1, math.ceil(estimate * ESTIMATE_MARGIN))
        basis = f"estimate {format_size(estimate)} (zfs send -nvP) + {round((ESTIMATE_MARGIN - 1) * 100)}%"
    elif max_stream_size is not None:
        planned = max_stream_size
        basis = f"max_stream_size {format_size(max_stream_size)}"
    else:
        planned = DEFAULT_PLANNED
        basis = f"no estimate on this host, no max_stream_size: planned for {format_size(DEFAULT_PLANNED)}"
    if part_size is not None:
        if not S3_MIN_PART <= part_size <= S3_MAX_PART:
            raise ValueError(f"part size {format_size(part_size)} is outside S3's 5 MiB … 5 GiB")
        size = part_size
        basis = f"part_size {format_size(part_size)} as configured; {basis}"
    else:
        wanted = math.ceil(planned / (S3_MAX_PARTS * PART_HEADROOM))
        size = max(min_part, S3_MIN_PART, _round_up(wanted, MiB))
        size = min(size, S3_MAX_PART, _round_down(max_object_size, MiB))
    parts = max(1, min(S3_MAX_PARTS, max_object_size // size))
    return PartPlan(size, parts, planned, max_stream_size, basis)


def preflight_problem(size: int | None, limit: int | None, *, what: str = "stream") -> str | None:
    """Why a stream of (at most) ``size`` must not start against ``limit``, or None."""
    if size is None or limit is None or size <= limit:
        return None
    return (f"the {what} is {format_size(size)}, more than max_stream_size {format_size(limit)}; "
            f"nothing was uploaded (raise max_stream_size, e.g. --max-stream-size {_suggest(size)})")


def parts_needed(size: int, part_size: int) -> int:
    return max(1, math.ceil(size / part_size))


def _suggest(size: int) -> str:
    for unit, mult in (("T", TiB), ("G", GiB), ("M", MiB)):
        if size >= mult:
            return f"{math.ceil(size * 1.5 / mult)}{unit}"
    return "8M"


def _round_up(n: int, step: int) -> int:
    return -(-n // step) * step


def _round_down(n: int, step: int) -> int:
    return max(step, n // step * step)
