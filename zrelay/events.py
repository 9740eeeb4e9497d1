"""Progress and result events, the one vocabulary shared by the engine and every frontend.

The engine emits these; the CLI turns them into progress bars and a summary,
a state store can persist them, a TUI can draw them. They are plain data so
they can cross a process boundary as JSON.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, Callable, Union


class Outcome(str, Enum):
    OK = "ok"              # transferred what was planned
    NOOP = "noop"          # nothing to do: target up to date
    REFUSED = "refused"    # planner refused (diverged / no common base)
    FAILED = "failed"      # transport, zfs or stream failure
    SKIPPED = "skipped"    # e.g. dry run, or target type served elsewhere
    BUSY = "busy"          # skipped: another zrelay was replicating the target (zrelay.locks)


@dataclass(frozen=True)
class JobStarted:
    job: str
    source: str
    target: str
    at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class JobPlanned:
    job: str
    target: str
    kind: str
    summary: str
    commands: tuple[tuple[str, str], ...] = ()  # (host, exact remote command)


@dataclass(frozen=True)
class TransferStarted:
    job: str
    target: str
    source_host: str
    target_host: str
    stream: str                 # e.g. "tank/data@a → @c"
    estimate: int | None = None  # bytes, when the source can tell
    at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class TransferProgress:
    job: str
    target: str
    stream: str
    done: int                   # bytes so far in this stream
    estimate: int | None
    rate: float                 # bytes/s, smoothed
    at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class TransferFinished:
    job: str
    target: str
    stream: str
    done: int
    seconds: float
    ok: bool


@dataclass(frozen=True)
class JobFinished:
    job: str
    source: str
    target: str
    outcome: Outcome
    message: str = ""
    bytes: int = 0
    seconds: float = 0.0
    failed_host: str | None = None


Event = Union[JobStarted, JobPlanned, TransferStarted, TransferProgress, TransferFinished, JobFinished]
EventSink = Callable[[Event], None]


def to_dict(event: Event) -> dict[str, Any]:
    """A JSON-ready dict with the event type under ``event``."""
    data = asdict(event)
    data["event"] = type(event).__name__
    for key, value in data.items():
        if isinstance(value, Enum):
            data[key] = value.value
    return data


def discard(_event: Event) -> None:
    """An EventSink that drops everything."""
