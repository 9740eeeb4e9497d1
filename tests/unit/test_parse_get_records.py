"""zfs-fuse listings (``zfs get`` of FUSE_PROPERTIES) are read by slicing when they have the shape
``zfs get`` prints, and line by line otherwise; both readings must give the same states, and a
malformed line must still be named (zrelay.zfs.parse)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zrelay.zfs import parse as p
from zrelay.zfs.commands import FUSE_PROPERTIES
from zrelay.zfs.model import Capabilities

FUSE = Capabilities.zfs_fuse("pool v23")
_NAME = st.text(alphabet="abcdefgh0123456789_-.:", min_size=1, max_size=6)


def _lines(name: str, values: dict[str, str]) -> list[str]:
    return [f"{name}\t{prop}\t{values[prop]}" for prop in FUSE_PROPERTIES]


@st.composite
def listings(draw: st.DrawFn) -> list[str]:
    """The lines ``zfs get -H -p -o name,property,value FUSE_PROPERTIES -r tank/r`` prints."""
    lines = _lines("tank/r", {"type": "filesystem", "guid": "1", "createtxg": "1", "creation": "1",
                              "referenced": "1", "zrelay:sync": "-"})
    for child in draw(st.lists(_NAME, unique=True, max_size=4)):
        ds = f"tank/r/{child}"
        kind = draw(st.sampled_from(["filesystem", "volume"]))
        sync = draw(st.sampled_from(["-", "false", "true"]))
        lines += _lines(ds, {"type": kind, "guid": str(draw(st.integers(1, 2**64 - 1))), "createtxg": "2",
                             "creation": "2", "referenced": "2", "zrelay:sync": sync})
        for snap in draw(st.lists(_NAME, unique=True, max_size=4)):
            lines += _lines(f"{ds}@{snap}", {
                "type": "snapshot", "guid": str(draw(st.integers(1, 2**64 - 1))),
                "createtxg": str(draw(st.integers(1, 10**6))), "creation": str(draw(st.integers(0, 2**40))),
                "referenced": str(draw(st.integers(0, 2**40))), "zrelay:sync": "-"})
    return lines


@settings(max_examples=200, deadline=None)
@given(listings(), st.booleans(), st.randoms(use_true_random=False))
def test_sliced_and_line_by_line_readings_agree(lines: list[str], recursive: bool, rnd: random.Random) -> None:
    """The same listing, as printed (read by slicing) and with its lines shuffled (line by line)."""
    text = "\n".join(lines) + "\n"
    assert p._get_records(text) is not None
    shuffled = list(lines)
    rnd.shuffle(shuffled)
    other = "\n".join(shuffled) + "\n"
    if shuffled != lines:
        assert p._get_records(other) is None
    assert p.parse_state([text], FUSE, "tank/r", recursive) == p.parse_state([other], FUSE, "tank/r", recursive)


def test_a_missing_property_falls_back_to_reading_by_line() -> None:
    lines = _lines("tank/r", {"type": "filesystem", "guid": "1", "createtxg": "1", "creation": "1",
                              "referenced": "1", "zrelay:sync": "false"})
    snap = [line for line in _lines("tank/r@a", {"type": "snapshot", "guid": "7", "createtxg": "3",
                                                 "creation": "5", "referenced": "9", "zrelay:sync": "-"})
            if "\tcreation\t" not in line]
    text = "\n".join(lines + snap) + "\n"
    assert p._get_records(text) is None
    state = p.parse_state([text], FUSE, "tank/r", False)["tank/r"]
    assert state.sync_property == "false"
    assert [(s.name, s.guid, s.createtxg, s.creation) for s in state.snapshots] == [("a", 7, 3, 0)]


@pytest.mark.parametrize("bad", ["tank/r\ttype", "tank/r\tzrelay:sync\tx\ty"])
def test_a_line_of_another_shape_is_named(bad: str) -> None:
    lines = _lines("tank/r", {"type": "filesystem", "guid": "1", "createtxg": "1", "creation": "1",
                              "referenced": "1", "zrelay:sync": "-"})
    text = "\n".join([*lines[:-1], bad]) + "\n"
    with pytest.raises(ValueError, match="tab-separated fields"):
        p.parse_state([text], FUSE, "tank/r", False)


def test_a_snapshot_without_its_guid_is_refused() -> None:
    text = "tank/r@a\ttype\tsnapshot\ntank/r@a\tcreatetxg\t3\n"
    with pytest.raises(ValueError, match="lacks 'guid'"):
        p.parse_state([text], FUSE, "tank/r", False)
