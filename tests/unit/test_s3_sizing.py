"""Part sizing and size parsing: every stream fits S3's limits, and a stream too large is caught early."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zrelay.s3.options import S3Options, parse_duration
from zrelay.s3.sizing import (DEFAULT_MIN_PART, GiB, MiB, S3_MAX_OBJECT, S3_MAX_PART, S3_MAX_PARTS, S3_MIN_PART,
                              TiB, format_size, parse_size, parts_needed, plan_parts, preflight_problem)
from zrelay.errors import S3UsageError
from zrelay.inventory.model import S3Target


@pytest.mark.parametrize("text, value", [
    ("1024", 1024), ("8M", 8 * MiB), ("8MiB", 8 * MiB), ("8 MB", 8 * MiB), ("1.5G", int(1.5 * GiB)),
    ("1T", TiB), ("1t", TiB), ("5GiB", 5 * GiB), (4096, 4096),
])
def test_parse_size(text: str | int, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "M", "1X", "-1M", "1.2.3G", "ten", True])
def test_parse_size_rejects(text: object) -> None:
    with pytest.raises(ValueError):
        parse_size(text)  # type: ignore[arg-type]


def test_format_size() -> None:
    assert format_size(None) == "-"
    assert format_size(512) == "512 B"
    assert format_size(8 * MiB) == "8.0 MiB"
    assert format_size(int(1.5 * TiB)) == "1.5 TiB"


def test_parse_duration() -> None:
    assert parse_duration("30m") == 1800
    assert parse_duration("24h") == 86400
    assert parse_duration("7d") == 7 * 86400
    assert parse_duration("2") == 2 * 86400
    assert parse_duration("0s") == 0
    with pytest.raises(ValueError):
        parse_duration("soon")


def test_default_without_estimate_uses_small_parts() -> None:
    p = plan_parts()
    assert p.part_size == DEFAULT_MIN_PART and p.limit is None
    assert p.parts_per_object == S3_MAX_PARTS
    assert "no estimate" in p.basis
    assert p.memory_bound(4) == 6 * DEFAULT_MIN_PART


def test_estimate_sizes_parts_with_margin() -> None:
    p = plan_parts(estimate=500 * GiB)
    assert parts_needed(int(500 * GiB * 1.25), p.part_size) <= S3_MAX_PARTS
    assert p.part_size % MiB == 0 and "estimate" in p.basis


def test_max_stream_size_sizes_parts_and_is_a_limit() -> None:
    p = plan_parts(max_stream_size=TiB)
    assert parts_needed(TiB, p.part_size) <= int(S3_MAX_PARTS * 0.95) + 1
    assert p.limit == TiB and "max_stream_size" in p.basis


def test_explicit_part_size_is_checked() -> None:
    assert plan_parts(part_size=16 * MiB).part_size == 16 * MiB
    for bad in (S3_MIN_PART - 1, S3_MAX_PART + 1):
        with pytest.raises(ValueError):
            plan_parts(part_size=bad)


def test_objects_never_exceed_five_tebibytes() -> None:
    p = plan_parts(estimate=40 * TiB)
    assert p.object_capacity <= S3_MAX_OBJECT
    assert p.part_size <= S3_MAX_PART
    small = plan_parts(part_size=5 * MiB, max_object_size=10 * MiB)
    assert small.parts_per_object == 2 and small.object_capacity == 10 * MiB


@given(st.integers(min_value=1, max_value=60 * TiB), st.booleans())
def test_any_stream_fits(size: int, known: bool) -> None:
    """Whatever the size, parts are within S3's limits and the planned size fits the objects."""
    p = plan_parts(estimate=size) if known else plan_parts(max_stream_size=size)
    assert S3_MIN_PART <= p.part_size <= S3_MAX_PART
    assert 1 <= p.parts_per_object <= S3_MAX_PARTS
    assert p.object_capacity <= S3_MAX_OBJECT
    objects = math.ceil(p.planned / p.object_capacity)
    assert objects * p.parts_per_object >= parts_needed(p.planned, p.part_size)
    if p.planned <= S3_MAX_OBJECT * 0.95:
        assert objects == 1  # below 5 TiB one object suffices


def test_preflight() -> None:
    assert preflight_problem(None, GiB) is None
    assert preflight_problem(2 * GiB, None) is None
    assert preflight_problem(GiB, GiB) is None
    text = preflight_problem(3 * MiB, MiB)
    assert text and "3.0 MiB" in text and "max_stream_size 1.0 MiB" in text and "nothing was uploaded" in text


def test_options_from_target_and_overrides() -> None:
    target = S3Target("offsite", "bucket-1", storage_class="STANDARD_IA")
    opts = S3Options.for_target(target)
    assert opts.storage_class == "STANDARD_IA" and opts.concurrency == 4 and opts.compression == "auto"
    opts = S3Options.for_target(target, max_stream_size=2 * GiB, concurrency=8, compression="none")
    assert (opts.max_stream_size, opts.concurrency, opts.compression) == (2 * GiB, 8, "none")
    with pytest.raises(S3UsageError, match="concurrency"):
        S3Options.for_target(target, concurrency=0)
    with pytest.raises(S3UsageError, match="age recipient"):
        S3Options.for_target(target, age_recipients=("not-a-key",))
    with pytest.raises(S3UsageError, match="must be absolute"):
        S3Options.for_target(target, age_identity="key.txt")
