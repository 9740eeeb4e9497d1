"""`zrelay status` against the lab: every state, the store's last run and live transfer, JSON schema, Prometheus."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.helpers import REPO, make_dataset, write, write_inventory, zrelay
from zrelay.state import read_view

pytestmark = pytest.mark.lab

S3 = {"s3_targets": {"offsite": {"bucket": "zrelay-lab", "endpoint": "http://127.0.0.1:8333",
                                 "region": "us-east-1", "addressing_style": "path"}}}
GHOST = {"ghost": {"address": "127.0.0.9"}}

NUM = (int, float)
#: The documented schema (docs/status-json.md): field → allowed JSON types.
ROW_SCHEMA: dict[str, tuple] = {
    "job": (str,), "source": (str,), "target": (str,), "state": (str,), "datasets": (int,),
    "source_newest": (str, type(None)), "target_newest": (str, type(None)), "common_base": (str, type(None)),
    "behind": (int,), "lag_seconds": (int, type(None)), "base_age_seconds": (int, type(None)),
    "message": (str,), "target_kind": (str,), "location": (str,), "planned_state": (str, type(None)),
    "last_run": (dict, type(None)), "last_success_at": (*NUM, type(None)), "bytes_total": (int,),
    "transfer": (dict, type(None)), "checked_at": NUM, "s3": (dict, type(None)), "holder": (dict, type(None)),
    "lifecycle": (dict, type(None)), "rpo_seconds": (int, type(None)), "rpo_breach": (bool, type(None)),
    "last_drill": (dict, type(None)),
}
#: ``lifecycle`` of a job with ``snapshot:`` or ``keep:`` (tests/integration/test_lifecycle.py checks its values)
LIFECYCLE_SCHEMA: dict[str, tuple] = {
    "next_snapshot_at": (int, type(None)), "snapshot_due": (bool, type(None)), "source": (dict, type(None)),
    "target": (dict, type(None)), "error": (str, type(None)),
}
LAST_RUN_SCHEMA: dict[str, tuple] = {
    "outcome": (str,), "started_at": NUM, "finished_at": NUM, "bytes": (int,), "seconds": NUM,
    "message": (str,), "failed_host": (str, type(None)), "run_id": (int,), "pid": (int, type(None)),
}
TRANSFER_SCHEMA: dict[str, tuple] = {
    "stream": (str,), "source_host": (str,), "target_host": (str,), "bytes": (int,),
    "estimate": (int, type(None)), "rate": NUM, "eta_seconds": (int, type(None)), "started_at": NUM,
    "updated_at": NUM, "pid": (int,), "command": (str,),
}
HOLDER_SCHEMA: dict[str, tuple] = {
    "pid": (int, type(None)), "started_at": (*NUM, type(None)), "command": (str,), "run_id": (int, type(None)),
    "what": (str,),
}
STATES = {"in-sync", "behind", "missing", "resumable", "no-snapshots", "running", "busy", "diverged",
          "no-common-base", "unreachable", "error", "broken", "not-checked"}


def check_schema(obj: dict, schema: dict[str, tuple], where: str) -> None:
    assert set(obj) == set(schema), f"{where}: fields {sorted(set(obj) ^ set(schema))} differ from the schema"
    for key, types in schema.items():
        assert isinstance(obj[key], types) and not (isinstance(obj[key], bool) and bool not in types), \
            f"{where}.{key} = {obj[key]!r} is not {types}"


@dataclass
class Cases:
    inv: Path
    state: Path
    name: str

    def target(self, case: str, host: str = "vault") -> str:
        return {"vault": f"vault:backup/{self.name}{case}", "ghost": f"ghost:tank/{self.name}{case}"}[host]

    def status(self, *args: str) -> subprocess.CompletedProcess[str]:
        return zrelay("--state", str(self.state), "status", *args, inventory=self.inv)


@pytest.fixture(scope="module")
def cases(lab, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """a: in sync (+ an unreachable and an S3 target), b: behind 1, c: diverged, d: never synced."""
    tmp = tmp_path_factory.mktemp("status")
    name = lab.unique("st")
    try:
        yield _make_cases(lab, tmp, name)
    finally:  # the lab's pools are small and shared
        for case in "abcd":
            lab.destroy("nas1", f"tank/{name}{case}")
            lab.destroy("vault", f"backup/{name}{case}")


def _make_cases(lab, tmp: Path, name: str) -> Cases:  # type: ignore[no-untyped-def]
    for case in "abcd":
        make_dataset(lab, "nas1", f"tank/{name}{case}", snaps=["zrelay_1"])
    jobs = [{"source": f"nas1:tank/{name}a",
             "targets": [f"vault:backup/{name}a", f"ghost:tank/{name}a", "s3:offsite"]}]
    jobs += [{"source": f"nas1:tank/{name}{c}", "targets": [f"vault:backup/{name}{c}"]} for c in "bcd"]
    inv = write_inventory(tmp / "inv.yml", lab, jobs, hosts=GHOST, settings=S3)
    c = Cases(inv, tmp / "state.db", name)
    first = zrelay("--state", str(c.state), "sync", "--json", *(f"nas1:tank/{name}{x}" for x in "abc"),
                   inventory=inv)
    outcomes = {r["target"]: r["outcome"] for r in json.loads(first.stdout)}
    assert outcomes == {**{c.target(x): "ok" for x in "abc"}, c.target("a", "ghost"): "failed"}, first.stderr
    write(lab, "nas1", f"tank/{name}b", "more")
    lab.run("nas1", "zfs", "snapshot", f"tank/{name}b@zrelay_2")
    lab.run("vault", "zfs", "snapshot", f"backup/{name}c@local-only")
    write(lab, "nas1", f"tank/{name}c", "more")
    lab.run("nas1", "zfs", "snapshot", f"tank/{name}c@zrelay_2")
    return c


def test_json_schema_and_every_lab_state(cases: Cases) -> None:
    proc = cases.status("--json")
    assert proc.returncode == 1, proc.stderr  # diverged and unreachable are alert states
    rows = json.loads(proc.stdout)
    for i, row in enumerate(rows):
        check_schema(row, ROW_SCHEMA, f"row {i}")
        assert row["state"] in STATES
        if row["last_run"] is not None:
            check_schema(row["last_run"], LAST_RUN_SCHEMA, f"row {i}.last_run")
        if row["transfer"] is not None:
            check_schema(row["transfer"], TRANSFER_SCHEMA, f"row {i}.transfer")
    by = {r["target"]: r for r in rows}
    assert list(by) == [cases.target("a"), cases.target("a", "ghost"), "s3:offsite",
                        cases.target("b"), cases.target("c"), cases.target("d")], "inventory order"

    a = by[cases.target("a")]
    assert (a["state"], a["behind"], a["lag_seconds"], a["common_base"]) == ("in-sync", 0, 0, "zrelay_1")
    assert a["last_run"]["outcome"] == "ok" and a["last_run"]["bytes"] > 0
    assert a["last_success_at"] == a["last_run"]["finished_at"] and a["bytes_total"] == a["last_run"]["bytes"]
    assert a["target_kind"] == "host" and a["location"] == "vault"

    ghost = by[cases.target("a", "ghost")]
    assert ghost["state"] == "unreachable" and "127.0.0.9" in ghost["message"]
    assert ghost["last_run"]["outcome"] == "failed" and ghost["last_run"]["failed_host"] == "ghost"
    assert ghost["last_success_at"] is None

    s3 = by["s3:offsite"]  # no credentials in this environment (or no server): one line naming it
    assert (s3["state"], s3["target_kind"], s3["location"]) == ("unreachable", "s3", "s3:offsite")
    assert "s3:offsite (http://127.0.0.1:8333)" in s3["message"] and s3["s3"]["url"] == "s3://zrelay-lab/zrelay/v1/"

    b = by[cases.target("b")]
    assert (b["state"], b["behind"], b["source_newest"], b["target_newest"]) == ("behind", 1, "zrelay_2", "zrelay_1")
    assert b["lag_seconds"] is not None and b["lag_seconds"] >= 0

    c = by[cases.target("c")]
    assert c["state"] == "diverged" and "local-only" in c["message"] and "--rollback" in c["message"]
    assert c["target_newest"] == "local-only" and c["common_base"] == "zrelay_1"

    d = by[cases.target("d")]
    assert (d["state"], d["last_run"], d["target_newest"]) == ("missing", None, None)


def test_schema_doc_lists_every_field(cases: Cases) -> None:
    doc = (REPO / "docs" / "status-json.md").read_text()
    documented = set(re.findall(r"^\| `([a-z0-9_]+)`(?:, `([a-z0-9_]+)`)? \|", doc, re.M))
    names = {n for pair in documented for n in pair if n}
    for field in (*ROW_SCHEMA, *LAST_RUN_SCHEMA, *TRANSFER_SCHEMA, *HOLDER_SCHEMA, *LIFECYCLE_SCHEMA):
        assert field in names, f"{field} is not documented in docs/status-json.md"


def test_text_table(cases: Cases) -> None:
    proc = zrelay("--state", str(cases.state), "status", inventory=cases.inv, env={"COLUMNS": "240"})
    assert proc.returncode == 1
    out = proc.stdout
    for text in ("in sync at @zrelay_1", "unreachable", "behind 1: @zrelay_1 → @zrelay_2",
                 "diverged after @zrelay_1: target has @local-only", "missing: source at @zrelay_1", "ok ", " ago"):
        assert text in out, f"{text!r} missing from:\n{out}"
    assert out.count("in sync at @zrelay_1") == 1, out   # the S3 target is unreachable here


def test_text_in_a_pipe_and_at_80_columns(cases: Cases) -> None:
    """A pipe gets whole lines (no padding, no wrapping); 80 columns get rows that fit, names whole."""
    names = {"zrelay_1", "zrelay_2", "local-only"}
    pipe = zrelay("--state", str(cases.state), "status", inventory=cases.inv, env={"COLUMNS": ""}).stdout
    assert pipe and not [line for line in pipe.splitlines() if line != line.rstrip()], pipe
    row = next(line for line in pipe.splitlines() if line.startswith(f"  {cases.target('c')} "))
    assert "diverged after @zrelay_1: target has @local-only" in row, pipe
    assert set(re.findall(r"@([\w:.-]+\w)", pipe)) <= names, pipe
    narrow = zrelay("--state", str(cases.state), "status", inventory=cases.inv, env={"COLUMNS": "80"}).stdout
    assert not [line for line in narrow.splitlines() if len(line) > 80], narrow
    assert set(re.findall(r"@([\w:.-]+\w)", narrow)) <= names, narrow   # no name cut at a line's end
    detail = zrelay("--state", str(cases.state), "status", "--detail", inventory=cases.inv).stdout
    assert "common base     @zrelay_1" in detail and "target newest   @local-only" in detail


def test_prometheus_textfile(cases: Cases, tmp_path: Path) -> None:
    prom = tmp_path / "zrelay.prom"
    proc = cases.status("--json", "--prometheus", str(prom))
    assert proc.returncode == 1
    text = prom.read_text()
    assert list(tmp_path.iterdir()) == [prom], "no temporary file left behind"
    a, c = cases.target("a"), cases.target("c")
    assert re.search(rf'^zrelay_lag_seconds\{{job="[^"]+",source="[^"]+",target="{re.escape(a)}",location="vault"\}} 0$',
                     text, re.M)
    assert re.search(rf'^zrelay_state\{{[^}}]*target="{re.escape(c)}"[^}}]*state="diverged"\}} 1$', text, re.M)
    assert re.search(rf'^zrelay_last_success_timestamp_seconds\{{[^}}]*target="{re.escape(a)}"[^}}]*\}} \d+\.\d+$',
                     text, re.M)
    assert re.search(rf'^zrelay_transferred_bytes_total\{{[^}}]*target="{re.escape(a)}"[^}}]*\}} [1-9]\d*$', text, re.M)
    assert "# TYPE zrelay_transferred_bytes_total counter" in text


def test_status_without_a_store(cases: Cases, tmp_path: Path) -> None:
    missing = tmp_path / "no" / "state.db"
    proc = zrelay("--state", str(missing), "status", "--json", inventory=cases.inv)
    rows = json.loads(proc.stdout)
    assert all(r["last_run"] is None and r["transfer"] is None for r in rows)
    assert not missing.exists()


def test_env_var_selects_the_store(cases: Cases) -> None:
    proc = zrelay("status", "--json", inventory=cases.inv, env={"ZRELAY_STATE": str(cases.state)})
    a = next(r for r in json.loads(proc.stdout) if r["target"] == cases.target("a"))
    assert a["last_run"] is not None


@pytest.fixture
def big(lab):  # type: ignore[no-untyped-def]
    """A 128 MiB snapshot (32 MiB on the OpenZFS tier) on nas2 (the pool with most room), replicated
    within nas2; removed afterwards. Returns (source, target, MiB written)."""
    name = lab.unique("big")
    src, dst = f"tank/{name}", f"tank/replica/{name}"
    mib = lab.mib(128, minimum=16)
    make_dataset(lab, "nas2", src, mib=mib, snaps=["zrelay_1"])
    yield src, dst, mib
    lab.destroy("nas2", dst)
    lab.destroy("nas2", src)


def test_transfer_running_in_another_process(lab, big: tuple[str, str, int], tmp_path: Path) -> None:
    """The sync is paused (SIGSTOP) mid-stream while status runs, so the check does not race the transfer."""
    src, dst, mib = big
    inv = write_inventory(tmp_path / "inv.yml", lab, [{"source": f"nas2:{src}", "targets": [f"nas2:{dst}"]}])
    state = tmp_path / "state.db"
    sync = subprocess.Popen([sys.executable, "-m", "zrelay", "-i", str(inv), "--state", str(state), "sync"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc = None
    try:
        deadline = time.monotonic() + 120
        while sync.poll() is None and time.monotonic() < deadline:
            view = read_view(state)
            if view.active and view.active[0].done > 0:
                os.kill(sync.pid, signal.SIGSTOP)
                try:
                    proc = zrelay("--state", str(state), "status", "--json", inventory=inv)
                finally:
                    os.kill(sync.pid, signal.SIGCONT)
                break
            time.sleep(0.05)
    finally:
        out, err = sync.communicate(timeout=300)
    assert sync.returncode == 0, err
    assert proc is not None, "the transfer never showed up in the store"
    running = json.loads(proc.stdout)[0]
    assert running["state"] == "running", running
    t = running["transfer"]
    # the sync holds the target: it is not planned mid-receive (zfs-fuse shows the new dataset without
    # its snapshot, which a plan would call "no-common-base"), the row names the run instead
    assert running["planned_state"] == "busy" and running["holder"]["pid"] == sync.pid, running
    check_schema(running["holder"], HOLDER_SCHEMA, "holder")
    assert t["command"] == "sync" and t["pid"] == sync.pid and t["bytes"] > 0
    assert t["rate"] > 0 and t["target_host"] == "nas2" and src in t["stream"]
    assert proc.returncode == 0, "a running transfer is not an alert"
    done = json.loads(zrelay("--state", str(state), "status", "--json", inventory=inv).stdout)[0]
    assert done["state"] == "in-sync" and done["transfer"] is None and done["last_run"]["outcome"] == "ok"
    assert done["last_run"]["bytes"] >= mib * 1024 * 1024


def test_status_from_two_processes_equals_one(lab, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """``--processes 2`` splits the jobs by source host (nas1's, nas2's) and gives the rows one
    process gives, in the same order."""
    name = lab.unique("sp")
    pools = lab.pools
    try:
        for host, ds in (("nas1", f"{pools['nas1']}/{name}a"), ("nas2", f"{pools['nas2']}/{name}b"),
                         ("nas1", f"{pools['nas1']}/{name}c")):
            make_dataset(lab, host, ds, snaps=["zrelay_1"])
        jobs = [{"source": f"nas1:{pools['nas1']}/{name}a", "targets": [f"vault:{pools['vault']}/{name}a"]},
                {"source": f"nas2:{pools['nas2']}/{name}b", "targets": [f"vault:{pools['vault']}/{name}b"]},
                {"source": f"nas1:{pools['nas1']}/{name}c", "targets": [f"vault:{pools['vault']}/{name}c"]}]
        inv = write_inventory(tmp_path / "inv.yml", lab, jobs)
        state = str(tmp_path / "state.db")
        assert zrelay("--state", state, "sync", f"nas1:{pools['nas1']}/{name}a", inventory=inv).returncode == 0

        def rows(*args: str) -> list[dict]:
            proc = zrelay("--state", state, "status", "--json", *args, inventory=inv)
            assert proc.returncode == 0, proc.stderr
            return [{k: v for k, v in r.items() if k not in ("checked_at", "base_age_seconds")}
                    for r in json.loads(proc.stdout)]
        one = rows("--processes", "1")
        assert [(r["job"], r["state"]) for r in one] == [
            (j["source"], s) for j, s in zip(jobs, ("in-sync", "missing", "missing"))]
        assert rows("--processes", "2") == one
        bad = zrelay("status", "--processes", "0", inventory=inv)
        assert bad.returncode == 2 and "--processes" in bad.stderr
    finally:
        for host, ds in (("nas1", f"{pools['nas1']}/{name}a"), ("nas2", f"{pools['nas2']}/{name}b"),
                         ("nas1", f"{pools['nas1']}/{name}c"), ("vault", f"{pools['vault']}/{name}a")):
            lab.destroy(host, ds)
