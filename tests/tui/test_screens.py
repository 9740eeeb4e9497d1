"""What the screens say: `p` only where there is something to push, help and legends from one table, counts."""

from __future__ import annotations

import asyncio

from tests.tui.conftest import footer_keys, screen_text, wait_until
from zrelay.status.report import BROKEN, BUSY, NOT_CHECKED, PENDING, RUNNING, STATES
from zrelay.tui.app import NO_S3_TARGET
from zrelay.tui.model import DETAIL_LEGEND_ENTRIES, LEGEND_ENTRIES, NOT_A_TARGET, SYMBOLS, pack, plural
from zrelay.tui.views import HelpScreen, MatrixView


async def _settled(pilot) -> None:  # type: ignore[no-untyped-def]
    app = pilot.app
    await wait_until(pilot, lambda: not app.pending and app.store_reads > 0, 10, "the canned data")
    app.redraw()
    await pilot.pause()


def test_push_is_disabled_with_its_reason_on_a_job_without_s3_target(scenario) -> None:  # type: ignore[no-untyped-def]
    async def run() -> None:
        app = scenario(command_prefix=["true"])
        async with app.run_test(size=(80, 24)) as pilot:
            await _settled(pilot)
            await pilot.press("2")
            matrix = app.query_one(MatrixView).table
            matrix.move_cursor(row=matrix.row_keys.index("nas1:tank/vm"), column=1)  # vm: vault only
            await pilot.pause(0.3)
            assert footer_keys(app)["p"] == (NO_S3_TARGET, False)
            assert NO_S3_TARGET in screen_text(app).splitlines()[-1], "the reason is in the footer, at 80 columns"
            await pilot.press("p")
            await pilot.pause(0.5)
            assert not app.launched and not app.finished and not app.notices, "p must start nothing here"

            matrix.move_cursor(row=matrix.row_keys.index("nas1:tank/data"), column=1)  # data → s3:offsite too
            await pilot.pause(0.3)
            assert footer_keys(app)["p"] == ("S3 push", True)
            await pilot.press("p")
            await wait_until(pilot, lambda: bool(app.finished), 10, "the push process to end")
            [proc] = app.finished
            assert (proc.command, proc.pattern, proc.returncode) == ("s3-push", "data", 0)

            await pilot.press("1")  # hosts: nas2's only job (home) has no S3 target either
            hosts = app.query_one("#hosts-table")
            hosts.move_cursor(row=hosts.row_keys.index("h:nas2"))
            await pilot.pause(0.3)
            assert footer_keys(app)["p"] == (NO_S3_TARGET, False)
            hosts.move_cursor(row=hosts.row_keys.index("h:nas1"))
            await pilot.pause(0.3)
            assert footer_keys(app)["p"] == ("S3 push", True)
    asyncio.run(run())


def test_every_state_has_one_symbol() -> None:
    """Cells, legend and help read one table: every state a cell can take is in it, once."""
    states = [s.state for s in SYMBOLS]
    assert len(states) == len(set(states))
    assert set(STATES) | {BROKEN, BUSY, RUNNING, NOT_CHECKED, PENDING, NOT_A_TARGET} <= set(states)
    assert len({s.glyph for s in SYMBOLS}) == len(SYMBOLS), "one glyph, one meaning"


def test_help_at_80x24_shows_every_legend_symbol(scenario) -> None:  # type: ignore[no-untyped-def]
    async def run() -> None:
        app = scenario()
        async with app.run_test(size=(80, 24)) as pilot:
            await _settled(pilot)
            await pilot.press("2")
            await pilot.pause(0.3)
            matrix_screen = screen_text(app)
            for entry in LEGEND_ENTRIES:  # the legend under the matrix breaks between entries, not inside
                assert entry in matrix_screen, entry
            await pilot.press("question_mark")
            await pilot.pause(0.3)
            assert isinstance(app.screen, HelpScreen)
            text = screen_text(app)
            lines = text.splitlines()
            assert len(lines) == 24
            assert lines[0].startswith("╭") and lines[-1].startswith("╰"), "the whole help box is on screen"
            box = app.screen.query_one("#help-box")
            assert box.max_scroll_y == 0 and box.max_scroll_x == 0, "nothing to scroll to"
            for entry in (*LEGEND_ENTRIES, *DETAIL_LEGEND_ENTRIES):
                assert entry in text, f"{entry!r} is in a legend but not in the help"
            await pilot.press("escape")
            assert not isinstance(app.screen, HelpScreen)
    asyncio.run(run())


def test_counts_are_pluralised(scenario) -> None:  # type: ignore[no-untyped-def]
    async def run() -> None:
        app = scenario()
        async with app.run_test(size=(120, 30)) as pilot:
            await _settled(pilot)
            bar = screen_text(app).splitlines()[0]
            assert "4 hosts (1 unreachable) │ 1 transfer " in bar and "transfers" not in bar, bar
            app.open_detail("nas1:tank/vm", "vm")  # one snapshot, not yet on vault
            await pilot.pause(0.3)
            title = str(app.query_one("#detail-title").render())
            assert "(1 snapshot; job vm)" in title, title
            app.open_detail("nas1:tank/data", "data")
            await pilot.pause(0.3)
            assert "(6 snapshots; job data)" in str(app.query_one("#detail-title").render())
    asyncio.run(run())


def test_plural_and_pack() -> None:
    assert [plural(n, "snapshot") for n in (0, 1, 2)] == ["0 snapshots", "1 snapshot", "2 snapshots"]
    assert plural(1, "host") == "1 host" and plural(3, "box", "boxes") == "3 boxes"
    for width in (20, 40, 78, 200):
        lines = pack(LEGEND_ENTRIES, width)
        assert all(len(line) <= width for line in lines)
        assert "  ".join(lines) == "  ".join(LEGEND_ENTRIES)  # every entry, whole, in order
    assert pack(["a b", "c d", "e f"], 9, "; ") == ["a b; c d;", "e f"]  # the ";" that ends a line counts
