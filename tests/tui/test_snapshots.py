"""The three views and the help at 80×24 and 160×48, compared with committed SVG snapshots (pytest-textual-snapshot).

The scenario is fixed (tests/tui/conftest.py): canned reports and store, a frozen clock, so the pictures only
change when the UI does. Update them with ``pytest tests/tui --snapshot-update`` and review the diff.
"""

from __future__ import annotations

import pytest

from tests.tui.conftest import wait_until

SIZES = [(80, 24), (160, 48)]


async def _settle(pilot) -> None:  # type: ignore[no-untyped-def]
    """Every canned answer in and drawn: the picture must not depend on timing."""
    app = pilot.app
    await wait_until(pilot, lambda: app.first_paint_seconds is not None and not app.pending
                     and app.store_reads > 0, 10, "the canned data")
    app.redraw()
    await pilot.pause()


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_hosts_view(snap_compare, scenario, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(scenario(), terminal_size=size, run_before=_settle)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_matrix_view(snap_compare, scenario, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await _settle(pilot)
        await pilot.press("2")
        await _settle(pilot)

    assert snap_compare(scenario(), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_detail_view(snap_compare, scenario, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await _settle(pilot)
        await pilot.press("2")
        await _settle(pilot)
        await pilot.press("right", "right", "enter")  # nas1:tank/data × nas2 (diverged)
        await _settle(pilot)

    assert snap_compare(scenario(), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_help(snap_compare, scenario, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await _settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(scenario(), terminal_size=size, run_before=run_before)


def test_push_unavailable_in_the_footer(snap_compare, scenario) -> None:  # type: ignore[no-untyped-def]
    """The cursor on a job without S3 target: `p` greyed out, the reason beside it."""
    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await _settle(pilot)
        await pilot.press("2")
        await _settle(pilot)
        await pilot.press("down", "down")  # nas1:tank/vm: vault only
        await _settle(pilot)

    assert snap_compare(scenario(), terminal_size=(80, 24), run_before=run_before)
