"""Processes on this machine: is one alive, when did it start (Linux /proc). Stdlib only.

Why a module of its own: the run store (is a run's process gone?) and the run locks (who holds a
target, and is that pid still the process that took it?) ask the same two questions.
"""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """A process with this pid exists (one we may not signal counts: it exists)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_started(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds), or None where that cannot be told."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        ticks = int(fields[19])   # field 22 (starttime), counted after the ")" of the command
        with open("/proc/stat", "rb") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith(b"btime "))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None
