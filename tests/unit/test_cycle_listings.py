"""The daemon's no-change cycle: listings parsed once while their text stays the same, datasets served
from a parent's listing without a task each, and ``both`` over a shared listing (zrelay.engine.fleet,
zrelay.engine.host_receiver, zrelay.zfs.parse)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from zrelay.engine.fleet import StateCache, settled
from zrelay.engine.host_receiver import both
from zrelay.errors import HostsUnreachable, TransportError, ZfsError
from zrelay.zfs import parse as p
from zrelay.zfs.model import Capabilities, DatasetState

FUSE = Capabilities.zfs_fuse("pool v23")


def fuse_listing(root: str, children: dict[str, list[tuple[str, int, int]]]) -> str:
    """``zfs get -H -p -o name,property,value`` text of ``root``'s children and their snapshots."""
    lines = [f"{root}\ttype\tfilesystem", f"{root}\tguid\t1", f"{root}\tzrelay:sync\t-"]
    for child, snaps in children.items():
        ds = f"{root}/{child}"
        lines += [f"{ds}\ttype\tfilesystem", f"{ds}\tguid\t2", f"{ds}\tzrelay:sync\t-"]
        for name, guid, txg in snaps:
            lines += [f"{ds}@{name}\ttype\tsnapshot", f"{ds}@{name}\tguid\t{guid}",
                      f"{ds}@{name}\tcreatetxg\t{txg}", f"{ds}@{name}\tcreation\t1700000000",
                      f"{ds}@{name}\treferenced\t4096", f"{ds}@{name}\tzrelay:sync\t-"]
    return "\n".join(lines) + "\n"


TEXT = fuse_listing("tank/p", {"a": [("s1", 11, 5), ("s2", 12, 6)], "b": [("s1", 21, 7)]})


# --- parsing once ------------------------------------------------------------------------------


