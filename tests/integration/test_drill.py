"""``zrelay drill`` against the lab: restore from a host replica and from S3 into a scratch dataset,
prove it equals the source, clean up only what the drill created, and record the evidence.

- a drill of a host replica is ok, recorded, shown by ``status --json`` as ``last_drill``, and leaves
  no scratch dataset, clone or mount directory behind;
- ``--dry-run`` prints every command and changes nothing (same datasets before and after, nothing recorded);
- a drill from S3 is ok; a damaged stored object makes it fail with the object named (the sha256 check
  of the S3 restore path), and the scratch is still cleaned up;
- bad arguments are one line and exit 2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import REPO, make_dataset, one_line_error, write_inventory
from tests.integration.test_s3 import Case, case2  # noqa: F401  (the fixture)
from tests.s3fixture import s3  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.lab]


def run(inventory: Path, state: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ, ZRELAY_STATE=str(state), **(env or {}))
    full.pop("ZRELAY_INVENTORY", None)
    return subprocess.run([sys.executable, "-m", "zrelay", "-i", str(inventory), *args], capture_output=True,
                          text=True, timeout=300, cwd=REPO, env=full)


def datasets(lab: Any, host: str, name: str = "") -> list[str]:
    """Every dataset and snapshot on ``host`` with ``name`` in it (others' tests share the pools)."""
    listing = lab.run(host, "zfs", "list", "-H", "-o", "name", "-t", "all").stdout.splitlines()
    return [ds for ds in listing if name in ds]


def leftovers(lab: Any, names: list[str]) -> list[str]:
    """Datasets and mount directories a drill made that are still there."""
    found = [f"{h}:{ds}" for h in ("nas1", "nas2", "vault") for ds in datasets(lab, h)
             if "zrelay-drill-" in ds and any(n in ds for n in names)]
    found += [p for p in os.listdir("/tmp") if p.startswith("zrelay-drill-") and any(n in p for n in names)]
    return found


def test_drill_from_a_host_replica_is_ok_recorded_and_leaves_nothing(lab: Any, tmp_path: Path) -> None:
    name = lab.unique("dr")
    src, replica, parent = f"{lab.pools['nas1']}/{name}", f"{lab.pools['nas2']}/{name}r", f"{lab.pools['vault']}/{name}sc"
    make_dataset(lab, "nas1", src, mib=lab.mib(1), snaps=["s1", "s2"])
    lab.run("vault", "zfs", "create", parent)
    inv = write_inventory(tmp_path / "inv.yml", lab, [{"name": name, "source": f"nas1:{src}",
                                                       "targets": [f"nas2:{replica}"]}])
    state = tmp_path / "state.db"
    assert run(inv, state, "sync").returncode == 0

    before = {h: datasets(lab, h, name) for h in ("nas1", "nas2", "vault")}
    dry = run(inv, state, "drill", "--to", f"vault:{parent}", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    (planned,) = json.loads(dry.stdout)
    assert planned["result"] == "dry-run" and planned["snapshot"] == "s2"
    lines = [(c["host"], c["command"]) for c in planned["commands"]]
    assert ("nas2", f"zfs send {replica}@s2") in lines
    assert any(h == "vault" and c.startswith(f"zfs receive -u {parent}/zrelay-drill-") for h, c in lines)
    assert {h for h, c in lines if c.startswith("zfs clone")} == {"nas1", "vault"}
    assert {h: datasets(lab, h, name) for h in ("nas1", "nas2", "vault")} == before, "a dry run changes nothing"
    assert json.loads(run(inv, state, "status", "--json").stdout)[0]["last_drill"] is None, "nothing recorded"
    # without --to, the job's drill_to: says where
    with_key = write_inventory(tmp_path / "inv-drill-to.yml", lab, [{
        "name": name, "source": f"nas1:{src}", "targets": [f"nas2:{replica}"], "drill_to": f"vault:{parent}"}])
    keyed = run(with_key, state, "drill", "--dry-run", "--json")
    assert keyed.returncode == 0, keyed.stderr
    keyed_lines = [(c["host"], c["command"]) for c in json.loads(keyed.stdout)[0]["commands"]]
    assert ("nas2", f"zfs send {replica}@s2") in keyed_lines
    assert any(h == "vault" and c.startswith(f"zfs receive -u {parent}/zrelay-drill-") for h, c in keyed_lines)

    r = run(inv, state, "drill", "--to", f"vault:{parent}", "--json")
    assert r.returncode == 0, (r.stdout, r.stderr)
    (ev,) = json.loads(r.stdout)
    assert ev["result"] == "ok", ev
    assert ev["received_guid"] == ev["guid"] and ev["source_tree"]["sha256"] == ev["copy_tree"]["sha256"]
    assert ev["copy_tree"]["entries"] >= 3 and ev["cleanup"] == [] and not ev["kept"]
    assert leftovers(lab, [name]) == []
    assert {h: datasets(lab, h, name) for h in ("nas1", "nas2", "vault")} == before

    rows = json.loads(run(inv, state, "status", "--json").stdout)
    assert rows[0]["last_drill"]["result"] == "ok" and rows[0]["last_drill"]["snapshot"] == "s2"
    text = run(inv, state, "status", env={"COLUMNS": "120"}).stdout
    assert "drill ok" in text

    # an older snapshot by name, kept for inspection: it is there with the snapshot's GUID
    kept = run(inv, state, "drill", "--to", f"vault:{parent}", "--snapshot", "s1", "--keep", "--json")
    (ev,) = json.loads(kept.stdout)
    assert ev["result"] == "ok" and ev["kept"], ev
    scratch = ev["scratch"].split(":", 1)[1]
    assert lab.zfs("vault", "get", "-H", "-p", "-o", "value", "guid", f"{scratch}@s1").strip() == str(ev["guid"])


def test_bad_arguments_are_one_line_and_exit_2(lab: Any, tmp_path: Path) -> None:
    name = lab.unique("dr")
    inv = write_inventory(tmp_path / "inv.yml", lab, [{"name": name, "source": f"nas1:{lab.pools['nas1']}/{name}",
                                                       "targets": [f"nas2:{lab.pools['nas2']}/{name}r"]}])
    state = tmp_path / "state.db"
    for args, says in ((["--to", "nohost:tank/x"], "unknown host 'nohost'"),
                       (["--to", "vault"], "--to"),
                       (["--to", "vault:tank", "--from", "s3:nope"], "no S3 target 'nope'"),
                       (["--to", "vault:tank", "--from", "vault:tank/other"], "no matching job has this target"),
                       (["--to", "vault:tank", "--snapshot", "a;b"], "--snapshot"),
                       (["--to", f"vault:{lab.pools['vault']}/{name}missing"], "does not exist"),
                       ([], "has no drill_to: key")):
        r = run(inv, state, "drill", *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        err = one_line_error(r)
        assert says in err and len(err.splitlines()) == 1, (args, err)


def test_drill_from_s3_is_ok_and_a_damaged_object_fails_and_is_cleaned_up(case2: Case) -> None:  # noqa: F811
    case, lab = case2, case2.lab
    make_dataset(lab, "nas2", case.src, mib=lab.mib(1), snaps=["s1", "s2"])
    case.ok("s3-push")
    parent = case.target_dataset("vault", "sc")
    lab.run("vault", "zfs", "create", parent)
    r = case.zrelay("drill", "--from", "s3:offsite", "--to", f"vault:{parent}", "--json")
    assert r.returncode == 0, (r.stdout, r.stderr)
    (ev,) = json.loads(r.stdout)
    assert ev["result"] == "ok" and ev["snapshot"] == "s2" and ev["copy"] == "s3:offsite", ev
    assert any("s3:offsite" in c["detail"] for c in ev["commands"] if c["step"] == "receive")
    assert lab.run("vault", "zfs", "list", "-H", "-o", "name", "-r", parent).stdout.split() == [parent]

    (key,) = [k for k in case.stream_keys() if "/@s2/" in k]
    body = case.s3.client().get_object(Bucket=case.s3.bucket, Key=key)["Body"].read()
    damaged = bytes([body[0] ^ 0xFF]) + body[1:]
    case.s3.client().put_object(Bucket=case.s3.bucket, Key=key, Body=damaged)
    bad = case.zrelay("drill", "--from", "s3:offsite", "--to", f"vault:{parent}", "--json")
    assert bad.returncode == 1, (bad.stdout, bad.stderr)
    (ev,) = json.loads(bad.stdout)
    assert ev["result"] == "failed" and key in ev["message"] and "sha256" in ev["message"], ev
    assert ev["cleanup"] == []
    assert lab.run("vault", "zfs", "list", "-H", "-o", "name", "-r", parent).stdout.split() == [parent]
    rows = json.loads(case.zrelay("status", "--json").stdout)
    assert rows[0]["last_drill"]["result"] == "failed"
