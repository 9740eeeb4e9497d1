"""The prune planner (zrelay.lifecycle.prune), by example: each protection, each side kind.

The property test over random histories is in test_lifecycle_prune_props.py.
"""

from __future__ import annotations

from zrelay.anchors import hold_tag, job_tag_prefix
from zrelay.inventory.policy import KeepPolicy
from zrelay.lifecycle.prune import (ChainEnd, Decision, HostSide, PruneInput, PrunePlan, S3Side, SourceSide,
                                    chain_end, pair_datasets, plan_prune, source_dataset, target_dataset)
from zrelay.s3 import chains
from zrelay.zfs.model import Bookmark, DatasetState, Snapshot, SnapshotFilter
from tests.unit.test_s3_chains import linear_chain, record

JOB = "nightly"
SEL = SnapshotFilter(prefix="auto_")
SRC, DST = "tank/data", "backup/data"
VAULT = "vault:backup/data"
TAGS = {VAULT: hold_tag(JOB, VAULT), "s3:cold": hold_tag(JOB, "s3:cold")}
DAY = 86400
NO_HOLDS: dict[str, tuple[str, ...]] = {}
T0 = 1_780_000_000 - 1_780_000_000 % DAY          # a UTC midnight


def s(name: str, n: int, ds: str = SRC, *, userrefs: int = 0, guid: int | None = None) -> Snapshot:
    """Snapshot number ``n``: one a day, createtxg and GUID from ``n``."""
    return Snapshot(ds, name, guid if guid is not None else 1000 + n, 10 * n, T0 + n * DAY, userrefs=userrefs)


def history(n: int, ds: str = SRC) -> list[Snapshot]:
    return [s(f"auto_{i:02d}", i, ds) for i in range(n)]


def on(ds: str, snaps: list[Snapshot], marks: tuple[Bookmark, ...] = (), **kw: object) -> DatasetState:
    """The same snapshots (same GUIDs) as they sit on ``ds``."""
    moved = tuple(Snapshot(ds, x.name, x.guid, x.createtxg, x.creation, userrefs=x.userrefs) for x in snaps)
    return DatasetState(ds, True, moved, marks, **kw)  # type: ignore[arg-type]


def job(src: list[Snapshot], *, policy: KeepPolicy | None = KeepPolicy(last=2), target: list[Snapshot] | None = None,
        target_policy: KeepPolicy | None = None, holds: dict[str, tuple[str, ...]] | None = NO_HOLDS,
        target_holds: dict[str, tuple[str, ...]] | None = None, marks: tuple[Bookmark, ...] = (),
        s3: S3Side | None = None, now: int | None = None, resume: str | None = None,
        resume_from: dict[str, int] | None = None) -> PruneInput:
    hosts: tuple[HostSide, ...] = ()
    if target is not None:
        hosts = (HostSide(VAULT, "vault", DST, {DST: on(DST, target, resume_token=resume)},
                          target_holds if target_holds is not None else {}, target_policy, resume_from or {}),)
    return PruneInput(SEL, now if now is not None else T0 + 100 * DAY,
                      SourceSide("nas1", SRC, {SRC: on(SRC, src, marks)}, holds, policy),
                      hosts, (s3,) if s3 else (), job_tag_prefix(JOB), TAGS)


def decisions(plan: PrunePlan, side: str = "source", kind: str = "snapshot") -> dict[str, Decision]:
    return {d.name: d for d in plan.side(side).decisions if d.kind == kind}


def dropped(plan: PrunePlan, side: str = "source", kind: str = "snapshot") -> list[str]:
    return [n for n, d in decisions(plan, side, kind).items() if not d.keep]


# --------------------------------------------------------------------------- pairing


def test_recursive_pairing() -> None:
    assert target_dataset("tank/a", "backup/a", "tank/a/x/y") == "backup/a/x/y"
    assert target_dataset("tank/a", "backup/z", "tank/a") == "backup/z"
    assert source_dataset("tank/a", "backup/z", "backup/z/q") == "tank/a/q"
    assert source_dataset("tank/a", "backup/z", "backup/zz") is None
    assert pair_datasets("tank/a", "b", ["tank/a", "tank/a/c"]) == {"tank/a": "b", "tank/a/c": "b/c"}
    try:
        target_dataset("tank/a", "b", "tank/ab")
    except ValueError as exc:
        assert "not inside" in str(exc)
    else:
        raise AssertionError("tank/ab is not a child of tank/a")


