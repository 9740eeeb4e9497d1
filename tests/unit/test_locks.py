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
from zrelay.locks import RunLock, TargetBusy

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
    assert caught.value.exit_code == locks.EXIT_BUSY == 75
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
