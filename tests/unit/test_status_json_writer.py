"""``status --json`` prints what ``json.dump(rows, indent=2)`` and a newline print, byte for byte.

The writer (zrelay.cli.status.write_json) and ``LocationStatus.to_dict`` replace the standard
library's indenting encoder and ``dataclasses.asdict`` for speed; scripts that read the output,
and people who read it, must not see a difference: any JSON value, nested at any depth, and the
rows of a real report.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.test_cli_status_table import report
from zrelay.cli.status import write_json
from zrelay.status.report import LocationStatus


def stdlib(rows: list[Any]) -> str:
    out = io.StringIO()
    json.dump(rows, out, indent=2)
    out.write("\n")
    return out.getvalue()


def ours(rows: list[Any]) -> str:
    out = io.StringIO()
    write_json(iter(rows), out)
    return out.getvalue()


scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-2**70, max_value=2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text())
keys = st.text() | st.integers() | st.floats() | st.booleans() | st.none()
values = st.recursive(scalars, lambda inner: (st.lists(inner, max_size=4) | st.tuples(inner, inner)
                                              | st.dictionaries(keys, inner, max_size=4)), max_leaves=20)
rows = st.lists(st.dictionaries(st.text(), values, max_size=6), max_size=5)


@settings(max_examples=150, deadline=None)
@given(rows)
def test_any_json_rows_print_as_json_dump_prints_them(data: list[dict[str, Any]]) -> None:
    assert ours(data) == stdlib(data)


@pytest.mark.parametrize("count", [0, 1, 499, 500, 501, 1250])
def test_rows_written_in_pieces_join_into_one_list(count: int) -> None:
    data = [{"job": f"j{i}", "n": i, "last_run": {"outcome": "ok", "bytes": i} if i % 2 else None}
            for i in range(count)]
    assert ours(data) == stdlib(data)


def test_a_real_report_prints_as_before() -> None:
    rows = report()
    assert [r.to_dict() for r in rows] == [asdict(r) for r in rows]
    assert ours([r.to_dict() for r in rows]) == stdlib([asdict(r) for r in rows])
    assert list(rows[0].to_dict()) == list(asdict(rows[0])), "fields in the schema's order"


def test_to_dict_copies_nested_values() -> None:
    row = replace(report()[0], last_run={"outcome": "ok", "bytes": [1, 2]}, lifecycle={"source": {"kept": 3}})
    d = row.to_dict()
    d["last_run"]["bytes"].append(3)
    d["lifecycle"]["source"]["kept"] = 0
    assert row.last_run == {"outcome": "ok", "bytes": [1, 2]} and row.lifecycle == {"source": {"kept": 3}}


def test_what_json_cannot_hold_fails_as_json_fails() -> None:
    row = LocationStatus("j", "a:tank/x", "b:backup/x", "in-sync", last_run={"at": object()})
    with pytest.raises(TypeError):
        stdlib([row.to_dict()])
    with pytest.raises(TypeError):
        ours([row.to_dict()])
    with pytest.raises(TypeError):
        ours([{"x": {(1, 2): 1}}])