# --------------------------------------------------------------------------- source


def test_source_policy_drops_the_rest_oldest_first_in_one_batch() -> None:
    src = history(6) + [s("manual", 7)]
    plan = plan_prune(job(src, target=src[:6]))
    d = decisions(plan)
    assert "manual" not in d, "snapshots the job does not own never appear"
    assert dropped(plan) == ["auto_00", "auto_01", "auto_02", "auto_03"]
    assert d["auto_00"].reasons == ("not kept by the policy (last 2)",)
    assert d["auto_05"].reasons == ("one of the 2 newest", "newest common snapshot with vault:backup/data",
                                    "the newest selected snapshot (the next sync's goal)")
    [batch] = plan.side("source").batches
    assert (batch.host, batch.dataset, batch.snapshots) == ("nas1", SRC, ("auto_00", "auto_01", "auto_02", "auto_03"))


def test_source_keeps_the_target_base_and_what_it_still_needs() -> None:
    src = history(8)
    plan = plan_prune(job(src, target=src[:3]))          # vault has auto_00..auto_02
    assert dropped(plan) == ["auto_00", "auto_01"]
    d = decisions(plan)
    assert "newest common snapshot with vault:backup/data" in d["auto_02"].reasons
    assert "not yet on vault:backup/data" in d["auto_03"].reasons


def test_an_absent_target_needs_everything_until_stale_after() -> None:
    src = history(8)
    plan = plan_prune(job(src, target=None, s3=S3Side("s3:cold", {}, {}, None)))
    assert dropped(plan) == []
    assert decisions(plan)["auto_00"].reasons == ("needed by s3:cold tank/data, which stores nothing yet",)
    # stale_after 5d with now = day 10: snapshots 0..4 are older than the cutoff
    plan = plan_prune(job(src, policy=KeepPolicy(last=1, stale_after=5 * DAY), s3=S3Side("s3:cold", {}, {}, None),
                          now=T0 + 10 * DAY))
    assert dropped(plan) == ["auto_00", "auto_01", "auto_02", "auto_03", "auto_04"]


def test_stale_base_goes_and_the_target_is_told_it_needs_a_full_send() -> None:
    src = history(50)
    policy = KeepPolicy(last=3, stale_after=30 * DAY)
    plan = plan_prune(job(src, policy=policy, target=src[:10], now=T0 + 50 * DAY))
    assert "auto_09" in dropped(plan)
    assert plan.side("source").notes == (
        "vault:backup/data: newest common snapshot @auto_09 is 41 days old (stale_after 30d): "
        "it will need a full send",)
    # with a bookmark of the base left, incremental sends go on
    mark = Bookmark(SRC, "auto_09", src[9].guid, src[9].createtxg, src[9].creation)
    plan = plan_prune(job(src, policy=policy, target=src[:10], now=T0 + 50 * DAY, marks=(mark,)))
    assert "the bookmark of it stays" in plan.side("source").notes[0]
    assert decisions(plan, kind="bookmark")["auto_09"].keep
    # without stale_after the base and everything after it stays
    plan = plan_prune(job(src, policy=KeepPolicy(last=3), target=src[:10], now=T0 + 50 * DAY))
    assert dropped(plan) == [f"auto_{i:02d}" for i in range(9)] and not plan.side("source").notes


