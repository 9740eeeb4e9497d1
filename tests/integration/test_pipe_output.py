"""What cron sees: ``sync``, ``s3-push`` and ``s3-restore`` with stdout a pipe print one line when each
stream starts and one when it ends (bytes, time, rate, result), then the summary; nothing padded."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import make_dataset, write_inventory, zrelay
from tests.s3fixture import s3  # noqa: F401  (the fixture)

pytestmark = pytest.mark.lab

START = re.compile(r"^\d\d:\d\d:\d\d start  (?P<stream>.+) → (?P<host>\S+)( \(estimate [\d.]+ \w+\))?$")
END = re.compile(r"^\d\d:\d\d:\d\d done   (?P<stream>.+) → (?P<host>\S+): (?P<moved>[\d.]+ \w+) in [\d.dhms]+, "
                 r"[\d.]+ \w+/s$")


def stream_lines(stdout: str) -> tuple[list[re.Match[str]], list[re.Match[str]]]:
    lines = stdout.splitlines()
    starts = [m for m in map(START.match, lines) if m]
    ends = [m for m in map(END.match, lines) if m]
    return starts, ends


def check_each_stream_starts_then_ends(stdout: str, streams: int) -> None:
    starts, ends = stream_lines(stdout)
    assert len(starts) == streams and len(ends) == streams, stdout
    lines = stdout.splitlines()
    for s in starts:
        end = next(e for e in ends if (e["stream"], e["host"]) == (s["stream"], s["host"]))
        assert lines.index(s.string) < lines.index(end.string), stdout
    assert all(not e["moved"].startswith("0 ") for e in ends), stdout
    assert "MB/s" not in stdout and "/?" not in stdout
    assert not [line for line in lines if line != line.rstrip()], f"padded lines:\n{stdout}"


def test_sync_in_a_pipe_prints_a_line_per_stream_start_and_end(lab: Any, tmp_path: Path) -> None:
    name = lab.unique("pipe")
    src, pool = f"{lab.pools['nas1']}/{name}", lab.pools["vault"]
    make_dataset(lab, "nas1", src, mib=lab.mib(2, minimum=1), snaps=["zrelay_1", "zrelay_2"])
    inv = write_inventory(tmp_path / "inv.yml", lab, [
        {"source": f"nas1:{src}", "targets": [f"vault:{pool}/{name}a", f"vault:{pool}/{name}b"]}])
    proc = zrelay("--state", str(tmp_path / "state.db"), "sync", inventory=inv, env={"COLUMNS": ""})
    assert proc.returncode == 0, proc.stderr
    # one full stream of @zrelay_1 and one incremental to @zrelay_2 per target (or one -I stream): at least
    # one stream per target, each with its start before its end, then the summary
    starts, _ends = stream_lines(proc.stdout)
    assert {s["host"] for s in starts} == {"vault"} and len(starts) >= 2, proc.stdout
    check_each_stream_starts_then_ends(proc.stdout, len(starts))
    summary = proc.stdout.splitlines().index("zrelay sync")
    assert summary > max(proc.stdout.splitlines().index(m.string) for m in stream_lines(proc.stdout)[1])
    # --json keeps stdout JSON only
    again = zrelay("--state", str(tmp_path / "state.db"), "sync", "--json", inventory=inv)
    assert again.stdout.lstrip().startswith("[") and "start  " not in again.stdout


def test_s3_push_and_restore_in_a_pipe(lab: Any, s3: Any, tmp_path: Path) -> None:  # noqa: F811
    name = lab.unique("pipe3")
    src = f"{lab.pools['nas2']}/{name}"
    make_dataset(lab, "nas2", src, mib=lab.mib(2, minimum=1), snaps=["a", "b"])
    inv = write_inventory(tmp_path / "inv.yml", lab, [{"source": f"nas2:{src}", "targets": ["s3:offsite"]}],
                          settings={"s3_targets": {"offsite": s3.target(s3.prefix(name))}})
    state = str(tmp_path / "state.db")
    push = zrelay("--state", state, "s3-push", inventory=inv, env={**s3.env, "COLUMNS": ""})
    assert push.returncode == 0, push.stderr
    starts, _ = stream_lines(push.stdout)
    assert {s["host"] for s in starts} == {"s3:offsite"}, push.stdout
    check_each_stream_starts_then_ends(push.stdout, len(starts))
    dest = f"{lab.pools['vault']}/{name}r"
    try:
        restore = zrelay("--state", state, "s3-restore", "offsite", f"nas2:{src}", "--to", f"vault:{dest}",
                         inventory=inv, env={**s3.env, "COLUMNS": ""})
        assert restore.returncode == 0, restore.stderr
        check_each_stream_starts_then_ends(restore.stdout, len(stream_lines(restore.stdout)[0]))
        assert re.search(r"^restored .*\([\d.]+ \w+ in [\d.dhms]+, [\d.]+ \w?i?B/s\)$", restore.stdout, re.M), \
            restore.stdout
    finally:
        lab.destroy("vault", dest)
        s3.cleanup(s3.prefix(name))
