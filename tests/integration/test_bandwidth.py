"""Bandwidth limits on every path: the limit is shown, applied, and the stream is held back.

Only a generous lower bound on the time is checked here (at least 60 % of size / limit: the
throttle engaged); how close each path keeps to its limit is measured in bench/ (``bandwidth``).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.integration.helpers import make_dataset, snapshots, write_inventory, zrelay
from tests.integration.test_s3 import Case
from tests.s3fixture import s3  # noqa: F401  (the fixture)
from zrelay.units import human_rate

pytestmark = [pytest.mark.lab]

MiB = 1 << 20
#: How long each limited stream should take at its limit: long enough that an unthrottled
#: stream (plus a run's own overhead) cannot pass the 60 % bound by accident.
SECONDS = 6.0


def _limit_for(mib: int, seconds: float = SECONDS) -> int:
    """A limit in whole KiB/s that moves ``mib`` MiB in about ``seconds``."""
    return max(64, int(mib * 1024 / seconds)) * 1024


def _kib(rate: int) -> str:
    return f"{rate // 1024}K"


def _held_back(state: Path, rate: int, streams: int = 1) -> None:
    """The run's streams (as its state store recorded them: from the first one's start to the
    last one's end) took at least 60 % of their bytes / ``rate``: the throttle engaged."""
    with sqlite3.connect(state) as db:
        rows = db.execute("SELECT started, finished, done FROM transfers").fetchall()
    assert len(rows) == streams and all(finished is not None for _, finished, _ in rows), rows
    moved = sum(done for _, _, done in rows)
    took = max(finished for _, finished, _ in rows) - min(started for started, _, _ in rows)
    assert moved > 0
    assert took >= 0.6 * moved / rate, f"{moved} bytes at most {rate} B/s ({streams} stream(s)) took only {took:.2f} s"


@pytest.fixture
def agent(lab: Any, tmp_path: Path) -> Iterator[dict[str, str]]:
    """An ssh-agent holding the lab key (direct streams log in with it), stopped afterwards."""
    sock = tmp_path / "agent.sock"
    out = subprocess.run(["ssh-agent", "-a", str(sock), "-s"], capture_output=True, text=True, check=True).stdout
    pid = int(out.split("SSH_AGENT_PID=")[1].split(";")[0])
    env = {"SSH_AUTH_SOCK": str(sock)}
    try:
        subprocess.run(["ssh-add", "-q", str(lab.key)], env={**os.environ, **env}, check=True, capture_output=True)
        yield env
    finally:
        os.kill(pid, 15)


def test_relay_stream_is_held_to_the_job_limit(lab: Any, tmp_path: Path) -> None:
    name = lab.unique("bw")
    src, dst = f"{lab.pools['nas1']}/{name}", f"{lab.pools['nas2']}/{name}r"
    mib = lab.mib(6, minimum=2)
    make_dataset(lab, "nas1", src, mib=mib, snaps=["zrelay_1"])
    rate = _limit_for(mib)
    inv = write_inventory(tmp_path / "inv.yml", lab, [{"source": f"nas1:{src}", "targets": [f"nas2:{dst}"],
                                                       "bandwidth": _kib(rate)}])
    try:
        dry = zrelay("sync", "--dry-run", inventory=inv)
        assert dry.returncode == 0, dry.stderr
        shown = human_rate(rate)   # the dry run's own units (KiB/s for the OpenZFS tier's smaller data)
        assert f"bandwidth {shown} (job {shown})" in dry.stdout
        plan = json.loads(zrelay("sync", "--dry-run", "--json", inventory=inv).stdout)
        stream = next(a["stream"] for a in plan[0]["actions"] if a["kind"] == "stream")
        assert stream["bandwidth"] == rate

        state = tmp_path / "state.db"
        run = zrelay("sync", inventory=inv, env={"ZRELAY_STATE": str(state)})
        assert run.returncode == 0, run.stderr + run.stdout
        _held_back(state, rate)
        assert snapshots(lab, "nas2", dst) == snapshots(lab, "nas1", src)
    finally:
        lab.destroy("nas2", dst)
        lab.destroy("nas1", src)