def test_holds() -> None:
    src = history(6)
    own, foreign, gone = TAGS[VAULT], "backup-tool", job_tag_prefix(JOB) + "oldhost:x"
    holds = {f"{SRC}@auto_00": (own,), f"{SRC}@auto_01": (foreign, own), f"{SRC}@auto_02": (gone,),
             f"{SRC}@auto_03": (hold_tag("otherjob", VAULT),)}
    plan = plan_prune(job(src, target=src, holds=holds))
    d = decisions(plan)
    assert dropped(plan) == ["auto_00"]
    assert plan.side("source").releases == ((f"{SRC}@auto_00", own),)
    assert "held by backup-tool (not this job's)" in d["auto_01"].reasons
    assert "a hold of this job for a target it no longer has" in d["auto_02"].reasons[0]
    assert d["auto_03"].reasons == (f"held by {hold_tag('otherjob', VAULT)} (not this job's)",)


def test_holds_that_cannot_be_listed() -> None:
    src = history(4)
    src[0] = s("auto_00", 0, userrefs=1)
    plan = plan_prune(job(src, target=src, holds=None, policy=KeepPolicy(last=1)))
    assert decisions(plan)["auto_00"].reasons == ("held; this host cannot list holds",)
    assert dropped(plan) == ["auto_01", "auto_02"]
    assert any("holds cannot be listed" in n for n in plan.side("source").notes)
    assert plan.side("source").releases == ()


def test_bookmarks_follow_the_policy_but_a_base_stays() -> None:
    src = history(10)
    marks = tuple(Bookmark(SRC, x.name, x.guid, x.createtxg, x.creation) for x in src[:6])
    marks += (Bookmark(SRC, "other", 5, 1, T0),)
    # the source pruned auto_00..auto_05 long ago; vault's newest common is the bookmark auto_04
    plan = plan_prune(job(src[6:], target=src[:5], marks=marks, policy=KeepPolicy(last=1)))
    d = decisions(plan, kind="bookmark")
    assert "other" not in d
    assert [n for n, x in d.items() if not x.keep] == ["auto_00", "auto_01", "auto_02", "auto_03"]
    assert d["auto_04"].reasons == ("the base of vault:backup/data",)
    assert d["auto_05"].reasons == ("one of the 1 newest",)
    assert plan.side("source").batches[0].bookmarks == ("auto_00", "auto_01", "auto_02", "auto_03")
    assert dropped(plan) == [], "vault still needs auto_06 .. auto_09"


def test_s3_chain_end_and_what_it_still_needs() -> None:
    src = history(8)
    s3 = S3Side("s3:cold", {SRC: ChainEnd("auto_04", src[4].guid, src[4].creation)}, {}, None)
    plan = plan_prune(job(src, s3=s3, policy=KeepPolicy(last=1)))
    assert dropped(plan) == ["auto_00", "auto_01", "auto_02", "auto_03"]
    assert "newest common snapshot with s3:cold tank/data" in decisions(plan)["auto_04"].reasons
    # the chain end gone from the source: everything is needed, and the user is told
    s3 = S3Side("s3:cold", {SRC: ChainEnd("gone", 1, T0)}, {}, None)
    plan = plan_prune(job(src, s3=s3, policy=KeepPolicy(last=1)))
    assert dropped(plan) == []
    assert "the next push needs a new chain" in plan.side("source").notes[0]


# --------------------------------------------------------------------------- host target


def test_target_keeps_its_newest_shared_snapshot_and_everything_newer() -> None:
    src = history(6)
    local = Snapshot(DST, "auto_local", 99, 59, T0 + 5 * DAY + 60)
    target = src[:4] + [local]                           # shares up to auto_03, then its own snapshot
    plan = plan_prune(job(src, target=target, target_policy=KeepPolicy(last=1)))
    d = decisions(plan, VAULT)
    assert dropped(plan, VAULT) == ["auto_00", "auto_01", "auto_02"]
    assert "newest snapshot shared with the source (by GUID)" in d["auto_03"].reasons
    assert "newer than the newest snapshot shared with the source (sync decides about it)" in d["auto_local"].reasons
    [batch] = plan.side(VAULT).batches
    assert (batch.host, batch.dataset, batch.snapshots) == ("vault", DST, ("auto_00", "auto_01", "auto_02"))


