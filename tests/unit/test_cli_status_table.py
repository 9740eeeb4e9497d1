"""``zrelay status``'s text at 80, 120 and 200 columns and in a pipe, from a fixed report (no lab).

The command prints through the same console a pipe gets; ``COLUMNS`` sets the
width it is laid out for, as it does for a user's ``COLUMNS=80 zrelay status``.
"""

from __future__ import annotations

import re
import time

import pytest

from zrelay.cli import output, status
from zrelay.status.report import RUNNING, LocationStatus

A = "zrelay_2026-12-05T19:41:32Z"
B = "zrelay_2026-12-05T20:41:32Z"
C = "zrelay_2026-12-05T21:41:32Z"
LOCAL = "zrelay_local-change"
NAMES = (A, B, C, LOCAL)
MiB = 1024 * 1024
DIVERGED = (f"vault:backup/nas2/home has diverged from nas2:tank/home (@{LOCAL} after the newest common snapshot "
            f"@{B}); refused without --rollback. Options: re-run with --rollback to roll vault:backup/nas2/home "
            f"back to @{B}, destroying @{LOCAL} | or destroy/rename @{LOCAL} on vault:backup/nas2/home yourself | "
            "or point the job at a new target dataset")


def last(outcome: str, ago: float, message: str = "", moved: int = 18 * MiB) -> dict:
    """A last run ``ago`` seconds before now (now: when the test runs, not when the module was imported)."""
    now = time.time()
    return {"outcome": outcome, "finished_at": now - ago, "started_at": now - ago - 2, "bytes": moved,
            "seconds": 2.1, "message": message, "failed_host": None, "run_id": 7}


def report() -> list[LocationStatus]:
    """The lab's two jobs after a day of use: in sync, behind with a failed run, diverged, S3, a dead host,
    and a transfer running now."""
    now = time.time()
    data, home = "nas1:tank/data", "nas2:tank/home"
    return [
        LocationStatus(data, data, "nas2:tank/replica/nas1-data", "in-sync", datasets=3, source_newest=C,
                       target_newest=C, common_base=C, lag_seconds=0, base_age_seconds=600, location="nas2",
                       last_run=last("ok", 60, "3 datasets: 3 incremental"), bytes_total=54 * MiB),
        LocationStatus(data, data, "vault:backup/nas1/data", "behind", datasets=3, source_newest=C,
                       target_newest=A, common_base=A, behind=2, lag_seconds=7200, base_age_seconds=7800,
                       message=f"vault:backup/nas1/data is 2 snapshots behind nas1:tank/data@{C}",
                       location="vault", last_run=last("failed", 300, "vault: connection lost mid-stream", 0)),
        LocationStatus(home, home, "vault:backup/nas2/home", "diverged", source_newest=C, target_newest=LOCAL,
                       common_base=B, lag_seconds=3600, message=DIVERGED, location="vault",
                       last_run=last("refused", 120, f"diverged: backup/nas2/home: {DIVERGED}", 0)),
        LocationStatus(home, home, "s3:offsite", "in-sync", source_newest=C, target_newest=C, common_base=C,
                       lag_seconds=0, target_kind="s3", location="s3:offsite", last_run=last("ok", 90),
                       s3={"url": "s3://zrelay-lab/zrelay/v1/", "endpoint": "http://127.0.0.1:8333", "chains": 1,
                           "sends": 3, "stored_bytes": 6 * MiB, "restorable_newest": C, "broken_chains": 0,
                           "unfinished_sends": 0}),
        LocationStatus(home, home, "ghost:tank/home", "unreachable",
                       message="ghost: cannot connect to 127.0.0.9:22: Connection refused", location="ghost"),
        LocationStatus("photos", "nas1:tank/photos", "vault:backup/photos", RUNNING, planned_state="behind",
                       source_newest=C, target_newest=B, common_base=B, behind=1, lag_seconds=3600,
                       location="vault",
                       transfer={"stream": f"tank/photos@{B} → @{C} (-i)", "source_host": "nas1",
                                 "target_host": "vault", "bytes": 82 * MiB, "estimate": 120 * MiB,
                                 "rate": 7.5 * MiB, "eta_seconds": 5, "started_at": now - 11,
                                 "updated_at": now, "pid": 4242, "command": "sync"}),
    ]


def render(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], columns: int | None,
           *args: object, **kwargs: object) -> list[str]:
    """What ``zrelay status`` prints to a pipe (with ``COLUMNS`` when given)."""
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", str(columns))
    monkeypatch.setattr(output, "_consoles", {})
    capsys.readouterr()
    status.print_table(report(), *args, **kwargs)  # type: ignore[arg-type]
    return capsys.readouterr().out.splitlines()


def split_names(lines: list[str]) -> list[str]:
    """Lines where a snapshot name starts but is cut off (the rest folded onto another line)."""
    bad = []
    for line in lines:
        for m in re.finditer(r"zrelay_", line):
            if not any(line.startswith(name, m.start()) for name in NAMES):
                bad.append(line)
    return bad


