"""``status`` asks a host once whether sibling targets changed since their newest snapshot.

Jobs whose targets are siblings on one host (three or more under one parent, as
``Fleet.share_listings`` counts them) are listed from one listing of the parent; the
``zfs get`` that tells whether a target changed is shared the same way (share_changes). A
failed shared answer, a look repeated after another zrelay wrote the target, and a lone
target still ask about the dataset itself.
"""

from __future__ import annotations

import asyncio
from typing import Any

from zrelay.errors import RemoteCommandFailed
from zrelay.inventory.model import Endpoint, Job
from zrelay.status.hosts import _changes, share_changes

VALUES = {"backup/p/a": 1, "backup/p/b": 2, "backup/p/c": 3, "backup/p/c/x": 4, "backup/q/z": 9}


class FakeHost:
    def __init__(self, fail_parent: bool = False) -> None:
        self.asked: list[tuple[str, bool]] = []
        self.fail_parent = fail_parent

    async def changes(self, dataset: str, recursive: bool = False) -> tuple[str, dict[str, int | None]]:
        self.asked.append((dataset, recursive))
        await asyncio.sleep(0)
        if self.fail_parent and dataset == "backup/p":
            raise RemoteCommandFailed("vault", "zfs get", 1, "cannot open 'backup/p'")
        return "written", {n: v for n, v in VALUES.items()
                           if n == dataset or (recursive and n.startswith(dataset + "/"))}


class FakeFleet:
    def __init__(self, host: FakeHost) -> None:
        self.per_run: dict[str, Any] = {}
        self._host = host

    def host(self, name: str) -> FakeHost:
        return self._host


def jobs(*targets: str) -> list[Job]:
    return [Job(f"j{i}", Endpoint("nas1", f"tank/{t}"), targets=(Endpoint("vault", t),), recursive=t.endswith("c"))
            for i, t in enumerate(targets)]


async def ask(fleet: Any, targets: list[tuple[str, bool]], shared: bool = True) -> list[Any]:
    return list(await asyncio.gather(*(_changes(fleet, "vault", ds, rec, shared) for ds, rec in targets)))


def test_siblings_are_answered_by_one_recursive_get_of_their_parent() -> None:
    host = FakeHost()
    fleet = FakeFleet(host)
    share_changes(fleet, jobs("backup/p/a", "backup/p/b", "backup/p/c", "backup/q/z"))  # type: ignore[arg-type]
    got = asyncio.run(ask(fleet, [("backup/p/a", False), ("backup/p/b", False), ("backup/p/c", True),
                                  ("backup/q/z", False)]))
    assert sorted(host.asked) == [("backup/p", True), ("backup/q/z", False)]
    for (prop, values), name in zip(got, ("backup/p/a", "backup/p/b", "backup/p/c")):
        assert prop == "written" and values[name] == VALUES[name]
    assert got[2][1]["backup/p/c/x"] == 4            # a recursive job's children are in the parent's answer
    assert got[3] == ("written", {"backup/q/z": 9})


def test_fewer_than_three_siblings_are_asked_one_by_one() -> None:
    host = FakeHost()
    fleet = FakeFleet(host)
    share_changes(fleet, jobs("backup/p/a", "backup/p/b"))  # type: ignore[arg-type]
    asyncio.run(ask(fleet, [("backup/p/a", False), ("backup/p/b", False)]))
    assert sorted(host.asked) == [("backup/p/a", False), ("backup/p/b", False)]


def test_a_failed_shared_answer_or_a_second_look_asks_about_the_dataset_itself() -> None:
    host = FakeHost(fail_parent=True)
    fleet = FakeFleet(host)
    share_changes(fleet, jobs("backup/p/a", "backup/p/b", "backup/p/c"))  # type: ignore[arg-type]
    got = asyncio.run(ask(fleet, [("backup/p/a", False), ("backup/p/b", False)]))
    assert host.asked.count(("backup/p", True)) == 1
    assert sorted(a for a in host.asked if a[0] != "backup/p") == [("backup/p/a", False), ("backup/p/b", False)]
    assert got == [("written", {"backup/p/a": 1}), ("written", {"backup/p/b": 2})]

    again = FakeHost()
    fleet = FakeFleet(again)
    share_changes(fleet, jobs("backup/p/a", "backup/p/b", "backup/p/c"))  # type: ignore[arg-type]
    asyncio.run(ask(fleet, [("backup/p/a", False)], shared=False))
    assert again.asked == [("backup/p/a", False)]
