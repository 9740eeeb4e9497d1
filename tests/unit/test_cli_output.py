"""The CLI's output outside and inside a terminal: units, dry runs, summaries, progress (no lab)."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from zrelay import units
from zrelay.cli import output
from zrelay.actions import Action, ActionKind
from zrelay.engine import TaskResult
from zrelay.events import JobPlanned, Outcome, TransferFinished, TransferProgress, TransferStarted

MiB = 1024 * 1024
TOKEN = "1-" + "e3f4a5b6c7" * 30   # a resume token is one word of a few hundred characters
RESUME = f"zfs send -t {TOKEN}"
DIRECT = ("zfs send -I tank/data@zrelay_2026-12-05T19:41:32Z tank/data@zrelay_2026-12-05T21:41:32Z | pv -n -b -i 0.25 "
          "2>/run/zrelay/progress.1234 | ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile="
          "/root/.ssh/zrelay_known_hosts -i /root/.ssh/zrelay_direct -c aes128-gcm@openssh.com -p 22 root@10.0.2.100 "
          "zfs receive -u -s backup/nas1/data")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _lines(pairs: list[tuple[str, str]]) -> list[Action]:
    """Actions that render as ``pairs`` (host, command line): the dry run prints what actions hold."""
    return [Action(ActionKind.SET_PROPERTIES, host, "", (line,)) for host, line in pairs]


def test_units_speak_one_style() -> None:
    assert units.human_rate(7.4 * MiB) == "7.4 MiB/s" and units.human_rate(None) == "-"
    assert [units.human_duration(s) for s in (0.44, 9.94, 12.2, 185, 3720, 200000)] == \
        ["0.4s", "9.9s", "12s", "3m05s", "1h02m", "2d07h"]
    assert units.human_progress(int(82.2 * MiB), None) == "82.2 MiB"
    assert units.human_progress(int(82.2 * MiB), 120 * MiB) == "82.2 MiB of 120.0 MiB"
    assert units.human_moved(int(60.2 * MiB), 8.1) == "60.2 MiB in 8.1s, 7.4 MiB/s"
    assert units.human_moved(0, 0.0) == "0 B in 0.0s"   # no rate without time


def _pipe(monkeypatch: pytest.MonkeyPatch, columns: int | None) -> None:
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", str(columns))
    monkeypatch.setattr(output, "_consoles", {})


def _terminal(monkeypatch: pytest.MonkeyPatch, width: int, stderr: bool = False) -> io.StringIO:
    buf = io.StringIO()
    monkeypatch.setattr(output, "_consoles", {stderr: Console(file=buf, force_terminal=True, width=width,
                                                              highlight=False)})
    monkeypatch.setattr(output, "is_terminal", lambda stderr=False: True, raising=False)
    return buf


def dry_results() -> list[TaskResult]:
    return [TaskResult("nas1:tank/data", "nas1:tank/data", "vault:backup/nas1/data", Outcome.SKIPPED,
                       "resume the interrupted receive into backup/nas1/data [token checked]",
                       actions=_lines([("nas1", RESUME), ("vault", "zfs receive -u -s backup/nas1/data"), ("nas1", DIRECT)]))]


@pytest.mark.parametrize("columns", [None, 80])
def test_dry_run_in_a_pipe_keeps_every_command_on_one_line(monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str],
                                                           columns: int | None) -> None:
    _pipe(monkeypatch, columns)
    capsys.readouterr()
    output.print_dry_run(dry_results())
    lines = capsys.readouterr().out.splitlines()
    assert f"    nas1$ {RESUME}" in lines and f"    nas1$ {DIRECT}" in lines, "\n".join(lines)
    assert "[token checked]" in " ".join(lines[:2]), "brackets in a message are text, not markup"
    assert not [line for line in lines if line != line.rstrip()]


def test_dry_run_on_a_terminal_never_hard_wraps_a_command(monkeypatch: pytest.MonkeyPatch) -> None:
    buf = _terminal(monkeypatch, 80)
    output.print_dry_run(dry_results())
    text = ANSI.sub("", buf.getvalue())
    assert f"nas1$ {RESUME}\n" in text and f"nas1$ {DIRECT}\n" in text   # the terminal wraps it, softly
    first = text.splitlines()[:2]
    assert all(len(line) <= 80 for line in first) and "[token checked]" in " ".join(first)


def sync_results() -> list[TaskResult]:
    detail = ("full tank/home@zrelay_2026-12-05T19:41:32Z → @zrelay_2026-12-05T21:41:32Z into backup/nas2/home "
              "(then -i ×1, 2 snapshots)")
    return [TaskResult("nas2:tank/home", "nas2:tank/home", "vault:backup/nas2/home", Outcome.OK, detail,
                       bytes=int(6.0 * MiB), seconds=2.2),
            TaskResult("nas2:tank/home", "nas2:tank/home", "nas1:tank/replica/home", Outcome.FAILED,
                       "nas1: connection refused", seconds=0.31, failed_host="nas1")]


@pytest.mark.parametrize("columns", [None, 80, 120])
def test_sync_summary_rows_are_single_lines(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                            columns: int | None) -> None:
    _pipe(monkeypatch, columns)
    capsys.readouterr()
    output.print_summary(sync_results())
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert not [line for line in lines if line != line.rstrip()], out.out
    if columns:
        assert not [line for line in lines if len(line) > columns], out.out
    ok = next(line for line in lines if line.startswith("  vault:backup/nas2/home "))
    assert ok.split()[1:4] == ["ok", "6.0", "MiB"] and "2.2s" in ok
    bad = next(line for line in lines if line.startswith("  nas1:tank/replica/home "))
    assert "failed" in bad and "0.3s" in bad
    detail = "@zrelay_2026-12-05T19:41:32Z → @zrelay_2026-12-05T21:41:32Z"
    assert detail in out.out.replace("\n    ", " ")   # on the row, or under it wrapped at spaces
    assert "failed: nas2:tank/home → nas1:tank/replica/home: nas1: connection refused" in out.err


def transfer_events(estimate: int | None, ok: bool = True) -> list[object]:
    stream = "tank/data@zrelay_1 → @zrelay_2 (-i)"
    return [TransferStarted("j", "vault:backup/data", "nas1", "vault", stream, estimate),
            TransferProgress("j", "vault:backup/data", stream, int(82.2 * MiB), estimate, 7.4 * MiB),
            TransferFinished("j", "vault:backup/data", stream, int(82.2 * MiB), 11.1, ok)]


def test_a_pipe_gets_a_line_per_stream_start_and_end(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    _pipe(monkeypatch, None)
    monkeypatch.setattr(output, "is_terminal", lambda stderr=False: False, raising=False)
    capsys.readouterr()
    waiting = JobPlanned("j", "vault:backup/data", "waiting", "waiting up to 60 s: another zrelay sync (pid 7)")
    with output.ProgressView(enabled=True) as view:
        for event in [*transfer_events(120 * MiB), *transfer_events(None, ok=False), waiting]:
            view.handle(event)  # type: ignore[arg-type]
    out = capsys.readouterr()
    lines = out.out.splitlines()
    stamp = r"\d\d:\d\d:\d\d "
    name = re.escape("tank/data@zrelay_1 → @zrelay_2 (-i) → vault")
    assert len(lines) == 5, out
    assert re.fullmatch(stamp + "wait   j → vault:backup/data: waiting up to 60 s: another zrelay sync \\(pid 7\\)",
                        lines[4]), lines[4]
    assert re.fullmatch(stamp + f"start  {name} \\(estimate 120.0 MiB\\)", lines[0]), lines[0]
    assert re.fullmatch(stamp + f"done   {name}: 82.2 MiB in 11s, 7.4 MiB/s", lines[1]), lines[1]
    assert re.fullmatch(stamp + f"start  {name}", lines[2]), lines[2]
    assert re.fullmatch(stamp + f"FAILED {name}: 82.2 MiB in 11s, 7.4 MiB/s", lines[3]), lines[3]
    assert not out.err


def test_bars_speak_the_same_units(monkeypatch: pytest.MonkeyPatch) -> None:
    buf = _terminal(monkeypatch, 120, stderr=True)
    with output.ProgressView(enabled=True) as view:
        for event in [*transfer_events(None), *transfer_events(120 * MiB)]:
            view.handle(event)  # type: ignore[arg-type]
    text = ANSI.sub("", buf.getvalue())
    assert "done: 82.2 MiB in 11s, 7.4 MiB/s" in text, text
    for wrong in ("/?", "? ", "0:00:00", "MB/s", "-:--:--"):
        assert wrong not in text, f"{wrong!r} in:\n{text}"


def test_bar_figures_while_running() -> None:
    from rich.progress import Progress
    progress = Progress()
    unknown = progress.add_task("a", total=None, rate=7.4 * MiB, outcome=None)
    known = progress.add_task("b", total=120 * MiB, rate=7.4 * MiB, outcome=None)
    progress.update(unknown, completed=int(82.2 * MiB))
    progress.update(known, completed=int(82.2 * MiB))
    tasks = {t.id: t for t in progress.tasks}
    assert output._numbers_text(tasks[unknown]) == "82.2 MiB  7.4 MiB/s"
    assert output._numbers_text(tasks[known]) == "82.2 MiB of 120.0 MiB  7.4 MiB/s  5.1s left"
