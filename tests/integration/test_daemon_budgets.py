"""The daemon's budgets with real concurrency: four extra zfs-fuse hosts in two groups
(``zfslab.py up --hosts N``), eight jobs due at once, each snapshot held for a moment by its
pre-snapshot hook, and ``max_running``, ``per_host`` and ``group_limits`` read back from the order
of the daemon's own start and finish lines (no timing: only which runs overlapped).

Fuse tier only: the N-host lab is zfs-fuse namespaces on 127.0.0.N.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.integration.test_daemon import Daemon
from tests.labfixture import REPO, load_zfslab

JOBS_PER_HOST = 2


def zfslab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "lab" / "zfslab.py"), *args], capture_output=True,
                          text=True, timeout=600, stdin=subprocess.DEVNULL)


def ssh(lab: Any, host: str, command: str) -> None:
    done = subprocess.run(["ssh", "-F", str(lab.ssh_config), host, command], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr


@pytest.fixture
def extra_hosts(lab: Any) -> Any:
    """Four extra hosts after any that another session runs: two in site_a, two in site_b."""
    z: ModuleType = load_zfslab()
    running = lab.status()
    top = max([z.FIRST_EXTRA - 1, *(z.extra_number(h) for h in running if h not in lab.hosts)])
    new = [z.extra_name(top + n) for n in range(1, 5)]
    try:
        up = zfslab("up", "--hosts", str(top + 4))
        assert up.returncode == 0, up.stderr
        yield z, new
    finally:
        zfslab("down", "--only-extra", "--purge", *new)   # fresh pools for whoever uses these numbers next


def overlaps(log: str, groups: dict[str, str]) -> tuple[int, dict[str, int], dict[str, int]]:
    """The most runs at once over the fleet, per group and per host, replaying the log's order."""
    running: dict[str, str] = {}   # job -> host
    most, per_group, per_host = 0, {g: 0 for g in set(groups.values())}, {h: 0 for h in groups}
    for kind, job in re.findall(r"run (started|finished) job=(\S+) kind=snapshot", log):
        if kind == "started":
            running[job] = job.split("-")[0]
        else:
            running.pop(job)
        most = max(most, len(running))
        for group in per_group:
            per_group[group] = max(per_group[group], sum(groups[h] == group for h in running.values()))
        for host in per_host:
            per_host[host] = max(per_host[host], sum(h == host for h in running.values()))
    return most, per_group, per_host


def test_fleet_host_and_group_budgets_hold_under_real_concurrency(lab, extra_hosts, tmp_path):
    z, hosts = extra_hosts
    name = lab.unique()
    groups = {h: z.host_group(h) for h in hosts}
    assert sorted(groups.values()) == ["site_a", "site_a", "site_b", "site_b"]
    jobs = []
    for host in hosts:
        for n in range(JOBS_PER_HOST):
            ssh(lab, host, f"zfs create -p tank/{name}/d{n}")
            jobs.append({"name": f"{host}-{name}-{n}", "source": f"{host}:tank/{name}/d{n}",
                         "snapshot": {"every": "1h", "name": "auto_%Y%m%d-%H%M%S"},
                         "hooks": {"pre_snapshot": "sleep 2"}})
    inventory = {
        "all": {"vars": {"user": "root", "identity_file": str(lab.key), "known_hosts": str(lab.known_hosts)},
                "children": {g: {"hosts": {h: {"address": z.host_spec(h)[0]} for h in hosts if groups[h] == g}}
                             for g in ("site_a", "site_b")}},
        "zrelay": {"daemon": {"max_running": 3, "per_host": 1, "group_limits": {"site_a": 1},
                              "survey_every": "1h"},
                   "jobs": jobs},
    }
    inv = tmp_path / "inv.yml"
    inv.write_text(yaml.safe_dump(inventory, sort_keys=False))
    daemon = Daemon(inv, tmp_path / "state.db", tmp_path / "daemon.log")
    try:
        daemon.wait_log(r"run finished job=\S+ kind=snapshot outcome=ok", count=len(jobs), deadline=240)
    finally:
        assert daemon.stop() == 0
    log = daemon.log()
    most, per_group, per_host = overlaps(log, groups)
    # the budgets were reached, never passed: site_a one at a time, site_b one per host, three in all
    assert (most, per_group, set(per_host.values())) == (3, {"site_a": 1, "site_b": 2}, {1}), log
    for job in jobs:
        assert len(re.findall(rf"run finished job={job['name']} kind=snapshot outcome=ok", log)) == 1
        listed = subprocess.run(["ssh", "-F", str(lab.ssh_config), job["source"].split(":")[0],
                                 f"zfs list -H -t snapshot -o name -r {job['source'].split(':')[1]}"],
                                capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert len(listed.stdout.split()) == 1, listed
