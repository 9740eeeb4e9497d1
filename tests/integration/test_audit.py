"""``zrelay audit`` on the lab: a dataset no job covers is listed, a job's source (and what is inside
a recursive one) and its replicas are not; a target whose base is older than the job's RPO is a
breach, one within it is not; ``status --json`` carries the same verdict per row."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.integration.helpers import make_dataset, write_inventory, zrelay


def test_audit_lists_unprotected_datasets_and_rpo_breaches(lab, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    name = lab.unique("au")
    src, dst = f"{lab.pools['nas1']}/{name}", f"{lab.pools['vault']}/{name}"
    try:
        make_dataset(lab, "nas1", f"{src}/prot", snaps=["zrelay_1"])
        make_dataset(lab, "nas1", f"{src}/prot/child", snaps=["zrelay_1"])
        make_dataset(lab, "nas1", f"{src}/fresh", snaps=["zrelay_1"])
        make_dataset(lab, "nas1", f"{src}/loose")
        jobs = [{"source": f"nas1:{src}/prot", "recursive": True, "rpo": "1s",
                 "targets": [f"vault:{dst}/prot"]},
                {"source": f"nas1:{src}/fresh", "targets": [f"vault:{dst}/fresh"]}]
        # the second job's RPO comes from its source host's variable
        inv = write_inventory(tmp_path / "inv.yml", lab, jobs, hosts={"nas1": {"zrelay_rpo": "1w"}})
        synced = zrelay("--state", str(tmp_path / "state.db"), "sync", inventory=inv)
        assert synced.returncode == 0, synced.stderr
        time.sleep(2)  # base ages come from creation times: the 1s RPO is now exceeded

        done = zrelay("audit", "nas1", "vault", "--json", inventory=inv)
        assert done.returncode == 1, done.stderr  # unprotected datasets and a breach
        report = json.loads(done.stdout)
        hosts = {h["host"]: h for h in report["hosts"]}
        assert set(hosts) == {"nas1", "vault"}
        nas1, vault = hosts["nas1"], hosts["vault"]
        assert nas1["error"] is None and vault["error"] is None
        assert f"{src}/loose" in nas1["unprotected"]
        assert src in nas1["unprotected"]  # a parent nobody replicates counts too
        for covered in (f"{src}/prot", f"{src}/prot/child", f"{src}/fresh"):
            assert covered in nas1["protected"] and covered not in nas1["unprotected"]
        for replica in (f"{dst}/prot", f"{dst}/prot/child", f"{dst}/fresh"):
            assert replica in vault["replicas"] and replica not in vault["unprotected"]
        ours = [b for b in report["rpo_breaches"] if b["source"].startswith(f"nas1:{src}/")]
        assert [(b["target"], b["rpo_seconds"], b["common_base"]) for b in ours] == [
            (f"vault:{dst}/prot", 1, "zrelay_1")]
        assert ours[0]["base_age_seconds"] >= 2

        text = zrelay("audit", "nas1", inventory=inv, env={"COLUMNS": "80"})
        assert text.returncode == 1, text.stderr
        lines = text.stdout.splitlines()
        assert f"  {src}/loose" in lines and f"  {src}/prot" not in lines
        assert any(f"vault:{dst}/prot" in line and "1s" in line for line in lines), text.stdout

        rows = json.loads(zrelay("--state", str(tmp_path / "state.db"), "status", "--json",
                                 inventory=inv).stdout)
        verdict = {r["target"]: (r["rpo_seconds"], r["rpo_breach"]) for r in rows}
        assert verdict == {f"vault:{dst}/prot": (1, True), f"vault:{dst}/fresh": (604800, False)}

        # a pattern that is no host or group: one line, exit 2
        bad = zrelay("audit", "nsa1", inventory=inv)
        assert bad.returncode == 2 and "'nsa1' is no host or group" in bad.stderr
        assert "Traceback" not in bad.stderr
    finally:
        lab.destroy("nas1", src)
        lab.destroy("vault", dst)
