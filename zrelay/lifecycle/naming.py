"""When a job's snapshot was taken: the time its name says, else its creation.

A job names its snapshots by a strftime template in UTC (``zrelay_%Y-%m-%dT%H:%M:%SZ``), so the
name carries the moment the snapshot stands for. Keep policies and schedules read that moment
(as zfs-autobackup does): snapshots brought over from another tool under the same naming, or
received on a target long after they were taken, are dated as their names say. A name the
template does not parse keeps its ``creation``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from datetime import date, datetime, timezone
from functools import lru_cache

from zrelay.zfs.model import DatasetState

#: Directives that pin a moment down to the day at least; a template without them gives no time.
_DATE_DIRECTIVES = ("%Y", "%s")


#: The directives the fast reader knows, as regex groups (anything else goes to strptime).
_FIELDS = {"Y": r"(?P<Y>\d{4})", "m": r"(?P<m>\d{2})", "d": r"(?P<d>\d{2})", "H": r"(?P<H>\d{2})",
           "M": r"(?P<M>\d{2})", "S": r"(?P<S>\d{2})"}


@lru_cache(maxsize=32)
def _reader(template: str) -> re.Pattern[str] | None:
    """A regex that reads ``template``'s names, when it uses only %Y %m %d %H %M %S (%% too),
    each at most once: a prune reads thousands of names, strptime costs ten times more."""
    parts: list[str] = []
    seen: set[str] = set()
    i = 0
    while i < len(template):
        ch = template[i]
        if ch != "%":
            parts.append(re.escape(ch))
            i += 1
            continue
        code = template[i + 1:i + 2]
        if code == "%":
            parts.append("%")
        elif code in _FIELDS and code not in seen:
            parts.append(_FIELDS[code])
            seen.add(code)
        else:
            return None
        i += 2
    return re.compile("".join(parts)) if "Y" in seen else None


_EPOCH = date(1970, 1, 1).toordinal()


@lru_cache(maxsize=4096)
def _day_number(year: int, month: int, day: int) -> int | None:
    """Days since 1970-01-01 (None: no such date); names of one job share few days."""
    try:
        return date(year, month, day).toordinal() - _EPOCH
    except ValueError:
        return None


def name_time(template: str, name: str) -> int | None:
    """Unix seconds that ``name`` says under ``template`` (UTC), None when it does not parse."""
    if not any(d in template for d in _DATE_DIRECTIVES):
        return None
    reader = _reader(template)
    if reader is not None:
        m = reader.fullmatch(name)
        if m is None:
            return None
        f = m.groupdict()
        hour, minute, second = int(f.get("H") or 0), int(f.get("M") or 0), int(f.get("S") or 0)
        day = _day_number(int(f["Y"]), int(f.get("m") or 1), int(f.get("d") or 1))
        if day is None or hour > 23 or minute > 59 or second > 59:
            return None
        return day * 86400 + hour * 3600 + minute * 60 + second
    try:
        parsed = datetime.strptime(name, template)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return int(parsed.timestamp())


def dated(states: Mapping[str, DatasetState], template: str) -> dict[str, DatasetState]:
    """``states`` with each snapshot's and bookmark's ``creation`` set to the time its name says,
    where the name parses under ``template``."""
    def fix(state: DatasetState) -> DatasetState:
        snaps = tuple(replace(s, creation=t) if (t := name_time(template, s.name)) is not None else s
                      for s in state.snapshots)
        marks = tuple(replace(b, creation=t) if (t := name_time(template, b.name)) is not None else b
                      for b in state.bookmarks)
        return replace(state, snapshots=snaps, bookmarks=marks)
    return {name: fix(state) for name, state in states.items()}
