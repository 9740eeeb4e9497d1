"""zrelay.anchors: bookmark names, hold tags and hold moves (pure)."""

from __future__ import annotations

from zrelay import anchors
from zrelay.zfs import commands
from zrelay.zfs.model import Bookmark, DatasetState, Snapshot


def test_hold_tag_is_per_job_and_target_and_valid_for_zfs() -> None:
    tag = anchors.hold_tag("nas1:tank/data", "vault:backup/data")
    assert tag == "zrelay:nas1:tank_data:vault:backup_data"
    assert commands.check_tag(tag) == tag
    assert tag.startswith(anchors.job_tag_prefix("nas1:tank/data"))
    assert anchors.hold_tag("j", "a:x") != anchors.hold_tag("j", "b:x")


def test_long_hold_tags_end_in_a_digest_and_stay_distinct() -> None:
    a = anchors.hold_tag("j" * 300, "vault:backup/" + "a" * 300)
    b = anchors.hold_tag("j" * 300, "vault:backup/" + "a" * 299 + "b")
    assert len(a) == anchors.MAX_TAG and a != b
    assert commands.check_tag(a) == a
    assert a.startswith(anchors.job_tag_prefix("j" * 300))         # release still finds it
    assert anchors.job_tag_prefix("j" * 300) != anchors.job_tag_prefix("j" * 301)


def test_hold_moves_hold_first_and_release_only_our_tag_in_scope() -> None:
    tag = "zrelay:j:vault:backup_d"
    holds = [("tank/d@s1", tag), ("tank/d@s1", "other-tool"), ("tank/d@s0", tag),
             ("tank/elsewhere@s1", tag)]
    moves = anchors.hold_moves(tag, ["tank/d@s2"], holds, ["tank/d"])
    assert moves.hold == ("tank/d@s2",)
    assert moves.release == ("tank/d@s0", "tank/d@s1")   # stale holds of interrupted runs go too
    assert not moves.empty


def test_hold_moves_nothing_when_already_in_place() -> None:
    tag = "zrelay:j:t"
    moves = anchors.hold_moves(tag, ["tank/d@s2"], [("tank/d@s2", tag)], ["tank/d"])
    assert moves.empty


def test_bookmarks_to_create_skips_existing_guid_and_reused_names() -> None:
    s1 = Snapshot("tank/d", "s1", 11, 1)
    s2 = Snapshot("tank/d", "s2", 22, 2)
    s3 = Snapshot("tank/d", "s3", 33, 3)
    state = DatasetState("tank/d", snapshots=(s1, s2, s3),
                         bookmarks=(Bookmark("tank/d", "old-name", 11, 1), Bookmark("tank/d", "s2", 99, 2)))
    assert anchors.bookmarks_to_create({"tank/d": state}, [s1, s2, s3]) == [("tank/d@s3", "tank/d#s3")]


def test_job_holds_groups_by_tag() -> None:
    holds = [("a@1", "zrelay:j:x"), ("b@1", "zrelay:j:y"), ("a@1", "zrelay:jj:x"), ("a@2", "zrelay:j:x")]
    assert anchors.job_holds(anchors.job_tag_prefix("j"), holds) == {
        "zrelay:j:x": ["a@1", "a@2"], "zrelay:j:y": ["b@1"]}
