"""The S3 receiver's rules without hosts or a bucket: a dataset fails alone, the target's outcome
is the worst of its datasets', and ``s3-push`` shows one row per dataset."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from zrelay.actions import Action, ActionKind, Stream
from zrelay.cli.s3 import push_results
from zrelay.engine import SyncOptions, TaskResult
from zrelay.engine.executor import Executor
from zrelay.engine.s3_receiver import PushDetails, prefix_key, settle, verdict_of
from zrelay.errors import S3Error, SubjectFailed, TransferFailed, blame
from zrelay.events import Event, Outcome, TransferFinished, TransferStarted
from zrelay.inventory.model import Endpoint, Job, S3Target
from zrelay.paths.s3push import PushResult


def _upload(dataset: str, snap: str) -> Action:
    return Action(ActionKind.STREAM, "nas1", dataset,
                  stream=Stream(f"{dataset}@{snap} (full)", "s3:offsite", dataset, ("zfs", "send", f"{dataset}@{snap}"),
                                f"zfs send {dataset}@{snap}", sink=f"s3://b/{dataset}@{snap}/"))


class FailingFirst:
    """Fails the first upload of ``bad`` as S3 does (kept to its dataset); records what it ran."""

    def __init__(self, bad: str) -> None:
        self.job = Job("j", Endpoint("nas1", "tank/a"))
        self.name = "s3:offsite"
        self.host = None
        self.bad = bad
        self.ran: list[str] = []

    async def stream(self, action: Action, on_bytes: Any, notes: list[str], options: SyncOptions) -> bool:
        assert action.stream is not None
        self.ran.append(action.stream.label)
        if action.subject == self.bad:
            raise SubjectFailed(TransferFailed("nas1: zfs send failed; nothing was stored", "nas1"))
        on_bytes(10)
        return False


def test_a_failed_upload_skips_only_its_own_datasets_later_sends() -> None:
    events: list[Event] = []
    receiver = FailingFirst("tank/a")
    fleet = SimpleNamespace(sends={"nas1": asyncio.Semaphore(1)}, receives={})
    result = TaskResult("j", "nas1:tank/a", "s3:offsite", Outcome.OK)
    actions = [_upload("tank/a", "s1"), _upload("tank/a", "s2"), _upload("tank/a/b", "s1"), _upload("tank/a/b", "s2")]
    replan = asyncio.run(Executor(fleet, events.append, receiver, result, SyncOptions(), []).run(actions))  # type: ignore[arg-type]
    assert not replan
    assert receiver.ran == ["tank/a@s1 (full)", "tank/a/b@s1 (full)", "tank/a/b@s2 (full)"]
    started = [e.stream for e in events if isinstance(e, TransferStarted)]
    assert started == receiver.ran, "a skipped send is never announced"
    finished = [(e.stream, e.ok) for e in events if isinstance(e, TransferFinished)]
    assert finished[0] == ("tank/a@s1 (full)", False) and all(ok for _, ok in finished[1:])
    assert result.bytes == 20


def test_an_error_outside_a_dataset_still_fails_the_target() -> None:
    class Broken(FailingFirst):
        async def stream(self, action: Action, on_bytes: Any, notes: list[str], options: SyncOptions) -> bool:
            raise TransferFailed("nas1: connection lost", "nas1")
    fleet = SimpleNamespace(sends={"nas1": asyncio.Semaphore(1)}, receives={})
    result = TaskResult("j", "nas1:tank/a", "s3:offsite", Outcome.OK)
    executor = Executor(fleet, lambda e: None, Broken("x"), result, SyncOptions(), [])  # type: ignore[arg-type]
    try:
        asyncio.run(executor.run([_upload("tank/a", "s1"), _upload("tank/b", "s1")]))
    except TransferFailed:
        pass
    else:
        raise AssertionError("a failure the receiver does not keep to its dataset must end the target")


def _row(dataset: str, outcome: Outcome, message: str = "", nbytes: int = 0, host: str | None = None) -> PushResult:
    return PushResult("j", "s3:offsite", f"nas1:{dataset}", outcome, message, nbytes, failed_host=host)


def test_the_worst_dataset_decides_the_targets_outcome() -> None:
    rows = [_row("tank/a", Outcome.OK, "pushed", 5), _row("tank/a/b", Outcome.REFUSED, "refused: broken"),
            _row("tank/a/c", Outcome.FAILED, "nas1: boom", host="nas1"), _row("tank/a/d", Outcome.NOOP)]
    assert verdict_of(rows) == (Outcome.FAILED, "nas1:tank/a/c: nas1: boom", "nas1")
    assert verdict_of(rows[:2])[:2] == (Outcome.REFUSED, "nas1:tank/a/b: refused: broken")
    assert verdict_of(rows[:1]) == (Outcome.OK, "pushed", None), "one dataset: its own message"
    result = TaskResult("j", "nas1:tank/a", "s3:offsite", Outcome.OK, bytes=999)
    settle(result, rows)
    assert (result.outcome, result.failed_host, result.bytes) == (Outcome.FAILED, "nas1", 5)


def test_rows_per_dataset_with_the_snapshot_shown_once() -> None:
    snap = Action(ActionKind.SNAPSHOT, "nas1", "tank/a", ("zfs snapshot -r tank/a@n",))
    rows = [_row("tank/a", Outcome.OK), _row("tank/a/b", Outcome.OK)]
    pushed = TaskResult("j", "nas1:tank/a", "s3:offsite", Outcome.OK, actions=[snap], details=PushDetails(rows))
    busy = TaskResult("k", "nas2:tank/x", "s3:offsite", Outcome.BUSY, "another zrelay s3-push (pid 1) …")
    out = push_results([pushed, busy])
    assert [r.dataset for r in out] == ["nas1:tank/a", "nas1:tank/a/b", "nas2:tank/x"]
    assert out[0].commands == [("nas1", "zfs snapshot -r tank/a@n")] and out[1].commands == []
    assert (out[2].outcome, out[2].message, out[2].plan) == (Outcome.BUSY, busy.message, None)


def test_s3_failures_are_put_on_no_host() -> None:
    assert blame(S3Error("offsite", "cannot reach http://127.0.0.1:1"), "nas1") is None
    assert blame(TransferFailed("x", "nas2"), "nas1") == "nas2"


def test_the_lock_key_is_the_jobs_keys_in_the_bucket() -> None:
    target = S3Target("offsite", "bkt", endpoint="http://127.0.0.1:8333/", prefix="p/")
    key = prefix_key(Job("j", Endpoint("nas1", "tank/a")), target)
    assert key == "s3 http://127.0.0.1:8333 bkt p/zrelay/v1/nas1/tank/a/"
