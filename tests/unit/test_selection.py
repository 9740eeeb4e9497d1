"""Which datasets of a recursive job's source it covers (zrelay.selection), the ``exclude:`` key
that feeds it, and every caller that must ask it: the planner, the snapshot step, the prune."""

from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zrelay import selection
from zrelay.engine.host_receiver import make_plans, summarise
from zrelay.engine.snapshots import plan_snapshot, snapshot_argvs
from zrelay.inventory import loads_inventory, validate_inventory_text
from zrelay.inventory.model import Endpoint, Inventory, Job
from zrelay.plan import PlanKind, plan_recursive
from zrelay.zfs.model import Capabilities, DatasetState, Snapshot

OZ = Capabilities.openzfs("2.3.2")
FUSE = Capabilities.zfs_fuse()


def tree(*names: str, off: tuple[str, ...] = (), snaps: bool = True) -> dict[str, DatasetState]:
    """A source listing: each dataset with one snapshot; ``off`` have zrelay:sync=false."""
    out = {}
    for i, name in enumerate(names):
        shots = (Snapshot(name, "s1", guid=1000 + i, createtxg=5),) if snaps else ()
        out[name] = DatasetState(name, snapshots=shots, sync_property="false" if name in off else None)
    return out


SOURCE = tree("tank/data", "tank/data/tmp", "tank/data/tmp/x", "tank/data/home", "tank/data/home/cache",
              "tank/data/vm", "tank/data/vm/scratch-1", "tank/data/vm/web", "tank/data/vm/web/cache")


def job(exclude: tuple[str, ...] = (), recursive: bool = True, **kw: Any) -> Job:
    return Job("j", Endpoint("nas1", "tank/data"), recursive, targets=(Endpoint("vault", "backup/data"),),
               exclude=exclude, **kw)


# --------------------------------------------------------------------------- the decision


def test_nothing_excluded_covers_the_whole_tree_parents_first() -> None:
    chosen = selection.of_job(job(), SOURCE)
    assert chosen.everything and chosen.excluded == ()
    assert chosen.included == tuple(selection.tree_order(SOURCE))
    assert chosen.included[0] == "tank/data"


def test_globs_match_the_relative_path_and_take_the_subtree() -> None:
    chosen = selection.of_job(job(("tmp", "*/cache", "vm/scratch-*")), SOURCE)
    why = {e.dataset: e.because for e in chosen.excluded}
    assert why == {
        "tank/data/tmp": "excluded by 'tmp'",
        "tank/data/tmp/x": "inside tank/data/tmp, excluded by 'tmp'",
        "tank/data/home/cache": "excluded by '*/cache'",
        "tank/data/vm/scratch-1": "excluded by 'vm/scratch-*'",
        "tank/data/vm/web/cache": "excluded by '*/cache'",   # fnmatch's * crosses '/'
    }
    assert chosen.included == ("tank/data", "tank/data/home", "tank/data/vm", "tank/data/vm/web")


def test_a_glob_never_matches_the_source_itself() -> None:
    assert selection.of_job(job(("*",)), SOURCE).included == ("tank/data",)


def test_the_property_opts_a_dataset_and_its_subtree_out() -> None:
    source = tree("tank/data", "tank/data/a", "tank/data/a/b", "tank/data/c", off=("tank/data/a",))
    # an explicit zrelay:sync=true below an opted-out parent does not bring the child back
    source["tank/data/a/b"] = DatasetState("tank/data/a/b", sync_property="true")
    chosen = selection.of_job(job(), source)
    assert [(e.dataset, e.because) for e in chosen.excluded] == [
        ("tank/data/a", "zrelay:sync=false"), ("tank/data/a/b", "inside tank/data/a, zrelay:sync=false")]
    assert chosen.included == ("tank/data", "tank/data/c")


def test_only_false_opts_out() -> None:
    for value in ("true", "off", "False", "-", None):
        source = {"tank/data": DatasetState("tank/data", sync_property=value)}
        assert selection.of_job(job(recursive=False), source).included == ("tank/data",), value


def test_a_non_recursive_job_honours_the_property_of_its_dataset() -> None:
    source = tree("tank/data", "tank/data/child", off=("tank/data",))
    chosen = selection.of_job(job(recursive=False), source)
    assert chosen.included == () and [e.dataset for e in chosen.excluded] == ["tank/data"]


def test_absent_datasets_are_neither_covered_nor_excluded() -> None:
    chosen = selection.of_job(job(), {"tank/data": DatasetState.absent("tank/data")})
    assert chosen.included == () and chosen.excluded == ()


def test_a_narrowed_job_keeps_the_meaning_of_its_globs() -> None:
    narrowed = job(("vm/scratch-*",)).narrowed("tank/data/vm")
    assert narrowed.exclude_base == "tank/data"
    sub = {n: s for n, s in SOURCE.items() if n.startswith("tank/data/vm")}
    chosen = selection.of_job(narrowed, sub)
    assert [e.dataset for e in chosen.excluded] == ["tank/data/vm/scratch-1"]
    assert selection.of_job(job(("vm",)).narrowed("tank/data/vm"), sub).included == ()


