"""RPO and coverage: the ``rpo`` job key and ``zrelay_rpo`` host/group variable (read, inherited,
refused at file:line:column), the coverage rule of ``zrelay audit`` (protected, replica,
unprotected), the RPO breach rule of status rows, and the audit command's text and exit code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zrelay.cli import audit as cli_audit
from zrelay.cli import layout
from zrelay.errors import EXIT_JOB_FAILED, EXIT_OK, UsageError
from zrelay.inventory import load_inventory, loads_inventory, validate_inventory_text
from zrelay.inventory.model import Endpoint, Job
from zrelay.standing import Standing
from zrelay.status.audit import (PROTECTED, REPLICA, UNPROTECTED, Breach, HostCoverage, breaches,
                                 classify, coverage, covers)
from zrelay.status.report import failed_report, location_row, rpo_breach

REPO = Path(__file__).resolve().parents[2]

HEAD = """\
all:
  vars: {zrelay_rpo: 2h}
  children:
    storage:
      vars: {rpo: 30m}
      hosts:
        nas1: {address: 192.0.2.1}
    vaults:
      hosts:
        vault: {address: 192.0.2.3}
        nas2: {address: 192.0.2.2, zrelay_rpo: 1d}
zrelay:
  jobs:
"""


def inv(*jobs: str) -> str:
    return HEAD + "".join(f"    - {job}\n" for job in jobs)


def at(text: str, needle: str) -> str:
    """``line:column`` (1-based) of the only occurrence of ``needle`` in ``text``."""
    assert text.count(needle) == 1, needle
    before = text[:text.index(needle)]
    return f"{before.count(chr(10)) + 1}:{len(before) - before.rfind(chr(10))}"


# --------------------------------------------------------------------------- the inventory key


def test_rpo_from_job_host_and_groups() -> None:
    inventory = loads_inventory(inv(
        "{source: nas1:tank/a, targets: [vault:backup/a], rpo: 15m}",   # its own
        "{source: nas1:tank/b, targets: [vault:backup/b]}",             # group storage's rpo
        "{source: nas2:tank/c, targets: [vault:backup/c]}",             # host nas2's zrelay_rpo
        "{source: vault:backup/d, targets: [nas2:tank/d]}",             # group all's zrelay_rpo
    ), "inv.yml")
    assert [j.rpo for j in inventory.jobs] == [900, 1800, 86400, 7200]
    assert inventory.hosts["nas1"].rpo == 1800


def test_zrelay_rpo_from_an_ansible_inventory(tmp_path: Path) -> None:
    (tmp_path / "hosts").write_text("[storage]\nnas1 ansible_host=192.0.2.1\n[storage:vars]\nzrelay_rpo=2h\n")
    (tmp_path / "zrelay.yml").write_text("zrelay:\n  include: [hosts]\n  jobs:\n"
                                         "    - {source: nas1:tank/a, targets: [nas1:tank/b]}\n")
    assert load_inventory(tmp_path / "zrelay.yml").jobs[0].rpo == 7200


def test_no_rpo_anywhere_is_none() -> None:
    text = "all:\n  hosts:\n    a: {address: 192.0.2.1}\nzrelay:\n  jobs:\n    - {source: a:t/x, targets: [a:t/y]}\n"
    assert loads_inventory(text, "inv.yml").jobs[0].rpo is None


@pytest.mark.parametrize("text, where, message", [
    (inv("{source: nas1:tank/a, targets: [vault:backup/a], rpo: 1x}"), "1x}",
     "rpo: expected a duration such as 30s, 15m, 1h, 1d or 1w, got '1x'"),
    (inv("{source: nas1:tank/a, targets: [vault:backup/a], rpo: 60}"), "60}",
     "rpo: expected a duration such as 30s, 15m, 1h, 1d or 1w, got the integer 60"),
    (inv("{source: nas1:tank/a, targets: [vault:backup/a], rop: 1h}"), "rop:",
     "unknown key 'rop' in job (did you mean 'rpo'?)"),
    (HEAD.replace("zrelay_rpo: 1d", "zrelay_rpo: soon") + "    - {source: nas1:t/a, targets: [vault:b/a]}\n",
     "soon", "zrelay_rpo: expected a duration"),
    (HEAD.replace("{rpo: 30m}", "{rpo: 0s}") + "    - {source: nas1:t/a, targets: [vault:b/a]}\n",
     "0s}", "rpo: 0s is too short"),
])
def test_bad_rpo_is_one_located_error(text: str, where: str, message: str) -> None:
    where = at(text, where)
    errors = validate_inventory_text(text, "inv.yml")
    assert len(errors) == 1, [e.render() for e in errors]
    assert (errors[0].file, f"{errors[0].line}:{errors[0].column}") == ("inv.yml", where), errors[0].render()
    assert message in errors[0].message


def test_bad_rpo_exits_2_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "zrelay.yml"
    path.write_text(inv("{source: nas1:tank/a, targets: [vault:backup/a], rpo: 1x}"))
    done = subprocess.run([sys.executable, "-m", "zrelay", "-i", str(path), "audit"],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 2, done.stderr
    assert f"{path}:{at(path.read_text(), '1x}')}: rpo: expected a duration" in done.stderr
    assert "Traceback" not in done.stderr


# --------------------------------------------------------------------------- coverage


def job(source: str, *targets: str, recursive: bool = False, name: str | None = None) -> Job:
    return Job(name or source, Endpoint.parse(source), recursive,
               targets=tuple(Endpoint.parse(t) for t in targets))


def test_coverage_sorts_sources_replicas_and_the_rest() -> None:
    jobs = [job("nas1:tank/data", "nas2:tank/replica/data", recursive=True),
            job("nas1:tank/home", "vault:backup/home")]
    listings = {
        "nas1": ["tank", "tank/data", "tank/data/docs", "tank/database", "tank/home", "tank/home/ann"],
        "nas2": ["tank", "tank/replica", "tank/replica/data", "tank/replica/data/docs"],
        "vault": ["backup", "backup/home", "backup/home/ann"],
    }
    got = coverage(listings, jobs)
    assert got["nas1"] == HostCoverage("nas1", ("tank/data", "tank/data/docs", "tank/home"), (),
                                       ("tank", "tank/database", "tank/home/ann"))
    # tank/database is not inside tank/data (a name prefix is not a parent)
    assert got["nas2"] == HostCoverage("nas2", (), ("tank/replica/data", "tank/replica/data/docs"),
                                       ("tank", "tank/replica"))
    # a non-recursive job's target does not cover the target's children
    assert got["vault"].replicas == ("backup/home",)
    assert got["vault"].unprotected == ("backup", "backup/home/ann")


def test_excluded_datasets_are_unprotected_as_a_sync_would_leave_them() -> None:
    data = Job("data", Endpoint.parse("nas1:tank/data"), True, targets=(Endpoint.parse("vault:backup/data"),),
               exclude=("scratch", "*/cache"))
    listing = {"tank": None, "tank/data": None, "tank/data/scratch": None, "tank/data/scratch/x": None,
               "tank/data/home": None, "tank/data/home/cache": None, "tank/data/vm": "false",
               "tank/data/vm/disk": "true"}
    got = coverage({"nas1": listing}, [data])["nas1"]
    assert got.protected == ("tank/data", "tank/data/home")
    assert got.unprotected == ("tank", "tank/data/home/cache", "tank/data/scratch", "tank/data/scratch/x",
                               "tank/data/vm", "tank/data/vm/disk")   # zrelay:sync=true below an opt-out: still out
    # a listing of names alone knows no property: only the globs apply
    names = coverage({"nas1": list(listing)}, [data])["nas1"]
    assert "tank/data/vm" in names.protected and "tank/data/scratch" in names.unprotected


def test_the_audit_listing_carries_the_sync_property() -> None:
    from zrelay.zfs import commands, parse
    assert commands.datasets_argv() == ["zfs", "list", "-H", "-o", "name,zrelay:sync", "-t", "filesystem,volume"]
    assert parse.parse_datasets("tank\t-\ntank/a\tfalse\n\n") == {"tank": None, "tank/a": "false"}
    with pytest.raises(ValueError):
        parse.parse_datasets("tank\n")


def test_a_cascade_middle_is_protected_not_a_replica() -> None:
    jobs = [job("nas1:tank/a", "nas2:tank/a"), job("nas2:tank/a", "vault:backup/a")]
    assert classify("tank/a", covers(jobs)["nas2"]) == PROTECTED
    assert classify("backup/a", covers(jobs)["vault"]) == REPLICA


def test_a_host_without_jobs_is_all_unprotected() -> None:
    assert coverage({"x": ["p", "p/q"]}, []) == {"x": HostCoverage("x", (), (), ("p", "p/q"))}


names = st.lists(st.sampled_from(["a", "b", "ab", "c"]), min_size=1, max_size=4).map("/".join)
datasets = st.builds(lambda pool, rest: pool + ("/" + rest if rest else ""), st.sampled_from(["p", "q"]),
                     st.one_of(st.just(""), names))


@given(st.lists(datasets, max_size=25),
       st.lists(st.tuples(datasets, datasets, st.booleans(), st.sampled_from(["h1", "h2"])), max_size=5))
def test_coverage_properties(listed: list[str], specs: list[tuple[str, str, bool, str]]) -> None:
    jobs = [job(f"h1:{src}", f"{host}:{dst}", recursive=rec, name=str(i))
            for i, (src, dst, rec, host) in enumerate(specs)]
    got = coverage({"h1": listed, "h2": listed}, jobs)
    for host, c in got.items():
        kinds = [set(c.protected), set(c.replicas), set(c.unprotected)]
        # each dataset is in exactly one kind: never both protected and unprotected
        assert sum(len(k) for k in kinds) == len(set(listed))
        assert set().union(*kinds) == set(listed)
        assert not (kinds[0] & kinds[2]) and not (kinds[0] & kinds[1]) and not (kinds[1] & kinds[2])
        for d in listed:
            for j in jobs:
                if j.source.host == host and (d == j.source.dataset or
                                              (j.recursive and d.startswith(j.source.dataset + "/"))):
                    assert d in c.protected, (d, j)
                target = j.targets[0]
                assert isinstance(target, Endpoint)
                if target.host == host and (d == target.dataset or
                                            (j.recursive and d.startswith(target.dataset + "/"))):
                    assert d not in c.unprotected, (d, j)


# --------------------------------------------------------------------------- the RPO rule


@pytest.mark.parametrize("rpo, age, breach", [
    (None, 10, None), (None, None, None), (3600, 3599, False), (3600, 3600, False), (3600, 3601, True),
    (1, None, True),
])
def test_rpo_breach_rule(rpo: int | None, age: int | None, breach: bool | None) -> None:
    assert rpo_breach(rpo, age) is breach


def test_rows_carry_the_rpo_and_breaches_pick_them() -> None:
    j = Job("j", Endpoint.parse("nas1:tank/a"), targets=(Endpoint.parse("nas2:tank/a"),), rpo=60)
    old = Standing(None, None, 0, None, 3600)
    fresh = Standing(None, None, 0, None, 5)
    rows = [location_row(j, "nas2:tank/a", "nas2", "in-sync", "", old, 0, 1, None, 0.0),
            location_row(j, "nas2:tank/b", "nas2", "in-sync", "", fresh, 0, 1, None, 0.0),
            failed_report(j, Endpoint.parse("nas2:tank/a"), "unreachable", "down", 0.0).row]
    assert [(r.rpo_seconds, r.rpo_breach) for r in rows] == [(60, True), (60, False), (60, None)]
    assert breaches(rows) == [Breach("j", "nas1:tank/a", "nas2:tank/a", "in-sync", 60, 3600, None)]


# --------------------------------------------------------------------------- the command


def test_select_hosts_by_host_or_group_and_refuse_unknown() -> None:
    inventory = loads_inventory(inv("{source: nas1:tank/a, targets: [vault:backup/a]}"), "inv.yml")
    assert cli_audit.select_hosts(inventory, []) == ["nas1", "vault", "nas2"]
    assert cli_audit.select_hosts(inventory, ["vaults"]) == ["vault", "nas2"]
    with pytest.raises(UsageError, match="'vualt' is no host or group.*did you mean 'vault'"):
        cli_audit.select_hosts(inventory, ["vualt"])
    touching = cli_audit.jobs_touching(inventory.jobs, ["vault"])
    assert [j.name for j in touching] == ["nas1:tank/a"]
    assert cli_audit.jobs_touching(inventory.jobs, ["nas2"]) == []


def _audit(unprotected: tuple[str, ...] = (), breach: bool = False) -> cli_audit.Audit:
    hosts = [cli_audit.HostResult("nas1", HostCoverage("nas1", ("tank/data",), (), unprotected)),
             cli_audit.HostResult("vault", None, "vault: connection refused")]
    found = [Breach("nas1:tank/data", "nas1:tank/data", "vault:backup/nas1/data", "behind", 3600, 8 * 86400,
                    "zrelay_1")] if breach else []
    return cli_audit.Audit(hosts, found, [])


def test_exit_code() -> None:
    ok = cli_audit.Audit([cli_audit.HostResult("a", HostCoverage("a", ("p",), ("q",), ()))], [], [])
    assert cli_audit.exit_code(ok) == EXIT_OK
    assert cli_audit.exit_code(cli_audit.Audit(ok.hosts, [], [])) == EXIT_OK
    assert cli_audit.exit_code(_audit()) == EXIT_JOB_FAILED   # a host that did not answer
    only_unprotected = cli_audit.Audit(ok.hosts + [cli_audit.HostResult("b", HostCoverage("b", (), (), ("x",)))],
                                       [], [])
    assert cli_audit.exit_code(only_unprotected) == EXIT_JOB_FAILED
    assert cli_audit.exit_code(cli_audit.Audit(ok.hosts, _audit(breach=True).breaches, [])) == EXIT_JOB_FAILED


@pytest.mark.parametrize("width", [80, 120, 200, None])
def test_text_fits_the_width(width: int | None) -> None:
    audit = _audit(("tank", "tank/" + "x" * 30), breach=True)
    lines = [layout.plain(line) for line in cli_audit.text_lines(audit, width)]
    assert lines[0].startswith("zrelay audit: 2 hosts, 2 unprotected datasets, 1 target past the RPO")
    assert "  tank" in lines and "  tank/" + "x" * 30 in lines
    assert any("vault" in line and "connection refused" in line for line in lines)
    if width is not None:
        assert all(len(line) <= width for line in lines), lines
    table = layout.Table(cli_audit.BREACH_COLUMNS, cli_audit.breach_rows(audit),
                         steps=[("state", layout.DROP), ("age", 1)])
    assert table.fit(width)
    row = layout.plain(table.row(0))
    assert "vault:backup/nas1/data" in row and "8d" in row and "1h" in row
    if width is not None:
        assert len(row) <= width


def test_json_shape() -> None:
    got = cli_audit.to_json(_audit(("tank",), breach=True))
    assert got["hosts"][0] == {"host": "nas1", "error": None, "unprotected": ["tank"],
                               "protected": ["tank/data"], "replicas": []}
    assert got["hosts"][1]["unprotected"] is None and "refused" in got["hosts"][1]["error"]
    assert got["rpo_breaches"][0]["base_age_seconds"] == 8 * 86400
    assert got["unknown"] == []