@pytest.mark.parametrize("columns", [80, 120, 200])
def test_table_fits_the_width_and_keeps_names_whole(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str], columns: int) -> None:
    lines = render(monkeypatch, capsys, columns)
    too_wide = [line for line in lines if len(line) > columns]
    assert not too_wide, f"lines wider than {columns}:\n" + "\n".join(too_wide)
    assert not split_names(lines), "a snapshot name is cut:\n" + "\n".join(lines)
    text = "\n".join(lines)
    for r in report():   # every target has its row, on one line with its state
        row = next((line for line in lines if line.startswith(f"  {r.target}  ")), None)
        assert row is not None, f"no row for {r.target}:\n{text}"


@pytest.mark.parametrize("columns", [80, 120, 200, None])
def test_in_sync_names_the_snapshot_once(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                         columns: int | None) -> None:
    lines = render(monkeypatch, capsys, columns)
    in_sync = [r for r in report() if r.state == "in-sync"]
    for r in in_sync:
        row = next(line for line in lines if line.startswith(f"  {r.target}  "))
        assert f"in sync at @{C}" in row and row.count(C) == 1, row
    assert "\n".join(lines).count("in sync at @") == len(in_sync)


@pytest.mark.parametrize("columns", [80, 120, 200, None])
def test_advice_is_told_once_option_by_option(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str], columns: int | None) -> None:
    text = "\n".join(render(monkeypatch, capsys, columns))
    # the diverged row's reason and options, once each (its last run refused for the same reason)
    assert text.count("point the job at a new target dataset") == 1, text
    assert text.count("refused without --rollback") == 1, text
    assert re.search(r"^ {4}options: re-run with --rollback", text, re.M), text
    assert re.search(r"^ {13}or destroy/rename @", text, re.M), text
    # a behind row's failed last run is told (it is why the row is behind); the dead host says why
    assert text.count("connection lost mid-stream") == 1
    assert "Connection refused" in text
    # the running transfer, in the one unit style
    assert "82.0 MiB of 120.0 MiB, 7.5 MiB/s, 5.0s left (sync, pid 4242)" in text.replace("\n    ", " ")


def test_widest_layout_says_everything_on_the_row(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    lines = render(monkeypatch, capsys, 200)
    behind = next(line for line in lines if line.startswith("  vault:backup/nas1/data  "))
    assert f"behind 2: @{A} → @{C}" in behind and "2h" in behind and "failed 5m ago" in behind
    diverged = next(line for line in lines if line.startswith("  vault:backup/nas2/home  "))
    assert f"diverged after @{B}: target has @{LOCAL}" in diverged and "refused 2m ago" in diverged
    assert any(line.startswith("  s3:offsite  ") and "6.0 MiB stored" in line for line in lines)
    assert lines[1].split() == ["TARGET", "STATE", "LAG", "LAST", "RUN", "NOTE"]
    assert "nas1:tank/data  (3 datasets)" in lines and "photos: nas1:tank/photos" in lines


def test_narrow_terminal_gives_way_by_priority(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    wide = "\n".join(render(monkeypatch, capsys, 200))
    narrow = render(monkeypatch, capsys, 80)
    assert "6.0 MiB stored" in wide and "6.0 MiB stored" not in "\n".join(narrow)   # the note goes first
    behind = next(line for line in narrow if line.startswith("  vault:backup/nas1/data  "))
    assert f"behind 2: at @{A}" in behind and C not in behind   # then the state's second name


def test_narrower_than_any_table_rows_become_blocks(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    lines = render(monkeypatch, capsys, 44)
    assert not [line for line in lines if len(line) > 44]
    assert not split_names(lines)
    at = lines.index("  vault:backup/nas2/home")
    assert lines[at + 1].startswith("    diverged") and "refused" in "\n".join(lines[at + 1:at + 3])


def test_pipe_lines_are_neither_padded_nor_wrapped(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    lines = render(monkeypatch, capsys, None)
    assert lines[0].startswith("zrelay status  ")
    assert not [line for line in lines if line != line.rstrip()], "padded lines"
    assert not split_names(lines)
    text = "\n".join(lines)
    # the whole reason on one line, each option on one line
    assert re.search(r"^ {4}vault:backup/nas2/home has diverged .*refused without --rollback\.$", text, re.M)
    assert re.search(rf"^ {{13}}or destroy/rename @{LOCAL} on vault:backup/nas2/home yourself$", text, re.M)


@pytest.mark.parametrize("columns", [80, None])
def test_detail_view_has_every_field(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                     columns: int | None) -> None:
    lines = render(monkeypatch, capsys, columns, detail=True)
    text = "\n".join(lines)
    if columns:
        assert not [line for line in lines if len(line) > columns]
    assert not split_names(lines)
    block = text.split("nas1:tank/data → vault:backup/nas1/data\n", 1)[1].split("\n\n", 1)[0]
    for want in (f"source newest   @{C}", f"target newest   @{A}", f"common base     @{A} (2h old)", "lag             2h",
                 "datasets        3", "last run        failed 5m ago: vault: connection lost", "last success    never"):
        assert want in block, f"{want!r} not in:\n{block}"
    assert "moved in total  54.0 MiB" in text and "stored          6.0 MiB in 1 chain(s), 3 send(s)" in text
    # the diverged row's last run repeated the message: told once, under "message"
    assert text.count("point the job at a new target dataset") == 1