def test_direct_stream_carries_the_limiter_in_its_pipeline(lab: Any, tmp_path: Path,
                                                          agent: dict[str, str]) -> None:
    name = lab.unique("bw")
    src, dst = f"{lab.pools['nas1']}/{name}", f"{lab.pools['vault']}/{name}r"
    mib = lab.mib(6, minimum=2)
    make_dataset(lab, "nas1", src, mib=mib, snaps=["zrelay_1"])
    rate = _limit_for(mib)
    # the limit is the target host's (a host variable), the job has none
    inv = write_inventory(tmp_path / "inv.yml", lab, [{"source": f"nas1:{src}", "targets": [f"vault:{dst}"]}],
                          hosts={"nas1": {"direct_known_hosts": str(lab.peer_known_hosts)},
                                 "vault": {"bandwidth": rate}})
    log = tmp_path / "commands.log"
    try:
        dry = zrelay("sync", "--direct", "--dry-run", inventory=inv, env=agent)
        assert dry.returncode == 0, dry.stderr
        assert "(target host vault" in dry.stdout
        pipeline = next(line for line in dry.stdout.splitlines() if "| ssh " in line)
        assert re.search(rf"\| {{ (pv -q -L|mbuffer -q -r) {rate}; echo \"zrelay-stage \d exit \$\?\" >&2; }} \| ssh ",
                         pipeline), pipeline

        state = tmp_path / "state.db"
        run = zrelay("sync", "--direct", inventory=inv,
                     env={**agent, "ZRELAY_COMMAND_LOG": str(log), "ZRELAY_STATE": str(state)})
        assert run.returncode == 0, run.stderr + run.stdout
        _held_back(state, rate)
        assert any(f"-L {rate}" in line or f"-r {rate}" in line for line in log.read_text().splitlines())
        assert snapshots(lab, "vault", dst) == snapshots(lab, "nas1", src)
    finally:
        lab.destroy("vault", dst)
        lab.destroy("nas1", src)


def test_a_group_budget_is_shared_by_its_streams(lab: Any, tmp_path: Path) -> None:
    """Three streams from a host of group ``branch`` share its budget: together they take about as
    long as all their bytes at the budget, each far longer than it would alone."""
    name = lab.unique("bw")
    mib = lab.mib(4, minimum=1)
    sources = [f"{lab.pools['nas1']}/{name}{i}" for i in range(3)]
    targets = [f"{lab.pools['vault']}/{name}{i}r" for i in range(3)]
    # 12 s for the three at the budget: 7.2 s is the bound, each alone at the budget would take 4 s
    budget = _limit_for(3 * mib, 2 * SECONDS)
    for src in sources:
        make_dataset(lab, "nas1", src, mib=mib, snaps=["zrelay_1"])
    inv = write_inventory(
        tmp_path / "inv.yml", lab, [{"source": f"nas1:{s}", "targets": [f"vault:{t}"]} for s, t in zip(sources, targets)],
        hosts={"nas1": {"sends": 3}, "vault": {"receives": 3}},
        settings={"bandwidth_groups": {"branch": budget}})
    text = inv.read_text().replace("all:\n", f"all:\n  children:\n    branch:\n      hosts:\n        nas1: {{}}\n", 1)
    inv.write_text(text)
    try:
        dry = zrelay("sync", "--dry-run", inventory=inv)
        assert dry.returncode == 0, dry.stderr
        assert f"group branch {human_rate(budget)} shared" in dry.stdout

        state = tmp_path / "state.db"
        run = zrelay("sync", inventory=inv, env={"ZRELAY_STATE": str(state)})
        assert run.returncode == 0, run.stderr + run.stdout
        _held_back(state, budget, streams=3)
        for src, dst in zip(sources, targets):
            assert snapshots(lab, "vault", dst) == snapshots(lab, "nas1", src)
    finally:
        for dst in targets:
            lab.destroy("vault", dst)
        for src in sources:
            lab.destroy("nas1", src)


@pytest.fixture
def case(lab: Any, s3: Any, tmp_path: Path) -> Iterator[Case]:
    c = Case(lab, s3, tmp_path)
    try:
        yield c
    finally:
        c.cleanup()


def test_s3_push_and_restore_are_held_to_the_targets_limit(case: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    lab = case.lab
    mib = lab.mib(6, minimum=2)
    make_dataset(lab, "nas1", case.src, mib=mib, snaps=["s1"])
    rate = _limit_for(mib)
    case.write_inventory(bandwidth=_kib(rate))
    shown = f"bandwidth {human_rate(rate)} (S3 target offsite"

    dry = case.ok("s3-push", "--dry-run")
    assert shown in dry.stdout
    state = case.tmp / "state.db"
    monkeypatch.setenv("ZRELAY_STATE", str(state))
    push = json.loads(case.ok("s3-push", "--json").stdout)
    assert push[0]["outcome"] == "ok", push
    assert push[0]["steps"][0]["bandwidth"] == rate
    _held_back(state, rate)

    dst = case.target_dataset("vault")
    source = f"nas1:{case.src}"
    plan = case.ok("s3-restore", "offsite", source, "--to", f"vault:{dst}", "--dry-run")
    assert shown in plan.stdout
    state = case.tmp / "restore.db"
    monkeypatch.setenv("ZRELAY_STATE", str(state))
    restored = json.loads(case.ok("s3-restore", "offsite", source, "--to", f"vault:{dst}", "--json").stdout)
    restored = restored[0] if isinstance(restored, list) else restored
    assert restored["outcome"] == "ok", restored
    _held_back(state, rate)
    assert snapshots(lab, "vault", dst) == snapshots(lab, "nas1", case.src)
