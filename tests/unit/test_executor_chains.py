"""The executor's order: each dataset's actions in plan order, a child after its parent, siblings
side by side. The lab shows the commands; these tests show the order, with a receiver that only
records (a stream's bytes are the relay's business, tested on the lab)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from zrelay.actions import Action, ActionKind, Stream
from zrelay.engine.executor import Executor, chains, nearest_ancestor
from zrelay.engine.options import SyncOptions, TaskResult
from zrelay.errors import TransferFailed
from zrelay.events import Outcome
from zrelay.inventory.model import Endpoint, Job


def _stream(dataset: str, label: str) -> Action:
    return Action(ActionKind.STREAM, "nas1", dataset,
                  stream=Stream(label, "vault", dataset, ("zfs", "send"), f"zfs send {label}", "zfs receive"))


def _props(dataset: str) -> Action:
    return Action(ActionKind.SET_PROPERTIES, "vault", dataset, (f"zfs set canmount=noauto {dataset}",))


class _Recorder:
    """A receiver whose streams take turns with the event loop and record when they ran."""

    def __init__(self, fail: str | None = None, hold: dict[str, asyncio.Event] | None = None) -> None:
        self.job = Job("j", Endpoint("nas1", "tank/x"), (Endpoint("vault", "backup/x"),))
        self.name = "vault:backup/x"
        self.host = "vault"
        self.log: list[str] = []
        self.fail = fail
        self.hold = hold or {}

    async def stream(self, action: Action, on_bytes: Any, notes: list[str], options: SyncOptions) -> bool:
        assert action.stream is not None
        self.log.append(f"start {action.stream.label}")
        if action.stream.label in self.hold:
            await self.hold[action.stream.label].wait()
        await asyncio.sleep(0)
        if action.stream.label == self.fail:
            raise TransferFailed(f"{action.stream.label} failed", "vault")
        self.log.append(f"end {action.stream.label}")
        return False


class _Fleet:
    def __init__(self, log: list[str]) -> None:
        self.sends = {"nas1": asyncio.Semaphore(4)}
        self.receives = {"vault": asyncio.Semaphore(4)}
        self.log = log


def _executor(receiver: _Recorder, monkeypatch: pytest.MonkeyPatch) -> Executor:
    fleet = _Fleet(receiver.log)

    async def run_command(_fleet: Any, action: Action) -> None:
        receiver.log.append(f"cmd {action.subject}")

    monkeypatch.setattr("zrelay.engine.executor.run_command", run_command)
    result = TaskResult("j", "nas1:tank/x", "vault:backup/x", Outcome.OK)
    return Executor(fleet, lambda event: None, receiver, result, SyncOptions(), [])  # type: ignore[arg-type]


def test_chains_keep_plan_order_per_dataset_and_a_new_parent_with_its_child() -> None:
    create = Action(ActionKind.CREATE_PARENT, "vault", "backup", ("zfs create -p backup",))
    actions = [create, _stream("backup/x", "x full"), _props("backup/x"), _stream("backup/x", "x incr"),
               _stream("backup/x/c", "c full"), _props("backup/x/c")]
    got = chains(actions)
    assert list(got) == ["backup/x", "backup/x/c"]
    assert got["backup/x"] == actions[:4] and got["backup/x/c"] == actions[4:]
    assert nearest_ancestor("backup/x/c/d", got) == "backup/x/c"
    assert nearest_ancestor("backup/xy", got) is None


def test_siblings_run_side_by_side_and_a_child_waits_for_its_parent(monkeypatch: pytest.MonkeyPatch) -> None:
    release = asyncio.Event()
    receiver = _Recorder(hold={"a": release})
    executor = _executor(receiver, monkeypatch)
    actions = [_stream("backup/x", "root"), _stream("backup/x/a", "a"), _stream("backup/x/b", "b"),
               _stream("backup/x/a/deep", "deep")]

    async def scenario() -> bool:
        task = asyncio.ensure_future(executor.run(actions))
        for _ in range(20):
            await asyncio.sleep(0)
        # b ran while a was held; deep (a's child) has not started
        assert "end b" in receiver.log and "start deep" not in receiver.log
        release.set()
        return await task

    assert asyncio.run(scenario()) is False
    log = receiver.log
    assert log.index("end root") < log.index("start a") and log.index("end root") < log.index("start b")
    assert log.index("end a") < log.index("start deep")


def test_a_failure_stops_what_has_not_started_and_is_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    receiver = _Recorder(fail="root")
    executor = _executor(receiver, monkeypatch)
    actions = [_stream("backup/x", "root"), _props("backup/x"), _stream("backup/x/a", "a")]
    with pytest.raises(TransferFailed, match="root failed"):
        asyncio.run(executor.run(actions))
    assert receiver.log == ["start root"]   # no properties set, the child never started


class _CreatingHost:
    """A host whose `zfs create -p` fails like zfs when another create made one of the parents
    meanwhile (the lab shows this only by chance: two jobs into siblings under a new parent)."""

    def __init__(self) -> None:
        self.running = 0
        self.overlapped = False
        self.made: set[str] = set()

    async def zfs_line(self, line: str, *, dataset: str | None = None, retry_busy: bool = False) -> None:
        self.running += 1
        self.overlapped = self.overlapped or self.running > 1
        await asyncio.sleep(0.01)
        self.running -= 1
        if self.overlapped and dataset not in self.made:
            from zrelay.errors import ZfsError
            raise ZfsError("vault", "cannot create 'backup/new': dataset already exists", dataset)
        self.made.add(dataset or "")

    async def exists(self, dataset: str) -> bool:
        return dataset in self.made


def test_parents_of_sibling_jobs_are_created_one_at_a_time() -> None:
    from zrelay.engine.executor import run_command
    from zrelay.engine.fleet import Fleet

    host = _CreatingHost()
    fleet = Fleet.__new__(Fleet)   # only its per-run locks and this host are used here
    fleet.per_run = {}
    fleet.host = lambda name: host   # type: ignore[method-assign]
    actions = [Action(ActionKind.CREATE_PARENT, "vault", f"backup/new/{n}", (f"zfs create -p backup/new/{n}",))
               for n in ("a", "b")]

    async def both() -> None:
        await asyncio.gather(*(run_command(fleet, a) for a in actions))

    asyncio.run(both())
    assert not host.overlapped and host.made == {"backup/new/a", "backup/new/b"}