def test_why_decides_unlisted_names_and_target_twins_alike() -> None:
    chosen = selection.of_job(job(("tmp",)), tree("tank/data", "tank/data/tmp", "tank/data/a",
                                                  off=("tank/data/a",)))
    assert chosen.why("tank/data/tmp/new") == "excluded by 'tmp'"          # a child listed later
    assert chosen.why("tank/data/a/new") == "zrelay:sync=false"            # under an opted-out parent
    assert chosen.why("tank/data/b") is None and chosen.why("tank/other") is None
    target = tree("backup/data", "backup/data/tmp", "backup/data/a", "backup/data/b")
    assert list(chosen.keep_target("backup/data", target)) == ["backup/data", "backup/data/b"]


def test_cover_snapshots_exactly_the_covered_datasets() -> None:
    chosen = selection.of_job(job(("tmp", "vm/scratch-*")), SOURCE)
    assert chosen.cover() == [("tank/data", False), ("tank/data/home", True), ("tank/data/vm", False),
                              ("tank/data/vm/web", True)]


names = st.lists(st.lists(st.sampled_from("abc"), min_size=1, max_size=4).map("/".join),
                 max_size=12, unique=True)


@given(names, st.lists(st.sampled_from(["a", "b", "*/c", "a/*", "?", "c"]), max_size=3, unique=True),
       st.sets(st.sampled_from(["a", "b", "a/b", "c/a"])))
def test_properties_of_the_decision(rels: list[str], globs: list[str], off: set[str]) -> None:
    """Every listed dataset is covered or excluded, never both; a covered dataset's parent is
    covered; cover() with -r reaches exactly the covered datasets; why() agrees with choose()."""
    names_ = ["tank/data", *(f"tank/data/{r}" for r in rels)]
    # every parent listed, as zfs lists them
    full = set()
    for n in names_:
        parts = n.split("/")
        full.update("/".join(parts[:i]) for i in range(2, len(parts) + 1))
    source = {n: DatasetState(n, sync_property="false" if n.removeprefix("tank/data/") in off else None)
              for n in full}
    chosen = selection.of_job(job(tuple(globs)), source)
    out = {e.dataset for e in chosen.excluded}
    assert set(chosen.included) | out == full and not set(chosen.included) & out
    for n in chosen.included:
        assert n == "tank/data" or n.rsplit("/", 1)[0] in chosen.included
        assert chosen.why(n) is None
    for n in out:
        assert chosen.why(n) is not None
    reached = set()
    for ds, recursive in chosen.cover():
        reached |= {n for n in full if n == ds or (recursive and n.startswith(ds + "/"))}
    assert reached == set(chosen.included)


# --------------------------------------------------------------------------- its callers


def test_plan_recursive_plans_only_what_the_selection_covers() -> None:
    chosen = selection.of_job(job(("tmp",)), SOURCE)
    plans = plan_recursive(dict(SOURCE), {}, "tank/data", "backup/data", selection=chosen)
    assert [p.source for p in plans] == list(chosen.included)
    assert all(p.kind is PlanKind.FULL for p in plans)
    assert not any("tmp" in p.target for p in plans)
    # without a selection it still honours the property
    opted = tree("tank/data", "tank/data/a", off=("tank/data/a",))
    assert [p.source for p in plan_recursive(opted, {}, "tank/data", "backup/data")] == ["tank/data"]


def test_make_plans_and_the_summary() -> None:
    plans = make_plans(job(("tmp", "*/cache")), Endpoint("vault", "backup/data"), SOURCE, {},
                       rollback=False, resume_supported=False, source_host="nas1", target_host="vault")
    assert len(plans) == 5 and summarise(plans, 4) == "5 datasets: 5 full, 4 excluded"
    opted = tree("tank/data", off=("tank/data",))
    assert make_plans(job(recursive=False), Endpoint("vault", "backup/data"), opted, {}, rollback=False,
                      resume_supported=False, source_host="nas1", target_host="vault") == []
    assert summarise([], 1) == "nothing to replicate: every dataset is excluded (1 excluded)"


def fleet(inventory: Inventory) -> Any:
    return cast(Any, SimpleNamespace(inventory=inventory, host=lambda name: SimpleNamespace(
        name=name, command=lambda argv: " ".join(argv))))


INVENTORY = loads_inventory("""\
all:
  hosts:
    nas1: {address: 192.0.2.1}
    vault: {address: 192.0.2.3}
zrelay:
  jobs:
    - source: nas1:tank/data
      recursive: true
      exclude: [tmp, "vm/scratch-*"]
      targets: [vault:backup/data]
""", "inv.yml")
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