def test_target_sharing_nothing_is_left_alone() -> None:
    src = history(3)
    target = [s(f"auto_x{i}", i, DST, guid=500 + i) for i in range(4)]
    plan = plan_prune(job(src, target=target, target_policy=KeepPolicy(last=1)))
    assert dropped(plan, VAULT) == []
    assert decisions(plan, VAULT)["auto_x0"].reasons == ("shares no snapshot with the source (sync decides about it)",)


def test_target_holds_and_partial_receives() -> None:
    src = history(6)
    holds: dict[str, tuple[str, ...]] = {f"{DST}@auto_00": ("other",), f"{DST}@auto_01": (TAGS[VAULT],)}
    plan = plan_prune(job(src, target=src, target_policy=KeepPolicy(last=1), target_holds=holds))
    assert dropped(plan, VAULT) == ["auto_01", "auto_02", "auto_03", "auto_04"]
    assert plan.side(VAULT).releases == ((f"{DST}@auto_01", TAGS[VAULT]),)
    plan = plan_prune(job(src, target=src, target_policy=KeepPolicy(last=1), resume="1-abc-def",
                          resume_from={DST: src[2].guid}))
    assert "a partial receive resumes from it" in decisions(plan, VAULT)["auto_02"].reasons
    plan = plan_prune(job(src, target=src, target_policy=KeepPolicy(last=1), resume="1-abc-def"))
    assert "a partial receive is pending" in plan.side(VAULT).notes[0]


def test_a_side_without_policy_is_not_pruned() -> None:
    src = history(4)
    plan = plan_prune(job(src, policy=None, target=src))
    assert plan.side("source").decisions == () and not plan.side("source").pruned
    assert plan.side(VAULT).notes == (f"{VAULT}: no keep policy, not pruned",)


# --------------------------------------------------------------------------- S3 target


def _chain(snaps: list[Snapshot], broken: bool = False) -> list[chains.SendRecord]:
    ms = linear_chain(snaps)
    return [record(m, missing=(0,) if broken and i == len(ms) - 1 else ()) for i, m in enumerate(ms)]


def test_s3_keeps_whole_chains_by_calendar() -> None:
    src = history(40)
    # chains: days 0-9, 10-19 (a manual snapshot inside: not this job's), 20-29, 30-39
    mixed = src[10:15] + [s("manual", 15)] + src[16:20]
    recs = _chain(src[0:10]) + _chain(mixed) + _chain(src[20:30]) + _chain(src[30:40])
    view = chains.build_view("nas1", SRC, recs)
    end = chain_end(view)
    assert end is not None and end.name == "auto_39"
    s3 = S3Side("s3:cold", {SRC: end}, {SRC: view}, KeepPolicy(monthly=1))
    plan = plan_prune(job(src, s3=s3, policy=None, now=T0 + 40 * DAY))
    d = decisions(plan, "s3:cold", "chain")
    roots = [c.root for c in view.chains]
    assert list(d) == [roots[0], roots[2], roots[3]], "the chain holding a manual snapshot is not this job's"
    assert [x.keep for x in d.values()] == [False, False, True]
    assert d[roots[0]].reasons == ("not kept by the policy (1 monthly)",)
    stored = plan.side("s3:cold").stored[SRC]
    gone = set(stored.keys_in_order())
    assert gone and all("/@auto_0" in k or "/@auto_2" in k for k in gone)
    assert not any("/@manual/" in k or "/@auto_1" in k for k in gone)


def test_s3_keeps_the_newest_complete_chain_when_the_newest_is_broken() -> None:
    src = history(30)
    recs = _chain(src[0:10]) + _chain(src[10:20]) + _chain(src[20:30], broken=True)
    view = chains.build_view("nas1", SRC, recs)
    s3 = S3Side("s3:cold", {SRC: ChainEnd("auto_28", src[28].guid, 0)}, {SRC: view}, KeepPolicy(last=1))
    plan = plan_prune(job(src, s3=s3, policy=None, now=T0 + 40 * DAY))
    d = list(decisions(plan, "s3:cold", "chain").values())
    assert [x.keep for x in d] == [False, True, True]
    assert "newest complete chain" in d[1].reasons and "newest chain" in d[2].reasons


