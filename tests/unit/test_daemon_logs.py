"""The daemon's log lines: one per event, text or JSON, never wrapped, priorities for journald."""

from __future__ import annotations

import io
import json
import os
import re
import threading
from pathlib import Path

import pytest

from zrelay.daemon.logs import EventLog, format_value
from zrelay.events import (JobFinished, JobPlanned, JobStarted, Outcome, TransferFinished, TransferProgress,
                           TransferStarted)


def lines(stream: io.StringIO) -> list[str]:
    text = stream.getvalue()
    assert text.endswith("\n") or not text
    return text.splitlines()


def test_text_line_is_level_message_then_fields_with_quotes_where_needed() -> None:
    out = io.StringIO()
    EventLog("text", out).error("run failed", job="nas1:tank/data", kind="sync",
                                error="no route to host", bytes=0, ok=False, holder=None)
    assert lines(out) == ['ERROR run failed job=nas1:tank/data kind=sync error="no route to host" '
                          'bytes=0 ok=false holder=-']


def test_text_line_never_wraps_newlines_and_quotes_are_escaped() -> None:
    out = io.StringIO()
    EventLog("text", out).warning("two\nlines", error='said "no"\nthen\tstopped', empty="")
    (line,) = lines(out)
    assert line == 'WARNING two\\nlines error="said \\"no\\"\\nthen\\tstopped" empty=""'


@pytest.mark.parametrize("value, shown", [
    ("plain", "plain"), ("a=b", '"a=b"'), ("back\\slash", '"back\\\\slash"'), (1.23456, "1.235"),
    (Outcome.REFUSED, "refused"), ("nas1:tank/x → vault:backup/x", '"nas1:tank/x → vault:backup/x"'),
    ("\x1b[31mred", '"\\x1b[31mred"'), (None, "-"), (True, "true"), (12, "12"),
])
def test_field_values(value: object, shown: str) -> None:
    assert format_value(value) == shown


def test_no_timestamp_and_no_colour_when_not_a_terminal() -> None:
    out = io.StringIO()
    EventLog("text", out).info("started", jobs=3)
    assert lines(out) == ["INFO started jobs=3"]


def _tty_stream() -> tuple[io.TextIOWrapper, int]:
    leader, follower = os.openpty()
    return io.TextIOWrapper(io.FileIO(follower, "w"), encoding="utf-8"), leader


def _read_pty(leader: int) -> str:
    return os.read(leader, 65536).decode()


def test_a_terminal_gets_a_time_and_a_coloured_level(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    stream, leader = _tty_stream()
    try:
        EventLog("text", stream).error("boom", job="j")
        text = _read_pty(leader)
    finally:
        stream.close()
        os.close(leader)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \x1b\[1;31mERROR\x1b\[0m boom job=j\r?\n", text), text


def test_no_color_keeps_the_time_but_drops_the_colour(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    stream, leader = _tty_stream()
    try:
        EventLog("text", stream).warning("late")
        text = _read_pty(leader)
    finally:
        stream.close()
        os.close(leader)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d WARNING late\r?\n", text), text


def test_journal_stream_gets_syslog_priorities(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "journal"
    with path.open("w") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        log = EventLog("text", stream)
        log.info("a")
        log.warning("b")
        log.error("c")
    assert path.read_text().splitlines() == ["<6>INFO a", "<4>WARNING b", "<3>ERROR c"]


def test_another_stream_than_the_journal_gets_no_priorities(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "1:2")
    with (tmp_path / "log").open("w") as stream:
        EventLog("text", stream).info("a")
    assert (tmp_path / "log").read_text() == "INFO a\n"


def test_json_lines_have_utc_time_level_message_and_fields() -> None:
    out = io.StringIO()
    log = EventLog("json", out)
    log.info("run finished", job="j", outcome=Outcome.OK, seconds=1.23456, note="a\nb")
    log.error("oops", msg="a field called msg", level=3)
    first, second = (json.loads(line) for line in lines(out))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first.pop("ts"))
    assert first == {"level": "info", "msg": "run finished", "job": "j", "outcome": "ok",
                     "seconds": 1.235, "note": "a\nb"}
    assert second["msg"] == "oops" and second["level"] == "error"
    assert second["msg_"] == "a field called msg" and second["level_"] == 3


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log format 'xml': use one of text, json"):
        EventLog("xml", io.StringIO())


def test_engine_events_one_line_each_progress_and_plans_not_logged() -> None:
    out = io.StringIO()
    log = EventLog("text", out)
    log.event(JobStarted("j", "nas1:tank/x", "vault:backup/x"))
    log.event(JobPlanned("j", "vault:backup/x", "incremental", "1 snapshot"))
    log.event(TransferStarted("j", "vault:backup/x", "nas1", "vault", "tank/x@a → @b (-i)", estimate=None))
    for done in range(100):
        log.event(TransferProgress("j", "vault:backup/x", "tank/x@a → @b (-i)", done, None, 1.0))
    log.event(TransferFinished("j", "vault:backup/x", "tank/x@a → @b (-i)", 4096, 2.5, True))
    log.event(TransferFinished("j", "vault:backup/x", "tank/x@b → @c (-i)", 10, 0.5, False))
    log.event(JobFinished("j", "nas1:tank/x", "vault:backup/x", Outcome.FAILED, "no route to host",
                          bytes=4096, seconds=3.0, failed_host="vault"))
    log.event(JobFinished("j", "nas1:tank/x", "s3:off", Outcome.NOOP))
    log.event(JobFinished("j", "nas1:tank/x", "vault:other/x", Outcome.REFUSED, "diverged"))
    assert lines(out) == [
        'INFO transfer started job=j target=vault:backup/x stream="tank/x@a → @b (-i)" source_host=nas1 '
        'target_host=vault estimate=-',
        'INFO transfer finished job=j target=vault:backup/x stream="tank/x@a → @b (-i)" bytes=4096 seconds=2.5',
        'WARNING transfer failed job=j target=vault:backup/x stream="tank/x@b → @c (-i)" bytes=10 seconds=0.5',
        'ERROR job finished job=j source=nas1:tank/x target=vault:backup/x outcome=failed bytes=4096 '
        'seconds=3.0 failed_host=vault message="no route to host"',
        "INFO job finished job=j source=nas1:tank/x target=s3:off outcome=noop bytes=0 seconds=0.0",
        "WARNING job finished job=j source=nas1:tank/x target=vault:other/x outcome=refused bytes=0 "
        "seconds=0.0 message=diverged",
    ]


def test_lines_from_many_threads_stay_whole() -> None:
    out = io.StringIO()
    log = EventLog("text", out)

    def write(n: int) -> None:
        for i in range(200):
            log.info("tick", thread=n, i=i, pad="x" * 50)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = lines(out)
    assert len(got) == 800
    assert all(re.fullmatch(r"INFO tick thread=\d i=\d+ pad=x{50}", line) for line in got)


def test_a_closed_stream_loses_the_line_not_the_daemon() -> None:
    out = io.StringIO()
    log = EventLog("text", out)
    out.close()
    log.error("nobody hears this")


def test_a_broken_pipe_loses_the_line_not_the_daemon() -> None:
    reader, writer = os.pipe()
    os.close(reader)
    stream = io.TextIOWrapper(io.FileIO(writer, "w"), encoding="utf-8")
    EventLog("text", stream).error("nobody hears this")
    try:
        stream.close()
    except BrokenPipeError:
        pass
