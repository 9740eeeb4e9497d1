"""A drill of a recursive job's replica covers every dataset of the tree the job covers, one scratch
dataset each (parents first), and leaves out what the job leaves alone (``exclude:`` and
``zrelay:sync=false``): the dry run prints each dataset's exact commands and names the excluded
ones, the drill proves each dataset and records each, and ``status`` shows the round as one drill
as bad as its worst dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import make_dataset, write, write_inventory
from tests.integration.test_drill import datasets, leftovers, run
from zrelay.drillstate import DrillStore

pytestmark = [pytest.mark.lab]


def test_a_recursive_job_drills_each_covered_dataset(lab: Any, tmp_path: Path) -> None:
    name = lab.unique("dr")
    src, replica, parent = f"{lab.pools['nas1']}/{name}", f"{lab.pools['nas2']}/{name}r", f"{lab.pools['vault']}/{name}sc"
    lab.run("nas1", "zfs", "create", src)
    for child in ("a", "b", "tmp", "off"):
        lab.run("nas1", "zfs", "create", f"{src}/{child}")
    lab.run("nas1", "zfs", "set", "zrelay:sync=false", f"{src}/off")
    for ds in (src, f"{src}/a", f"{src}/b", f"{src}/tmp", f"{src}/off"):
        write(lab, "nas1", ds, "f", lab.mib(1))
    lab.run("nas1", "zfs", "snapshot", "-r", f"{src}@s1")
    lab.run("vault", "zfs", "create", parent)
    inv = write_inventory(tmp_path / "inv.yml", lab, [{"name": name, "source": f"nas1:{src}", "recursive": True,
                                                       "exclude": ["tmp"], "targets": [f"nas2:{replica}"]}])
    state = tmp_path / "state.db"
    synced = run(inv, state, "sync")
    assert synced.returncode == 0, synced.stdout + synced.stderr

    dry = run(inv, state, "drill", "--to", f"vault:{parent}", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    planned = json.loads(dry.stdout)
    assert [(p["dataset"], p["source"], p["copy"]) for p in planned] == [
        ("", f"nas1:{src}", f"nas2:{replica}"), ("a", f"nas1:{src}/a", f"nas2:{replica}"),
        ("b", f"nas1:{src}/b", f"nas2:{replica}")]
    assert planned[0]["excluded"] == [f"nas1:{src}/off: zrelay:sync=false", f"nas1:{src}/tmp: excluded by 'tmp'"]
    for p, copy in zip(planned, (replica, f"{replica}/a", f"{replica}/b")):
        lines = [(c["host"], c["command"]) for c in p["commands"]]
        assert ("nas2", f"zfs send {copy}@s1") in lines, lines
        assert any(h == "vault" and c.startswith(f"zfs receive -u {parent}/zrelay-drill-") for h, c in lines)
    text = run(inv, state, "drill", "--to", f"vault:{parent}", "--dry-run", env={"COLUMNS": "200"}).stdout
    assert f"excluded nas1:{src}/tmp: excluded by 'tmp': not drilled" in text
    assert f"drill {name}: nas2:{replica} a @s1" in text and f"zfs send {replica}/b@s1" in text
    assert datasets(lab, "vault", parent) == [parent], "a dry run changes nothing"

    r = run(inv, state, "drill", "--to", f"vault:{parent}", "--json")
    assert r.returncode == 0, (r.stdout, r.stderr)
    done = json.loads(r.stdout)
    assert [(e["dataset"], e["result"]) for e in done] == [("", "ok"), ("a", "ok"), ("b", "ok")], done
    assert len({e["scratch"] for e in done}) == 3 and all(e["cleanup"] == [] for e in done)
    assert leftovers(lab, [name]) == [] and datasets(lab, "vault", parent) == [parent]
    with DrillStore(state, readonly=True) as store:
        assert sorted(row["source"] for row in store.drills(name)) == [f"nas1:{src}", f"nas1:{src}/a",
                                                                        f"nas1:{src}/b"]
    last = json.loads(run(inv, state, "status", "--json").stdout)[0]["last_drill"]
    assert last["result"] == "ok" and last["message"].startswith("3 datasets"), last

    # a child's replica made again (nothing in it is the source's): that dataset fails, the others are
    # still drilled, and status shows the round as failed, naming it
    lab.run("nas2", "sh", "-c", 'for i in 1 2 3 4 5; do zfs destroy -r "$1" && exit 0; sleep 1; done; exit 1',
            "destroy", f"{replica}/b")
    make_dataset(lab, "nas2", f"{replica}/b", mib=lab.mib(1), snaps=["s1"])
    bad = run(inv, state, "drill", "--to", f"vault:{parent}", "--json")
    assert bad.returncode == 1, (bad.stdout, bad.stderr)
    results = {e["dataset"]: e for e in json.loads(bad.stdout)}
    assert results[""]["result"] == "ok" and results["a"]["result"] == "ok"
    assert results["b"]["result"] == "failed" and "nothing to drill" in results["b"]["message"], results["b"]
    assert leftovers(lab, [name]) == [] and datasets(lab, "vault", parent) == [parent]
    last = json.loads(run(inv, state, "status", "--json").stdout)[0]["last_drill"]
    assert last["result"] == "failed" and last["message"].startswith(f"nas1:{src}/b: "), last
    assert "(1 of 3 datasets not ok)" in last["message"], last
