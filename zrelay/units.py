"""Human-readable sizes, rates and durations: one spelling for every frontend and log line.

Sizes and rates are binary (KiB, MiB, GiB: what ``zfs list`` and ``pv`` print),
always with the unit, so ``8.0 MiB`` and ``8.0 MiB/s`` never sit beside ``8.4 MB/s``.
Every command, the progress bars and the TUI format through these functions.
"""

from __future__ import annotations

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_bytes(n: float | int | None) -> str:
    """Binary units with one decimal: 8.0 MiB, 1.2 TiB (``-`` for unknown)."""
    if n is None:
        return "-"
    value = float(n)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_rate(bytes_per_second: float | int | None) -> str:
    """A transfer rate in the units of ``human_bytes``: ``7.4 MiB/s`` (``-`` for unknown)."""
    if bytes_per_second is None:
        return "-"
    return f"{human_bytes(max(0.0, float(bytes_per_second)))}/s"


def rate_of(done: int, seconds: float) -> float | None:
    """Average bytes per second, None when no time has passed (a rate would be a division by zero)."""
    return done / seconds if seconds > 0 else None


def human_seconds(s: float | int | None) -> str:
    """An age or a lag, in the largest whole unit that still reads well: 90s, 15m, 5h, 3d (``-`` for unknown)."""
    if s is None:
        return "-"
    s = int(s)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def human_duration(s: float | int | None) -> str:
    """How long something took or will take: 0.4s, 12s, 3m05s, 1h02m (``-`` for unknown).

    Tenths below ten seconds (a small stream's time says something), whole
    seconds up to two minutes, then two units.
    """
    if s is None:
        return "-"
    s = max(0.0, float(s))
    if s < 9.95:
        return f"{s:.1f}s"
    whole = int(round(s))
    if whole < 120:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 172800:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def human_progress(done: int, total: int | None) -> str:
    """Bytes so far, and of how many when known: ``82.2 MiB of 120.0 MiB`` or ``82.2 MiB`` (never ``/?``)."""
    if total:
        return f"{human_bytes(done)} of {human_bytes(total)}"
    return human_bytes(done)


def human_moved(done: int, seconds: float) -> str:
    """What a finished transfer moved: ``60.2 MiB in 8.1s, 7.4 MiB/s`` (no rate when no time passed)."""
    rate = rate_of(done, seconds)
    tail = f", {human_rate(rate)}" if rate is not None else ""
    return f"{human_bytes(done)} in {human_duration(seconds)}{tail}"
