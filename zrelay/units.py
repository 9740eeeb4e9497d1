"""Human-readable sizes and durations, one spelling for every frontend and log line."""

from __future__ import annotations


def human_bytes(n: float | int | None) -> str:
    """Binary units with one decimal: 8.0 MiB, 1.2 TiB (``-`` for unknown)."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def human_seconds(s: float | int | None) -> str:
    """The largest whole unit that still reads well: 90s, 15m, 5h, 3d (``-`` for unknown)."""
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