def test_memo_reuses_the_states_of_an_unchanged_listing(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = p.parse_state

    def counting(outputs: list[str], caps: Capabilities, root: str, recursive: bool) -> dict[str, DatasetState]:
        calls.append(root)
        return real(outputs, caps, root, recursive)
    monkeypatch.setattr(p, "parse_state", counting)
    memo = p.ListingMemo()
    first = memo.parse_state([TEXT], FUSE, "tank/p", True)
    again = memo.parse_state([TEXT], FUSE, "tank/p", True)
    assert calls == ["tank/p"], "the same text is parsed once"
    assert again == first and again is not first, "each caller gets a dict of its own"
    assert again["tank/p/a"] is first["tank/p/a"], "the frozen states themselves are shared"
    again["tank/p/x"] = DatasetState.absent("tank/p/x")
    assert "tank/p/x" not in memo.parse_state([TEXT], FUSE, "tank/p", True), "a caller's change stays its own"
    assert first == real([TEXT], FUSE, "tank/p", True)


def test_memo_parses_again_when_the_text_or_the_question_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    memo = p.ListingMemo()
    before = memo.parse_state([TEXT], FUSE, "tank/p", True)
    newer = fuse_listing("tank/p", {"a": [("s1", 11, 5), ("s2", 12, 6), ("s3", 13, 8)], "b": [("s1", 21, 7)]})
    after = memo.parse_state([newer], FUSE, "tank/p", True)
    assert [s.name for s in before["tank/p/a"].snapshots] == ["s1", "s2"]
    assert [s.name for s in after["tank/p/a"].snapshots] == ["s1", "s2", "s3"], "a new snapshot is seen"
    alone = memo.parse_state([TEXT], FUSE, "tank/p", False)
    assert set(alone) == {"tank/p"}, "the same text asked non-recursively is parsed for that question"
    assert set(memo.parse_state([TEXT], FUSE, "tank/p", True)) == {"tank/p", "tank/p/a", "tank/p/b"}


def test_memo_keeps_no_failed_parse() -> None:
    memo = p.ListingMemo()
    bad = TEXT + "tank/p/a@s9\tguid\n"
    for _ in range(2):   # raises every time, never answers from a half-read listing
        with pytest.raises(ValueError, match="tab-separated"):
            memo.parse_state([bad], FUSE, "tank/p", True)


def test_fuse_listing_errors_still_name_the_line() -> None:
    with pytest.raises(ValueError, match="unexpected number 'x1'"):
        p.parse_state([TEXT.replace("\t11\n", "\tx1\n")], FUSE, "tank/p", True)
    with pytest.raises(ValueError, match="lacks 'createtxg'"):
        p.parse_state(["tank/p@s\ttype\tsnapshot\ntank/p@s\tguid\t5\n"], FUSE, "tank/p", False)
    assert p.parse_state(["\n  \n" + TEXT + "\n"], FUSE, "tank/p", True) == p.parse_state([TEXT], FUSE, "tank/p", True)


# --- one listing, many datasets ------------------------------------------------------------------


class FakeHost:
    """A RemoteHost's ``state``: what a test says, counted, optionally held until released."""

    def __init__(self, name: str, answer: Any) -> None:
        self.name = name
        self.answer = answer
        self.asked: list[tuple[str, bool, object]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def state(self, dataset: str, recursive: bool = False,
                    memo: p.ListingMemo | None = None) -> dict[str, DatasetState]:
        self.asked.append((dataset, recursive, memo))
        await self.gate.wait()
        if isinstance(self.answer, BaseException):
            raise self.answer
        return dict(self.answer)


def states_of(*names: str) -> dict[str, DatasetState]:
    return {n: DatasetState(n) for n in names}


def test_datasets_are_served_from_one_parent_listing() -> None:
    async def main() -> None:
        host = FakeHost("h", states_of("tank/p", "tank/p/a", "tank/p/a/x", "tank/p/b", "tank/p/c"))
        cache = StateCache()
        cache.share("h", ["tank/p/a", "tank/p/b", "tank/p/c", "tank/p/d"])
        a, b, d = await asyncio.gather(cache.get(host, "tank/p/a", True),   # type: ignore[arg-type]
                                       cache.get(host, "tank/p/b", False),  # type: ignore[arg-type]
                                       cache.get(host, "tank/p/d", False))  # type: ignore[arg-type]
        assert host.asked == [("tank/p", True, None)]
        assert set(a) == {"tank/p/a", "tank/p/a/x"} and set(b) == {"tank/p/b"}
        assert d == {"tank/p/d": DatasetState.absent("tank/p/d")}, "missing from the listing: absent"
        assert await cache.get(host, "tank/p/a", True) is a, "asked again: the same answer"  # type: ignore[arg-type]
        cache.forget("h", "tank/p/a")
        await cache.get(host, "tank/p/a", True)  # type: ignore[arg-type]
        assert host.asked[-1] == ("tank/p/a", True, None), "a forgotten dataset is listed on its own"
    asyncio.run(main())


def test_a_failed_parent_listing_fails_every_dataset_it_serves() -> None:
    async def main() -> None:
        host = FakeHost("h", ZfsError("h", "cannot open 'tank/p': I/O error"))
        host.gate.clear()
        cache = StateCache()
        cache.share("h", ["tank/p/a", "tank/p/b", "tank/p/c"])
        waiting = [asyncio.ensure_future(cache.get(host, f"tank/p/{x}", False)) for x in "ab"]  # type: ignore[arg-type]
        await asyncio.sleep(0)
        host.gate.set()
        for task in waiting:
            with pytest.raises(ZfsError, match="I/O error"):
                await task
        with pytest.raises(ZfsError):   # and one asked after the failure
            await cache.get(host, "tank/p/c", False)  # type: ignore[arg-type]
    asyncio.run(main())


def test_one_asker_cancelled_leaves_the_listing_to_the_others() -> None:
    async def main() -> None:
        host = FakeHost("h", states_of("tank/p", "tank/p/a", "tank/p/b", "tank/p/c"))
        host.gate.clear()
        cache = StateCache()
        cache.share("h", ["tank/p/a", "tank/p/b", "tank/p/c"])
        first = asyncio.ensure_future(cache.get(host, "tank/p/a", False))  # type: ignore[arg-type]
        second = asyncio.ensure_future(cache.get(host, "tank/p/a", False))  # type: ignore[arg-type]
        await asyncio.sleep(0)
        first.cancel()
        await asyncio.sleep(0)
        host.gate.set()
        assert set(await second) == {"tank/p/a"}
        assert first.cancelled() and len(host.asked) == 1
    asyncio.run(main())


def test_memos_go_to_the_listings_one_per_host() -> None:
    async def main() -> None:
        memos: dict[str, p.ListingMemo] = {}
        h1, h2 = FakeHost("h1", states_of("tank/x")), FakeHost("h2", states_of("tank/x"))
        cache = StateCache(memos)
        await asyncio.gather(cache.get(h1, "tank/x", False), cache.get(h2, "tank/x", False))  # type: ignore[arg-type]
        assert set(memos) == {"h1", "h2"} and memos["h1"] is not memos["h2"]
        assert h1.asked[0][2] is memos["h1"] and h2.asked[0][2] is memos["h2"]
        next_run = StateCache(memos)
        await next_run.get(h1, "tank/x", False)  # type: ignore[arg-type]
        assert h1.asked[1][2] is memos["h1"], "the next run parses with the same memo"
        await StateCache().get(h1, "tank/x", False)  # type: ignore[arg-type]
        assert h1.asked[-1][2] is None, "a fleet of one run keeps no memo"
    asyncio.run(main())


# --- both ends --------------------------------------------------------------------------------------


def test_both_with_a_shared_listing_names_both_unreachable_hosts() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        listing: asyncio.Future[int] = loop.create_future()
        loop.call_soon(listing.set_exception, TransportError("nas1", "connection refused"))

        async def other() -> int:
            raise TransportError("vault", "no route to host")
        with pytest.raises(HostsUnreachable) as caught:
            await both(listing, other())
        assert "nas1" in str(caught.value) and "vault" in str(caught.value)

        done: asyncio.Future[int] = loop.create_future()
        done.set_result(4)

        async def fine() -> str:
            return "caps"
        assert await both(done, fine()) == (4, "caps")

        async def broken() -> str:
            raise ZfsError("vault", "permission denied")
        with pytest.raises(ZfsError, match="permission denied"):
            await both(done, broken())
        late: asyncio.Future[int] = loop.create_future()
        loop.call_later(0.01, late.set_result, 7)
        assert await both(late, fine()) == (7, "caps"), "a listing still under way is waited for"
        assert await settled(late) == 7
    asyncio.run(main())


def test_both_of_two_coroutines_runs_them_side_by_side() -> None:
    async def main() -> None:
        gate = asyncio.Event()

        async def opens() -> str:
            gate.set()
            return "a"

        async def waits() -> str:
            await gate.wait()   # only finishes when the other one ran meanwhile
            return "b"
        assert await asyncio.wait_for(both(waits(), opens()), 5) == ("b", "a")
    asyncio.run(main())


# --- planning only what changed -------------------------------------------------------------------


def test_pure_memo_answers_again_only_for_the_same_arguments() -> None:
    from zrelay.engine.fleet import PureMemo

    calls: list[tuple[object, ...]] = []

    def planned(states: dict[str, DatasetState], rollback: bool) -> list[str]:
        calls.append((dict(states), rollback))
        return sorted(states)
    memo = PureMemo()
    listing = states_of("tank/a", "tank/b")
    first = memo.call("job→target", planned, listing, False)
    assert memo.call("job→target", planned, dict(listing), False) is first and len(calls) == 1, \
        "an equal listing (here: the same states in a new dict) is planned once"
    listing["tank/c"] = DatasetState("tank/c")   # the caller's own dict changed after the call
    assert memo.call("job→target", planned, listing, False) == ["tank/a", "tank/b", "tank/c"] and len(calls) == 2
    assert memo.call("job→target", planned, listing, True) is not None and len(calls) == 3, "another option"
    memo.call("other target", planned, listing, True)
    assert len(calls) == 4, "each subject has its own answer"

    def failing(states: dict[str, DatasetState]) -> list[str]:
        calls.append(("failed",))
        raise ValueError("no source")
    for _ in range(2):
        with pytest.raises(ValueError):
            memo.call("broken", failing, listing)
    assert calls[-2:] == [("failed",), ("failed",)], "a failure is not kept"


def test_runs_of_a_long_lived_fleet_share_memos_a_fleet_of_its_own_keeps_none(tmp_path: Any) -> None:
    from zrelay.engine.fleet import Fleet
    from zrelay.inventory import load_inventory

    inv_path = tmp_path / "inv.yml"
    inv_path.write_text("all:\n  hosts:\n    a: {address: 127.0.0.1}\n    b: {address: 127.0.0.1}\n"
                        "zrelay:\n  jobs:\n    - {source: 'a:tank/x', targets: ['b:backup/x']}\n")
    inv = load_inventory(str(inv_path))
    parent = Fleet(inv)
    one, two = parent.for_run(), parent.for_run()
    assert one.plans is not None and one.plans is two.plans
    assert one.states._memos is two.states._memos is not None
    alone = Fleet(inv)
    assert alone.plans is None and alone.states._memos is None