def test_the_snapshot_step_leaves_excluded_datasets_out() -> None:
    j = INVENTORY.jobs[0]
    assert j.exclude == ("tmp", "vm/scratch-*")
    chosen = selection.of_job(j, SOURCE)
    step = plan_snapshot(fleet(INVENTORY), j, NOW, force=True, chosen=chosen, caps=OZ)
    assert step.snapshot is not None and step.name is not None
    (line,) = step.snapshot.lines
    words = line.split()
    assert words[:2] == ["zfs", "snapshot"] and "-r" not in words
    assert sorted(w.split("@")[0] for w in words[2:]) == sorted(chosen.included)
    assert "one atomic `zfs snapshot` of the 6 covered datasets; 3 excluded datasets left out" in step.snapshot.reason
    fuse = plan_snapshot(fleet(INVENTORY), j, NOW, force=True, chosen=chosen, caps=FUSE)
    assert fuse.snapshot is not None
    assert [line.split()[2:] for line in fuse.snapshot.lines] == [
        [f"tank/data@{step.name}"], ["-r", f"tank/data/home@{step.name}"], [f"tank/data/vm@{step.name}"],
        ["-r", f"tank/data/vm/web@{step.name}"]]
    whole, how = snapshot_argvs(j, "s", selection.of_job(j, tree("tank/data", "tank/data/a")), OZ)
    assert whole == [["zfs", "snapshot", "-r", "tank/data@s"]] and "-r" in how


def test_no_snapshot_when_every_dataset_is_excluded() -> None:
    j = INVENTORY.jobs[0]
    chosen = selection.of_job(j, tree("tank/data", "tank/data/x", off=("tank/data",)))
    step = plan_snapshot(fleet(INVENTORY), j, NOW, force=True, chosen=chosen, caps=OZ)
    assert step.name is None and step.actions == []
    assert "every dataset of the job is excluded (tank/data: zrelay:sync=false)" in step.reason


# --------------------------------------------------------------------------- the inventory key


HEAD = """\
all:
  hosts:
    nas1: {address: 192.0.2.1}
    vault: {address: 192.0.2.3}
zrelay:
  jobs:
    - source: nas1:tank/data
      targets: [vault:backup/data]
"""


def problems(*lines: str) -> list[str]:
    text = HEAD + "".join(f"      {line}\n" for line in lines)
    return [e.render() for e in validate_inventory_text(text, "inv.yml")]


@pytest.mark.parametrize("lines, expected", [
    (["recursive: true", "exclude: tmp"],
     "inv.yml:10:16: exclude: expected a list of globs such as [tmp, '*/cache'], got the value 'tmp'"),
    (["recursive: true", "exclude: [tmp, /vm]"],
     "inv.yml:10:22: exclude glob '/vm' must be a path relative to the job's source, without a leading "
     "or trailing '/' (e.g. 'vm')"),
    (["recursive: true", "exclude: [tmp, tmp]"], "inv.yml:10:22: exclude glob 'tmp' is listed twice"),
    (["recursive: true", "exclude: ['a@b']"], "inv.yml:10:17: exclude glob 'a@b' names a snapshot"),
    (["recursive: true", "exclude: ['a;b']"], "inv.yml:10:17: exclude glob 'a;b' has characters no "
                                                "dataset name has: ';'"),
    (["recursive: true", "exclude: ['']"], "inv.yml:10:17: exclude glob: expected"),
    (["recursive: true", "exclude: [3]"], "inv.yml:10:17: exclude glob: expected"),
    (["recursive: true", "exclude: [tank/data/tmp]"],
     "inv.yml:10:7: exclude glob 'tank/data/tmp' is relative to the job's source tank/data: write 'tmp'"),
    (["exclude: [tmp]"], "inv.yml:9:7: exclude: only a recursive job has descendants to leave out"),
])
def test_refusals(lines: list[str], expected: str) -> None:
    found = problems(*lines)
    assert len(found) == 1 and found[0].startswith(expected), found


def test_accepted_and_kept_on_the_job() -> None:
    assert problems("recursive: true", "exclude: [tmp, '*/cache', 'vm/scratch-*', '[ab]?']") == []
    assert problems("exclude: []") == []
    inventory = loads_inventory(HEAD + "      recursive: true\n      exclude: [tmp]\n", "inv.yml")
    assert inventory.jobs[0].exclude == ("tmp",) and inventory.jobs[0].exclude_base == ""


def test_s3_status_reports_only_the_covered_datasets() -> None:
    from zrelay.inventory.model import S3Ref, S3Target
    from zrelay.status.s3 import report_from_s3
    target = S3Target("offsite", "bucket", endpoint="http://127.0.0.1:1", prefix="p/")
    s3_job = Job("j", Endpoint("nas1", "tank/data"), True, targets=(S3Ref("offsite"),), exclude=("tmp",))
    report = report_from_s3(s3_job, S3Ref("offsite"), target, SOURCE, {}, 1_700_000_000)
    assert [c.source for c in report.cells] == [f"nas1:{n}" for n in selection.of_job(s3_job, SOURCE).included]
    assert report.row.datasets == 7   # tmp and tmp/x left out
    opted = tree("tank/data", "tank/data/a", off=("tank/data",))
    none = report_from_s3(s3_job, S3Ref("offsite"), target, opted, {}, 1_700_000_000)
    assert "every dataset is excluded (zrelay:sync=false)" in none.row.message
