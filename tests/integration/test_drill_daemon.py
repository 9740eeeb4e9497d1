"""The daemon's scheduled drills on the lab: a job with ``drill_to:`` and ``schedule: {drill: …}``
gets a drill run that restores its replica into a scratch dataset, records the evidence in the
``drills`` table (``status`` shows it), records the run as ``daemon drill``, and exposes the newest
drill's time and result as metrics; the scratch is gone afterwards. No timing assertions: each wait
has a generous deadline and fails with the daemon's log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import make_dataset, write_inventory, zrelay
from tests.integration.test_daemon import daemon_settings, start_daemon  # noqa: F401  (the fixture)
from tests.integration.test_drill import leftovers
from zrelay.daemonstate import DaemonStore
from zrelay.drillstate import DrillStore

pytestmark = [pytest.mark.lab]


def test_a_scheduled_drill_runs_is_recorded_and_measured(lab: Any, tmp_path: Path, start_daemon: Any) -> None:  # noqa: F811
    name = lab.unique("dd")
    src, replica = f"{lab.pools['nas1']}/{name}", f"{lab.pools['nas2']}/{name}r"
    parent = f"{lab.pools['vault']}/{name}sc"
    make_dataset(lab, "nas1", src, mib=lab.mib(1), snaps=["zrelay_1"])
    lab.run("vault", "zfs", "create", parent)
    hook_log = tmp_path / "hooks.log"
    settings = daemon_settings(notify={"on_success": f'echo "$ZRELAY_KIND $ZRELAY_OUTCOME $ZRELAY_TARGETS" >> {hook_log}'})
    inv = write_inventory(tmp_path / "inv.yml", lab, [{
        "name": name, "source": f"nas1:{src}", "targets": [f"nas2:{replica}"],
        "drill_to": f"vault:{parent}", "schedule": {"sync": "1h", "drill": "after sync"}}], settings=settings)

    check = zrelay("daemon", "--check", "--json", inventory=inv, env={"ZRELAY_STATE": str(tmp_path / "state.db")})
    assert check.returncode == 0, check.stderr
    planned = json.loads(check.stdout)["planned"]
    assert [p["kind"] for p in planned if p["job"] == name][:2] == ["sync", "drill"], planned

    daemon = start_daemon(inv)
    daemon.wait_log(rf"run finished job={name} kind=drill outcome=ok", deadline=300.0)
    with DrillStore(daemon.state, readonly=True) as store:
        (row,) = store.drills(name)
    assert row["copy"] == f"nas2:{replica}" and row["result"] == "ok" and row["snapshot"] == "zrelay_1", row
    assert row["detail"]["received_guid"] == row["guid"] and row["detail"]["cleanup"] == []
    assert leftovers(lab, [name]) == []
    assert lab.run("vault", "zfs", "list", "-H", "-o", "name", "-r", parent).stdout.split() == [parent]
    with DaemonStore(daemon.state, readonly=True) as store:
        kinds = {r.kind: r for r in store.schedule()}
    assert set(kinds) == {"sync", "drill"} and kinds["drill"].schedule == "after each sync"
    assert kinds["drill"].history["last_outcome"] == "ok"
    assert f"drill ok nas2:{replica}" in daemon.wait("the drill's hook", lambda: hook_log.exists()
                                                      and "drill" in hook_log.read_text() and hook_log.read_text())
    at = daemon.wait("the drill's metrics", lambda: daemon.sample(
        "zrelay_last_drill_timestamp_seconds", job=name, target=f"nas2:{replica}"))
    assert at == row["finished"]
    assert daemon.sample("zrelay_last_drill_result", job=name, target=f"nas2:{replica}", result="ok") == 1
    assert daemon.sample("zrelay_runs_total", job=name, kind="drill", outcome="ok") == 1
    assert daemon.stop() == 0

    status = zrelay("status", "--json", inventory=inv, env={"ZRELAY_STATE": str(daemon.state)})
    (st,) = json.loads(status.stdout)
    assert st["last_drill"]["result"] == "ok" and st["last_drill"]["snapshot"] == "zrelay_1", st
    # the drill is recorded apart: the replica's last success stays its sync's, before the drill
    assert st["last_success_at"] is not None and st["last_success_at"] <= row["started"], (st, row)
