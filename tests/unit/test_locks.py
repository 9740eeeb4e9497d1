"""Run locks (zrelay.locks): one process at a time per key, across processes and users."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Iterator

import pytest

from zrelay import locks
from zrelay.errors import EXIT_BUSY, TargetBusy
from zrelay.locks import RunLock

REPO = Path(__file__).resolve().parents[2]
WHAT = "nas1:tank/x → vault:backup/x"

#: A second process that takes the lock, says so, and lets go when its stdin gets a line.
HOLDER = textwrap.dedent("""
    import asyncio, sys
    from zrelay import locks
    locks.identify(run_id=41, command="sync")
    lock = locks.RunLock(sys.argv[1], sys.argv[2])
    asyncio.run(lock.acquire(0))
    print("held", flush=True)
    sys.stdin.readline()
    lock.release()
    print("released", flush=True)
    sys.stdin.readline()
""")


class Holder:
    """Another process holding a lock until told to let go."""

    def __init__(self, key: str, env: dict[str, str], preexec=None,  # type: ignore[no-untyped-def]
                 python: str = sys.executable) -> None:
        self.proc = subprocess.Popen([python, "-c", HOLDER, key, WHAT], cwd=REPO, env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     preexec_fn=preexec)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line == "held\n", line + self.proc.stderr.read()  # type: ignore[union-attr]

    def release(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline() == "released\n"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def lockdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "locks"
    monkeypatch.setenv(locks.ENV_VAR, str(path))
    return path


@pytest.fixture
def holder(lockdir: Path) -> Iterator[Holder]:
    h = Holder("zfs 127.0.0.4 22 backup/x", dict(os.environ, PYTHONPATH=str(REPO)))
    yield h
    h.stop()


def test_a_second_process_is_told_who_holds_the_target(holder: Holder) -> None:
    lock = RunLock("zfs 127.0.0.4 22 backup/x", "other:tank/x → safe:backup/x")
    with pytest.raises(TargetBusy) as caught:
        asyncio.run(lock.acquire(0))
    message = str(caught.value)
    assert caught.value.exit_code == EXIT_BUSY == 75
    assert caught.value.holder is not None and caught.value.holder.pid == holder.proc.pid
    assert message.startswith("other:tank/x → safe:backup/x: skipped, another zrelay sync ")
    assert f"(pid {holder.proc.pid}, started " in message and ", run 41)" in message
    assert f"is replicating {WHAT}" in message and "--wait-lock" in message
    assert not lock.held
    # another key is not held by it
    free = RunLock("zfs 127.0.0.4 22 backup/y", "y")
    assert free.try_acquire()
    free.release()


def test_waiting_does_not_block_the_event_loop_and_gets_the_lock(holder: Holder) -> None:
    lock = RunLock("zfs 127.0.0.4 22 backup/x", WHAT)
    seen: list[locks.Holder | None] = []
    ticks = 0

    async def main() -> int:
        nonlocal ticks

        async def ticker() -> int:
            nonlocal ticks
            while not lock.held:
                ticks += 1
                if ticks == 3:   # the loop ran while the lock was being waited for: now let it go
                    await asyncio.to_thread(holder.release)
                await asyncio.sleep(0.05)
            return ticks
        _, n = await asyncio.gather(lock.acquire(120, seen.append, poll=0.05), ticker())
        return n

    assert asyncio.run(main()) >= 3
    assert lock.held and lock.waited
    assert seen and seen[0] is not None and seen[0].pid == holder.proc.pid
    assert lock.previous_release is not None, "the holder's release is on record for the next one"
    lock.release()


def test_waiting_in_vain_names_the_holder_and_the_wait(holder: Holder) -> None:
    lock = RunLock("zfs 127.0.0.4 22 backup/x", WHAT)
    with pytest.raises(TargetBusy) as caught:
        asyncio.run(lock.acquire(0.3, poll=0.05))
    assert f"pid {holder.proc.pid}" in str(caught.value) and "still busy after waiting 0.3 s" in str(caught.value)


def test_a_killed_holder_frees_the_lock_at_once(holder: Holder) -> None:
    lock = RunLock("zfs 127.0.0.4 22 backup/x", WHAT)
    assert not lock.try_acquire()
    holder.proc.send_signal(signal.SIGKILL)
    holder.proc.wait()
    assert lock.try_acquire(), "the kernel drops a dead process's flock"
    assert lock.holder() is not None and lock.holder().pid == os.getpid()  # type: ignore[union-attr]
    lock.release()
    assert lock.holder() is None


def test_same_machine_target_under_other_names_is_one_key() -> None:
    assert locks.resolve_now("localhost") == locks.resolve_now("127.0.0.1") == "127.0.0.1"
    assert locks.normalise_address("::ffff:127.0.0.4") == "127.0.0.4"
    assert locks.normalise_address("[::1]") == "::1"
    assert locks.normalise_address("nas1") is None
    assert asyncio.run(locks.resolve("LOCALHOST")) == "127.0.0.1"
    assert asyncio.run(locks.resolve("no-such-host.invalid")) == "no-such-host.invalid"
    a = locks.dataset_key(locks.resolve_now("localhost"), 22, "backup/x")
    b = locks.dataset_key(locks.resolve_now("127.0.0.1"), 22, "backup/x")
    assert a == b and locks.lock_path(a, Path("/d")) == locks.lock_path(b, Path("/d"))
    assert locks.dataset_key("127.0.0.1", 2222, "backup/x") != a          # another sshd: another machine
    assert locks.dataset_key("127.0.0.1", 22, "backup/x/y") != a
    assert locks.s3_key("HTTP://127.0.0.1:8333/", None, "b", "p/zrelay/v1/nas1/tank/x/") == \
        locks.s3_key("http://127.0.0.1:8333", None, "b", "p/zrelay/v1/nas1/tank/x/")


def test_lock_directory_is_shared_by_every_user(tmp_path: Path) -> None:
    assert locks.lock_dir({locks.ENV_VAR: str(tmp_path / "x")}) == tmp_path / "x"
    shared = locks.lock_dir({})
    if os.access("/run/lock", os.W_OK):
        assert shared == Path("/run/lock/zrelay")
        assert os.stat(shared).st_mode & 0o1777 == 0o1777


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a holder as another user")
def test_another_users_run_holds_the_same_lock(tmp_path: Path) -> None:
    """A run of user nobody and a run of root meet in the shared directory (no ZRELAY_LOCK_DIR)."""
    if not os.access("/run/lock", os.W_OK):
        pytest.skip("no writable /run/lock")
    env = {k: v for k, v in os.environ.items() if k != locks.ENV_VAR}
    key = f"zfs 127.0.0.4 22 backup/test-locks-{os.getpid()}"
    nobody = 65534

    def as_nobody() -> None:
        os.setgid(nobody)
        os.setuid(nobody)
    # zrelay.locks is stdlib only: the system's python runs it where a virtualenv's is root's alone
    python = next((p for p in (sys.executable, "/usr/bin/python3") if _runs_as(p, as_nobody, env)), None)
    if python is None:
        pytest.skip("user nobody can run no python that reads this checkout")
    path = locks.lock_path(key)
    path.unlink(missing_ok=True)
    h = Holder(key, dict(env, PYTHONPATH=str(REPO), HOME="/tmp"), preexec=as_nobody, python=python)
    try:
        assert path.stat().st_uid == nobody
        mine = RunLock(key, "root's run", locks.lock_dir(env))
        with pytest.raises(TargetBusy) as caught:
            asyncio.run(mine.acquire(0))
        assert f"pid {h.proc.pid}" in str(caught.value)
        h.release()
        assert mine.try_acquire(), "root takes the lock file nobody made, once nobody let go"
        assert mine.holder() is not None and mine.holder().pid == os.getpid()  # type: ignore[union-attr]
        mine.release()
    finally:
        h.stop()
        path.unlink(missing_ok=True)


def _runs_as(python: str, preexec, env: dict[str, str]) -> bool:  # type: ignore[no-untyped-def]
    try:
        return subprocess.run([python, "-c", "import zrelay.locks"], cwd="/", env=dict(env, PYTHONPATH=str(REPO)),
                              preexec_fn=preexec, capture_output=True).returncode == 0
    except OSError:
        return False


# --- looking without taking (dry runs, status) ---------------------------------------------------


def test_probe_names_the_holder_without_taking_the_lock(holder: Holder, monkeypatch: pytest.MonkeyPatch) -> None:
    key = "zfs 127.0.0.4 22 backup/x"

    def no_flock(*_args: object) -> None:
        raise AssertionError("probe took a lock: a real run could find the target busy because of a look")
    with monkeypatch.context() as m:
        m.setattr(locks.fcntl, "flock", no_flock)
        seen = locks.probe(key)
    assert seen.holder is not None and seen.holder.pid == holder.proc.pid
    assert seen.holder.command == "sync" and seen.holder.run_id == 41 and seen.holder.what == WHAT
    assert locks.probe("zfs 127.0.0.4 22 backup/never-locked") == locks.Probe(None)
    holder.release()
    free = locks.probe(key)
    assert free.holder is None and free.changed_since(seen), "taking and letting go moves the stamp"
    assert not locks.probe(key).changed_since(free), "a look moves nothing"


def test_probe_without_proc_locks_tries_a_shared_lock_and_drops_it(holder: Holder,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(locks, "PROC_LOCKS", "/nonexistent/locks")
    key = "zfs 127.0.0.4 22 backup/x"
    seen = locks.probe(key)
    assert seen.holder is not None and seen.holder.pid == holder.proc.pid
    holder.release()
    assert locks.probe(key).holder is None
    lock = RunLock(key, WHAT)
    assert lock.try_acquire(), "the probe let its shared lock go"
    assert locks.probe(key).holder is None, "this process's own lock is not another zrelay's"
    lock.release()


def test_probe_names_the_kernels_holder_when_the_file_names_another(holder: Holder) -> None:
    """The file still names a previous holder (killed before it could write "released"), and the new
    one has not written yet: the pid comes from the kernel, not from the file."""
    key = "zfs 127.0.0.4 22 backup/x"
    path = locks.lock_path(key)
    path.write_text('{"pid": 1, "started": 0, "command": "sync", "what": "old"}\n')
    seen = locks.probe(key)
    assert seen.holder is not None and seen.holder.pid == holder.proc.pid and seen.holder.what == ""
    assert f"another zrelay (pid {holder.proc.pid}, started " in seen.holder.describe()


def test_while_free_refuses_to_plan_a_held_target(holder: Holder) -> None:
    ran: list[int] = []

    async def work() -> int:
        ran.append(1)
        return 7
    with pytest.raises(TargetBusy) as caught:
        asyncio.run(locks.while_free("zfs 127.0.0.4 22 backup/x", "a:t → b:t", work))
    assert not ran, "nothing was planned against the busy target"
    assert caught.value.exit_code == 75 and caught.value.holder is not None
    message = str(caught.value)
    assert message.startswith("a:t → b:t: not planned, another zrelay sync ")
    assert f"(pid {holder.proc.pid}, " in message and "--wait-lock" in message and "destroy" not in message
    assert asyncio.run(locks.while_free("zfs 127.0.0.4 22 backup/y", "y", work)) == 7 and ran == [1]


def test_while_free_waits_for_the_holder_then_plans(holder: Holder) -> None:
    seen: list[locks.Holder | None] = []

    async def work() -> str:
        return "planned"

    async def main() -> str:
        async def let_go() -> None:
            while not seen:
                await asyncio.sleep(0.01)
            await asyncio.to_thread(holder.release)
        planned, _ = await asyncio.gather(
            locks.while_free("zfs 127.0.0.4 22 backup/x", WHAT, work, wait=120, on_wait=seen.append, poll=0.02),
            let_go())
        return planned
    assert asyncio.run(main()) == "planned"
    assert seen[0] is not None and seen[0].pid == holder.proc.pid


def test_while_free_plans_again_when_a_run_came_and_went_meanwhile(lockdir: Path) -> None:
    key = "zfs 127.0.0.4 22 backup/z"
    forgotten: list[int] = []
    rounds = 0

    async def work() -> int:
        nonlocal rounds
        rounds += 1
        if rounds == 1:   # another run takes the target and lets go while this one lists it
            other = subprocess.run([sys.executable, "-c", HOLDER, key, WHAT], cwd=REPO, input="\n\n", text=True,
                                   capture_output=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
            assert other.stdout == "held\nreleased\n", other.stderr
        return rounds
    assert asyncio.run(locks.while_free(key, WHAT, work, on_change=lambda: forgotten.append(1))) == 2
    assert forgotten == [1]
