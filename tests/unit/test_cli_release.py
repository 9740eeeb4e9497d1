"""``zrelay release``'s table, printed from results (no hosts needed)."""

from __future__ import annotations

import pytest

from zrelay.cli import release
from zrelay.actions import Action, ActionKind
from zrelay.engine import ReleaseResult


def test_dry_run_table_names_holds_commands_and_errors(capsys: pytest.CaptureFixture[str]) -> None:
    results = [
        ReleaseResult("nas1:tank/data", "nas1", {"zrelay:nas1-tank-data": ["tank/data@s2"]},
                      [Action(ActionKind.RELEASE, "nas1", "tank/data@s2",
                              ("zfs release zrelay:nas1-tank-data tank/data@s2",))]),
        ReleaseResult("nas1:tank/data", "vault", {}),
        ReleaseResult("nas2:tank/home", "nas2", error="nas2: connection refused"),
    ]
    release._print(results, dry_run=True)
    out = capsys.readouterr().out
    assert "zrelay:nas1-tank-data" in out and "tank/data@s2" in out and "would release" in out
    assert "no zrelay holds" in out and "connection refused" in out
    assert "[nas1] zfs release zrelay:nas1-tank-data tank/data@s2" in out