def test_s3_keeps_the_newest_complete_chain_even_when_the_policy_keeps_an_older_one() -> None:
    def at(name: str, n: int, when: int) -> Snapshot:
        return Snapshot(SRC, name, 1000 + n, 10 * n, when)
    old = [at(f"auto_0{i}", i, T0 + i * DAY) for i in range(3)]                     # days 0-2
    mid = [at("auto_10", 10, T0 + 10 * DAY), at("auto_11", 11, T0 + 10 * DAY + 3600)]
    new = [at("auto_12", 12, T0 + 10 * DAY + 7200), at("auto_13", 13, T0 + 10 * DAY + 3 * 3600)]
    view = chains.build_view("nas1", SRC, _chain(old) + _chain(mid) + _chain(new, broken=True))
    s3 = S3Side("s3:cold", {SRC: ChainEnd("auto_12", 1012, 0)}, {SRC: view}, KeepPolicy(daily=2))
    plan = plan_prune(job(old + mid + new, s3=s3, policy=None, now=T0 + 11 * DAY))
    d = list(decisions(plan, "s3:cold", "chain").values())
    # daily 2 keeps the old chain (day 2) and the broken newest (day 10), not the middle one of day 10:
    # but the middle one is the newest chain that can be restored
    assert [x.keep for x in d] == [True, True, True]
    assert d[1].reasons == ("newest complete chain",)


def test_cascades_name_the_other_jobs_on_a_side() -> None:
    from zrelay.inventory.model import Endpoint, Job
    from zrelay.lifecycle.prune import cascades
    a = Job("a", Endpoint("nas1", "tank/x"), targets=(Endpoint("vault", "backup/x"),))
    b = Job("b", Endpoint("vault", "backup/x"), targets=(Endpoint("nas2", "tank/y"),))
    c = Job("c", Endpoint("vault", "backup"), recursive=True, targets=(Endpoint("nas2", "tank/all"),))
    d = Job("d", Endpoint("vault", "backup/xy"), targets=(Endpoint("nas2", "tank/z"),))
    jobs = [a, b, c, d]
    assert cascades(a, jobs, "vault", "backup/x") == ["b (source)", "c (source)"]   # d's backup/xy is not below
    assert cascades(b, jobs, "vault", "backup/x") == ["a (target)", "c (source)"]
    assert cascades(a, jobs, "nas1", "tank/x") == []
    assert cascades(b, jobs, "nas2", "tank/y") == []


# --------------------------------------------------------------------------- clones


def test_the_origin_of_a_clone_is_kept_on_either_side() -> None:
    src = history(6)
    base = job(src, target=src, target_policy=KeepPolicy(last=1))
    clones = {f"{SRC}@auto_01": ("tank/data-clone",)}
    source = SourceSide("nas1", SRC, base.source.datasets, NO_HOLDS, KeepPolicy(last=2), clones)
    target = HostSide(VAULT, "vault", DST, base.hosts[0].datasets, {}, KeepPolicy(last=1),
                      clones={f"{DST}@auto_02": ("backup/data-clone", "backup/other")})
    plan = plan_prune(PruneInput(SEL, base.now, source, (target,), (), job_tag_prefix(JOB), TAGS))
    assert dropped(plan) == ["auto_00", "auto_02", "auto_03"]
    assert "the origin of tank/data-clone (a clone: zfs cannot destroy it)" in decisions(plan)["auto_01"].reasons
    assert dropped(plan, VAULT) == ["auto_00", "auto_01", "auto_03", "auto_04"]
    assert decisions(plan, VAULT)["auto_02"].reasons == (
        "the origin of backup/data-clone, backup/other (a clone: zfs cannot destroy it)",)


def test_clones_are_read_from_their_listing() -> None:
    from zrelay.zfs import commands, parse
    assert commands.clones_tree_argv("tank/a", True) == \
        ["zfs", "get", "-H", "-o", "name,value", "-t", "snapshot", "clones", "-r", "tank/a"]
    assert parse.parse_clones("tank/a@1\t\ntank/a@2\ttank/b,tank/c\ntank/a@3\t-\n") == \
        {"tank/a@2": ("tank/b", "tank/c")}
